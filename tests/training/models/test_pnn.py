"""PNN (IPNN and OPNN) against hand-computed values (fields and embeddings: classic_fixtures.py, no w column).

    row 0: f_user = [1, 0], f_item = [1, 1], f_hist = [0.5, -0.5]     row 1: [0, 2], [2, -1], [0, 0]
IPNN p (pairs (u,i), (u,h), (i,h)): row 0 [1, 0.5, 0], row 1 [-2, 0, 0].
    W_z reads f_user[0], b = 0.5, W_p = [1, 2, 3]: row 0: 1 + (1 + 1 + 0) + 0.5 = 3.5; row 1: 0 - 2 + 0.5 < 0 -> 0
    output 2·l_1 - 1 -> [6, -1]
OPNN f_Σ: row 0 [2.5, 0.5] -> p = [6.25, 1.25, 1.25, 0.25]; row 1 [2, 1] -> [4, 2, 2, 1].
    W_z = 0, b = -1, W_p = [1, 0, 0, -1]: row 0: 6 - 1 = 5; row 1: 3 - 1 = 2 -> output 2·l_1 - 1 -> [9, 3]
"""

from __future__ import annotations

import pydantic
import pytest
import torch

from tests.training.models.classic_fixtures import FIELDS, SIZES, batch, set_embeddings
from training.models import MODELS
from training.models.pnn import PNN, PNNConfig


def pnn(product: str) -> PNN:
    config = PNNConfig(embedding_dim=2, fields=FIELDS, product=product, product_dim=1, mlp_hidden=())
    model = PNN(config, SIZES, embedding_device=torch.device("cpu"))
    set_embeddings(model, linear=False)
    with torch.no_grad():
        model.mlp.layers[0].weight.fill_(2.0)
        model.mlp.layers[0].bias.fill_(-1.0)
    return model


def test_ipnn_forward_by_hand():
    model = pnn("inner").eval()
    with torch.no_grad():
        model.product.linear_z.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0]]))
        model.product.linear_z.bias.fill_(0.5)
        model.product.linear_p.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    out = model(batch())
    torch.testing.assert_close(out.logits, torch.tensor([6.0, -1.0]))
    assert out.regularization.item() == 0.0


def test_opnn_forward_by_hand():
    model = pnn("outer").eval()
    with torch.no_grad():
        model.product.linear_z.weight.zero_()
        model.product.linear_z.bias.fill_(-1.0)
        model.product.linear_p.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, -1.0]]))
    torch.testing.assert_close(model(batch()).logits, torch.tensor([9.0, 3.0]))


def test_pnn_gradients_reach_embeddings():
    model = pnn("inner").train()
    with torch.no_grad():
        model.product.linear_z.weight.zero_()
        model.product.linear_z.bias.zero_()
        model.product.linear_p.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
    # logit row 0 = 2·ReLU(⟨u, i⟩) - 1 = 2·1 - 1; ∂/∂v_user1 = 2·v_item2 = [2, 2], ∂/∂v_item2 = 2·v_user1 = [2, 0]
    # row 1: ⟨u, i⟩ = -2 < 0, no gradient
    model(batch()).logits.sum().backward()
    torch.testing.assert_close(model.table_modules()["user"].weight.grad[:, :2],
                               torch.tensor([[0.0, 0.0], [2.0, 2.0], [0.0, 0.0]]))
    torch.testing.assert_close(model.table_modules()["item"].weight.grad[2, :2], torch.tensor([2.0, 0.0]))


def test_pnn_is_registered_and_validates_product():
    assert MODELS["pnn"] is PNN
    with pytest.raises(pydantic.ValidationError):
        PNNConfig(product="kernel")
    assert PNN(PNNConfig(product="outer", embedding_dim=3), {t: 4 for t in
               ("user", "gender", "age_bucket", "city", "item", "cate", "shop", "brand")},
               embedding_device=torch.device("cpu")).product.product_dim == 9
