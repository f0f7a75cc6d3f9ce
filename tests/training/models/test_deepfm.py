"""DeepFM against hand-computed values (fields and embeddings: tests/training/models/classic_fixtures.py).

Row 0: v_user = [1, 0], v_item = [1, 1], v_hist = [0.5, -0.5]; w = 0.5, 0.2, 0.2 -> Σ w = 0.9
       pairs: ⟨u, i⟩ = 1, ⟨u, h⟩ = 0.5, ⟨i, h⟩ = 0 -> 1.5
       identity: Σv = [2.5, 0.5] -> (Σv)² = [6.25, 0.25]; Σv² = [2.25, 1.25] -> ½ Σ_d [4, -1] = 1.5
Row 1: v_user = [0, 2], v_item = [2, -1], v_hist = 0; w = -1, 0.1, 0 -> Σ w = -0.9; ⟨u, i⟩ = -2 -> -2
With w0 = 0.1: y_FM = [0.1 + 0.9 + 1.5, 0.1 - 0.9 - 2] = [2.5, -2.8].
DNN (one hidden unit, ReLU) over z = [u0, u1, i0, i1, h0, h1] with weights [1, 0, 0, 1, 2, 0], then 2·a - 0.5:
       row 0: 1 + 1 + 1 = 3 -> 5.5; row 1: 0 - 1 + 0 = -1 -> ReLU 0 -> -0.5.
logits = [2.5 + 5.5, -2.8 - 0.5] = [8.0, -3.3].
"""

from __future__ import annotations

import pydantic
import pytest
import torch

from tests.training.models.classic_fixtures import (
    FIELDS,
    SIZES,
    batch,
    explicit_pairwise,
    field_vectors,
    set_embeddings,
)
from training.models import MODELS
from training.models.deepfm import DeepFM, DeepFMConfig


def deepfm(**overrides) -> DeepFM:
    config = DeepFMConfig(**{"embedding_dim": 2, "fields": FIELDS, "mlp_hidden": (1,), **overrides})
    model = DeepFM(config, SIZES, embedding_device=torch.device("cpu"))
    set_embeddings(model, linear=True)
    with torch.no_grad():
        model.bias.fill_(0.1)
        first, last = model.mlp.layers[0], model.mlp.layers[2]
        first.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0, 2.0, 0.0]]))
        first.bias.zero_()
        last.weight.fill_(2.0)
        last.bias.fill_(-0.5)
    return model


def test_deepfm_forward_by_hand():
    model = deepfm().eval()
    y_fm, y_dnn, _ = model.parts(batch())
    torch.testing.assert_close(y_fm, torch.tensor([2.5, -2.8]))
    torch.testing.assert_close(y_dnn, torch.tensor([5.5, -0.5]))
    out = model(batch())
    torch.testing.assert_close(out.logits, torch.tensor([8.0, -3.3]))
    assert out.regularization.item() == 0.0 and out.aux_loss.item() == 0.0 and out.targets is None


def test_deepfm_fm_part_equals_the_explicit_pairwise_sum():
    model = deepfm().eval()
    rows = ((1, 2, (3, 4)), (2, 3, ()), (2, 4, (2, 3, 3)), (1, 3, (4,)))
    y_fm, _, _ = model.parts(batch(rows))
    expected = []
    for user, item, history in rows:
        vectors, weights = field_vectors(user, item, history)
        expected.append(0.1 + sum(weights) + explicit_pairwise(vectors)[1])
    torch.testing.assert_close(y_fm, torch.tensor(expected))


def test_deepfm_tables_store_w_in_column_d_and_gradients_reach_them():
    model = deepfm().train()
    assert model.config.embedding_dim == 3 and model.deepfm_config.embedding_dim == 2 and model.storage_dim == 4
    model(batch()).logits.sum().backward()
    item = model.table_modules()["item"].weight.grad
    user = model.table_modules()["user"].weight.grad
    # ∂ logits / ∂ w: 1 for a scalar field's id, 1/|H| for each history id
    torch.testing.assert_close(item[:, 2], torch.tensor([0.0, 0.0, 1.0, 1.0 + 0.5, 0.5]))
    torch.testing.assert_close(user[:, 2], torch.tensor([0.0, 1.0, 1.0]))
    # v gets the FM's and the DNN's gradients: row 0's user v: ∂y_FM/∂v_u = v_i + v_h = [1.5, 0.5], DNN [2, 0]
    torch.testing.assert_close(user[1, :2], torch.tensor([3.5, 0.5]))
    assert item[:, 3].abs().sum().item() == 0.0 and item[:2].abs().sum().item() == 0.0  # padding column, unused rows
    assert model.bias.grad.item() == pytest.approx(2.0)


def test_deepfm_is_registered_and_its_config_rejects_unknown_keys():
    assert MODELS["deepfm"] is DeepFM
    with pytest.raises(pydantic.ValidationError):
        DeepFMConfig.model_validate({"embeding_dim": 4})
    with pytest.raises(ValueError, match="not fields"):
        DeepFM(DeepFMConfig(fields=("user", "nope")), SIZES, embedding_device=torch.device("cpu"))
