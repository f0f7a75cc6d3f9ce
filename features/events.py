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
    variants = raw.select(*CLEAN_COLUMNS).groupBy(*CLEAN_COLUMNS).agg(F.count(F.lit(1)).alias("copies"))
    by_event_id = Window.partitionBy("event_id").rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    variants = variants.withColumn("n_variants", F.count(F.lit(1)).over(by_event_id))

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
    reasoned = variants.withColumn("reason", row_reason)

    impressions = reasoned.where(F.col("reason").isNull() & (F.col("event_type") == "impression")).select(
        "user_id", "item_id", "request_id", "event_time"
    )
    if previous_impressions is not None:
        impressions = impressions.unionByName(
            previous_impressions.where(F.col("event_type") == "impression").select(
                "user_id", "item_id", "request_id", "event_time"
            )
        )
    clicks = reasoned.where(F.col("reason").isNull() & (F.col("event_type") == "click")).select(
        "event_id", "user_id", "item_id", "request_id", "event_time"
    )
    i = impressions.alias("i")
    c = clicks.alias("c")
    in_request = F.col("c.request_id").isNotNull() & (F.col("i.request_id") == F.col("c.request_id"))
    in_window = F.col("c.request_id").isNull() & F.col("i.event_time").between(
        F.col("c.event_time") - F.expr(f"INTERVAL {int(click_window_seconds)} SECONDS"), F.col("c.event_time")
    )
    matched = (
        c.join(
            i,
            on=(F.col("c.user_id") == F.col("i.user_id")) & (F.col("c.item_id") == F.col("i.item_id"))
            & (in_request | in_window),
            how="left_semi",
        )
        .select(F.col("event_id").alias("matched_click_id"))
    )
    reasoned = reasoned.join(matched, on=F.col("event_id") == F.col("matched_click_id"), how="left").select(
        *CLEAN_COLUMNS,
        "copies",
        F.when(F.col("reason").isNotNull(), F.col("reason"))
        .when((F.col("event_type") == "click") & F.col("matched_click_id").isNull(), F.lit("orphan_click"))
        .alias("reason"),
    )

    clean = reasoned.where(F.col("reason").isNull()).select(*CLEAN_COLUMNS)
    rejected = reasoned.where(F.col("reason").isNotNull()).select(
        "reason",
        "event_id",
        F.to_json(F.struct(*CLEAN_COLUMNS), {"ignoreNullFields": "false"}).alias("raw_row"),
        "copies",
    )
    return Validated(clean=clean, rejected=rejected, variants=reasoned)
