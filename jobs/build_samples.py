"""Build one day of training samples: ``features/samples`` and the per-user state ``features/user_state``.

    python -m jobs.build_samples --lakehouse DIR --ds YYYY-MM-DD [--config FILE] [--set hist_len=50]
    spark-submit jobs/build_samples.py --lakehouse DIR --ds YYYY-MM-DD

Reads the day's clean events, the vocabulary (build_vocab must have processed the day) and the user state of the
previous processed day; definitions of every column are in ``features.samples``. A rerun replaces the day's
partitions of both tables and gives the same rows; days run in order (a day whose previous event days have no
state yet is refused).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/build_samples.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from features import jobkit  # noqa: E402
from features import samples as S  # noqa: E402
from features.vocab import DAYS_TABLE as VOCAB_DAYS_TABLE  # noqa: E402
from features.vocab import VOCAB_TABLE  # noqa: E402

INPUTS = {"features/events_clean": "validate_events", VOCAB_TABLE: "build_vocab", VOCAB_DAYS_TABLE: "build_vocab",
          "raw/items": "the catalogue import or generate_synthetic",
          "raw/users": "the profile import or generate_synthetic"}


def body(spark, args: jobkit.JobArgs) -> jobkit.JobOutcome:
    lh, ds, cfg = args.lakehouse, args.ds, args.config
    inputs = {t: jobkit.require_table(spark, lh, t, produced_by=p) for t, p in INPUTS.items()}
    events, vocab, vocab_days, items, users = (lh.read(spark, t, version=inputs[t]) for t in INPUTS)
    if vocab_days.where(F.col("ds") == F.lit(ds)).isEmpty():
        raise jobkit.JobInputError(f"build_vocab has not processed {ds}; run it for {ds} first")
    state_before = spark.createDataFrame([], S.USER_STATE)
    if lh.exists(S.STATE_TABLE):
        inputs[S.STATE_TABLE] = lh.spark_version(spark, S.STATE_TABLE)
        state_before = lh.read(spark, S.STATE_TABLE, version=inputs[S.STATE_TABLE])
    previous = S.previous_state_day(state_before, events, ds)
    state_before = state_before.where(F.col("ds") == F.lit(previous))

    if lh.exists(S.SAMPLES_TABLE):  # the arrays of one table share their lengths (the trainer reads them there)
        built = lh.properties(S.SAMPLES_TABLE)
        clashes = [f"{k}={built[k]} (asked: {v})" for k, v in cfg.table_properties().items() if built.get(k, v) != v]
        if clashes:
            raise jobkit.JobInputError(f"{S.SAMPLES_TABLE} was built with {', '.join(clashes)}; use the same settings "
                                       "or another lakehouse")
    vocab = vocab.where(F.col("ds") <= F.lit(ds))
    catalogue = S.catalogue_size(vocab)
    if catalogue < 2:
        raise jobkit.JobInputError(f"the item vocabulary up to {ds} has {catalogue} item(s); negatives need >= 2")
    day_events = events.where(F.col("ds") == F.lit(ds))
    day = S.build_day(day_events, state_before, S.item_index(vocab, items),
                      S.user_index(vocab, users), catalogue_size=catalogue, ds=ds, cfg=cfg)
    for frame in day.shared:
        frame.persist()
    try:
        # a fixed number of files per day (hash of sample_id: the same on a rerun), so N training ranks, which
        # Petastorm shards by row group, each get data however small the day is
        samples = day.samples.repartition(cfg.output_files, "sample_id")
        out = {S.SAMPLES_TABLE: lh.write(samples, S.SAMPLES_TABLE, mode="overwrite", replace_ds=[ds],
                                         partition_by=["ds"], constraints=S.samples_constraints(cfg),
                                         properties=cfg.table_properties()),
               S.STATE_TABLE: lh.write(day.state, S.STATE_TABLE, mode="overwrite", replace_ds=[ds],
                                       partition_by=["ds"])}
        counts = _counts(spark, args, out, day.clicks)
        # other behaviour types (e.g. purchase) pass validation but are not samples: counted, not silently lost
        counts["other_event_types"] = day_events.where(~F.col("event_type").isin("impression", "click")).count()
    finally:
        for frame in day.shared:
            frame.unpersist()
    return jobkit.JobOutcome(inputs=inputs, outputs=out, counts=counts)


def _counts(spark, args: jobkit.JobArgs, out: dict[str, int], clicks) -> dict[str, int]:
    """Counts read back from the written partitions, and the day's clicks by attribution and negative source."""
    day = F.col("ds") == F.lit(args.ds)
    samples = args.lakehouse.read(spark, S.SAMPLES_TABLE, version=out[S.SAMPLES_TABLE]).where(day)
    row = samples.agg(F.count(F.lit(1)).alias("samples"), F.coalesce(F.sum("label"), F.lit(0)).alias("positives"),
                      F.coalesce(F.sum("hist_len"), F.lit(0)).alias("history_steps")).first()
    state_users = args.lakehouse.read(spark, S.STATE_TABLE, version=out[S.STATE_TABLE]).where(day).count()
    c = clicks.agg(
        F.count(F.lit(1)).alias("clicks"),
        F.count(F.when(F.col("attributed") == "late", 1)).alias("late_clicks"),
        F.count(F.when(F.col("attributed").isNull(), 1)).alias("unattributed_clicks"),
        F.count(F.when(F.col("neg_is_sampled") == 1, 1)).alias("negatives_sampled"),
    ).first()
    return {**row.asDict(), **c.asDict(), "negatives_from_exposures": c["clicks"] - c["negatives_sampled"],
            "state_users": state_users}


def main(argv: list[str] | None = None) -> int:
    return jobkit.run_job(jobkit.parse_job_args("build_samples", argv, S.SamplesConfig), body)


if __name__ == "__main__":
    sys.exit(main())
