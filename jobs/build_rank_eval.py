"""Build the evaluation sets for a range of anchor days: ``features/split`` and ``features/rank_eval``.

    python -m jobs.build_rank_eval --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD] [--set test_days=1]
    spark-submit jobs/build_rank_eval.py --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD]

Each day D of the range is an anchor: the last day of the data to evaluate on (usually the latest sample day).
``features/rank_eval`` replaces the partitions of the range's anchors (one plan, one commit); ``features/split`` is
replaced as a whole by the split of the last anchor (it holds the current split: the days up to it).
Definitions: ``features.rank_eval``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/build_rank_eval.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from features import jobkit, lineage  # noqa: E402
from features import rank_eval as R  # noqa: E402
from features import tables as T  # noqa: E402
from features.samples import catalogue_sizes, item_index  # noqa: E402

INPUTS = {T.SAMPLES: "build_samples", T.VOCAB: "build_vocab", T.RAW_ITEMS: "the catalogue import or generate_synthetic"}


def body(spark, args: jobkit.JobArgs) -> jobkit.JobOutcome:
    lh, cfg, anchors = args.lakehouse, args.config, args.days()
    claim = jobkit.claim(args, spark, T.RANK_EVAL)
    lineage.check_range(lh, args.job, args.ds, args.last)
    inputs = {t: jobkit.require_table(spark, lh, t, produced_by=p) for t, p in INPUTS.items()}
    samples, vocab, items = (lh.read(spark, t, version=inputs[t]) for t in INPUTS)
    samples = samples.where(F.col("ds") <= F.lit(args.last))
    sample_days = sorted(lh.partition_rows(spark, T.SAMPLES, version=inputs[T.SAMPLES]))
    lacking = [anchor for anchor in anchors if anchor not in sample_days]
    if lacking:
        raise jobkit.JobInputError(f"features/samples has no rows for {lacking[0]}; run build_samples for it first")
    test_days = R.anchor_test_days(sample_days, anchors, cfg)
    vocab = vocab.where(F.col("ds") <= F.lit(args.last))
    result = R.rank_candidates(samples, item_index(vocab, items), anchors=test_days,
                               catalogue=catalogue_sizes(vocab, anchors), cfg=cfg)
    for frame in result.shared:
        frame.persist()
    try:
        out = {T.RANK_EVAL: claim.write(args, spark, result.rows, T.RANK_EVAL, mode="overwrite", replace_ds=anchors,
                                        partition_by=["ds"], optimize_write=True)}
        skipped = {r["ds"]: r["count"] for r in result.skipped_users.groupBy("ds").count().collect()}
    finally:
        for frame in result.shared:
            frame.unpersist()
    split = R.time_split(sample_days, args.last, cfg)
    out[T.SPLIT] = lh.write(spark.createDataFrame([(d, s, args.last) for d, s in split], R.SPLIT), T.SPLIT,
                            mode="overwrite")
    users = lh.partition_rows(spark, T.RANK_EVAL, version=out[T.RANK_EVAL])
    counts = {}
    for anchor in anchors:
        roles = [s for _, s in R.time_split(sample_days, anchor, cfg)]
        counts[anchor] = {**{f"{s}_days": roles.count(s) for s in R.SPLITS}, "rank_eval_users": users.get(anchor, 0),
                          "users_skipped_few_negatives": skipped.get(anchor, 0),
                          "candidates_per_user": cfg.negatives + 1}
    return jobkit.JobOutcome(inputs=inputs, outputs=out, counts=counts)


def main(argv: list[str] | None = None) -> int:
    return jobkit.run_job(jobkit.parse_job_args("build_rank_eval", argv, R.RankEvalConfig), body)


if __name__ == "__main__":
    sys.exit(main())
