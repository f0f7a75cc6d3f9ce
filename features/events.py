"""Validation of the raw event log: the clean events of a range of days, and every rejected row with its reason.

Pure transforms: DataFrames in, DataFrames out; the clock (``now``) is an argument, never read here.

Rules, checked in this order (a row is quarantined with the first reason that applies):

==========================  ==========================================================================
reason                      rule
==========================  ==========================================================================
missing_event_id            ``event_id`` null or blank
missing_user_id             ``user_id`` null or blank
missing_item_id             ``item_id`` null or blank
unknown_event_type          ``event_type`` null or not one of the configured types
missing_event_time          ``event_time`` null
time_outside_partition      the UTC date of ``event_time`` is not the row's partition ``ds``
future_time                 ``event_time`` later than ``now`` + the allowed clock skew
invalid_position            ``position`` < 1 (null is allowed: events outside a request)
conflicting_duplicate_id    another row has the same ``event_id`` and different content (all variants go)
orphan_click                a click with no valid impression of the same user and item (of its day or the day
                            before): in the same request when the click names one, else within the window
                            before the click
==========================  ==========================================================================

Duplicates are judged within a day: exact duplicates (every column equal) are dropped down to one row and
counted; variants of one ``event_id`` with other content are all quarantined. Invariant, checked by the job per
day: rows in = clean + quarantined + duplicates dropped.

Each day's result depends only on its own rows and the valid impressions of the day before, so a range gives the
rows of one run per day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, Window
from pyspark.sql import functions as F

from features.schemas import RAW_EVENTS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

CLEAN_COLUMNS = [field.name for field in RAW_EVENTS.fields]
REASONS = (
    "missing_event_id",
    "missing_user_id",
    "missing_item_id",
    "unknown_event_type",
    "missing_event_time",
    "time_outside_partition",
    "future_time",
    "invalid_position",
    "conflicting_duplicate_id",
    "orphan_click",
)


@dataclass(frozen=True)
class Validated:
    """``clean`` has the raw contract's columns; ``rejected`` has ``ds``, ``reason``, ``event_id``, ``raw_row``
    (JSON) and ``copies``; ``variants`` is every distinct raw row with its number of ``copies`` and ``reason``."""

    clean: DataFrame
    rejected: DataFrame
    variants: DataFrame


def _blank(column: str) -> Column:
    return F.col(column).isNull() | (F.trim(F.col(column)) == "")


#: the longest click window: a click may only match an impression of its own day or the day before
MAX_CLICK_WINDOW_SECONDS = 86_400


def clean_events(
    raw: DataFrame,
    *,
    now: dt.datetime,
    event_types: Sequence[str] = ("impression", "click"),
    max_clock_skew_seconds: int = 300,
    click_window_seconds: int = 1800,
    previous_impressions: DataFrame | None = None,
) -> Validated:
    """Split the raw events of a range of ``ds`` partitions into clean rows and rejected rows with a reason.

    ``now`` is naive UTC (the session time zone is UTC). ``previous_impressions`` (clean events of the day
    before the range, optional) lets a click just after midnight find its impression; inside the range, the
    range's own valid impressions serve.
    """
    if not 0 <= click_window_seconds <= MAX_CLICK_WINDOW_SECONDS:
        raise ValueError(f"click_window_seconds must be between 0 and {MAX_CLICK_WINDOW_SECONDS} (a click is "
                         f"matched with impressions of its own day and the day before), got {click_window_seconds}")
    # Every copy of an event id in one task: the grouping by all columns (exact duplicates) and the window over
    # (ds, event_id) (conflicting variants) need no shuffle of their own, since a hash partitioning on event_id
    # satisfies both.
    variants = (raw.select(*CLEAN_COLUMNS).repartition("event_id").groupBy(*CLEAN_COLUMNS)
                .agg(F.count(F.lit(1)).alias("copies")))
    variants = variants.withColumn("n_variants", F.count(F.lit(1)).over(Window.partitionBy("event_id", "ds")))

    row_reason = (
        F.when(_blank("event_id"), "missing_event_id")
        .when(_blank("user_id"), "missing_user_id")
        .when(_blank("item_id"), "missing_item_id")
        .when(F.col("event_type").isNull() | ~F.col("event_type").isin(list(event_types)), "unknown_event_type")
        .when(F.col("event_time").isNull(), "missing_event_time")
        .when(F.to_date("event_time") != F.col("ds"), "time_outside_partition")
        .when(F.col("event_time") > F.lit(now + dt.timedelta(seconds=max_clock_skew_seconds)), "future_time")
        .when(F.col("position") < 1, "invalid_position")
        .when(F.col("n_variants") > 1, "conflicting_duplicate_id")
    )
    stream = variants.withColumn("reason", row_reason).withColumn("_today", F.lit(True))
    if previous_impressions is not None:
        stream = stream.unionByName(
            previous_impressions.where(F.col("event_type") == "impression").select(
                *CLEAN_COLUMNS, F.lit(False).alias("_today")),
            allowMissingColumns=True,
        )

    # Orphan clicks, as windows over one shuffle by user (the range's rows and the day before's impressions): a
    # click with a request needs a valid impression of the same user, item and request of its day or the day
    # before; one without, a valid impression of the same user and item at most the window before it (same time
    # included; the window is at most a day).
    valid_impression = (F.col("reason").isNull() & (F.col("event_type") == "impression")).cast("int")
    stream = stream.repartition("user_id")
    in_request = F.max(valid_impression).over(Window.partitionBy("user_id", "item_id", "request_id").orderBy(
        F.unix_date("ds")).rangeBetween(-1, 0))
    in_window = F.max(valid_impression).over(
        Window.partitionBy("user_id", "item_id").orderBy(F.unix_micros("event_time"))
        .rangeBetween(-int(click_window_seconds) * 1_000_000, 0))
    matched = F.when(F.col("request_id").isNotNull(), in_request).otherwise(in_window) == 1
    reasoned = stream.select(
        *CLEAN_COLUMNS, "copies", "_today",
        F.when(F.col("reason").isNotNull(), F.col("reason"))
        .when((F.col("event_type") == "click") & ~F.coalesce(matched, F.lit(False)), F.lit("orphan_click"))
        .alias("reason"),
    ).where(F.col("_today")).drop("_today")

    clean = reasoned.where(F.col("reason").isNull()).select(*CLEAN_COLUMNS)
    rejected = reasoned.where(F.col("reason").isNotNull()).select(
        "ds",
        "reason",
        "event_id",
        F.to_json(F.struct(*CLEAN_COLUMNS), {"ignoreNullFields": "false"}).alias("raw_row"),
        "copies",
    )
    return Validated(clean=clean, rejected=rejected, variants=reasoned)
