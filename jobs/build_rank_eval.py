"""Build the evaluation sets for an anchor day D: ``features/split`` and ``features/rank_eval``.

    python -m jobs.build_rank_eval --lakehouse DIR --ds YYYY-MM-DD [--set test_days=1 --set valid_days=1]
    spark-submit jobs/build_rank_eval.py --lakehouse DIR --ds YYYY-MM-DD

D is the last day of the data to evaluate on (usually the latest sample day). ``features/split`` is replaced as a
whole (it holds the current split: the days up to D); ``features/rank_eval`` replaces its partition ``ds = D``.
Definitions: ``features.rank_eval``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (spark-submit jobs/build_rank_eval.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from features import jobkit  # noqa: E402
from features import rank_eval as R  # noqa: E402
from features.samples import SAMPLES_TABLE, catalogue_size, item_index  # noqa: E402
from features.vocab import VOCAB_TABLE  # noqa: E402

INPUTS = {SAMPLES_TABLE: "build_samples", VOCAB_TABLE: "build_vocab",
          "raw/items": "the catalogue import or generate_synthetic"}


def body(spark, args: jobkit.JobArgs) -> jobkit.JobOutcome:
    lh, anchor, cfg = args.lakehouse, args.ds, args.config
    inputs = {t: jobkit.require_table(spark, lh, t, produced_by=p) for t, p in INPUTS.items()}
    samples, vocab, items = (lh.read(spark, t, version=inputs[t]) for t in INPUTS)
    samples = samples.where(F.col("ds") <= F.lit(anchor))
    days = [r["ds"] for r in samples.select("ds").distinct().collect()]
    if anchor not in days:
        raise jobkit.JobInputError(f"features/samples has no rows for {anchor}; run build_samples for it first")
    split = R.time_split(days, anchor, cfg)
    vocab = vocab.where(F.col("ds") <= F.lit(anchor))
    catalogue = catalogue_size(vocab)
    result = R.rank_candidates(samples, item_index(vocab, items),
                               test_days=[d for d, s in split if s == "test"], anchor=anchor,
                               catalogue_size=catalogue, cfg=cfg)
    for frame in result.shared:
        frame.persist()
    try:
        out = {R.SPLIT_TABLE: lh.write(spark.createDataFrame([(d, s, anchor) for d, s in split], R.SPLIT),
                                       R.SPLIT_TABLE, mode="overwrite"),
               R.RANK_EVAL_TABLE: lh.write(result.rows, R.RANK_EVAL_TABLE, mode="overwrite", replace_ds=[anchor],
                                           partition_by=["ds"])}
        users = lh.read(spark, R.RANK_EVAL_TABLE, version=out[R.RANK_EVAL_TABLE]).where(F.col("ds") == F.lit(anchor))
        counts = {f"{s}_days": sum(1 for _, x in split if x == s) for s in R.SPLITS}
        counts |= {"rank_eval_users": users.count(), "users_skipped_few_negatives": result.skipped_users.count(),
                   "candidates_per_user": cfg.negatives + 1}
    finally:
        for frame in result.shared:
            frame.unpersist()
    return jobkit.JobOutcome(inputs=inputs, outputs=out, counts=counts)


def main(argv: list[str] | None = None) -> int:
    return jobkit.run_job(jobkit.parse_job_args("build_rank_eval", argv, R.RankEvalConfig), body)


if __name__ == "__main__":
    sys.exit(main())
