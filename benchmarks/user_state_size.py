"""Benchmark: the size of ``features/user_state`` after a month of days, and what a full snapshot per day would hold.

    python -m benchmarks.user_state_size                      # the medium preset's users over 30 days
    python -m benchmarks.user_state_size --days 30 --users 2000 --items 5000 --lakehouse /tmp/state-lh

Generates the seeded synthetic log (the medium preset's users and items, ``--days`` days; not timed), runs
validate_events -> build_vocab -> build_samples over all the days (one range run each), then prints the table's
rows, files and bytes on disk (the current version's data files), the rows of the last day, and how many rows a
full snapshot of every user's state per day would hold (each user's latest row counted once for every day from
its first row on: the layout of the table before it kept the active users' rows only).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.user_state_size", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lakehouse", help="keep the lakehouse here (default: a temporary folder, deleted)")
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from features.spark import get_spark
    from features.tableio import Lakehouse
    from jobs import build_samples, build_vocab, generate_synthetic, validate_events

    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        root = args.lakehouse or str(Path(tmp) / "lakehouse")
        spark = get_spark("bench-user-state")
        if generate_synthetic.main(["--lakehouse", root, "--users", str(args.users), "--items", str(args.items),
                                    "--days", str(args.days), "--seed", str(args.seed),
                                    "--start-date", "2026-01-01"]) != 0:
            return 1
        lakehouse = Lakehouse(root)
        days = lakehouse.days("raw/events")
        for job in (validate_events, build_vocab, build_samples):
            if job.main(["--lakehouse", root, "--ds", str(days[0]), "--until", str(days[-1])]) != 0:
                return 1
        state = lakehouse.read(spark, "features/user_state")
        rows = state.count()
        files = [Path(uri.removeprefix("file://")) for uri in lakehouse.files("features/user_state")]
        size = sum(path.stat().st_size for path in files)
        last_day = state.where(F.col("ds") == F.lit(days[-1])).count()
        first_rows = state.groupBy("user_id").agg(F.min("ds").alias("first"))
        snapshot_rows = first_rows.select(F.sum(F.datediff(F.lit(days[-1]), "first") + 1)).first()[0]
        per_row = state.select(F.avg(F.size("clicks")).alias("c"), F.avg(F.size("exposures")).alias("e")).first()
    print(f"\nlog: {args.users} users, {args.items} items, {len(days)} days ({days[0]}..{days[-1]})")
    print(f"features/user_state: {rows:,} rows (active users' days), {len(files)} files, {size / 2**20:.1f} MiB; "
          f"{last_day:,} rows on the last day; {per_row['c']:.1f} clicks and {per_row['e']:.1f} exposures a row")
    print(f"a full snapshot per day would hold {snapshot_rows:,} rows ({snapshot_rows / rows:.2f} x)")
    given = sys.argv[1:] if argv is None else argv
    print("reproduce: " + shlex.join([".venv/bin/python", "-m", "benchmarks.user_state_size", *given]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
