"""Benchmark of the feature chain on the synthetic log: seconds and raw events/s per job and in total.

    python -m benchmarks.feature_jobs --events 1000000
    python -m benchmarks.feature_jobs --events 10000000 --lakehouse /tmp/bench-lh   # keeps the lakehouse
    python -m benchmarks.feature_jobs --from-raw /tmp/raw-10m --floor                 # reuse a log; and the floor

Generates about N events over 7 days (as ``benchmarks.generate_synthetic`` does; not timed), or copies the
``raw/`` tables of an earlier lakehouse (``--from-raw``: the same input for an A/B comparison of two code
versions), then runs each feature job through its real ``main`` in one Spark session: once over all the days
(``--ds FIRST --until LAST``, one plan and one commit per table), or with ``--per-day`` once per day. Prints each
job's time, the chain's raw events/s and the command that reproduces the run. ``--jobs`` runs a prefix of the chain
only (``validate_events`` alone, say); each job needs the ones before. ``--floor`` then times, in the same session,
the write of a table of the samples' shape for the log's impressions with no feature logic
(``benchmarks.chain_floor``), and prints the chain's rate as a fraction of that write's.
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
    parser.add_argument("--per-day", action="store_true", help="run each job once per day instead of once")
    parser.add_argument("--floor", action="store_true", help="also time the samples-shaped write of the log")
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
        ranges = [(day, day) for day in days] if args.per_day else [(days[0], days[-1])]
        seconds: dict[str, float] = {}
        for first, last in ranges:
            for name, job_main in chain:
                started = time.perf_counter()
                if job_main(["--lakehouse", root, "--ds", first.isoformat(), "--until", last.isoformat()]) != 0:
                    return 1
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        floor = None
        if args.floor:
            from pyspark.sql import functions as F

            from benchmarks.chain_floor import samples_shape

            impressions = raw.where(F.col("event_type") == "impression")
            started = time.perf_counter()
            samples_shape(impressions, args.items).write.format("delta").mode("overwrite").save(
                str(Path(tmp) / "floor"))
            floor = time.perf_counter() - started

    total = sum(seconds.values())
    print(f"\nraw events: {events} over {len(days)} days ({described}); "
          f"{'one run per day' if args.per_day else 'one run per job for all the days'}")
    for name, secs in seconds.items():
        print(f"{name}: {secs:.1f} s ({events / secs:,.0f} raw events/s)")
    print(f"chain: {total:.1f} s, {events / total:,.0f} raw events/s")
    if floor is not None:
        print(f"floor (the samples' shape written for the log's impressions): {floor:.1f} s, "
              f"{events / floor:,.0f} raw events/s; the chain runs at {floor / total:.2f} x the floor's rate")
    print(f"master: {spark.sparkContext.master}, default parallelism {spark.sparkContext.defaultParallelism}")
    given = sys.argv[1:] if argv is None else argv
    print("reproduce: " + shlex.join([".venv/bin/python", "-m", "benchmarks.feature_jobs", *given]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
