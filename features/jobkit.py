"""What every feature job shares: its command line, typed config, run record in ``features/runs``, and errors.

A job's entry point (``jobs/<name>.py``) stays thin::

    def main(argv=None) -> int:
        args = parse_job_args("validate_events", argv, ValidateConfig)
        return run_job(args, body)          # body(spark, args) -> JobOutcome

``run_job`` opens the session, times the body, appends one row to ``features/runs`` (status ``succeeded`` or
``failed`` with the error), and turns :class:`JobInputError` (a missing input, a bad date) into a clear message
and exit status 1; argparse errors exit with 2.

``--until YYYY-MM-DD`` runs the body for every day from ``--ds`` to that day, in order, in the one session: a
catch-up or backfill of many days pays the JVM's start and warm-up once instead of once per day. Each day is
the same body with its own ``ds`` and its own run record, so the tables equal those of one run per day; the
first day that fails stops the run (later days are not attempted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from features.tableio import Lakehouse

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

RUNS_TABLE = "features/runs"
QUARANTINE_TABLE = "features/quarantine"


class JobConfig(BaseModel):
    """Base of the jobs' typed configs: a misspelled key is an error, and a config never changes in flight."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=JobConfig)


class JobInputError(RuntimeError):
    """An input the job needs is missing or unusable; the message says which and what to run first."""


@dataclass(frozen=True)
class JobArgs:
    job: str
    lakehouse: Lakehouse
    ds: dt.date
    config: Any  # the job's JobConfig subclass
    until: dt.date | None = None  # last day of a multi-day run (inclusive); None: ds only

    def days(self) -> list[dt.date]:
        """The days this invocation processes, in order."""
        last = self.until or self.ds
        return [self.ds + dt.timedelta(days=i) for i in range((last - self.ds).days + 1)]

    @property
    def run_id(self) -> str:
        """Deterministic per (job, ds): a rerun writes the same rows wherever the run id is stored."""
        return f"{self.job}/{self.ds.isoformat()}"


@dataclass
class JobOutcome:
    """What a job body reports: Delta versions of its inputs and outputs, and its row counts."""

    inputs: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def parse_job_args(job: str, argv: list[str] | None, config_cls: type[ConfigT]) -> JobArgs:
    """``--lakehouse DIR --ds YYYY-MM-DD [--config FILE] [--set key=value ...]`` -> JobArgs (exit 2 if bad)."""
    parser = argparse.ArgumentParser(prog=f"jobs/{job}.py", description=f"feature job {job}")
    parser.add_argument("--lakehouse", required=True, help="lakehouse root (folder or URI)")
    parser.add_argument("--ds", required=True, help="the day to process, YYYY-MM-DD")
    parser.add_argument("--until", help="process every day from --ds to this day (inclusive), in order")
    parser.add_argument("--config", type=Path, help="YAML or JSON file with the job's settings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    args = parser.parse_args(argv)
    try:
        ds = dt.date.fromisoformat(args.ds)
    except ValueError:
        parser.error(f"--ds must be a date YYYY-MM-DD, got {args.ds!r}")
    until = None
    if args.until is not None:
        try:
            until = dt.date.fromisoformat(args.until)
        except ValueError:
            parser.error(f"--until must be a date YYYY-MM-DD, got {args.until!r}")
        if until < ds:
            parser.error(f"--until {until} is before --ds {ds}")
    settings: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            parser.error(f"--config {args.config}: no such file")
        loaded = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(loaded, dict):
            parser.error(f"--config {args.config}: expected a mapping of settings")
        settings.update(loaded)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        settings[key] = yaml.safe_load(value)
    try:
        config = config_cls(**settings)
    except ValidationError as err:
        parser.error("invalid configuration: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                           for e in err.errors()))
    return JobArgs(job=job, lakehouse=Lakehouse(args.lakehouse), ds=ds, config=config, until=until)


Body = Callable[["SparkSession", JobArgs], JobOutcome]


def run_job(args: JobArgs, body: Body, *, spark: SparkSession | None = None) -> int:
    """Run ``body`` in the job's session for each day of ``args`` and record each run; returns the exit status."""
    from features.spark import get_spark

    spark = spark or get_spark(args.job)
    days = args.days()
    for position, day in enumerate(days):
        status = _run_day(spark, replace(args, ds=day, until=None), body)
        if status != 0:
            if position + 1 < len(days):
                print(f"{args.job}: stopped at {day}; not run: {days[position + 1]}..{days[-1]}", file=sys.stderr)
            return status
    return 0


def _run_day(spark: SparkSession, args: JobArgs, body: Body) -> int:
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    try:
        outcome = body(spark, args)
    except JobInputError as err:
        _record(spark, args, started, time.perf_counter() - clock, "failed", JobOutcome(), str(err))
        print(f"{args.job}: {err}", file=sys.stderr)
        return 1
    except Exception:
        _record(spark, args, started, time.perf_counter() - clock, "failed", JobOutcome(), traceback.format_exc())
        raise
    _record(spark, args, started, time.perf_counter() - clock, "succeeded", outcome, None)
    for key, value in outcome.counts.items():
        print(f"{args.job} {args.ds}: {key} = {value}")
    for table, version in outcome.outputs.items():
        print(f"{args.job} {args.ds}: wrote {table} version {version} at {args.lakehouse.path(table)}")
    return 0


def require_table(spark: SparkSession, lakehouse: Lakehouse, table: str, *, produced_by: str) -> int:
    """The latest version of an input table, or JobInputError saying which job makes it."""
    if not lakehouse.exists(table):
        raise JobInputError(f"input table {table!r} does not exist at {lakehouse.path(table)}; run {produced_by} first")
    return lakehouse.spark_version(spark, table)


def _record(
    spark: SparkSession,
    args: JobArgs,
    started: dt.datetime,
    seconds: float,
    status: str,
    outcome: JobOutcome,
    error: str | None,
) -> None:
    from features.schemas import FEATURE_RUNS

    row = (
        args.run_id,
        args.job,
        args.ds,
        status,
        json.dumps(args.config.model_dump(mode="json"), sort_keys=True),
        _as_longs(outcome.inputs),
        _as_longs(outcome.outputs),
        _as_longs(outcome.counts),
        started.replace(tzinfo=None),  # Spark TimestampType takes naive UTC (the session time zone is UTC)
        round(seconds, 3),
        error,
    )
    args.lakehouse.write(spark.createDataFrame([row], FEATURE_RUNS), RUNS_TABLE, mode="append")


def _as_longs(values: Mapping[str, int]) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.items()}
