"""Benchmark: one user with very many events in one day through validate -> vocab -> samples, in a small driver.

    python -m benchmarks.heavy_user --events 200000 --driver-memory 2g

Issue 10 asks that a user with 200,000 events in a day does not exhaust memory (the cost per user grows with
n·L, not n²). The log: ``--events`` events of user ``heavy`` (requests of 8 impressions, one click in every
fourth request) plus 200 ordinary users, all on 2026-01-01, written straight into ``raw/*``. The chain runs in a
fresh local Spark with ``--driver-memory``; the script prints each job's seconds, the heavy user's sample
count and mean history length, and the command that reproduces it. Finishing at all in the small driver is the
memory figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heavy_user", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--lakehouse", help="lakehouse root (default: a temporary folder)")
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from features.schemas import RAW_EVENTS, RAW_ITEMS, RAW_USERS
    from features.spark import get_spark
    from features.tableio import Lakehouse
    from jobs import build_samples, build_vocab, validate_events

    spark = get_spark("bench-heavy-user", conf={"spark.driver.memory": args.driver_memory})
    day = dt.date(2026, 1, 1)
    with tempfile.TemporaryDirectory(prefix="bench-heavy-") as tmp:
        root = args.lakehouse or str(Path(tmp) / "lakehouse")
        lakehouse = Lakehouse(root)
        slots = args.events * 32 // 33  # 8 impressions per request, a click every 4th request: 33 events per 32
        seconds_per_request = max(1, 86_000 // max(1, slots // 8))
        epoch = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())
        impressions = spark.range(slots).select(
            F.col("id"), (F.col("id") / 8).cast("long").alias("request"), (F.col("id") % 8 + 1).alias("position"))
        impressions = impressions.select(
            F.concat(F.lit("h-"), F.col("id")).alias("event_id"), F.lit("heavy").alias("user_id"),
            F.concat(F.lit("i"), F.pmod(F.xxhash64("id"), F.lit(5000))).alias("item_id"),
            F.lit("impression").alias("event_type"),
            F.timestamp_seconds(F.lit(epoch) + F.col("request") * seconds_per_request).alias("event_time"),
            F.concat(F.lit("hr"), F.col("request")).alias("request_id"), F.col("position").cast("int"),
            F.lit(day).alias("ds"))
        clicks = impressions.where((F.col("position") == 2) & (F.substring("request_id", 3, 20).cast("long") % 4 == 0))
        clicks = clicks.select(F.concat("event_id", F.lit("-clk")).alias("event_id"), "user_id", "item_id",
                               F.lit("click").alias("event_type"),
                               (F.col("event_time") + F.expr("INTERVAL 5 SECONDS")).alias("event_time"),
                               "request_id", "position", "ds")
        others = spark.range(200 * 16).select(
            F.concat(F.lit("o-"), F.col("id")).alias("event_id"), F.concat(F.lit("u"), F.col("id") % 200).alias(
                "user_id"), F.concat(F.lit("i"), F.col("id") % 5000).alias("item_id"),
            F.lit("impression").alias("event_type"),
            F.timestamp_seconds(F.lit(epoch) + F.col("id") * 20).alias("event_time"),
            F.concat(F.lit("or"), F.col("id")).alias("request_id"), F.lit(1).alias("position"), F.lit(day).alias("ds"))
        events = impressions.unionByName(clicks).unionByName(others).select(*RAW_EVENTS.fieldNames())
        lakehouse.write(events, "raw/events", mode="overwrite", replace_ds=[day], partition_by=["ds"])
        lakehouse.write(spark.range(5000).select(F.concat(F.lit("i"), F.col("id")).alias("item_id"),
                                                 F.concat(F.lit("c"), F.col("id") % 50).alias("category_id"),
                                                 F.lit(None).cast("string").alias("shop_id"),
                                                 F.lit(None).cast("string").alias("brand_id")).select(
            *RAW_ITEMS.fieldNames()), "raw/items", mode="overwrite")
        lakehouse.write(spark.createDataFrame([("heavy", "F", "25", "x")], RAW_USERS), "raw/users", mode="overwrite")
        heavy_events = lakehouse.read(spark, "raw/events").where(F.col("user_id") == "heavy").count()

        seconds = {}
        for name, job in (("validate_events", validate_events), ("build_vocab", build_vocab),
                          ("build_samples", build_samples)):
            started = time.perf_counter()
            if job.main(["--lakehouse", root, "--ds", day.isoformat()]) != 0:
                return 1
            seconds[name] = time.perf_counter() - started
        samples = lakehouse.read(spark, "features/samples").where(F.col("user_idx") == 2)  # 'heavy' is first
        row = samples.agg(F.count(F.lit(1)).alias("n"), F.avg("hist_len").alias("hist")).first()

    print(f"\nheavy user: {heavy_events} events on {day}; driver memory {args.driver_memory}")
    for name, secs in seconds.items():
        print(f"{name}: {secs:.1f} s")
    print(f"heavy user's samples: {row['n']}, mean hist_len {row['hist']:.1f}")
    given = sys.argv[1:] if argv is None else argv
    print("reproduce: " + shlex.join([".venv/bin/python", "-m", "benchmarks.heavy_user", *given]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
