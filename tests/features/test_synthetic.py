"""The seeded synthetic log: contracts, determinism, the planted structure, and the planted corruptions.

Expectations are worked out from the model in ``features.synthetic``'s docstring (constants restated here on
purpose: a change of the model must show up as a failing test, not move the expectation with it).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict

import pytest
from pydantic import ValidationError
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features.schemas import CLICK_TRUTH, EVENT_TYPES, PLANTED_CORRUPTIONS, RAW_EVENTS, RAW_ITEMS, RAW_USERS
from features.synthetic import (
    CORRUPTION_KINDS,
    SyntheticConfig,
    click_probability,
    exponential,
    generate,
    impressions,
    normal,
    open_uniform,
    uniform,
)

SMALL = SyntheticConfig(users=150, items=300, days=3, seed=11, corrupt_fraction=0.05)
# The structure data set: 800 users x 10 days x 3 requests x 8 items, about 190k impressions, C = 40.
STRUCT = SyntheticConfig(users=800, items=2000, days=10, seed=5, requests_per_user_day=3.0)


def names_and_types(schema: T.StructType) -> list[tuple[str, T.DataType]]:
    return [(f.name, f.dataType) for f in schema.fields]


def sorted_rows(df: DataFrame) -> list[tuple]:
    """All rows as tuples, in a fixed order (small frames only): compares multisets, duplicates counted."""
    return sorted((tuple(row) for row in df.collect()), key=repr)


def assert_same_rows(left: DataFrame, right: DataFrame) -> None:
    rows = sorted_rows(left)
    assert rows, "compare non-empty frames"
    assert rows == sorted_rows(right)


# ---------------------------------------------------------------------------------------------- random draws
def assert_unit_interval(spark, draw, *, open_left: bool = False, n: int = 200_000) -> None:
    """``draw(seed, salt, *cols)`` gives values in [0, 1) (or (0, 1)) over n ids, and looks uniform."""
    values = spark.range(n).select(draw(3, "check", F.col("id")).alias("v"))
    stats = values.agg(F.min("v"), F.max("v"), F.avg("v"), F.count(F.when(F.col("v") < 0.1, 1))).first()
    low, high, mean, below_tenth = stats
    assert 0.0 <= low and high < 1.0
    if open_left:
        assert low > 0.0
    # uniform: mean 1/2 (sd of the mean 0.29 / sqrt(n) ~ 0.0006), 10 % below 0.1 (sd ~ 0.0007)
    assert abs(mean - 0.5) < 0.005
    assert abs(below_tenth / n - 0.1) < 0.005


@pytest.mark.parametrize("draw", [uniform, open_uniform], ids=["uniform", "open_uniform"])
def test_uniform_draw_helpers_stay_in_unit_interval(spark, draw):
    assert_unit_interval(spark, draw, open_left=draw is open_uniform)


def test_uniform_is_keyed_by_seed_salt_and_ids(spark):
    row = (
        spark.range(1)
        .select(
            uniform(1, "a", F.lit(5).cast("long")).alias("base"),
            uniform(1, "a", F.lit(5).cast("long")).alias("same"),
            uniform(2, "a", F.lit(5).cast("long")).alias("other_seed"),
            uniform(1, "b", F.lit(5).cast("long")).alias("other_salt"),
            uniform(1, "a", F.lit(6).cast("long")).alias("other_id"),
        )
        .first()
    )
    assert row.base == row.same
    assert len({row.base, row.other_seed, row.other_salt, row.other_id}) == 4


def test_derived_draws_have_their_moments(spark):
    n = 200_000
    df = spark.range(n).select(normal(3, "z", F.col("id")).alias("z"), exponential(3, "e", F.col("id")).alias("e"))
    z_mean, z_sd, e_min, e_mean, nulls = df.agg(
        F.avg("z"), F.stddev("z"), F.min("e"), F.avg("e"), F.count(F.when(F.col("z").isNull(), 1))
    ).first()
    assert nulls == 0
    assert abs(z_mean) < 0.02 and abs(z_sd - 1.0) < 0.02  # logistic scaled by sqrt(3)/pi has sd 1
    assert e_min > 0 and abs(e_mean - 1.0) < 0.02  # Exp(1)


# ---------------------------------------------------------------------------------------------- click model
def test_click_probability_matches_hand_computed_values(spark):
    # p = pos^-0.7 * sigmoid(-2 + 4 * interest + q - 0.5 * n_same)
    cases = [
        # pos, interest, q, n_same, expected
        (1, 0.0, 0.0, 0, 0.11920292),  # 1 * sigmoid(-2)
        (2, 0.5, 0.1, 1, 0.24703672),  # 0.61557221 * sigmoid(-2 + 2 + 0.1 - 0.5 = -0.4) = 0.61557221 * 0.40131234
        (4, 1.0, -0.5, 0, 0.30980279),  # 0.37892914 * sigmoid(1.5) = 0.37892914 * 0.81757448
        (8, 0.0, 0.0, 3, 0.00683732),  # 0.23325825 * sigmoid(-3.5) = 0.23325825 * 0.02931223
    ]
    df = spark.createDataFrame(
        [c[:4] for c in cases], "position int, interest double, quality double, n_same int"
    )
    got = df.select(
        click_probability(F.col("position"), F.col("interest"), F.col("quality"), F.col("n_same")).alias("p")
    ).collect()
    for row, case in zip(got, cases, strict=True):
        assert row.p == pytest.approx(case[4], abs=1e-7)


# ---------------------------------------------------------------------------------------------- config
def test_config_defaults_and_validation():
    assert SyntheticConfig(users=1, items=1000, days=1, seed=0).categories == 20  # 1000 // 50
    assert SyntheticConfig(users=1, items=100, days=1, seed=0).categories == 4  # max(4, 2)
    assert SyntheticConfig(users=1, items=50_000, days=1, seed=0).categories == 200  # 1000 capped at 200
    cfg = SyntheticConfig(users=1, items=10, days=3, seed=0, categories=7, start_date="2026-02-27")
    assert cfg.categories == 7 and cfg.slate_size == 8 and cfg.requests_per_user_day == 2.0
    assert cfg.dates() == [dt.date(2026, 2, 27), dt.date(2026, 2, 28), dt.date(2026, 3, 1)]
    assert cfg.max_slots == 8  # ceil(4 * 2.0)
    with pytest.raises(ValidationError, match="extra"):
        SyntheticConfig(users=1, items=10, days=1, seed=0, user=3)
    with pytest.raises(ValidationError, match="must not exceed items"):
        SyntheticConfig(users=1, items=10, days=1, seed=0, categories=11)
    with pytest.raises(ValidationError):
        SyntheticConfig(users=0, items=10, days=1, seed=0)
    with pytest.raises(ValidationError):
        SyntheticConfig(users=1, items=10, days=1, seed=0, corrupt_fraction=1.5)
    with pytest.raises(ValidationError):
        cfg.users = 2  # frozen


# ---------------------------------------------------------------------------------------------- contracts
def test_tables_have_the_contract_schemas(spark):
    tables = generate(spark, SMALL)
    assert names_and_types(tables.events.schema) == names_and_types(RAW_EVENTS)
    assert names_and_types(tables.items.schema) == names_and_types(RAW_ITEMS)
    assert names_and_types(tables.users.schema) == names_and_types(RAW_USERS)
    assert names_and_types(tables.click_truth.schema) == names_and_types(CLICK_TRUTH)
    assert names_and_types(tables.planted_corruptions.schema) == names_and_types(PLANTED_CORRUPTIONS)
    assert EVENT_TYPES == ("impression", "click")


def test_catalogue_and_users_follow_the_id_scheme(spark):
    tables = generate(spark, SyntheticConfig(users=5, items=100, days=1, seed=1, categories=40))
    items = {r.item_id: r for r in tables.items.collect()}
    assert sorted(items) == sorted(f"i{j}" for j in range(100))
    assert items["i0"].category_id == "c0" and items["i41"].category_id == "c1" and items["i99"].category_id == "c19"
    assert all(r.shop_id.startswith("s") and r.brand_id.startswith("b") for r in items.values())
    users = tables.users.collect()
    assert sorted(r.user_id for r in users) == ["u0", "u1", "u2", "u3", "u4"]
    assert all(r.gender in {"F", "M", "U"} and r.age_bucket and r.city.startswith("city") for r in users)


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_rows_whatever_the_partitioning(spark):
    first = generate(spark, SMALL, num_partitions=1)
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        second = generate(spark, SMALL, num_partitions=5)
        assert second.events.rdd.getNumPartitions() == 5
        for name in ("events", "click_truth", "planted_corruptions", "items", "users"):
            assert_same_rows(getattr(first, name), getattr(second, name))
        assert first.planted_corruptions.count() > 0
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)


def test_other_seed_other_rows(spark):
    one = sorted_rows(generate(spark, SMALL).events)
    other = set(sorted_rows(generate(spark, SMALL.model_copy(update={"seed": SMALL.seed + 1})).events))
    # Both have the same id scheme, so many event ids coincide; the rows themselves must differ.
    assert sum(row not in other for row in one) > 0.9 * len(one)


def test_a_days_rows_do_not_depend_on_the_other_generated_days(spark):
    """Draws are keyed by the absolute day: generating days 1-3 or only day 3 gives the same day 3."""
    whole = generate(spark, SMALL.model_copy(update={"corrupt_fraction": 0.0})).events
    last_day = SMALL.dates()[-1]
    alone = generate(spark, SMALL.model_copy(update={"corrupt_fraction": 0.0, "start_date": last_day, "days": 1}))
    assert_same_rows(whole.where(F.col("ds") == last_day), alone.events)


# ---------------------------------------------------------------------------------------------- structure
@pytest.fixture(scope="module")
def struct_tables(spark):
    tables = generate(spark, STRUCT)
    events = tables.events.cache()
    truth = tables.click_truth.cache()
    yield tables, events, truth
    events.unpersist()
    truth.unpersist()


def test_events_are_consistent(struct_tables):
    _, events, truth = struct_tables
    n, distinct_ids, bad_ds, bad_type, nulls = events.agg(
        F.count("*"),
        F.countDistinct("event_id"),
        F.count(F.when(F.col("ds") != F.to_date("event_time"), 1)),
        F.count(F.when(~F.col("event_type").isin(*EVENT_TYPES), 1)),
        F.count(F.when(F.greatest(*[F.col(c).isNull() for c in RAW_EVENTS.fieldNames()]), 1)),
    ).first()
    assert n == distinct_ids  # event ids unique without corruption
    assert bad_ds == 0 and bad_type == 0 and nulls == 0

    # requests: distinct items at positions 1..n, all shown at the same time
    per_request = (
        events.where(F.col("event_type") == "impression")
        .groupBy("request_id")
        .agg(
            F.count("*").alias("n"),
            F.countDistinct("item_id").alias("items"),
            F.min("position").alias("lo"),
            F.max("position").alias("hi"),
            F.countDistinct("event_time").alias("times"),
        )
    )
    assert per_request.where("n != items OR lo != 1 OR hi != n OR times != 1 OR n > 8").count() == 0
    # requests per user-day: R * E[min(activity, S / R)] = 3 * 0.99 (the cap at 4 removes about 1 %)
    requests = per_request.count()
    assert requests / (STRUCT.users * STRUCT.days) == pytest.approx(3.0 * 0.99, rel=0.06)

    # click_truth: exactly one row per impression, p in (0, 1)
    imps = events.where(F.col("event_type") == "impression").select("event_id", "request_id", "user_id", "item_id")
    truth_ids = truth.select("event_id", "request_id", "user_id", "item_id")
    assert imps.count() == truth_ids.count()
    assert imps.exceptAll(truth_ids).count() == 0
    assert truth.where("p_click <= 0 OR p_click >= 1").count() == 0


def test_clicks_follow_an_impression_of_the_same_request_and_item(struct_tables):
    _, events, _ = struct_tables
    imp = events.where(F.col("event_type") == "impression").select(
        "request_id", "item_id", "user_id", "position", "ds", F.col("event_time").alias("shown")
    )
    clicks = events.where(F.col("event_type") == "click")
    joined = clicks.join(imp, on=["request_id", "item_id", "user_id", "position", "ds"], how="left")
    n_clicks, orphans, bad_delay = joined.agg(
        F.count("*"),
        F.count(F.when(F.col("shown").isNull(), 1)),
        F.count(
            F.when(
                (F.unix_seconds("event_time") - F.unix_seconds("shown") < 1)
                | (F.unix_seconds("event_time") - F.unix_seconds("shown") > 120),
                1,
            )
        ),
    ).first()
    assert n_clicks > 0 and orphans == 0 and bad_delay == 0
    assert clicks.select("request_id", "position").distinct().count() == n_clicks  # at most one click each


def test_overall_ctr_is_in_the_designed_range(struct_tables):
    _, events, _ = struct_tables
    counts = dict(events.groupBy("event_type").count().collect())
    # About 10 %: half the slate from interests (sigmoid(-2 + 4 * ~0.5 - 0.5 * n_same) ~ 0.35) and half elsewhere
    # (sigmoid(-2) ~ 0.12), times the mean examination 0.445 of positions 1..8.
    assert 0.05 <= counts["click"] / counts["impression"] <= 0.15


def test_position_one_is_clicked_far_more_than_positions_five_and_below(struct_tables):
    _, events, _ = struct_tables
    imp_by_pos = dict(
        events.where(F.col("event_type") == "impression").groupBy("position").count().collect()
    )
    clk_by_pos = dict(events.where(F.col("event_type") == "click").groupBy("position").count().collect())
    ctr_1 = clk_by_pos[1] / imp_by_pos[1]
    ctr_5_plus = sum(clk_by_pos.get(p, 0) for p in range(5, 9)) / sum(imp_by_pos.get(p, 0) for p in range(5, 9))
    # theta(1) / mean theta(5..8) = 1 / 0.275 = 3.6 (positions are filled in draw order, so nothing else differs)
    assert ctr_1 > 2.5 * ctr_5_plus


def _category_pair_rates(events: DataFrame, items: DataFrame, cfg: SyntheticConfig) -> tuple[float, float]:
    """P(two clicks of a user share the category): pairs on the same day, and pairs >= 8 days apart."""
    days = cfg.dates()
    clicks = (
        events.where(F.col("event_type") == "click")
        .join(items.select("item_id", "category_id"), on="item_id", how="inner")
        .groupBy("user_id", "ds", "category_id")
        .count()
        .collect()
    )
    per_day: dict[tuple[str, dt.date], Counter] = defaultdict(Counter)
    for row in clicks:
        per_day[(row.user_id, row.ds)][row.category_id] += row["count"]
    same, pairs = 0, 0
    for counter in per_day.values():
        total = sum(counter.values())
        same += sum(c * (c - 1) // 2 for c in counter.values())
        pairs += total * (total - 1) // 2
    same_day = same / pairs
    # early = days 0-1, late = days 8-9: at least 7 days apart, every slot (period <= 7) has moved on
    early: dict[str, Counter] = defaultdict(Counter)
    late: dict[str, Counter] = defaultdict(Counter)
    for (user, ds), counter in per_day.items():
        if ds in days[:2]:
            early[user].update(counter)
        elif ds in days[-2:]:
            late[user].update(counter)
    same, pairs = 0, 0
    for user in early.keys() & late.keys():
        same += sum(n * late[user][cat] for cat, n in early[user].items())
        pairs += sum(early[user].values()) * sum(late[user].values())
    return same_day, same / pairs


def test_click_categories_are_concentrated_and_drift(struct_tables):
    tables, events, _ = struct_tables
    same_day, far_apart = _category_pair_rates(events, tables.items, STRUCT)
    uniform_rate = 1 / STRUCT.categories  # 0.025 if clicks ignored interests
    # Most clicks are interest clicks (half the slate, ~3x the click probability), and two interest clicks share
    # a category with probability sum_k w_k^2 >= E = 0.5 (Dirichlet(1,1,1)): about 0.75^2 * 0.5 ~ 0.28.
    assert same_day > 6 * uniform_rate
    # Interests are redrawn at least once a week: clicks 7+ days apart share categories only by chance (plus a
    # little from popular items). Stationary interests would give far_apart ~ same_day.
    assert far_apart < same_day / 3


def test_same_category_context_lowers_the_click_probability(spark):
    """DSTN context effect: among impressions outside the user's interests, n_same >= 1 costs a factor
    sigmoid(-2.5 + q) / sigmoid(-2 + q) ~ 0.64 of the examination-free click probability."""
    imp = impressions(spark, SyntheticConfig(users=400, items=400, days=4, seed=9, categories=8))
    base = imp.where(F.col("interest") == 0).withColumn(
        "attractiveness", F.col("p_click") / F.pow(F.col("position").cast("double"), F.lit(-0.7))
    )
    stats = {
        row.crowded: row
        for row in base.groupBy((F.col("n_same") >= 1).alias("crowded"))
        .agg(F.avg("attractiveness").alias("a"), F.avg(F.col("clicked").cast("double")).alias("ctr"), F.count("*"))
        .collect()
    }
    ratio = stats[True].a / stats[False].a
    assert 0.5 < ratio < 0.8
    assert stats[True].ctr < stats[False].ctr
    # and the truth table carries these probabilities
    assert math.isclose(
        imp.agg(F.avg("p_click")).first()[0],
        generate(spark, SyntheticConfig(users=400, items=400, days=4, seed=9, categories=8))
        .click_truth.agg(F.avg("p_click"))
        .first()[0],
        rel_tol=1e-12,
    )


# ---------------------------------------------------------------------------------------------- corruption
def _observed_kind(rows: list, impressions_by_request_item: set) -> str | None:
    """Which planted kind a group of rows sharing an event_id shows (None: a clean row)."""
    if len(rows) == 2:
        return "exact_duplicate" if rows[0] == rows[1] else "conflicting_duplicate"
    (row,) = rows
    if row.user_id is None:
        return "null_user_id"
    if row.item_id == "":
        return "empty_item_id"
    if row.event_type not in EVENT_TYPES:
        return "unknown_event_type"
    if row.event_time is None:
        return "null_event_time"
    if row.event_time.year == 2099:
        return "future_time"
    if row.event_time.date() != row.ds:
        return "time_outside_ds"
    if row.position < 0:
        return "negative_position"
    if row.event_type == "click" and (row.request_id, row.item_id) not in impressions_by_request_item:
        return "orphan_click"
    return None


def test_planted_corruptions_are_listed_and_visible(spark):
    cfg = SyntheticConfig(users=200, items=300, days=2, seed=3, corrupt_fraction=0.1)
    tables = generate(spark, cfg)
    planted = {(r.event_id, r.kind, r.ds) for r in tables.planted_corruptions.collect()}
    kinds = Counter(kind for _, kind, _ in planted)
    assert set(kinds) == set(CORRUPTION_KINDS)
    assert len({event_id for event_id, _, _ in planted}) == len(planted)

    rows = tables.events.collect()
    by_id: dict[str, list] = defaultdict(list)
    for row in rows:
        by_id[row.event_id].append(row)
    # what was really shown (the truth table is never corrupted: an impression may have lost its item_id)
    shown = {(r.request_id, r.item_id) for r in tables.click_truth.collect()}
    observed = {(eid, _observed_kind(group, shown), group[0].ds) for eid, group in by_id.items()}
    observed = {entry for entry in observed if entry[1] is not None}
    assert observed == planted  # every planted row shows its kind, and nothing else is broken

    # f = 0.1 of the clean events are hit: base events = rows minus the added duplicate/orphan rows
    added = kinds["exact_duplicate"] + kinds["conflicting_duplicate"] + kinds["orphan_click"]
    assert len(planted) / (len(rows) - added) == pytest.approx(0.1, abs=0.02)


def test_no_corruption_by_default(spark):
    tables = generate(spark, SMALL.model_copy(update={"corrupt_fraction": 0.0}))
    assert tables.planted_corruptions.count() == 0
    rows = tables.events.collect()
    shown = {(r.request_id, r.item_id) for r in rows if r.event_type == "impression"}
    by_id: dict[str, list] = defaultdict(list)
    for row in rows:
        by_id[row.event_id].append(row)
    assert all(_observed_kind(group, shown) is None for group in by_id.values())
