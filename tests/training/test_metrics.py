"""Metrics against values worked out by hand, and CTRMetrics across 2 gloo ranks holding different numbers of rows."""

from __future__ import annotations

import json
import math
import random
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.metrics import (
    CTRMetrics,
    GroupAUC,
    LogLoss,
    group_auc,
    hit_rate_at_k,
    ndcg_at_k,
    rank_of_positive,
)

LN3 = math.log(3.0)

# ---------------------------------------------------------------------------------------------------------- GAUC
# user 10: scores [0.9, 0.1, 0.5, 0.5], labels [1, 0, 1, 0]
#          pairs (pos, neg): (.9, .1) 1, (.9, .5) 1, (.5, .1) 1, (.5, .5) tie 1/2 -> AUC 3.5/4 = 0.875, 4 impressions
# user 20: scores [0.3, 0.3, 0.3], labels [1, 0, 0]: two tied pairs -> AUC 0.5, 3 impressions
# user 30: two positives only -> left out (its 2 impressions too)
# user 40: one negative only -> left out
# user 2**40: scores [0.5, 0.6], labels [1, 0] -> AUC 0, 2 impressions (0.5 also appears in user 10: no leak)
# GAUC = (4 * 0.875 + 3 * 0.5 + 2 * 0) / (4 + 3 + 2) = 5 / 9 = 0.5556
# (an unweighted mean over users would give (0.875 + 0.5 + 0) / 3 = 0.4583)
BIG = 2**40
GAUC_ROWS = [  # (score, label, user), users interleaved on purpose
    (0.9, 1, 10),
    (0.3, 1, 20),
    (0.2, 1, 30),
    (0.5, 1, BIG),
    (0.1, 0, 10),
    (0.7, 0, 40),
    (0.3, 0, 20),
    (0.5, 1, 10),
    (0.8, 1, 30),
    (0.6, 0, BIG),
    (0.5, 0, 10),
    (0.3, 0, 20),
]


def _columns(rows):
    scores, labels, groups = zip(*rows, strict=True)
    return torch.tensor(scores), torch.tensor(labels), torch.tensor(groups, dtype=torch.int64)


def test_group_auc_by_hand():
    out = group_auc(*_columns(GAUC_ROWS))
    assert out["gauc"].item() == pytest.approx(5.0 / 9.0)
    assert out["users"] == 3
    assert out["impressions"] == 9


def test_group_auc_all_users_single_class_is_nan():
    out = group_auc(torch.tensor([0.1, 0.9, 0.4]), torch.tensor([1, 1, 0]), torch.tensor([1, 1, 2]))
    assert math.isnan(out["gauc"].item())
    assert out["users"] == 0 and out["impressions"] == 0
    empty = group_auc(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert math.isnan(empty["gauc"].item()) and empty["users"] == 0


def test_group_auc_matches_a_pairwise_count_with_many_ties():
    # Independent oracle: count (positive, negative) pairs of each user in plain Python, ties 1/2.
    rng = random.Random(7)
    rows = [(rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]), rng.randint(0, 1), rng.randint(0, 7)) for _ in range(80)]
    num = den = 0.0
    for user in {u for _, _, u in rows}:
        pos = [s for s, y, u in rows if u == user and y == 1]
        neg = [s for s, y, u in rows if u == user and y == 0]
        if pos and neg:
            wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
            num += (len(pos) + len(neg)) * wins / (len(pos) * len(neg))
            den += len(pos) + len(neg)
    assert group_auc(*_columns(rows))["gauc"].item() == pytest.approx(num / den, rel=1e-12)


def test_group_auc_rejects_non_binary_labels_and_nan_scores():
    with pytest.raises(ValueError, match="0 or 1"):
        group_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.5]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        group_auc(torch.tensor([0.1, math.nan]), torch.tensor([0, 1]), torch.tensor([1, 1]))


def test_group_auc_metric_accumulates_batches():
    metric = GroupAUC()
    scores, labels, groups = _columns(GAUC_ROWS)
    metric.update(scores[:5], labels[:5], groups[:5])
    metric.update(scores[5:], labels[5:], groups[5:])
    out = metric.compute()
    assert out["gauc"].item() == pytest.approx(5.0 / 9.0) and out["users"] == 3


# ------------------------------------------------------------------------------------------------------ LogLoss
def test_logloss_by_hand():
    # -log σ(0) = ln 2; -log(1 - σ(ln 3)) = -log(1/4) = 2 ln 2; -log(1 - σ(-ln 3)) = -log(3/4) = 2 ln 2 - ln 3
    metric = LogLoss()
    metric.update(torch.tensor([0.0, LN3]), torch.tensor([1.0, 0.0]))
    metric.update(torch.tensor([-LN3]), torch.tensor([0]))
    assert metric.compute().item() == pytest.approx((5 * math.log(2.0) - LN3) / 3)


def test_logloss_is_stable_for_large_logits():
    # label 0: loss = softplus(z); softplus(100) = 100 (+1e-44), softplus(-100) = 3.7e-44 -> mean 50
    metric = LogLoss()
    metric.update(torch.tensor([100.0, -100.0]), torch.tensor([0.0, 0.0]))
    assert metric.compute().item() == pytest.approx(50.0)


# -------------------------------------------------------------------------------------------------- CTRMetrics
# 8 rows (logit, label, user); σ(ln 3) = 3/4, σ(0) = 1/2, σ(-ln 3) = 1/4.
CTR_ROWS = [
    (LN3, 1, 1),
    (-LN3, 0, 1),
    (0.0, 1, 2),
    (0.0, 0, 2),
    (LN3, 0, 2),
    (-LN3, 1, 3),
    (LN3, 1, 3),
    (0.0, 1, 4),
]
# AUC: positives score 3/4, 3/4, 1/2, 1/2, 1/4; negatives 1/4, 1/2, 3/4 (15 pairs).
#   each 3/4 positive: beats 1/4 and 1/2, ties 3/4 -> 2.5 (x2 = 5); each 1/2 positive: 1 + 0.5 = 1.5 (x2 = 3);
#   the 1/4 positive: ties 1/4 -> 0.5. AUC = 8.5 / 15 = 17/30.
# GAUC: user 1 AUC 1 (2 rows); user 2: positive 1/2 vs negatives 1/2 (tie) and 3/4 -> 0.5/2 = 0.25 (3 rows);
#   users 3 and 4 are all positive -> left out. GAUC = (2 * 1 + 3 * 0.25) / 5 = 0.55, 2 users.
# LogLoss: ln(4/3) for rows 1, 2, 7; ln 2 for rows 3, 4, 8; ln 4 for rows 5, 6:
#   sum = 3 (2 ln 2 - ln 3) + 3 ln 2 + 2 (2 ln 2) = 13 ln 2 - 3 ln 3, mean over 8 rows.
EXPECTED_CTR = {
    "auc": 17.0 / 30.0,
    "gauc": 0.55,
    "logloss": (13 * math.log(2.0) - 3 * LN3) / 8,
    "gauc_users": 2,
    "samples": 8,
}


def _ctr_columns(rows):
    logits, labels, groups = zip(*rows, strict=True)
    return (
        torch.tensor(logits, dtype=torch.float64),  # float64: ln 3 is not rounded to float32
        torch.tensor(labels, dtype=torch.float32),
        torch.tensor(groups, dtype=torch.int64),
    )


def _assert_ctr(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        # BinaryAUROC counts and integrates in float32
        assert got[key] == pytest.approx(value, rel=1e-6 if key == "auc" else 1e-12), key


def test_ctr_metrics_by_hand_and_reset():
    metrics = CTRMetrics()
    logits, labels, groups = _ctr_columns(CTR_ROWS)
    metrics.update(logits[:3], labels[:3], groups[:3])
    metrics.update(logits[3:], labels[3:].long(), groups[3:])  # int labels work as well
    _assert_ctr(metrics.compute(), EXPECTED_CTR)
    metrics.update(logits[:1], labels[:1], groups[:1])  # no stale cache: a new row changes the result
    assert metrics.compute()["samples"] == 9
    metrics.reset()
    metrics.update(logits[:2], labels[:2], groups[:2])  # one user, scores 3/4 (pos) > 1/4 (neg)
    out = metrics.compute()
    assert out["auc"] == 1.0 and out["gauc"] == 1.0 and out["samples"] == 2
    assert out["logloss"] == pytest.approx(2 * math.log(2.0) - LN3)


def test_auc_agrees_with_a_pairwise_count_on_ties():
    # AUC is GAUC with a single user: compare BinaryAUROC (via CTRMetrics) with a plain pairwise count, ties 1/2
    rng = random.Random(3)
    logits = [rng.choice([-1.0, 0.0, 0.5, 2.0]) for _ in range(50)]
    labels = [rng.randint(0, 1) for _ in range(50)]
    pos = [z for z, y in zip(logits, labels, strict=True) if y == 1]
    neg = [z for z, y in zip(logits, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    metrics = CTRMetrics()
    metrics.update(torch.tensor(logits), torch.tensor(labels), torch.zeros(50, dtype=torch.int64))
    out = metrics.compute()
    assert out["auc"] == pytest.approx(wins / (len(pos) * len(neg)), rel=1e-6)
    assert out["gauc"] == pytest.approx(wins / (len(pos) * len(neg)), rel=1e-12)


def test_ctr_metrics_single_class_is_nan():
    metrics = CTRMetrics()
    metrics.update(torch.tensor([1.0, -2.0]), torch.tensor([1.0, 1.0]), torch.tensor([5, 6]))
    out = metrics.compute()
    assert math.isnan(out["auc"]) and math.isnan(out["gauc"]) and out["gauc_users"] == 0


def test_ctr_metrics_does_not_saturate_confident_logits():
    # σ in float32 is exactly 1.0 for both 20 and 30, which would tie the positive with the negative; float64 does not
    metrics = CTRMetrics()
    metrics.update(torch.tensor([30.0, 20.0]), torch.tensor([1, 0]), torch.tensor([1, 1]))
    out = metrics.compute()
    assert out["auc"] == 1.0 and out["gauc"] == 1.0


def test_ctr_metrics_rejects_non_binary_labels():
    with pytest.raises(ValueError, match="0 or 1"):
        CTRMetrics().update(torch.zeros(2), torch.tensor([0.0, 0.3]), torch.tensor([1, 1]))


def _dist_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    # torchmetrics' own gather trims with a list of slices, which torch warns about; ours must not hit it
    warnings.filterwarnings("error", message=".*non-tuple sequence for multidimensional indexing.*")
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=30)
    )
    try:
        logits, labels, groups = _ctr_columns(CTR_ROWS)
        # uneven split: rank 0 holds rows 0-2 in one batch, rank 1 rows 3-7 in two; user 2 spans both ranks
        uneven = CTRMetrics()
        batches = [slice(0, 3)] if rank == 0 else [slice(3, 5), slice(5, 8)]
        for s in batches:
            uneven.update(logits[s], labels[s], groups[s])
        # all rows on rank 0, none on rank 1
        lopsided = CTRMetrics()
        if rank == 0:
            lopsided.update(logits[:4], labels[:4], groups[:4])
            lopsided.update(logits[4:], labels[4:], groups[4:])
        result = {"uneven": uneven.compute(), "lopsided": lopsided.compute(), "uneven_again": uneven.compute()}
        # the bare GroupAUC metric with no rows on rank 1 (torchmetrics alone would skip rank 1's gather)
        gauc = GroupAUC()
        if rank == 0:
            gauc.update(torch.sigmoid(logits), labels, groups)
        out = gauc.compute()
        result["group_auc"] = {"gauc": out["gauc"].item(), "users": out["users"], "impressions": out["impressions"]}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_ctr_metrics_aggregate_across_gloo_ranks(tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = CTRMetrics()
    single.update(*_ctr_columns(CTR_ROWS))
    reference = single.compute()
    _assert_ctr(reference, EXPECTED_CTR)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name in ("uneven", "lopsided", "uneven_again"):
            _assert_ctr(result[name], reference)
            _assert_ctr(result[name], EXPECTED_CTR)
        assert result["group_auc"] == pytest.approx({"gauc": 0.55, "users": 2, "impressions": 5})


# ----------------------------------------------------------------------------------------------- rank metrics
# column 0 is the positive; rank = number of negatives scoring >= it
RANK_SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.2, 0.3],  # rank 0
        [0.5, 0.5, 0.1, 0.7],  # 0.5 (tie) and 0.7 -> rank 2
        [0.2, 0.2, 0.2, 0.2],  # all tied -> rank 3 (the worst)
        [0.4, 0.9, 0.1, 0.1],  # rank 1
    ]
)


def test_rank_of_positive_is_pessimistic_on_ties():
    assert rank_of_positive(RANK_SCORES).tolist() == [0, 2, 3, 1]
    assert rank_of_positive(torch.tensor([[math.nan, 0.1, 0.2], [0.5, math.nan, 0.1]])).tolist() == [2, 1]


def test_hit_rate_by_hand():
    # ranks [0, 2, 3, 1]
    assert hit_rate_at_k(RANK_SCORES, 1).item() == pytest.approx(1 / 4)
    assert hit_rate_at_k(RANK_SCORES, 2).item() == pytest.approx(2 / 4)
    assert hit_rate_at_k(RANK_SCORES, 3).item() == pytest.approx(3 / 4)
    assert hit_rate_at_k(RANK_SCORES, 10).item() == pytest.approx(1.0)


def test_ndcg_by_hand():
    # k = 2: rank 0 -> 1/log2(2) = 1, rank 1 -> 1/log2(3) = 0.6309, others 0 -> (1 + 0.6309) / 4 = 0.4077
    assert ndcg_at_k(RANK_SCORES, 2).item() == pytest.approx((1 + 1 / math.log2(3)) / 4, rel=1e-6)
    assert ndcg_at_k(RANK_SCORES, 2).item() == pytest.approx(0.4077, abs=1e-4)
    # k = 3 adds rank 2 -> 1/log2(4) = 0.5: (1 + 0.6309 + 0.5) / 4 = 0.5327
    assert ndcg_at_k(RANK_SCORES, 3).item() == pytest.approx(0.5327, abs=1e-4)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(RANK_SCORES, 0)
