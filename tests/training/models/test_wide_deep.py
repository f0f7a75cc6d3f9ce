"""Wide&Deep against hand-computed values (fields and embeddings: tests/training/models/classic_fixtures.py).

Cross history item × target item, one hashed table of 1000 rows; u[(3, 2)] = 1, u[(4, 2)] = 10, all else 0.
    row 0: user 1, item 2, history [3, 4]: Σ w = 0.5 + 0.2 + mean(0.1, 0.3) = 0.9; crosses (3, 2), (4, 2) -> 11
    row 1: user 2, item 3, history [3]:    Σ w = -1 + 0.1 + 0.1 = -0.8;       cross (3, 3) -> 0 (another row)
    row 2: user 1, item 2, history [3, 3]: Σ w = 0.5 + 0.2 + 0.1 = 0.8;        cross (3, 2) once (binary) -> 1
Deep (no hidden layer): wᵀ [u0, u1, i0, i1, h0, h1] + b with w = [1, 0, 0, 0, 0, 1], b = 0.25:
    row 0: 1 - 0.5 + 0.25 = 0.75;  row 1: 0 - 1 + 0.25 = -0.75;  row 2: 1 - 1 + 0.25 = 0.25
logits = [0.9 + 11 + 0.75, -0.8 + 0 - 0.75, 0.8 + 1 + 0.25] = [12.65, -1.55, 2.05]
"""

from __future__ import annotations

import pydantic
import pytest
import torch

from tests.training.models.classic_fixtures import FIELDS, SIZES, batch, set_embeddings
from training.layers.product import cross_hash
from training.models import MODELS
from training.models.wide_deep import WideDeep, WideDeepConfig

ROWS = ((1, 2, (3, 4)), (2, 3, (3,)), (1, 2, (3, 3)))
BUCKETS = 1000


def bucket(history_item: int, item: int, cross: int = 0) -> int:
    return int(cross_hash(torch.tensor([history_item]), torch.tensor([item]), cross, BUCKETS))


def wide_deep(**overrides) -> WideDeep:
    config = WideDeepConfig(**{"embedding_dim": 2, "fields": FIELDS, "crosses": (("hist_item", "item"),),
                               "cross_buckets": BUCKETS, "mlp_hidden": (), **overrides})
    model = WideDeep(config, SIZES, embedding_device=torch.device("cpu"))
    set_embeddings(model, linear=True)
    with torch.no_grad():
        model.cross.weight.weight[bucket(3, 2), 0] = 1.0
        model.cross.weight.weight[bucket(4, 2), 0] = 10.0
        model.mlp.layers[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 1.0]]))
        model.mlp.layers[0].bias.fill_(0.25)
    return model


def test_the_hand_picked_pairs_do_not_collide():
    assert len({bucket(3, 2), bucket(4, 2), bucket(3, 3)}) == 3


def test_wide_deep_forward_by_hand():
    model = wide_deep().eval()
    sparse = batch(ROWS)
    out = model(sparse)
    torch.testing.assert_close(out.logits, torch.tensor([12.65, -1.55, 2.05]))
    assert out.regularization.item() == 0.0 and out.aux_loss.item() == 0.0
    # the wide part alone
    embedded = model.lookup(sparse)
    w = torch.stack([embedded["user"].values()[:, 2], embedded["item"].values()[:, 2],
                     torch.tensor([0.2, 0.1, 0.1])], dim=1)
    torch.testing.assert_close(model.wide(sparse, w), torch.tensor([11.9, -0.8, 1.8]))


def test_wide_deep_gradients_reach_embeddings_and_cross_weights():
    model = wide_deep().train()
    model(batch(ROWS)).logits.sum().backward()
    cross = model.cross.weight.weight.grad[:, 0]
    # (3, 2) in rows 0 and 2 (counted once in row 2), (4, 2) in row 0, (3, 3) in row 1
    assert cross[bucket(3, 2)].item() == pytest.approx(2.0)
    assert cross[bucket(4, 2)].item() == pytest.approx(1.0)
    assert cross[bucket(3, 3)].item() == pytest.approx(1.0)
    assert cross.sum().item() == pytest.approx(4.0)
    item = model.table_modules()["item"].weight.grad
    # w column: item 2 is the target of rows 0 and 2 -> 2; item 3: target of row 1 (1), history of row 0 (1/2),
    # row 1 (1) and row 2 (1/2 + 1/2) -> 3.5; item 4: history of row 0 -> 0.5
    torch.testing.assert_close(item[:, 2], torch.tensor([0.0, 0.0, 2.0, 3.5, 0.5]))
    # deep: v of hist coordinate 1 has weight 1 -> items' v[1] get 1/|H| per history occurrence
    torch.testing.assert_close(item[:, 1], torch.tensor([0.0, 0.0, 0.0, 2.5, 0.5]))


def test_wide_deep_default_crosses_and_validation():
    config = WideDeepConfig()
    assert config.crosses == (("hist_item", "item"), ("hist_cate", "cate")) and config.cross_buckets == 2**18
    sizes = {t: 4 for t in ("user", "gender", "age_bucket", "city", "item", "cate", "shop", "brand")}
    model = WideDeep(config.model_copy(update={"cross_buckets": 16}), sizes, embedding_device=torch.device("cpu"))
    assert "hist_cate" in model.features and model.storage_dim == 20  # D + 1 = 17 rounded up to a multiple of 4
    assert MODELS["wide_deep"] is WideDeep
    with pytest.raises(ValueError, match="cross"):
        WideDeep(WideDeepConfig(crosses=(("item", "hist_item"),)), sizes, embedding_device=torch.device("cpu"))
    with pytest.raises(pydantic.ValidationError):
        WideDeepConfig.model_validate({"cross_size": 8})
    no_cross = WideDeep(WideDeepConfig(embedding_dim=2, fields=FIELDS, crosses=(), mlp_hidden=()), SIZES,
                        embedding_device=torch.device("cpu"))
    assert no_cross.cross is None and no_cross(batch()).logits.shape == (2,)
