"""Deep Crossing against hand-computed values, D = 1.

    e(user 1) = 1, e(user 2) = -2; e(item 2) = 0.5, e(item 3) = 2
    row 0: user 1, item 2, history [3, 4] -> X_0 = [1, 0.5, log 3];  row 1: user 2, item 3, [] -> [-2, 2, 0]
One residual unit, W_0 = [1, 1, 0], b_0 = 0, W_1 = [1, 0, -1]ᵀ, b_1 = [0, -1, 0]:
    row 0: W_0 X + b_0 = 1.5 -> W_1·1.5 + b_1 = [1.5, -1, -1.5] -> ReLU([2.5, -0.5, log 3 - 1.5]) = [2.5, 0, 0]
    row 1: -2 + 2 = 0 -> ReLU 0 -> b_1 = [0, -1, 0] -> ReLU([-2, 1, 0]) = [0, 1, 0]
Output wᵀ X + b with w = [1, 2, 3], b = 0.5 -> [3.0, 2.5]
"""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torchrec import KeyedJaggedTensor

from training.models import MODELS
from training.models.deep_crossing import DeepCrossing, DeepCrossingConfig

SIZES = {"user": 3, "item": 5}


def batch() -> KeyedJaggedTensor:
    return KeyedJaggedTensor.from_lengths_sync(keys=["user", "item", "hist_item"],
                                               values=torch.tensor([1, 2, 2, 3, 3, 4]),
                                               lengths=torch.tensor([1, 1, 1, 1, 2, 0]))


def deep_crossing(**overrides) -> DeepCrossing:
    config = DeepCrossingConfig(**{"embedding_dim": 1, "fields": ("user", "item"), "residual_hidden": (1,),
                                   **overrides})
    model = DeepCrossing(config, SIZES, embedding_device=torch.device("cpu"))
    with torch.no_grad():
        model.table_modules()["user"].weight[:, 0].copy_(torch.tensor([0.0, 1.0, -2.0]))
        model.table_modules()["item"].weight[:, 0].copy_(torch.tensor([0.0, 0.0, 0.5, 2.0, 0.0]))
    return model


def set_unit(model: DeepCrossing) -> None:
    unit = model.residual[0]
    with torch.no_grad():
        unit.inner.weight.copy_(torch.tensor([[1.0, 1.0, 0.0]]))
        unit.inner.bias.zero_()
        unit.outer.weight.copy_(torch.tensor([[1.0], [0.0], [-1.0]]))
        unit.outer.bias.copy_(torch.tensor([0.0, -1.0, 0.0]))
        model.output.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        model.output.bias.fill_(0.5)


def test_stacking_layer_appends_log_history_length():
    model = deep_crossing().eval()
    assert model.features == ("user", "item", "hist_item")  # read for its length even though it is not a field
    sparse = batch()
    stack = model.stack(sparse, model.lookup(sparse))
    torch.testing.assert_close(stack, torch.tensor([[1.0, 0.5, math.log(3.0)], [-2.0, 2.0, 0.0]]))


def test_deep_crossing_forward_by_hand():
    model = deep_crossing().eval()
    set_unit(model)
    out = model(batch())
    torch.testing.assert_close(out.logits, torch.tensor([3.0, 2.5]))
    assert out.regularization.item() == 0.0 and out.aux_loss.item() == 0.0


def test_deep_crossing_gradients_reach_embeddings():
    model = deep_crossing().train()
    set_unit(model)
    model(batch()).logits.sum().backward()
    # row 0: X_O[0] = X[0] + 1.5·... ; d logit / d e(user 1): through the skip (1·1) and the unit:
    # X_O[0] = e_u + (e_u + e_i) (active), X_O[1], X_O[2] inactive -> d/d e_u = 1·(1 + 1) = 2, d/d e_i = 1
    # row 1: X_O[1] = e_i + 0·... - 1 = 1 (active), the inner unit is at 0 (inactive) -> d/d e(item 3) = 2
    torch.testing.assert_close(model.table_modules()["user"].weight.grad[:, 0], torch.tensor([0.0, 2.0, 0.0]))
    torch.testing.assert_close(model.table_modules()["item"].weight.grad[:, 0],
                               torch.tensor([0.0, 0.0, 1.0, 2.0, 0.0]))


def test_deep_crossing_without_the_length_feature_and_config_errors():
    model = deep_crossing(history_length_feature=False, residual_hidden=(3, 2))
    assert model.features == ("user", "item") and len(model.residual) == 2
    assert model(KeyedJaggedTensor.from_lengths_sync(keys=["user", "item"], values=torch.tensor([1, 2]),
                                                     lengths=torch.tensor([1, 1]))).logits.shape == (1,)
    assert MODELS["deep_crossing"] is DeepCrossing
    with pytest.raises(pydantic.ValidationError):
        DeepCrossingConfig.model_validate({"residual_units": 3})
    with pytest.raises(ValueError, match="residual_hidden"):
        deep_crossing(residual_hidden=(0,))
