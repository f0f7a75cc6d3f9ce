"""DIN and BaseModel against hand-computed values of their equations (MODELS.md), on 1-dimensional embeddings."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

from training.models.base import BaseModel, BaseModelConfig
from training.models.din import DIN, DINConfig

SIZES = {"item": 5, "cate": 4}
KEYS = ["item", "cate", "hist_item", "hist_cate"]


def batch() -> KeyedJaggedTensor:
    # row 0: target (item 2, cate 2), history [(3, 3), (4, 2)]; row 1: target (3, 3), empty history
    return KeyedJaggedTensor.from_lengths_sync(
        keys=KEYS,
        values=torch.tensor([2, 3, 2, 3, 3, 4, 3, 2]),
        lengths=torch.tensor([1, 1, 1, 1, 2, 0, 2, 0]),
    )


def set_embeddings(model) -> None:
    with torch.no_grad():
        # e(item 2) = 1, e(item 3) = 2, e(item 4) = -1; e(cate 2) = 0.5, e(cate 3) = 1
        model.table_modules()["item"].weight[:, :1].copy_(torch.tensor([[0.0], [0.0], [1.0], [2.0], [-1.0]]))
        model.table_modules()["cate"].weight[:, :1].copy_(torch.tensor([[0.0], [0.0], [0.5], [1.0]]))


def din(**overrides) -> DIN:
    settings = {"embedding_dim": 1, "profile_features": (), "attention_hidden": (1,), "attention_activation": "relu",
                "mlp_hidden": (), "mba_lambda": 0.0, **overrides}
    config = DINConfig(**settings)
    model = DIN(config, SIZES, embedding_device=torch.device("cpu"))
    set_embeddings(model)
    with torch.no_grad():
        first, last = model.attention.mlp.layers[0], model.attention.mlp.layers[2]
        # g = relu(e_j · e_a): the inputs are [e_j, e_a, e_j - e_a, e_j * e_a] (2 dims each); pick the product
        first.weight.copy_(torch.tensor([[0, 0, 0, 0, 0, 0, 1.0, 1.0]]))
        first.bias.zero_()
        last.weight.fill_(1.0)
        last.bias.zero_()
        # logit = sum(v_U): the final layer reads [e_a (2), v_U (2)]
        model.mlp.layers[0].weight.copy_(torch.tensor([[0, 0, 1.0, 1.0]]))
        model.mlp.layers[0].bias.zero_()
    return model


def test_din_logit_is_the_unnormalised_attention_sum_by_hand():
    model = din().eval()
    # row 0: e_a = [1, 0.5]; step 1 e = [2, 1]: g = relu(2*1 + 1*0.5) = 2.5; step 2 e = [-1, 0.5]:
    # g = relu(-1 + 0.25) = 0; v_U = 2.5 * [2, 1] = [5, 2.5] (no softmax: the weights do not sum to 1) -> 7.5
    # row 1: empty history -> v_U = 0 -> logit 0
    out = model(batch())
    torch.testing.assert_close(out.logits, torch.tensor([7.5, 0.0]))
    assert out.regularization.item() == 0.0 and out.aux_loss.item() == 0.0


def test_base_model_sums_the_history():
    config = BaseModelConfig(embedding_dim=1, profile_features=(), mlp_hidden=())
    model = BaseModel(config, SIZES, embedding_device=torch.device("cpu"))
    set_embeddings(model)
    with torch.no_grad():
        model.mlp.layers[0].weight.copy_(torch.tensor([[0, 0, 1.0, 1.0]]))
        model.mlp.layers[0].bias.zero_()
    # row 0: Σ e_j = [2, 1] + [-1, 0.5] = [1, 1.5] -> 2.5; row 1: 0
    torch.testing.assert_close(model(batch()).logits, torch.tensor([2.5, 0.0]))


def test_mini_batch_aware_penalty_counts_each_sample_once_per_row():
    model = din(mba_lambda=0.5).train()
    # n_j: item 2 -> 4, item 3 -> 2; cate rows get a huge n, so their part is ~0
    model.set_frequencies({"item": torch.tensor([1, 1, 4, 2, 1]), "cate": torch.full((4,), 1e12)})
    # item rows used: row 0 uses {2 (target), 3 (history)} and item 4 (history); row 1 uses {3}
    # ||w_2||² = 1, ||w_3||² = 4, ||w_4||² = 1 with n_4 = 1
    # Σ = 1/4·1 (row 0, item 2) + 1/2·4 (row 0, item 3) + 1/1·1 (row 0, item 4) + 1/2·4 (row 1, item 3) = 5.25
    duplicate = KeyedJaggedTensor.from_lengths_sync(  # row 0's history also holds item 2, the target: still once
        keys=KEYS, values=torch.tensor([2, 3, 2, 3, 3, 4, 2, 3, 2, 2]), lengths=torch.tensor([1, 1, 1, 1, 3, 0, 3, 0]))
    out = model(duplicate)
    assert out.regularization.item() == pytest.approx(0.5 * 5.25, rel=1e-6)
    # only the rows touched by the batch are regularised: row 1 of the item table has no gradient
    out.regularization.backward()
    grad = model.table_modules()["item"].weight.grad
    assert grad[0].abs().sum().item() == 0.0 and grad[1].abs().sum().item() == 0.0
    # d/dw_3 of λ(1/2·w² + 1/2·w²) = λ·2·w_3 = 0.5·2·2 = 2
    assert grad[3, 0].item() == pytest.approx(2.0)
    # the columns the table stores beyond embedding_dim (FBGEMM needs D % 4 == 0) are never used
    assert model.storage_dim == 4 and grad[:, 1:].abs().sum().item() == 0.0


def test_mba_penalty_is_off_in_eval_and_needs_frequencies():
    model = din(mba_lambda=0.5)
    with pytest.raises(RuntimeError, match="frequencies"):
        model.train()(batch())
    assert model.eval()(batch()).regularization.item() == 0.0
