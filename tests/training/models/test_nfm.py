"""NFM against hand-computed values (fields and embeddings: tests/training/models/classic_fixtures.py).

Bi-interaction f_BI = Σ_{i<j} v_i ⊙ v_j:
    row 0: u⊙i = [1, 0], u⊙h = [0.5, 0], i⊙h = [0.5, -0.5] -> [2, -0.5]
           (identity: ½[(Σv)² - Σv²] = ½[[6.25, 0.25] - [2.25, 1.25]] = [2, -0.5])
    row 1: u⊙i = [0, -2] (the empty history adds nothing) -> [0, -2]
Linear part with w0 = 0.1: [0.1 + 0.9, 0.1 - 0.9] = [1.0, -0.8].
One hidden layer W_1 = I, b_1 = [0, 1], ReLU, h = [1, -2]:
    row 0: ReLU([2, 0.5]) = [2, 0.5] -> 2 - 1 = 1;  row 1: ReLU([0, -1]) = 0 -> 0
logits = [2.0, -0.8]. NFM-0 (no hidden layer) with h = [1, 1] is the FM: [1.0 + 1.5, -0.8 - 2] = [2.5, -2.8].
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
from training.models.nfm import NFM, NFMConfig


def nfm(**overrides) -> NFM:
    config = NFMConfig(**{"embedding_dim": 2, "fields": FIELDS, "mlp_hidden": (2,), **overrides})
    model = NFM(config, SIZES, embedding_device=torch.device("cpu"))
    set_embeddings(model, linear=True)
    with torch.no_grad():
        model.bias.fill_(0.1)
        if config.mlp_hidden:
            model.mlp.layers[0].weight.copy_(torch.eye(2))
            model.mlp.layers[0].bias.copy_(torch.tensor([0.0, 1.0]))
            model.h.weight.copy_(torch.tensor([[1.0, -2.0]]))
        else:
            model.h.weight.fill_(1.0)
    return model


def test_nfm_forward_by_hand():
    out = nfm().eval()(batch())
    torch.testing.assert_close(out.logits, torch.tensor([2.0, -0.8]))
    assert out.regularization.item() == 0.0 and out.aux_loss.item() == 0.0


def test_nfm_zero_is_fm_against_the_explicit_pairwise_sum():
    model = nfm(mlp_hidden=()).eval()
    assert model.h.bias is None
    rows = ((1, 2, (3, 4)), (2, 3, ()), (2, 4, (2, 3, 3)), (1, 3, (4,)))
    expected = []
    for user, item, history in rows:
        vectors, weights = field_vectors(user, item, history)
        expected.append(0.1 + sum(weights) + explicit_pairwise(vectors)[1])
    torch.testing.assert_close(model(batch(rows)).logits, torch.tensor(expected))
    torch.testing.assert_close(model(batch()).logits, torch.tensor([2.5, -2.8]))


def test_nfm_bi_interaction_vector_against_explicit_loop():
    # h picks one coordinate of f_BI at a time: the model's pooled vector, coordinate by coordinate
    rows = ((1, 2, (3, 4)), (2, 3, ()), (2, 4, (2, 3, 3)))
    for d in range(2):
        model = nfm(mlp_hidden=()).eval()
        with torch.no_grad():
            model.h.weight.copy_(torch.tensor([[1.0 if k == d else 0.0 for k in range(2)]]))
            model.bias.zero_()
            for name in ("user", "item"):
                model.table_modules()[name].weight[:, 2].zero_()  # no linear part
        expected = [explicit_pairwise(field_vectors(*row)[0])[0][d] for row in rows]
        torch.testing.assert_close(model(batch(rows)).logits, torch.tensor(expected))


def test_nfm_gradients_reach_embeddings():
    model = nfm().train()
    model(batch()).logits.sum().backward()
    item = model.table_modules()["item"].weight.grad
    torch.testing.assert_close(item[:, 2], torch.tensor([0.0, 0.0, 1.0, 1.5, 0.5]))  # w: 1, or 1/|H| per history id
    # row 0's user v: ∂(hᵀ ReLU(f_BI + b))/∂f_BI = [1, -2] (both units active), ∂f_BI/∂v_u = v_i + v_h = [1.5, 0.5]
    torch.testing.assert_close(model.table_modules()["user"].weight.grad[1, :2], torch.tensor([1.5, -1.0]))
    assert item[:, 3].abs().sum().item() == 0.0


def test_nfm_is_registered_and_its_config_rejects_unknown_keys():
    assert MODELS["nfm"] is NFM
    with pytest.raises(pydantic.ValidationError):
        NFMConfig.model_validate({"hidden": [4]})
