"""Validate a range of days of ``raw/events``: clean events to ``features/events_clean``, bad rows to
``features/quarantine``.

    python -m jobs.validate_events --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD] [--config FILE] [--set k=v]
    spark-submit jobs/validate_events.py --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD]

Rules and reason codes: ``features.events``. The days are validated in one plan and each table is committed once;
a rerun replaces the range's clean partitions and the job's slice of the range's quarantine, so it gives the same
rows. Rewriting a day that later jobs have built on makes their days stale: the run says which and prints the
command that rebuilds them (``features.lineage``).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/validate_events.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import Field  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from features import jobkit, lineage  # noqa: E402
from features import tables as T  # noqa: E402
from features.events import CLEAN_COLUMNS, MAX_CLICK_WINDOW_SECONDS, clean_events  # noqa: E402


class ValidateConfig(jobkit.JobConfig):
    event_types: tuple[str, ...] = ("impression", "click")
    max_clock_skew_seconds: int = 300
    click_window_seconds: int = Field(default=1800, ge=0, le=MAX_CLICK_WINDOW_SECONDS)


CLEAN_CONSTRAINTS = {
    "ids_present": "event_id IS NOT NULL AND user_id IS NOT NULL AND item_id IS NOT NULL",
    "time_present": "event_time IS NOT NULL",
    "position_from_one": "position IS NULL OR position >= 1",
}


def body(spark, args: jobkit.JobArgs) -> jobkit.JobOutcome:
    lh, cfg, days = args.lakehouse, args.config, args.days()
    claim = jobkit.claim(args, spark, T.EVENTS_CLEAN)
    raw_version = jobkit.require_table(spark, lh, T.RAW_EVENTS, produced_by="the event import or generate_synthetic")
    inputs = {T.RAW_EVENTS: raw_version}
    raw = lh.read(spark, T.RAW_EVENTS, version=raw_version).where(F.col("ds").between(args.ds, args.last))
    previous = None
    if lh.exists(T.EVENTS_CLEAN):
        inputs[T.EVENTS_CLEAN] = lh.spark_version(spark, T.EVENTS_CLEAN)
        previous = lh.read(spark, T.EVENTS_CLEAN, version=inputs[T.EVENTS_CLEAN]).where(
            F.col("ds") == F.lit(args.ds - dt.timedelta(days=1)))
    result = clean_events(raw, now=dt.datetime.now(dt.UTC).replace(tzinfo=None), event_types=cfg.event_types,
                          max_clock_skew_seconds=cfg.max_clock_skew_seconds,
                          click_window_seconds=cfg.click_window_seconds, previous_impressions=previous)
    variants = result.variants.persist()
    try:
        # per day and reason: distinct rows and their copies (computed once: both writes read the cache)
        tally = variants.groupBy("ds", "reason").agg(
            F.count(F.lit(1)).alias("rows"), F.sum("copies").alias("copies"),
            F.bit_xor(F.xxhash64(*CLEAN_COLUMNS)).alias("fingerprint")).collect()
        clean_version = claim.write(args, spark, result.clean, T.EVENTS_CLEAN, mode="overwrite", replace_ds=days,
                                    partition_by=["ds"], constraints=CLEAN_CONSTRAINTS, optimize_write=True)
        # the columns of features.schemas.QUARANTINE; run_id names the job and the row's day (the same rows whatever
        # range quarantined them: features/runs holds that day's run under (job, ds))
        day_run = F.concat(F.lit(f"{args.job}/"), F.col("ds").cast("string"))
        quarantine = result.rejected.select("ds", F.lit(args.job).alias("job"), day_run.alias("run_id"), "reason",
                                            "event_id", "raw_row")
        q_version = lh.write(quarantine, T.QUARANTINE, mode="overwrite", replace_ds=days,
                             replace_match={"job": args.job}, partition_by=["ds"], optimize_write=True)
    finally:
        variants.unpersist()
    counts = _counts(spark, args, tally, raw_version, clean_version)
    return jobkit.JobOutcome(inputs=inputs, counts=counts,
                             outputs={T.EVENTS_CLEAN: clean_version, T.QUARANTINE: q_version})


def _counts(spark, args: jobkit.JobArgs, tally, raw_version: int, clean_version: int) -> dict[dt.date, dict[str, int]]:
    """Each day's counts from the plan, checked against the Delta log's row statistics: rows in (raw/events) =
    clean (as committed) + quarantined + duplicates dropped; and the fingerprint of its clean rows (an order-free
    hash: a rerun that gives the same rows makes no later day stale)."""
    lh = args.lakehouse
    raw_rows = lh.partition_rows(spark, T.RAW_EVENTS, version=raw_version)
    committed = lh.partition_rows(spark, T.EVENTS_CLEAN, version=clean_version)
    counts = {}
    for day in args.days():
        rows = [r for r in tally if r["ds"] == day]
        clean = sum(r["rows"] for r in rows if r["reason"] is None)
        per_reason = {r["reason"]: r["rows"] for r in rows if r["reason"] is not None}
        quarantined = sum(per_reason.values())
        duplicates = sum(r["copies"] - r["rows"] for r in rows)
        rows_in = sum(r["copies"] for r in rows)
        if committed.get(day, 0) != clean or raw_rows.get(day, rows_in) != rows_in:
            raise RuntimeError(f"invariant broken for {day}: rows in {raw_rows.get(day)} (raw/events) != clean "
                               f"{committed.get(day, 0)} (committed) + quarantined {quarantined} + duplicates dropped "
                               f"{duplicates}")
        fingerprint = next((r["fingerprint"] for r in rows if r["reason"] is None), 0)
        counts[day] = {"rows_in": rows_in, "clean": clean, "quarantined": quarantined,
                       "duplicates_dropped": duplicates, lineage.FINGERPRINT: fingerprint,
                       **{f"quarantined.{reason}": n for reason, n in sorted(per_reason.items())}}
    return counts


def main(argv: list[str] | None = None) -> int:
    return jobkit.run_job(jobkit.parse_job_args("validate_events", argv, ValidateConfig), body)


if __name__ == "__main__":
    sys.exit(main())
