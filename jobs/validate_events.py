"""Validate one day of ``raw/events``: clean events to ``features/events_clean``, bad rows to ``features/quarantine``.

    python -m jobs.validate_events --lakehouse DIR --ds YYYY-MM-DD [--config FILE] [--set key=value]
    spark-submit jobs/validate_events.py --lakehouse DIR --ds YYYY-MM-DD

Rules and reason codes: ``features.events``. A rerun replaces the day's clean partition and the job's slice of
the day's quarantine, so it gives the same rows.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/validate_events.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from features import jobkit  # noqa: E402
from features.events import clean_events  # noqa: E402


class ValidateConfig(jobkit.JobConfig):
    event_types: tuple[str, ...] = ("impression", "click")
    max_clock_skew_seconds: int = 300
    click_window_seconds: int = 1800


def body(spark, args: jobkit.JobArgs) -> jobkit.JobOutcome:
    lh, ds, cfg = args.lakehouse, args.ds, args.config
    raw_version = jobkit.require_table(spark, lh, "raw/events", produced_by="the event import or generate_synthetic")
    raw = lh.read(spark, "raw/events", version=raw_version).where(F.col("ds") == F.lit(ds))
    previous = None
    if lh.exists("features/events_clean"):
        previous = lh.read(spark, "features/events_clean").where(F.col("ds") == F.lit(ds - dt.timedelta(days=1)))
    result = clean_events(raw, ds=ds, now=dt.datetime.now(dt.UTC).replace(tzinfo=None), event_types=cfg.event_types,
                          max_clock_skew_seconds=cfg.max_clock_skew_seconds,
                          click_window_seconds=cfg.click_window_seconds, previous_impressions=previous)
    variants = result.variants.persist()
    try:
        # counted first: this materialises the cache, which both writes then read. (After the clean write, Delta
        # re-caches every frame that reads events_clean, as this one does for the day before: counting then would
        # compute the validation a third time.)
        duplicates = variants.agg(F.coalesce(F.sum(F.col("copies") - 1), F.lit(0))).first()[0]
        # the columns of features.schemas.QUARANTINE
        quarantine = result.rejected.select(F.lit(ds).alias("ds"), F.lit(args.job).alias("job"),
                                            F.lit(args.run_id).alias("run_id"), "reason", "event_id", "raw_row")
        q_version = lh.write(quarantine, "features/quarantine",
                             mode="overwrite", replace_ds=[ds], replace_match={"job": args.job}, partition_by=["ds"])
        clean_version = lh.write(result.clean, "features/events_clean", mode="overwrite", replace_ds=[ds],
                                 partition_by=["ds"], constraints=CLEAN_CONSTRAINTS)
        counts = _counts(spark, args, raw, duplicates, clean_version, q_version)
    finally:
        variants.unpersist()
    return jobkit.JobOutcome(inputs={"raw/events": raw_version}, counts=counts,
                             outputs={"features/events_clean": clean_version, "features/quarantine": q_version})


CLEAN_CONSTRAINTS = {
    "ids_present": "event_id IS NOT NULL AND user_id IS NOT NULL AND item_id IS NOT NULL",
    "time_present": "event_time IS NOT NULL",
    "position_from_one": "position IS NULL OR position >= 1",
}


def _counts(spark, args, raw, duplicates: int, clean_version: int, q_version: int) -> dict[str, int]:
    """Counts read back from the written tables, and the invariant rows in = clean + quarantined + duplicates."""
    lh, ds = args.lakehouse, args.ds
    rows_in = raw.count()
    clean = lh.read(spark, "features/events_clean", version=clean_version).where(F.col("ds") == F.lit(ds)).count()
    slice_ = lh.read(spark, "features/quarantine", version=q_version).where(
        (F.col("ds") == F.lit(ds)) & (F.col("job") == args.job))
    per_reason = {row["reason"]: row["count"] for row in slice_.groupBy("reason").count().collect()}
    quarantined = sum(per_reason.values())
    if rows_in != clean + quarantined + duplicates:
        raise RuntimeError(f"invariant broken for {ds}: rows in {rows_in} != clean {clean} + quarantined "
                           f"{quarantined} + duplicates dropped {duplicates}")
    return {"rows_in": rows_in, "clean": clean, "quarantined": quarantined, "duplicates_dropped": duplicates,
            **{f"quarantined.{reason}": n for reason, n in sorted(per_reason.items())}}


def main(argv: list[str] | None = None) -> int:
    return jobkit.run_job(jobkit.parse_job_args("validate_events", argv, ValidateConfig), body)


if __name__ == "__main__":
    sys.exit(main())
