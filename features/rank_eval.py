"""Evaluation sets: the time split of ``features/samples`` and leave-one-out ranking candidates (pure transforms).

* ``features/split`` (:data:`SPLIT`): one row per sample day up to the anchor day D: the last ``test_days`` days are
  ``test``, the ``valid_days`` before them ``valid``, every earlier day ``train``. Trainers read their splits from
  it, so a model never trains on the days it is tested on.
* ``features/rank_eval`` (:data:`RANK_EVAL`): for NAIS / NeuralCF style HR@K and NDCG@K. One row per user with a
  click in the test days: the user's latest positive sample there (ties: the larger ``sample_id``), all of its
  columns (history strictly before it, side features), and ``cand_*_idx``: the positive item first, then
  ``negatives`` items the user never interacted with (never shown to or clicked by the user in any sample up to
  D), drawn uniformly from the item vocabulary by a hash of (seed, user, draw number), without repeats. A user
  for whom fewer than ``negatives`` such items are found in ``draws_per_negative`` x ``negatives`` draws is left
  out and counted (only happens when the catalogue is barely larger than the user's history).

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

from features.jobkit import JobConfig, JobInputError
from features.schemas import SAMPLES

SPLIT_TABLE = "features/split"
RANK_EVAL_TABLE = "features/rank_eval"
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


@dataclass(frozen=True)
class RankEval:
    rows: DataFrame
    #: users with a test-day click left out for lack of negatives
    skipped_users: DataFrame
    #: intermediate frames that ``rows`` and ``skipped_users`` both read: a job persists them while it writes and
    #: counts, so the candidates are drawn once
    shared: tuple[DataFrame, ...] = ()


def rank_candidates(samples: DataFrame, items: DataFrame, *, test_days: list[dt.date], anchor: dt.date,
                    catalogue_size: int, cfg: RankEvalConfig) -> RankEval:
    """Leave-one-out rows for the users with a positive in ``test_days``.

    ``samples``: ``features/samples`` up to ``anchor``; ``items``: ``features.samples.item_index`` (item_idx ->
    cate/shop/brand); ``catalogue_size``: item indices 2 .. catalogue_size + 1 are drawn from.
    """
    n, draws = cfg.negatives, cfg.negatives * cfg.draws_per_negative
    positives = samples.where(F.col("ds").isin(test_days) & (F.col("label") == 1))
    latest = Window.partitionBy("user_idx").orderBy(F.col("event_time").desc(), F.col("sample_id").desc())
    held_out = positives.withColumn("_r", F.row_number().over(latest.rowsBetween(Window.unboundedPreceding,
                                                                                  Window.currentRow))).where(
        F.col("_r") == 1).drop("_r")
    seen = samples.join(held_out.select("user_idx"), on="user_idx", how="left_semi").select(
        "user_idx", F.col("item_idx").alias("cand")).distinct()
    drawn = held_out.select("user_idx", F.explode(F.sequence(F.lit(0), F.lit(draws - 1))).alias("draw")).select(
        "user_idx", "draw",
        (F.pmod(F.xxhash64(F.lit(cfg.seed), "user_idx", "draw"), F.lit(catalogue_size)) + 2).alias("cand"))
    fresh = drawn.join(seen, on=["user_idx", "cand"], how="left_anti")
    first_draw = Window.partitionBy("user_idx", "cand").orderBy("draw").rowsBetween(Window.unboundedPreceding,
                                                                                      Window.currentRow)
    fresh = fresh.withColumn("_r", F.row_number().over(first_draw)).where(F.col("_r") == 1).drop("_r")
    in_order = Window.partitionBy("user_idx").orderBy("draw").rowsBetween(Window.unboundedPreceding,
                                                                           Window.currentRow)
    chosen = fresh.withColumn("_k", F.row_number().over(in_order)).where(F.col("_k") <= n)
    chosen = chosen.join(items.select(F.col("item_idx").alias("cand"), "cate_idx", "shop_idx", "brand_idx"),
                         on="cand", how="left").fillna(1, ["cate_idx", "shop_idx", "brand_idx"])
    per_user = chosen.groupBy("user_idx").agg(
        F.array_sort(F.collect_list(F.struct("_k", "cand", "cate_idx", "shop_idx", "brand_idx"))).alias("negs"))
    full = per_user.where(F.size("negs") == n)
    rows = held_out.join(full, on="user_idx", how="inner").select(
        *[c for c in held_out.columns if c != "ds"],
        *[F.concat(F.array(F.col(own)), F.transform("negs", _getter(field))).alias(cand)
          for cand, own, field in zip(CANDIDATE_COLUMNS, ("item_idx", "cate_idx", "shop_idx", "brand_idx"),
                                      ("cand", "cate_idx", "shop_idx", "brand_idx"), strict=True)],
        F.lit(anchor).alias("ds"),
    )
    skipped = held_out.select("user_idx").join(full.select("user_idx"), on="user_idx", how="left_anti")
    return RankEval(rows=rows.select(*RANK_EVAL.fieldNames()), skipped_users=skipped, shared=(held_out, full))


def _getter(field: str):
    """A one-argument lambda for F.transform (PySpark counts every lambda parameter as an array argument)."""
    return lambda value: value[field]
