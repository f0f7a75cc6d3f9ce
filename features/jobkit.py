"""What every feature job shares: its command line, typed config, run record in ``features/runs``, and errors.

A job's entry point (``jobs/<name>.py``) stays thin::

    def main(argv=None) -> int:
        args = parse_job_args("validate_events", argv, ValidateConfig)
        return run_job(args, body)          # body(spark, args) -> JobOutcome

A job processes a range of days, ``--ds FIRST [--until LAST]`` (one day when ``--until`` is left out): its body
reads its inputs for the whole range once, computes every day in one Spark plan and commits each output table once.
``run_job`` opens the session, times the body, appends one row per day of the range to ``features/runs`` (status
``succeeded`` with that day's counts, or ``failed`` with the error; the rows of one run share its ``run_id``
``<job>/<first>`` or ``<job>/<first>..<last>`` and its ``seconds``), and turns :class:`JobInputError` (a missing
input, a day out of order) into a clear message and exit status 1; argparse errors exit with 2.

Two runs of a job that race never both commit: a body takes a :func:`claim` before it reads its inputs and writes
its first output through it, which fails loudly when another run of the job committed that table meanwhile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


class ConcurrentRunError(RuntimeError):
    """Another run of the same job committed an output table while this run was computing; this run wrote nothing."""


@dataclass(frozen=True)
class JobArgs:
    job: str
    lakehouse: Lakehouse
    ds: dt.date
    config: Any  # the job's JobConfig subclass
    until: dt.date | None = None  # last day of the range (inclusive); None: ds only

    @property
    def last(self) -> dt.date:
        """The last day of the range."""
        return self.until or self.ds

    def days(self) -> list[dt.date]:
        """The days this invocation processes, in order."""
        return [self.ds + dt.timedelta(days=i) for i in range((self.last - self.ds).days + 1)]

    @property
    def run_id(self) -> str:
        """Deterministic per (job, range): a rerun writes the same rows wherever the run id is stored."""
        last = "" if self.last == self.ds else f"..{self.last.isoformat()}"
        return f"{self.job}/{self.ds.isoformat()}{last}"


@dataclass
class JobOutcome:
    """What a job body reports: Delta versions of its inputs and outputs, and each day's row counts."""

    inputs: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    counts: dict[dt.date, dict[str, int]] = field(default_factory=dict)


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
    """Run ``body`` in the job's session for the range of ``args`` and record it per day; returns the exit status."""
    from features.spark import get_spark

    spark = spark or get_spark(args.job)
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    try:
        outcome = body(spark, args)
    except (JobInputError, ConcurrentRunError) as err:
        _record(spark, args, started, time.perf_counter() - clock, "failed", JobOutcome(), str(err))
        print(f"{args.job}: {err}", file=sys.stderr)
        return 1
    except Exception:
        _record(spark, args, started, time.perf_counter() - clock, "failed", JobOutcome(), traceback.format_exc())
        raise
    seconds = time.perf_counter() - clock
    _record(spark, args, started, seconds, "succeeded", outcome, None)
    for day in args.days():
        counts = outcome.counts.get(day, {})
        print(f"{args.job} {day}: " + ", ".join(f"{key} = {value}" for key, value in counts.items()))
    span = args.run_id.partition("/")[2]
    for table, version in outcome.outputs.items():
        print(f"{args.job} {span}: wrote {table} version {version} at {args.lakehouse.path(table)}")
    print(f"{args.job}: {len(args.days())} day(s) in {seconds:.1f} s")
    _report_stale(args)
    return 0


#: whether a successful run prints the later jobs' stale days (``jobs.feature_chain`` turns it off while it runs
#: those jobs itself)
REPORT_STALE = True


def _report_stale(args: JobArgs) -> None:
    """After a run: the later days of other jobs that are now stale, and the one command that rebuilds them."""
    from features import lineage

    if not REPORT_STALE:
        return
    try:
        report = lineage.stale_report(args.lakehouse, after=args.job)
    except Exception as err:  # the report is advice: a lakehouse delta-rs cannot read (a URI) must not fail the run
        print(f"{args.job}: could not check the later jobs' days ({type(err).__name__}: {err})", file=sys.stderr)
        return
    if report:
        print(report, file=sys.stderr)


@dataclass(frozen=True)
class Claim:
    """The right of one run to commit its job's outputs: see :func:`claim`."""

    app_id: str
    seen: int  # the idempotent-write version the claimed table held for the job when the run started (-1: none)
    token: str  # unique to the run, stored in the claiming commit's userMetadata

    def write(self, args: JobArgs, spark: SparkSession, df: Any, table: str, **write: Any) -> int:
        """``args.lakehouse.write(df, table, **write)`` as the run's claiming commit (the first output it writes):
        raises :class:`ConcurrentRunError` when another run of the job committed ``table`` after this one started."""
        try:
            version = args.lakehouse.write(df, table, txn=(self.app_id, self.seen + 1), user_metadata=self.token,
                                           **write)
        except Exception as err:
            if not any(marker in str(err) for marker in _CONFLICTS):
                raise
            raise ConcurrentRunError(f"another {args.job} run committed {table} at the same time as this one "
                                     f"({args.run_id}); this run wrote nothing: {err}") from err
        if not args.lakehouse.committed_by(spark, table, self.token):
            raise ConcurrentRunError(
                f"another {args.job} run committed {table} while this one ({args.run_id}) was computing; this run "
                "wrote nothing. Check features/runs, then rerun if the other run's range does not cover this one's.")
        return version


#: Delta's optimistic-concurrency conflicts (error classes): another writer committed the table meanwhile
_CONFLICTS = ("DELTA_CONCURRENT_", "DELTA_PROTOCOL_CHANGED", "DELTA_METADATA_CHANGED", "ConcurrentTransaction")


def claim(args: JobArgs, spark: SparkSession, table: str) -> Claim:
    """Take the claim of ``table`` for this run, before reading any input.

    The claiming commit carries Delta's idempotent-write id (application ``ctr-suite/<job>``, version: the one
    ``table`` holds for it now, plus one). Delta refuses a concurrent commit with the same id
    (``ConcurrentTransactionException``) and skips a write whose version another run committed first; the skip is
    found by the run's token in the commit's ``userMetadata`` (:meth:`Claim.write`). So of two racing runs, one
    commits and the other fails loudly, before it writes anything.
    """
    import uuid

    app_id = f"ctr-suite/{args.job}"
    seen = args.lakehouse.spark_txn_version(spark, table, app_id) if args.lakehouse.exists(table) else None
    return Claim(app_id=app_id, seen=-1 if seen is None else seen, token=f"{args.run_id} {uuid.uuid4()}")


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
    """One ``features/runs`` row per day of the range, in one commit."""
    from features.schemas import FEATURE_RUNS

    config = json.dumps(args.config.model_dump(mode="json"), sort_keys=True)
    rows = [(args.run_id, args.job, day, status, config, _as_longs(outcome.inputs), _as_longs(outcome.outputs),
             _as_longs(outcome.counts.get(day, {})),
             started.replace(tzinfo=None),  # Spark TimestampType takes naive UTC (the session time zone is UTC)
             round(seconds, 3), error) for day in args.days()]
    args.lakehouse.write(spark.createDataFrame(rows, FEATURE_RUNS), RUNS_TABLE, mode="append")


def _as_longs(values: Mapping[str, int]) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.items()}
