"""Training samples of a range of days: labels, click histories, exposure negatives and DSTN ad sets (pure transforms).

One row per impression (``features/samples``, :data:`features.schemas.SAMPLES`), computed for the days
``first..last`` in one plan from their clean events and the per-user state at the end of the day before ``first``
(``features/user_state``, :data:`USER_STATE`); the same plan gives the state at the end of each day. Every day's
rows depend only on the events up to that day (through the state), so any split of a range into sub-ranges (one
day at a time, two halves, the whole range) gives the same rows: that is the contract a backfill and a rerun rely on.

``features/user_state`` holds one row per (user, day the user was active): the user's state at the end of that day.
The state of a user as of day D is their latest row with ``ds <= D`` (:func:`state_as_of`), minus the exposures that
have fallen out of the retention window since (``state_retention_seconds`` before the start of D + 1).

Order. Every per-user sequence is ordered by ``(event_time, event_id)``. "Before t" means strictly earlier in
time: events at the same timestamp as an impression are never in its history or sets (ties do not count).

Definitions (``cfg`` is :class:`SamplesConfig`; sizes L = ``hist_len``, n = ``ctx_size``/``clk_size``/``unclk_size``,
K = ``exposure_candidates``, R = ``state_retention_seconds()``):

* **visible exposures** of day d: the user's impressions of day d, and of the impressions before d, those among the
  user's last K before d that are at most R older than the start of d + 1 (what the state at the end of d - 1 keeps).
* **label**: 1 when a click of the same day is attributed to the impression. A click with a ``request_id`` is
  attributed to the visible exposures of the same user, item and request; a click without one to the latest
  exposure of the same user and item at or before it, if that one is visible and at most ``click_window_seconds``
  before the click. Clicks attributed only to exposures of earlier days are counted as ``late_clicks``, those
  matching no visible exposure as ``unattributed_clicks``: earlier days' samples are not rewritten. Every click
  enters the history.
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
  labels not used; a request id is one user's page of one day), by position then event id, distinct items, the
  target's item excluded, at most n.
* **clk_***: the last n clicks of ``hist`` at most ``lookback_seconds`` before the impression, most recent first.
* **unclk_***: the user's exposures among the last K before the impression, at most ``lookback_seconds`` before it
  and unclicked at its time, most recent first, at most n.

Ids map through ``features/vocab`` as of the sample's day (an id indexed on a later day is unknown, 1; padding 0).
The state keeps raw ids, so an id indexed after it entered the state maps to its index from then on.

Cost per user is O(events · (L + K)): histories and candidate sets come from bounded window frames and as-of
lookups, never from joining a user's events with each other, and the whole range is one shuffle by user.
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

from features import tables
from features.jobkit import JobConfig
from features.schemas import SAMPLES
from features.vocab import ITEM_FIELDS, UNKNOWN_IDX, USER_FIELDS, as_of, conform, lookup

SAMPLES_TABLE = tables.SAMPLES
STATE_TABLE = tables.USER_STATE

# Kinds of the rows of a range's per-user stream (build_range): the state's exposures and clicks (days before the
# range), and the range's impressions and clicks. Rows of the same microsecond are ordered by kind.
_PRIOR_EXPOSURE, _IMPRESSION, _PRIOR_CLICK, _CLICK = 0, 1, 2, 3

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
#: ``features/user_state``: one row per (user, day the user had events): at the end of ``ds``, the user's last L
#: clicks (with their negatives) and last K exposures still inside the retention window (with ``clicked_at`` as of
#: that day), raw ids, oldest first. A user with nothing to keep has no row that day.
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


def state_as_of(state: DataFrame, day: dt.date) -> DataFrame:
    """Each user's state as of the end of ``day``: their latest ``features/user_state`` row with ``ds <= day``.

    The rows still hold every exposure their own day kept; :func:`build_range` drops those that have fallen out
    of the retention window since.
    """
    latest = state.where(F.col("ds") <= F.lit(day)).groupBy("user_id").agg(
        F.max_by(F.struct("clicks", "exposures", "ds"), "ds").alias("s"))
    return latest.select("user_id", "s.clicks", "s.exposures", "s.ds")


# ----------------------------------------------------------------------------------------------- vocab lookups
def catalogue_sizes(vocab: DataFrame, days: list[dt.date]) -> dict[dt.date, int]:
    """How many item indices the vocabulary has assigned by the end of each of ``days`` (they are dense: 2 ..
    size + 1); the fallback sampler of a click draws from its day's catalogue. One small aggregation."""
    per_day = {r["ds"]: r["top"] for r in vocab.where(F.col("field") == "item").groupBy("ds").agg(
        F.max("idx").alias("top")).collect()}
    sizes, top = {}, 1
    for day in sorted(set(per_day) | set(days)):
        top = max(top, per_day.get(day, 1))
        sizes[day] = top - 1
    return {day: sizes[day] for day in days}


def catalogue_size(vocab: DataFrame) -> int:
    """How many item indices ``vocab`` has assigned (they are dense: 2 .. catalogue_size + 1)."""
    return (vocab.where(F.col("field") == "item").agg(F.max("idx")).first()[0] or 1) - 1


def item_index(vocab: DataFrame, items: DataFrame) -> DataFrame:
    """``item_id`` and, per index column of :data:`ITEM_INDEX_COLUMNS`, the index and the day it was assigned
    (``<name>_from``, days since 1970-01-01) for every item of the vocabulary or the catalogue.

    ``vocab``: ``features/vocab`` rows of the days up to the last one processed. Missing values map to 1 (unknown).
    """
    fields = {name: (column, f"{'cate' if name == 'category' else name}_idx") for name, column in ITEM_FIELDS.items()}
    return _index(vocab, items, "item", "item_id", "item_idx", fields)


def user_index(vocab: DataFrame, users: DataFrame) -> DataFrame:
    """``user_id`` and the indices of :data:`USER_INDEX_COLUMNS` with their days (as :func:`item_index`)."""
    fields = {name: (column, f"{name}_idx") for name, column in USER_FIELDS.items()}
    return _index(vocab, users, "user", "user_id", "user_idx", fields)


def _from(idx_column: str) -> str:
    return idx_column.removesuffix("_idx") + "_from"


def _index(vocab: DataFrame, side: DataFrame, id_field: str, key: str, key_idx: str,
           fields: dict[str, tuple[str, str]]) -> DataFrame:
    """Every id of ``vocab``'s ``id_field`` or of ``side`` with its index and the indices of its ``side`` fields
    (field -> (side column, index column)), each through :func:`features.vocab.lookup` (unknown -> 1)."""
    ids = (vocab.where(F.col("field") == id_field).select(F.col("raw_id").alias(key))
           .unionByName(side.select(key)).where(F.col(key).isNotNull()).dropDuplicates([key]))
    joined = lookup(ids.join(side.select(key, *(c for c, _ in fields.values())), on=key, how="left"), vocab,
                    id_field, key, key_idx, _from(key_idx))
    for name, (column, idx_column) in fields.items():
        joined = lookup(joined, vocab, name, column, idx_column, _from(idx_column))
    return joined.select(key, *(c for idx in (key_idx, *(i for _, i in fields.values())) for c in (idx, _from(idx))))


ITEM_INDEX_COLUMNS = ("item_idx", "cate_idx", "shop_idx", "brand_idx")
USER_INDEX_COLUMNS = ("user_idx", *(f"{name}_idx" for name in USER_FIELDS))


@dataclass(frozen=True)
class SamplesRange:
    """``samples``: the columns of :data:`SAMPLES` for the days of the range; ``state``: :data:`USER_STATE` rows of
    the users active on each of its days; ``counts``: per ``ds``, the job's counts (samples, positives,
    history_steps, clicks, late_clicks, unattributed_clicks, negatives_sampled)."""

    samples: DataFrame
    state: DataFrame
    counts: DataFrame
    #: one row per click of the range: ``attributed`` ('today', 'late' or null) and ``neg_is_sampled``
    clicks: DataFrame
    #: intermediate frames that ``samples``, ``state`` and ``counts`` all read: a job persists them while it writes
    #: (Spark's cache substitutes them in the later plans), so they are computed once.
    shared: tuple[DataFrame, ...] = ()


def build_range(
    events: DataFrame,
    state_before: DataFrame,
    items: DataFrame,
    users: DataFrame,
    *,
    catalogue: dict[dt.date, int],
    first: dt.date,
    last: dt.date,
    cfg: SamplesConfig,
) -> SamplesRange:
    """Samples of the days ``first..last`` and the state at the end of each.

    ``events``: ``features/events_clean`` rows of those days (other event types than impression and click are
    ignored); ``state_before``: :func:`state_as_of` the day before ``first`` (empty on the first day);
    ``items``/``users``: :func:`item_index` / :func:`user_index` of the vocabulary up to ``last``; ``catalogue``:
    :func:`catalogue_sizes` of the range's days (each >= 2: the fallback sampler draws from them).

    How: every row of the range's users (their state's clicks and exposures, the range's impressions and clicks)
    goes into one stream, shuffled once by user; each step is a window whose partition starts with ``user_id``, so
    they all run on that one shuffle. The K-exposure and L-click lists come from range frames over running ordinals
    (one list per row, used in the same step and dropped), so rows never carry arrays of K or L structs from one
    sort to the next. Each impression also enters as a probe row, placed in those frames just after the events
    strictly before it; the last event of each user's day carries that day's state.
    """
    small = sorted(d for d in _days(first, last) if catalogue.get(d, 0) < 2)
    if small:
        raise ValueError(f"the item vocabulary at {small[0]} has {catalogue.get(small[0], 0)} item(s); sampling a "
                         "negative needs at least 2")
    L, K, R = cfg.hist_len, cfg.exposure_candidates, cfg.state_retention_seconds()
    lookup_items = F.broadcast(items) if cfg.broadcast_lookups else items
    lookup_users = F.broadcast(users) if cfg.broadcast_lookups else users
    no_time, no_text, no_int = (F.lit(None).cast(t) for t in (TimestampType(), StringType(), IntegerType()))

    # The stream: the state of the users active in the range (without the exposures the range's first day no longer
    # keeps) and the range's events.
    day_rows = events.where(F.col("event_type").isin("impression", "click")).select(
        "user_id", F.when(F.col("event_type") == "impression", _IMPRESSION).otherwise(_CLICK).alias("kind"),
        "event_time", "event_id", "item_id", "request_id", "position", no_time.alias("clicked_at"),
        no_text.alias("neg_item_id"), no_int.alias("neg_is_sampled"), "ds")
    active = events.select("user_id").distinct()
    state = state_before.join(active, on="user_id", how="left_semi")
    kept_from = F.lit(dt.datetime.combine(first, dt.time())) - F.expr(f"INTERVAL {R} SECONDS")
    prior_exposures = state.select("user_id", F.explode("exposures").alias("e")).where(
        F.col("e.event_time") >= kept_from).select(
        "user_id", F.lit(_PRIOR_EXPOSURE).alias("kind"), "e.event_time", "e.event_id", "e.item_id", "e.request_id",
        "e.position", "e.clicked_at", no_text.alias("neg_item_id"), no_int.alias("neg_is_sampled"),
        F.to_date("e.event_time").alias("ds"))
    prior_clicks = state.select("user_id", F.explode("clicks").alias("c")).select(
        "user_id", F.lit(_PRIOR_CLICK).alias("kind"), "c.event_time", "c.event_id", "c.item_id",
        no_text.alias("request_id"), no_int.alias("position"), no_time.alias("clicked_at"), "c.neg_item_id",
        "c.neg_is_sampled", F.to_date("c.event_time").alias("ds"))
    kind = F.col("kind")
    rows = (day_rows.unionByName(prior_exposures).unionByName(prior_clicks).repartition("user_id")
            .withColumn("_us", F.unix_micros("event_time"))
            .withColumn("_day", F.unix_date("ds"))
            .withColumn("_exp", kind.isin(_PRIOR_EXPOSURE, _IMPRESSION))
            .withColumn("_clk", kind.isin(_PRIOR_CLICK, _CLICK))
            .join(lookup_items, on="item_id", how="left").fillna(UNKNOWN_IDX, list(ITEM_INDEX_COLUMNS)))
    is_exposure, is_click, is_new_click = F.col("_exp"), F.col("_clk"), kind == _CLICK
    micros, day = F.col("_us"), F.col("_day")
    sequence_key = F.struct(micros.alias("t"), F.col("event_id").alias("id"))  # the (event_time, event_id) order

    # 1. Ordinals in the user's (time, kind, event id) order, where exposures precede the clicks of the same
    # microsecond: an exposure's or click's own position among its kind, whether a row is the last of its user's day,
    # and how many exposures came before the row's day. Then (the same sort serves the range frame on time) how many
    # exposures and clicks are strictly earlier in time than the row.
    in_order = Window.partitionBy("user_id").orderBy(micros, kind, "event_id")
    running = in_order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    rows = rows.select(
        "*", F.count(F.when(is_exposure, 1)).over(running).alias("_exp_upto"),
        F.count(F.when(is_click, 1)).over(running).alias("_clk_upto"),
        F.coalesce(F.lead("_day").over(in_order) != day, F.lit(True)).alias("_last_of_day"))
    earlier = Window.partitionBy("user_id").orderBy(micros).rangeBetween(Window.unboundedPreceding, -1)
    rows = rows.select(
        "*", F.coalesce(F.max(F.when(F.col("_last_of_day"), F.col("_exp_upto"))).over(
            in_order.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)).alias("_exp_before_day"),
        F.count(F.when(is_exposure, 1)).over(earlier).alias("_exp_before"),
        F.count(F.when(is_click, 1)).over(earlier).alias("_clk_before"))
    rows = rows.withColumn("_day_end", kind.isin(_IMPRESSION, _CLICK) & F.col("_last_of_day")).drop("_last_of_day")

    def visible(exposure: Column, on_day: Column, exposures_before_day: Column) -> Column:
        """Whether ``exposure`` (a struct of its ``day``, ordinal ``n`` and ``us``) is visible on ``on_day``: of that
        day, or among the user's last K exposures before it and inside the retention window."""
        kept_from = on_day * 86_400_000_000 - R * 1_000_000
        return (exposure["day"] == on_day) | ((exposure["day"] < on_day) & (exposure["n"] > exposures_before_day - K)
                                              & (exposure["us"] >= kept_from))

    me = F.struct(day.alias("day"), F.col("_exp_upto").alias("n"), micros.alias("us"))

    # 2. Attribution. A click with a request: the visible exposures of the same user, item and request. An
    # exposure's first request click is the earliest one of its day or later, if the exposure is visible on that
    # click's day (the later the day, the fewer exposures stay visible); a click is late when only earlier days'
    # exposures are visible to it (the latest of them is the most visible).
    request_click = is_new_click & F.col("request_id").isNotNull()
    by_request = Window.partitionBy("user_id", "item_id", "request_id").orderBy("_day")
    first_click = F.min(F.when(request_click, F.struct(micros.alias("us"), F.col("event_time").alias("time"),
                                                         day.alias("day"), F.col("_exp_before_day").alias("before"))))
    latest_before = F.max_by(me, F.when(is_exposure, sequence_key))
    rows = rows.select(
        "*", first_click.over(by_request.rangeBetween(0, Window.unboundedFollowing)).alias("_request_click"),
        F.max(F.when(is_exposure, 1)).over(by_request.rangeBetween(0, 0)).alias("_request_same_day"),
        latest_before.over(by_request.rangeBetween(Window.unboundedPreceding, -1)).alias("_request_earlier"))
    # Without a request: the latest exposure of the same user and item at or before the click, if it is visible on
    # the click's day and within the window. An exposure's first such click is the first loose click after it, if
    # that one is attributed (and before the item's next exposure: the loose clicks after that have it as theirs).
    loose_click = is_new_click & F.col("request_id").isNull()
    by_item = Window.partitionBy("user_id", "item_id").orderBy(micros, kind, "event_id")
    earliest = micros - int(cfg.click_window_seconds) * 1_000_000
    latest = F.last(F.when(is_exposure, me), ignorenulls=True).over(
        by_item.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    rows = rows.withColumn("_loose", F.when(loose_click & (latest["us"] >= earliest)
                                            & visible(latest, day, F.col("_exp_before_day")), latest))
    rows = rows.withColumn("_next", F.when(is_exposure | loose_click, F.struct(
        F.col("_loose").isNotNull().alias("attributed"), F.col("event_time").alias("time"))))
    after = F.expr("lead(_next, 1, NULL, true)").over(by_item)  # the next exposure or loose click (same sort)
    request = F.col("_request_click")
    request_time = F.when(visible(me, request["day"], request["before"]), request["time"])
    attributed = (F.when(request_click, F.when(F.col("_request_same_day") == 1, "today").when(
        visible(F.col("_request_earlier"), day, F.col("_exp_before_day")), "late"))
        .when(F.col("_loose").isNotNull(), F.when(F.col("_loose.day") == day, "today").otherwise("late")))
    rows = rows.withColumn("clicked_at", F.when(is_exposure, F.least(
        "clicked_at", request_time, F.when(after["attributed"], after["time"])))).withColumn(
        "attributed", F.when(is_new_click, attributed)).drop(
        "_request_click", "_request_same_day", "_request_earlier", "_loose", "_next", "_exp_before_day")

    # 3. An impression's request page: the first ctx_size + 1 distinct items of the user's request of the day, by
    # position, event id (on the impressions, before they are doubled into probes below).
    paged = (kind == _IMPRESSION) & F.col("request_id").isNotNull()
    in_request = ["user_id", "_day", "request_id", "_paged"]
    shown_at = (F.coalesce("position", F.lit(2**31 - 1)), F.col("event_id"))
    rows = rows.withColumn("_paged", paged).withColumn("_first", F.row_number().over(
        Window.partitionBy(*in_request, "item_id").orderBy(*shown_at)) == 1)
    rows = rows.withColumn("_rank", F.row_number().over(Window.partitionBy(*in_request).orderBy(
        (~F.col("_first")).cast("int"), *shown_at)))
    entry = F.when(F.col("_first") & (F.col("_rank") <= cfg.ctx_size + 1), F.struct(
        F.col("_rank").alias("rank"), "item_id", "item_idx", "item_from", "cate_idx", "cate_from"))
    rows = rows.withColumn("_page", F.when(paged, F.array_sort(F.collect_list(entry).over(
        Window.partitionBy(*in_request))))).drop("_paged", "_first", "_rank")

    # Each impression is also a probe: a copy that looks up its sets (an exposure itself, it must not see itself).
    roles = F.when(kind == _IMPRESSION, F.array(F.lit(False), F.lit(True))).otherwise(F.array(F.lit(False)))
    rows = rows.withColumn("_probe", F.explode(roles)).withColumn("_exp", is_exposure & ~F.col("_probe"))
    is_probe = F.col("_probe")

    # 4. Exposure lists in one range frame over the exposure ordinals (x2: exposures on even values, clicks and
    # probes on odd ones in between): an exposure sees the last K exposures up to itself, a click the last K at or
    # before its time, a probe the last K strictly before its time.
    rows = rows.withColumn("_x", F.when(is_probe, 2 * F.col("_exp_before") + 1).when(
        is_exposure, 2 * F.col("_exp_upto")).otherwise(2 * F.col("_exp_upto") + 1))
    exposure_struct = F.struct("event_time", "event_id", "item_id", "request_id", "position", "clicked_at",
                               "item_idx", "item_from", "cate_idx", "cate_from")
    rows = rows.withColumn("_listed", F.collect_list(F.when(is_exposure, exposure_struct)).over(
        Window.partitionBy("user_id").orderBy("_x").rangeBetween(-(2 * K - 1), 0)))
    tau = F.col("event_time")
    lookback = tau - F.expr(f"INTERVAL {cfg.lookback_seconds} SECONDS")
    unclk = F.slice(F.reverse(F.filter("_listed", lambda e: (e["event_time"] < tau) & (e["event_time"] >= lookback) & (
        e["clicked_at"].isNull() | (e["clicked_at"] >= tau)))), 1, cfg.unclk_size)
    day_end = F.col("_day_end") & ~is_probe
    # negatives of the range's clicks: the best candidate among the last K exposures at or before the click
    rows = rows.select(
        "*", F.when(is_probe, unclk).alias("_unclk"), F.when(day_end, F.col("_listed")).alias("_day_exposures"),
        F.when(is_new_click, _negative_item(F.col("_listed"), cfg.negative_window_seconds,
                                            cfg.click_window_seconds)).alias("_neg")).withColumn(
        "neg_item_id", F.when(is_new_click, F.col("_neg")).otherwise(F.col("neg_item_id"))).drop("_listed", "_neg")
    day_catalogue = F.element_at(F.create_map(*(F.lit(x) for d in sorted(catalogue) for x in (
        (d - _EPOCH).days, catalogue[d]))), day)
    clicked_idx = as_of(F.col("item_idx"), F.col("item_from"), day)
    sampled = F.when(is_new_click, _sampled_negative(day_catalogue, cfg.seed, clicked_idx))
    rows = rows.withColumn("sampled_idx", sampled).withColumn("neg_is_sampled", F.when(
        is_new_click, F.col("sampled_idx").isNotNull().cast("int")).otherwise(F.col("neg_is_sampled")))
    by_index = lookup_items.where(F.col("item_idx") >= 2).select(F.col("item_idx").alias("sampled_idx"),
                                                                 F.col("item_id").alias("sampled_id"))
    neg_index = lookup_items.select(
        F.col("item_id").alias("neg_item_id"), F.col("item_idx").alias("neg_item_idx"),
        F.col("item_from").alias("neg_item_from"), F.col("cate_idx").alias("neg_cate_idx"),
        F.col("cate_from").alias("neg_cate_from"))
    rows = (rows.join(by_index, on="sampled_idx", how="left")
            .withColumn("neg_item_id", F.coalesce("neg_item_id", "sampled_id")).drop("sampled_idx", "sampled_id")
            .join(neg_index, on="neg_item_id", how="left").fillna(UNKNOWN_IDX, ["neg_item_idx", "neg_cate_idx"]))
    # What the samples, the state and the counts read (the job persists it): probes, clicks and the last row of each
    # user's day (with its exposure list); the other exposures have given what they had to give.
    kept = rows.where(is_probe | is_click | day_end).select(
        "user_id", "kind", "event_time", "event_id", "item_id", "request_id", "position", "clicked_at", "ds", "_day",
        "_clk", "_probe", "_day_end", "_clk_upto", "_clk_before",
        *(c for i in ITEM_INDEX_COLUMNS for c in (i, _from(i))),
        "neg_item_id", "neg_is_sampled", "neg_item_idx", "neg_item_from", "neg_cate_idx", "neg_cate_from",
        "attributed", F.when(is_probe, F.col("_page")).alias("_page"), "_unclk", "_day_exposures")

    # 5. Click histories, the same way over the click ordinals: a probe sees the last L clicks strictly before it,
    # a day's last row the last L clicks up to it. The samples and the state each frame only the rows they need.
    is_end = F.col("_day_end") & ~F.col("_probe")
    samples = _assemble(_with_history(kept.where(F.col("_probe") | F.col("_clk")), L).where(F.col("_probe")),
                        lookup_users, cfg)
    new_state = _end_of_day_state(_with_history(kept.where(is_end | F.col("_clk")), L).where(is_end), R)

    label = F.col("clicked_at").isNotNull() & (F.to_date("clicked_at") == F.col("ds"))
    new_click = (F.col("kind") == _CLICK) & ~F.col("_probe")
    counts = kept.where(F.col("_probe") | new_click).groupBy("ds").agg(
        F.count(F.when(F.col("_probe"), 1)).alias("samples"),
        F.count(F.when(F.col("_probe") & label, 1)).alias("positives"),
        F.coalesce(F.sum(F.when(F.col("_probe"), F.least(F.col("_clk_before"), F.lit(L)))), F.lit(0)).alias(
            "history_steps"),
        F.count(F.when(new_click, 1)).alias("clicks"),
        F.count(F.when(new_click & (F.col("attributed") == "late"), 1)).alias("late_clicks"),
        F.count(F.when(new_click & F.col("attributed").isNull(), 1)).alias("unattributed_clicks"),
        F.count(F.when(new_click & (F.col("neg_is_sampled") == 1), 1)).alias("negatives_sampled"))
    clicks = kept.where(new_click).select("user_id", "item_id", "event_time", "event_id", "neg_item_id",
                                          "neg_is_sampled", "attributed", "ds")
    return SamplesRange(samples=conform(samples, SAMPLES), state=conform(new_state, USER_STATE), counts=counts,
                        clicks=clicks, shared=(kept,))


_EPOCH = dt.date(1970, 1, 1)


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _with_history(rows: DataFrame, hist_len: int) -> DataFrame:
    """``rows`` with ``hist``: the last ``hist_len`` clicks (structs of the ids and their negatives) before a probe,
    or up to any other row, from one range frame over the click ordinals (x2: clicks on even values, other rows on
    odd ones in between)."""
    click_struct = F.struct("event_time", "event_id", "item_id", "neg_item_id", "neg_is_sampled", "item_idx",
                            "item_from", "cate_idx", "cate_from", "neg_item_idx", "neg_item_from", "neg_cate_idx",
                            "neg_cate_from")
    return rows.withColumn("_y", F.when(F.col("_probe"), 2 * F.col("_clk_before") + 1).when(
        F.col("_clk"), 2 * F.col("_clk_upto")).otherwise(2 * F.col("_clk_upto") + 1)).withColumn(
        "hist", F.collect_list(F.when(F.col("_clk"), click_struct)).over(
            Window.partitionBy("user_id").orderBy("_y").rangeBetween(-(2 * hist_len - 1), 0)))


def _end_of_day_state(ends: DataFrame, retention_seconds: int) -> DataFrame:
    """:data:`USER_STATE` rows from the last row of each user's day (``hist``: its last L clicks; ``_day_exposures``:
    its last K exposures, whose ``clicked_at`` may be a later day's click, which the day does not know yet)."""
    day = F.col("_day")
    horizon = F.timestamp_seconds((day + 1) * 86_400 - retention_seconds)
    clicks = F.transform(F.coalesce("hist", F.array()), lambda c: F.struct(*[c[n] for n in CLICK_STRUCT.fieldNames()]))

    def kept(e: Column) -> Column:
        known = F.when(F.unix_date(F.to_date(e["clicked_at"])) <= day, e["clicked_at"])
        return F.struct(*[known.alias(n) if n == "clicked_at" else e[n] for n in EXPOSURE_STRUCT.fieldNames()])

    exposures = F.transform(F.filter(F.coalesce("_day_exposures", F.array()), lambda e: e["event_time"] >= horizon),
                            kept)
    state = ends.select("user_id", clicks.cast(ArrayType(CLICK_STRUCT)).alias("clicks"),
                        exposures.cast(ArrayType(EXPOSURE_STRUCT)).alias("exposures"), "ds")
    return state.where((F.size("clicks") > 0) | (F.size("exposures") > 0))


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


def _sampled_negative(catalogue_size: Column | int, seed: int, clicked_idx: Column | None = None) -> Column:
    """For a click row without an exposure negative (``neg_item_id`` null): the catalogue index drawn by hash(seed,
    ``event_id``), never the clicked item's index (``clicked_idx``, default the ``item_idx`` column); null when the
    row has a negative.

    Indices 2 .. catalogue_size + 1 are the catalogue (``catalogue_size``: the click day's); with the clicked item
    known (idx >= 2) one of them is excluded, so the draw is uniform over the remaining ones.
    """
    clicked = F.col("item_idx") if clicked_idx is None else clicked_idx
    size = F.lit(catalogue_size) if isinstance(catalogue_size, int) else catalogue_size
    known = clicked >= 2
    choices = F.when(known, size - 1).otherwise(size)
    draw = F.pmod(F.xxhash64(F.lit(seed), F.col("event_id")), choices.cast(LongType())) + 2
    drawn = F.when(known & (draw >= clicked), draw + 1).otherwise(draw)
    return F.when(F.col("neg_item_id").isNull(), drawn)


def _padded(values: Column, size: int) -> Column:
    """``values`` (array<long>, at most ``size``) right-padded with 0 to exactly ``size``."""
    return F.concat(values, F.array_repeat(F.lit(0).cast(LongType()), F.lit(size) - F.size(values)))


def _assemble(probes: DataFrame, users: DataFrame, cfg: SamplesConfig) -> DataFrame:
    """The samples' columns from the probes (``hist``: last L clicks before; ``_unclk``: the unclicked set;
    ``_page``: the request's first items), every index as of the probe's day."""
    L, tau, day = cfg.hist_len, F.col("event_time"), F.col("_day")
    lookback = tau - F.expr(f"INTERVAL {cfg.lookback_seconds} SECONDS")
    hist = F.coalesce(F.col("hist"), F.array().cast(probes.schema["hist"].dataType))
    clk = F.slice(F.reverse(F.filter(hist, lambda c: c["event_time"] >= lookback)), 1, cfg.clk_size)
    page = F.coalesce(F.col("_page"), F.array().cast(probes.schema["_page"].dataType))
    ctx = F.slice(F.filter(page, lambda p: p["item_id"] != F.col("item_id")), 1, cfg.ctx_size)
    unclk = F.coalesce(F.col("_unclk"), F.array().cast(probes.schema["_unclk"].dataType))
    withsets = probes.select("*", hist.alias("h"), clk.alias("k"), unclk.alias("u"), ctx.alias("x"))

    def ids(arr: str, idx: str, size: int) -> Column:
        return _padded(F.transform(arr, lambda v: as_of(v[idx], v[_from(idx)], day)), size)

    def seq(prefix: str, arr: str, size: int) -> list[Column]:
        return [ids(arr, "item_idx", size).alias(f"{prefix}_item_idx"),
                ids(arr, "cate_idx", size).alias(f"{prefix}_cate_idx"), F.size(arr).alias(f"{prefix}_len")]

    flags = F.concat(F.transform("h", lambda v: v["neg_is_sampled"]),
                     F.array_repeat(F.lit(0), F.lit(L) - F.size("h")))
    label = F.col("clicked_at").isNotNull() & (F.to_date("clicked_at") == F.col("ds"))
    out = withsets.select(
        F.col("event_id").alias("sample_id"), "event_time", label.cast("int").alias("label"),
        F.coalesce("position", F.lit(0)).alias("position"), "user_id", "_day",
        *(as_of(F.col(c), F.col(_from(c)), day).alias(c) for c in ITEM_INDEX_COLUMNS),
        *seq("hist", "h", L), ids("h", "neg_item_idx", L).alias("neg_item_idx"),
        ids("h", "neg_cate_idx", L).alias("neg_cate_idx"), flags.alias("neg_is_sampled"),
        *seq("ctx", "x", cfg.ctx_size), *seq("clk", "k", cfg.clk_size), *seq("unclk", "u", cfg.unclk_size), "ds",
    )
    joined = out.join(users, on="user_id", how="left")
    return joined.select(*(c for c in out.columns if c not in ("user_id", "_day")),
                         *(as_of(F.col(c), F.col(_from(c)), F.col("_day")).alias(c) for c in USER_INDEX_COLUMNS))
