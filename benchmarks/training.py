"""Benchmark of training throughput: samples/s of BaseModel and DIN on N CPU ranks (reader included), and peak RSS.

    python -m benchmarks.training --model din --train-rows 400000
    python -m benchmarks.training --model base din --train-rows 200000 800000      # RSS at two table sizes

Writes a synthetic training lakehouse (``training.testing``; L = 50, 100k items, 50k users) with ``--train-rows``
training samples, then runs the real entry point, ``torchrun --nproc_per_node=N -m training.train``, for one epoch
(batch 1024, embedding dim 18 unless overridden) and reads the trainer's own figures back from
``training/metrics``: the epoch's samples/s over all ranks (wall clock of the epoch, reader included) and the
largest peak RSS of a rank. Evaluation is not timed. Prints each figure and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["din"])
    parser.add_argument("--train-rows", type=int, nargs="+", default=[400_000])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--embedding-dim", type=int, default=18)
    parser.add_argument("--hist-len", type=int, default=50)
    parser.add_argument("--rows-per-file", type=int, default=50_000)
    parser.add_argument("--set", action="append", default=[], help="extra trainer override, e.g. train.device=cuda")
    args = parser.parse_args(argv)

    from features.tableio import Lakehouse
    from training.testing import SyntheticSpec, write_training_lakehouse

    results = []
    for rows in args.train_rows:
        with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
            lakehouse = Lakehouse(Path(tmp) / "lakehouse")
            # fixed-size files (row groups): a bigger table has more of them, not bigger ones, so peak RSS at two
            # sizes shows whether the reader streams (Petastorm holds whole row groups in memory)
            per_file = min(args.rows_per_file, -(-rows // (2 * args.nproc)))
            files_per_day = -(-rows // (2 * per_file))  # two training days
            spec = SyntheticSpec(days=4, rows_per_file=per_file, files_per_day=files_per_day, users=50_000,
                                 items=100_000, categories=1_000, hist_len=args.hist_len)
            started = time.perf_counter()
            write_training_lakehouse(lakehouse, spec)
            print(f"wrote {2 * files_per_day * per_file:,} training rows (+ valid and test days) in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
            for model in args.model:
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={args.nproc}", "-m", "training.train", "--lakehouse", lakehouse.root,
                           "--model", model, "--run-id", model, "--set", "train.epochs=1",
                           "--set", f"data.batch_size={args.batch_size}",
                           "--set", f"model.embedding_dim={args.embedding_dim}", "--set", "train.progress=false",
                           "--set", "train.checkpoint_every_steps=null"]
                for item in args.set:
                    command += ["--set", item]
                done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
                if done.returncode != 0:
                    print(done.stdout[-3000:], done.stderr[-5000:], file=sys.stderr)
                    return 1
                rows_of = lakehouse.read_arrow("training/metrics", where=f"run_id = '{model}' AND split = 'train'")
                values = {r["metric"]: r["value"] for r in rows_of.to_pylist()}
                results.append((model, 2 * files_per_day * per_file, values))
                print(f"{model} @ {2 * files_per_day * per_file:,} rows: {values['samples_per_second']:,.0f} "
                      f"samples/s on {args.nproc} ranks, peak RSS {values['peak_rss_mib']:,.0f} MiB per rank "
                      f"(max), epoch loss {values['loss']:.4f}", flush=True)
    print("\nmodel  train rows  samples/s  peak RSS MiB")
    for model, rows, values in results:
        print(f"{model:5} {rows:>11,} {values['samples_per_second']:>10,.0f} {values['peak_rss_mib']:>13,.0f}")
    print("reproduce: .venv/bin/python -m benchmarks.training " + shlex.join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
