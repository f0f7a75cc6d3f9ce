"""I-AutoRec on a 3-user × 2-item matrix: encode/decode by hand and against the dense equations, the loss over
observed entries only, the regulariser, and the CSR that prepare_data builds from a Parquet file."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from torchrec import KeyedJaggedTensor

from training.models import MODELS
from training.models.autorec import AutoRec, AutoRecConfig, ItemRatings, item_ratings

CPU = torch.device("cpu")
SIZES = {"user_encoder": 3, "user_decoder": 3}

# observed entries (user, item, label): item 0 was clicked by user 0 and shown to user 1 (no click); item 1 was
# clicked by users 1 and 2. (user 2, item 0) and (user 0, item 1) are unobserved.
OBSERVED = [(0, 0, 1.0), (1, 0, 0.0), (1, 1, 1.0), (2, 1, 1.0)]
V = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # V[:, u] for u = 0, 1, 2 (k = 2): rows of user_encoder
W = [[1.0, 2.0], [-1.0, 1.0], [0.0, 1.0]]  # W[u, :]: rows of user_decoder
B = [0.5, 0.0, -1.0]  # b_u: the decoder's last column
MU = [0.0, -1.0]


def ratings() -> ItemRatings:
    users, items, labels = zip(*OBSERVED, strict=True)
    return item_ratings(torch.tensor(users).numpy(), torch.tensor(items).numpy(), torch.tensor(labels).numpy())


def model_by_hand(**overrides) -> AutoRec:
    config = AutoRecConfig(**{"embedding_dim": 2, "l2": 0.0, "encoder_activation": "identity", **overrides})
    model = AutoRec(config, SIZES, embedding_device=CPU)
    with torch.no_grad():
        model.table_modules()["user_encoder"].weight[:, :2] = torch.tensor(V)
        model.table_modules()["user_decoder"].weight[:, :3] = torch.cat(
            [torch.tensor(W), torch.tensor(B)[:, None]], dim=1)
        model.mu.copy_(torch.tensor(MU))
    model.set_ratings(ratings())
    return model.eval()


def rows(pairs) -> KeyedJaggedTensor:
    users = [u for u, _ in pairs]
    items = [i for _, i in pairs]
    return KeyedJaggedTensor.from_lengths_sync(keys=["user", "item"], values=torch.tensor(users + items),
                                               lengths=torch.ones(2 * len(pairs), dtype=torch.int32))


def test_encode_decode_by_hand():
    model = model_by_hand()
    # V r⁽⁰⁾ = 1·V_0 + 0·V_1 = [1, 0]; + μ -> h⁽⁰⁾ = [1, -1] (g = identity)
    # V r⁽¹⁾ = V_1 + V_2 = [1, 2];      + μ -> h⁽¹⁾ = [1, 1]
    # (0, 0): [1, 2]·[1, -1] + 0.5 = -0.5   (1, 0): [-1, 1]·[1, -1] = -2
    # (1, 1): [-1, 1]·[1, 1] = 0            (2, 1): [0, 1]·[1, 1] - 1 = 0
    out = model(rows([(u, i) for u, i, _ in OBSERVED]))
    torch.testing.assert_close(out.logits, torch.tensor([-0.5, -2.0, 0.0, 0.0]))
    # the unobserved entries are the same outputs h(r⁽ⁱ⁾)_u: (2, 0) = [0, 1]·[1, -1] - 1 = -2, (0, 1) = 3 + 0.5
    torch.testing.assert_close(model(rows([(2, 0), (0, 1)])).logits, torch.tensor([-2.0, 3.5]))
    # an item with no training impression (or beyond the CSR): r = 0 -> h = g(μ) = [0, -1]; (0, 5) = -2 + 0.5
    torch.testing.assert_close(model(rows([(0, 5)])).logits, torch.tensor([-1.5]))


def dense_reconstruction(activation) -> torch.Tensor:
    """h(r⁽ⁱ⁾) for both items from the paper's matrices: R [m=3, n=2] (0 where unobserved) -> H [m, n]."""
    r = torch.zeros(3, 2)
    for u, i, label in OBSERVED:
        r[u, i] = label
    v = torch.tensor(V).T  # [k, m]
    hidden = activation(v @ r + torch.tensor(MU)[:, None])  # [k, n]
    return torch.tensor(W) @ hidden + torch.tensor(B)[:, None]  # [m, n]


def test_sigmoid_encoder_matches_the_dense_computation_and_the_loss_counts_observed_entries_only():
    model = model_by_hand(encoder_activation="sigmoid", l2=2.0).train()
    h = dense_reconstruction(torch.sigmoid)
    pairs = [(u, i) for u, i, _ in OBSERVED]
    labels = torch.tensor([label for _, _, label in OBSERVED])
    out = model(rows(pairs), labels)
    torch.testing.assert_close(out.logits, torch.stack([h[u, i] for u, i in pairs]))
    # the trainer's objective on this batch (the observed entries) is the masked loss of the dense matrix ...
    loss = F.binary_cross_entropy_with_logits(out.logits, labels) + out.regularization
    mask = torch.zeros(3, 2)
    r = torch.zeros(3, 2)
    for u, i, label in OBSERVED:
        mask[u, i], r[u, i] = 1.0, label
    masked = (F.binary_cross_entropy_with_logits(h, r, reduction="none") * mask).sum() / mask.sum()
    # λ/2 (‖W‖² + ‖V‖²) = 1 · ((1 + 1 + 2) + (5 + 2 + 1)) = 12: every row is used (each user has a click and a row)
    assert out.regularization.item() == pytest.approx(12.0)
    torch.testing.assert_close(loss, masked + 12.0)
    # ... which is not the loss over the whole matrix (unobserved entries taken as 0)
    unmasked = F.binary_cross_entropy_with_logits(h, r)
    assert abs(masked.item() - unmasked.item()) > 0.05
    # user 2's decoder row also produces the unobserved (2, 0); its gradient comes from the observed (2, 1) alone
    loss.backward()
    grad = model.table_modules()["user_decoder"].weight.grad
    sig = torch.sigmoid
    hidden_1 = sig(torch.tensor(V)[1] + torch.tensor(V)[2] + torch.tensor(MU))
    expected = (sig(h[2, 1]) - 1.0) / 4 * hidden_1 + 2.0 * torch.tensor(W)[2]  # BCE mean over 4, plus λ·W_2
    torch.testing.assert_close(grad[2, :2], expected)


def test_regulariser_only_in_training_and_only_on_rows_used():
    model = model_by_hand(l2=2.0)
    assert model(rows([(0, 0)])).regularization.item() == 0.0  # eval
    model.train()
    # batch (0, 0): V rows read = the clickers of item 0 = {user 0} -> 1; W rows = {user 0} -> 5: 1 · (1 + 5)
    assert model(rows([(0, 0)]), torch.ones(1)).regularization.item() == pytest.approx(6.0)


def test_each_distinct_item_is_encoded_once_and_gathered_back():
    model = model_by_hand()
    out = model(rows([(1, 1), (0, 0), (2, 1), (1, 0), (1, 1)]))
    torch.testing.assert_close(out.logits, torch.tensor([0.0, -0.5, 0.0, -2.0, 0.0]))


def test_prepare_data_builds_the_item_csr_from_parquet(tmp_path):
    first = pa.table({"user_idx": pa.array([3, 2, 3], pa.int64()), "item_idx": pa.array([5, 5, 5], pa.int64()),
                      "label": pa.array([0, 1, 1], pa.int32()), "other": pa.array([9, 9, 9], pa.int64())})
    second = pa.table({"user_idx": pa.array([4, 2], pa.int64()), "item_idx": pa.array([2, 5], pa.int64()),
                       "label": pa.array([0, 0], pa.int32()), "other": pa.array([9, 9], pa.int64())})
    pq.write_table(first, tmp_path / "b.parquet")
    pq.write_table(second, tmp_path / "a.parquet")
    model = AutoRec(AutoRecConfig(embedding_dim=2), {"user_encoder": 5, "user_decoder": 5}, embedding_device=CPU)
    model.prepare_data([f"file://{tmp_path / 'b.parquet'}", str(tmp_path / "a.parquet")])
    # item 2: (user 4, 0); item 5: user 2 seen twice (1, 0) -> max 1, user 3 seen twice (0, 1) -> 1; sorted by user
    assert model.ratings.item_ptr.tolist() == [0, 0, 0, 1, 1, 1, 3]
    assert model.ratings.users.tolist() == [4, 2, 3]
    assert model.ratings.ratings.tolist() == [0.0, 1.0, 1.0]
    # V r reads the non-zero entries only
    clicks = model.ratings.without_zeros()
    assert clicks.item_ptr.tolist() == [0, 0, 0, 0, 0, 0, 2] and clicks.users.tolist() == [2, 3]
    assert model.features == ("user", "item")


def test_forward_needs_the_rating_vectors():
    model = AutoRec(AutoRecConfig(embedding_dim=2), SIZES, embedding_device=CPU)
    with pytest.raises(RuntimeError, match="prepare_data"):
        model(rows([(0, 0)]))


def test_registered_and_tables_hold_k_plus_one_columns():
    assert MODELS["autorec"] is AutoRec
    model = AutoRec(AutoRecConfig(embedding_dim=3), SIZES, embedding_device=CPU)
    assert model.config.embedding_dim == 4 and model.autorec_config.embedding_dim == 3
    assert sorted(model.table_sizes) == ["user_decoder", "user_encoder"]
