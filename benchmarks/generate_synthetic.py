"""Benchmark of the synthetic log generator: about N events written to a lakehouse through the real job.

    python -m benchmarks.generate_synthetic --events 10000000            # ~10M events, 7 days, 200k items
    python -m benchmarks.generate_synthetic --events 1000000 --lakehouse /tmp/bench-lh

The number of users is chosen for the target (``users = events / (days * requests_per_user_day * 8.6)``,
8.6 events per request at the default slate of 8: about 7.95 distinct impressions plus their clicks). Prints the
events written, the seconds of ``jobs.generate_synthetic.main`` (session already started, so JVM start-up is
reported separately), events/s, and the command that reproduces the run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

EVENTS_PER_REQUEST = 8.6  # measured at slate_size 8, 200k items, 200 categories: 7.97 impressions + 0.6 clicks


def users_for_events(events: int, days: int, requests_per_user_day: float = 2.0) -> int:
    """Users that make about ``events`` events over ``days`` at the default slate size."""
    return max(1, round(events / (days * requests_per_user_day * EVENTS_PER_REQUEST)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.generate_synthetic", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="target number of events (default 10M)")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests-per-user-day", type=float, default=2.0)
    parser.add_argument("--corrupt-fraction", type=float, default=0.0)
    parser.add_argument("--lakehouse", help="lakehouse root (default: a temporary folder, deleted afterwards)")
    args = parser.parse_args(argv)
    users = users_for_events(args.events, args.days, args.requests_per_user_day)

    with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as tmp:
        root = args.lakehouse or str(Path(tmp) / "lakehouse")
        job_args = [
            "--lakehouse", root, "--users", str(users), "--items", str(args.items), "--days", str(args.days),
            "--seed", str(args.seed), "--requests-per-user-day", str(args.requests_per_user_day),
            "--corrupt-fraction", str(args.corrupt_fraction),
        ]
        from features.spark import get_spark
        from features.tableio import Lakehouse
        from jobs import generate_synthetic

        started = time.perf_counter()
        spark = get_spark("generate_synthetic")  # the job's own getOrCreate returns this session
        session_s = time.perf_counter() - started
        started = time.perf_counter()
        status = generate_synthetic.main(job_args)
        seconds = time.perf_counter() - started
        events = Lakehouse(root).read(spark, "raw/events").count()

    print(f"events written: {events}")
    print(f"seconds (generate + write + read-back counts): {seconds:.1f} (session start {session_s:.1f} s)")
    print(f"events/s: {events / seconds:,.0f}")
    print(f"cores: {spark.sparkContext.defaultParallelism} default parallelism, master {spark.sparkContext.master}")
    given = sys.argv[1:] if argv is None else argv
    print("reproduce: " + shlex.join([".venv/bin/python", "-m", "benchmarks.generate_synthetic", *given]))
    print("same as the job: " + shlex.join([".venv/bin/python", "-m", "jobs.generate_synthetic", *job_args]))
    return status


if __name__ == "__main__":
    sys.exit(main())
