"""features.rank_eval: the time split and the leave-one-out candidates, on hand-built samples."""

from __future__ import annotations

import datetime as dt

import pytest

from features.jobkit import JobInputError
from features.rank_eval import RANK_EVAL, RankEvalConfig, rank_candidates, time_split
from features.schemas import SAMPLES

DAYS = [dt.date(2026, 1, d) for d in range(1, 6)]


def test_time_split_takes_the_last_days_for_test_then_valid():
    cfg = RankEvalConfig(valid_days=2, test_days=1)
    assert time_split(DAYS, DAYS[-1], cfg) == [
        (DAYS[0], "train"), (DAYS[1], "train"), (DAYS[2], "valid"), (DAYS[3], "valid"), (DAYS[4], "test")]
    # days after the anchor are not part of it; unordered, repeated input is fine
    assert time_split(DAYS[::-1] + DAYS, DAYS[2], RankEvalConfig()) == [
        (DAYS[0], "train"), (DAYS[1], "valid"), (DAYS[2], "test")]
    with pytest.raises(JobInputError, match="needs at least 3"):
        time_split(DAYS[:2], DAYS[1], RankEvalConfig())


def sample(sample_id, user, item, label, day, clock, hist=()):
    hist = list(hist) + [0] * (50 - len(hist))
    zeros5 = [0] * 5
    return (sample_id, dt.datetime.combine(day, dt.time.fromisoformat(clock)), label, 1, item, item + 100, 1, 1,
            user, 1, 1, 1, hist, hist, sum(1 for h in hist if h), [0] * 50, [0] * 50, [0] * 50,
            zeros5, zeros5, 0, zeros5, zeros5, 0, zeros5, zeros5, 0, day)


def test_latest_positive_with_fresh_seeded_negatives(spark):
    d1, d2 = DAYS[0], DAYS[1]
    rows = [
        # user 2: positives on the test day at 10:00 (s2) and 11:00 (s3): s3 is held out. Shown items 2..5.
        sample("s1", 2, 2, 1, d1, "09:00"), sample("s2", 2, 3, 1, d2, "10:00", hist=[2]),
        sample("s3", 2, 4, 1, d2, "11:00", hist=[2, 3]), sample("s4", 2, 5, 0, d2, "11:30"),
        # user 3: a positive on the training day only: no row.
        sample("s5", 3, 6, 1, d1, "09:00"),
        # user 4: two positives in the same second: the larger sample id (s7) is held out.
        sample("s6", 4, 2, 1, d2, "12:00"), sample("s7", 4, 3, 1, d2, "12:00"),
    ]
    samples = spark.createDataFrame(rows, SAMPLES)
    items = spark.createDataFrame([(i, i + 100, 1, 1) for i in range(2, 12)],
                                  "item_idx long, cate_idx long, shop_idx long, brand_idx long")
    cfg = RankEvalConfig(negatives=4, draws_per_negative=8, seed=3)
    result = rank_candidates(samples, items, anchors={d2: [d2]}, catalogue={d2: 10}, cfg=cfg)
    got = {r["user_idx"]: r for r in result.rows.collect()}
    assert result.rows.schema.simpleString() == RANK_EVAL.simpleString()
    assert set(got) == {2, 4} and result.skipped_users.count() == 0
    user2, user4 = got[2], got[4]
    assert (user2["sample_id"], user2["hist_item_idx"][:3], user2["ds"]) == ("s3", [2, 3, 0], d2)
    assert user4["sample_id"] == "s7"
    # positive first; 4 distinct negatives from the catalogue (2..11), none the user was shown (2, 3, 4, 5)
    assert user2["cand_item_idx"][0] == 4 and len(user2["cand_item_idx"]) == 5
    negatives = user2["cand_item_idx"][1:]
    assert len(set(negatives)) == 4 and set(negatives) <= set(range(6, 12))
    assert user2["cand_cate_idx"] == [i + 100 for i in user2["cand_item_idx"]]
    assert set(user4["cand_item_idx"][1:]) <= set(range(4, 12))
    # the same seed draws the same negatives
    again = rank_candidates(samples, items, anchors={d2: [d2]}, catalogue={d2: 10}, cfg=cfg).rows
    assert {r["user_idx"]: r["cand_item_idx"] for r in again.collect()} == {2: user2["cand_item_idx"],
                                                                          4: user4["cand_item_idx"]}


def test_users_without_enough_unseen_items_are_left_out_and_counted(spark):
    d1, d2 = DAYS[0], DAYS[1]
    samples = spark.createDataFrame([sample("s1", 2, 2, 1, d1, "09:00"), sample("s2", 2, 3, 1, d2, "09:00"),
                                     sample("s3", 2, 4, 0, d2, "09:30")], SAMPLES)
    items = spark.createDataFrame([(i, i, 1, 1) for i in range(2, 7)],
                                  "item_idx long, cate_idx long, shop_idx long, brand_idx long")
    # catalogue 2..6, the user saw 2, 3, 4: only 5 and 6 are left, 3 negatives are asked
    result = rank_candidates(samples, items, anchors={d2: [d2]}, catalogue={d2: 5},
                             cfg=RankEvalConfig(negatives=3, draws_per_negative=20))
    assert result.rows.isEmpty()
    assert [(r["ds"], r["user_idx"]) for r in result.skipped_users.collect()] == [(d2, 2)]


def test_each_anchor_of_a_range_sees_the_samples_up_to_it_only(spark):
    d1, d2, d3 = DAYS[0], DAYS[1], DAYS[2]
    # user 2 clicks item 3 on day 2 and item 4 on day 3; item 6 is first shown on day 3
    samples = spark.createDataFrame([sample("s1", 2, 2, 1, d1, "09:00"), sample("s2", 2, 3, 1, d2, "09:00"),
                                     sample("s3", 2, 4, 1, d3, "09:00"), sample("s4", 2, 6, 0, d3, "10:00")], SAMPLES)
    items = spark.createDataFrame([(i, i, 1, 1) for i in range(2, 9)],
                                  "item_idx long, cate_idx long, shop_idx long, brand_idx long")
    cfg = RankEvalConfig(negatives=3, draws_per_negative=30, seed=1)
    both = rank_candidates(samples, items, anchors={d2: [d2], d3: [d3]}, catalogue={d2: 7, d3: 7}, cfg=cfg).rows
    got = {r["ds"]: r for r in both.collect()}
    assert (got[d2]["sample_id"], got[d3]["sample_id"]) == ("s2", "s3")
    assert not {2, 3} & set(got[d2]["cand_item_idx"][1:]) and not {2, 3, 4, 6} & set(got[d3]["cand_item_idx"][1:])
    for anchor in (d2, d3):  # each anchor's rows are those of a run for it alone
        alone = rank_candidates(samples.where(f"ds <= '{anchor}'"), items, anchors={anchor: [anchor]},
                                catalogue={anchor: 7}, cfg=cfg).rows.first()
        assert alone == got[anchor]
