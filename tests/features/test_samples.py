"""features.samples: labels, histories, exposure negatives, DSTN sets and the per-user state, on a hand-built log.

Settings: L = 3, ctx = clk = unclk = 2, K = 4 exposures, look-back 3600 s, negative window 600 s, click
window 1800 s. Every expected array below was worked out by hand from the events listed here (comments give the
reasoning); items map to indices through ``IDX`` (a=2 ... z=16, unknown 'zz' -> 1), categories through ``CATE``.
"""

from __future__ import annotations

import datetime as dt
import functools

import pytest
from chispa import assert_df_equality
from pyspark.sql import Window
from pyspark.sql import functions as F

from features.samples import (
    USER_STATE,
    SamplesConfig,
    _sampled_negative,
    build_range,
    item_index,
    state_as_of,
    user_index,
)
from features.schemas import RAW_EVENTS, RAW_ITEMS, RAW_USERS, SAMPLES
from features.synthetic import SyntheticConfig, generate

D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
CFG = SamplesConfig(hist_len=3, ctx_size=2, clk_size=2, unclk_size=2, exposure_candidates=4, lookback_seconds=3600,
                    negative_window_seconds=600, click_window_seconds=1800, seed=11)
LETTERS = "abcdefghijpqxyz"
IDX = {item: n + 2 for n, item in enumerate(LETTERS)} | {"zz": 1}
CATEGORY = {item: "k1" if item in "abcde" else "k2" if item in "fghij" else "k3" for item in LETTERS}
CATE = {item: {"k1": 2, "k2": 3, "k3": 4}[c] for item, c in CATEGORY.items()} | {"zz": 1}
CATALOGUE = len(LETTERS)  # indices 2 .. 16


def at(day: dt.date, clock: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(clock))


def ev(event_id, user, item, kind, day, clock, request=None, position=None):
    return (event_id, user, item, "impression" if kind == "imp" else "click", at(day, clock), request, position, day)


DAY1 = [
    # u1: request r1 shows a, b, c; b is clicked -> negative a (same request, |position - 2| = 1 for a and c: a
    # has the lower position). Request r2 shows d, e; d clicked -> negative e.
    ev("e101", "u1", "a", "imp", D1, "09:00:00", "r1", 1), ev("e102", "u1", "b", "imp", D1, "09:00:00", "r1", 2),
    ev("e103", "u1", "c", "imp", D1, "09:00:00", "r1", 3), ev("e104", "u1", "b", "clk", D1, "09:00:10", "r1", 2),
    ev("e105", "u1", "d", "imp", D1, "09:10:00", "r2", 1), ev("e106", "u1", "e", "imp", D1, "09:10:00", "r2", 2),
    ev("e107", "u1", "d", "clk", D1, "09:10:05", "r2", 1),
    # u4: p and x shown just before midnight; p is clicked after midnight (a late click on day 2).
    ev("e401", "u4", "p", "imp", D1, "23:50:00", "r9", 1), ev("e402", "u4", "x", "imp", D1, "23:50:00", "r9", 2),
]
DAY2 = [
    ev("e201", "u1", "f", "imp", D2, "08:00:00", "r3", 1), ev("e202", "u1", "a", "imp", D2, "08:00:00", "r3", 2),
    ev("e203", "u1", "f", "clk", D2, "08:00:20", "r3", 1),  # negative: a (same request)
    ev("e204", "u1", "g", "imp", D2, "08:30:00", "r4", 1),
    ev("e205", "u1", "g", "clk", D2, "08:30:30", "r4", 1),  # alone in r4, nothing unclicked in 600 s: sampled
    ev("e206", "u1", "h", "imp", D2, "09:00:00", "r5", 1), ev("e207", "u1", "i", "imp", D2, "09:00:00", "r5", 2),
    ev("e208", "u1", "i", "clk", D2, "09:00:00", "r5", 2),  # same second as the impressions: not before them
    ev("e209", "u1", "j", "imp", D2, "09:05:00", "r6", 1), ev("e210", "u1", "zz", "imp", D2, "09:05:00", "r6", 2),
    # u2: no requests. x clicked 20 min after its impression (inside the 1800 s click window): label 1; z clicked
    # an hour later: no impression in the window, so unattributed (label 0). Neither click has an unclicked
    # exposure of another item nearby: both negatives are sampled.
    ev("e301", "u2", "x", "imp", D2, "10:00:00"), ev("e302", "u2", "x", "clk", D2, "10:20:00"),
    ev("e303", "u2", "y", "imp", D2, "10:30:00"), ev("e304", "u2", "z", "imp", D2, "11:00:00"),
    ev("e305", "u2", "z", "clk", D2, "12:00:00"),
    # u3: a new user with one impression: every sequence empty (all padding, length 0).
    ev("e501", "u3", "q", "imp", D2, "12:00:00", "r7", 1),
    # u4: the late click on yesterday's p (negative: x, shown in the same request yesterday), then q.
    ev("e403", "u4", "p", "clk", D2, "00:05:00", "r9", 1), ev("e404", "u4", "q", "imp", D2, "00:30:00", "r10", 1),
]


@pytest.fixture(scope="module")
def lookups(spark):
    vocab = spark.createDataFrame(
        [("item", i, n, 1, D1, D1) for i, n in IDX.items() if n >= 2]
        + [("category", c, n, 1, D1, D1) for c, n in (("k1", 2), ("k2", 3), ("k3", 4))]
        + [("user", f"u{k}", k + 1, 1, D1, D1) for k in range(1, 5)] + [("gender", "F", 2, 1, D1, D1)],
        "field string, raw_id string, idx long, count long, first_seen_ds date, ds date")
    items = spark.createDataFrame([(i, CATEGORY[i], None, None) for i in LETTERS], RAW_ITEMS)
    users = spark.createDataFrame([("u1", "F", None, None)], RAW_USERS)
    return item_index(vocab, items), user_index(vocab, users)


def build(spark, lookups, log, state_before, first, last, cfg=CFG):
    items, users = lookups
    catalogue = {first + dt.timedelta(days=n): CATALOGUE for n in range((last - first).days + 1)}
    return build_range(spark.createDataFrame(log, RAW_EVENTS), state_before, items, users, catalogue=catalogue,
                       first=first, last=last, cfg=cfg)


@pytest.fixture(scope="module")
def days(spark, lookups):
    empty = spark.createDataFrame([], USER_STATE)
    state1 = build(spark, lookups, DAY1, empty, D1, D1).state.localCheckpoint()
    day2 = build(spark, lookups, DAY2, state_as_of(state1, D1), D2, D2)
    for frame in day2.shared:  # computed once for the three results below, as the job does
        frame.persist()
    samples2 = day2.samples.localCheckpoint()
    result = {"state1": state1, "samples2": samples2, "state2": day2.state.localCheckpoint(),
              "counts2": {k: v for k, v in day2.counts.first().asDict().items() if k != "ds"},
              "clicks2": day2.clicks.localCheckpoint(),
              "by_id": {r["sample_id"]: r for r in samples2.collect()}}
    for frame in day2.shared:
        frame.unpersist()
    return result


def seq(items, size):
    """(item indices, category indices) of hand-listed items, right-padded with 0 to ``size``."""
    pad = [0] * (size - len(items))
    return [IDX[i] for i in items] + pad, [CATE[i] for i in items] + pad


def test_schema_one_row_per_impression_and_labels(days):
    samples = days["samples2"]
    assert samples.schema.simpleString() == SAMPLES.simpleString()
    labels = {r["sample_id"]: r["label"] for r in samples.select("sample_id", "label").collect()}
    # f, g, i clicked in their requests; x clicked by window; z's click came too late; the rest unclicked.
    assert labels == {"e201": 1, "e202": 0, "e204": 1, "e206": 0, "e207": 1, "e209": 0, "e210": 0,
                      "e301": 1, "e303": 0, "e304": 0, "e501": 0, "e404": 0}


@pytest.mark.parametrize(("sample_id", "hist", "negs", "sampled"), [
    ("e201", "bd", "ae", [0, 0, 0]),        # yesterday's clicks b, d (carried in the state) with their negatives
    ("e204", "bdf", "aea", [0, 0, 0]),
    ("e206", "dfg", "ea?", [0, 0, 1]),      # b truncated (L = 3); i clicked in the same second: not before
    ("e207", "dfg", "ea?", [0, 0, 1]),
    ("e209", "fgi", "a?h", [0, 1, 0]),      # i's negative: h, unclicked in i's request
    ("e303", "x", "?", [1, 0, 0]),
    ("e304", "x", "?", [1, 0, 0]),
    ("e501", "", "", [0, 0, 0]),            # no history: all padding, length 0, never null
    ("e404", "p", "x", [0, 0, 0]),          # the late click on p, negative x from yesterday's request
])
def test_history_and_aligned_negatives(days, sample_id, hist, negs, sampled):
    row = days["by_id"][sample_id]
    items, cates = seq(list(hist), CFG.hist_len)
    assert (row["hist_item_idx"], row["hist_cate_idx"], row["hist_len"]) == (items, cates, len(hist))
    assert row["neg_is_sampled"] == sampled
    for step, neg in enumerate(negs):
        got = row["neg_item_idx"][step]
        if neg == "?":  # drawn from the catalogue: a real item, never the clicked one
            assert 2 <= got <= CATALOGUE + 1 and got != IDX[hist[step]]
        else:
            assert (got, row["neg_cate_idx"][step]) == (IDX[neg], CATE[neg])
    assert row["neg_item_idx"][len(hist):] == [0] * (CFG.hist_len - len(hist))  # padding only after the valid part


@pytest.mark.parametrize(("sample_id", "ctx", "clk", "unclk"), [
    ("e201", "a", "", ""),     # 08:00: yesterday's clicks are outside the 3600 s look-back
    ("e202", "f", "", ""),
    ("e204", "", "f", "a"),    # r4 shows g alone; f clicked at 08:00:20 so only a is shown-but-unclicked
    ("e206", "i", "gf", "a"),  # most recent first; g and f were clicked, a was not
    ("e207", "h", "gf", "a"),
    ("e209", ["zz"], "ig", "h"),  # a (08:00) is older than the look-back; i clicked at 09:00 < 09:05
    ("e210", "j", "ig", "h"),
    ("e301", "", "", ""),      # no request: no context
    ("e304", "", "x", "y"),    # x was clicked before 11:00, y was not
    ("e404", "", "p", "x"),    # x: shown yesterday at 23:50, inside the look-back, never clicked
])
def test_dstn_sets(days, sample_id, ctx, clk, unclk):
    row = days["by_id"][sample_id]
    for prefix, expected, size in (("ctx", ctx, CFG.ctx_size), ("clk", clk, CFG.clk_size),
                                   ("unclk", unclk, CFG.unclk_size)):
        items, cates = seq(list(expected), size)
        got = (row[f"{prefix}_item_idx"], row[f"{prefix}_cate_idx"], row[f"{prefix}_len"])
        assert got == (items, cates, len(expected)), prefix


def test_context_is_the_users_own_request(spark, lookups):
    # a request id is one user's page: u2's r1 (a reused id) shows only c, so c's context is empty, and u1's a sees
    # only b, never c (by position c would come first)
    log = [ev("x1", "u1", "a", "imp", D1, "09:00:00", "r1", 2), ev("x2", "u1", "b", "imp", D1, "09:00:00", "r1", 3),
           ev("x3", "u2", "c", "imp", D1, "09:00:00", "r1", 1)]
    day = build(spark, lookups, log, spark.createDataFrame([], USER_STATE), D1, D1)
    got = {r["sample_id"]: (r["ctx_item_idx"], r["ctx_len"]) for r in day.samples.collect()}
    assert got == {"x1": (seq(["b"], 2)[0], 1), "x2": (seq(["a"], 2)[0], 1), "x3": ([0, 0], 0)}


def test_target_ids_and_unknowns(days):
    row = days["by_id"]["e210"]
    assert (row["item_idx"], row["cate_idx"], row["shop_idx"], row["user_idx"], row["gender_idx"]) == (1, 1, 1, 2, 2)
    assert days["by_id"]["e304"]["user_idx"] == 3 and days["by_id"]["e304"]["gender_idx"] == 1
    assert days["by_id"]["e301"]["position"] == 0  # unknown position


def test_click_attribution_and_negative_sources(days):
    clicks = {r["event_id"]: (r["attributed"], r["neg_is_sampled"]) for r in days["clicks2"].collect()}
    assert clicks == {"e203": ("today", 0), "e205": ("today", 1), "e208": ("today", 0), "e302": ("today", 1),
                      "e305": (None, 1), "e403": ("late", 0)}


def test_state_carries_last_clicks_and_recent_exposures(spark, days):
    # End of day 1 (retention 3600 s: exposures from 23:00 on are kept): u1's two clicks and no exposure left;
    # u4's two exposures of r9, not clicked yet.
    expected1 = spark.createDataFrame([
        ("u1", [(at(D1, "09:00:10"), "e104", "b", "a", 0), (at(D1, "09:10:05"), "e107", "d", "e", 0)], [], D1),
        ("u4", [], [(at(D1, "23:50:00"), "e401", "p", "r9", 1, None), (at(D1, "23:50:00"), "e402", "x", "r9", 2, None)],
         D1),
    ], USER_STATE)
    assert_df_equality(days["state1"], expected1, ignore_row_order=True, ignore_nullable=True)
    # End of day 2: the last 3 clicks per user; u3 (nothing left to carry) has no row.
    state2 = {r["user_id"]: [(c["event_id"], c["item_id"], c["neg_is_sampled"]) for c in r["clicks"]]
              for r in days["state2"].collect()}
    assert state2 == {"u1": [("e203", "f", 0), ("e205", "g", 1), ("e208", "i", 0)],
                      "u2": [("e302", "x", 1), ("e305", "z", 1)], "u4": [("e403", "p", 0)]}
    assert days["state2"].where(F.size("exposures") > 0).isEmpty()


def _sample_fallback(clicks, catalogue_size: int, seed: int):
    """What build_range does for a click: the drawn index, and the flag of a sampled negative."""
    return clicks.withColumn("sampled_idx", _sampled_negative(catalogue_size, seed)).withColumn(
        "neg_is_sampled", F.col("sampled_idx").isNotNull().cast("int"))


def test_sampled_negatives_are_seeded_uniform_and_never_the_clicked_item(spark):
    clicks = spark.createDataFrame([(f"c{n}", 2 + n % 4, None) for n in range(400)],
                                   "event_id string, item_idx long, neg_item_id string")
    draws = {seed: {r["event_id"]: r["sampled_idx"] for r in _sample_fallback(clicks, 4, seed).collect()}
             for seed in (1, 1, 2)}
    first = _sample_fallback(clicks, 4, 1).collect()
    assert all(r["neg_is_sampled"] == 1 and r["sampled_idx"] in {2, 3, 4, 5} - {r["item_idx"]} for r in first)
    assert draws[1] == {r["event_id"]: r["sampled_idx"] for r in first}  # same seed, same draws
    assert draws[1] != draws[2]
    # the clicked item is skipped, so each of the 3 other items gets about a third of the 100 clicks of item 2
    of_item2 = [r["sampled_idx"] for r in first if r["item_idx"] == 2]
    assert {i: of_item2.count(i) for i in (3, 4, 5)} == pytest.approx({3: 33, 4: 33, 5: 33}, abs=15)
    # a click whose negative is an exposure draws nothing
    kept = spark.createDataFrame([("c", 2, "x")], "event_id string, item_idx long, neg_item_id string")
    assert _sample_fallback(kept, 4, 1).select("sampled_idx", "neg_is_sampled").first() == (None, 0)


def test_any_split_of_a_range_gives_the_same_rows_whatever_the_input_order(spark):
    """Three days built one day at a time, as 1 + 2 days and as one range give the same samples and state, also when
    the range's input is shuffled and repartitioned and the indices are joined by shuffle (guarantee 14).

    min_count-like late indices: half the items enter the vocabulary only on the second day, so a day-1 click of such
    an item is unknown (1) in day-1 samples and known in later days' histories; K = 3 and a short retention make the
    state drop exposures, which the range must not see either."""
    synthetic = generate(spark, SyntheticConfig(users=40, items=60, days=3, seed=5, requests_per_user_day=4))
    ranked = synthetic.events.select(F.col("item_id").alias("raw_id")).distinct().withColumn(
        "idx", (F.dense_rank().over(Window.orderBy("raw_id")) + 1).cast("long"))
    vocab = ranked.select(F.lit("item").alias("field"), "raw_id", "idx", F.lit(1).cast("long").alias("count"),
                          F.lit(D1).alias("first_seen_ds"),
                          F.when(F.col("idx") % 2 == 0, F.lit(D1)).otherwise(F.lit(D2)).alias("ds"))
    size = vocab.count()
    items, users = item_index(vocab, synthetic.items), user_index(vocab, synthetic.users)
    cfg = SamplesConfig(hist_len=5, ctx_size=3, clk_size=3, unclk_size=3, exposure_candidates=3,
                        lookback_seconds=6 * 3600, negative_window_seconds=3600)
    # Midnight clicks on yesterday's impressions, which the state keeps only while they are among the user's last K
    # exposures and inside the retention window: v1's 'a' is pushed out by 3 later impressions (its request click and
    # its loose click stay unattributed), v2's is not (both are late clicks); v3's is older than the retention window.
    d3 = D2 + dt.timedelta(days=1)
    hand = []
    for user, others in (("v1", 3), ("v2", 1)):
        for request, item in ((f"{user}r", "a"), (None, "b")):
            hand.append(ev(f"{user}{item}", user, item, "imp", D1, "23:50:00", request, 1 if request else None))
            hand.append(ev(f"{user}{item}c", user, item, "clk", D2, "00:05:00", request, 1 if request else None))
        hand += [ev(f"{user}x{n}", user, f"x{n}", "imp", D1, f"23:5{5 + n}:00") for n in range(others)]
    hand += [ev("v3a", "v3", "a", "imp", D1, "10:00:00", "v3r", 1),
             ev("v3ac", "v3", "a", "clk", D2, "00:01:00", "v3r", 1)]
    events = synthetic.events.unionByName(spark.createDataFrame(hand, RAW_EVENTS)).localCheckpoint()
    empty = spark.createDataFrame([], USER_STATE)

    def run(parts, source):
        state, samples, states, clicks = empty, [], [], {}
        for first, last in parts:
            days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
            part = build_range(source.where(F.col("ds").between(first, last)),
                               state_as_of(state, first - dt.timedelta(days=1)), items, users,
                               catalogue={d: size for d in days}, first=first, last=last, cfg=cfg)
            samples.append(part.samples.localCheckpoint())
            states.append(part.state.localCheckpoint())
            clicks.update({r["event_id"]: r["attributed"] for r in part.clicks.collect()})
            state = states[-1] if state is empty else state.unionByName(states[-1])
        return functools.reduce(lambda a, b: a.unionByName(b), samples), state, clicks

    daily = run([(D1, D1), (D2, D2), (d3, d3)], events)
    assert {k: daily[2][k] for k in ("v1ac", "v1bc", "v2ac", "v2bc", "v3ac")} == {
        "v1ac": None, "v1bc": None, "v2ac": "late", "v2bc": "late", "v3ac": None}
    halves = run([(D1, D1), (D2, d3)], events)
    shuffled = events.orderBy(F.xxhash64("event_id")).repartition(7)
    whole = run([(D1, d3)], shuffled)
    assert daily[0].count() == events.where(F.col("event_type") == "impression").count() > 300
    assert daily[0].agg(F.sum("hist_len")).first()[0] > 0 and daily[0].agg(F.sum("unclk_len")).first()[0] > 0
    assert daily[0].where(F.array_contains("hist_item_idx", 1)).count() > 0  # unknown on day 1, known later
    for other in (halves, whole):
        assert_df_equality(daily[0], other[0], ignore_row_order=True, ignore_nullable=True)
        assert_df_equality(daily[1], other[1], ignore_row_order=True, ignore_nullable=True)
        assert other[2] == daily[2]
    by_shuffle = build_range(events, empty, items, users, catalogue={d: size for d in (D1, D2, d3)}, first=D1,
                             last=d3, cfg=cfg.model_copy(update={"broadcast_lookups": False})).samples
    assert_df_equality(daily[0], by_shuffle, ignore_row_order=True, ignore_nullable=True)


def test_state_as_of_is_each_users_latest_row_up_to_the_day(spark):
    d3 = D2 + dt.timedelta(days=1)
    state = spark.createDataFrame([("u1", [], [], D1), ("u1", [], [], d3), ("u2", [], [], D2)], USER_STATE)
    got = {(r["user_id"], r["ds"]) for r in state_as_of(state, D2).collect()}
    assert got == {("u1", D1), ("u2", D2)}
    assert state_as_of(state, dt.date(2025, 12, 31)).isEmpty()


def test_config_refuses_sets_larger_than_their_source():
    with pytest.raises(ValueError, match="clk_size"):
        SamplesConfig(hist_len=3, clk_size=4)
    with pytest.raises(ValueError, match="unclk_size"):
        SamplesConfig(exposure_candidates=2, unclk_size=3)
