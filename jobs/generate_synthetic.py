"""Write the seeded synthetic event log into a lakehouse (``features.synthetic`` documents the model).

    python -m jobs.generate_synthetic --lakehouse ./lakehouse --users 1000 --items 5000 --days 7 --seed 1

Writes ``raw/events``, ``raw/click_truth`` and ``raw/planted_corruptions`` (replacing only the generated ``ds``
partitions, so a rerun with the same arguments gives the same tables and other days stay), and replaces
``raw/items`` and ``raw/users``. Prints each table's location and its rows in the generated days.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from pydantic import ValidationError

from features.spark import get_spark
from features.synthetic import SyntheticConfig, generate
from features.tableio import Lakehouse

PARTITIONED = ("raw/events", "raw/click_truth", "raw/planted_corruptions")


def parse_args(argv: list[str] | None) -> tuple[str, SyntheticConfig]:
    """(lakehouse root, config); bad arguments exit through argparse (status 2) with the reason."""
    parser = argparse.ArgumentParser(prog="python -m jobs.generate_synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True, help="lakehouse root (folder or URI)")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--days", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--start-date", type=dt.date.fromisoformat, help="first ds, YYYY-MM-DD (default 2026-01-01)")
    parser.add_argument("--categories", type=int, help="default: min(200, max(4, items // 50))")
    parser.add_argument("--requests-per-user-day", type=float, help="mean requests per user and day (default 2)")
    parser.add_argument("--slate-size", type=int, help="items drawn per request (default 8)")
    parser.add_argument("--corrupt-fraction", type=float, help="share of events corrupted (default 0)")
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and k != "lakehouse"}
    try:
        return args.lakehouse, SyntheticConfig(**given)
    except ValidationError as err:
        problems = [f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in err.errors()]
        parser.error("invalid configuration: " + "; ".join(p.replace("--: ", "") for p in problems))


def main(argv: list[str] | None = None) -> int:
    root, cfg = parse_args(argv)
    spark = get_spark("generate_synthetic")
    tables = generate(spark, cfg)
    lakehouse = Lakehouse(root)
    days = cfg.dates()
    for name, df in zip(PARTITIONED, (tables.events, tables.click_truth, tables.planted_corruptions), strict=True):
        lakehouse.write(df, name, mode="overwrite", replace_ds=days, partition_by=["ds"])
    lakehouse.write(tables.items, "raw/items", mode="overwrite")
    lakehouse.write(tables.users, "raw/users", mode="overwrite")

    for name in (*PARTITIONED, "raw/items", "raw/users"):
        df, where = lakehouse.read(spark, name), ""
        if name in PARTITIONED:  # rows of the generated days (a partition filter: only those files are read)
            df, where = df.where(df["ds"].isin(days)), f" in ds {days[0]}..{days[-1]}"
        print(f"{name}\t{lakehouse.path(name)}\t{df.count()} rows{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
