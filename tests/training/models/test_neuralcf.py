"""GMF, NeuralCF's MLP and NeuMF against hand-computed values of their fusions (MODELS.md), on tiny tensors."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torchrec import KeyedJaggedTensor

from training.config import load_config
from training.models import MODELS
from training.models.neuralcf import GMF, NCFMLP, NCFConfig, NCFMLPConfig, NeuMF, NeuMFConfig, sample_negatives

SIZES = {"user_gmf": 4, "item_gmf": 6, "user_mlp": 4, "item_mlp": 6}
CPU = torch.device("cpu")


def batch(model, users: list[int], items: list[int]) -> KeyedJaggedTensor:
    """One value per row for each of the model's features: users for ``user_*``, items for ``item_*``."""
    values = [torch.tensor(users if name.startswith("user_") else items) for name in model.features]
    return KeyedJaggedTensor.from_lengths_sync(keys=list(model.features), values=torch.cat(values),
                                               lengths=torch.ones(len(users) * len(model.features), dtype=torch.int32))


def set_rows(model, table: str, rows: dict[int, list[float]]) -> None:
    with torch.no_grad():
        weight = model.table_modules()[table].weight
        for row, values in rows.items():
            weight[row, : len(values)] = torch.tensor(values)


def set_linear(layer, weight: list[list[float]], bias: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


def gmf_model(**overrides) -> GMF:
    model = GMF(NCFConfig(**{"embedding_dim": 2, "num_negatives": 0, **overrides}), SIZES, embedding_device=CPU)
    set_rows(model, "user_gmf", {1: [1.0, 2.0], 2: [0.0, 1.0]})
    set_rows(model, "item_gmf", {2: [3.0, -1.0], 3: [2.0, 2.0]})
    set_linear(model.head, [[0.5, 2.0]], [0.1])
    return model


def test_gmf_is_the_weighted_elementwise_product_by_hand():
    model = gmf_model().eval()
    # row 0: p = [1, 2], q = [3, -1] -> p ⊙ q = [3, -2] -> 0.5·3 + 2·(-2) + 0.1 = -2.4
    # row 1: p = [0, 1], q = [2, 2] -> [0, 2] -> 0 + 4 + 0.1 = 4.1
    out = model(batch(model, [1, 2], [2, 3]))
    torch.testing.assert_close(out.logits, torch.tensor([-2.4, 4.1]))
    assert out.targets is None and out.regularization.item() == 0.0 and out.aux_loss.item() == 0.0
    assert sorted(model.table_sizes) == ["item_gmf", "user_gmf"]


def test_ncf_mlp_tower_by_hand():
    model = NCFMLP(NCFMLPConfig(embedding_dim=1, mlp_hidden=(2,), num_negatives=0), SIZES, embedding_device=CPU)
    set_rows(model, "user_mlp", {1: [2.0], 2: [-1.0]})
    set_rows(model, "item_mlp", {2: [3.0], 3: [0.5]})
    set_linear(model.mlp_tower.layers[0], [[1.0, 1.0], [1.0, -1.0]], [0.0, 0.0])
    set_linear(model.head, [[1.0, 2.0]], [0.25])
    # row 0: z = [2, 3] -> relu([5, -1]) = [5, 0] -> 1·5 + 2·0 + 0.25 = 5.25
    # row 1: z = [-1, 0.5] -> relu([-0.5, -1.5]) = [0, 0] -> 0.25
    torch.testing.assert_close(model.eval()(batch(model, [1, 2], [2, 3])).logits, torch.tensor([5.25, 0.25]))


def neumf_model(**overrides) -> NeuMF:
    settings = {"embedding_dim": 1, "mlp_hidden": (2,), "num_negatives": 0, **overrides}
    model = NeuMF(NeuMFConfig(**settings), SIZES, embedding_device=CPU)
    # separate embeddings per branch: the same user and item have other vectors in GMF and in MLP
    set_rows(model, "user_gmf", {1: [2.0], 2: [1.0]})
    set_rows(model, "item_gmf", {2: [3.0], 3: [-1.0]})
    set_rows(model, "user_mlp", {1: [1.0], 2: [0.5]})
    set_rows(model, "item_mlp", {2: [-1.0], 3: [0.5]})
    set_linear(model.mlp_tower.layers[0], [[1.0, 1.0], [1.0, -1.0]], [0.0, 0.0])
    set_linear(model.head, [[0.5, 1.0, -1.0]], [0.0])  # h = [h_GMF (1); h_MLP (2)]
    return model


def test_neumf_fuses_gmf_and_mlp_by_hand():
    model = neumf_model().eval()
    # row 0: φ_GMF = 2·3 = 6; z = [1, -1] -> φ_MLP = relu([0, 2]) = [0, 2]; logit = 0.5·6 + 1·0 - 1·2 = 1
    # row 1: φ_GMF = 1·(-1) = -1; z = [0.5, 0.5] -> relu([1, 0]) = [1, 0]; logit = -0.5 + 1 - 0 = 0.5
    logits = model(batch(model, [1, 2], [2, 3])).logits
    torch.testing.assert_close(logits, torch.tensor([1.0, 0.5]))
    # ŷ = σ(hᵀ[GMF; MLP]): σ(1) = 1 / (1 + e^-1)
    assert torch.sigmoid(logits)[0].item() == pytest.approx(1 / (1 + 2.718281828459045 ** -1))
    assert sorted(model.table_sizes) == ["item_gmf", "item_mlp", "user_gmf", "user_mlp"]


def test_neumf_reads_each_branch_from_its_own_tables():
    model = neumf_model().eval()
    torch.testing.assert_close(model(batch(model, [1], [2])).logits, torch.tensor([1.0]))
    set_rows(model, "user_gmf", {1: [4.0]})  # φ_GMF = 4·3 = 12, the MLP branch unchanged: 6 + 0 - 2 = 4
    torch.testing.assert_close(model(batch(model, [1], [2])).logits, torch.tensor([4.0]))
    set_rows(model, "item_mlp", {2: [1.0]})  # z = [1, 1] -> relu([2, 0]): 6 + 2 - 0 = 8
    torch.testing.assert_close(model(batch(model, [1], [2])).logits, torch.tensor([8.0]))


def test_neumf_with_pretrained_dense_parts_is_the_weighted_sum_of_gmf_and_mlp():
    gmf = GMF(NCFConfig(embedding_dim=1, num_negatives=0), SIZES, embedding_device=CPU)
    mlp = NCFMLP(NCFMLPConfig(embedding_dim=1, mlp_hidden=(2,), num_negatives=0), SIZES, embedding_device=CPU)
    set_linear(gmf.head, [[2.0]], [0.5])
    set_linear(mlp.mlp_tower.layers[0], [[1.0, 1.0], [1.0, -1.0]], [0.0, 1.0])
    set_linear(mlp.head, [[3.0, -1.0]], [1.0])
    model = neumf_model(pretrain_alpha=0.25)
    model.load_pretrained_dense(gmf.state_dict(), mlp.state_dict())
    # h = [0.25·2; 0.75·3, 0.75·(-1)] = [0.5, 2.25, -0.75]; b = 0.25·0.5 + 0.75·1 = 0.875; the tower is MLP's
    torch.testing.assert_close(model.head.weight, torch.tensor([[0.5, 2.25, -0.75]]))
    torch.testing.assert_close(model.head.bias, torch.tensor([0.875]))
    torch.testing.assert_close(model.mlp_tower.layers[0].bias, torch.tensor([0.0, 1.0]))
    # with GMF's and MLP's tables too, NeuMF's logit is 0.25·logit_GMF + 0.75·logit_MLP:
    for source, table in ((gmf, "user_gmf"), (gmf, "item_gmf"), (mlp, "user_mlp"), (mlp, "item_mlp")):
        with torch.no_grad():
            source.table_modules()[table].weight.copy_(model.table_modules()[table].weight)
    # row (1, 2): GMF 2·(2·3) + 0.5 = 12.5; MLP z = [1, -1]: relu([0, 3]) -> 3·0 - 3 + 1 = -2
    users, items = [1], [2]
    expected = 0.25 * 12.5 + 0.75 * -2.0
    torch.testing.assert_close(gmf.eval()(batch(gmf, users, items)).logits, torch.tensor([12.5]))
    torch.testing.assert_close(mlp.eval()(batch(mlp, users, items)).logits, torch.tensor([-2.0]))
    torch.testing.assert_close(model.eval()(batch(model, users, items)).logits, torch.tensor([expected]))


def test_sampled_negatives_are_scored_with_the_positive_rows_user():
    model = gmf_model(num_negatives=3)
    # q_i = [i, 0] and h = [1, 0], b = 0: the logit of (user u, item i) is p_u[0] · i, so it names the item
    set_rows(model, "item_gmf", {i: [float(i), 0.0] for i in range(6)})
    set_rows(model, "user_gmf", {1: [1.0, 0.0], 2: [10.0, 0.0]})
    set_linear(model.head, [[1.0, 0.0]], [0.0])
    torch.manual_seed(0)
    out = model.train()(batch(model, [1, 2], [2, 3]), torch.tensor([1.0, 0.0]))
    # rows: (1, 2) label 1, (2, 3) label 0, then 3 negatives of row 0 (user 1): items in [2, 6) other than 2
    assert out.logits.shape == (5,)
    torch.testing.assert_close(out.targets, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(out.logits[:2], torch.tensor([2.0, 30.0]))
    negatives = out.logits[2:]
    assert all(value in (3.0, 4.0, 5.0) for value in negatives.tolist())  # user 1 (p = 1), never the positive 2
    # evaluation: the batch's rows only
    eval_out = model.eval()(batch(model, [1, 2], [2, 3]), torch.tensor([1.0, 0.0]))
    assert eval_out.targets is None and eval_out.logits.shape == (2,)


def test_sample_negatives_excludes_each_rows_item():
    torch.manual_seed(1)
    items = torch.tensor([2, 3, 3])
    negatives = sample_negatives(items, 50, num_items=4)  # only items 2 and 3 exist: the other one every time
    assert negatives.shape == (3, 50)
    assert (negatives[0] == 3).all() and (negatives[1:] == 2).all()


def test_configs_registry_and_defaults():
    assert MODELS["gmf"] is GMF and MODELS["ncf_mlp"] is NCFMLP and MODELS["neumf"] is NeuMF
    with pytest.raises(ValidationError):
        NCFConfig(embeding_dim=4)
    for name in ("gmf", "ncf_mlp", "neumf"):
        cfg = load_config(name, overrides=["model.embedding_dim=8"])
        MODELS[name].config_class.model_validate(cfg.model)
    # NeuMF's pre-training sources hold tables of the same names
    assert set(GMF(NCFConfig(), SIZES, CPU).table_sizes) | set(NCFMLP(NCFMLPConfig(), SIZES, CPU).table_sizes) == \
        set(NeuMF(NeuMFConfig(), SIZES, CPU).table_sizes)
