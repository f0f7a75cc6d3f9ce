"""Training samples of one day: labels, click histories, exposure negatives and DSTN ad sets (pure transforms).

One row per impression of the day (``features/samples``, :data:`features.schemas.SAMPLES`), computed from the
day's clean events and the per-user state at the end of the previous processed day (``features/user_state``,
:data:`USER_STATE`); the same pass gives the state at the end of the day. A day is therefore derived from
(state of day d-1, events of day d) without rescanning older days, and a backfill or rerun gives the same rows
as an uninterrupted run.

Order. Every per-user sequence is ordered by ``(event_time, event_id)``. "Before t" means strictly earlier in
time: events at the same timestamp as an impression are never in its history or sets (ties do not count).

Definitions (``cfg`` is :class:`SamplesConfig`; sizes L = ``hist_len``, n = ``ctx_size``/``clk_size``/``unclk_size``,
K = ``exposure_candidates``):

* **label**: 1 when a click of the day is attributed to the impression. A click with a ``request_id`` is
  attributed to the impressions of the same user, item and request; a click without one to the latest impression
  of the same user and item at most ``click_window_seconds`` before it. Clicks attributed to an impression of an
  earlier day (kept in the state) are counted as ``late_clicks``, those matching no impression the job still
  holds as ``unattributed_clicks``: earlier days' samples are not rewritten. Every click enters the history.
* **exposures**: the user's impressions. An exposure's ``clicked_at`` is the time of the first click attributed
  to it; it is "unclicked at t" when ``clicked_at`` is null or later than t.
* **hist_***: the user's last L clicks before the impression, oldest first, right-padded with 0 to L;
  ``hist_len`` is the number of real steps.
* **neg_*** (aligned with ``hist_*``): for each click, computed once on the click's day and carried in the state,
  an exposure of the same user among its last K exposures at or before the click time, unclicked at the click
  time, of another item: in the click's request first (nearest position, then lower position; at most
  ``click_window_seconds`` before the click), otherwise the most recent one at most ``negative_window_seconds``
  before the click. With none, an item drawn from the catalogue (the item vocabulary as
  of the click's day) by a hash of (``seed``, click event id), never the clicked item: ``neg_is_sampled`` = 1.
* **ctx_***: the other items of the impression's request (the page shown to the user together, so same time,
  labels not used; a request id is one user's page), by position then event id, distinct items, the target's item
  excluded, at most n.
* **clk_***: the last n clicks of ``hist`` at most ``lookback_seconds`` before the impression, most recent first.
* **unclk_***: the user's exposures among the last K before the impression, at most ``lookback_seconds`` before it
  and unclicked at its time, most recent first, at most n.

Ids map through ``features/vocab`` rows of days up to ``ds`` (unknown or missing -> 1, padding 0). The state keeps
raw ids, so an id indexed after it entered the state maps to its index from then on.

Cost per user is O(events · (L + K)): histories and candidate sets come from bounded window frames and as-of
lookups, never from joining a user's events with each other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import Field, model_validator
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from features.jobkit import JobConfig, JobInputError
from features.schemas import SAMPLES
from features.vocab import ITEM_FIELDS, UNKNOWN_IDX, USER_FIELDS, conform, lookup

SAMPLES_TABLE = "features/samples"
STATE_TABLE = "features/user_state"

# Kinds of the rows of one day's per-user stream (build_day)
_PRIOR_EXPOSURE, _IMPRESSION, _PRIOR_CLICK, _CLICK_TODAY = 0, 1, 2, 3

CLICK_STRUCT = StructType(
    [
        StructField("event_time", TimestampType(), True),
        StructField("event_id", StringType(), True),
        StructField("item_id", StringType(), True),
        StructField("neg_item_id", StringType(), True),
        StructField("neg_is_sampled", IntegerType(), True),
    ]
)
EXPOSURE_STRUCT = StructType(
    [
        StructField("event_time", TimestampType(), True),
        StructField("event_id", StringType(), True),
        StructField("item_id", StringType(), True),
        StructField("request_id", StringType(), True),
        StructField("position", IntegerType(), True),
        StructField("clicked_at", TimestampType(), True),
    ]
)
#: ``features/user_state``: a full snapshot per ``ds`` of every user's last L clicks (with their negatives) and
#: last K exposures (those still inside the longest window), raw ids, oldest first.
USER_STATE = StructType(
    [
        StructField("user_id", StringType(), True),
        StructField("clicks", ArrayType(CLICK_STRUCT), False),
        StructField("exposures", ArrayType(EXPOSURE_STRUCT), False),
        StructField("ds", DateType(), True),
    ]
)


class SamplesConfig(JobConfig):
    hist_len: int = Field(default=50, ge=1, description="L: clicks kept in hist_* (and neg_*)")
    ctx_size: int = Field(default=5, ge=1)
    clk_size: int = Field(default=5, ge=1)
    unclk_size: int = Field(default=5, ge=1)
    exposure_candidates: int = Field(default=50, ge=1, description="K: recent exposures searched per event")
    lookback_seconds: int = Field(default=86_400, ge=1, description="window of the clk_/unclk_ sets")
    negative_window_seconds: int = Field(default=1_800, ge=0, description="exposure negatives outside the request")
    click_window_seconds: int = Field(default=1_800, ge=0, description="click attribution without a request")
    seed: int = 0
    output_files: int = Field(default=4, ge=1, description="files (row groups) per day of features/samples; "
                              "the trainer needs at least one per rank")
    broadcast_lookups: bool = Field(default=True, description="join the item and user indices by broadcast, which "
                                    "keeps the per-user stream on its one shuffle (each must fit in the driver's and "
                                    "every executor's memory); false: by shuffle, the same rows")

    @model_validator(mode="after")
    def _sets_fit(self) -> SamplesConfig:
        if self.clk_size > self.hist_len:
            raise ValueError(f"clk_size ({self.clk_size}) must not exceed hist_len ({self.hist_len}): clk_* is "
                             "taken from the history")
        if self.unclk_size > self.exposure_candidates:
            raise ValueError(f"unclk_size ({self.unclk_size}) must not exceed exposure_candidates "
                             f"({self.exposure_candidates})")
        return self

    def table_properties(self) -> dict[str, str]:
        """The fixed array lengths, stored on ``features/samples`` so readers never guess them."""
        return {"ctr.samples.hist_len": str(self.hist_len), "ctr.samples.ctx_size": str(self.ctx_size),
                "ctr.samples.clk_size": str(self.clk_size), "ctr.samples.unclk_size": str(self.unclk_size)}

    def state_retention_seconds(self) -> int:
        return max(self.lookback_seconds, self.negative_window_seconds, self.click_window_seconds)


def samples_constraints(cfg: SamplesConfig) -> dict[str, str]:
    """Delta CHECK constraints of ``features/samples`` (guarantee 7): binary labels, indices >= 0, fixed lengths."""
    sizes = {"hist": cfg.hist_len, "ctx": cfg.ctx_size, "clk": cfg.clk_size, "unclk": cfg.unclk_size}
    lengths = " AND ".join(
        f"cardinality({p}_item_idx) = {n} AND cardinality({p}_cate_idx) = {n} AND {p}_len BETWEEN 0 AND {n}"
        for p, n in sizes.items())
    scalar = [f.name for f in SAMPLES.fields if f.name.endswith("_idx") and isinstance(f.dataType, LongType)]
    return {
        "label_is_binary": "label IN (0, 1)",
        "indices_non_negative": " AND ".join(f"{c} >= 0" for c in scalar),
        "fixed_lengths": lengths + f" AND cardinality(neg_item_idx) = {cfg.hist_len}"
                         f" AND cardinality(neg_cate_idx) = {cfg.hist_len}"
                         f" AND cardinality(neg_is_sampled) = {cfg.hist_len}",
    }


def previous_state_day(state: DataFrame, events: DataFrame, ds: dt.date) -> dt.date | None:
    """The day whose state day ``ds`` starts from: the latest state partition before ``ds`` (None on the first
    day). Raises JobInputError when clean events exist between that day and ``ds`` (those days must run first).

    ``state``: ``features/user_state`` (all partitions); ``events``: ``features/events_clean``.
    """
    previous = state.where(F.col("ds") < F.lit(ds)).agg(F.max("ds")).first()[0]
    gap = events.where(F.col("ds") < F.lit(ds))
    if previous is not None:
        gap = gap.where(F.col("ds") > F.lit(previous))
    missing = sorted(r["ds"] for r in gap.select("ds").distinct().limit(5).collect())
    if missing:
        raise JobInputError(
            f"build_samples for {ds} starts from the user state of the previous event day, but "
            f"{', '.join(map(str, missing))} has clean events and no state yet"
            f"{f' (latest state: {previous})' if previous else ''}; run build_samples for those days first, in order"
        )
    return previous


# ----------------------------------------------------------------------------------------------- vocab lookups
def catalogue_size(vocab: DataFrame) -> int:
    """How many item indices ``vocab`` has assigned (they are dense: 2 .. catalogue_size + 1)."""
    return (vocab.where(F.col("field") == "item").agg(F.max("idx")).first()[0] or 1) - 1


def item_index(vocab: DataFrame, items: DataFrame) -> DataFrame:
    """``item_id, item_idx, cate_idx, shop_idx, brand_idx`` for every item of the vocabulary or the catalogue.

    ``vocab``: ``features/vocab`` rows of the days up to the processed one. Missing values map to 1 (unknown).
    """
    fields = {name: (column, f"{'cate' if name == 'category' else name}_idx") for name, column in ITEM_FIELDS.items()}
    return _index(vocab, items, "item", "item_id", "item_idx", fields)


def user_index(vocab: DataFrame, users: DataFrame) -> DataFrame:
    """``user_id, user_idx, gender_idx, age_bucket_idx, city_idx`` for every user of the vocabulary or profiles."""
    fields = {name: (column, f"{name}_idx") for name, column in USER_FIELDS.items()}
    return _index(vocab, users, "user", "user_id", "user_idx", fields)


def _index(vocab: DataFrame, side: DataFrame, id_field: str, key: str, key_idx: str,
           fields: dict[str, tuple[str, str]]) -> DataFrame:
    """Every id of ``vocab``'s ``id_field`` or of ``side`` with its index and the indices of its ``side`` fields
    (field -> (side column, index column)), each through :func:`features.vocab.lookup` (unknown -> 1)."""
    ids = (vocab.where(F.col("field") == id_field).select(F.col("raw_id").alias(key))
           .unionByName(side.select(key)).where(F.col(key).isNotNull()).dropDuplicates([key]))
    joined = lookup(ids.join(side.select(key, *(c for c, _ in fields.values())), on=key, how="left"), vocab,
                    id_field, key, key_idx)
    for name, (column, idx_column) in fields.items():
        joined = lookup(joined, vocab, name, column, idx_column)
    return joined.select(key, key_idx, *(idx for _, idx in fields.values()))


ITEM_INDEX_COLUMNS = ("item_idx", "cate_idx", "shop_idx", "brand_idx")
USER_INDEX_COLUMNS = ("user_idx", *(f"{name}_idx" for name in USER_FIELDS))


@dataclass(frozen=True)
class SamplesDay:
    """``samples``: the columns of :data:`SAMPLES` for day ``ds``; ``state``: :data:`USER_STATE` at the end of
    ``ds``; ``clicks``: one row per click of the day with ``attributed`` ('today', 'late' or null) and
    ``neg_is_sampled``, for the job's counts."""

    samples: DataFrame
    state: DataFrame
    clicks: DataFrame
    #: intermediate frames that ``samples``, ``state`` and ``clicks`` all read: a job persists them while it writes
    #: (Spark's cache substitutes them in the later plans), so they are computed once.
    shared: tuple[DataFrame, ...] = ()


def build_day(
    events: DataFrame,
    state_before: DataFrame,
    items: DataFrame,
    users: DataFrame,
    *,
    catalogue_size: int,
    ds: dt.date,
    cfg: SamplesConfig,
) -> SamplesDay:
    """Samples of day ``ds`` and the state at its end.

    ``events``: ``features/events_clean`` rows of ``ds`` (other event types than impression and click are
    ignored); ``state_before``: ``features/user_state`` at the previous processed day (empty on the first);
    ``items``/``users``: :func:`item_index` / :func:`user_index`; ``catalogue_size``: the number of item indices
    (>= 2, the item vocabulary's ``max(idx) - 1``) the fallback sampler draws from.

    How: every row of the day's users (their state's clicks and exposures, the day's impressions and clicks) goes
    into one stream, shuffled once by user; each step is a window whose partition starts with ``user_id``, so they
    all run on that one shuffle. The K-exposure and L-click lists come from range frames over running ordinals
    (one list per row, used in the same step and dropped), so rows never carry arrays of K or L structs from one
    sort to the next, and what the job persists for its three outputs holds no such arrays either (a 10M-event
    day needs no spill: :mod:`benchmarks.feature_jobs`). Each impression also enters as a probe row, placed in
    those frames just after the events strictly before it.
    """
    if catalogue_size < 2:
        raise ValueError(f"the item vocabulary has {catalogue_size} item(s); sampling a negative needs at least 2")
    L, K = cfg.hist_len, cfg.exposure_candidates
    lookup_items = F.broadcast(items) if cfg.broadcast_lookups else items
    lookup_users = F.broadcast(users) if cfg.broadcast_lookups else users
    no_time, no_text, no_int = (F.lit(None).cast(t) for t in (TimestampType(), StringType(), IntegerType()))

    # The stream: the state of the users active today (others are carried over unchanged below) and today's events.
    day = events.where(F.col("event_type").isin("impression", "click")).select(
        "user_id", F.when(F.col("event_type") == "impression", _IMPRESSION).otherwise(_CLICK_TODAY).alias("kind"),
        "event_time", "event_id", "item_id", "request_id", "position", no_time.alias("clicked_at"),
        no_text.alias("neg_item_id"), no_int.alias("neg_is_sampled"))
    active = events.select("user_id").distinct()
    state = state_before.join(active, on="user_id", how="left_semi")
    prior_exposures = state.select("user_id", F.explode("exposures").alias("e")).select(
        "user_id", F.lit(_PRIOR_EXPOSURE).alias("kind"), "e.event_time", "e.event_id", "e.item_id", "e.request_id",
        "e.position", "e.clicked_at", no_text.alias("neg_item_id"), no_int.alias("neg_is_sampled"))
    prior_clicks = state.select("user_id", F.explode("clicks").alias("c")).select(
        "user_id", F.lit(_PRIOR_CLICK).alias("kind"), "c.event_time", "c.event_id", "c.item_id",
        no_text.alias("request_id"), no_int.alias("position"), no_time.alias("clicked_at"), "c.neg_item_id",
        "c.neg_is_sampled")
    kind = F.col("kind")
    rows = (day.unionByName(prior_exposures).unionByName(prior_clicks).repartition("user_id")
            .withColumn("_us", F.unix_micros("event_time"))
            .withColumn("_exp", kind.isin(_PRIOR_EXPOSURE, _IMPRESSION))
            .withColumn("_clk", kind.isin(_PRIOR_CLICK, _CLICK_TODAY))
            .join(lookup_items, on="item_id", how="left").fillna(UNKNOWN_IDX, list(ITEM_INDEX_COLUMNS)))
    is_exposure, is_click, is_today_click = F.col("_exp"), F.col("_clk"), kind == _CLICK_TODAY
    micros = F.col("_us")
    sequence_key = F.struct(micros.alias("t"), F.col("event_id").alias("id"))  # the (event_time, event_id) order

    # 1. Attribution. A click with a request: every exposure of the same user, item and request.
    request_click = is_today_click & F.col("request_id").isNotNull()
    same_request = Window.partitionBy("user_id", "item_id", "request_id")
    prior_flag = (kind == _PRIOR_EXPOSURE).cast("int")
    rows = rows.select(
        "*", F.min(F.when(request_click, F.col("event_time"))).over(same_request).alias("_request_click_time"),
        F.min(F.when(is_exposure, prior_flag)).over(same_request).alias("_request_late"))
    # Without a request: the latest exposure of the same user and item at or before the click, within the window.
    loose_click = is_today_click & F.col("request_id").isNull()
    latest = F.max_by(F.struct(F.col("event_id").alias("id"), F.col("event_time").alias("time"),
                               prior_flag.alias("late")), F.when(is_exposure, sequence_key)).over(
        Window.partitionBy("user_id", "item_id").orderBy(micros).rangeBetween(Window.unboundedPreceding, 0))
    earliest = F.col("event_time") - F.expr(f"INTERVAL {int(cfg.click_window_seconds)} SECONDS")
    rows = rows.withColumn("_loose", F.when(loose_click & (latest["time"] >= earliest), latest))
    # an exposure's clicked_at: the first click attributed to it today, or the one kept in the state
    rows = rows.withColumn("_link", F.when(is_exposure, F.col("event_id")).otherwise(F.col("_loose.id"))).withColumn(
        "_loose_click_time", F.min(F.when(F.col("_loose").isNotNull(), F.col("event_time"))).over(
            Window.partitionBy("user_id", "_link")))
    late = F.when(request_click, F.col("_request_late")).otherwise(F.col("_loose.late"))
    rows = rows.withColumn("clicked_at", F.when(is_exposure, F.least(
        "clicked_at", "_request_click_time", "_loose_click_time"))).withColumn(
        "attributed", F.when(late == 1, "late").when(late == 0, "today")).drop(
        "_request_click_time", "_request_late", "_loose", "_link", "_loose_click_time")

    # 2. Ordinals in the user's (time, kind, event id) order, where exposures precede the clicks of the same
    # microsecond: an exposure's or click's own position among its kind, how many exposures are at or before a
    # click, and how many exposures and clicks are strictly earlier in time than an impression.
    in_order = Window.partitionBy("user_id").orderBy(micros, kind, "event_id").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    earlier = Window.partitionBy("user_id").orderBy(micros).rangeBetween(Window.unboundedPreceding, -1)
    whole = Window.partitionBy("user_id")
    rows = rows.select(
        "*", F.count(F.when(is_exposure, 1)).over(in_order).alias("_exp_upto"),
        F.count(F.when(is_click, 1)).over(in_order).alias("_clk_upto"),
        F.count(F.when(is_exposure, 1)).over(earlier).alias("_exp_before"),
        F.count(F.when(is_click, 1)).over(earlier).alias("_clk_before"),
        F.count(F.when(is_exposure, 1)).over(whole).alias("_exp_total"))
    # Each impression is also a probe: a copy that looks up its sets (an exposure itself, it must not see itself).
    roles = F.when(kind == _IMPRESSION, F.array(F.lit(False), F.lit(True))).otherwise(F.array(F.lit(False)))
    rows = rows.withColumn("_probe", F.explode(roles)).withColumn("_exp", is_exposure & ~F.col("_probe"))
    is_probe = F.col("_probe")

    # 3. The probe's request page: the first ctx_size + 1 distinct items of the user's request, by position, event id.
    in_request = ["user_id", "_probe", "request_id"]
    shown_at = (F.coalesce("position", F.lit(2**31 - 1)), F.col("event_id"))
    paged = is_probe & F.col("request_id").isNotNull()
    rows = rows.withColumn("_first", paged & (F.row_number().over(
        Window.partitionBy(*in_request, "item_id").orderBy(*shown_at)) == 1))
    rows = rows.withColumn("_rank", F.when(F.col("_first"), F.row_number().over(
        Window.partitionBy(*in_request, "_first").orderBy(*shown_at))))
    entry = F.when(F.col("_rank") <= cfg.ctx_size + 1, F.struct(F.col("_rank").alias("rank"), "item_id", "item_idx",
                                                                  "cate_idx"))
    rows = rows.withColumn("_page", F.when(paged, F.array_sort(F.collect_list(entry).over(
        Window.partitionBy(*in_request))))).drop("_first", "_rank")

    # 4. Exposure lists in one range frame over the exposure ordinals (x2: exposures on even values, clicks and
    # probes on odd ones in between): an exposure sees the last K exposures up to itself, a click the last K at or
    # before its time, a probe the last K strictly before its time.
    rows = rows.withColumn("_x", F.when(is_probe, 2 * F.col("_exp_before") + 1).when(
        is_exposure, 2 * F.col("_exp_upto")).otherwise(2 * F.col("_exp_upto") + 1))
    exposure_struct = F.struct("event_time", "event_id", "item_id", "request_id", "position", "clicked_at",
                               "item_idx", "cate_idx")
    rows = rows.withColumn("_listed", F.collect_list(F.when(is_exposure, exposure_struct)).over(
        Window.partitionBy("user_id").orderBy("_x").rangeBetween(-(2 * K - 1), 0)))
    tau = F.col("event_time")
    lookback = tau - F.expr(f"INTERVAL {cfg.lookback_seconds} SECONDS")
    unclk = F.slice(F.reverse(F.filter("_listed", lambda e: (e["event_time"] < tau) & (e["event_time"] >= lookback) & (
        e["clicked_at"].isNull() | (e["clicked_at"] >= tau)))), 1, cfg.unclk_size)
    # negatives of today's clicks: the best candidate among the last K exposures at or before the click
    rows = rows.select(
        "*", F.when(is_probe, unclk).alias("_unclk"),
        F.when(is_exposure & (F.col("_exp_upto") == F.col("_exp_total")), F.col("_listed")).alias("_last_exposures"),
        F.when(is_today_click, _negative_item(F.col("_listed"), cfg.negative_window_seconds,
                                              cfg.click_window_seconds)).alias("_neg")).withColumn(
        "neg_item_id", F.when(is_today_click, F.col("_neg")).otherwise(F.col("neg_item_id"))).drop("_listed", "_neg")
    sampled = F.when(is_today_click, _sampled_negative(catalogue_size, cfg.seed))
    rows = rows.withColumn("sampled_idx", sampled).withColumn("neg_is_sampled", F.when(
        is_today_click, F.col("sampled_idx").isNotNull().cast("int")).otherwise(F.col("neg_is_sampled")))
    by_index = lookup_items.where(F.col("item_idx") >= 2).select(F.col("item_idx").alias("sampled_idx"),
                                                                 F.col("item_id").alias("sampled_id"))
    neg_index = lookup_items.select(F.col("item_id").alias("neg_item_id"), F.col("item_idx").alias("neg_item_idx"),
                                    F.col("cate_idx").alias("neg_cate_idx"))
    rows = (rows.join(by_index, on="sampled_idx", how="left")
            .withColumn("neg_item_id", F.coalesce("neg_item_id", "sampled_id")).drop("sampled_idx", "sampled_id")
            .join(neg_index, on="neg_item_id", how="left").fillna(UNKNOWN_IDX, ["neg_item_idx", "neg_cate_idx"]))
    # What the samples, the state and the counts read (the job persists it): probes, clicks, each user's last
    # exposure (with its list); the other exposures have given what they had to give.
    kept = rows.where(is_probe | is_click | F.col("_last_exposures").isNotNull()).select(
        "user_id", "kind", "event_time", "event_id", "item_id", "request_id", "position", "clicked_at", "_us", "_clk",
        "_probe", "_clk_upto", "_clk_before", "item_idx", "cate_idx", "shop_idx", "brand_idx", "neg_item_id",
        "neg_is_sampled", "neg_item_idx", "neg_cate_idx", "attributed", "_page", "_unclk", "_last_exposures")

    # 5. Click histories, the same way over the click ordinals: a probe sees the last L clicks strictly before it.
    click_struct = F.struct("event_time", "event_id", "item_id", "neg_item_id", "neg_is_sampled", "item_idx",
                            "cate_idx", "neg_item_idx", "neg_cate_idx")
    probes = kept.withColumn("_y", F.when(F.col("_probe"), 2 * F.col("_clk_before") + 1).when(
        F.col("_clk"), 2 * F.col("_clk_upto")).otherwise(2 * F.col("_clk_upto") + 1)).withColumn(
        "hist", F.collect_list(F.when(F.col("_clk"), click_struct)).over(
            Window.partitionBy("user_id").orderBy("_y").rangeBetween(-(2 * L - 1), 0))).where(F.col("_probe"))
    samples = _assemble(probes, lookup_users, ds, cfg)

    # 6. The state at the end of the day: active users' last L clicks and K exposures, others carried over.
    horizon = F.lit(dt.datetime.combine(ds + dt.timedelta(days=1), dt.time())) - F.expr(
        f"INTERVAL {cfg.state_retention_seconds()} SECONDS")
    clicks_type, exposures_type = ArrayType(CLICK_STRUCT), ArrayType(EXPOSURE_STRUCT)
    state_click = F.struct(*CLICK_STRUCT.fieldNames())  # its fields in time, event id order: array_sort sorts by them
    updated = kept.where(~F.col("_probe")).groupBy("user_id").agg(
        F.array_sort(F.collect_list(F.when(F.col("_clk"), state_click))).alias("all_clicks"),
        F.first("_last_exposures", ignorenulls=True).alias("recent")).select(
        "user_id",
        F.slice("all_clicks", F.greatest(F.size("all_clicks") - L + 1, F.lit(1)), L).cast(clicks_type).alias("clicks"),
        F.coalesce(F.transform("recent", lambda e: F.struct(*[e[n] for n in EXPOSURE_STRUCT.fieldNames()])),
                   F.array().cast(exposures_type)).alias("exposures"),
    )
    carried = state_before.join(active, on="user_id", how="left_anti").select("user_id", "clicks", "exposures")
    new_state = updated.unionByName(carried).select(
        "user_id", "clicks", F.filter("exposures", lambda e: e["event_time"] >= horizon).alias("exposures"),
        F.lit(ds).alias("ds"),
    ).where((F.size("clicks") > 0) | (F.size("exposures") > 0))
    clicks_today = kept.where(is_today_click).select(
        "user_id", "item_id", "event_time", "event_id", "neg_item_id", "neg_is_sampled", "attributed")
    return SamplesDay(samples=conform(samples, SAMPLES), state=conform(new_state, USER_STATE), clicks=clicks_today,
                      shared=(events, items, kept))


def _negative_item(candidates: Column, window_seconds: int, request_window_seconds: int) -> Column:
    """The click row's exposure negative among ``candidates`` (its last K exposures; null when none qualifies):
    same request first (nearest position, at most ``request_window_seconds`` before), then the most recent
    exposure within ``window_seconds``; never clicked by the click's time, another item."""
    t = F.col("event_time")
    earliest = t - F.expr(f"INTERVAL {int(window_seconds)} SECONDS")
    earliest_in_request = t - F.expr(f"INTERVAL {int(request_window_seconds)} SECONDS")

    def same_request(e: Column) -> Column:
        return F.col("request_id").isNotNull() & (e["request_id"] == F.col("request_id"))

    def qualifies(e: Column) -> Column:
        unclicked = e["clicked_at"].isNull() | (e["clicked_at"] > t)
        near = (same_request(e) & (e["event_time"] >= earliest_in_request)) | (e["event_time"] >= earliest)
        return unclicked & (e["item_id"] != F.col("item_id")) & F.coalesce(near, F.lit(False))

    def key(e: Column) -> Column:
        in_request = F.coalesce(same_request(e), F.lit(False))
        return F.struct(
            F.when(in_request, 0).otherwise(1).alias("k0"),
            F.when(in_request, F.coalesce(F.abs(e["position"] - F.col("position")), F.lit(0))).otherwise(0).alias(
                "k1"),
            F.when(in_request, F.coalesce(e["position"], F.lit(0))).otherwise(0).alias("k2"),
            (-F.unix_micros(e["event_time"])).alias("k3"),
            e["event_id"].alias("k4"),
            e["item_id"].alias("item_id"),
        )

    return F.array_min(F.transform(F.filter(candidates, qualifies), key))["item_id"]


def _sampled_negative(catalogue_size: int, seed: int) -> Column:
    """For a click row without an exposure negative (``neg_item_id`` null): the catalogue index drawn by hash(seed,
    ``event_id``), never the clicked item's ``item_idx``; null when the row has a negative.

    Indices 2 .. catalogue_size + 1 are the catalogue; with the clicked item known (idx >= 2) one of them is
    excluded, so the draw is uniform over the remaining ones.
    """
    known = F.col("item_idx") >= 2
    choices = F.when(known, F.lit(catalogue_size - 1)).otherwise(F.lit(catalogue_size))
    draw = F.pmod(F.xxhash64(F.lit(seed), F.col("event_id")), choices.cast(LongType())) + 2
    drawn = F.when(known & (draw >= F.col("item_idx")), draw + 1).otherwise(draw)
    return F.when(F.col("neg_item_id").isNull(), drawn)


def _padded(values: Column, size: int) -> Column:
    """``values`` (array<long>, at most ``size``) right-padded with 0 to exactly ``size``."""
    return F.concat(values, F.array_repeat(F.lit(0).cast(LongType()), F.lit(size) - F.size(values)))


def _assemble(probes: DataFrame, users: DataFrame, ds: dt.date, cfg: SamplesConfig) -> DataFrame:
    """The samples' columns from the probes (``hist``: last L clicks before; ``_unclk``: the unclicked set;
    ``_page``: the request's first items)."""
    L, tau = cfg.hist_len, F.col("event_time")
    lookback = tau - F.expr(f"INTERVAL {cfg.lookback_seconds} SECONDS")
    hist = F.coalesce(F.col("hist"), F.array().cast(probes.schema["hist"].dataType))
    clk = F.slice(F.reverse(F.filter(hist, lambda c: c["event_time"] >= lookback)), 1, cfg.clk_size)
    page = F.coalesce(F.col("_page"), F.array().cast(probes.schema["_page"].dataType))
    ctx = F.slice(F.filter(page, lambda p: p["item_id"] != F.col("item_id")), 1, cfg.ctx_size)
    unclk = F.coalesce(F.col("_unclk"), F.array().cast(probes.schema["_unclk"].dataType))
    withsets = probes.select("*", hist.alias("h"), clk.alias("k"), unclk.alias("u"), ctx.alias("x"))

    def seq(prefix: str, arr: str, size: int, item: str = "item_idx", cate: str = "cate_idx") -> list[Column]:
        return [_padded(F.transform(arr, lambda v: v[item]), size).alias(f"{prefix}_item_idx"),
                _padded(F.transform(arr, lambda v: v[cate]), size).alias(f"{prefix}_cate_idx"),
                F.size(arr).alias(f"{prefix}_len")]

    flags = F.concat(F.transform("h", lambda v: v["neg_is_sampled"]),
                     F.array_repeat(F.lit(0), F.lit(L) - F.size("h")))
    out = withsets.select(
        F.col("event_id").alias("sample_id"), "event_time", F.col("clicked_at").isNotNull().cast("int").alias("label"),
        F.coalesce("position", F.lit(0)).alias("position"), "user_id", "item_idx", "cate_idx", "shop_idx",
        "brand_idx",
        *seq("hist", "h", L),
        _padded(F.transform("h", lambda v: v["neg_item_idx"]), L).alias("neg_item_idx"),
        _padded(F.transform("h", lambda v: v["neg_cate_idx"]), L).alias("neg_cate_idx"),
        flags.alias("neg_is_sampled"),
        *seq("ctx", "x", cfg.ctx_size), *seq("clk", "k", cfg.clk_size), *seq("unclk", "u", cfg.unclk_size),
        F.lit(ds).alias("ds"),
    )
    return out.join(users, on="user_id", how="left").fillna(UNKNOWN_IDX, list(USER_INDEX_COLUMNS)).drop("user_id")
