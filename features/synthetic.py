r"""The seeded synthetic event log: users, items, requests, impressions, clicks, and planted corruptions.

Everything is built in Spark from ``spark.range`` with column expressions (no collect, no Python UDF, no
``rand()``, no join, no shuffle), so 10 million events generate on two cores in minutes. Every random draw is a
uniform from a hash of the seed, a salt naming the draw, and the ids it belongs to::

    u(salt, *ids) = pmod(xxhash64(seed, salt, *ids), 2^52) / 2^52          in [0, 1)

so the same seed gives the same rows whatever the partitioning, the cluster or the order of evaluation, and a
day's rows do not depend on which other days are generated with it (draws are keyed by the absolute day
number ``day`` = days since 1970-01-01, not by the day's index in the run). Derived draws:
``normal(...) = logit(u') * sqrt(3) / pi`` (a logistic variate scaled to sd 1; ``u' = (k + 1/2) / 2^52`` is the
open-interval variant so the logit is finite), ``exponential(...) = -ln(1 - u)``.

Catalogue (``raw/items``, M = ``items`` rows, C = ``categories``)
    item ``j`` (id ``"i<j>"``) has category ``j mod C`` (``"c<j mod C>"``): the items of category ``c`` are
    ``c, c + C, c + 2C, ...``, ``n_c = ceil((M - c) / C)`` of them, so an item of a category is drawn without a
    join. ``shop_id = "s<floor(S * u^2)>"`` with ``S = max(1, M // 20)`` shops, ``brand_id = "b<floor(B * u^2)>"``
    with ``B = max(1, M // 100)``. Latent quality (not in the table): ``q_j = 0.5 * normal("quality", j)``.

Users (``raw/users``, N = ``users`` rows)
    user ``n`` (id ``"u<n>"``): ``gender`` F/M/U (48/48/4 %), ``age_bucket`` among 18-24 .. 55+
    (20/35/25/12/8 %), ``city = "city<floor(50 * u^2)>"``. Latent activity (not in the table), Pareto with
    shape 2.5 and mean 1: ``activity_n = 0.6 * (1 - u("activity", n))^(-1/2.5)``.

Interests (latent): K = 3 slots per user, multi-modal and drifting
    weights ``w_k = e_k / sum(e)``, ``e_k = exponential("weight", n, k)`` (Dirichlet(1, 1, 1));
    period ``P_k = 2 + floor(6 * u("period", n, k))`` days (2..7), phase ``phi_k = floor(P_k * u("phase", n, k))``;
    on day ``d`` slot k holds category ``cat_k(n, d) = floor(C * u("cat", n, k, floor((d + phi_k) / P_k)))``,
    constant within a period and redrawn at each boundary.
    ``interest(n, c, d) = sum_k w_k * 1[cat_k(n, d) = c]`` (in [0, 1]).

Requests (one page view showing a slate of items)
    ``S = ceil(4 * R)`` candidate slots per (user, day), R = ``requests_per_user_day``; slot ``r`` of (n, d) is a
    request iff ``u("request", n, d, r) < rate_n / S``, ``rate_n = min(R * activity_n, S)``, so user n makes
    ``rate_n`` requests a day on average (R overall, minus the little the cap removes).
    ``request_id = "r<yyyymmdd>-u<n>-<r>"``; its time is ``d 00:00 UTC + floor(85800 * u("time", n, d, r))`` s,
    shared by all its impressions.

Slate (built in-row; ``slate_size`` draws, then ``array_distinct``, positions 1..len in draw order)
    draw ``s`` with ``a = u("source", n, d, r, s)``, ``v = u("item", n, d, r, s)``:
    ``a < 0.5``: an interest item: slot k picked with probability ``w_k`` (``u("pick", n, d, r, s)``),
    ``c = cat_k(n, d)``, item ``c + C * floor(n_c * v^2)`` (popular low indices first);
    ``0.5 <= a < 0.8``: a globally popular item ``floor(M * v^3)``; otherwise a uniform item ``floor(M * v)``.

Click model (position-based, with the DSTN context effect); ``raw/click_truth`` holds each impression's p::

    p_click = theta(pos) * sigmoid(A0 + A_INT * interest(n, cat(i), d) + q_i - A_CTX * n_same(i))
    theta(pos) = pos ** -0.7               (1, 0.616, 0.463, 0.379, 0.324, ...)
    A0 = -2.0, A_INT = 4.0, A_CTX = 0.5
    n_same(i) = number of OTHER items of the same request with the same category as i

clicked iff ``u("click", n, d, r, pos) < p_click``. Overall CTR is about 10 % (10.0 % measured at 83k users,
200k items, 200 categories, 7 days; 10.6 % at 1000 users, 1000 items, 20 categories, 10 days).

Events (``raw/events``)
    impression: ``event_id = "<request_id>-<pos>-imp"``, at the request's time; a click copies user, item,
    request and position from its impression, ``event_id = "<request_id>-<pos>-clk"``, at the impression's time
    + ``1 + floor(120 * u("click_delay", ...))`` s (same UTC day: requests start before 23:50). ``ds`` is the UTC
    date of the event time. Event ids are unique.

Corruptions (``corrupt_fraction`` f > 0; listed in ``raw/planted_corruptions`` as (event_id, kind, ds))
    event e is hit iff ``u("corrupt", e) < f``; its kind is ``CORRUPTION_KINDS[floor(10 * u("corrupt_kind", e))]``:
    ``null_user_id``, ``empty_item_id`` (``""``), ``unknown_event_type`` (``"hover"``), ``null_event_time``,
    ``time_outside_ds`` (event_time 3 days earlier, ds kept), ``future_time`` (moved to 2099-01-01, same time
    of day), ``negative_position`` (``-position``) change the row in place;
    ``exact_duplicate`` adds an identical copy; ``conflicting_duplicate`` adds a row with the same event_id and
    another item_id; ``orphan_click`` adds a click ``"<event_id>-orphan"`` of a uniform item in a request id
    that never existed (slot ``r + S``), so no impression matches its request_id/item.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pyspark.sql import Column
from pyspark.sql import functions as F

from features.schemas import CLICK_TRUTH, PLANTED_CORRUPTIONS, RAW_EVENTS, RAW_ITEMS, RAW_USERS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# ---------------------------------------------------------------------------------------------- constants
HASH_MODULUS = 1 << 52  # uniforms have 52 bits: exact in a double, and never round up to 1.0
EPOCH = dt.date(1970, 1, 1)

# click model
A0 = -2.0  # base logit
A_INT = 4.0  # weight of the user's interest in the item's category (interest in [0, 1])
A_CTX = 0.5  # penalty per other item of the same category in the request (DSTN context effect)
POSITION_EXPONENT = 0.7  # theta(pos) = pos ** -POSITION_EXPONENT
QUALITY_SD = 0.5  # sd of the latent item quality q_i

# interests
INTEREST_SLOTS = 3
PERIOD_MIN_DAYS, PERIOD_MAX_DAYS = 2, 7

# slate sources
P_INTEREST = 0.5
P_POPULAR = 0.3  # the remaining 0.2 is uniform over the catalogue

# users
ACTIVITY_SHAPE = 2.5  # Pareto shape; scale (shape - 1) / shape gives mean 1
SLOTS_PER_REQUEST_RATE = 4  # candidate request slots per user-day = ceil(4 * requests_per_user_day)
GENDERS = (("F", 0.48), ("M", 0.48), ("U", 0.04))
AGE_BUCKETS = (("18-24", 0.20), ("25-34", 0.35), ("35-44", 0.25), ("45-54", 0.12), ("55+", 0.08))
N_CITIES = 50

# time
DAY_SECONDS = 86_400
REQUEST_TIME_MARGIN_S = 600  # requests start in [0, 86400 - 600) s of their day
CLICK_DELAY_MAX_S = 120  # clicks follow their impression by 1..120 s

# corruptions
CORRUPTION_KINDS: tuple[str, ...] = (
    "null_user_id",
    "empty_item_id",
    "unknown_event_type",
    "null_event_time",
    "time_outside_ds",
    "future_time",
    "negative_position",
    "exact_duplicate",
    "conflicting_duplicate",
    "orphan_click",
)
UNKNOWN_EVENT_TYPE = "hover"
TIME_OUTSIDE_DS_SHIFT_DAYS = 3
FUTURE_DATE = dt.date(2099, 1, 1)


# ---------------------------------------------------------------------------------------------- config
class SyntheticConfig(BaseModel):
    """Parameters of the generator. ``categories`` defaults to ``min(200, max(4, items // 50))``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(ge=1)
    items: int = Field(ge=2)
    days: int = Field(ge=1, le=3660)
    seed: int = Field(ge=0, lt=1 << 63)
    start_date: dt.date = dt.date(2026, 1, 1)
    categories: int = Field(ge=1)
    requests_per_user_day: float = Field(default=2.0, gt=0, le=1000)
    slate_size: int = Field(default=8, ge=1, le=200)
    corrupt_fraction: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _default_categories(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("categories") is None:
            items = data.get("items")
            if isinstance(items, int) and not isinstance(items, bool):
                data = {**data, "categories": default_categories(items)}
        return data

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        if self.categories > self.items:
            raise ValueError(f"categories ({self.categories}) must not exceed items ({self.items})")
        if self.start_date + dt.timedelta(days=self.days) > FUTURE_DATE:
            raise ValueError(f"the generated days must end before {FUTURE_DATE} (future_time corruptions)")
        return self

    @property
    def max_slots(self) -> int:
        """Candidate request slots per (user, day): ``ceil(4 * requests_per_user_day)``."""
        return math.ceil(SLOTS_PER_REQUEST_RATE * self.requests_per_user_day)

    @property
    def first_day(self) -> int:
        """The absolute day number (days since 1970-01-01) of ``start_date``."""
        return (self.start_date - EPOCH).days

    def dates(self) -> list[dt.date]:
        """The generated days, in order (the ``ds`` partitions this config writes)."""
        return [self.start_date + dt.timedelta(days=i) for i in range(self.days)]


def default_categories(items: int) -> int:
    return min(200, max(4, items // 50))


# ---------------------------------------------------------------------------------------------- random draws
def _hash_bits(seed: int, salt: str, cols: tuple[Column | str, ...]) -> Column:
    return F.pmod(F.xxhash64(F.lit(seed).cast("long"), F.lit(salt), *cols), F.lit(HASH_MODULUS))


def uniform(seed: int, salt: str, *cols: Column | str) -> Column:
    """``pmod(xxhash64(seed, salt, *cols), 2^52) / 2^52``: a uniform draw in [0, 1) keyed by its ids."""
    return _hash_bits(seed, salt, cols) / F.lit(float(HASH_MODULUS))


def open_uniform(seed: int, salt: str, *cols: Column | str) -> Column:
    """``(k + 1/2) / 2^52`` with the same k as :func:`uniform`: in the open interval (0, 1)."""
    return (_hash_bits(seed, salt, cols) + F.lit(0.5)) / F.lit(float(HASH_MODULUS))


def normal(seed: int, salt: str, *cols: Column | str) -> Column:
    """A normal-ish draw (mean 0, sd 1): the logistic variate ``logit(u') * sqrt(3) / pi``."""
    v = open_uniform(seed, salt, *cols)
    return F.log(v / (F.lit(1.0) - v)) * F.lit(math.sqrt(3.0) / math.pi)


def exponential(seed: int, salt: str, *cols: Column | str) -> Column:
    """An Exp(1) draw ``-ln(1 - u')``, strictly positive and finite."""
    return -F.log(F.lit(1.0) - open_uniform(seed, salt, *cols))


def _categorical(v: Column, labelled_probs: tuple[tuple[str, float], ...]) -> Column:
    expr, cumulative = None, 0.0
    for label, prob in labelled_probs[:-1]:
        cumulative += prob
        expr = F.when(v < F.lit(cumulative), F.lit(label)) if expr is None else expr.when(v < cumulative, label)
    last = F.lit(labelled_probs[-1][0])
    return last if expr is None else expr.otherwise(last)


def _long(value: int) -> Column:
    return F.lit(value).cast("long")


# ---------------------------------------------------------------------------------------------- latent model
def item_quality(seed: int, item: Column) -> Column:
    """Latent quality ``q_j = QUALITY_SD * normal("quality", j)`` of item index ``item`` (a long column)."""
    return F.lit(QUALITY_SD) * normal(seed, "quality", item)


def user_activity(seed: int, user: Column) -> Column:
    """Latent activity of user index ``user``: Pareto(shape 2.5, scale 0.6), mean 1."""
    scale = (ACTIVITY_SHAPE - 1.0) / ACTIVITY_SHAPE
    return F.lit(scale) * F.pow(F.lit(1.0) - uniform(seed, "activity", user), F.lit(-1.0 / ACTIVITY_SHAPE))


def interest_slots(seed: int, categories: int, user: Column, day: Column) -> list[tuple[Column, Column]]:
    """The user's K interest slots on absolute day ``day``: [(category index, weight), ...] (weights sum to 1)."""
    raw = [exponential(seed, "weight", user, _long(k)) for k in range(INTEREST_SLOTS)]
    total = raw[0]
    for term in raw[1:]:
        total = total + term
    slots = []
    span = PERIOD_MAX_DAYS - PERIOD_MIN_DAYS + 1
    for k in range(INTEREST_SLOTS):
        period = F.lit(PERIOD_MIN_DAYS) + F.floor(F.lit(span) * uniform(seed, "period", user, _long(k)))
        phase = F.floor(period * uniform(seed, "phase", user, _long(k)))
        epoch = F.floor((day + phase) / period)
        category = F.floor(F.lit(categories) * uniform(seed, "cat", user, _long(k), epoch))
        slots.append((category, raw[k] / total))
    return slots


def click_probability(position: Column, interest: Column, quality: Column, n_same: Column) -> Column:
    """``theta(pos) * sigmoid(A0 + A_INT * interest + quality - A_CTX * n_same)``, ``theta(pos) = pos^-0.7``."""
    logit = F.lit(A0) + F.lit(A_INT) * interest + quality - F.lit(A_CTX) * n_same
    theta = F.pow(position.cast("double"), F.lit(-POSITION_EXPONENT))
    return theta / (F.lit(1.0) + F.exp(-logit))


# ---------------------------------------------------------------------------------------------- tables
def users(spark: SparkSession, cfg: SyntheticConfig) -> DataFrame:
    """``raw/users`` (schema :data:`~features.schemas.RAW_USERS`)."""
    n = F.col("id")
    seed = cfg.seed
    return spark.range(cfg.users).select(
        F.concat(F.lit("u"), n.cast("string")).alias("user_id"),
        _categorical(uniform(seed, "gender", n), GENDERS).alias("gender"),
        _categorical(uniform(seed, "age", n), AGE_BUCKETS).alias("age_bucket"),
        F.concat(F.lit("city"), F.floor(F.lit(N_CITIES) * F.pow(uniform(seed, "city", n), 2)).cast("string")).alias(
            "city"
        ),
    )


def items(spark: SparkSession, cfg: SyntheticConfig) -> DataFrame:
    """``raw/items`` (schema :data:`~features.schemas.RAW_ITEMS`)."""
    j = F.col("id")
    seed = cfg.seed
    shops, brands = max(1, cfg.items // 20), max(1, cfg.items // 100)
    return spark.range(cfg.items).select(
        F.concat(F.lit("i"), j.cast("string")).alias("item_id"),
        F.concat(F.lit("c"), F.pmod(j, F.lit(cfg.categories)).cast("string")).alias("category_id"),
        F.concat(F.lit("s"), F.floor(F.lit(shops) * F.pow(uniform(seed, "shop", j), 2)).cast("string")).alias(
            "shop_id"
        ),
        F.concat(F.lit("b"), F.floor(F.lit(brands) * F.pow(uniform(seed, "brand", j), 2)).cast("string")).alias(
            "brand_id"
        ),
    )


def requests(spark: SparkSession, cfg: SyntheticConfig, *, num_partitions: int | None = None) -> DataFrame:
    """One row per request: ``user`` (index), ``day`` (absolute day number), ``slot``, ``request_id``,
    ``request_time`` (seconds since the epoch), the interest slots ``cat0..``/``w0..`` and the ``slate``
    (array of item indices, distinct, in position order)."""
    seed, n_slots = cfg.seed, cfg.max_slots
    rows = cfg.users * cfg.days * n_slots
    if num_partitions is None:
        num_partitions = max(spark.sparkContext.defaultParallelism, math.ceil(rows / 1_000_000))
    user = F.expr(f"id div {cfg.days * n_slots}")
    day = F.lit(cfg.first_day).cast("long") + F.expr(f"pmod(id div {n_slots}, {cfg.days})")
    slot = F.expr(f"pmod(id, {n_slots})")
    base = spark.range(0, rows, numPartitions=num_partitions).select(
        user.alias("user"), day.alias("day"), slot.alias("slot")
    )
    u_, d_, r_ = F.col("user"), F.col("day"), F.col("slot")
    rate = F.least(F.lit(cfg.requests_per_user_day) * user_activity(seed, u_), F.lit(float(n_slots)))
    kept = base.where(uniform(seed, "request", u_, d_, r_) < rate / F.lit(float(n_slots)))

    slots = interest_slots(seed, cfg.categories, u_, d_)
    with_interests = kept.select(
        "user",
        "day",
        "slot",
        *[cat.alias(f"cat{k}") for k, (cat, _) in enumerate(slots)],
        *[w.alias(f"w{k}") for k, (_, w) in enumerate(slots)],
    )

    n_items, n_cats = cfg.items, cfg.categories
    cats = [F.col(f"cat{k}") for k in range(INTEREST_SLOTS)]
    weights = [F.col(f"w{k}") for k in range(INTEREST_SLOTS)]

    def draw(s: Column) -> Column:
        source = uniform(seed, "source", u_, d_, r_, s)
        pick = uniform(seed, "pick", u_, d_, r_, s)
        v = uniform(seed, "item", u_, d_, r_, s)
        chosen, cumulative = None, None
        for k in range(INTEREST_SLOTS - 1):
            cumulative = weights[k] if cumulative is None else cumulative + weights[k]
            chosen = F.when(pick < cumulative, cats[k]) if chosen is None else chosen.when(pick < cumulative, cats[k])
        category = cats[-1] if chosen is None else chosen.otherwise(cats[-1])
        n_in_category = F.floor((F.lit(n_items + n_cats - 1) - category) / F.lit(n_cats))
        interest_item = category + F.lit(n_cats) * F.floor(n_in_category * v * v)
        popular_item = F.floor(F.lit(n_items) * v * v * v)
        uniform_item = F.floor(F.lit(n_items) * v)
        return (
            F.when(source < F.lit(P_INTEREST), interest_item)
            .when(source < F.lit(P_INTEREST + P_POPULAR), popular_item)
            .otherwise(uniform_item)
        ).cast("long")

    slate = F.array_distinct(F.transform(F.sequence(F.lit(0).cast("long"), _long(cfg.slate_size - 1)), draw))
    seconds_in_day = F.floor(F.lit(DAY_SECONDS - REQUEST_TIME_MARGIN_S) * uniform(seed, "time", u_, d_, r_))
    return with_interests.select(
        "*",
        F.concat(
            F.lit("r"),
            F.date_format(F.date_from_unix_date(d_.cast("int")), "yyyyMMdd"),
            F.lit("-u"),
            u_.cast("string"),
            F.lit("-"),
            r_.cast("string"),
        ).alias("request_id"),
        (d_ * F.lit(DAY_SECONDS) + seconds_in_day).alias("request_time"),
        slate.alias("slate"),
    )



def impressions(spark: SparkSession, cfg: SyntheticConfig, *, num_partitions: int | None = None) -> DataFrame:
    """One row per impression with the click model's inputs and outcome.

    Columns: ``user``, ``day``, ``slot`` (indices), ``request_id``, ``request_time`` (epoch seconds),
    ``position`` (1-based), ``item`` (index), ``category`` (index), ``interest``, ``quality``, ``n_same``,
    ``p_click``, ``clicked`` (boolean). The latent columns are for tests and evaluation; the raw tables carry
    only what a real log would.
    """
    seed, n_cats = cfg.seed, cfg.categories
    req = requests(spark, cfg, num_partitions=num_partitions)

    def per_position(item: Column, index: Column) -> Column:
        same = F.filter(F.col("slate"), lambda other: F.pmod(other, F.lit(n_cats)) == F.pmod(item, F.lit(n_cats)))
        return F.struct(
            (index + F.lit(1)).cast("int").alias("position"),
            item.alias("item"),
            (F.size(same) - F.lit(1)).cast("int").alias("n_same"),
        )

    slot_cols = [f"{prefix}{k}" for prefix in ("cat", "w") for k in range(INTEREST_SLOTS)]
    rows = req.select(
        "user", "day", "slot", "request_id", "request_time", *slot_cols, F.inline(F.transform("slate", per_position))
    )
    category = F.pmod(F.col("item"), F.lit(n_cats))
    interest = F.lit(0.0)
    for k in range(INTEREST_SLOTS):
        interest = interest + F.when(F.col(f"cat{k}") == category, F.col(f"w{k}")).otherwise(F.lit(0.0))
    scored = rows.select(
        "user",
        "day",
        "slot",
        "request_id",
        "request_time",
        "position",
        "item",
        category.alias("category"),
        interest.alias("interest"),
        item_quality(seed, F.col("item")).alias("quality"),
        "n_same",
    )
    p_click = click_probability(F.col("position"), F.col("interest"), F.col("quality"), F.col("n_same"))
    scored = scored.withColumn("p_click", p_click)
    draw = uniform(seed, "click", F.col("user"), F.col("day"), F.col("slot"), F.col("position").cast("long"))
    return scored.withColumn("clicked", draw < F.col("p_click"))


def _conform(df: DataFrame, schema: Any) -> DataFrame:
    return df.select(*[F.col(field.name).cast(field.dataType).alias(field.name) for field in schema.fields])


def _seconds_to_timestamp(seconds: Column) -> Column:
    return F.timestamp_seconds(seconds)


_HELPERS = ("item", "user", "day", "slot")  # index columns carried along for the corruption stage


def _events(imp: DataFrame, cfg: SyntheticConfig) -> DataFrame:
    """Impressions and their clicks as raw event rows (+ the index columns of :data:`_HELPERS`)."""
    pos = F.col("position")
    user_id = F.concat(F.lit("u"), F.col("user").cast("string"))
    item_id = F.concat(F.lit("i"), F.col("item").cast("string"))
    ds = F.date_from_unix_date(F.col("day").cast("int"))
    delay = F.lit(1) + F.floor(
        F.lit(CLICK_DELAY_MAX_S)
        * uniform(cfg.seed, "click_delay", F.col("user"), F.col("day"), F.col("slot"), pos.cast("long"))
    )

    def event(kind: str, suffix: str, seconds: Column) -> Column:
        return F.struct(
            F.concat(F.col("request_id"), F.lit("-"), pos.cast("string"), F.lit(suffix)).alias("event_id"),
            user_id.alias("user_id"),
            item_id.alias("item_id"),
            F.lit(kind).alias("event_type"),
            _seconds_to_timestamp(seconds).alias("event_time"),
            F.col("request_id").alias("request_id"),
            pos.alias("position"),
            ds.alias("ds"),
            *[F.col(name).cast("long").alias(name) for name in _HELPERS],
        )

    impression = event("impression", "-imp", F.col("request_time"))
    click = event("click", "-clk", F.col("request_time") + delay)
    both = F.when(F.col("clicked"), F.array(impression, click)).otherwise(F.array(impression))
    return imp.select(F.inline(both))


def _corrupt(events: DataFrame, cfg: SyntheticConfig) -> tuple[DataFrame, DataFrame]:
    """Plant corruptions in ``events`` (see the module docstring); returns (events, planted_corruptions)."""
    seed, eid = cfg.seed, F.col("event_id")
    hit = uniform(seed, "corrupt", eid) < F.lit(cfg.corrupt_fraction)
    index = F.floor(F.lit(len(CORRUPTION_KINDS)) * uniform(seed, "corrupt_kind", eid)).cast("int")
    kinds = F.array(*[F.lit(k) for k in CORRUPTION_KINDS])
    marked = events.withColumn("kind", F.when(hit, F.element_at(kinds, index + F.lit(1))))

    def is_kind(name: str) -> Column:
        return F.coalesce(F.col("kind") == F.lit(name), F.lit(False))

    seconds = F.unix_seconds(F.col("event_time"))
    future_shift = (F.lit((FUTURE_DATE - EPOCH).days) - F.col("day")) * F.lit(DAY_SECONDS)
    changed = marked.select(
        "event_id",
        F.when(is_kind("null_user_id"), F.lit(None).cast("string")).otherwise(F.col("user_id")).alias("user_id"),
        F.when(is_kind("empty_item_id"), F.lit("")).otherwise(F.col("item_id")).alias("item_id"),
        F.when(is_kind("unknown_event_type"), F.lit(UNKNOWN_EVENT_TYPE)).otherwise(F.col("event_type")).alias(
            "event_type"
        ),
        F.when(is_kind("null_event_time"), F.lit(None).cast("timestamp"))
        .when(
            is_kind("time_outside_ds"),
            _seconds_to_timestamp(seconds - F.lit(TIME_OUTSIDE_DS_SHIFT_DAYS * DAY_SECONDS)),
        )
        .when(is_kind("future_time"), _seconds_to_timestamp(seconds + future_shift))
        .otherwise(F.col("event_time"))
        .alias("event_time"),
        "request_id",
        F.when(is_kind("negative_position"), -F.col("position")).otherwise(F.col("position")).alias("position"),
        "ds",
        "kind",
        *_HELPERS,
    )
    columns = [field.name for field in RAW_EVENTS.fields]
    row = F.struct(*columns)
    other_item = F.pmod(
        F.col("item") + F.lit(1) + F.floor(F.lit(cfg.items - 1) * uniform(seed, "conflict_item", eid)),
        F.lit(cfg.items),
    )
    conflicting = F.struct(*[
        F.concat(F.lit("i"), other_item.cast("string")).alias(c) if c == "item_id" else F.col(c) for c in columns
    ])
    orphan_values = {
        "event_id": F.concat(eid, F.lit("-orphan")),
        "item_id": F.concat(F.lit("i"), F.floor(F.lit(cfg.items) * uniform(seed, "orphan_item", eid)).cast("string")),
        "event_type": F.lit("click"),
        "event_time": _seconds_to_timestamp(
            seconds + F.lit(1) + F.floor(F.lit(CLICK_DELAY_MAX_S) * uniform(seed, "orphan_delay", eid))
        ),
        "request_id": F.concat(
            F.lit("r"),
            F.date_format(F.col("ds"), "yyyyMMdd"),
            F.lit("-u"),
            F.col("user").cast("string"),
            F.lit("-"),
            (F.col("slot") + F.lit(cfg.max_slots)).cast("string"),
        ),
    }
    orphan = F.struct(*[orphan_values.get(c, F.col(c)).alias(c) for c in columns])
    rows = (
        F.when(is_kind("exact_duplicate"), F.array(row, row))
        .when(is_kind("conflicting_duplicate"), F.array(row, conflicting))
        .when(is_kind("orphan_click"), F.array(row, orphan))
        .otherwise(F.array(row))
    )
    corrupted = changed.select(F.inline(rows))
    planted = marked.where(F.col("kind").isNotNull()).select(
        F.when(is_kind("orphan_click"), F.concat(eid, F.lit("-orphan"))).otherwise(eid).alias("event_id"),
        "kind",
        "ds",
    )
    return corrupted, planted


@dataclass(frozen=True)
class SyntheticTables:
    """The generated tables (lazy DataFrames), each in its contract's schema."""

    events: DataFrame  # raw/events
    items: DataFrame  # raw/items
    users: DataFrame  # raw/users
    click_truth: DataFrame  # raw/click_truth
    planted_corruptions: DataFrame  # raw/planted_corruptions (empty when corrupt_fraction == 0)


def generate(spark: SparkSession, cfg: SyntheticConfig, *, num_partitions: int | None = None) -> SyntheticTables:
    """All tables of the synthetic log for ``cfg``. ``num_partitions`` (of the request grid) changes no row."""
    imp = impressions(spark, cfg, num_partitions=num_partitions)
    events = _events(imp, cfg)
    if cfg.corrupt_fraction > 0:
        events, planted = _corrupt(events, cfg)
    else:
        planted = spark.createDataFrame([], PLANTED_CORRUPTIONS)
    truth = imp.select(
        F.concat(F.col("request_id"), F.lit("-"), F.col("position").cast("string"), F.lit("-imp")).alias("event_id"),
        "request_id",
        F.concat(F.lit("u"), F.col("user").cast("string")).alias("user_id"),
        F.concat(F.lit("i"), F.col("item").cast("string")).alias("item_id"),
        "position",
        "p_click",
        F.date_from_unix_date(F.col("day").cast("int")).alias("ds"),
    )
    return SyntheticTables(
        events=_conform(events, RAW_EVENTS),
        items=_conform(items(spark, cfg), RAW_ITEMS),
        users=_conform(users(spark, cfg), RAW_USERS),
        click_truth=_conform(truth, CLICK_TRUTH),
        planted_corruptions=_conform(planted, PLANTED_CORRUPTIONS),
    )
