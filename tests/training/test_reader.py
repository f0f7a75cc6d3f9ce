"""The Petastorm reader (training/reader.py): exact rows per shard, pinned versions, days, determinism, equal
steps on 2 real gloo processes, and the checks that fail before training (RELIABILITY.md guarantees 12 and 15).

Every table here is written with delta-rs (``Lakehouse.write_arrow``); one append = one file = one row group.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from features.tableio import Lakehouse, TableNotFoundError
from training.reader import (
    Batch,
    EmptySplitError,
    IndexOutOfRangeError,
    NotEnoughDataError,
    SequenceLengthError,
    check_index_ranges,
    check_shardable,
    expand_candidates,
    id_frequencies,
    negative_fallback_counts,
    rank_candidate_count,
    read_batches,
    resolve_files,
    row_group_count,
    synchronised,
)

pytestmark = [  # Petastorm's noise: pyarrow 14's legacy-API deprecations, and files it leaves to the GC
    pytest.mark.filterwarnings("ignore::FutureWarning:petastorm"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

D1, D2, D3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)
L = 3
TABLE = "features/samples"
FEATURES = ["item", "cate", "user", "hist_item", "hist_cate", "neg_item"]
IDS = pa.list_(pa.int64())


def samples(rows: list[dict]) -> pa.Table:
    """A features/samples slice with the columns the reader uses; sequences padded to L = 3 by the caller."""
    def col(name, typ):
        return pa.array([row[name] for row in rows], typ)

    return pa.table({
        "sample_id": col("sample_id", pa.string()),
        "label": col("label", pa.int32()),
        "user_idx": col("user_idx", pa.int64()),
        "item_idx": col("item_idx", pa.int64()),
        "cate_idx": col("cate_idx", pa.int64()),
        "hist_item_idx": col("hist_item_idx", IDS),
        "hist_cate_idx": col("hist_cate_idx", IDS),
        "hist_len": col("hist_len", pa.int32()),
        "neg_item_idx": col("neg_item_idx", IDS),
        "neg_cate_idx": col("neg_cate_idx", IDS),
        "neg_is_sampled": col("neg_is_sampled", pa.list_(pa.int32())),
        "ds": col("ds", pa.date32()),
    })


def row(k: int, day: dt.date = D1, prefix: str = "s") -> dict:
    """Row number k: every value derived from k, so a test can say which row it expects."""
    n = k % (L + 1)  # history lengths 0..3

    def seq(base):
        return [base + k + t for t in range(n)] + [0] * (L - n)

    return {"sample_id": f"{prefix}{k:03d}", "label": k % 2, "user_idx": 2 + k % 4, "item_idx": 10 + k,
            "cate_idx": 2 + k % 5, "hist_item_idx": seq(100), "hist_cate_idx": seq(200), "hist_len": n,
            "neg_item_idx": seq(300), "neg_cate_idx": seq(400), "neg_is_sampled": [1] * n + [0] * (L - n), "ds": day}


def expected_features(r: dict) -> dict[str, list[int]]:
    n = r["hist_len"]
    return {"item": [r["item_idx"]], "cate": [r["cate_idx"]], "user": [r["user_idx"]],
            "hist_item": r["hist_item_idx"][:n], "hist_cate": r["hist_cate_idx"][:n], "neg_item": r["neg_item_idx"][:n]}


def write(lh: Lakehouse, rows: list[dict], *, mode: str = "append") -> int:
    return lh.write_arrow(samples(rows), TABLE, mode=mode, partition_by=["ds"])


def kjt_rows(batch: Batch) -> dict[str, dict[str, list[int]]]:
    """sample_id -> feature -> that row's ids, read back from the KeyedJaggedTensor."""
    per_key = {key: [t.tolist() for t in jagged.to_dense()] for key, jagged in batch.sparse.to_dict().items()}
    return {sid: {key: per_key[key][i] for key in per_key} for i, sid in enumerate(batch.sample_ids)}


def read_ids(files, **kwargs) -> list[str]:
    kwargs.setdefault("batch_size", 4)
    with read_batches(files, ["item"], **kwargs) as batches:
        return [sid for batch in batches for sid in batch.sample_ids]


@pytest.fixture
def lh(tmp_path) -> Lakehouse:
    return Lakehouse(tmp_path / "lh")


# --------------------------------------------------------------------------------------------- batch layout
def test_kjt_of_the_docstring_example_has_exact_keys_lengths_values_and_no_padding(lh):
    rows = [row(0), row(1)]
    rows[0].update(item_idx=5, hist_item_idx=[7, 9, 0], hist_len=2, neg_item_idx=[3, 4, 0], neg_is_sampled=[0, 1, 0])
    rows[1].update(item_idx=6, hist_item_idx=[0, 0, 0], hist_len=0, neg_item_idx=[0, 0, 0], neg_is_sampled=[0, 0, 0])
    table = samples(rows).append_column("cand_item_idx", pa.array([[3, 4], [5, 0]], IDS))
    lh.write_arrow(table, TABLE, partition_by=["ds"])
    _, files = resolve_files(lh, TABLE)

    batches = list(read_batches(files, ["item", "hist_item", "neg_item", "cand_item"], 2, shuffle=False,
                                extra_columns=["hist_len", "neg_is_sampled"]))
    assert len(batches) == 1
    batch = batches[0]
    assert batch.sparse.keys() == ["item", "hist_item", "neg_item", "cand_item"]
    assert batch.sparse.lengths().tolist() == [1, 1, 2, 0, 2, 0, 2, 2]
    assert batch.sparse.values().tolist() == [5, 6, 7, 9, 3, 4, 3, 4, 5, 0]  # the only 0 is a candidate's own value
    assert batch.sparse.values().dtype == torch.int64
    assert batch.sparse.stride() == 2
    assert batch.labels.tolist() == [0.0, 1.0] and batch.labels.dtype == torch.float32
    assert batch.groups.tolist() == [2, 3] and batch.groups.dtype == torch.int64
    assert batch.weights.tolist() == [1.0, 1.0]
    assert batch.sample_ids.tolist() == ["s000", "s001"]
    assert batch.extras["hist_len"].tolist() == [2, 0]
    assert batch.extras["neg_is_sampled"].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert len(batch) == 2

    masked = batch.masked()
    assert masked.weights.tolist() == [0.0, 0.0] and masked.sparse is batch.sparse
    assert masked.sample_ids.tolist() == ["", ""]
    filler = Batch.filler(["item", "hist_item", "cand_item"], "cpu", widths={"cand_item": 2},
                          extra_shapes={"neg_is_sampled": (L,)})
    assert len(filler) == 1 and filler.weights.tolist() == [0.0]
    assert filler.sparse.lengths().tolist() == [1, 0, 2] and filler.sparse.values().tolist() == [0, 0, 0]
    assert filler.extras["neg_is_sampled"].shape == (1, L)


def test_lengths_outside_0_to_L_are_a_clear_error_raised_in_the_consumer(lh):
    bad = row(1)
    bad["hist_len"] = L + 1
    write(lh, [row(0), bad])
    _, files = resolve_files(lh, TABLE)
    before = set(threading.enumerate())
    with pytest.raises(SequenceLengthError, match=r"'hist_len' holds 4, outside \[0, 3\] of 'hist_item_idx'"):
        list(read_batches(files, ["hist_item"], 8))  # raised in the reader thread, re-raised here
    assert set(threading.enumerate()) <= before


# ------------------------------------------------------------------------------------------ shards and rows
def test_two_shards_read_every_row_once_and_each_kjt_row_matches_its_table_row(lh):
    expected = {}
    for file_index, size in enumerate([3, 5, 1, 4, 6]):
        rows = [row(10 * file_index + k, day=[D1, D2, D3][file_index % 3]) for k in range(size)]
        write(lh, rows)
        expected.update({r["sample_id"]: r for r in rows})
    version, files = resolve_files(lh, TABLE)
    assert version == 4 and row_group_count(files) == 5 and files == sorted(files)
    per_rank_rows = check_shardable(files, 2)

    seen: list[str] = []
    for rank in (0, 1):
        stream = read_batches(files, FEATURES, 4, rank=rank, world_size=2, seed=7)
        assert stream.shard_rows == per_rank_rows[rank]
        shard: list[str] = []
        for batch in stream:
            assert len(batch) <= 4
            for sample_id, features in kjt_rows(batch).items():
                assert features == expected_features(expected[sample_id]), sample_id
            shard.extend(batch.sample_ids)
        # Petastorm's rule: row group i of the sorted file list goes to rank i % 2 (each file is one row group)
        owned = {sid for i, uri in enumerate(files) if i % 2 == rank
                 for sid in pq.read_table(uri[len("file://"):], columns=["sample_id"])["sample_id"].to_pylist()}
        assert set(shard) == owned and len(shard) == per_rank_rows[rank] == stream.rows_yielded
        seen.extend(shard)
    assert sorted(seen) == sorted(expected)  # every sample exactly once across the two ranks


def test_batches_are_exactly_batch_size_across_row_groups_and_drop_last(lh):
    for f, size in enumerate([3, 5, 4]):
        write(lh, [row(10 * f + k) for k in range(size)])
    _, files = resolve_files(lh, TABLE)
    with read_batches(files, ["item"], 5, shuffle=False) as stream:
        assert [len(b) for b in stream] == [5, 5, 2]
    stream = read_batches(files, ["item"], 5, seed=3, drop_last=True)
    assert [len(b) for b in stream] == [5, 5] and stream.rows_remaining == 2


def test_a_pinned_version_reads_its_own_rows_after_newer_writes(lh):
    write(lh, [row(0), row(1)])
    write(lh, [row(2)])
    write(lh, [row(5, day=D1, prefix="new")], mode="overwrite")
    assert lh.version(TABLE) == 2
    version, files = resolve_files(lh, TABLE, version=0)
    assert version == 0 and sorted(read_ids(files)) == ["s000", "s001"]
    assert sorted(read_ids(resolve_files(lh, TABLE, version=1)[1])) == ["s000", "s001", "s002"]
    assert read_ids(resolve_files(lh, TABLE)[1]) == ["new005"]

    from deltalake import DeltaTable  # tests may touch delta-rs directly; the project goes through tableio

    DeltaTable(lh.path(TABLE)).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(TableNotFoundError, match="version 0 of table 'features/samples'"):
        resolve_files(lh, TABLE, version=0)


def test_days_keep_only_the_asked_ds_partitions(lh):
    write(lh, [row(0, D1), row(1, D2), row(2, D3), row(3, D2)])
    _, files = resolve_files(lh, TABLE, days=[D2, "2026-01-03"])
    assert sorted(read_ids(files)) == ["s001", "s002", "s003"]
    with pytest.raises(KeyError, match="ds is a partition column"):  # Petastorm does not add it: not asked for
        list(read_batches(files, ["item"], 4, extra_columns=["ds"]))


def test_same_seed_and_epoch_repeat_the_order_another_epoch_changes_it(lh):
    for f in range(6):
        write(lh, [row(10 * f + k) for k in range(10)])
    _, files = resolve_files(lh, TABLE)
    first = read_ids(files, seed=3, epoch=0)
    assert sorted(first) == sorted(f"s{10 * f + k:03d}" for f in range(6) for k in range(10))
    assert read_ids(list(reversed(files)), seed=3, epoch=0) == first  # the caller's file order does not matter
    assert read_ids(files, seed=3, epoch=1) != first
    assert read_ids(files, seed=4, epoch=0) != first
    unshuffled = read_ids(files, shuffle=False)
    assert unshuffled == read_ids(files, shuffle=False, epoch=5)
    # within a file (one row group) the unshuffled order is the file's own order
    assert unshuffled[:10] == sorted(unshuffled[:10])


# ---------------------------------------------------------------------------- equal steps on 2 gloo ranks
def _sync_worker(rank: int, init_file: str, files: list[str], out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        result = {}
        for mode in ("train", "eval"):
            stream = read_batches(files, ["item", "hist_item"], 4, rank=rank, world_size=2, seed=11,
                                  shuffle=mode == "train")
            steps = synchronised(stream, mode=mode, features=["item", "hist_item"], device="cpu")
            batches = [(b.sample_ids.tolist(), b.weights.tolist(), len(b)) for b in steps]
            result[mode] = {"batches": batches, "stats": vars(steps.stats)}
        # a rank with no data at all: fillers built from nothing, same number of forward passes
        own = list(read_batches(files, ["item"], 8, shuffle=False)) if rank == 0 else []
        steps = synchronised(iter(own), mode="eval", features=["item", "hist_item"], device="cpu")
        result["empty"] = [(b.weights.tolist(), b.sparse.keys(), b.sparse.lengths().tolist()) for b in steps]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_uneven_shards_take_equal_steps_on_two_gloo_processes(lh, tmp_path):
    import torch.multiprocessing as mp

    # sorted files: ds=01 (5 rows), ds=02 (11 rows), ds=03 (2 rows) -> rank 0 gets 5 + 2 = 7 rows, rank 1 gets 11
    for day, size in ((D1, 5), (D2, 11), (D3, 2)):
        write(lh, [row(100 * day.day + k, day) for k in range(size)])
    _, files = resolve_files(lh, TABLE)
    assert check_shardable(files, 2) == [7, 11]

    context = mp.start_processes(_sync_worker, args=(str(tmp_path / "init"), files, str(tmp_path)), nprocs=2,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 300
    try:
        while not context.join(timeout=5):
            assert time.monotonic() < deadline, "the ranks did not finish: a hang"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    # train: batches of 4 -> rank 0 has 2 (4 + 3 rows), rank 1 has 3 (4 + 4 + 3): both stop after 2 steps
    assert [n for _, _, n in r0["train"]["batches"]] == [4, 3]
    assert [n for _, _, n in r1["train"]["batches"]] == [4, 4]
    assert r0["train"]["stats"]["steps"] == r1["train"]["stats"]["steps"] == 2
    assert (r0["train"]["stats"]["rows_not_used"], r1["train"]["stats"]["rows_not_used"]) == (0, 3)
    assert r0["train"]["stats"]["rows_not_used_all_ranks"] == r1["train"]["stats"]["rows_not_used_all_ranks"] == 3

    # eval: 3 steps everywhere; rank 0's third is a filler of weight 0; real rows = every row exactly once
    assert len(r0["eval"]["batches"]) == len(r1["eval"]["batches"]) == 3
    filler_ids, filler_weights, _ = r0["eval"]["batches"][2]
    assert set(filler_weights) == {0.0} and set(filler_ids) == {""}
    assert r0["eval"]["stats"]["filler_batches"] == 1 and r1["eval"]["stats"]["filler_batches"] == 0
    real = [sid for result in (r0, r1) for ids, weights, _ in result["eval"]["batches"]
            for sid, w in zip(ids, weights, strict=True) if w == 1.0]
    assert sorted(real) == sorted(f"s{100 * d + k:03d}" for d, size in ((1, 5), (2, 11), (3, 2)) for k in range(size))

    # a rank without any data runs Batch.filler for each of the other rank's steps (18 rows / 8 = 3 batches)
    assert len(r0["empty"]) == len(r1["empty"]) == 3
    assert all(weights == [0.0] and keys == ["item", "hist_item"] and lengths == [1, 0]
               for weights, keys, lengths in r1["empty"])


def test_without_a_process_group_synchronised_is_a_pass_through(lh):
    write(lh, [row(k) for k in range(6)])
    _, files = resolve_files(lh, TABLE)
    steps = synchronised(read_batches(files, ["item"], 4, drop_last=True), mode="train", features=["item"])
    assert [len(b) for b in steps] == [4]
    assert (steps.stats.steps, steps.stats.rows, steps.stats.rows_not_used, steps.stats.rows_not_used_all_ranks) == (
        1, 4, 2, 2)


# --------------------------------------------------------------------------- failing before training
def test_one_row_group_on_two_ranks_is_our_error_before_reading(lh):
    write(lh, [row(0), row(1)])
    _, files = resolve_files(lh, TABLE)
    with pytest.raises(NotEnoughDataError, match="1 row group.*cannot feed 2 ranks.*at most 1 rank"):
        check_shardable(files, 2)
    before = set(threading.enumerate())
    with pytest.raises(NotEnoughDataError):
        read_batches(files, ["item"], 4, rank=1, world_size=2)
    assert set(threading.enumerate()) <= before


def test_an_empty_split_is_a_clear_error(lh):
    write(lh, [row(0, D1)])
    message = r"'features/samples' at version 0 has no data file for days \['2026-01-05'\]"
    with pytest.raises(EmptySplitError, match=message):
        resolve_files(lh, TABLE, days=[dt.date(2026, 1, 5)])


def test_out_of_range_indices_are_found_before_training(lh, tmp_path):
    write(lh, [row(0), row(1)])  # item_idx 10, 11; hist_item up to 102 (row 1: [101])
    _, files = resolve_files(lh, TABLE)
    check_index_ranges(files, ["item", "cate"], {"item": 12, "cate": 7})
    with pytest.raises(IndexOutOfRangeError, match="column 'item_idx' holds the index 11 .* 'item' has size 11"):
        check_index_ranges(files, ["item"], {"item": 11})
    with pytest.raises(IndexOutOfRangeError, match="column 'hist_item_idx' holds the index 101"):
        check_index_ranges(files, ["item", "hist_item"], {"item": 101})

    # a file without statistics is scanned instead
    bare = tmp_path / "bare.parquet"
    table = samples([row(3)])
    pq.write_table(table.set_column(table.schema.get_field_index("neg_item_idx"), "neg_item_idx",
                                    pa.array([[5, -2, 0]], IDS)), bare, write_statistics=False)
    statistics = pq.ParquetFile(bare).metadata.row_group(0).column(0).statistics
    assert statistics is None or not statistics.has_min_max
    with pytest.raises(IndexOutOfRangeError, match="column 'neg_item_idx' holds the negative index -2"):
        check_index_ranges([bare.as_uri()], ["item", "neg_item"], {"item": 1000})


def test_id_frequencies_count_each_row_once_and_ignore_padding(lh):
    rows = [row(k) for k in range(4)]
    # item table: item + hist_item; cate table: cate (hand counts below)
    rows[0].update(item_idx=2, hist_item_idx=[2, 3, 0], hist_len=2, cate_idx=1)  # items {2, 3}; 2 twice, once
    rows[1].update(item_idx=3, hist_item_idx=[3, 9, 9], hist_len=1, cate_idx=1)  # items {3}; 9 beyond the length
    rows[2].update(item_idx=4, hist_item_idx=[5, 5, 0], hist_len=2, cate_idx=2)  # items {4, 5}
    rows[3].update(item_idx=2, hist_item_idx=[0, 0, 0], hist_len=0, cate_idx=1)  # items {2}
    write(lh, rows[:2])
    write(lh, rows[2:])
    _, files = resolve_files(lh, TABLE)
    counts = id_frequencies(files, ["item", "hist_item", "cate"], {"item": 10, "cate": 3})
    assert counts["item"].tolist() == [0, 0, 2, 2, 1, 1, 0, 0, 0, 0]
    assert counts["cate"].tolist() == [0, 3, 1]
    with pytest.raises(IndexOutOfRangeError, match="table 'item' of size 5 gets the index 5"):
        id_frequencies(files, ["item", "hist_item"], {"item": 5})


# ------------------------------------------------------------------------------------ the prefetch thread
def test_leaving_the_loop_early_stops_the_reader_thread(lh):
    for f in range(3):
        write(lh, [row(10 * f + k) for k in range(10)])
    _, files = resolve_files(lh, TABLE)
    before = set(threading.enumerate())
    for batch in read_batches(files, FEATURES, 2, prefetch=2):
        assert len(batch) == 2
        assert any(t.name == "training-reader-prefetch" for t in threading.enumerate())
        break
    assert set(threading.enumerate()) <= before  # our thread and Petastorm's ventilator are gone

    stream = read_batches(files, FEATURES, 2, prefetch=1)
    next(stream)
    stream.close()
    assert set(threading.enumerate()) <= before
    with pytest.raises(StopIteration):
        next(stream)


def test_a_filler_from_the_stream_is_shaped_like_the_data(lh):
    write(lh, [row(3), row(2)])
    _, files = resolve_files(lh, TABLE)
    with read_batches(files, ["item", "hist_item"], 4, extra_columns=["neg_is_sampled"]) as stream:
        filler = stream.filler()
    assert len(filler) == 1 and filler.weights.tolist() == [0.0]
    assert filler.extras["neg_is_sampled"].shape == (1, L)
    assert np.array_equal(filler.sparse.lengths().numpy(), [1, 3])


# ----------------------------------------------------------------------------------- rank_eval candidates
def rank_eval_rows(n: int, width: int = 3) -> pa.Table:
    """rank_eval rows: sample row k with candidates [item_idx, 500 + 10k + 1, ...] (the positive first)."""
    table = samples([row(k) for k in range(n)])
    cands = [[10 + k] + [500 + 10 * k + c for c in range(1, width)] for k in range(n)]
    return table.append_column("cand_item_idx", pa.array(cands, IDS)).append_column(
        "cand_cate_idx", pa.array([[c % 7 for c in cs] for cs in cands], IDS))


def test_expand_candidates_makes_one_row_per_candidate_with_the_positive_first():
    chunk = {"sample_id": np.array(["a", "b"]), "label": np.array([1, 1]), "user_idx": np.array([5, 6]),
             "item_idx": np.array([7, 8]), "hist_item_idx": np.array([[1, 2], [3, 0]]),
             "cand_item_idx": np.array([[7, 3, 9], [8, 4, 2]]), "cand_cate_idx": np.array([[1, 1, 2], [3, 3, 3]])}
    out = expand_candidates(chunk)
    assert out["item_idx"].tolist() == [7, 3, 9, 8, 4, 2]
    assert out["cate_idx"].tolist() == [1, 1, 2, 3, 3, 3]
    assert out["label"].tolist() == [1, 0, 0, 1, 0, 0]
    assert out["user_idx"].tolist() == [5, 5, 5, 6, 6, 6]
    assert out["sample_id"].tolist() == ["a#0", "a#1", "a#2", "b#0", "b#1", "b#2"]
    assert out["hist_item_idx"].tolist() == [[1, 2]] * 3 + [[3, 0]] * 3
    assert "cand_item_idx" not in out and "cand_cate_idx" not in out


def test_rank_eval_rows_shard_by_row_on_two_ranks_and_keep_users_whole(lh):
    # one file, one row group, 5 rows: row-group sharding could not feed 2 ranks; row sharding can
    lh.write_arrow(rank_eval_rows(5), "features/rank_eval", mode="append", partition_by=["ds"])
    files = resolve_files(lh, "features/rank_eval")[1]
    assert rank_candidate_count(files) == 3
    seen = {}
    for rank in (0, 1):
        with read_batches(files, ["item", "cate", "hist_item"], 6, rank=rank, world_size=2, shuffle=False,
                          shard="rows", candidates=True) as batches:
            batches = list(batches)
            assert sum(len(b) for b in batches) == 3 * len(range(rank, 5, 2))
            assert all(len(b) % 3 == 0 for b in batches)  # every user's candidates in one batch
            for batch in batches:
                per_row = kjt_rows(batch)
                for i, sid in enumerate(batch.sample_ids):
                    seen[sid] = (per_row[sid]["item"], float(batch.labels[i]))
    assert sorted(seen) == sorted(f"s{k:03d}#{c}" for k in range(5) for c in range(3))
    assert seen["s002#0"] == ([12], 1.0) and seen["s002#2"] == ([522], 0.0)


def test_negative_fallback_counts_only_valid_steps(lh):
    rows = [row(k) for k in range(8)]  # hist_len k % 4
    for r in rows:  # sampled on even steps; the padding holds 1s that must not count
        r["neg_is_sampled"] = [1 - t % 2 if t < r["hist_len"] else 1 for t in range(L)]
    write(lh, rows)
    sampled, steps = negative_fallback_counts(resolve_files(lh, TABLE)[1])
    # lengths 0+1+2+3+0+1+2+3 = 12 steps; sampled steps per row 0, 1, 1, 2 (twice) = 8
    assert (sampled, steps) == (8, 12)


def _petastorm_chunks(paths: list[str], columns: list[str], *, flat: bool) -> list[dict[str, np.ndarray]]:
    from petastorm import make_batch_reader

    from training.reader import use_flat_list_results

    with make_batch_reader([f"file://{p}" for p in paths], schema_fields=columns, reader_pool_type="dummy",
                           num_epochs=1, shuffle_row_groups=False) as reader:
        if flat:
            use_flat_list_results(reader)
        return [{name: getattr(chunk, name) for name in columns} for chunk in reader]


def test_flat_list_results_equal_petastorms_own_conversion_value_dtype_and_shape(tmp_path):
    # two files, one with two row groups; int32 and int64 lists of width 3, scalars and strings alongside
    columns = ["sample_id", "label", "hist", "wide"]
    paths = []
    for index, rows in enumerate([5, 4]):
        table = pa.table({
            "sample_id": pa.array([f"s{index}-{i}" for i in range(rows)]),
            "label": pa.array(np.arange(rows) % 2, pa.int32()),
            "hist": pa.array([[i, i + 1, 0] for i in range(rows)], pa.list_(pa.int32())),
            "wide": pa.array([[10 * i, -i, 7] for i in range(rows)], pa.list_(pa.int64())),
        })
        path = tmp_path / f"part-{index}.parquet"
        pq.write_table(table, path, row_group_size=3)
        paths.append(str(path))
    plain = _petastorm_chunks(paths, columns, flat=False)
    flat = _petastorm_chunks(paths, columns, flat=True)
    assert [len(c["label"]) for c in flat] == [3, 2, 3, 1]
    assert len(plain) == len(flat)
    for ours, theirs in zip(flat, plain, strict=True):
        for name in columns:
            assert ours[name].dtype == theirs[name].dtype, name
            assert ours[name].shape == theirs[name].shape, name
            np.testing.assert_array_equal(ours[name], theirs[name])
    np.testing.assert_array_equal(flat[1]["wide"], [[30, -3, 7], [40, -4, 7]])


def test_flat_list_results_leave_unequal_lengths_to_petastorms_own_error(tmp_path):
    path = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"hist": pa.array([[1, 2], [3]], pa.list_(pa.int64()))}), path)
    with pytest.raises(RuntimeError, match="expected to be the same length"):
        _petastorm_chunks([str(path)], ["hist"], flat=True)


def test_fixed_width_matrix_takes_only_equal_length_numeric_lists_without_nulls():
    from training.reader import _fixed_width_matrix

    sliced = pa.chunked_array([pa.array([[9, 9], [1, 2], [3, 4]], pa.list_(pa.int64())).slice(1)])
    np.testing.assert_array_equal(_fixed_width_matrix(sliced), [[1, 2], [3, 4]])
    assert _fixed_width_matrix(pa.chunked_array([pa.array([[1, 2], [3]])])) is None
    assert _fixed_width_matrix(pa.chunked_array([pa.array([[1, None], [3, 4]])])) is None
    assert _fixed_width_matrix(pa.chunked_array([pa.array([[1, 2], None])])) is None
    assert _fixed_width_matrix(pa.chunked_array([pa.array([["a"], ["b"]])])) is None
    assert _fixed_width_matrix(pa.chunked_array([pa.array([1, 2])])) is None


def test_read_batches_uses_the_flat_list_results(lh, monkeypatch):
    import training.reader as reader_module

    calls = []
    original = reader_module.use_flat_list_results
    monkeypatch.setattr(reader_module, "use_flat_list_results", lambda r: calls.append(r) or original(r))
    rows = [row(k) for k in range(8)]
    write(lh, rows)
    with read_batches(lh.files(TABLE), ["item", "hist_item"], batch_size=4) as stream:
        read = {sid: features for batch in stream for sid, features in kjt_rows(batch).items()}
    assert read == {r["sample_id"]: {k: v for k, v in expected_features(r).items() if k in ("item", "hist_item")}
                    for r in rows}
    assert calls and type(calls[0]._results_queue_reader).__name__ == "FlatListResultsQueueReader"
