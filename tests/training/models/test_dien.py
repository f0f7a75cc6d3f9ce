"""DIEN against hand-computed values of its equations (MODELS.md), on 1-dimensional embeddings (2D = 2).

Embeddings: e(item) = [0, 0, 1, 2, -1, 0.5] for ids 0..5, e(cate) = [0, 0, 0.5, 1] for ids 0..3.
The batch (B = 3, T = 3):

    row 0: target (2, 2): e_a = [1, 0.5]
           history (3, 3), (4, 2), (2, 3)  -> e_b = [2, 1], [-1, 0.5], [1, 1]
           negatives (4, 2), (5, 3), (3, 2) -> ê_b = [-1, 0.5], [0.5, 1], [2, 0.5]
    row 1: target (3, 3), history (4, 2) -> e_b = [-1, 0.5], negative (5, 3) (length 1: no (t, t+1) pair)
    row 2: target (4, 2), empty history

Item 5 appears only as a negative, so its gradient comes from the auxiliary loss alone.

Hand-set GRU weights make every recurrence a closed form: an update-gate bias of 30 gives u = σ(30) = 1 in float32,
U = 0 removes the reset gate's role, and W_h = I, so
    extractor  h_t  = tanh(e_b[t])                                  (element-wise)
    AUGRU      h'_t = (1 − a_t) · h'_{t−1} + a_t · tanh(h_t)        (ũ = a_t · 1; the same for AGRU)
    AIGRU      h'_t = tanh(a_t · h_t)                                (u = 1 forgets h'_{t−1})
and the attention matrix W = I, so a_t = softmax_t ⟨h_t, e_a⟩.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from torchrec import KeyedJaggedTensor

import training
from training.models import MODELS
from training.models.dien import DIEN, DIENConfig, auxiliary_loss, interest_attention

SIZES = {"item": 6, "cate": 4}
ITEM = [0.0, 0.0, 1.0, 2.0, -1.0, 0.5]
CATE = [0.0, 0.0, 0.5, 1.0]
TARGETS = [(2, 2), (3, 3), (4, 2)]
HISTORY = [[(3, 3), (4, 2), (2, 3)], [(4, 2)], []]
NEGATIVES = [[(4, 2), (5, 3), (3, 2)], [(5, 3)], []]


def emb(pair: tuple[int, int]) -> list[float]:
    return [ITEM[pair[0]], CATE[pair[1]]]


def batch(negatives: bool = True) -> KeyedJaggedTensor:
    columns = {
        "item": [[t[0]] for t in TARGETS], "cate": [[t[1]] for t in TARGETS],
        "hist_item": [[s[0] for s in h] for h in HISTORY], "hist_cate": [[s[1] for s in h] for h in HISTORY],
    }
    if negatives:
        columns["neg_item"] = [[s[0] for s in h] for h in NEGATIVES]
        columns["neg_cate"] = [[s[1] for s in h] for h in NEGATIVES]
    values = [v for rows in columns.values() for row in rows for v in row]
    lengths = [len(row) for rows in columns.values() for row in rows]
    return KeyedJaggedTensor.from_lengths_sync(keys=list(columns), values=torch.tensor(values),
                                               lengths=torch.tensor(lengths))


def set_closed_form_gru(module) -> None:
    """u = 1 (bias 30), U = 0, W_h = I: h_t = h_{t−1} + g·(tanh(x_t) − h_{t−1}), g = the scale on the update gate."""
    hidden = module.hidden_size
    with torch.no_grad():
        module.weight_ih.zero_()
        module.weight_hh.zero_()
        module.bias.zero_()
        module.weight_ih[-hidden:].copy_(torch.eye(hidden))
        if module.n_gates == 3:
            module.bias[:hidden].fill_(30.0)


def dien(**overrides) -> DIEN:
    settings = {"embedding_dim": 1, "profile_features": (), "mlp_hidden": (), "history_sum": False,
                "history_product": False, **overrides}
    model = DIEN(DIENConfig(**settings), SIZES, embedding_device=torch.device("cpu"))
    with torch.no_grad():
        model.table_modules()["item"].weight[:, :1].copy_(torch.tensor(ITEM).unsqueeze(1))
        model.table_modules()["cate"].weight[:, :1].copy_(torch.tensor(CATE).unsqueeze(1))
        model.attention.weight.copy_(torch.eye(2))
        # logit = the sum of h'_T (and of Σ_t e_b[t] with history_sum): the MLP is one Linear over
        # [e_a (2), (Σ e_b (2)), h'_T (2)]
        first = model.mlp.layers[0]
        first.weight.copy_(torch.tensor([[0.0, 0.0] + [1.0] * (first.in_features - 2)]))
        first.bias.zero_()
    set_closed_form_gru(model.extractor)
    set_closed_form_gru(model.evolution)
    return model


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def tanh(v: list[float]) -> list[float]:
    return [math.tanh(x) for x in v]


def final_interest_by_hand(row: int, evolution: str) -> list[float]:
    """h'_T of the module docstring's closed forms, in plain Python."""
    steps = [emb(s) for s in HISTORY[row]]
    if not steps:
        return [0.0, 0.0]
    states = [tanh(e) for e in steps]  # h_t = tanh(e_b[t])
    scores = [math.exp(dot(h, emb(TARGETS[row]))) for h in states]
    attention = [s / sum(scores) for s in scores]
    if evolution == "aigru":
        return tanh([attention[-1] * x for x in states[-1]])
    evolved = [0.0, 0.0]
    for a, h in zip(attention, states, strict=True):
        evolved = [(1 - a) * old + a * new for old, new in zip(evolved, tanh(h), strict=True)]
    return evolved


def aux_by_hand() -> float:
    # only row 0 has pairs (t, t+1): t = 0 and t = 1; rows 1 (length 1) and 2 (empty) add nothing; N = 3
    total = 0.0
    for t in (0, 1):
        h = tanh(emb(HISTORY[0][t]))
        total += math.log(sigmoid(dot(h, emb(HISTORY[0][t + 1]))))  # log σ(⟨h_t, e_b[t+1]⟩)
        total += math.log(1 - sigmoid(dot(h, emb(NEGATIVES[0][t + 1]))))  # log(1 − σ(⟨h_t, ê_b[t+1]⟩))
    return -total / 3


# ---------------------------------------------------------------------------------------------- the functions
def test_attention_sums_to_one_over_valid_steps_only():
    # row 0: 2 valid steps with scores ⟨h_t, q⟩ = 0 and ln 3 -> a = [1/4, 3/4]; its padded step holds a huge state
    # that must get no weight; row 1: empty -> all 0
    states = torch.tensor([[[0.0], [math.log(3.0)], [1000.0]], [[5.0], [6.0], [7.0]]])
    query = torch.tensor([[1.0], [1.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    attention = interest_attention(states, query, mask)
    torch.testing.assert_close(attention, torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 0.0]]))
    assert attention[0].sum().item() == pytest.approx(1.0)


def test_auxiliary_loss_with_lengths_3_2_1_0():
    # H = 1; states h, positives e, negatives n; only (t, t+1) with t+1 valid count
    states = torch.tensor([[1.0, 2.0, 9.0], [0.5, 9.0, 9.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]]).unsqueeze(2)
    positives = torch.tensor([[9.0, 1.0, -1.0], [9.0, 2.0, 9.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]]).unsqueeze(2)
    negatives = torch.tensor([[9.0, 0.0, 1.0], [9.0, -4.0, 9.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]]).unsqueeze(2)
    lengths = torch.tensor([3, 2, 1, 0])
    mask = torch.arange(3)[None, :] < lengths[:, None]
    # row 0: t=0: log σ(1·1) + log(1 − σ(1·0)); t=1: log σ(2·(−1)) + log(1 − σ(2·1))
    # row 1: t=0: log σ(0.5·2) + log(1 − σ(0.5·(−4)))   rows 2, 3: nothing; N = 4 (every sample counts)
    terms = [math.log(sigmoid(1.0)), math.log(1 - sigmoid(0.0)), math.log(sigmoid(-2.0)), math.log(1 - sigmoid(2.0)),
             math.log(sigmoid(1.0)), math.log(1 - sigmoid(-2.0))]
    expected = -sum(terms) / 4
    assert auxiliary_loss(states, positives, negatives, mask).item() == pytest.approx(expected, rel=1e-6)


def test_auxiliary_loss_is_stable_for_large_logits():
    states = torch.tensor([[[100.0], [0.0]]])
    loss = auxiliary_loss(states, torch.tensor([[[0.0], [-1.0]]]), torch.tensor([[[0.0], [1.0]]]),
                          torch.ones(1, 2, dtype=torch.bool))
    # −[log σ(−100) + log(1 − σ(100))] = 100 + 100 (plus ~e^-100): finite, where log(sigmoid(·)) gives inf
    assert loss.item() == pytest.approx(200.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("evolution", ["augru", "agru", "aigru"])
def test_logits_by_hand_and_output_at_the_last_valid_step(evolution):
    model = dien(evolution=evolution).eval()
    out = model(batch())
    # row 1 (length 1 in a T = 3 batch) must read h'_1, not a state after its padded steps; row 2 gives 0
    expected = [sum(final_interest_by_hand(row, evolution)) for row in range(3)]
    torch.testing.assert_close(out.logits, torch.tensor(expected))
    assert out.logits[2].item() == 0.0
    assert out.aux_loss.item() == 0.0 and out.regularization.item() == 0.0  # eval: no auxiliary loss


def test_history_sum_enters_the_mlp():
    model = dien(history_sum=True).eval()
    # Σ_t e_b[t]: row 0 [2 − 1 + 1, 1 + 0.5 + 1] = [2, 2.5] -> 4.5; row 1 [-1, 0.5] -> -0.5; row 2: 0
    sums = [4.5, -0.5, 0.0]
    expected = [sums[row] + sum(final_interest_by_hand(row, "augru")) for row in range(3)]
    torch.testing.assert_close(model(batch()).logits, torch.tensor(expected))


def test_history_product_enters_the_mlp():
    model = dien(history_product=True).eval()
    # e_a ⊙ Σ_t e_b[t]: row 0 [1, 0.5] ⊙ [2, 2.5] -> 1·2 + 0.5·2.5 = 3.25; row 1 [2, 1] ⊙ [-1, 0.5] -> -1.5; row 2: 0
    products = [3.25, -1.5, 0.0]
    expected = [products[row] + sum(final_interest_by_hand(row, "augru")) for row in range(3)]
    torch.testing.assert_close(model(batch()).logits, torch.tensor(expected))


def test_auxiliary_loss_by_hand_in_training():
    model = dien(aux_weight=0.5).train()
    out = model(batch())
    assert out.aux_loss.item() == pytest.approx(0.5 * aux_by_hand(), rel=1e-5)


def test_aux_gradient_reaches_the_embeddings():
    model = dien().train()
    model(batch()).aux_loss.backward()
    grad = model.table_modules()["item"].weight.grad
    # item 5 is only a negative (row 0, step 1; row 1's step-0 negative is never used):
    # d/de(5) of −(1/3) log(1 − σ(z)), z = ⟨h_0, ê_b[1]⟩ = tanh(2)·0.5 + tanh(1)·1, is σ(z) · tanh(2) / 3
    z = math.tanh(2.0) * 0.5 + math.tanh(1.0) * 1.0
    assert grad[5, 0].item() == pytest.approx(sigmoid(z) * math.tanh(2.0) / 3, rel=1e-5)
    # the extractor gets gradient too; the evolution layer, the attention and the MLP do not (aux only)
    assert model.extractor.weight_ih.grad.abs().sum().item() > 0
    assert model.evolution.weight_ih.grad is None and model.mlp.layers[0].weight.grad is None


def test_aux_weight_zero_gives_exactly_zero_and_needs_no_negatives():
    model = dien(aux_weight=0.0).train()
    assert "neg_item" not in model.features and "neg_cate" not in model.features
    out = model(batch(negatives=False))
    assert out.aux_loss.item() == 0.0
    torch.testing.assert_close(out.logits, dien().eval()(batch()).logits)  # the same model otherwise


def test_eval_mode_gives_zero_aux():
    model = dien()
    assert model.train()(batch()).aux_loss.item() > 0
    assert model.eval()(batch()).aux_loss.item() == 0.0


def test_all_empty_batch():
    model = dien().train()
    empty = KeyedJaggedTensor.from_lengths_sync(
        keys=["item", "cate", "hist_item", "hist_cate", "neg_item", "neg_cate"],
        values=torch.tensor([2, 3, 2, 3]), lengths=torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]))
    out = model(empty)
    assert out.logits.tolist() == [0.0, 0.0] and out.aux_loss.item() == 0.0


@pytest.mark.parametrize("evolution", ["augru", "agru", "aigru"])
def test_default_config_trains(evolution):
    torch.manual_seed(0)
    config = DIENConfig(embedding_dim=4, evolution=evolution)
    model = DIEN(config, {table: 10 for table in ("item", "cate", "user", "gender", "age_bucket", "city", "shop",
                                                 "brand")}, embedding_device=torch.device("cpu")).train()
    keys = model.features
    lengths = {"hist_item": [3, 0, 1], "hist_cate": [3, 0, 1], "neg_item": [3, 0, 1], "neg_cate": [3, 0, 1]}
    lens = [n for key in keys for n in lengths.get(key, [1, 1, 1])]
    sparse = KeyedJaggedTensor.from_lengths_sync(keys=list(keys), values=torch.randint(2, 10, (sum(lens),)),
                                                 lengths=torch.tensor(lens))
    out = model(sparse)
    assert out.logits.shape == (3,) and out.aux_loss.item() > 0
    (out.logits.sum() + out.aux_loss).backward()
    dense = {name: p for name, p in model.named_parameters() if not name.startswith("embeddings.")}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in dense.values())


def test_config_registry_and_defaults_file():
    assert MODELS["dien"] is DIEN
    defaults = yaml.safe_load((Path(training.__file__).parent / "configs" / "dien.yaml").read_text())["model"]
    config = DIENConfig.model_validate(defaults)
    assert (config.evolution, config.aux_weight, config.mlp_activation, config.mba_lambda) == ("augru", 1.0, "dice", 0)
    assert config.mlp_hidden == (200, 80) and config.history_sum and config.history_product
    with pytest.raises(ValidationError):
        DIENConfig(evolutoin="agru")
    with pytest.raises(ValidationError):
        DIENConfig(aux_weight=-1.0)
