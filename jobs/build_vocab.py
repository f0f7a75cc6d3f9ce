"""Add one day to the append-only vocabulary ``features/vocab`` (raw id -> index per field; see ``features.vocab``).

    python -m jobs.build_vocab --lakehouse DIR --ds YYYY-MM-DD [--config FILE] [--set min_count=2]
    spark-submit jobs/build_vocab.py --lakehouse DIR --ds YYYY-MM-DD

Days run in order; the latest processed day may be rerun (it replaces its own additions, computed from the days
before it). Writes ``features/vocab_pending``, ``features/vocab`` and, last, ``features/vocab_days``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/build_vocab.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from features import jobkit  # noqa: E402
from features import vocab as V  # noqa: E402

INPUTS = {"features/events_clean": "validate_events", "raw/items": "the catalogue import or generate_synthetic",
          "raw/users": "the profile import or generate_synthetic"}
STATE = {V.VOCAB_TABLE: V.VOCAB, V.PENDING_TABLE: V.VOCAB_PENDING, V.DAYS_TABLE: V.VOCAB_DAYS}


def body(spark, args: jobkit.JobArgs) -> jobkit.JobOutcome:
    lh, ds, cfg = args.lakehouse, args.ds, args.config
    inputs = {t: jobkit.require_table(spark, lh, t, produced_by=p) for t, p in INPUTS.items()}
    inputs |= {t: lh.spark_version(spark, t) for t in STATE if lh.exists(t)}  # the vocabulary so far, pinned
    vocab, pending, days = (lh.read(spark, t, version=inputs[t]) if t in inputs else spark.createDataFrame([], s)
                            for t, s in STATE.items())
    last = {r["kind"]: r["ds"] for r in V.processed_days(vocab, pending, days).collect()}
    V.check_day_order(ds, last_recorded=last.get("recorded"), last_written=last.get("written"))

    events, items, users = (lh.read(spark, t, version=inputs[t]) for t in INPUTS)
    day, before = F.col("ds") == F.lit(ds), F.col("ds") < F.lit(ds)
    events = events.where(day)
    counts = V.day_counts(events, items, users).persist()  # read by both writes below
    try:
        additions, pending_day = V.assign_indices(counts, vocab.where(before), pending.where(before), ds=ds,
                                                  min_count=cfg.min_count)
        out = {V.PENDING_TABLE: lh.write(pending_day, V.PENDING_TABLE, mode="overwrite", replace_ds=[ds],
                                         partition_by=["ds"]),
               V.VOCAB_TABLE: lh.write(additions, V.VOCAB_TABLE, mode="overwrite", replace_ds=[ds],
                                       partition_by=["ds"], constraints=V.VOCAB_CONSTRAINTS)}
    finally:
        counts.unpersist()
    new = {r["field"]: r["count"] for r in lh.read(spark, V.VOCAB_TABLE).where(day).groupBy("field").count().collect()}
    n_pending = lh.read(spark, V.PENDING_TABLE).where(day).count()
    record = spark.createDataFrame([(ds, cfg.min_count, sum(new.values()), n_pending)], V.VOCAB_DAYS)
    out[V.DAYS_TABLE] = lh.write(record, V.DAYS_TABLE, mode="overwrite", replace_ds=[ds],
                                 partition_by=["ds"])  # last: the day is done
    return jobkit.JobOutcome(inputs=inputs, outputs=out, counts={
        "events": events.count(), "new_ids": sum(new.values()), "pending_ids": n_pending,
        "vocab_ids": lh.count(V.VOCAB_TABLE), **{f"new_ids.{f}": new.get(f, 0) for f in V.FIELDS}})


def main(argv: list[str] | None = None) -> int:
    return jobkit.run_job(jobkit.parse_job_args("build_vocab", argv, V.VocabConfig), body)


if __name__ == "__main__":
    sys.exit(main())
