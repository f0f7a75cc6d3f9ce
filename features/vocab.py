"""The append-only vocabulary: raw id -> embedding index per field, assigned in day order (pure transforms).

Index 0 is padding and 1 is unknown; real ids get ``idx >= 2``, dense per field. An id keeps its index forever.
Each processed day D adds, per field, the ids whose *cumulative* count over the days processed so far reaches
``min_count`` on D, numbered from ``max(idx of the field) + 1`` in the order (count desc, raw_id asc).

Fields and what counts on a day (the day's clean events, one row per event)::

    user, item                   each event of the user / of the item
    category, shop, brand        each event of an item, through raw/items (an item missing there: no row)
    gender, age_bucket, city     each distinct user seen that day, through raw/users (user-days)

Tables (the job ``jobs/build_vocab.py`` reads and writes them; this module does no IO):

* ``features/vocab`` (:data:`VOCAB`, partitioned by ``ds``): one row per indexed id. ``ds`` is the day the index
  was assigned, ``first_seen_ds`` the first day the id was counted (earlier than ``ds`` when it waited for
  ``min_count``), ``count`` its cumulative count on ``ds``. A day's run replaces only its own ``ds`` partition.
* ``features/vocab_pending`` (:data:`VOCAB_PENDING`, partitioned by ``ds``): the state behind ``min_count``:
  for each day D, the day-D count of every id seen on D that still has no index at the end of D. An id's
  cumulative count on D is its day-D count plus its pending rows of earlier days (it had no index on each of
  them, so each of its counts was logged). Rows of ids indexed later are ignored (they stay, as history).
* ``features/vocab_days`` (:data:`VOCAB_DAYS`): one row per processed day, written last, so days that add no
  id are known to be processed too.

Day D is computed only from the partitions of days before D. So a rerun of the latest day gives the same rows,
and a rerun after its inputs changed recomputes its additions from the vocabulary as it was before that day. A
day earlier than the latest processed one is refused (:func:`check_day_order`): its indices are already the
base of later days.

Example (min_count 2, field user). Day 1 events of u1, u1, u2, u3, u3: u1 and u3 (count 2) get 2 and 3 (count
tie: raw_id order); u2 (1 < 2) is pending and maps to 1. Day 2 events of u2, u4: u2's cumulative count is 2 -> 4;
u4 is pending.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, IntegerType, LongType, StringType, StructField, StructType

from features.jobkit import JobConfig, JobInputError

VOCAB_TABLE = "features/vocab"
PENDING_TABLE = "features/vocab_pending"
DAYS_TABLE = "features/vocab_days"

PADDING_IDX = 0
UNKNOWN_IDX = 1
FIRST_IDX = 2

#: field -> the column it comes from: the events' ids, raw/items' columns, raw/users' columns.
ID_FIELDS: dict[str, str] = {"user": "user_id", "item": "item_id"}
ITEM_FIELDS: dict[str, str] = {"category": "category_id", "shop": "shop_id", "brand": "brand_id"}
USER_FIELDS: dict[str, str] = {"gender": "gender", "age_bucket": "age_bucket", "city": "city"}
FIELDS: tuple[str, ...] = (*ID_FIELDS, *ITEM_FIELDS, *USER_FIELDS)

#: ``features/vocab``; ``ds`` = the day the index was assigned (the partition a run of that day replaces).
VOCAB = StructType(
    [
        StructField("field", StringType(), False),
        StructField("raw_id", StringType(), False),
        StructField("idx", LongType(), False),
        StructField("count", LongType(), False),
        StructField("first_seen_ds", DateType(), False),
        StructField("ds", DateType(), False),
    ]
)
#: ``features/vocab_pending``: day-``ds`` counts of the ids still without an index at the end of ``ds``.
VOCAB_PENDING = StructType(
    [
        StructField("field", StringType(), False),
        StructField("raw_id", StringType(), False),
        StructField("count", LongType(), False),
        StructField("ds", DateType(), False),
    ]
)
#: ``features/vocab_days``: one row per processed day.
VOCAB_DAYS = StructType(
    [
        StructField("ds", DateType(), False),
        StructField("min_count", IntegerType(), False),
        StructField("new_ids", LongType(), False),
        StructField("pending_ids", LongType(), False),
    ]
)
#: Delta CHECK constraint of ``features/vocab`` (one: each costs a commit when the table is created): padding
#: and unknown are never given to an id, counts are positive, an id is seen before (or when) it is indexed.
VOCAB_CONSTRAINTS = {"valid_vocab_row": f"idx >= {FIRST_IDX} AND count >= 1 AND first_seen_ds <= ds"}


class VocabConfig(JobConfig):
    """``min_count``: an id gets an index on the day its cumulative count reaches it (until then: unknown, 1)."""

    min_count: int = Field(default=1, ge=1)


def conform(df: DataFrame, schema: StructType) -> DataFrame:
    """``df``'s columns in ``schema``'s order, cast to its types (computed columns come out int or long)."""
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def day_counts(events: DataFrame, items: DataFrame, users: DataFrame) -> DataFrame:
    """The day's count per (field, raw_id): columns ``field, raw_id, count`` (null ids dropped).

    ``events``: one day of ``features/events_clean`` (user_id, item_id); ``items``/``users``: raw/items, raw/users.
    """
    one = F.count(F.lit(1)).alias("count")
    per_item = events.groupBy("item_id").agg(one)
    per_user = events.groupBy("user_id").agg(one)
    item_side = per_item.join(items.select("item_id", *ITEM_FIELDS.values()), on="item_id", how="inner").select(
        "count", *(F.col(col).alias(name) for name, col in ITEM_FIELDS.items())
    )
    user_side = per_user.join(users.select("user_id", *USER_FIELDS.values()), on="user_id", how="inner").select(
        F.lit(1).cast(LongType()).alias("count"), *(F.col(col).alias(name) for name, col in USER_FIELDS.items())
    )
    side = (
        item_side.unpivot("count", list(ITEM_FIELDS), "field", "raw_id")
        .unionByName(user_side.unpivot("count", list(USER_FIELDS), "field", "raw_id"))
        .where(F.col("raw_id").isNotNull())
        .groupBy("field", "raw_id")
        .agg(F.sum("count").alias("count"))
    )
    ids = per_user.select(F.lit("user").alias("field"), F.col("user_id").alias("raw_id"), "count").unionByName(
        per_item.select(F.lit("item").alias("field"), F.col("item_id").alias("raw_id"), "count")
    )
    return ids.where(F.col("raw_id").isNotNull()).unionByName(side.select("field", "raw_id", "count"))


def assign_indices(
    counts: DataFrame, vocab_before: DataFrame, pending_before: DataFrame, *, ds: dt.date, min_count: int
) -> tuple[DataFrame, DataFrame]:
    """One day's additions to the vocabulary and its pending rows: ``(additions, pending)``.

    ``counts``: :func:`day_counts` of day ``ds``; ``vocab_before``/``pending_before``: the rows of
    ``features/vocab``/``features/vocab_pending`` of the days before ``ds`` only. ``additions`` has the columns
    of :data:`VOCAB` (``ds`` = ``ds``), ``pending`` those of :data:`VOCAB_PENDING`.
    """
    key = ["field", "raw_id"]
    day = F.lit(ds).cast(DateType())
    unindexed = counts.join(vocab_before.select(*key), on=key, how="left_anti")
    earlier = pending_before.groupBy(*key).agg(
        F.sum("count").alias("earlier_count"), F.min("ds").alias("earlier_first_ds")
    )
    candidates = unindexed.join(earlier, on=key, how="left").select(
        *key,
        F.col("count").alias("day_count"),
        (F.col("count") + F.coalesce(F.col("earlier_count"), F.lit(0))).alias("total"),
        F.coalesce(F.col("earlier_first_ds"), day).alias("first_seen_ds"),
    )
    reached = candidates.where(F.col("total") >= F.lit(min_count))
    base = vocab_before.groupBy("field").agg(F.max("idx").alias("base"))
    order = (
        Window.partitionBy("field")
        .orderBy(F.col("total").desc(), F.col("raw_id").asc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    additions = reached.join(base, on="field", how="left").select(
        *key,
        (F.coalesce(F.col("base"), F.lit(UNKNOWN_IDX)) + F.row_number().over(order)).alias("idx"),
        F.col("total").alias("count"),
        "first_seen_ds",
        day.alias("ds"),
    )
    pending = candidates.where(F.col("total") < F.lit(min_count)).select(
        *key, F.col("day_count").alias("count"), day.alias("ds")
    )
    return conform(additions, VOCAB), conform(pending, VOCAB_PENDING)


def processed_days(vocab: DataFrame, pending: DataFrame, days: DataFrame) -> DataFrame:
    """The latest ``ds`` per kind, for :func:`check_day_order`: columns ``kind`` ('recorded' from
    ``features/vocab_days``, 'written' from ``features/vocab`` and ``features/vocab_pending``) and ``ds``."""

    def tag(df: DataFrame, kind: str) -> DataFrame:
        return df.select(F.lit(kind).alias("kind"), F.col("ds"))

    stacked = tag(vocab, "written").unionByName(tag(pending, "written")).unionByName(tag(days, "recorded"))
    return stacked.groupBy("kind").agg(F.max("ds").alias("ds"))


def check_day_order(ds: dt.date, *, last_recorded: dt.date | None, last_written: dt.date | None) -> None:
    """Refuse a day the vocabulary cannot take now (JobInputError); the latest processed day may be rerun.

    ``last_recorded``: the latest day in ``features/vocab_days`` (days that finished); ``last_written``: the
    latest ``ds`` partition in ``features/vocab`` or ``features/vocab_pending`` (a run that died before its day
    record leaves these).
    """
    latest = max((d for d in (last_recorded, last_written) if d is not None), default=None)
    if latest is None or ds == latest:
        return
    if ds < latest:
        raise JobInputError(
            f"build_vocab assigns indices in day order and has already processed {latest}; {ds} is earlier. "
            f"Only the latest day ({latest}) can be rerun: later days' indices were built on top of {ds}'s."
        )
    if last_recorded is None or last_recorded < latest:
        raise JobInputError(
            f"build_vocab for {latest} did not finish (its rows are written but not its day record in "
            f"{DAYS_TABLE}); rerun --ds {latest} before {ds}"
        )


def lookup(df: DataFrame, vocab: DataFrame, field: str, raw_col: str, idx_col: str) -> DataFrame:
    """``df`` with ``idx_col`` (long): the index of ``df[raw_col]`` in ``field``; unknown or null ids -> 1.

    A left join (no broadcast hint), so every row of ``df`` is kept exactly once (a vocab has one row per
    (field, raw_id)). ``vocab``: ``features/vocab`` (any version).
    """
    raw_tmp, idx_tmp = f"__vocab_raw_{idx_col}", f"__vocab_idx_{idx_col}"
    table = vocab.where(F.col("field") == F.lit(field)).select(
        F.col("raw_id").alias(raw_tmp), F.col("idx").alias(idx_tmp)
    )
    joined = df.join(table, on=df[raw_col] == table[raw_tmp], how="left")
    return joined.withColumn(idx_col, F.coalesce(F.col(idx_tmp), F.lit(UNKNOWN_IDX).cast(LongType()))).drop(
        raw_tmp, idx_tmp
    )
