"""Build a range of days of training samples: ``features/samples`` and the per-user state ``features/user_state``.

    python -m jobs.build_samples --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD] [--set hist_len=50]
    spark-submit jobs/build_samples.py --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD]

Reads the range's clean events, the vocabulary (build_vocab must have processed every day of the range) and each
user's state as of the day before ``--ds``; definitions of every column are in ``features.samples``. The range is
one plan and each table one commit; a rerun replaces the range's partitions of both tables and gives the same rows.
Days run in order: every day before ``--ds`` must have been built, and a run that replaces built days goes on to the
latest one (``features.lineage.check_range``).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/build_samples.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from features import jobkit, lineage  # noqa: E402
from features import samples as S  # noqa: E402
from features import tables as T  # noqa: E402

INPUTS = {T.EVENTS_CLEAN: "validate_events", T.VOCAB: "build_vocab",
          T.RAW_ITEMS: "the catalogue import or generate_synthetic",
          T.RAW_USERS: "the profile import or generate_synthetic"}


def body(spark, args: jobkit.JobArgs) -> jobkit.JobOutcome:
    lh, cfg, days = args.lakehouse, args.config, args.days()
    claim = jobkit.claim(args, spark, T.SAMPLES)
    lineage.check_range(lh, args.job, args.ds, args.last)
    inputs = {t: jobkit.require_table(spark, lh, t, produced_by=p) for t, p in INPUTS.items()}
    events, vocab, items, users = (lh.read(spark, t, version=inputs[t]) for t in INPUTS)
    state_before = spark.createDataFrame([], S.USER_STATE)
    if lh.exists(T.USER_STATE):
        inputs[T.USER_STATE] = lh.spark_version(spark, T.USER_STATE)
        state_before = S.state_as_of(lh.read(spark, T.USER_STATE, version=inputs[T.USER_STATE]),
                                     args.ds - dt.timedelta(days=1))
    if lh.exists(T.SAMPLES):  # the arrays of one table share their lengths (the trainer reads them there)
        built = lh.properties(T.SAMPLES)
        clashes = [f"{k}={built[k]} (asked: {v})" for k, v in cfg.table_properties().items() if built.get(k, v) != v]
        if clashes:
            raise jobkit.JobInputError(f"{T.SAMPLES} was built with {', '.join(clashes)}; use the same settings "
                                       "or another lakehouse")
    vocab = vocab.where(F.col("ds") <= F.lit(args.last))
    catalogue = S.catalogue_sizes(vocab, days)
    small = [day for day in days if catalogue[day] < 2]
    if small:
        raise jobkit.JobInputError(f"the item vocabulary up to {small[0]} has {catalogue[small[0]]} item(s); "
                                   "negatives need >= 2")
    range_events = events.where(F.col("ds").between(args.ds, args.last))
    built = S.build_range(range_events, state_before, S.item_index(vocab, items), S.user_index(vocab, users),
                          catalogue=catalogue, first=args.ds, last=args.last, cfg=cfg)
    for frame in built.shared:
        frame.persist()
    try:
        # a fixed number of files per day (hash of sample_id: the same on a rerun), so N training ranks, which
        # Petastorm shards by row group, each get data however small the day is
        samples = built.samples.repartition(cfg.output_files, "sample_id")
        out = {T.SAMPLES: claim.write(args, spark, samples, T.SAMPLES, mode="overwrite", replace_ds=days,
                                      partition_by=["ds"], constraints=S.samples_constraints(cfg),
                                      properties=cfg.table_properties()),
               T.USER_STATE: lh.write(built.state, T.USER_STATE, mode="overwrite", replace_ds=days,
                                      partition_by=["ds"], optimize_write=True)}
        per_day = {r["ds"]: r.asDict() for r in built.counts.collect()}
    finally:
        for frame in built.shared:
            frame.unpersist()
    # other behaviour types (e.g. purchase) pass validation but are not samples: counted, not silently lost
    others = {r["ds"]: r["count"] for r in range_events.where(~F.col("event_type").isin("impression", "click"))
              .groupBy("ds").count().collect()}
    committed = lh.partition_rows(spark, T.SAMPLES, version=out[T.SAMPLES])
    state_rows = lh.partition_rows(spark, T.USER_STATE, version=out[T.USER_STATE])
    counts = {}
    for day in days:
        row = {k: v for k, v in per_day.get(day, {}).items() if k != "ds"}
        row = {key: row.get(key, 0) for key in COUNTS}
        if committed.get(day, 0) != row["samples"]:
            raise RuntimeError(f"invariant broken for {day}: {row['samples']} samples computed, "
                               f"{committed.get(day, 0)} committed to {T.SAMPLES}")
        counts[day] = {**row, "negatives_from_exposures": row["clicks"] - row["negatives_sampled"],
                       "state_users": state_rows.get(day, 0), "other_event_types": others.get(day, 0)}
    return jobkit.JobOutcome(inputs=inputs, outputs=out, counts=counts)


COUNTS = ("samples", "positives", "history_steps", "clicks", "late_clicks", "unattributed_clicks",
          "negatives_sampled")


def main(argv: list[str] | None = None) -> int:
    return jobkit.run_job(jobkit.parse_job_args("build_samples", argv, S.SamplesConfig), body)


if __name__ == "__main__":
    sys.exit(main())
