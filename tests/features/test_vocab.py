"""features.vocab: day counts, index assignment (ordering, min_count, reserved 0/1, a range = its days), lookup.

Every expected index below was worked out by hand from the events in this file (comments show the counts).
"""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from features.schemas import RAW_EVENTS, RAW_ITEMS, RAW_USERS
from features.vocab import (
    VOCAB,
    VOCAB_PENDING,
    as_of,
    assign_indices,
    day_counts,
    lookup,
)

D1, D2 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)


def events(spark, pairs, ds):
    rows = [(f"e{n}", u, i, "impression", dt.datetime.combine(ds, dt.time(10, n)), None, None, ds)
            for n, (u, i) in enumerate(pairs)]
    return spark.createDataFrame(rows, RAW_EVENTS)


# Day 1: users u1 x3, u2 x2, u3 x1; items i1 x3, i2, i3, i4 x1 (i4 is not in raw/items).
DAY1 = [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u3", "i3"), ("u1", "i1"), ("u2", "i4")]
# Day 2: u3, u1, u5 x1 and u4 x2; i2, i3, i6 x1 and i5 x2 (i5, i6 not in raw/items; u4, u5 not in raw/users).
DAY2 = [("u3", "i3"), ("u4", "i2"), ("u1", "i5"), ("u4", "i5"), ("u5", "i6")]
# What day_counts gives for DAY1 (checked by the first test) and DAY2 (by hand, same rules): the input of the
# assign_indices tests below. category/shop/brand per event via ITEMS; gender/age/city per distinct user via USERS.
COUNTS1 = [("user", "u1", 3), ("user", "u2", 2), ("user", "u3", 1),
           ("item", "i1", 3), ("item", "i2", 1), ("item", "i3", 1), ("item", "i4", 1),
           ("category", "c1", 4), ("category", "c2", 1), ("shop", "s1", 4), ("shop", "s2", 1),
           ("brand", "b1", 3), ("brand", "b2", 1), ("gender", "F", 2), ("gender", "M", 1),
           ("age_bucket", "18-24", 2), ("age_bucket", "25-34", 1), ("city", "lyon", 1), ("city", "paris", 1)]
COUNTS2 = [("user", "u3", 1), ("user", "u4", 2), ("user", "u1", 1), ("user", "u5", 1),
           ("item", "i3", 1), ("item", "i2", 1), ("item", "i5", 2), ("item", "i6", 1),
           ("category", "c1", 1), ("category", "c2", 1), ("shop", "s2", 1), ("shop", "s1", 1), ("brand", "b2", 1),
           ("gender", "F", 2), ("age_bucket", "25-34", 1), ("age_bucket", "18-24", 1),
           ("city", "lyon", 1), ("city", "paris", 1)]
COUNTS_SCHEMA = "field string, raw_id string, count long, ds date"
ITEMS = [("i1", "c1", "s1", "b1"), ("i2", "c2", "s1", None), ("i3", "c1", "s2", "b2"), ("i9", "c3", "s3", "b3")]
USERS = [("u1", "F", "18-24", "paris"), ("u2", "M", "18-24", None), ("u3", "F", "25-34", "lyon"),
         ("u9", "X", "65+", "rome")]


@pytest.fixture(scope="module")
def side(spark):
    return spark.createDataFrame(ITEMS, RAW_ITEMS), spark.createDataFrame(USERS, RAW_USERS)


def counts(spark, rows, ds=D1):
    return spark.createDataFrame([(*row, ds) for row in rows], COUNTS_SCHEMA)


def materialized(df):
    """``df`` evaluated once into a local table, as a job's next day reads it back from Delta."""
    return df.sparkSession.createDataFrame(df.collect(), df.schema)


def empty(spark, schema):
    return spark.createDataFrame([], schema)


def vocab_rows(spark, rows):
    return spark.createDataFrame(rows, VOCAB)


def test_day_counts_per_field(spark, side):
    # category: c1 = i1 (3) + i3 (1), c2 = i2 (1); i4 has no catalogue row. shop: s1 = 3 + 1, s2 = 1.
    # brand: b1 = 3, b2 = 1 (i2's brand is null). gender/age/city: one per distinct user seen (u2's city is null).
    got = day_counts(events(spark, DAY1, D1).unionByName(events(spark, DAY2, D2)), *side)
    assert_df_equality(got, counts(spark, COUNTS1).unionByName(counts(spark, COUNTS2, D2)), ignore_row_order=True,
                       ignore_nullable=True)


def test_one_day_min_count_1_numbers_every_id_from_2_by_count_then_raw_id(spark):
    additions, pending = assign_indices(counts(spark, COUNTS1), empty(spark, VOCAB),
                                        empty(spark, VOCAB_PENDING), min_count=1)
    expected = [("user", "u1", 2, 3), ("user", "u2", 3, 2), ("user", "u3", 4, 1),
                ("item", "i1", 2, 3), ("item", "i2", 3, 1), ("item", "i3", 4, 1), ("item", "i4", 5, 1),  # tie: id asc
                ("category", "c1", 2, 4), ("category", "c2", 3, 1), ("shop", "s1", 2, 4), ("shop", "s2", 3, 1),
                ("brand", "b1", 2, 3), ("brand", "b2", 3, 1), ("gender", "F", 2, 2), ("gender", "M", 3, 1),
                ("age_bucket", "18-24", 2, 2), ("age_bucket", "25-34", 3, 1),
                ("city", "lyon", 2, 1), ("city", "paris", 3, 1)]
    assert_df_equality(additions, vocab_rows(spark, [(f, r, i, c, D1, D1) for f, r, i, c in expected]),
                       ignore_row_order=True, ignore_nullable=True)
    assert pending.count() == 0


def test_min_count_holds_rare_ids_back_until_their_cumulative_count_reaches_it(spark):
    additions1, pending1 = map(materialized, assign_indices(counts(spark, COUNTS1), empty(spark, VOCAB),
                                                            empty(spark, VOCAB_PENDING), min_count=2))
    day1 = [("user", "u1", 2, 3), ("user", "u2", 3, 2), ("item", "i1", 2, 3), ("category", "c1", 2, 4),
            ("shop", "s1", 2, 4), ("brand", "b1", 2, 3), ("gender", "F", 2, 2), ("age_bucket", "18-24", 2, 2)]
    assert_df_equality(additions1, vocab_rows(spark, [(f, r, i, c, D1, D1) for f, r, i, c in day1]),
                       ignore_row_order=True, ignore_nullable=True)
    below = [("user", "u3"), ("item", "i2"), ("item", "i3"), ("item", "i4"), ("category", "c2"), ("shop", "s2"),
             ("brand", "b2"), ("gender", "M"), ("age_bucket", "25-34"), ("city", "lyon"), ("city", "paris")]
    assert_df_equality(pending1, spark.createDataFrame([(f, r, 1, D1) for f, r in below], VOCAB_PENDING),
                       ignore_row_order=True, ignore_nullable=True)

    # Day 2 starts from day 1's vocabulary (max user idx 3, item 2, ...). Cumulative counts: u3 1+1, u4 2 (tie:
    # u3 first); i2 1+1, i3 1+1, i5 2 (ties by id); c2 1+1 (via i2), s2 and b2 1+1 (via i3), 25-34 and both
    # cities 1+1 (via u3 and u1). u1, i3's c1, s1, F, 18-24 are known; u5 and i6 stay below 2; i4, M: not seen.
    additions2, pending2 = assign_indices(counts(spark, COUNTS2, D2), additions1, pending1, min_count=2)
    day2 = [("user", "u3", 4, D1), ("user", "u4", 5, D2), ("item", "i2", 3, D1), ("item", "i3", 4, D1),
            ("item", "i5", 5, D2), ("category", "c2", 3, D1), ("shop", "s2", 3, D1), ("brand", "b2", 3, D1),
            ("age_bucket", "25-34", 3, D1), ("city", "lyon", 2, D1), ("city", "paris", 3, D1)]
    assert_df_equality(additions2, vocab_rows(spark, [(f, r, i, 2, first, D2) for f, r, i, first in day2]),
                       ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(pending2, spark.createDataFrame([("user", "u5", 1, D2), ("item", "i6", 1, D2)], VOCAB_PENDING),
                       ignore_row_order=True, ignore_nullable=True)

    # Both days in one call give both days' rows: the range is numbered day by day.
    additions, pending = assign_indices(counts(spark, COUNTS1).unionByName(counts(spark, COUNTS2, D2)),
                                        empty(spark, VOCAB), empty(spark, VOCAB_PENDING), min_count=2)
    assert_df_equality(additions, additions1.unionByName(additions2), ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(pending, pending1.unionByName(pending2), ignore_row_order=True, ignore_nullable=True)


def test_ids_already_indexed_are_never_added_again_and_new_ones_continue_after_the_max(spark):
    # A vocabulary with a gap-free user field up to 7 and an item field up to 2: new ids start at max + 1.
    before = vocab_rows(spark, [("user", "u1", 7, 5, D1, D1), ("item", "i1", 2, 1, D1, D1)])
    day = counts(spark, [("user", "u1", 1), ("user", "u2", 2), ("item", "i1", 1), ("item", "i2", 1), ("item", "i7", 1)],
                 D2)
    additions, _ = assign_indices(day, before, empty(spark, VOCAB_PENDING), min_count=1)
    got = {(r.field, r.raw_id): r.idx for r in additions.collect()}
    assert got == {("user", "u2"): 8, ("item", "i2"): 3, ("item", "i7"): 4}


def test_lookup_maps_known_ids_and_unknown_or_null_ones_to_1(spark):
    vocab = vocab_rows(spark, [("user", "u1", 2, 3, D1, D1), ("user", "u2", 3, 2, D1, D1),
                               ("item", "u3", 2, 1, D1, D1)])  # u3 is an item id here, not a user id
    df = spark.createDataFrame([(1, "u1"), (2, "u2"), (3, "u3"), (4, "zz"), (5, None), (6, "u1")],
                               "row int, user_id string")
    expected = spark.createDataFrame([(1, "u1", 2), (2, "u2", 3), (3, "u3", 1), (4, "zz", 1), (5, None, 1),
                                      (6, "u1", 2)], "row int, user_id string, user_idx long")
    assert_df_equality(lookup(df, vocab, "user", "user_id", "user_idx"), expected, ignore_row_order=True,
                       ignore_nullable=True)


def test_an_index_is_unknown_before_the_day_it_was_assigned(spark):
    vocab = vocab_rows(spark, [("user", "u1", 2, 3, D1, D1), ("user", "u2", 3, 2, D1, D2)])
    df = spark.createDataFrame([("u1", D1), ("u2", D1), ("u2", D2), ("zz", D2)], "user_id string, ds date")
    looked = lookup(df, vocab, "user", "user_id", "user_idx", "user_from")
    got = {(r["user_id"], r["ds"]): r["idx"] for r in looked.select(
        "user_id", "ds", as_of(F.col("user_idx"), F.col("user_from"), F.unix_date("ds")).alias("idx")).collect()}
    assert got == {("u1", D1): 2, ("u2", D1): 1, ("u2", D2): 3, ("zz", D2): 1}
