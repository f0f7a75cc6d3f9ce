"""Add a range of days to the append-only vocabulary ``features/vocab`` (raw id -> index per field; see
``features.vocab``).

    python -m jobs.build_vocab --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD] [--set min_count=2]
    spark-submit jobs/build_vocab.py --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD]

The days are computed in one plan from the vocabulary of the days before ``--ds``; writes ``features/vocab``,
``features/vocab_pending`` and ``features/vocab_days``, one commit each. Days run in order: every day
validate_events processed before ``--ds`` must be in the vocabulary, and a run that replaces processed days goes on
to the latest one (``features.lineage.check_range``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/build_vocab.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from features import jobkit, lineage  # noqa: E402
from features import tables as T  # noqa: E402
from features import vocab as V  # noqa: E402

INPUTS = {T.EVENTS_CLEAN: "validate_events", T.RAW_ITEMS: "the catalogue import or generate_synthetic",
          T.RAW_USERS: "the profile import or generate_synthetic"}
STATE = {T.VOCAB: V.VOCAB, T.VOCAB_PENDING: V.VOCAB_PENDING}


def body(spark, args: jobkit.JobArgs) -> jobkit.JobOutcome:
    lh, cfg, days = args.lakehouse, args.config, args.days()
    claim = jobkit.claim(args, spark, T.VOCAB)
    lineage.check_range(lh, args.job, args.ds, args.last)
    inputs = {t: jobkit.require_table(spark, lh, t, produced_by=p) for t, p in INPUTS.items()}
    inputs |= {t: lh.spark_version(spark, t) for t in STATE if lh.exists(t)}  # the vocabulary so far, pinned
    before = F.col("ds") < F.lit(args.ds)
    vocab, pending = (lh.read(spark, t, version=inputs[t]).where(before) if t in inputs
                      else spark.createDataFrame([], s) for t, s in STATE.items())
    events, items, users = (lh.read(spark, t, version=inputs[t]) for t in INPUTS)
    counts = V.day_counts(events.where(F.col("ds").between(args.ds, args.last)), items, users).persist()
    additions, pending_days = V.assign_indices(counts, vocab, pending, min_count=cfg.min_count)
    additions, pending_days = additions.persist(), pending_days.persist()
    try:
        new = {(r["ds"], r["field"]): r["count"] for r in additions.groupBy("ds", "field").count().collect()}
        waiting = {r["ds"]: r["count"] for r in pending_days.groupBy("ds").count().collect()}
        events_per_day = {r["ds"]: r["events"] for r in counts.where(F.col("field") == "user").groupBy("ds").agg(
            F.sum("count").alias("events")).collect()}
        # each day's content, as an order-free hash of its additions and pending rows (a rebuild of a day that
        # gives the same rows makes no later day stale)
        fingerprint: dict = {}
        for frame, salt in ((additions, "vocab"), (pending_days, "pending")):
            for r in frame.groupBy("ds").agg(F.bit_xor(F.xxhash64(F.lit(salt), *frame.columns)).alias("h")).collect():
                fingerprint[r["ds"]] = fingerprint.get(r["ds"], 0) ^ r["h"]
        out = {T.VOCAB: claim.write(args, spark, additions, T.VOCAB, mode="overwrite", replace_ds=days,
                                    partition_by=["ds"], constraints=V.VOCAB_CONSTRAINTS, optimize_write=True),
               T.VOCAB_PENDING: lh.write(pending_days, T.VOCAB_PENDING, mode="overwrite", replace_ds=days,
                                         partition_by=["ds"], optimize_write=True)}
    finally:
        for frame in (counts, additions, pending_days):
            frame.unpersist()
    per_day = {day: sum(n for (d, _), n in new.items() if d == day) for day in days}
    record = spark.createDataFrame([(day, cfg.min_count, per_day[day], waiting.get(day, 0)) for day in days],
                                   V.VOCAB_DAYS)
    out[T.VOCAB_DAYS] = lh.write(record, T.VOCAB_DAYS, mode="overwrite", replace_ds=days, partition_by=["ds"],
                                 optimize_write=True)
    committed = lh.partition_rows(spark, T.VOCAB, version=out[T.VOCAB])
    total = sum(n for d, n in committed.items() if d < args.ds)
    result = {}
    for day in days:
        if committed.get(day, 0) != per_day[day]:
            raise RuntimeError(f"invariant broken for {day}: {per_day[day]} new ids computed, "
                               f"{committed.get(day, 0)} committed to {T.VOCAB}")
        total += per_day[day]
        result[day] = {"events": events_per_day.get(day, 0), lineage.FINGERPRINT: fingerprint.get(day, 0),
                       "new_ids": per_day[day],
                       "pending_ids": waiting.get(day, 0), "vocab_ids": total,
                       **{f"new_ids.{f}": new.get((day, f), 0) for f in V.FIELDS}}
    return jobkit.JobOutcome(inputs=inputs, outputs=out, counts=result)


def main(argv: list[str] | None = None) -> int:
    return jobkit.run_job(jobkit.parse_job_args("build_vocab", argv, V.VocabConfig), body)


if __name__ == "__main__":
    sys.exit(main())
