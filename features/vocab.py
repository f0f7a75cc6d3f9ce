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
  ``min_count``), ``count`` its cumulative count on ``ds``.
* ``features/vocab_pending`` (:data:`VOCAB_PENDING`, partitioned by ``ds``): the state behind ``min_count``:
  for each day D, the day-D count of every id seen on D that still has no index at the end of D. An id's
  cumulative count on D is its day-D count plus its pending rows of earlier days (it had no index on each of
  them, so each of its counts was logged). Rows of ids indexed later are ignored (they stay, as history).
* ``features/vocab_days`` (:data:`VOCAB_DAYS`): one row per processed day.

A range of days D..E is computed in one plan from the partitions of the days before D and the range's counts
(:func:`assign_indices`): every day of it gets the rows one run per day would give, since day-order numbering is
the order (day, count desc, raw_id asc) over the range. A run replaces the partitions of its days; the days after
them were built on those, so a run from an earlier day must go on to the latest processed one
(:func:`features.lineage.check_range`).

Example (min_count 2, field user). Day 1 events of u1, u1, u2, u3, u3: u1 and u3 (count 2) get 2 and 3 (count
tie: raw_id order); u2 (1 < 2) is pending and maps to 1. Day 2 events of u2, u4: u2's cumulative count is 2 -> 4;
u4 is pending.
"""

from __future__ import annotations

from pydantic import Field
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, IntegerType, LongType, StringType, StructField, StructType

from features import tables
from features.jobkit import JobConfig

VOCAB_TABLE = tables.VOCAB
PENDING_TABLE = tables.VOCAB_PENDING
DAYS_TABLE = tables.VOCAB_DAYS

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
    """Each day's count per (field, raw_id): columns ``field, raw_id, count, ds`` (null ids dropped).

    ``events``: ``features/events_clean`` rows of the days (user_id, item_id, ds); ``items``/``users``: raw/items,
    raw/users.
    """
    one = F.count(F.lit(1)).alias("count")
    per_item = events.groupBy("ds", "item_id").agg(one)
    per_user = events.groupBy("ds", "user_id").agg(one)
    item_side = per_item.join(items.select("item_id", *ITEM_FIELDS.values()), on="item_id", how="inner").select(
        "ds", "count", *(F.col(col).alias(name) for name, col in ITEM_FIELDS.items())
    )
    user_side = per_user.join(users.select("user_id", *USER_FIELDS.values()), on="user_id", how="inner").select(
        "ds", F.lit(1).cast(LongType()).alias("count"), *(F.col(col).alias(name) for name, col in USER_FIELDS.items())
    )
    side = (
        item_side.unpivot(["ds", "count"], list(ITEM_FIELDS), "field", "raw_id")
        .unionByName(user_side.unpivot(["ds", "count"], list(USER_FIELDS), "field", "raw_id"))
        .where(F.col("raw_id").isNotNull())
        .groupBy("field", "raw_id", "ds")
        .agg(F.sum("count").alias("count"))
    )
    ids = per_user.select(F.lit("user").alias("field"), F.col("user_id").alias("raw_id"), "count", "ds").unionByName(
        per_item.select(F.lit("item").alias("field"), F.col("item_id").alias("raw_id"), "count", "ds")
    )
    return ids.where(F.col("raw_id").isNotNull()).unionByName(side.select("field", "raw_id", "count", "ds"))


def assign_indices(
    counts: DataFrame, vocab_before: DataFrame, pending_before: DataFrame, *, min_count: int
) -> tuple[DataFrame, DataFrame]:
    """The range's additions to the vocabulary and its pending rows: ``(additions, pending)``.

    ``counts``: :func:`day_counts` of the days of the range; ``vocab_before``/``pending_before``: the rows of
    ``features/vocab``/``features/vocab_pending`` of the days before the range only. ``additions`` has the columns
    of :data:`VOCAB` (``ds``: the day the index is assigned), ``pending`` those of :data:`VOCAB_PENDING`.

    An id's cumulative count on day d is its pending counts before the range plus its counts of the range up to d;
    it is indexed on the first day that reaches ``min_count``, and pending on the days of the range before that.
    Indices continue each field's maximum in the order (day, count desc, raw_id asc): day by day, as one run per
    day numbers them.
    """
    key = ["field", "raw_id"]
    unindexed = counts.join(vocab_before.select(*key), on=key, how="left_anti")
    earlier = pending_before.groupBy(*key).agg(
        F.sum("count").alias("earlier_count"), F.min("ds").alias("earlier_first_ds")
    )
    per_id = Window.partitionBy(*key)
    running = per_id.orderBy("ds").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    candidates = unindexed.join(earlier, on=key, how="left").select(
        *key,
        "ds",
        F.col("count").alias("day_count"),
        (F.sum("count").over(running) + F.coalesce(F.col("earlier_count"), F.lit(0))).alias("total"),
        F.coalesce(F.col("earlier_first_ds"), F.min("ds").over(per_id)).alias("first_seen_ds"),
    )
    candidates = candidates.withColumn(
        "indexed_on", F.min(F.when(F.col("total") >= F.lit(min_count), F.col("ds"))).over(per_id))
    reached = candidates.where(F.col("ds") == F.col("indexed_on"))
    base = vocab_before.groupBy("field").agg(F.max("idx").alias("base"))
    order = (
        Window.partitionBy("field")
        .orderBy(F.col("ds").asc(), F.col("total").desc(), F.col("raw_id").asc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    additions = reached.join(base, on="field", how="left").select(
        *key,
        (F.coalesce(F.col("base"), F.lit(UNKNOWN_IDX)) + F.row_number().over(order)).alias("idx"),
        F.col("total").alias("count"),
        "first_seen_ds",
        "ds",
    )
    pending = candidates.where(F.col("indexed_on").isNull() | (F.col("ds") < F.col("indexed_on"))).select(
        *key, F.col("day_count").alias("count"), "ds"
    )
    return conform(additions, VOCAB), conform(pending, VOCAB_PENDING)


def lookup(df: DataFrame, vocab: DataFrame, field: str, raw_col: str, idx_col: str,
           from_col: str | None = None) -> DataFrame:
    """``df`` with ``idx_col`` (long): the index of ``df[raw_col]`` in ``field``; unknown or null ids -> 1.

    ``from_col`` (optional) adds the day the index was assigned, as days since 1970-01-01 (int; null for an unknown
    id): a frame that spans several days resolves the index as of each day with :func:`as_of`.

    A left join (no broadcast hint), so every row of ``df`` is kept exactly once (a vocab has one row per
    (field, raw_id)). ``vocab``: ``features/vocab`` (any version).
    """
    raw_tmp, idx_tmp, from_tmp = f"__vocab_raw_{idx_col}", f"__vocab_idx_{idx_col}", f"__vocab_from_{idx_col}"
    table = vocab.where(F.col("field") == F.lit(field)).select(
        F.col("raw_id").alias(raw_tmp), F.col("idx").alias(idx_tmp), F.unix_date("ds").alias(from_tmp)
    )
    joined = df.join(table, on=df[raw_col] == table[raw_tmp], how="left")
    joined = joined.withColumn(idx_col, F.coalesce(F.col(idx_tmp), F.lit(UNKNOWN_IDX).cast(LongType())))
    if from_col is not None:
        joined = joined.withColumn(from_col, F.col(from_tmp))
    return joined.drop(raw_tmp, idx_tmp, from_tmp)


def as_of(idx: Column, assigned: Column, day: Column) -> Column:
    """The index ``idx`` as a run for ``day`` (days since 1970-01-01) sees it: ``idx`` when it was assigned on or
    before that day (``assigned``, from :func:`lookup`'s ``from_col``), else 1 (unknown)."""
    return F.when(assigned <= day, idx).otherwise(F.lit(UNKNOWN_IDX).cast(LongType()))
