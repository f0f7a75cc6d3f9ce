r"""The synthetic generator's latent world in numpy: its hashed draws, interests, item quality and click model.

:mod:`features.synthetic` defines the world only as Spark column expressions. The online simulation of DRN
(:mod:`training.drn_online`) needs the same world one request at a time, without a JVM, so this module evaluates
the same formulas with numpy, importing the generator's constants (never retyping them):

* ``u(salt, *ids) = pmod(xxhash64(seed, salt, *ids), 2^52) / 2^52`` with Spark's ``xxhash64``: XXH64 applied
  column by column, starting from Spark's seed 42, each column hashed with the previous column's hash as its
  seed; a ``long`` column hashes its 8 little-endian bytes, a string column its UTF-8 bytes. Every id the
  generator hashes is a ``long`` (the seed is cast to long, user/item/day/slot/k indices are longs); the salt is
  the only string. ``pmod`` of a signed 64-bit value by 2^52 is its low 52 bits.
* the latent model (same names as the generator): :func:`item_quality`, :func:`user_activity`,
  :func:`interest_slots` / :func:`interest`, and :func:`click_probability`::

      p_click = theta(pos) * sigmoid(A0 + A_INT * interest(n, cat(i), d) + q_i - A_CTX * n_same(i))
      theta(pos) = pos ** -POSITION_EXPONENT

* :func:`slate_items`: the generator's slate process (interest / popular / uniform sources), used by the
  simulation to draw candidate items.

Transcendental functions: Spark evaluates ``log``/``exp``/``pow`` with Java's ``StrictMath`` (fdlibm), numpy with
the C library; both are within an ulp, so values agree to ~1e-15 (:func:`verify_click_truth` checks the whole
chain against the generator's own ``raw/click_truth`` with a 1e-9 tolerance).

Item ``j`` is ``"i<j>"`` of category ``j mod C``; user ``n`` is ``"u<n>"``; ``day`` is the absolute day number
(days since 1970-01-01), as in the generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from features.synthetic import (
    A0,
    A_CTX,
    A_INT,
    ACTIVITY_SHAPE,
    EPOCH,
    HASH_MODULUS,
    INTEREST_SLOTS,
    P_INTEREST,
    P_POPULAR,
    PERIOD_MAX_DAYS,
    PERIOD_MIN_DAYS,
    POSITION_EXPONENT,
    QUALITY_SD,
    SLOTS_PER_REQUEST_RATE,
)

__all__ = ["EPOCH", "SPARK_XXHASH_SEED", "ClickTruthRequest", "WorldConfig", "candidate_items", "click_probability",
           "click_truth_error", "exponential", "hash_bits", "interest", "interest_slots", "item_category",
           "item_quality", "n_same", "normal", "open_uniform", "slate_items", "uniform", "user_activity",
           "xxhash64_bytes", "xxhash64_longs"]

SPARK_XXHASH_SEED = 42  # Spark's XxHash64 expression starts from this seed
_MASK = (1 << 64) - 1
_P1, _P2, _P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P4, _P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


# ---------------------------------------------------------------------------------------------- XXH64
def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _avalanche(h: int) -> int:
    h ^= h >> 33
    h = (h * _P2) & _MASK
    h ^= h >> 29
    h = (h * _P3) & _MASK
    return h ^ (h >> 32)


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _MASK
    return (_rotl(acc, 31) * _P1) & _MASK


def xxhash64_bytes(data: bytes, seed: int) -> int:
    """XXH64 of ``data`` with ``seed`` (both as unsigned 64-bit), the reference algorithm (as Spark's XXH64)."""
    seed &= _MASK
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _MASK, (seed + _P2) & _MASK, seed, (seed - _P1) & _MASK]
        while i + 32 <= n:
            v = [_round(v[k], int.from_bytes(data[i + 8 * k:i + 8 * k + 8], "little")) for k in range(4)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _MASK
        for lane in v:
            h = ((h ^ _round(0, lane)) * _P1 + _P4) & _MASK
    else:
        h = (seed + _P5) & _MASK
    h = (h + n) & _MASK
    while i + 8 <= n:
        h ^= _round(0, int.from_bytes(data[i:i + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _MASK
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i:i + 4], "little") * _P1) & _MASK
        h = (_rotl(h, 23) * _P2 + _P3) & _MASK
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _MASK
        h = (_rotl(h, 11) * _P1) & _MASK
        i += 1
    return _avalanche(h)


def _np_rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def xxhash64_longs(values: np.ndarray, seed: np.ndarray | int) -> np.ndarray:
    """XXH64 of each 64-bit value's 8 little-endian bytes, vectorised (``seed`` a scalar or per-value array).

    The one-lane case of the reference algorithm (Spark's ``XXH64.hashLong``)::

        h = seed + P5 + 8;  h ^= rotl(v * P2, 31) * P1;  h = rotl(h, 27) * P1 + P4;  avalanche(h)
    """
    with np.errstate(over="ignore"):
        v = np.asarray(values, dtype=np.int64).astype(np.uint64)  # two's complement bits of the long
        if isinstance(seed, int | np.integer):
            start = np.uint64(int(seed) & _MASK)
        else:
            start = np.asarray(seed, dtype=np.uint64)
        h = start + np.uint64(_P5) + np.uint64(8)
        h = h ^ (_np_rotl(v * np.uint64(_P2), 31) * np.uint64(_P1))
        h = _np_rotl(h, 27) * np.uint64(_P1) + np.uint64(_P4)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(_P2)
        h = h ^ (h >> np.uint64(29))
        h = h * np.uint64(_P3)
        return h ^ (h >> np.uint64(32))


def hash_bits(seed: int, salt: str, *ids: np.ndarray | int) -> np.ndarray:
    """``pmod(xxhash64(seed, salt, *ids), 2^52)`` as uint64 (ids broadcast against each other; all hashed as longs)."""
    prefix = int(xxhash64_longs(np.array([seed]), SPARK_XXHASH_SEED)[0])  # the seed column (a long)
    h: np.ndarray | int = xxhash64_bytes(salt.encode("utf-8"), prefix)  # the salt column (a string)
    arrays = np.broadcast_arrays(*[np.asarray(i, dtype=np.int64) for i in ids]) if ids else []
    for column in arrays:
        h = xxhash64_longs(column, h)
    if not arrays:
        return np.asarray(h, dtype=np.uint64) & np.uint64(HASH_MODULUS - 1)
    return np.asarray(h) & np.uint64(HASH_MODULUS - 1)


def uniform(seed: int, salt: str, *ids: np.ndarray | int) -> np.ndarray:
    """The generator's ``uniform``: a draw in [0, 1) keyed by (seed, salt, ids)."""
    return hash_bits(seed, salt, *ids).astype(np.float64) / float(HASH_MODULUS)


def open_uniform(seed: int, salt: str, *ids: np.ndarray | int) -> np.ndarray:
    """``(k + 1/2) / 2^52``: the same draw in the open interval (0, 1)."""
    return (hash_bits(seed, salt, *ids).astype(np.float64) + 0.5) / float(HASH_MODULUS)


def normal(seed: int, salt: str, *ids: np.ndarray | int) -> np.ndarray:
    """The generator's ``normal``: ``logit(u') * sqrt(3) / pi``."""
    v = open_uniform(seed, salt, *ids)
    return np.log(v / (1.0 - v)) * (math.sqrt(3.0) / math.pi)


def exponential(seed: int, salt: str, *ids: np.ndarray | int) -> np.ndarray:
    """The generator's ``exponential``: ``-ln(1 - u')``."""
    return -np.log(1.0 - open_uniform(seed, salt, *ids))


# ---------------------------------------------------------------------------------------------- latent model
def item_category(items: np.ndarray | int, categories: int) -> np.ndarray:
    """Category index of item index ``j``: ``j mod C``."""
    return np.asarray(items, dtype=np.int64) % categories


def item_quality(seed: int, items: np.ndarray | int) -> np.ndarray:
    """``q_j = QUALITY_SD * normal("quality", j)``."""
    return QUALITY_SD * normal(seed, "quality", items)


def user_activity(seed: int, users: np.ndarray | int) -> np.ndarray:
    """Pareto(shape 2.5, scale 0.6) activity of user ``n``, mean 1."""
    scale = (ACTIVITY_SHAPE - 1.0) / ACTIVITY_SHAPE
    return scale * np.power(1.0 - uniform(seed, "activity", users), -1.0 / ACTIVITY_SHAPE)


def interest_slots(seed: int, categories: int, users: np.ndarray | int, day: int) -> tuple[np.ndarray, np.ndarray]:
    """The users' K interest slots on absolute day ``day``: (category ``[..., K]`` int64, weight ``[..., K]``)."""
    users = np.asarray(users, dtype=np.int64)
    raw = np.stack([exponential(seed, "weight", users, k) for k in range(INTEREST_SLOTS)], axis=-1)
    weights = raw / raw.sum(axis=-1, keepdims=True)
    span = PERIOD_MAX_DAYS - PERIOD_MIN_DAYS + 1
    cats = []
    for k in range(INTEREST_SLOTS):
        period = PERIOD_MIN_DAYS + np.floor(span * uniform(seed, "period", users, k)).astype(np.int64)
        phase = np.floor(period * uniform(seed, "phase", users, k)).astype(np.int64)
        epoch = np.floor((day + phase) / period).astype(np.int64)
        cats.append(np.floor(categories * uniform(seed, "cat", users, k, epoch)).astype(np.int64))
    return np.stack(cats, axis=-1), weights


def interest(seed: int, categories: int, user: int, items: np.ndarray, day: int) -> np.ndarray:
    """``interest(n, cat(i), d) = sum_k w_k * 1[cat_k(n, d) = cat(i)]`` for one user and items ``[L]``."""
    cats, weights = interest_slots(seed, categories, np.array([user]), day)
    item_cats = item_category(items, categories)
    return (weights[0][None, :] * (cats[0][None, :] == item_cats[:, None])).sum(axis=1)


def n_same(items: np.ndarray, categories: int) -> np.ndarray:
    """For a list of distinct items ``[L]``: the number of OTHER items of the list in the same category."""
    cats = item_category(items, categories)
    return (cats[:, None] == cats[None, :]).sum(axis=1) - 1


def click_probability(position: np.ndarray, interest_: np.ndarray, quality: np.ndarray,
                      n_same_: np.ndarray) -> np.ndarray:
    """``theta(pos) * sigmoid(A0 + A_INT * interest + quality - A_CTX * n_same)``, ``theta(pos) = pos^-0.7``.

    Example: pos 2, interest 0.5, quality 0, n_same 1 -> logit -2 + 2 - 0.5 = -0.5, sigmoid 0.37754,
    theta 2^-0.7 = 0.61557, p = 0.23241.
    """
    logit = A0 + A_INT * np.asarray(interest_, dtype=np.float64) + quality - A_CTX * np.asarray(n_same_)
    theta = np.power(np.asarray(position, dtype=np.float64), -POSITION_EXPONENT)
    return theta / (1.0 + np.exp(-logit))


# ---------------------------------------------------------------------------------------------- the world
@dataclass(frozen=True)
class WorldConfig:
    """The generator's parameters that the latent model depends on (``features.synthetic.SyntheticConfig``)."""

    seed: int
    users: int
    items: int
    categories: int
    requests_per_user_day: float = 2.0

    @property
    def max_slots(self) -> int:
        return math.ceil(SLOTS_PER_REQUEST_RATE * self.requests_per_user_day)

    def request_weights(self) -> np.ndarray:
        """``[N]``: each user's share of the requests, ``rate_n = min(R * activity_n, S)`` normalised."""
        rate = np.minimum(self.requests_per_user_day * user_activity(self.seed, np.arange(self.users)),
                          float(self.max_slots))
        return rate / rate.sum()


def slate_items(world: WorldConfig, user: int, day: int, draws: int, draw_seed: int, request: int,
                first_draw: int = 0) -> np.ndarray:
    """``draws`` item draws of the generator's slate process for (user, day), distinct, in draw order.

    Same sources as ``features.synthetic.requests``: with ``a = u("source", ...)``, ``a < P_INTEREST`` draws an
    item of one of the user's interest categories (slot k with probability w_k; popular low indices first),
    ``a < P_INTEREST + P_POPULAR`` a globally popular item ``floor(M v^3)``, otherwise a uniform item. The
    uniforms are keyed by ``draw_seed`` and ``request`` (the simulation's seed and round), not the world's seed,
    so the simulated requests are new ones; the interests come from the world's seed. ``first_draw`` numbers the
    draws from there (draw s is keyed by s).
    """
    s = np.arange(first_draw, first_draw + draws, dtype=np.int64)
    source = uniform(draw_seed, "source", user, day, request, s)
    pick = uniform(draw_seed, "pick", user, day, request, s)
    v = uniform(draw_seed, "item", user, day, request, s)
    cats, weights = interest_slots(world.seed, world.categories, np.array([user]), day)
    cumulative = np.cumsum(weights[0])
    slot = np.minimum(np.searchsorted(cumulative, pick, side="right"), INTEREST_SLOTS - 1)
    category = cats[0][slot]
    n_in_category = np.floor((world.items + world.categories - 1 - category) / world.categories)
    interest_item = category + world.categories * np.floor(n_in_category * v * v).astype(np.int64)
    popular_item = np.floor(world.items * v * v * v).astype(np.int64)
    uniform_item = np.floor(world.items * v).astype(np.int64)
    items = np.where(source < P_INTEREST, interest_item,
                     np.where(source < P_INTEREST + P_POPULAR, popular_item, uniform_item))
    _, first = np.unique(items, return_index=True)
    return items[np.sort(first)]


def candidate_items(world: WorldConfig, user: int, day: int, count: int, draw_seed: int, request: int,
                    max_draws: int = 10_000) -> np.ndarray:
    """``count`` distinct items of the slate process (draws 0, 1, 2, ... until ``count`` distinct ones or
    ``max_draws`` draws), in first-draw order: :func:`slate_items` continued until the list is full."""
    found: list[int] = []
    seen: set[int] = set()
    start = 0
    while len(found) < count and start < max_draws:
        for item in slate_items(world, user, day, count, draw_seed, request, first_draw=start).tolist():
            if item not in seen and len(found) < count:
                seen.add(item)
                found.append(item)
        start += count
    return np.array(found, dtype=np.int64)


@dataclass(frozen=True)
class ClickTruthRequest:
    """One request of ``raw/click_truth``: its user n, absolute day, items j by position, and the generator's p."""

    user: int
    day: int
    items: np.ndarray
    positions: np.ndarray
    p_click: np.ndarray


def click_truth_error(world: WorldConfig, request: ClickTruthRequest) -> float:
    """Largest |p − p_click| over the request's impressions (n_same over all of the request's items)."""
    p = click_probability(request.positions,
                          interest(world.seed, world.categories, request.user, request.items, request.day),
                          item_quality(world.seed, request.items), n_same(request.items, world.categories))
    return float(np.abs(p - request.p_click).max())
