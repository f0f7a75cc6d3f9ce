"""Benchmark of the training reader: Petastorm -> KeyedJaggedTensor batches against a bare pyarrow scan.

    python -m benchmarks.loader --rows 400000
    python -m benchmarks.loader --rows 400000 1600000      # one fresh process per size: peak RSS per size

Writes a synthetic ``features/samples``-like table with delta-rs (random ids; ``hist_item``/``hist_cate``/
``neg_item``/``neg_cate`` padded to L = 50 with random lengths 0..50; one file of ``--rows-per-file`` rows per
append, so a bigger table has more files of the same size, not bigger ones). Then, in a fresh process that only
reads (so the writer's memory does not count), it measures

(a) ``training.reader.read_batches`` alone: batches of 1024 with the features item, cate, user, hist_item,
    hist_cate, iterated to the end (samples/s);
(b) a bare ``pyarrow.parquet`` ``iter_batches`` scan of the same files and columns, batches of 1024, no
    conversion (rows/s): the floor of any Parquet reader here;
(c) the ratio (a) / (b);
(d) for reference, pyarrow's scan followed by a KJT conversion of each 1,024-row batch without Petastorm (the
    reader's filler conversion: list columns from their flat values, strings through Python lists);

and the process's peak RSS (``resource.getrusage``) after the imports, after (b) and after (a). Each figure is
printed with the command that reproduces it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = ["item", "cate", "user", "hist_item", "hist_cate"]
TABLE = "features/samples"
BATCH = 1024


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_table(root: str, rows: int, rows_per_file: int, length: int, seed: int) -> int:
    """Append ``rows`` synthetic samples in files of ``rows_per_file`` rows; returns the number of files."""
    import numpy as np
    import pyarrow as pa

    from features.tableio import Lakehouse

    lakehouse = Lakehouse(root)
    rng = np.random.default_rng(seed)
    files = 0
    for start in range(0, rows, rows_per_file):
        n = min(rows_per_file, rows - start)
        lengths = rng.integers(0, length + 1, size=n, dtype=np.int32)
        keep = np.arange(length) < lengths[:, None]
        offsets = pa.array(np.arange(0, (n + 1) * length, length, dtype=np.int32))

        def padded(high: int, n: int = n, keep: np.ndarray = keep, offsets: pa.Array = offsets) -> pa.Array:
            ids = np.where(keep, rng.integers(2, high, size=(n, length)), 0)
            return pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1), pa.int64()))

        day = dt.date(2026, 1, 1) + dt.timedelta(days=files % 7)
        table = pa.table({
            "sample_id": pa.array(np.char.add("s", np.arange(start, start + n).astype(str))),
            "label": pa.array(rng.integers(0, 2, size=n, dtype=np.int32)),
            "user_idx": pa.array(rng.integers(2, 100_000, size=n)),
            "item_idx": pa.array(rng.integers(2, 200_000, size=n)),
            "cate_idx": pa.array(rng.integers(2, 1_000, size=n)),
            "hist_item_idx": padded(200_000),
            "hist_cate_idx": padded(1_000),
            "hist_len": pa.array(lengths),
            "neg_item_idx": padded(200_000),
            "neg_cate_idx": padded(1_000),
            "ds": pa.array([day] * n, pa.date32()),
        })
        lakehouse.write_arrow(table, TABLE, mode="append", partition_by=["ds"])
        files += 1
    return files


def measure(root: str, command: str) -> None:
    """Time (b), (a), (d) on the table under ``root``; print figures, peak RSS and the reproducing command."""
    import warnings

    import pyarrow.parquet as pq

    with warnings.catch_warnings():  # imported here, not inside the timed first read: (a) is a steady-state epoch
        warnings.simplefilter("ignore")
        import petastorm  # noqa: F401

    from features.tableio import Lakehouse
    from training.features import feature_specs
    from training.reader import _arrow_column_to_numpy, _needed_columns, _to_batch, read_batches, resolve_files

    rss_imports = _rss_mib()
    version, files = resolve_files(Lakehouse(root), TABLE)
    columns = _needed_columns(feature_specs(tuple(FEATURES)), ())
    groups = sum(pq.ParquetFile(f[len("file://"):]).metadata.num_row_groups for f in files)

    started, rows = time.perf_counter(), 0
    for uri in files:
        for record_batch in pq.ParquetFile(uri[len("file://"):]).iter_batches(batch_size=BATCH, columns=columns):
            rows += record_batch.num_rows
    bare_s = time.perf_counter() - started
    rss_bare = _rss_mib()

    started, samples, batches = time.perf_counter(), 0, 0
    with read_batches(files, FEATURES, BATCH, seed=1) as stream:
        for batch in stream:
            samples += len(batch)
            batches += 1
    reader_s = time.perf_counter() - started
    rss_reader = _rss_mib()
    assert samples == rows, (samples, rows)

    specs = feature_specs(tuple(FEATURES))
    started = time.perf_counter()
    for uri in files:
        for record_batch in pq.ParquetFile(uri[len("file://"):]).iter_batches(batch_size=BATCH, columns=columns):
            _to_batch({name: _arrow_column_to_numpy(record_batch.column(name)) for name in columns}, specs, ())
    direct_s = time.perf_counter() - started

    print(f"\ntable: {rows:,} rows in {len(files)} files, {groups} row groups (version {version}); columns "
          f"{', '.join(columns)}; L = 50; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"(a) read_batches -> KJT, batch {BATCH}: {reader_s:.2f} s, {samples / reader_s:,.0f} samples/s "
          f"({batches} batches)")
    print(f"(b) bare pyarrow iter_batches, batch {BATCH}: {bare_s:.2f} s, {rows / bare_s:,.0f} rows/s")
    print(f"(c) ratio (a)/(b): {bare_s / reader_s:.3f}")
    print(f"(d) reference, pyarrow + the same KJT conversion without Petastorm: {direct_s:.2f} s, "
          f"{rows / direct_s:,.0f} samples/s")
    print(f"peak RSS: {rss_imports:,.0f} MiB after imports, {rss_bare:,.0f} MiB after (b), "
          f"{rss_reader:,.0f} MiB after (a)")
    print(f"reproduce: {command}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[400_000], help="table size(s); one process each")
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--length", type=int, default=50, help="fixed length L of the sequence columns")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lakehouse", help="lakehouse root (default: a temporary folder, deleted afterwards)")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)  # the reading child
    args = parser.parse_args(argv)

    if args.measure_only:
        measure(args.lakehouse, os.environ.get("LOADER_BENCH_COMMAND", ""))
        return 0
    for rows in args.rows:
        command = shlex.join([".venv/bin/python", "-m", "benchmarks.loader", "--rows", str(rows),
                              "--rows-per-file", str(args.rows_per_file), "--length", str(args.length),
                              "--seed", str(args.seed)])
        with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
            root = str(Path(args.lakehouse or tmp) / f"rows-{rows}")
            started = time.perf_counter()
            files = write_table(root, rows, args.rows_per_file, args.length, args.seed)
            print(f"wrote {rows:,} rows in {files} files in {time.perf_counter() - started:.1f} s ({root})", flush=True)
            child = [sys.executable, "-m", "benchmarks.loader", "--measure-only", "--lakehouse", root]
            done = subprocess.run(child, env={**os.environ, "LOADER_BENCH_COMMAND": command}, check=False)
            if done.returncode != 0:
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
