"""AFM against hand-computed values of ŷ = w0 + Σ w_i + pᵀ Σ_{i<j} a_ij (v_i ⊙ v_j) (MODELS.md), with D = 1.

Each table stores [v; w; padding]: D = 1 plus the first-order column = 2, rounded up to 4 for FBGEMM. Rows:

    item: id 1 -> v = 1,   w = 0.1;   id 2 -> v = 0.5, w = -0.1
    cate: id 1 -> v = 2,   w = 0.2;   id 2 -> v = -2,  w = 0
    user: id 1 -> v = -1,  w = 0.3;   id 2 -> v = 3,   w = 0.4

The padding columns hold 100: they must never be read. Attention W = [[1]], b = 0, h = [[1]] (a' = relu(e)),
p = [[1]], w0 = 0.5.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torchrec import KeyedJaggedTensor

from training.layers.interaction import pairwise_products
from training.models.afm import AFM, SCALAR_FIELDS, AFMConfig

SIZES = {"item": 3, "cate": 3, "user": 3, "gender": 3, "age_bucket": 3, "city": 3, "shop": 3, "brand": 3}
TABLES = {  # table -> rows [v, w] for ids 0, 1, 2
    "item": [[0.0, 0.0], [1.0, 0.1], [0.5, -0.1]],
    "cate": [[0.0, 0.0], [2.0, 0.2], [-2.0, 0.0]],
    "user": [[0.0, 0.0], [-1.0, 0.3], [3.0, 0.4]],
}


def afm(fields=("item", "cate", "user"), **overrides) -> AFM:
    config = AFMConfig(embedding_dim=1, fields=fields, attention_dim=1, dropout=0.0, **overrides)
    model = AFM(config, SIZES, embedding_device=torch.device("cpu"))
    with torch.no_grad():
        for table, rows in TABLES.items():
            if table in model.table_sizes:
                weight = model.table_modules()[table].weight
                weight.fill_(100.0)
                weight[:, :2].copy_(torch.tensor(rows))
        model.pair_pooling.attention.weight.fill_(1.0)
        model.pair_pooling.attention.bias.zero_()
        model.pair_pooling.projection.weight.fill_(1.0)
        model.p.weight.fill_(1.0)
        model.bias.fill_(0.5)
    return model.eval()


def kjt(features: dict[str, tuple[list[int], list[int]]]) -> KeyedJaggedTensor:
    values = [v for rows in features.values() for row in rows for v in row]
    lengths = [len(row) for rows in features.values() for row in rows]
    return KeyedJaggedTensor.from_lengths_sync(keys=list(features), values=torch.tensor(values),
                                               lengths=torch.tensor(lengths))


BATCH = kjt({"item": ([1], [2]), "cate": ([1], [2]), "user": ([1], [2])})


def test_first_order_weights_live_in_an_extra_column():
    model = afm()
    # user-facing D = 1; the tables are built with D + 1 = 2 columns, stored as 4 (FBGEMM needs multiples of 4)
    assert model.afm_config.embedding_dim == 1 and model.factor_dim == 1
    assert model.config.embedding_dim == 2 and model.storage_dim == 4
    embedded = model.lookup(BATCH)
    assert embedded["item"].values().tolist() == [[1.0, pytest.approx(0.1)], [0.5, pytest.approx(-0.1)]]


def test_afm_logit_by_hand():
    model = afm()
    # row 0: pairs (item, cate) = 1·2 = 2, (item, user) = -1, (cate, user) = -2; a' = relu -> [2, 0, 0]
    #        a = [e², 1, 1] / (e² + 2); pooled = (2e² - 1 - 2) / (e² + 2); first order 0.1 + 0.2 + 0.3 = 0.6
    e2 = math.exp(2.0)
    row0 = 0.5 + 0.6 + (2 * e2 - 3) / (e2 + 2)
    # row 1: pairs 0.5·(-2) = -1, 0.5·3 = 1.5, -2·3 = -6; a' = [0, 1.5, 0]
    #        a = [1, e^1.5, 1] / (2 + e^1.5); pooled = (-1 + 1.5 e^1.5 - 6) / (2 + e^1.5); first order -0.1 + 0 + 0.4
    e15 = math.exp(1.5)
    row1 = 0.5 + 0.3 + (-7 + 1.5 * e15) / (2 + e15)
    out = model(BATCH)
    torch.testing.assert_close(out.logits, torch.tensor([row0, row1]))
    assert out.aux_loss.item() == 0.0 and out.targets is None


def test_pair_attention_weights_by_hand_sum_to_one():
    model = afm()
    embedded = model.lookup(BATCH)
    v = model.field_embeddings(embedded)[..., :1]
    weights = model.pair_pooling.weights(pairwise_products(v))
    e2, e15 = math.exp(2.0), math.exp(1.5)
    torch.testing.assert_close(weights, torch.tensor([[e2, 1, 1], [1, e15, 1]]) / torch.tensor([[e2 + 2], [e15 + 2]]))


def test_l2_on_the_attention_matrix_is_the_regularization():
    # λ ||W||² with W = [[1]] and λ = 0.25
    assert afm(attention_l2=0.25)(BATCH).regularization.item() == pytest.approx(0.25)
    assert afm(attention_l2=0.0)(BATCH).regularization.item() == 0.0


def test_a_sequence_field_is_mean_pooled():
    model = afm(fields=("item", "hist_item"))
    batch = kjt({"item": ([1], [2]), "hist_item": ([1, 2], [])})
    # row 0: hist = mean of [1, 0.1] and [0.5, -0.1] = [0.75, 0]; one pair -> a = 1; 0.5 + 0.1 + 0 + 1·0.75 = 1.35
    # row 1: empty history = the zero vector (no first-order term, no interaction): 0.5 - 0.1 = 0.4
    torch.testing.assert_close(model(batch).logits, torch.tensor([1.35, 0.4]))


def test_config_defaults_and_errors():
    config = AFMConfig()
    assert config.fields == SCALAR_FIELDS and config.embedding_dim == 16
    with pytest.raises(ValidationError):
        AFMConfig(attention_factor=4)  # unknown keys are errors
    with pytest.raises(ValueError, match="not AFM fields"):
        AFM(AFMConfig(fields=("item", "neg_item")), SIZES, embedding_device=torch.device("cpu"))
    with pytest.raises(ValueError, match="two distinct fields"):
        AFM(AFMConfig(fields=("item",)), SIZES, embedding_device=torch.device("cpu"))


def test_every_parameter_receives_a_gradient():
    torch.manual_seed(0)
    model = AFM(AFMConfig(embedding_dim=4, attention_dim=4, dropout=0.2), SIZES,
                embedding_device=torch.device("cpu")).train()
    batch = kjt({name: ([1], [2]) for name in SCALAR_FIELDS})
    out = model(batch)
    (F.binary_cross_entropy_with_logits(out.logits, torch.tensor([1.0, 0.0])) + out.regularization).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        if name.startswith("embeddings."):
            # D = 4 factor columns + the w column are used (rows 1, 2); the padding (columns 5-7 of the stored 8)
            # and the unused row 0 get no gradient
            assert param.shape[1] == 8 and (param.grad[1:3, :5].abs() > 0).all(), name
            assert param.grad[:, 5:].abs().sum().item() == 0.0 and param.grad[0].abs().sum().item() == 0.0, name
        else:
            assert param.grad.abs().sum().item() > 0, name


def test_registered_and_packaged_defaults_validate():
    from training.config import load_config
    from training.models import MODELS

    assert MODELS["afm"] is AFM
    assert AFMConfig.model_validate(load_config("afm").model) == AFMConfig()  # the YAML repeats the defaults
