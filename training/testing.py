"""Small synthetic training lakehouses for tests, benchmarks and smoke runs, written with delta-rs (no JVM).

The product's data path is the feature chain (``jobs/*``: raw events -> samples). This module writes tables with
the same contracts directly (``features/samples`` with its ``ctr.samples.*`` properties, ``features/split``,
``features/vocab``), so training can be tested and timed at any size in seconds. The labels carry a signal a
model can learn: each user prefers one category, and an impression of that category is clicked more often; the
user's history is drawn mostly from that category, so attention over the history helps.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.tableio import Lakehouse

SAMPLES_TABLE = "features/samples"
SPLIT_TABLE = "features/split"
VOCAB_TABLE = "features/vocab"
RANK_EVAL_TABLE = "features/rank_eval"


@dataclass(frozen=True)
class SyntheticSpec:
    days: int = 4  # split: all but the last two days train, then one valid day and one test day
    rows_per_file: int = 500
    files_per_day: int = 2
    users: int = 200
    items: int = 400
    categories: int = 20
    hist_len: int = 10
    set_size: int = 5
    rank_candidates: int = 100  # features/rank_eval: the held-out positive and rank_candidates - 1 negatives
    seed: int = 0
    start: dt.date = dt.date(2026, 1, 1)


def samples_file(spec: SyntheticSpec, day: dt.date, part: int) -> pa.Table:
    """One file's worth of samples for ``day`` (deterministic in (seed, day, part))."""
    rng = np.random.default_rng([spec.seed, day.toordinal(), part])
    n, width, size = spec.rows_per_file, spec.hist_len, spec.set_size
    first_item, first_cate = 2, 2
    item_cate = first_cate + (np.arange(spec.items) % spec.categories)  # category of item (first_item + k)
    users = rng.integers(0, spec.users, n)
    preferred = first_cate + (users * 7) % spec.categories
    # the candidate: of the preferred category half of the time
    match = rng.random(n) < 0.5
    item_k = rng.integers(0, spec.items, n)
    same = (preferred - first_cate) + spec.categories * rng.integers(0, spec.items // spec.categories, n)
    item_k = np.where(match, same, item_k)
    item = first_item + item_k
    cate = item_cate[item_k]
    logit = -2.0 + 3.0 * (cate == preferred)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)

    def history(length_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lengths = rng.integers(0, length_max + 1, n).astype(np.int32)
        from_pref = rng.random((n, length_max)) < 0.8
        k = np.where(from_pref,
                     (preferred - first_cate)[:, None]
                     + spec.categories * rng.integers(0, spec.items // spec.categories, (n, length_max)),
                     rng.integers(0, spec.items, (n, length_max)))
        valid = np.arange(length_max)[None, :] < lengths[:, None]
        items = np.where(valid, first_item + k, 0).astype(np.int64)
        cates = np.where(valid, item_cate[k], 0).astype(np.int64)
        return items, cates, lengths

    hist_item, hist_cate, hist_len = history(width)
    valid = np.arange(width)[None, :] < hist_len[:, None]
    neg_k = rng.integers(0, spec.items, (n, width))
    neg_item = np.where(valid, first_item + neg_k, 0).astype(np.int64)
    neg_cate = np.where(valid, item_cate[neg_k], 0).astype(np.int64)
    neg_sampled = np.where(valid, (rng.random((n, width)) < 0.5).astype(np.int32), 0)
    ctx_item, ctx_cate, ctx_len = history(size)
    clk_item, clk_cate, clk_len = history(size)
    unclk_item, unclk_cate, unclk_len = history(size)

    def lists(array: np.ndarray, kind: pa.DataType | None = None) -> pa.Array:
        kind = kind or pa.int64()
        return pa.FixedSizeListArray.from_arrays(pa.array(array.ravel(), kind), array.shape[1]).cast(
            pa.list_(kind))

    base = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    seconds = np.sort(rng.integers(0, 86_400, n))
    return pa.table({
        "sample_id": pa.array([f"{day.isoformat()}-{part}-{i}" for i in range(n)], pa.string()),
        "event_time": pa.array([base + dt.timedelta(seconds=int(s)) for s in seconds], pa.timestamp("us", "UTC")),
        "label": pa.array(label, pa.int32()),
        "position": pa.array(rng.integers(1, 9, n), pa.int32()),
        "item_idx": pa.array(item, pa.int64()),
        "cate_idx": pa.array(cate, pa.int64()),
        "shop_idx": pa.array(2 + item_k % 13, pa.int64()),
        "brand_idx": pa.array(2 + item_k % 7, pa.int64()),
        "user_idx": pa.array(2 + users, pa.int64()),
        "gender_idx": pa.array(2 + users % 2, pa.int64()),
        "age_bucket_idx": pa.array(2 + users % 5, pa.int64()),
        "city_idx": pa.array(2 + users % 11, pa.int64()),
        "hist_item_idx": lists(hist_item), "hist_cate_idx": lists(hist_cate),
        "hist_len": pa.array(hist_len, pa.int32()),
        "neg_item_idx": lists(neg_item), "neg_cate_idx": lists(neg_cate),
        "neg_is_sampled": lists(neg_sampled, pa.int32()),
        "ctx_item_idx": lists(ctx_item), "ctx_cate_idx": lists(ctx_cate), "ctx_len": pa.array(ctx_len, pa.int32()),
        "clk_item_idx": lists(clk_item), "clk_cate_idx": lists(clk_cate), "clk_len": pa.array(clk_len, pa.int32()),
        "unclk_item_idx": lists(unclk_item), "unclk_cate_idx": lists(unclk_cate),
        "unclk_len": pa.array(unclk_len, pa.int32()),
        "ds": pa.array([day] * n, pa.date32()),
    })


def write_training_lakehouse(lakehouse: Lakehouse, spec: SyntheticSpec = SyntheticSpec()) -> dict[str, list[str]]:
    """Write samples (one file per append), the split and the vocab; returns split -> days."""
    if spec.days < 3:
        raise ValueError("need at least 3 days (train, valid, test)")
    days = [spec.start + dt.timedelta(days=i) for i in range(spec.days)]
    properties = {"ctr.samples.hist_len": str(spec.hist_len), "ctr.samples.ctx_size": str(spec.set_size),
                  "ctr.samples.clk_size": str(spec.set_size), "ctr.samples.unclk_size": str(spec.set_size)}
    for day in days:
        for part in range(spec.files_per_day):
            lakehouse.write_arrow(samples_file(spec, day, part), SAMPLES_TABLE, mode="append", partition_by=["ds"],
                                  properties=properties)
    splits = ["train"] * (spec.days - 2) + ["valid", "test"]
    test_day = [samples_file(spec, days[-1], part) for part in range(spec.files_per_day)]
    lakehouse.write_arrow(rank_eval_rows(spec, pa.concat_tables(test_day), days[-1]), RANK_EVAL_TABLE,
                          mode="overwrite", partition_by=["ds"])
    lakehouse.write_arrow(pa.table({
        "ds": pa.array(days, pa.date32()), "split": pa.array(splits, pa.string()),
        "anchor_ds": pa.array([days[-1]] * len(days), pa.date32()),
    }), SPLIT_TABLE, mode="overwrite")
    sizes = {"user": spec.users, "item": spec.items, "category": spec.categories, "shop": 13, "brand": 7,
             "gender": 2, "age_bucket": 5, "city": 11}
    fields, raw, idx = [], [], []
    for name, count in sizes.items():
        fields += [name] * count
        raw += [f"{name}-{k}" for k in range(count)]
        idx += list(range(2, 2 + count))
    lakehouse.write_arrow(pa.table({
        "field": pa.array(fields, pa.string()), "raw_id": pa.array(raw, pa.string()),
        "idx": pa.array(idx, pa.int64()), "count": pa.array([1] * len(idx), pa.int64()),
        "first_seen_ds": pa.array([days[0]] * len(idx), pa.date32()),
        "ds": pa.array([days[0]] * len(idx), pa.date32()),
    }), VOCAB_TABLE, mode="overwrite", partition_by=["ds"])
    return {name: [str(d) for d, s in zip(days, splits, strict=True) if s == name]
            for name in ("train", "valid", "test")}


def rank_eval_rows(spec: SyntheticSpec, test_samples: pa.Table, anchor: dt.date) -> pa.Table:
    """``features/rank_eval`` rows: each user's latest test-day positive, the positive first among its candidates.

    The negatives are ``rank_candidates - 1`` distinct items other than the positive, drawn with a seeded
    generator (the feature job also excludes every item the user was shown; this small stand-in does not).
    """
    rng = np.random.default_rng([spec.seed, anchor.toordinal(), 99])
    table = test_samples.filter(pc.equal(test_samples.column("label"), 1)).sort_by(
        [("user_idx", "ascending"), ("event_time", "descending"), ("sample_id", "descending")])
    users = table.column("user_idx").to_numpy()
    first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, dtype=bool)
    held_out = table.filter(pa.array(first))
    item_cate = 2 + (np.arange(spec.items) % spec.categories)
    width = spec.rank_candidates
    if width > spec.items:
        raise ValueError(f"rank_candidates {width} exceeds the {spec.items} items")
    cand_k = np.empty((held_out.num_rows, width), dtype=np.int64)
    for row, item in enumerate(held_out.column("item_idx").to_numpy()):
        others = np.delete(np.arange(spec.items), item - 2)
        cand_k[row] = np.r_[item - 2, rng.choice(others, width - 1, replace=False)]

    def lists(array: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(array.ravel(), pa.int64()), width).cast(pa.list_(pa.int64()))

    columns = {name: held_out.column(name) for name in held_out.column_names if name != "ds"}
    columns.update({"cand_item_idx": lists(2 + cand_k), "cand_cate_idx": lists(item_cate[cand_k]),
                    "cand_shop_idx": lists(2 + cand_k % 13), "cand_brand_idx": lists(2 + cand_k % 7),
                    "ds": pa.array([anchor] * held_out.num_rows, pa.date32())})
    return pa.table(columns)
