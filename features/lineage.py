"""Which days each feature job has processed, which are stale and which are missing, from ``features/runs`` (JVM-free).

A job's day d is **processed** when a succeeded run record for d exists (``features/runs``, one row per day of a
run); its latest one says what d was built from. The day is **stale** when something it was built on has changed:

* an upstream job (:data:`features.tables.UPSTREAM`) rewrote one of the days up to d after d was built (the
  upstream run's output version of the table read is newer than the version d's run recorded as its input), with
  other rows: a job that records a day's content fingerprint (:data:`FINGERPRINT`, an order-free hash of its rows)
  and rewrote it with the same one changed nothing;
* for the jobs that carry state (:data:`features.tables.CHAINED`): the job rewrote one of its own earlier days with
  other rows in a later run than d's;
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

#: the count under which a job records a day's content fingerprint (an order-free hash of the day's rows): a day
#: rewritten with the same fingerprint changes nothing downstream
FINGERPRINT = "fingerprint"


@dataclass(frozen=True)
class DayRecord:
    """One succeeded run of a job for one day."""

    run_id: str
    inputs: dict[str, int]
    outputs: dict[str, int]
    counts: dict[str, int] = field(default_factory=dict)

    def output(self, table: str) -> int:
        return self.outputs.get(table, -1)

    @property
    def fingerprint(self) -> int | None:
        return self.counts.get(FINGERPRINT)


@dataclass(frozen=True)
class DayHistory:
    """The succeeded runs of a job for one day, oldest first (by the version of the job's primary output)."""

    runs: tuple[DayRecord, ...]

    @property
    def latest(self) -> DayRecord:
        return self.runs[-1]

    def as_of(self, table: str, version: int) -> DayRecord | None:
        """The run whose output a reader of ``table`` at ``version`` saw (None: the day was not written yet)."""
        seen = [run for run in self.runs if run.output(table) <= version]
        return seen[-1] if seen else None

    def changed_since(self, table: str, version: int) -> bool:
        """Whether the day's rows in ``table`` differ from those at ``version``: rewritten since, and not known to
        hold the same content (same fingerprint)."""
        if self.latest.output(table) <= version:
            return False
        then = self.as_of(table, version)
        return then is None or then.fingerprint is None or then.fingerprint != self.latest.fingerprint


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


def day_records(lakehouse: Lakehouse) -> dict[str, dict[dt.date, DayHistory]]:
    """job -> day -> its succeeded runs, ordered by the version of the job's primary output."""
    if not lakehouse.exists(T.RUNS):
        return {}
    table = lakehouse.read_arrow(T.RUNS, columns=["run_id", "job", "ds", "status", "inputs", "outputs", "counts"])
    runs: dict[str, dict[dt.date, list[DayRecord]]] = {}
    for row in table.to_pylist():
        if row["status"] != "succeeded" or row["job"] not in T.PRIMARY_OUTPUT:
            continue
        record = DayRecord(row["run_id"], dict(row["inputs"] or []), dict(row["outputs"] or []),
                           dict(row["counts"] or []))
        runs.setdefault(row["job"], {}).setdefault(row["ds"], []).append(record)
    return {job: {day: DayHistory(tuple(sorted(found, key=lambda r: r.output(T.PRIMARY_OUTPUT[job]))))
                  for day, found in days.items()} for job, days in runs.items()}


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


def _own_staleness(job: str, mine: dict[dt.date, DayHistory], days: JobDays) -> None:
    """Days built on an earlier day of the job's own whose rows changed since (or, for validate_events, whose day
    before was validated for the first time after them)."""
    primary = T.PRIMARY_OUTPUT[job]
    if job == "validate_events":
        for day, history in mine.items():
            before = mine.get(day - dt.timedelta(days=1))
            if before is not None and before.runs[0].output(primary) > history.latest.output(primary):
                days.stale.setdefault(day, f"the day before was validated for the first time after {day}")
        return
    if job not in T.CHAINED:
        return
    ordered = sorted(mine)
    for position, day in enumerate(ordered):
        built = mine[day].latest.output(primary)
        for earlier in ordered[:position]:
            if mine[earlier].changed_since(primary, built):
                days.stale.setdefault(day, f"{job} rebuilt {earlier} with other rows after this day was built on it")
                break


def _upstream_staleness(mine: dict[dt.date, DayHistory], theirs: dict[dt.date, DayHistory], upstream: str,
                        table: str, days: JobDays) -> None:
    """Days built before the upstream job changed the rows of one of the days up to them."""
    for day, history in mine.items():
        read = history.latest.inputs.get(table)
        if read is None:
            continue
        changed = [d for d, their in theirs.items() if d <= day and their.changed_since(table, read)]
        if changed:
            first = min(changed)
            days.stale.setdefault(day, f"{upstream} rewrote {first} ({table} version "
                                       f"{theirs[first].latest.output(table)}) with other rows after this day was "
                                       f"built from version {read}")


def _raw_staleness(lakehouse: Lakehouse, mine: dict[dt.date, DayHistory], days: JobDays) -> None:
    """validate_events days whose raw/events partition, or the day before's, changed since the version their run
    read."""
    if not mine or not lakehouse.exists(T.RAW_EVENTS):
        return
    current = _files_by_day(lakehouse, None)
    by_version: dict[int, list[dt.date]] = {}
    for day, history in mine.items():
        if T.RAW_EVENTS in history.latest.inputs:
            by_version.setdefault(history.latest.inputs[T.RAW_EVENTS], []).append(day)
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
        lines.append(f"  {job}: {span(days.stale)} (e.g. {first_day}: {days.stale[first_day]})")
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


def span(days: Iterable[dt.date]) -> str:
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
            raise JobInputError(f"{upstream} has not processed {span(lacking)}; run it for those days first "
                                f"(python -m jobs.{upstream} --lakehouse {lakehouse.root} "
                                f"{_days_args(lacking[0], lacking[-1])})")
        stale = {d: why for d, why in theirs.stale.items() if d <= last}
        if stale:
            first_stale = min(stale)
            raise JobInputError(f"{upstream} for {span(stale)} is stale ({first_stale}: {stale[first_stale]}); "
                                "rebuild the stale days first: " + rebuild_advice(lakehouse, status))
    if job not in T.CHAINED:
        return
    mine = status[job]
    source = set(status[next(iter(T.UPSTREAM[job]))].processed)
    gap = sorted(d for d in source - set(mine.processed) if d < first)
    if gap:
        raise JobInputError(f"{job} for {first} builds on every earlier day, but {span(gap)} "
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
               split_days: int = 3, rebuild: bool = False) -> RangePlan:
    """The range a scheduled run of ``job`` asked for ``first..last`` should cover so that the chain ends up complete
    and current.

    The days to do: the job's missing and stale days since ``since`` (for ``build_rank_eval``: its stale anchors
    only; an anchor is an evaluation set, not a link of a chain), and of the days asked for, those that are missing
    or stale (``validate_events`` and ``rebuild``: all of them; a processed, current day has nothing to redo). The
    range runs from the first of them to the last, and for the jobs that carry state on to their latest processed day
    once it replaces processed days. Nothing to do: skip (``first`` None).

    ``build_rank_eval`` never starts before the first day with ``split_days`` sample days, and is skipped when its
    range would end before the current split's anchor (a backfill must not move the split back).
    """
    status = chain_status(lakehouse)
    mine, reasons = status[job], []
    asked = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    behind = set(mine.stale) | (set() if job == "build_rank_eval" else set(mine.missing))
    todo = {d for d in behind if since is None or d >= since}
    todo |= {d for d in asked if rebuild or job == "validate_events" or d in set(mine.stale) | set(mine.missing)}
    if not todo:
        return RangePlan(None, None, f"{job} has processed every day of {first}..{last} and none is stale")
    start, end = min(todo), max(todo)
    if start < first:
        reasons.append(f"{job} has missing or stale days from {start}")
    if job in T.CHAINED and mine.latest is not None and start <= mine.latest and end < mine.latest:
        end = mine.latest
    if end > last:
        reasons.append(f"the days up to {end} are stale or were built on the range's days")
    if start > first:
        reasons.append(f"{first}..{start - dt.timedelta(days=1)} processed and current")
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
