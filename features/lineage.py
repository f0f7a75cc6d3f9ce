"""Which days each feature job has processed, which are stale and which are missing, from ``features/runs`` (JVM-free).

A job's day d is **processed** when its latest succeeded run record for d exists (``features/runs``, one row per day
of a run). It is **stale** when something it was built on has been rewritten since:

* an upstream job (:data:`features.tables.UPSTREAM`) rewrote one of the days up to d after d was built: the
  upstream run's output version of the table read is newer than the version d's run recorded as its input;
* the job itself rewrote one of its own earlier days that d is built on (:data:`features.tables.OWN_DAYS_BEFORE`)
  in a later run than d's;
* for ``validate_events``: the ``raw/events`` partition of d holds other files than at the version d's run read
  (the log is compared, no data file is read; a version whose log is gone counts as unchanged).

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
    """The latest succeeded run of a job for one day."""

    run_id: str
    inputs: dict[str, int]
    outputs: dict[str, int]

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
        if known is None or record.output(primary) >= known.output(primary):
            days[row["ds"]] = record
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
    """Days built on an earlier day of the job's own that a later run rewrote."""
    reach, primary = T.OWN_DAYS_BEFORE[job], T.PRIMARY_OUTPUT[job]
    if reach == 0:
        return
    newest: tuple[int, dt.date] | None = None  # the newest version among the days before, and its day
    ordered = sorted(mine)
    for position, day in enumerate(ordered):
        if reach is not None:  # only the `reach` days just before
            window = [d for d in ordered[max(0, position - reach):position] if (day - d).days <= reach]
            newest = max(((mine[d].output(primary), d) for d in window), default=None)
        if newest is not None and newest[0] > mine[day].output(primary):
            days.stale.setdefault(day, f"{job} rebuilt {newest[1]} after this day was built on it")
        if reach is None:
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
    """validate_events days whose raw/events partition changed since the version their run read."""
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
            if then.get(day, frozenset()) != current.get(day, frozenset()):
                days.stale.setdefault(day, f"raw/events changed for {day} after version {version} was validated")


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
    return (f"python -m jobs.feature_chain --lakehouse {lakehouse.root} --ds {first.isoformat()} "
            f"--until {last.isoformat()}{start}")


def stale_report(lakehouse: Lakehouse, *, after: str) -> str | None:
    """For an operator, after a run of ``after``: the later jobs' stale days and the command that rebuilds them."""
    later = T.CHAIN[T.CHAIN.index(after) + 1:] if after in T.CHAIN else ()
    if not later:
        return None
    status = chain_status(lakehouse)
    stale = {job: status[job] for job in later if status[job].stale}
    if not stale:
        return None
    lines = [f"{after}: the days below were built on inputs that have changed since; they are stale until rebuilt:"]
    for job, days in stale.items():
        first_day = min(days.stale)
        lines.append(f"  {job}: {_span(days.stale)} (e.g. {first_day}: {days.stale[first_day]})")
    first_job = next(iter(stale))
    first = min(min(days.stale) for days in stale.values())
    last = max(max(days.processed) for days in stale.values())
    lines.append("rebuild them with: " + rebuild_command(lakehouse, first_job, first, last))
    return "\n".join(lines)


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
                                f"(python -m jobs.{upstream} --lakehouse {lakehouse.root} --ds {lacking[0]} "
                                f"--until {lacking[-1]})")
        stale = {d: why for d, why in theirs.stale.items() if d <= last}
        if stale:
            first_stale = min(stale)
            later = max(theirs.processed)
            raise JobInputError(f"{upstream} for {_span(stale)} is stale ({first_stale}: {stale[first_stale]}); "
                                "rebuild it and the jobs after it first: "
                                + rebuild_command(lakehouse, upstream, first_stale, max(later, last)))
    if T.OWN_DAYS_BEFORE[job] is not None:
        return
    mine = status[job]
    source = set(status[next(iter(T.UPSTREAM[job]))].processed)
    gap = sorted(d for d in source - set(mine.processed) if d < first)
    if gap:
        raise JobInputError(f"{job} for {first} builds on every earlier day, but {_span(gap)} "
                            f"{'was' if len(gap) == 1 else 'were'} never processed by it; run it from {gap[0]} "
                            f"(python -m jobs.{job} --lakehouse {lakehouse.root} --ds {gap[0]} --until {last})")
    if mine.latest is not None and first <= mine.latest and last < mine.latest:
        raise JobInputError(f"{job} has processed days up to {mine.latest}, built on the days from {first} this run "
                            f"would replace; run the whole rest of the chain: --ds {first} --until {mine.latest} "
                            f"(or {rebuild_command(lakehouse, job, first, mine.latest)})")
