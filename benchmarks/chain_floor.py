"""The floor under the feature chain's rate on this machine: what the least Spark work of its contract costs.

    python -m benchmarks.chain_floor --events 2000000

Issue 10 asks the chain validate -> vocab -> samples for 200,000 raw events/s on ``local[2]``. This script times,
on one generated day of about N events (``jobs.generate_synthetic``, not timed), work that any implementation of
the contract must do at least once, with no feature logic at all:

* a scan of ``raw/events`` (read and touch every event id);
* one pass of the events through a shuffle by user, a sort by time and a Delta write (validate_events alone
  needs one for its deduplication, build_samples one for its per-user order);
* the write of a table with the shape of ``features/samples``: per impression, 5 arrays of L = 50 longs (hist item
  and category, negative item and category, negative flags) and 8 arrays of n = 5 (ctx, clk, unclk item and
  category), the values made by ``sequence`` from a hash (no lambda, no shuffle), into Delta;
* the same rows made but not written (Spark's ``noop`` sink), and written with the other Parquet codecs (zstd,
  uncompressed) and as plain Parquet without dictionary encoding: which part of the write is the Parquet encoding
  of the arrays, and whether a setting takes it away.

Each is printed as seconds and raw events/s of the day; the chain can not be faster than the slowest of the
writes (its output is one of them).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate_synthetic import users_for_events

HIST_ARRAYS, HIST_LEN = 5, 50
SET_ARRAYS, SET_LEN = 8, 5


def samples_shape(impressions, items: int):
    """Rows of the shape of ``features/samples`` for ``impressions`` (raw/events rows), with no feature logic: per
    impression, 5 arrays of L longs and 8 of n, made by ``sequence`` from a hash of the event id."""
    from pyspark.sql import functions as F

    def sequence(salt: int, size: int):
        start = F.pmod(F.xxhash64("event_id", F.lit(salt)), F.lit(items))
        return F.sequence(start, start + size - 1)

    arrays = [sequence(s, HIST_LEN).alias(f"hist{s}") for s in range(HIST_ARRAYS)] + [
        sequence(100 + s, SET_LEN).alias(f"set{s}") for s in range(SET_ARRAYS)]
    return impressions.select("event_id", "user_id", "event_time", *arrays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chain_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="about this many events in one day")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from features.spark import get_spark
    from features.tableio import Lakehouse
    from jobs import generate_synthetic

    spark = get_spark("bench-chain-floor")
    with tempfile.TemporaryDirectory(prefix="bench-chain-floor-") as tmp:
        root = str(Path(tmp) / "lakehouse")
        generate = ["--lakehouse", root, "--users", str(users_for_events(args.events, 1)), "--items", str(args.items),
                    "--days", "1", "--seed", str(args.seed)]
        if generate_synthetic.main(generate) != 0:
            return 1
        lakehouse = Lakehouse(root)
        events = lakehouse.read(spark, "raw/events").count()
        impressions = lakehouse.read(spark, "raw/events").where(F.col("event_type") == "impression")

        shaped = samples_shape(impressions, args.items)

        def write_shape(name: str, fmt: str = "delta", codec: str = "snappy", **options: str):
            def step():
                spark.conf.set("spark.sql.parquet.compression.codec", codec)
                try:
                    shaped.write.format(fmt).options(**options).mode("overwrite").save(str(Path(tmp) / name))
                finally:
                    spark.conf.set("spark.sql.parquet.compression.codec", "snappy")
            return step

        shape = f"the samples' shape ({HIST_ARRAYS} x {HIST_LEN} + {SET_ARRAYS} x {SET_LEN} longs per impression)"
        steps = {
            "scan raw/events": lambda: lakehouse.read(spark, "raw/events").agg(F.sum(F.length("event_id"))).first(),
            "shuffle by user, sort by time, write Delta": lambda: (
                lakehouse.read(spark, "raw/events").repartition(8, "user_id")
                .sortWithinPartitions("user_id", "event_time").write.format("delta").mode("overwrite")
                .save(str(Path(tmp) / "pass"))),
            f"write {shape} to Delta": write_shape("shape"),
            f"make {shape}, write nothing (noop sink)": write_shape("noop", fmt="noop"),
            "the same Delta write, zstd": write_shape("zstd", codec="zstd"),
            "the same Delta write, uncompressed": write_shape("plain", codec="uncompressed"),
            "the same rows as plain Parquet, snappy, no dictionary encoding": write_shape(
                "parquet", fmt="parquet", **{"parquet.enable.dictionary": "false"}),
        }
        print(f"\nraw events: {events} in one day ({impressions.count()} impressions)")
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            seconds = time.perf_counter() - started
            print(f"{name}: {seconds:.1f} s ({events / seconds:,.0f} raw events/s)", flush=True)
    given = argv if argv is not None else sys.argv[1:]
    print("command: .venv/bin/python -m benchmarks.chain_floor " + shlex.join(given))
    return 0


if __name__ == "__main__":
    sys.exit(main())
