"""Evaluation sets: the time split of ``features/samples`` and leave-one-out ranking candidates (pure transforms).

* ``features/split`` (:data:`SPLIT`): one row per sample day up to the anchor day D: the last ``test_days`` days are
  ``test``, the ``valid_days`` before them ``valid``, every earlier day ``train``. Trainers read their splits from
  it, so a model never trains on the days it is tested on. It holds one split: the latest anchor's.
* ``features/rank_eval`` (:data:`RANK_EVAL`, partitioned by the anchor day ``ds``): for NAIS / NeuralCF style HR@K
  and NDCG@K. For each anchor D, one row per user with a click in D's test days: the user's latest positive sample
  there (ties: the larger ``sample_id``), all of its columns (history strictly before it, side features), and
  ``cand_*_idx``: the positive item first, then ``negatives`` items the user never interacted with (never shown to or
  clicked by the user in any sample up to D), drawn uniformly from the item vocabulary as of D by a hash of (seed,
  user, draw number), without repeats. A user for whom fewer than ``negatives`` such items are found in
  ``draws_per_negative`` x ``negatives`` draws is left out and counted (only happens when the catalogue is barely
  larger than the user's history). A range of anchors is one plan; each anchor's rows depend on the samples up to
  it only.

Rank evaluation must break score ties pessimistically (a negative scoring equal to the positive ranks above it):
the positive is always at position 0 of the candidates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import Field
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DateType, LongType, StringType, StructField, StructType

from features import tables
from features.jobkit import JobConfig, JobInputError
from features.schemas import SAMPLES
from features.vocab import as_of

SPLIT_TABLE = tables.SPLIT
RANK_EVAL_TABLE = tables.RANK_EVAL
SPLITS = ("train", "valid", "test")

SPLIT = StructType([
    StructField("ds", DateType(), False),
    StructField("split", StringType(), False),
    StructField("anchor_ds", DateType(), False),
])
CANDIDATE_COLUMNS = ("cand_item_idx", "cand_cate_idx", "cand_shop_idx", "cand_brand_idx")
RANK_EVAL = StructType(
    [f for f in SAMPLES.fields if f.name != "ds"]
    + [StructField(c, ArrayType(LongType()), False) for c in CANDIDATE_COLUMNS]
    + [StructField("ds", DateType(), False)]
)


class RankEvalConfig(JobConfig):
    valid_days: int = Field(default=1, ge=0)
    test_days: int = Field(default=1, ge=1)
    negatives: int = Field(default=99, ge=1)
    draws_per_negative: int = Field(default=3, ge=1)
    seed: int = 0


def time_split(sample_days: list[dt.date], anchor: dt.date, cfg: RankEvalConfig) -> list[tuple[dt.date, str]]:
    """(day, split) for the sample days up to ``anchor``; JobInputError when there are too few for three splits."""
    days = sorted(d for d in set(sample_days) if d <= anchor)
    needed = cfg.test_days + cfg.valid_days + 1
    if len(days) < needed:
        raise JobInputError(
            f"features/samples has {len(days)} day(s) up to {anchor}; a split with {cfg.test_days} test and "
            f"{cfg.valid_days} validation day(s) needs at least {needed} (one or more training days)")
    test = days[-cfg.test_days:]
    valid = days[-(cfg.test_days + cfg.valid_days):-cfg.test_days]
    return [(d, "test" if d in test else "valid" if d in valid else "train") for d in days]


def anchor_test_days(sample_days: list[dt.date], anchors: list[dt.date],
                     cfg: RankEvalConfig) -> dict[dt.date, list[dt.date]]:
    """anchor -> its test days (:func:`time_split`, which refuses an anchor with too few sample days)."""
    return {anchor: [d for d, s in time_split(sample_days, anchor, cfg) if s == "test"] for anchor in anchors}


@dataclass(frozen=True)
class RankEval:
    #: the columns of :data:`RANK_EVAL`, ``ds`` = the anchor
    rows: DataFrame
    #: ``ds`` (anchor), ``user_idx``: users with a test-day click left out for lack of negatives
    skipped_users: DataFrame
    #: intermediate frames that ``rows`` and ``skipped_users`` both read: a job persists them while it writes and
    #: counts, so the candidates are drawn once
    shared: tuple[DataFrame, ...] = ()


def rank_candidates(samples: DataFrame, items: DataFrame, *, anchors: dict[dt.date, list[dt.date]],
                    catalogue: dict[dt.date, int], cfg: RankEvalConfig) -> RankEval:
    """Leave-one-out rows of each anchor day for the users with a positive in its test days.

    ``samples``: ``features/samples`` up to the last anchor; ``items``: ``item_idx, cate_idx, shop_idx, brand_idx``
    (``features.samples.item_index``; with its ``*_from`` columns the side indices are taken as of each anchor);
    ``anchors``: anchor -> its test days (:func:`anchor_test_days`); ``catalogue``: anchor -> item indices 2 ..
    size + 1 are drawn from.
    """
    spark = samples.sparkSession
    n, draws = cfg.negatives, cfg.negatives * cfg.draws_per_negative
    test_of = spark.createDataFrame([(d, a) for a, days in anchors.items() for d in days], "ds date, anchor date")
    sizes = spark.createDataFrame(list(catalogue.items()), "anchor date, catalogue long")
    positives = samples.where(F.col("label") == 1).join(F.broadcast(test_of), on="ds")
    latest = Window.partitionBy("anchor", "user_idx").orderBy(F.col("event_time").desc(), F.col("sample_id").desc())
    held_out = positives.withColumn("_r", F.row_number().over(latest.rowsBetween(Window.unboundedPreceding,
                                                                                  Window.currentRow))).where(
        F.col("_r") == 1).drop("_r")
    # the day each held-out user first saw each item: fresh for an anchor when never, or only after it
    first_seen = samples.join(held_out.select("user_idx").distinct(), on="user_idx", how="left_semi").groupBy(
        "user_idx", F.col("item_idx").alias("cand")).agg(F.min("ds").alias("seen_on"))
    drawn = held_out.join(F.broadcast(sizes), on="anchor").select(
        "anchor", "user_idx", F.explode(F.sequence(F.lit(0), F.lit(draws - 1))).alias("draw"), "catalogue").select(
        "anchor", "user_idx", "draw",
        (F.pmod(F.xxhash64(F.lit(cfg.seed), "user_idx", "draw"), F.col("catalogue")) + 2).alias("cand"))
    fresh = drawn.join(first_seen, on=["user_idx", "cand"], how="left").where(
        F.col("seen_on").isNull() | (F.col("seen_on") > F.col("anchor"))).drop("seen_on")
    first_draw = Window.partitionBy("anchor", "user_idx", "cand").orderBy("draw").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    fresh = fresh.withColumn("_r", F.row_number().over(first_draw)).where(F.col("_r") == 1).drop("_r")
    in_order = Window.partitionBy("anchor", "user_idx").orderBy("draw").rowsBetween(Window.unboundedPreceding,
                                                                                     Window.currentRow)
    chosen = fresh.withColumn("_k", F.row_number().over(in_order)).where(F.col("_k") <= n)
    side = ("cate_idx", "shop_idx", "brand_idx")
    days = {c: c.removesuffix("_idx") + "_from" for c in side if c.removesuffix("_idx") + "_from" in items.columns}
    resolved = [as_of(F.col(c), F.col(days[c]), F.unix_date("anchor")).alias(c) if c in days else F.col(c)
                for c in side]
    lookup = items.select(F.col("item_idx").alias("cand"), *side, *days.values())
    chosen = chosen.join(lookup, on="cand", how="left").select("anchor", "user_idx", "_k", "cand", *resolved).fillna(
        1, list(side))
    per_user = chosen.groupBy("anchor", "user_idx").agg(
        F.array_sort(F.collect_list(F.struct("_k", "cand", *side))).alias("negs"))
    full = per_user.where(F.size("negs") == n)
    rows = held_out.join(full, on=["anchor", "user_idx"], how="inner").select(
        *[c for c in held_out.columns if c not in ("ds", "anchor")],
        *[F.concat(F.array(F.col(own)), F.transform("negs", _getter(field))).alias(cand)
          for cand, own, field in zip(CANDIDATE_COLUMNS, ("item_idx", "cate_idx", "shop_idx", "brand_idx"),
                                      ("cand", "cate_idx", "shop_idx", "brand_idx"), strict=True)],
        F.col("anchor").alias("ds"),
    )
    skipped = held_out.select("anchor", "user_idx").join(full.select("anchor", "user_idx"),
                                                         on=["anchor", "user_idx"], how="left_anti")
    return RankEval(rows=rows.select(*RANK_EVAL.fieldNames()),
                    skipped_users=skipped.select(F.col("anchor").alias("ds"), "user_idx"), shared=(held_out, full))


def _getter(field: str):
    """A one-argument lambda for F.transform (PySpark counts every lambda parameter as an array argument)."""
    return lambda value: value[field]
