"""The main job on the embedded default: build a lakehouse from the seeded synthetic log and say where it is.

    python -m jobs.demo --lakehouse ./lakehouse [--preset small|large]

Today the pipeline is the synthetic raw log (``jobs.generate_synthetic``) followed, day by day in order, by the
feature jobs (``validate_events``, ``build_vocab``, ``build_samples``), for the last day the evaluation sets
(``build_rank_eval``), and then DIN trained on 2 CPU ranks (``torchrun -m training.train``, a separate process
group as on a cluster). The summary at the end is read back through delta-rs (no JVM), the way users read the
tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys

from features.tableio import Lakehouse
from jobs import build_rank_eval, build_samples, build_vocab, generate_synthetic, validate_events

PRESETS = {
    # a minimal lakehouse for the end-to-end test of this command
    "tiny": ["--users", "60", "--items", "800", "--days", "3", "--seed", "42", "--corrupt-fraction", "0.001"],
    # a few minutes on a 2-core machine, end to end
    "small": ["--users", "2000", "--items", "5000", "--days", "7", "--seed", "42", "--corrupt-fraction", "0.001"],
    # about 10M events (see BENCHMARKS.md)
    "large": ["--users", "83056", "--items", "200000", "--days", "7", "--seed", "42", "--corrupt-fraction", "0.0001"],
}
RAW_TABLES = ("raw/events", "raw/items", "raw/users", "raw/click_truth", "raw/planted_corruptions")
FEATURE_JOBS = (validate_events, build_vocab, build_samples)  # run for every generated day, in day order
FEATURE_TABLES = ("features/events_clean", "features/quarantine", "features/vocab", "features/samples",
                  "features/user_state", "features/split", "features/rank_eval", "features/runs")
TRAINING_TABLES = ("training/runs", "training/metrics", "training/predictions")
TRAINING = {  # preset -> (epochs, batch size): the tiny log has a few hundred samples per day and rank
    "tiny": (1, 128), "small": (2, 1024), "large": (1, 1024),
}


def train(lakehouse: str, preset: str, run_id: str) -> int:
    """DIN on 2 CPU ranks through the real entry point (what a user runs with torchrun)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "training.train", "--lakehouse", lakehouse, "--model", "din", "--run-id", run_id,
               "--set", f"train.epochs={TRAINING[preset][0]}", "--set", f"data.batch_size={TRAINING[preset][1]}",
               "--set", "train.device=cpu"]
    print("\n$ " + " ".join(["torchrun", *command[3:]]), flush=True)
    return subprocess.run(command).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", default="lakehouse", help="lakehouse root (default ./lakehouse)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    args = parser.parse_args(argv)

    generate_argv = ["--lakehouse", args.lakehouse, *PRESETS[args.preset]]
    status = generate_synthetic.main(generate_argv)
    days = generate_synthetic.parse_args(generate_argv)[1].dates()
    for day in days:
        for job in FEATURE_JOBS:
            status = status or job.main(["--lakehouse", args.lakehouse, "--ds", day.isoformat()])
    status = status or build_rank_eval.main(["--lakehouse", args.lakehouse, "--ds", days[-1].isoformat()])
    if status != 0:
        return status
    lakehouse = Lakehouse(args.lakehouse)
    run_id = f"demo-din-{args.preset}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    status = train(args.lakehouse, args.preset, run_id)
    if status != 0:
        return status
    print(f"\nlakehouse: {lakehouse.root}")
    print(f"{'table':<26}{'version':>8}{'rows':>12}  location")
    for table in RAW_TABLES + FEATURE_TABLES + TRAINING_TABLES:
        print(f"{table:<26}{lakehouse.version(table):>8}{lakehouse.count(table):>12}  {lakehouse.path(table)}")
    final = lakehouse.read_arrow("training/metrics", where=f"run_id = '{run_id}' AND kind = 'final'").to_pylist()
    print(f"\nDIN run {run_id}: " + ", ".join(f"{r['split']} {r['metric']} {r['value']:.4f}" for r in final
                                              if r["metric"] in ("auc", "gauc", "logloss")))
    print("\nread them with Spark (format('delta')), deltalake or polars.read_delta; "
          "raw/click_truth and raw/planted_corruptions are for evaluation only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
