"""CTRModel.lookup: the distinct ids of each table as bags of one, in lookup groups, give exactly the stored rows."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

from training.models.common import SHARED_GROUP, CTRModel, ModelConfig

FEATURES = ("user", "item", "cate", "hist_item", "hist_cate")
# item is the one table above the shared-lookup size below: it gets a lookup of its own
SIZES = {"user": 6, "item": 50, "cate": 7}


def model(max_rows: int = 10, embedding_dim: int = 3) -> CTRModel:
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=embedding_dim, shared_lookup_max_rows=max_rows)
    built = CTRModel(config, SIZES, FEATURES, embedding_device=torch.device("cpu"))
    with torch.no_grad():
        for table, module in built.table_modules().items():
            rows, width = module.weight.shape
            # distinct numbers everywhere (table k adds 1000·k): a wrong row or table cannot match by chance
            module.weight.copy_(torch.arange(rows * width, dtype=torch.float32).view(rows, width)
                                + 1000 * list(SIZES).index(table))
    return built


def batch() -> KeyedJaggedTensor:
    # row 0: user 2, item 7, cate 3, history items [7, 9, 7] and cates [3, 4, 3]
    # row 1: user 4, item 31, cate 5, empty history
    # row 2: user 2, item 9, cate 4, history items [40] and cates [6]
    values = {"user": [2, 4, 2], "item": [7, 31, 9], "cate": [3, 5, 4], "hist_item": [7, 9, 7, 40],
              "hist_cate": [3, 4, 3, 6]}
    lengths = {"user": [1, 1, 1], "item": [1, 1, 1], "cate": [1, 1, 1], "hist_item": [3, 0, 1],
               "hist_cate": [3, 0, 1]}
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(FEATURES), values=torch.tensor([v for key in FEATURES for v in values[key]]),
        lengths=torch.tensor([n for key in FEATURES for n in lengths[key]]))


def test_tables_up_to_the_size_share_one_lookup_and_bigger_ones_get_their_own():
    assert model(max_rows=10).table_groups == {SHARED_GROUP: ["user", "cate"], "item": ["item"]}
    assert model(max_rows=0).table_groups == {"user": ["user"], "item": ["item"], "cate": ["cate"]}
    assert model(max_rows=4096).table_groups == {SHARED_GROUP: ["user", "item", "cate"]}
    assert ModelConfig().shared_lookup_max_rows == 4096


@pytest.mark.parametrize("max_rows", [0, 10, 4096])
def test_lookup_gives_each_features_stored_rows_in_order_whatever_the_groups(max_rows):
    built = model(max_rows=max_rows)
    sparse = batch()
    embedded = built.lookup(sparse)
    assert set(embedded) == set(FEATURES)
    for feature in FEATURES:
        table = feature.removeprefix("hist_")
        weight = built.table_modules()[table].weight
        expected = weight[sparse[feature].values()][:, :3]  # the used columns only (stored 4 wide)
        torch.testing.assert_close(embedded[feature].values(), expected, rtol=0, atol=0)
        torch.testing.assert_close(embedded[feature].lengths(), sparse[feature].lengths())


def test_a_groups_surplus_bags_and_an_absent_table_stay_out_of_the_rows():
    # user and cate share a lookup; cate has 4 distinct ids and user 2, so user's lookup is padded with 2 empty bags
    built = model(max_rows=10)
    sparse = batch()
    embedded = built.lookup(sparse)
    rows, inverse = built._distinct_rows["user"]
    assert rows.shape == (2, 3)
    torch.testing.assert_close(rows[inverse], built.table_modules()["user"].weight[[2, 4, 2]][:, :3])
    # a partial batch (an item tower's items): the other tables get no ids and no rows, but are still looked up
    items = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([5, 5]),
                                                lengths=torch.tensor([1, 1]))
    embedded = built.lookup(items)
    assert set(embedded) == {"item"}
    assert built._distinct_rows["user"][0].shape == (0, 3) and built._distinct_rows["cate"][0].shape == (0, 3)
    torch.testing.assert_close(embedded["item"].values(), built.table_modules()["item"].weight[[5, 5]][:, :3])


def test_gradient_of_a_row_sums_over_its_occurrences_and_the_spare_columns_get_none():
    built = model(max_rows=10)
    embedded = built.lookup(batch())
    torch.stack([embedded[f].values().sum() for f in ("item", "hist_item")]).sum().backward()
    grad = built.table_modules()["item"].weight.grad
    # item 7: target once + history twice; 9: target + history; 31, 40: once; each used column gets 1 per use
    expected = torch.zeros(50, 4)
    for row, uses in {7: 3, 9: 2, 31: 1, 40: 1}.items():
        expected[row, :3] = uses
    torch.testing.assert_close(grad, expected)
