"""The bodies of the ctr_* DAGs' Python tasks and checks, run in the Airflow worker when a task runs.

The DAG files import this module inside their callables only, so parsing a DAG never loads the project. Module
level imports are the standard library; delta-rs (``features.tableio``) is imported inside each function, and
nothing here imports torch or pyspark: training runs in its own ``torchrun`` process group.

* :func:`feature_plan`: the check a feature task runs before its spark-submit: which days to run (none: skip the
  task).
* :func:`run_training`: launches ``torchrun -m training.train`` for one run of the training DAG, resumes it on a
  task retry, and makes sure a failure is recorded in ``training/runs`` (:func:`mark_run_failed`).
* :func:`summarize_run`: the run's row and metrics read back from ``training/runs`` and ``training/metrics``.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

RUNS_TABLE = "training/runs"
METRICS_TABLE = "training/metrics"
SUMMARY_METRICS = ("auc", "gauc", "logloss")


def _lakehouse(root: str):
    from features.tableio import Lakehouse

    return Lakehouse(root)


def _day(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


# ---------------------------------------------------------------------------------------------------- feature checks
def feature_plan(lakehouse: str, job: str, first: Any, last: Any, params: Mapping[str, Any],
                 job_config: Mapping[str, Any] | None = None, since: Any = None):
    """The range a feature task runs (``features.lineage.plan_range``): the job's missing and stale days since
    ``since`` (the DAG's start date) and the asked days that are missing or stale (all of them with the run's conf
    ``{"rebuild": true}``), through the later days built on the ones it replaces; for ``build_rank_eval``, nothing
    when the run's conf says ``{"rank_eval": false}``. Returns a ``RangePlan``."""
    from features.lineage import RangePlan, plan_range

    if job == "build_rank_eval" and not params.get("rank_eval", True):
        return RangePlan(None, None, "the run's conf has rank_eval = false")
    cfg = job_config or {}
    split_days = int(cfg.get("test_days", 1)) + int(cfg.get("valid_days", 1)) + 1
    return plan_range(_lakehouse(lakehouse), job, _day(first), _day(last),
                      since=_day(since) if since is not None else None, split_days=split_days,
                      rebuild=bool(params.get("rebuild", False)))


# ---------------------------------------------------------------------------------------------------- training
def training_run_id(model: str, dag_run_id: str) -> str:
    """A training run id for one run of the training DAG: ``<model>-<dag run id>`` in file-name-safe characters."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model}-{dag_run_id}").strip("-.")
    return safe[:120]


def torchrun_command(*, torchrun: Sequence[str], torchrun_args: Sequence[str], nproc: int, lakehouse: str,
                     model: str | None = None, run_id: str, resume: bool = False,
                     overrides: Sequence[str] = ()) -> list[str]:
    """``torchrun ... -m training.train --lakehouse L (--model M --run-id R --set k=v ... | --resume R)``."""
    command = [*torchrun, *torchrun_args, f"--nproc_per_node={int(nproc)}", "-m", "training.train",
               "--lakehouse", lakehouse]
    if resume:
        return command + ["--resume", run_id]
    if not model:
        raise ValueError("a new training run needs a model")
    command += ["--model", model, "--run-id", run_id]
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value, e.g. train.epochs=2")
        command += ["--set", item]
    return command


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def _run_rows(lakehouse: str, run_id: str):
    """The rows of ``run_id`` in ``training/runs`` as an Arrow table (its schema is the table's), or None."""
    lh = _lakehouse(lakehouse)
    if not lh.exists(RUNS_TABLE):
        return None
    return lh.read_arrow(RUNS_TABLE, where=f"run_id = '{_sql_text(run_id)}'")


def _run_row(lakehouse: str, run_id: str) -> dict[str, Any] | None:
    rows = _run_rows(lakehouse, run_id)
    return rows.to_pylist()[0] if rows is not None and rows.num_rows else None


def mark_run_failed(lakehouse: str, run_id: str, *, model: str | None, error: str) -> str:
    """Make sure ``run_id`` is recorded as failed in ``training/runs``; returns what was done.

    * ``"recorded"``: the trainer recorded the failure itself (status ``failed``): nothing to do;
    * ``"succeeded"``: the run succeeded (the task failed afterwards): left as it is;
    * ``"marked"``: the row still said ``running`` (the processes died without recording): now ``failed``;
    * ``"inserted"``: no row (training failed before its run record was written): a ``failed`` row is added.
    """
    import pyarrow as pa

    lh = _lakehouse(lakehouse)
    now = dt.datetime.now(dt.UTC)
    rows = _run_rows(lakehouse, run_id)
    if rows is not None and rows.num_rows:
        row = rows.to_pylist()[0]
        if row["status"] in ("failed", "succeeded"):
            return "recorded" if row["status"] == "failed" else "succeeded"
        row.update(status="failed", finished_at=now, updated_at=now, error=error[-4000:])
        # written back with the table's own schema, whatever columns the trainer's version has
        lh.upsert_arrow(pa.Table.from_pylist([row], schema=rows.schema), RUNS_TABLE, keys=["run_id"])
        return "marked"
    from training.records import RUNS

    fresh = {name: None for name in RUNS.names}
    fresh.update(run_id=run_id, model=model, status="failed", attempt=1, started_at=now, updated_at=now,
                 finished_at=now, error=error[-4000:])
    lh.upsert_arrow(pa.Table.from_pylist([fresh], schema=RUNS), RUNS_TABLE, keys=["run_id"])
    return "inserted"


def _plan_attempt(lakehouse: str, base_run_id: str, try_number: int) -> tuple[str, bool] | None:
    """(run id, resume) for this try of the task, or None when the run already succeeded.

    A first try starts ``base_run_id``. A retry resumes it from its newest checkpoint when the trainer had recorded
    it (its configuration is in the row); a run that failed before the trainer recorded anything is started afresh
    as ``<base>-try<N>``.
    """
    row = _run_row(lakehouse, base_run_id)
    if row is None:
        return base_run_id, False
    if row["status"] == "succeeded":
        return None
    if row.get("config"):
        return base_run_id, True
    retry_id = f"{base_run_id}-try{try_number}"
    retry_row = _run_row(lakehouse, retry_id)
    if retry_row is not None and retry_row["status"] == "succeeded":
        return None
    return retry_id, bool(retry_row and retry_row.get("config"))


def run_training(*, lakehouse: str, model: str, base_run_id: str, try_number: int = 1, nproc: int,
                 overrides: Sequence[str] = (), torchrun: Sequence[str], torchrun_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 log: Callable[[str], None] | None = None) -> str:
    """Run (or resume) one training run with torchrun and return its run id; raise if it failed.

    The output of every rank is streamed to ``log`` (the task log). Whatever ends the task (the processes exit
    non-zero, the task is stopped or times out), the process group is stopped and the run is recorded as failed
    in ``training/runs`` (:func:`mark_run_failed`).
    """
    log = log or (lambda line: print(line, flush=True))
    plan = _plan_attempt(lakehouse, base_run_id, try_number)
    if plan is None:
        log(f"training run {base_run_id} already succeeded: nothing to do")
        return _succeeded_id(lakehouse, base_run_id, try_number)
    run_id, resume = plan
    command = torchrun_command(torchrun=torchrun, torchrun_args=torchrun_args, nproc=nproc, lakehouse=lakehouse,
                               model=model, run_id=run_id, resume=resume, overrides=overrides)
    log(("resuming" if resume else "starting") + f" training run {run_id}: {' '.join(command)}")
    tail: collections.deque[str] = collections.deque(maxlen=40)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    status: int | None = None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log(line)
        status = process.wait()
    finally:
        if status is None:  # the task was stopped (SIGTERM, timeout) while training ran: stop the process group
            _stop(process)
            mark_run_failed(lakehouse, run_id, model=model,
                            error="the Airflow task was stopped while training ran; last output:\n" + "\n".join(tail))
    if status != 0:
        done = mark_run_failed(lakehouse, run_id, model=model,
                               error=f"torchrun exited with status {status} without recording the failure; "
                                     "last output:\n" + "\n".join(tail))
        raise RuntimeError(f"training run {run_id} failed: torchrun exited with status {status} "
                           f"(training/runs: {done})")
    return run_id


def _succeeded_id(lakehouse: str, base_run_id: str, try_number: int) -> str:
    row = _run_row(lakehouse, base_run_id)
    if row is not None and row["status"] == "succeeded":
        return base_run_id
    return f"{base_run_id}-try{try_number}"


def _stop(process: subprocess.Popen, grace_seconds: float = 30.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_seconds)
            return
        except subprocess.TimeoutExpired:
            continue


def mark_stale_runs_failed(lakehouse: str, base_run_id: str, *, error: str) -> list[str]:
    """The task's failure callback: runs of this DAG run still ``running`` (their processes died) become ``failed``."""
    lh = _lakehouse(lakehouse)
    if not lh.exists(RUNS_TABLE):
        return []
    rows = lh.read_arrow(RUNS_TABLE, columns=["run_id", "model", "status"]).to_pylist()
    marked = []
    for row in rows:
        ours = row["run_id"] == base_run_id or row["run_id"].startswith(f"{base_run_id}-try")
        if ours and row["status"] == "running":
            mark_run_failed(lakehouse, row["run_id"], model=row["model"], error=error)
            marked.append(row["run_id"])
    return marked


# ---------------------------------------------------------------------------------------------------- summary
def summarize_run(lakehouse: str, run_id: str) -> dict[str, Any]:
    """One run's outcome read back from ``training/runs`` and ``training/metrics``.

    Keys: ``run_id``, ``model``, ``status``, ``epochs``, ``seconds``, ``samples_per_second`` (training throughput,
    the mean over epochs, all ranks), ``valid_<metric>`` / ``test_<metric>`` of the final evaluation (the best
    checkpoint) for every metric recorded there (auc, gauc, logloss, ...). Raises unless the run succeeded.
    """
    row = _run_row(lakehouse, run_id)
    if row is None:
        raise LookupError(f"no run {run_id!r} in {RUNS_TABLE}")
    if row["status"] != "succeeded":
        raise RuntimeError(f"training run {run_id} is {row['status']}: {row.get('error') or ''}".strip())
    lh = _lakehouse(lakehouse)
    metrics = []
    if lh.exists(METRICS_TABLE):
        metrics = lh.read_arrow(METRICS_TABLE, where=f"run_id = '{_sql_text(run_id)}'").to_pylist()
    summary: dict[str, Any] = {"run_id": run_id, "model": row["model"], "status": row["status"]}
    throughput = [m["value"] for m in metrics
                  if m["kind"] == "epoch" and m["split"] == "train" and m["metric"] == "samples_per_second"]
    summary["epochs"] = len({m["epoch"] for m in metrics if m["kind"] == "epoch"})
    summary["samples_per_second"] = sum(throughput) / len(throughput) if throughput else None
    started, finished = row.get("started_at"), row.get("finished_at")
    summary["seconds"] = (finished - started).total_seconds() if started and finished else None
    for m in sorted(metrics, key=lambda m: (m["split"], m["metric"])):
        if m["kind"] == "final":
            summary[f"{m['split']}_{m['metric']}"] = m["value"]
    return summary


def format_summaries(summaries: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table of :func:`summarize_run` results, one line per run."""
    def number(value: Any, digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = (f"{'model':<8}{'test AUC':>10}{'test GAUC':>11}{'test logloss':>14}{'valid AUC':>11}"
              f"{'samples/s':>11}{'epochs':>8}  run_id")
    lines = [header]
    for s in summaries:
        rate = s.get("samples_per_second")
        lines.append(f"{s['model']:<8}{number(s.get('test_auc')):>10}{number(s.get('test_gauc')):>11}"
                     f"{number(s.get('test_logloss')):>14}{number(s.get('valid_auc')):>11}"
                     f"{'-' if rate is None else f'{rate:,.0f}':>11}{s.get('epochs', 0):>8}  {s['run_id']}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a debugging aid: python -m jobs.airflow_tasks LAKEHOUSE RUN_ID
    print(format_summaries([summarize_run(sys.argv[1], sys.argv[2])]))
