"""Benchmark of the daily feature chain on the synthetic log: seconds and raw events/s per job and in total.

    python -m benchmarks.feature_jobs --events 1000000
    python -m benchmarks.feature_jobs --events 10000000 --lakehouse /tmp/bench-lh   # keeps the lakehouse

Generates about N events over 7 days (as ``benchmarks.generate_synthetic`` does; not timed here), then runs each
feature job that exists for every day in order through its real ``main`` in one Spark session, and prints the
time of each job, the chain's raw events/s, and the command that reproduces the run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate_synthetic import users_for_events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feature_jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corrupt-fraction", type=float, default=0.0001)
    parser.add_argument("--lakehouse", help="lakehouse root (default: a temporary folder, deleted afterwards)")
    args = parser.parse_args(argv)
    users = users_for_events(args.events, args.days)

    from features.spark import get_spark
    from features.tableio import Lakehouse
    from jobs import build_samples, build_vocab, generate_synthetic, validate_events

    chain = [("validate_events", validate_events.main), ("build_vocab", build_vocab.main),
             ("build_samples", build_samples.main)]
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        root = args.lakehouse or str(Path(tmp) / "lakehouse")
        spark = get_spark("bench-feature-jobs")
        generate_argv = ["--lakehouse", root, "--users", str(users), "--items", str(args.items), "--days",
                         str(args.days), "--seed", str(args.seed), "--corrupt-fraction", str(args.corrupt_fraction)]
        if generate_synthetic.main(generate_argv) != 0:
            return 1
        days = generate_synthetic.parse_args(generate_argv)[1].dates()
        events = Lakehouse(root).read(spark, "raw/events").count()
        seconds = dict.fromkeys((name for name, _ in chain), 0.0)
        for day in days:
            for name, job_main in chain:
                started = time.perf_counter()
                if job_main(["--lakehouse", root, "--ds", day.isoformat()]) != 0:
                    return 1
                seconds[name] += time.perf_counter() - started

    total = sum(seconds.values())
    print(f"\nraw events: {events} over {len(days)} days ({users} users, {args.items} items)")
    for name, secs in seconds.items():
        print(f"{name}: {secs:.1f} s ({events / secs:,.0f} raw events/s)")
    print(f"chain: {total:.1f} s, {events / total:,.0f} raw events/s")
    print(f"master: {spark.sparkContext.master}, default parallelism {spark.sparkContext.defaultParallelism}")
    given = sys.argv[1:] if argv is None else argv
    print("reproduce: " + shlex.join([".venv/bin/python", "-m", "benchmarks.feature_jobs", *given]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
