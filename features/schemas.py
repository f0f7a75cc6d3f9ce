"""Spark StructTypes of the table contracts.

Raw tables are what arrives from logging, so every column of them is nullable here: a raw row with a missing
``user_id`` is data to quarantine, not a reason for a read to fail. Which columns a *valid* row must fill is
stated separately (:data:`RAW_EVENTS_NULLABLE` lists the only columns allowed to be null in a valid event).
Tests compare names and types; nullability is documentation.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

#: Event types of the raw log: an item shown in a request, and a click on a shown item.
EVENT_TYPES: tuple[str, ...] = ("impression", "click")


def _fields(*pairs: tuple[str, object]) -> StructType:
    return StructType([StructField(name, dtype, nullable=True) for name, dtype in pairs])  # type: ignore[arg-type]


#: ``raw/events``: one row per event, partitioned by ``ds``. ``event_id`` is the dedupe key (unique in clean
#: data); ``ds`` is the UTC date of ``event_time``; ``request_id`` groups the items shown together and
#: ``position`` is the 1-based slot of the item in its request (both null for events outside a request).
RAW_EVENTS = _fields(
    ("event_id", StringType()),
    ("user_id", StringType()),
    ("item_id", StringType()),
    ("event_type", StringType()),
    ("event_time", TimestampType()),
    ("request_id", StringType()),
    ("position", IntegerType()),
    ("ds", DateType()),
)

#: Columns of ``raw/events`` that may be null in a valid event; every other column must be filled.
RAW_EVENTS_NULLABLE: frozenset[str] = frozenset({"request_id", "position"})

#: ``raw/items``: the item catalogue (side table, not partitioned).
RAW_ITEMS = _fields(
    ("item_id", StringType()),
    ("category_id", StringType()),
    ("shop_id", StringType()),
    ("brand_id", StringType()),
)

#: ``raw/users``: user profiles (side table, not partitioned).
RAW_USERS = _fields(
    ("user_id", StringType()),
    ("gender", StringType()),
    ("age_bucket", StringType()),
    ("city", StringType()),
)

#: ``raw/click_truth`` (synthetic data only, for evaluation; no feature job reads it): one row per generated
#: impression with its true click probability under the generator's click model. ``event_id`` is the
#: impression's. Partitioned by ``ds``.
CLICK_TRUTH = _fields(
    ("event_id", StringType()),
    ("request_id", StringType()),
    ("user_id", StringType()),
    ("item_id", StringType()),
    ("position", IntegerType()),
    ("p_click", DoubleType()),
    ("ds", DateType()),
)

#: ``raw/planted_corruptions`` (synthetic data only): the bad rows the generator planted in ``raw/events``,
#: by ``event_id`` and ``kind`` (see ``features.synthetic.CORRUPTION_KINDS``). Partitioned by ``ds``.
PLANTED_CORRUPTIONS = _fields(
    ("event_id", StringType()),
    ("kind", StringType()),
    ("ds", DateType()),
)

# ---------------------------------------------------------------------------------------------- feature tables
#: ``features/runs``: one row per job run (appended, never rewritten). ``inputs``/``outputs`` map each table to
#: its Delta version; ``counts`` holds the job's row counts; ``error`` is set when ``status = 'failed'``.
FEATURE_RUNS = StructType(
    [
        StructField("run_id", StringType(), False),
        StructField("job", StringType(), False),
        StructField("ds", DateType(), False),
        StructField("status", StringType(), False),
        StructField("config", StringType(), False),
        StructField("inputs", MapType(StringType(), LongType()), False),
        StructField("outputs", MapType(StringType(), LongType()), False),
        StructField("counts", MapType(StringType(), LongType()), False),
        StructField("started_at", TimestampType(), False),
        StructField("seconds", DoubleType(), False),
        StructField("error", StringType(), True),
    ]
)

#: ``features/quarantine``: every rejected input row, partitioned by ``ds``; each job replaces its own slice
#: (ds, job) on a rerun. ``raw_row`` is the rejected row as JSON, so nothing of it is lost. ``run_id`` is
#: ``<job>/<ds>``: the rows are the same whatever range the job ran; the run that wrote them is the job's latest
#: succeeded row for that day in ``features/runs``.
QUARANTINE = StructType(
    [
        StructField("ds", DateType(), False),
        StructField("job", StringType(), False),
        StructField("run_id", StringType(), False),
        StructField("reason", StringType(), False),
        StructField("event_id", StringType(), True),
        StructField("raw_row", StringType(), False),
    ]
)


def _ids(prefix: str) -> list[StructField]:
    return [StructField(f"{prefix}_item_idx", ArrayType(LongType()), False),
            StructField(f"{prefix}_cate_idx", ArrayType(LongType()), False)]


#: ``features/samples``: one row per impression, partitioned by ``ds`` (``features.samples`` defines every
#: column). Sequence columns hold vocabulary indices right-padded with 0 to a fixed length (the table properties
#: ``ctr.samples.*``), each with its ``*_len``; ``neg_*`` and ``neg_is_sampled`` share ``hist_len``.
#: ``position`` is 0 when unknown.
SAMPLES = StructType(
    [
        StructField("sample_id", StringType(), False),
        StructField("event_time", TimestampType(), False),
        StructField("label", IntegerType(), False),
        StructField("position", IntegerType(), False),
        *(StructField(f"{name}_idx", LongType(), False) for name in (
            "item", "cate", "shop", "brand", "user", "gender", "age_bucket", "city")),
        *_ids("hist"),
        StructField("hist_len", IntegerType(), False),
        *_ids("neg"),
        StructField("neg_is_sampled", ArrayType(IntegerType()), False),
        *_ids("ctx"),
        StructField("ctx_len", IntegerType(), False),
        *_ids("clk"),
        StructField("clk_len", IntegerType(), False),
        *_ids("unclk"),
        StructField("unclk_len", IntegerType(), False),
        StructField("ds", DateType(), False),
    ]
)
