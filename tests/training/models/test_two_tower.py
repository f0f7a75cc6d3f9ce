"""Two-tower: the dot product of the towers by hand, item_vectors = the item tower, in-batch negatives."""

from __future__ import annotations

import math

import pytest
import torch
from torchrec import KeyedJaggedTensor

from training.models import MODELS
from training.models.two_tower import ITEM_FEATURES, TwoTower, TwoTowerConfig

SIZES = {"user": 6, "gender": 3, "age_bucket": 3, "city": 3, "item": 6, "cate": 5, "shop": 3, "brand": 3}
KEYS = ["user", "gender", "age_bucket", "city", "hist_item", "hist_cate", "item", "cate", "shop", "brand"]
CPU = torch.device("cpu")


def batch(users, items, cates, histories) -> KeyedJaggedTensor:
    """Rows of (user, item, cate) with a history of (item, cate) steps; gender/age/city/shop/brand all 2."""
    rows = len(users)
    hist_items = [i for steps in histories for i, _ in steps]
    hist_cates = [c for steps in histories for _, c in steps]
    hist_lengths = [len(steps) for steps in histories]
    two = [2] * rows
    values = [users, two, two, two, hist_items, hist_cates, items, cates, two, two]
    lengths = [[1] * rows] * 4 + [hist_lengths, hist_lengths] + [[1] * rows] * 4
    return KeyedJaggedTensor.from_lengths_sync(
        keys=KEYS, values=torch.tensor([v for vs in values for v in vs]),
        lengths=torch.tensor([n for ns in lengths for n in ns], dtype=torch.int32))


def model_by_hand(**overrides) -> TwoTower:
    """D = 1, no hidden layer, d = 2: u = [e(user), pool(e(hist_item))], v = [e(item), e(cate)]."""
    settings = {"embedding_dim": 1, "tower_hidden": (), "output_dim": 2, **overrides}
    model = TwoTower(TwoTowerConfig(**settings), SIZES, embedding_device=CPU)
    with torch.no_grad():
        tables = model.table_modules()
        tables["user"].weight[:, 0] = torch.tensor([0.0, 0.0, 2.0, -1.0, 1.0, 0.5])
        tables["item"].weight[:, 0] = torch.tensor([0.0, 0.0, 0.5, 1.0, 3.0, -2.0])
        tables["cate"].weight[:, 0] = torch.tensor([0.0, 0.0, 4.0, -1.0, 1.0])
        # user tower input [user, gender, age, city, pooled hist_item, pooled hist_cate]
        user_out = model.user_tower.layers[0]
        user_out.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0, 0]]))
        user_out.bias.zero_()
        # item tower input [item, cate, shop, brand]
        item_out = model.item_tower.layers[0]
        item_out.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        item_out.bias.zero_()
    return model.eval()


# row 0: user 2 (e = 2), history items [3, 4] (e = 1, 3), target item 2 (e = 0.5) of cate 3 (e = -1)
# row 1: user 3 (e = -1), empty history, target item 4 (e = 3) of cate 2 (e = 4)
ROWS = dict(users=[2, 3], items=[2, 4], cates=[3, 2], histories=[[(3, 2), (4, 3)], []])


def test_score_is_the_dot_product_of_the_towers_by_hand():
    model = model_by_hand()
    # row 0: u = [2, mean(1, 3) = 2], v = [0.5, -1] -> 1 - 2 = -1; row 1: u = [-1, 0], v = [3, 4] -> -3
    out = model(batch(**ROWS))
    torch.testing.assert_close(out.logits, torch.tensor([-1.0, -3.0]))
    assert out.targets is None
    # sum pooling: row 0 u = [2, 4] -> 1 - 4 = -3
    torch.testing.assert_close(model_by_hand(history_pooling="sum")(batch(**ROWS)).logits, torch.tensor([-3.0, -3.0]))
    # temperature τ = 0.5 doubles the logits
    torch.testing.assert_close(model_by_hand(temperature=0.5)(batch(**ROWS)).logits, torch.tensor([-2.0, -6.0]))
    # normalised: row 0 (2·0.5 + 2·(-1)) / (|[2, 2]| · |[0.5, -1]|) = -1 / √10; row 1 -3 / (1 · 5) = -0.6
    torch.testing.assert_close(model_by_hand(normalize=True)(batch(**ROWS)).logits,
                               torch.tensor([-1 / math.sqrt(10.0), -0.6]))


def items_only(items, cates) -> KeyedJaggedTensor:
    rows = len(items)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(ITEM_FEATURES), values=torch.tensor([*items, *cates, *[2] * rows, *[2] * rows]),
        lengths=torch.ones(4 * rows, dtype=torch.int32))


def test_item_vectors_are_the_item_tower_used_in_forward():
    model = model_by_hand()
    vectors = model.item_vectors(items_only([2, 4], [3, 2]))
    torch.testing.assert_close(vectors, torch.tensor([[0.5, -1.0], [3.0, 4.0]]))
    # the forward's score is the user vector against exactly these vectors
    full = batch(**ROWS)
    user = model.user_vector(model.lookup(full))
    torch.testing.assert_close(model(full).logits, (user * vectors).sum(dim=1))
    # with a hidden layer and normalisation too (random weights): same item tower in both paths
    torch.manual_seed(0)
    deep = TwoTower(TwoTowerConfig(embedding_dim=3, tower_hidden=(5,), output_dim=4, normalize=True), SIZES,
                    embedding_device=CPU).eval()
    torch.testing.assert_close(deep.item_vectors(items_only([2, 4], [3, 2])),
                               deep.item_vector(deep.lookup(full)))
    assert TwoTower.item_features == ("item", "cate", "shop", "brand")


def test_in_batch_negatives_pair_each_positive_with_the_next_positives_items():
    model = model_by_hand(in_batch_negatives=1).train()
    # rows: 0 (user 2, item 2) +, 1 (user 3, item 4) -, 2 (user 4, item 3) +, 3 (user 5, item 5) +
    rows = batch(users=[2, 3, 4, 5], items=[2, 4, 3, 5], cates=[3, 2, 4, 2], histories=[[], [], [], []])
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0])
    out = model(rows, labels)
    # pairs (positive j, positive j+1 mod 3): (row 0, item of row 2), (row 2, item of row 3), (row 3, item of row 0)
    # u = [e(user), 0], v = [e(item), e(cate)]: u_0·v_2 = 2·1 = 2, u_2·v_3 = 1·(-2) = -2, u_3·v_0 = 0.5·0.5 = 0.25
    torch.testing.assert_close(out.logits[4:], torch.tensor([2.0, -2.0, 0.25]))
    torch.testing.assert_close(out.targets, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(out.logits[:4], model.eval()(rows).logits)


def test_in_batch_negatives_skip_the_users_own_item_and_own_rows():
    model = model_by_hand(in_batch_negatives=2).train()
    # positives: row 0 (user 2, item 2), row 1 (user 3, item 2: same item), row 2 (user 2, item 4: same user as 0)
    rows = batch(users=[2, 3, 2], items=[2, 2, 4], cates=[3, 3, 2], histories=[[], [], []])
    user_rows, item_rows = model.in_batch_pairs(rows, torch.ones(3))
    # candidates (0,1) same item, (0,2) same user, (1,2) kept, (1,0) same item, (2,0) same user, (2,1) kept
    assert list(zip(user_rows.tolist(), item_rows.tolist(), strict=True)) == [(1, 2), (2, 1)]
    # one positive: no pair; no positive at all: the batch's rows only
    assert model.in_batch_pairs(rows, torch.tensor([1.0, 0.0, 0.0]))[0].numel() == 0
    out = model(rows, torch.zeros(3))
    assert out.logits.shape == (3,) and out.targets.tolist() == [0.0, 0.0, 0.0]


def test_registered_with_its_defaults():
    assert MODELS["two_tower"] is TwoTower
    with pytest.raises(ValueError):
        TwoTowerConfig(history_pooling="max")
