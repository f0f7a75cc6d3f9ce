"""DSTN's three variants against hand-computed values of their equations (MODELS.md), on 1-dimensional embeddings.

Embeddings (D = 1): e(item) = [0, 1, 2, -1, 0.5, 3] for ids 0..5, e(cate) = [0, 0.5, 1, -0.5] for ids 0..3.
An ad is [e(item); e(cate)]. The batch (B = 2):

    row 0: target (1, 1) -> x_t = [1, 0.5]; C = {(2, 2)} -> [2, 1]; K = {(3, 1), (4, 3)} -> [-1, 0.5], [0.5, -0.5];
           U = {} (empty)
    row 1: target (5, 2) -> x_t = [3, 1];   C = {} (empty); K = {(1, 1)} -> [1, 0.5];
           U = {(2, 3), (5, 2)} -> [2, -0.5], [3, 1]
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchrec import KeyedJaggedTensor

from training.models.dstn import DSTN, SETS, DSTNConfig, InteractiveSetAttention, SelfSetAttention, segment_softmax

SIZES = {"item": 6, "cate": 4, "user": 3, "gender": 3, "age_bucket": 3, "city": 3, "shop": 3, "brand": 3}
E = math.e


def batch(profile: bool = False, full_sets: bool = False) -> KeyedJaggedTensor:
    features = {  # name -> (row 0 ids, row 1 ids)
        "item": ([1], [5]), "cate": ([1], [2]),
        "ctx_item": ([2], []), "ctx_cate": ([2], []),
        "clk_item": ([3, 4], [1]), "clk_cate": ([1, 3], [1]),
        "unclk_item": ([], [2, 5]), "unclk_cate": ([], [3, 2]),
    }
    if full_sets:  # every set holds two ads in row 0 (a set of one ad has self-attention weight 1: no gradient)
        features.update({"ctx_item": ([2, 3], []), "ctx_cate": ([2, 1], []),
                         "unclk_item": ([4, 5], [2, 5]), "unclk_cate": ([3, 2], [3, 2])})
    if profile:
        features.update({name: ([1], [2]) for name in ("user", "gender", "age_bucket", "city", "shop", "brand")})
    values = [v for rows in features.values() for row in rows for v in row]
    lengths = [len(row) for rows in features.values() for row in rows]
    return KeyedJaggedTensor.from_lengths_sync(keys=list(features), values=torch.tensor(values),
                                               lengths=torch.tensor(lengths))


def dstn(attention: str, **overrides) -> DSTN:
    settings = {"embedding_dim": 1, "attention": attention, "profile_features": (), "mlp_hidden": (),
                "attention_hidden": 1, **overrides}
    model = DSTN(DSTNConfig(**settings), SIZES, embedding_device=torch.device("cpu"))
    with torch.no_grad():
        model.table_modules()["item"].weight[:, :1].copy_(torch.tensor([[0.0, 1, 2, -1, 0.5, 3]]).t())
        model.table_modules()["cate"].weight[:, :1].copy_(torch.tensor([[0.0, 0.5, 1, -0.5]]).t())
        # final layer reads [x_t (2), s_C (2), s_K (2), s_U (2)]; logit = their sum
        model.mlp.layers[0].weight.fill_(1.0)
        model.mlp.layers[0].bias.zero_()
    return model.eval()


def representations(model: DSTN) -> dict[str, torch.Tensor]:
    embedded = model.lookup(batch())
    target = torch.cat([embedded["item"].values(), embedded["cate"].values()], dim=1)
    torch.testing.assert_close(target, torch.tensor([[1.0, 0.5], [3.0, 1.0]]))
    with torch.no_grad():
        return model.set_representations(embedded, target)


# ---------------------------------------------------------------- jagged softmax and the two attention layers
def test_segment_softmax_by_hand():
    # row 0: softmax [0, ln 3] = [1/4, 3/4]; row 1 empty; row 2: a single ad gets 1
    out = segment_softmax(torch.tensor([0.0, math.log(3.0), 5.0]), torch.tensor([2, 0, 1]))
    torch.testing.assert_close(out, torch.tensor([0.25, 0.75, 1.0]))
    # stable for large scores: softmax [1000, 1000 + ln 3] is still [1/4, 3/4]
    big = segment_softmax(torch.tensor([1000.0, 1000.0 + math.log(3.0)]), torch.tensor([2]))
    torch.testing.assert_close(big, torch.tensor([0.25, 0.75]))
    assert segment_softmax(torch.zeros(0), torch.tensor([0, 0])).shape == (0,)


def hand_interactive(exponent_max: float = 20.0, b0: float = 0.0) -> InteractiveSetAttention:
    # α = exp(relu(x_t[0] + a[0] + a[1]) + b0): W_t = [[1, 0]], b = 0, W_a = [[1, 1]], h = [[1]]
    layer = InteractiveSetAttention(2, 2, 1, exponent_max=exponent_max)
    with torch.no_grad():
        layer.target.weight.copy_(torch.tensor([[1.0, 0.0]]))
        layer.target.bias.zero_()
        layer.ads.weight.copy_(torch.tensor([[1.0, 1.0]]))
        layer.output.weight.fill_(1.0)
        layer.output.bias.fill_(b0)
    return layer


# rows: x_t = [1, 0.5] with ads [2, 1], [-1, 0.5]; x_t = [-2, 0] with ad [1, 0]; x_t = [0, 0] with no ad
TARGET = torch.tensor([[1.0, 0.5], [-2.0, 0.0], [0.0, 0.0]])
ADS = torch.tensor([[2.0, 1.0], [-1.0, 0.5], [1.0, 0.0]])
LENGTHS = torch.tensor([2, 1, 0])


def test_interactive_weights_by_hand_and_not_normalised():
    layer = hand_interactive()
    # relu(1 + 3) = 4, relu(1 - 0.5) = 0.5, relu(-2 + 1) = 0
    weights = layer.weights(ADS, LENGTHS, TARGET)
    torch.testing.assert_close(weights, torch.tensor([E ** 4, E ** 0.5, 1.0]))
    assert weights[:2].sum().item() == pytest.approx(E ** 4 + E ** 0.5)  # ≈ 56.25, not 1
    assert weights[2].item() == pytest.approx(1.0)  # one ad whose weight is not forced to 1 by a softmax...
    with torch.no_grad():
        pooled = layer(ADS, LENGTHS, TARGET)
    expected = torch.tensor([[2 * E ** 4 - E ** 0.5, E ** 4 + 0.5 * E ** 0.5], [1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(pooled, expected)
    # ...as b0 shows: it sits inside the exp and scales every weight, b0 = ln 2 doubles them
    doubled = hand_interactive(b0=math.log(2.0)).weights(ADS, LENGTHS, TARGET)
    torch.testing.assert_close(doubled, 2 * weights)


def test_interactive_weights_depend_on_the_target():
    layer = hand_interactive()
    same_ad = torch.tensor([[2.0, 1.0], [2.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [-10.0, 0.0]])
    # relu(1 + 3) = 4 vs relu(-10 + 3) = 0: an ad irrelevant to the second target gets exp(0) = 1, not e^4
    weights = layer.weights(same_ad, torch.tensor([1, 1]), targets)
    torch.testing.assert_close(weights, torch.tensor([E ** 4, 1.0]))


def test_interactive_exponent_is_capped_without_normalising():
    layer = hand_interactive(exponent_max=3.0)
    # exponents 4 -> capped at 3; 0.5 and 0 unchanged
    weights = layer.weights(ADS, LENGTHS, TARGET)
    torch.testing.assert_close(weights, torch.tensor([E ** 3, E ** 0.5, 1.0]))
    huge = layer.weights(torch.tensor([[1e6, 1e6]]), torch.tensor([1]), torch.tensor([[1e6, 0.0]]))
    assert torch.isfinite(huge).all() and huge.item() == pytest.approx(E ** 3)


def test_self_attention_normalised_within_each_set_and_empty_set_is_zero():
    # f(a) = relu(a[0]): first layer [[1, 0]], output [[1]], no biases
    layer = SelfSetAttention(2, 1)
    with torch.no_grad():
        layer.score.layers[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        layer.score.layers[0].bias.zero_()
        layer.score.layers[2].weight.fill_(1.0)
        layer.score.layers[2].bias.zero_()
    ads = torch.tensor([[0.0, 1.0], [math.log(3.0), 2.0], [5.0, -1.0]])
    lengths = torch.tensor([2, 0, 1])
    # row 0: f = [0, ln 3] -> [1/4, 3/4]; row 1 empty; row 2: a single ad -> 1
    torch.testing.assert_close(layer.weights(ads, lengths), torch.tensor([0.25, 0.75, 1.0]))
    with torch.no_grad():
        pooled = layer(ads, lengths)
    # row 0: 1/4·[0, 1] + 3/4·[ln 3, 2] = [0.75 ln 3, 1.75]; row 1: 0; row 2: [5, -1]
    torch.testing.assert_close(pooled, torch.tensor([[0.75 * math.log(3.0), 1.75], [0.0, 0.0], [5.0, -1.0]]))
    assert pooled[1].abs().sum().item() == 0.0


# ---------------------------------------------------------------- the model, three variants
def test_pooling_equals_the_sums():
    model = dstn("pooling")
    assert model.set_attention is None
    sets = representations(model)
    torch.testing.assert_close(sets["ctx"], torch.tensor([[2.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(sets["clk"], torch.tensor([[-0.5, 0.0], [1.0, 0.5]]))
    torch.testing.assert_close(sets["unclk"], torch.tensor([[0.0, 0.0], [5.0, 0.5]]))
    # logit = Σ of [x_t, s_C, s_K, s_U]: row 0: 1.5 + 3 - 0.5 + 0 = 4; row 1: 4 + 0 + 1.5 + 5.5 = 11
    out = model(batch())
    torch.testing.assert_close(out.logits, torch.tensor([4.0, 11.0]))
    assert out.regularization.item() == 0.0 and out.aux_loss.item() == 0.0 and out.targets is None


def set_interactive_weights(model: DSTN) -> None:
    with torch.no_grad():
        for layer in model.set_attention.values():
            layer.target.weight.copy_(torch.tensor([[1.0, 0.0]]))
            layer.target.bias.zero_()
            layer.ads.weight.copy_(torch.tensor([[1.0, 1.0]]))
            layer.output.weight.fill_(1.0)
            layer.output.bias.zero_()


def test_interactive_model_by_hand():
    model = dstn("interactive")
    set_interactive_weights(model)
    # α = exp(relu(x_t[0] + a[0] + a[1]))
    # C row 0 (x_t[0] = 1): [2, 1] -> e^4
    # K row 0: [-1, 0.5] -> relu(0.5) -> e^0.5; [0.5, -0.5] -> relu(1) -> e^1;  K row 1 (x_t[0] = 3): [1, 0.5] -> e^4.5
    # U row 1: [2, -0.5] -> e^4.5; [3, 1] -> e^7
    sets = representations(model)
    torch.testing.assert_close(sets["ctx"], torch.tensor([[2 * E ** 4, E ** 4], [0.0, 0.0]]))
    torch.testing.assert_close(sets["clk"], torch.tensor([[-E ** 0.5 + 0.5 * E, 0.5 * E ** 0.5 - 0.5 * E],
                                                          [E ** 4.5, 0.5 * E ** 4.5]]))
    torch.testing.assert_close(sets["unclk"], torch.tensor([[0.0, 0.0],
                                                            [2 * E ** 4.5 + 3 * E ** 7, -0.5 * E ** 4.5 + E ** 7]]))
    # K row 0's weights are not normalised: e^0.5 + e ≈ 4.37
    embedded = model.lookup(batch())
    clk = torch.cat([embedded["clk_item"].values(), embedded["clk_cate"].values()], dim=1)
    weights = model.set_attention["clk"].weights(clk, embedded["clk_item"].lengths(),
                                                 torch.tensor([[1.0, 0.5], [3.0, 1.0]]))
    torch.testing.assert_close(weights, torch.tensor([E ** 0.5, E, E ** 4.5]))
    assert weights[:2].sum().item() == pytest.approx(E ** 0.5 + E) and abs(weights[:2].sum().item() - 1) > 1
    expected = torch.tensor([1.5 + 3 * E ** 4 - 0.5 * E ** 0.5,
                             4 + 1.5 * E ** 4.5 + 1.5 * E ** 4.5 + 4 * E ** 7])
    torch.testing.assert_close(model(batch()).logits, expected)


def test_interactive_sets_have_separate_parameters():
    model = dstn("interactive")
    set_interactive_weights(model)
    with torch.no_grad():
        model.set_attention["unclk"].output.weight.fill_(0.0)  # U's weights become exp(0) = 1: U is sum pooled
    sets = representations(model)
    torch.testing.assert_close(sets["unclk"], torch.tensor([[0.0, 0.0], [5.0, 0.5]]))
    torch.testing.assert_close(sets["ctx"], torch.tensor([[2 * E ** 4, E ** 4], [0.0, 0.0]]))  # unchanged
    names = {name for name, _ in model.named_parameters() if name.startswith("set_attention.")}
    assert {name.split(".")[1] for name in names} == set(SETS)


def test_self_attention_model_by_hand():
    model = dstn("self")
    with torch.no_grad():
        for layer in model.set_attention.values():  # f(a) = relu(a[0])
            layer.score.layers[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
            layer.score.layers[0].bias.zero_()
            layer.score.layers[2].weight.fill_(1.0)
            layer.score.layers[2].bias.zero_()
    sets = representations(model)
    # C row 0: a single ad -> weight 1 -> [2, 1]; C row 1 empty -> 0
    torch.testing.assert_close(sets["ctx"], torch.tensor([[2.0, 1.0], [0.0, 0.0]]))
    # K row 0: f = [0, 0.5] -> [1, e^0.5] / (1 + e^0.5); K row 1: one ad -> [1, 0.5]
    z = 1 + E ** 0.5
    torch.testing.assert_close(sets["clk"], torch.tensor([[(-1 + 0.5 * E ** 0.5) / z, (0.5 - 0.5 * E ** 0.5) / z],
                                                          [1.0, 0.5]]))
    # U row 0 empty -> 0; U row 1: f = [2, 3] -> [1, e] / (1 + e)
    torch.testing.assert_close(sets["unclk"], torch.tensor([[0.0, 0.0], [(2 + 3 * E) / (1 + E), (-0.5 + E) / (1 + E)]]))


def test_profile_features_enter_the_final_layer():
    model = DSTN(DSTNConfig(embedding_dim=2, mlp_hidden=(4,)), SIZES, embedding_device=torch.device("cpu"))
    # 6 profile fields · D + x_t (2D) + 3 sets (2D each) = 6·2 + 2·2 + 3·2·2 = 28 inputs
    assert model.mlp.layers[0].in_features == 28
    # an ad in any set is embedded from the target's own tables: no table besides the 8 id fields
    assert set(model.table_sizes) == set(SIZES)
    assert model.table_features["item"] == ["item", "ctx_item", "clk_item", "unclk_item"]
    assert model.eval()(batch(profile=True)).logits.shape == (2,)


def test_config_defaults_and_errors():
    config = DSTNConfig()
    assert (config.attention, config.mlp_hidden, config.dropout, config.mlp_activation) == \
        ("interactive", (512, 256), 0.5, "relu")
    with pytest.raises(ValueError):
        DSTNConfig(attention="softmax")
    with pytest.raises(ValueError):
        DSTNConfig(atention="self")  # unknown keys are errors
    with pytest.raises(ValueError, match="profile_features"):
        DSTN(DSTNConfig(profile_features=("hist_item",)), SIZES, embedding_device=torch.device("cpu"))


@pytest.mark.parametrize("attention", ["pooling", "self", "interactive"])
def test_every_parameter_receives_a_gradient(attention):
    torch.manual_seed(0)
    config = DSTNConfig(embedding_dim=4, attention=attention, attention_hidden=8, mlp_hidden=(16, 8), dropout=0.1)
    model = DSTN(config, SIZES, embedding_device=torch.device("cpu")).train()
    out = model(batch(profile=True, full_sets=True))
    F.binary_cross_entropy_with_logits(out.logits, torch.tensor([1.0, 0.0])).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum().item() > 0, name
    item_grad = model.table_modules()["item"].weight.grad
    # items used: 1 (target, K), 2, 3, 4, 5; item 0 is not looked up
    assert item_grad[0].abs().sum().item() == 0.0 and (item_grad[1:].abs().sum(1) > 0).all()


def test_registered_and_packaged_defaults_validate():
    from training.config import load_config
    from training.models import MODELS

    assert MODELS["dstn"] is DSTN
    for attention in ("pooling", "self", "interactive"):
        cfg = load_config("dstn", overrides=[f"model.attention={attention}"])
        assert DSTNConfig.model_validate(cfg.model).attention == attention
    assert DSTNConfig.model_validate(load_config("dstn").model) == DSTNConfig()  # the YAML repeats the defaults
