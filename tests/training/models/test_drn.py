"""DRN: the dueling head V + A by hand on tiny fixed weights, list centring, the advantage penalty, config."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torchrec import KeyedJaggedTensor

from training.config import load_config
from training.models import MODELS
from training.models.drn import DRN, DRNConfig, dueling_q

SIZES = {"user": 4, "gender": 3, "age_bucket": 3, "city": 3, "item": 5, "cate": 4, "shop": 3, "brand": 3}
KEYS = ["user", "gender", "age_bucket", "city", "hist_item", "hist_cate", "item", "cate", "shop", "brand"]
CPU = torch.device("cpu")


def batch(users, items, cates, histories) -> KeyedJaggedTensor:
    """Rows of (user, item, cate) with a history of (item, cate) steps; gender/age/city/shop/brand all 2."""
    rows = len(users)
    two = [2] * rows
    hist_lengths = [len(steps) for steps in histories]
    values = [users, two, two, two, [i for s in histories for i, _ in s], [c for s in histories for _, c in s],
              items, cates, two, two]
    lengths = [[1] * rows] * 4 + [hist_lengths, hist_lengths] + [[1] * rows] * 4
    return KeyedJaggedTensor.from_lengths_sync(
        keys=KEYS, values=torch.tensor([v for vs in values for v in vs]),
        lengths=torch.tensor([n for ns in lengths for n in ns], dtype=torch.int32))


def model_by_hand(**overrides) -> DRN:
    """D = 1, no hidden layers: V = e(user) + 0.5 · pool(e(hist_item)) + 0.25,
    A = 0.5 · e(user) + 2 · e(item) + e(cate) − 0.1; gender, age, city, shop and brand embed to 0.

    e(user): 2 -> 1, 3 -> −2;  e(item): 2 -> 0.5, 3 -> 2, 4 -> −1;  e(cate): 2 -> 1, 3 -> −1.
    """
    settings = {"embedding_dim": 1, "value_hidden": (), "advantage_hidden": (), **overrides}
    model = DRN(DRNConfig(**settings), SIZES, embedding_device=CPU)
    with torch.no_grad():
        tables = model.table_modules()
        for table in tables.values():
            table.weight.zero_()
        tables["user"].weight[:, 0] = torch.tensor([0.0, 0.0, 1.0, -2.0])
        tables["item"].weight[:, 0] = torch.tensor([0.0, 0.0, 0.5, 2.0, -1.0])
        tables["cate"].weight[:, 0] = torch.tensor([0.0, 0.0, 1.0, -1.0])
        # s = [user, gender, age, city, pooled hist_item, pooled hist_cate]; a = [item, cate, shop, brand]
        value = model.value_mlp.layers[0]
        value.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0.5, 0]]))
        value.bias.fill_(0.25)
        advantage = model.advantage_mlp.layers[0]
        advantage.weight.copy_(torch.tensor([[0.5, 0, 0, 0, 0, 0, 2.0, 1.0, 0, 0]]))
        advantage.bias.fill_(-0.1)
    return model.eval()


# row 0: user 2, history [(item 3, cate 2), (item 4, cate 3)], target item 2 of cate 3
# row 1: user 3, empty history, target item 3 of cate 2
ROWS = dict(users=[2, 3], items=[2, 3], cates=[3, 2], histories=[[(3, 2), (4, 3)], []])


def test_q_is_value_plus_advantage_by_hand():
    model = model_by_hand()
    # row 0: V = 1 + 0.5 · mean(2, −1) + 0.25 = 1.5;  A = 0.5 + 2 · 0.5 − 1 − 0.1 = 0.4   -> Q = 1.9
    # row 1: V = −2 + 0 + 0.25 = −1.75;                A = −1 + 2 · 2 + 1 − 0.1 = 3.9      -> Q = 2.15
    out = model(batch(**ROWS))
    torch.testing.assert_close(out.logits, torch.tensor([1.9, 2.15]))
    assert float(out.regularization) == 0.0 and float(out.aux_loss) == 0.0 and out.targets is None
    state, action = model.encode(batch(**ROWS))
    torch.testing.assert_close(model.value(state), torch.tensor([1.5, -1.75]))
    torch.testing.assert_close(model.advantage(state, action), torch.tensor([0.4, 3.9]))
    # sum pooling: row 0's V = 1 + 0.5 · (2 − 1) + 0.25 = 1.75 -> Q = 2.15
    torch.testing.assert_close(model_by_hand(history_pooling="sum")(batch(**ROWS)).logits, torch.tensor([2.15, 2.15]))


def test_a_list_of_candidates_is_centred_by_its_mean_advantage():
    model = model_by_hand()
    # user 2 with row 0's history (V = 1.5) and candidates item 2/cate 3, item 3/cate 2, item 4/cate 2:
    # A = [0.5 + 1 − 1 − 0.1, 0.5 + 4 + 1 − 0.1, 0.5 − 2 + 1 − 0.1] = [0.4, 5.4, −0.6], mean 5.2 / 3
    history = [(3, 2), (4, 3)]
    candidates = batch(users=[2, 2, 2], items=[2, 3, 4], cates=[3, 2, 2], histories=[history] * 3)
    with torch.no_grad():
        q = model.score_list(candidates)
    mean = 5.2 / 3
    torch.testing.assert_close(q, torch.tensor([1.5 + 0.4 - mean, 1.5 + 5.4 - mean, 1.5 - 0.6 - mean]))
    assert float(q.mean()) == pytest.approx(1.5)  # V(s) is the list's mean Q
    # the centring moves every candidate by the same amount: the uncentred Q ranks them alike
    uncentred = model(candidates).logits
    assert torch.argsort(q, descending=True).tolist() == torch.argsort(uncentred, descending=True).tolist() == [1, 0, 2]


def test_dueling_q_by_hand_and_shapes():
    # V = 1, A = [2, −1, 2]: mean 1 -> Q = [2, −1, 2]; second state V = 0, A = [1, 3, 5] -> Q = [−2, 0, 2]
    q = dueling_q(torch.tensor([1.0, 0.0]), torch.tensor([[2.0, -1.0, 2.0], [1.0, 3.0, 5.0]]))
    torch.testing.assert_close(q, torch.tensor([[2.0, -1.0, 2.0], [-2.0, 0.0, 2.0]]))
    with pytest.raises(ValueError, match="value"):
        dueling_q(torch.tensor([1.0]), torch.tensor([1.0, 2.0]))


def test_advantage_penalty_is_lambda_times_mean_squared_advantage_in_training_only():
    model = model_by_hand(advantage_l2=0.1)
    model.train()
    # A = [0.4, 3.9] -> 0.1 · (0.16 + 15.21) / 2 = 0.7685
    out = model(batch(**ROWS), torch.tensor([1.0, 0.0]))
    assert float(out.regularization) == pytest.approx(0.7685, rel=1e-6)
    torch.testing.assert_close(out.logits, torch.tensor([1.9, 2.15]))
    model.eval()
    assert float(model(batch(**ROWS)).regularization) == 0.0


def test_registered_and_configured():
    assert MODELS["drn"] is DRN
    cfg = load_config("drn", overrides=["model.embedding_dim=8"])
    config = DRNConfig.model_validate(cfg.model)
    assert config.embedding_dim == 8 and config.gamma == 0.0 and config.advantage_hidden == (200, 80)
    with pytest.raises(ValidationError):
        DRNConfig(gamma=0.9)  # the offline target has no next state (module docstring)
    with pytest.raises(ValidationError):
        DRNConfig(value_hiden=(4,))


def test_gradients_reach_both_streams_and_the_tables():
    model = model_by_hand(value_hidden=(3,), advantage_hidden=(3,))
    model.train()
    out = model(batch(**ROWS), torch.tensor([1.0, 0.0]))
    torch.nn.functional.binary_cross_entropy_with_logits(out.logits, torch.tensor([1.0, 0.0])).backward()
    assert model.value_mlp.layers[0].weight.grad.abs().sum() > 0
    assert model.advantage_mlp.layers[0].weight.grad.abs().sum() > 0
    assert model.table_modules()["item"].weight.grad.abs().sum() > 0
