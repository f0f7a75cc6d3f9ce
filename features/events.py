"""Validation of the raw event log: the clean events of a day, and every rejected row with its reason.

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
time_outside_partition      the UTC date of ``event_time`` is not the partition's ``ds``
future_time                 ``event_time`` later than ``now`` + the allowed clock skew
invalid_position            ``position`` < 1 (null is allowed: events outside a request)
conflicting_duplicate_id    another row has the same ``event_id`` and different content (all variants go)
orphan_click                a click with no valid impression of the same user and item: in the same
                            request when the click names one, else within the window before the click
==========================  ==========================================================================

Exact duplicates (every column equal) are dropped down to one row and counted. Invariant, checked by the job:
rows in = clean + quarantined + duplicates dropped.
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
    """``clean`` has the raw contract's columns; ``rejected`` has ``reason``, ``event_id``, ``raw_row`` (JSON)
    and ``copies``; ``variants`` is every distinct raw row with its number of ``copies`` and ``reason``."""

    clean: DataFrame
    rejected: DataFrame
    variants: DataFrame


def _blank(column: str) -> Column:
    return F.col(column).isNull() | (F.trim(F.col(column)) == "")


def clean_events(
    raw: DataFrame,
    *,
    ds: dt.date,
    now: dt.datetime,
    event_types: Sequence[str] = ("impression", "click"),
    max_clock_skew_seconds: int = 300,
    click_window_seconds: int = 1800,
    previous_impressions: DataFrame | None = None,
) -> Validated:
    """Split the raw events of partition ``ds`` into clean rows and rejected rows with a reason.

    ``now`` is naive UTC (the session time zone is UTC). ``previous_impressions`` (clean events of the day
    before, optional) lets a click just after midnight find its impression.
    """
    # Every copy of an event id in one task: the grouping by all columns (exact duplicates) and the window over
    # event_id (conflicting variants) need no shuffle of their own, since a hash partitioning on event_id
    # satisfies both.
    variants = (raw.select(*CLEAN_COLUMNS).repartition("event_id").groupBy(*CLEAN_COLUMNS)
                .agg(F.count(F.lit(1)).alias("copies")))
    variants = variants.withColumn("n_variants", F.count(F.lit(1)).over(Window.partitionBy("event_id")))

    row_reason = (
        F.when(_blank("event_id"), "missing_event_id")
        .when(_blank("user_id"), "missing_user_id")
        .when(_blank("item_id"), "missing_item_id")
        .when(F.col("event_type").isNull() | ~F.col("event_type").isin(list(event_types)), "unknown_event_type")
        .when(F.col("event_time").isNull(), "missing_event_time")
        .when(F.to_date("event_time") != F.lit(ds), "time_outside_partition")
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

    # Orphan clicks, as windows over one shuffle by user (the day's rows and the day before's impressions): a
    # click with a request needs a valid impression of the same user, item and request; one without, a valid
    # impression of the same user and item at most the window before it (same time included).
    valid_impression = (F.col("reason").isNull() & (F.col("event_type") == "impression")).cast("int")
    stream = stream.repartition("user_id")
    in_request = F.max(valid_impression).over(Window.partitionBy("user_id", "item_id", "request_id"))
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
        "reason",
        "event_id",
        F.to_json(F.struct(*CLEAN_COLUMNS), {"ignoreNullFields": "false"}).alias("raw_row"),
        "copies",
    )
    return Validated(clean=clean, rejected=rejected, variants=reasoned)
