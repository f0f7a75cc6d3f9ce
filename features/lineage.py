"""Which days each feature job has processed, which are stale and which are missing, from ``features/runs`` (JVM-free).

A job's day d is **processed** when a succeeded run record for d exists (``features/runs``, one row per day of a
run); its latest one says what d was built from. The day is **stale** when something it was built on has changed:

* an upstream job (:data:`features.tables.UPSTREAM`) rewrote one of the days up to d after d was built: the
  upstream run's output version of the table read is newer than the version d's run recorded as its input;
* for the jobs that carry state (:data:`features.tables.CHAINED`): the job rewrote one of its own earlier days in a
  later run than d's;
* an upstream day up to d is itself stale (staleness travels down the chain until the days are rebuilt);
* for ``validate_events``: the ``raw/events`` partition of d or of the day before (whose valid impressions a click
  after midnight matches) holds other files than at the version d's run read (the Delta log is compared, no data
  file is read; a version whose log is gone counts as unchanged), or the day before was validated for the first
  time after d.

A day is **missing** when the job's input has it and the job has no record of it (for ``validate_events``: a
``raw/events`` partition; for the others: a day their first upstream job processed).

Side tables (``raw/items``, ``raw/users``) are read as they are when a job runs; changing them makes no day stale.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from features import tables as T
from features.tableio import Lakehouse


@dataclass(frozen=True)
class DayRecord:
    """The latest succeeded run of a job for one day (``first_version``: the primary output version of the first)."""

    run_id: str
    inputs: dict[str, int]
    outputs: dict[str, int]
    first_version: int = -1

    def output(self, table: str) -> int:
        return self.outputs.get(table, -1)


@dataclass
class JobDays:
    """What :func:`chain_status` says of one job."""

    job: str
    processed: list[dt.date] = field(default_factory=list)
    stale: dict[dt.date, str] = field(default_factory=dict)  # day -> why
    missing: list[dt.date] = field(default_factory=list)

    @property
    def latest(self) -> dt.date | None:
        return self.processed[-1] if self.processed else None


def day_records(lakehouse: Lakehouse) -> dict[str, dict[dt.date, DayRecord]]:
    """job -> day -> its latest succeeded run (the one whose primary output version is the highest)."""
    if not lakehouse.exists(T.RUNS):
        return {}
    table = lakehouse.read_arrow(T.RUNS, columns=["run_id", "job", "ds", "status", "inputs", "outputs"])
    records: dict[str, dict[dt.date, DayRecord]] = {}
    for row in table.to_pylist():
        if row["status"] != "succeeded" or row["job"] not in T.PRIMARY_OUTPUT:
            continue
        record = DayRecord(row["run_id"], dict(row["inputs"] or []), dict(row["outputs"] or []))
        primary = T.PRIMARY_OUTPUT[row["job"]]
        days = records.setdefault(row["job"], {})
        known = days.get(row["ds"])
        first = min(record.output(primary), known.first_version) if known else record.output(primary)
        latest = record if known is None or record.output(primary) >= known.output(primary) else known
        days[row["ds"]] = DayRecord(latest.run_id, latest.inputs, latest.outputs, first)
    return records


def chain_status(lakehouse: Lakehouse) -> dict[str, JobDays]:
    """Every feature job's processed, stale and missing days."""
    records = day_records(lakehouse)
    status: dict[str, JobDays] = {}
    for job in T.CHAIN:
        mine = records.get(job, {})
        days = JobDays(job, processed=sorted(mine))
        _own_staleness(job, mine, days)
        for upstream, table in T.UPSTREAM[job].items():
            _upstream_staleness(mine, records.get(upstream, {}), upstream, table, days)
            if status[upstream].stale:  # built on a day that is itself stale: stale until both are rebuilt
                first_stale = min(status[upstream].stale)
                for day in mine:
                    if day >= first_stale:
                        days.stale.setdefault(day, f"built on {upstream}'s {first_stale}, which is stale")
        if job == "validate_events":
            _raw_staleness(lakehouse, mine, days)
            source = set(lakehouse.days(T.RAW_EVENTS)) if lakehouse.exists(T.RAW_EVENTS) else set()
        else:
            source = set(records.get(next(iter(T.UPSTREAM[job])), {}))
        days.missing = sorted(source - set(mine))
        days.stale = dict(sorted(days.stale.items()))
        status[job] = days
    return status


def _own_staleness(job: str, mine: dict[dt.date, DayRecord], days: JobDays) -> None:
    """Days built on an earlier day of the job's own that a later run rewrote (or, for validate_events, validated
    for the first time)."""
    primary = T.PRIMARY_OUTPUT[job]
    if job == "validate_events":
        for day, record in mine.items():
            before = mine.get(day - dt.timedelta(days=1))
            if before is not None and before.first_version > record.output(primary):
                days.stale.setdefault(day, f"the day before was validated for the first time after {day}")
        return
    if job not in T.CHAINED:
        return
    newest: tuple[int, dt.date] | None = None  # the newest version among the days before, and its day
    for day in sorted(mine):
        if newest is not None and newest[0] > mine[day].output(primary):
            days.stale.setdefault(day, f"{job} rebuilt {newest[1]} after this day was built on it")
        version = (mine[day].output(primary), day)
        newest = version if newest is None or version[0] > newest[0] else newest


def _upstream_staleness(mine: dict[dt.date, DayRecord], theirs: dict[dt.date, DayRecord], upstream: str,
                        table: str, days: JobDays) -> None:
    """Days built before the upstream job rewrote one of the days up to them."""
    pending = sorted(theirs)
    newest: tuple[int, dt.date] | None = None
    for day in sorted(mine):
        while pending and pending[0] <= day:
            version = (theirs[pending[0]].output(table), pending[0])
            newest = version if newest is None or version[0] > newest[0] else newest
            pending.pop(0)
        read = mine[day].inputs.get(table)
        if newest is not None and read is not None and newest[0] > read:
            days.stale.setdefault(day, f"{upstream} rewrote {newest[1]} ({table} version {newest[0]}) after this day "
                                       f"was built from version {read}")


def _raw_staleness(lakehouse: Lakehouse, mine: dict[dt.date, DayRecord], days: JobDays) -> None:
    """validate_events days whose raw/events partition, or the day before's, changed since the version their run
    read."""
    if not mine or not lakehouse.exists(T.RAW_EVENTS):
        return
    current = _files_by_day(lakehouse, None)
    by_version: dict[int, list[dt.date]] = {}
    for day, record in mine.items():
        if T.RAW_EVENTS in record.inputs:
            by_version.setdefault(record.inputs[T.RAW_EVENTS], []).append(day)
    for version, built in by_version.items():
        try:
            then = _files_by_day(lakehouse, version)
        except Exception:  # noqa: BLE001 - the version's log is gone (cleaned up): nothing to compare with
            continue
        for day in built:
            for read in (day - dt.timedelta(days=1), day):
                if then.get(read, frozenset()) != current.get(read, frozenset()):
                    days.stale.setdefault(day, f"raw/events changed for {read} after version {version} was "
                                               "validated")


def _files_by_day(lakehouse: Lakehouse, version: int | None) -> dict[dt.date, frozenset[str]]:
    import pyarrow as pa

    actions = pa.table(lakehouse._delta_table(T.RAW_EVENTS, version).get_add_actions(flatten=True))
    out: dict[dt.date, set[str]] = {}
    if "partition.ds" not in actions.column_names:
        return {}
    for path, day in zip(actions.column("path").to_pylist(), actions.column("partition.ds").to_pylist(), strict=True):
        key = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
        out.setdefault(key, set()).add(path)
    return {day: frozenset(paths) for day, paths in out.items()}


def rebuild_command(lakehouse: Lakehouse, first_job: str, first: dt.date, last: dt.date) -> str:
    """The one command that rebuilds ``first_job`` and every job after it for ``first..last``."""
    start = "" if first_job == T.CHAIN[0] else f" --from {first_job}"
    return f"python -m jobs.feature_chain --lakehouse {lakehouse.root} {_days_args(first, last)}{start}"


def stale_report(lakehouse: Lakehouse, *, after: str) -> str | None:
    """For an operator, after a run of ``after``: its own and the later jobs' stale days, and the one command that
    rebuilds them (None when nothing is stale)."""
    later = T.CHAIN[T.CHAIN.index(after):] if after in T.CHAIN else ()
    if not later:
        return None
    status = chain_status(lakehouse)
    stale = {job: status[job] for job in later if status[job].stale}
    if not stale:
        return None
    lines = [f"{after}: these days were built on inputs that have changed since; they are stale until rebuilt:"]
    for job, days in stale.items():
        first_day = min(days.stale)
        lines.append(f"  {job}: {_span(days.stale)} (e.g. {first_day}: {days.stale[first_day]})")
    lines.append("rebuild them with: " + rebuild_advice(lakehouse, status))
    return "\n".join(lines)


def rebuild_advice(lakehouse: Lakehouse, status: dict[str, JobDays], jobs: Iterable[str] = T.CHAIN) -> str:
    """The one command that rebuilds every stale day of ``jobs`` (and the days after it that were built on it)."""
    stale = {job: status[job] for job in jobs if status[job].stale}
    if not stale:
        raise ValueError("nothing is stale")
    first_job = next(iter(stale))
    first = min(min(days.stale) for days in stale.values())
    last = max(max(days.processed) for days in status.values() if days.processed)
    return rebuild_command(lakehouse, first_job, first, last)


def _days_args(first: dt.date, last: dt.date) -> str:
    return f"--ds {first}" + (f" --until {last}" if last != first else "")


def _span(days: Iterable[dt.date]) -> str:
    ordered = sorted(days)
    return ordered[0].isoformat() if len(ordered) == 1 else f"{ordered[0]}..{ordered[-1]} ({len(ordered)} days)"


def check_range(lakehouse: Lakehouse, job: str, first: dt.date, last: dt.date) -> None:
    """Refuse (:class:`features.jobkit.JobInputError`) a run of ``job`` for ``first..last`` that would build on
    missing or stale days, or leave later days of its own built on the days it replaces.

    * every upstream job must have processed every day of the range, and none of its days up to ``last`` may be
      stale;
    * a job that carries state from day to day (``build_vocab``, ``build_samples``) must have processed every day
      before ``first`` that its first upstream job processed (a gap would break the chain), and a run that replaces
      processed days must go on to the latest processed day (``--until`` that day), since those days were built on
      the ones it replaces.
    """
    from features.jobkit import JobInputError

    status = chain_status(lakehouse)
    wanted = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    for upstream in T.UPSTREAM[job]:
        theirs = status[upstream]
        done = set(theirs.processed)
        lacking = [d for d in wanted if d not in done]
        if lacking:
            raise JobInputError(f"{upstream} has not processed {_span(lacking)}; run it for those days first "
                                f"(python -m jobs.{upstream} --lakehouse {lakehouse.root} "
                                f"{_days_args(lacking[0], lacking[-1])})")
        stale = {d: why for d, why in theirs.stale.items() if d <= last}
        if stale:
            first_stale = min(stale)
            raise JobInputError(f"{upstream} for {_span(stale)} is stale ({first_stale}: {stale[first_stale]}); "
                                "rebuild the stale days first: " + rebuild_advice(lakehouse, status))
    if job not in T.CHAINED:
        return
    mine = status[job]
    source = set(status[next(iter(T.UPSTREAM[job]))].processed)
    gap = sorted(d for d in source - set(mine.processed) if d < first)
    if gap:
        raise JobInputError(f"{job} for {first} builds on every earlier day, but {_span(gap)} "
                            f"{'was' if len(gap) == 1 else 'were'} never processed by it; run it from {gap[0]} "
                            f"(python -m jobs.{job} --lakehouse {lakehouse.root} {_days_args(gap[0], last)})")
    if mine.latest is not None and first <= mine.latest and last < mine.latest:
        raise JobInputError(f"{job} has processed days up to {mine.latest}, built on the days from {first} this run "
                            f"would replace; run the whole rest of the chain: --ds {first} --until {mine.latest} "
                            f"(or {rebuild_command(lakehouse, job, first, mine.latest)})")


@dataclass(frozen=True)
class RangePlan:
    """The days a run of a job covers: ``first..last`` (both None: nothing to run), and why that differs from the
    range asked for."""

    first: dt.date | None
    last: dt.date | None
    reason: str | None = None


def plan_range(lakehouse: Lakehouse, job: str, first: dt.date, last: dt.date, *, since: dt.date | None = None,
               split_days: int = 3) -> RangePlan:
    """The range a scheduled run of ``job`` for ``first..last`` should cover so that the chain ends up complete and
    current: from the job's first missing or stale day (not before ``since``) to its last stale day, and for the
    jobs that carry state, on to their latest processed day once the range replaces processed days.

    ``build_rank_eval`` catches up stale anchors only (an anchor is an evaluation set, not part of a chain), never
    starts before the first day with ``split_days`` sample days, and is skipped when its range ends before the
    current split's anchor (a backfill must not move the split back).
    """
    status = chain_status(lakehouse)
    mine, reasons = status[job], []
    todo = sorted(set(mine.stale) | (set() if job == "build_rank_eval" else set(mine.missing)))
    if since is not None:
        todo = [d for d in todo if d >= since]
    start, end = min([first, *todo]), max([last, *(d for d in mine.stale if d > last)])
    if start < first:
        reasons.append(f"{job} has missing or stale days from {start}")
    if job in T.CHAINED and mine.latest is not None and start <= mine.latest and end < mine.latest:
        end = mine.latest
    if end > last:
        reasons.append(f"the days up to {end} were built on the range's days and are rebuilt with them")
    if job == "build_rank_eval":
        if lakehouse.exists(T.SPLIT):
            anchors = lakehouse.read_arrow(T.SPLIT, columns=["anchor_ds"]).column("anchor_ds").to_pylist()
            anchor = max(anchors, default=None)
            if anchor is not None and end < anchor:
                return RangePlan(None, None, f"features/split is anchored at {anchor}, later than {end}: the split "
                                             "is not moved back")
        sample_days = [d for d in (lakehouse.days(T.SAMPLES) if lakehouse.exists(T.SAMPLES) else []) if d <= end]
        enough = sample_days[split_days - 1] if len(sample_days) >= split_days else None
        if enough is None or start < enough:
            reasons.append(f"features/samples has {len(sample_days)} day(s) up to {end}; a split needs {split_days} "
                           f"(first possible day: {enough or 'none'})")
            if enough is None or enough > end:
                return RangePlan(None, None, "; ".join(reasons))
            start = enough
    return RangePlan(start, end, "; ".join(reasons) or None)
