"""Benchmark of the daily feature chain on the synthetic log: seconds and raw events/s per job, day and in total.

    python -m benchmarks.feature_jobs --events 1000000
    python -m benchmarks.feature_jobs --events 10000000 --lakehouse /tmp/bench-lh   # keeps the lakehouse
    python -m benchmarks.feature_jobs --from-raw /tmp/raw-10m                         # reuse a generated log

Generates about N events over 7 days (as ``benchmarks.generate_synthetic`` does; not timed here), or copies the
``raw/`` tables of an earlier lakehouse (``--from-raw``: the same input for an A/B comparison of two code
versions), then runs each feature job that exists for every day in order through its real ``main`` in one Spark
session, and prints the time of each job and day, the chain's raw events/s, and the command that reproduces the
run. ``--jobs`` runs a prefix of the chain only (``validate_events`` alone, say); each job needs the ones before.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate_synthetic import users_for_events

CHAIN = ("validate_events", "build_vocab", "build_samples")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feature_jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corrupt-fraction", type=float, default=0.0001)
    parser.add_argument("--lakehouse", help="lakehouse root (default: a temporary folder, deleted afterwards)")
    parser.add_argument("--from-raw", type=Path, metavar="LAKEHOUSE",
                        help="copy the raw/ tables of this lakehouse instead of generating (--events etc. unused)")
    parser.add_argument("--jobs", type=int, choices=range(1, len(CHAIN) + 1), default=len(CHAIN),
                        help=f"run the first N jobs of {', '.join(CHAIN)} (default: all)")
    args = parser.parse_args(argv)
    if args.from_raw is not None and not (args.from_raw / "raw" / "events").is_dir():
        parser.error(f"--from-raw {args.from_raw}: no raw/events table there")

    from features.spark import get_spark
    from features.tableio import Lakehouse
    from jobs import generate_synthetic

    chain = [(name, importlib.import_module(f"jobs.{name}").main) for name in CHAIN[:args.jobs]]
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        root = args.lakehouse or str(Path(tmp) / "lakehouse")
        spark = get_spark("bench-feature-jobs")
        if args.from_raw is not None:
            shutil.copytree(args.from_raw / "raw", Path(root) / "raw")
            described = f"copied from {args.from_raw}"
        else:
            users = users_for_events(args.events, args.days)
            generate_argv = ["--lakehouse", root, "--users", str(users), "--items", str(args.items), "--days",
                             str(args.days), "--seed", str(args.seed), "--corrupt-fraction",
                             str(args.corrupt_fraction)]
            if generate_synthetic.main(generate_argv) != 0:
                return 1
            described = f"{users} users, {args.items} items"
        raw = Lakehouse(root).read(spark, "raw/events")
        per_day = {r["ds"]: r["count"] for r in raw.groupBy("ds").count().collect()}
        events, days = sum(per_day.values()), sorted(per_day)
        seconds = {name: {} for name, _ in chain}
        for day in days:
            for name, job_main in chain:
                started = time.perf_counter()
                if job_main(["--lakehouse", root, "--ds", day.isoformat()]) != 0:
                    return 1
                seconds[name][day] = time.perf_counter() - started

    total = sum(sum(by_day.values()) for by_day in seconds.values())
    print(f"\nraw events: {events} over {len(days)} days ({described})")
    print("day         raw events  " + "  ".join(f"{name:>15}" for name, _ in chain))
    for day in days:
        print(f"{day}  {per_day[day]:>10}  " + "  ".join(f"{seconds[name][day]:>13.1f} s" for name, _ in chain))
    for name, by_day in seconds.items():
        secs = sum(by_day.values())
        print(f"{name}: {secs:.1f} s ({events / secs:,.0f} raw events/s)")
    print(f"chain: {total:.1f} s, {events / total:,.0f} raw events/s")
    print(f"master: {spark.sparkContext.master}, default parallelism {spark.sparkContext.defaultParallelism}")
    given = sys.argv[1:] if argv is None else argv
    print("reproduce: " + shlex.join([".venv/bin/python", "-m", "benchmarks.feature_jobs", *given]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
