"""Run DAG runs of the ctr_* DAGs one after another with real Airflow (``dag.test``), in one process.

    python -m jobs.dag_runner PLAN.json [--log FILE]

What ``airflow dags test DAG_ID DATE -c CONF`` does, for several runs without paying Airflow's start-up for each:
the DAG files are parsed from the configured DAGs folder and synced to the metadata database, and each run goes
through the scheduler's dependency checks and the task runner (retries, trigger rules, ``depends_on_past``, asset
events). The environment must already name the Airflow home (``AIRFLOW_HOME`` with a migrated database) and the
DAGs folder; ``jobs.pipeline`` prepares both.

The plan: ``{"runs": [{"dag_id": ..., "logical_date": "YYYY-MM-DD" or null, "conf": {...}, "label": ...}, ...],
"result": "PATH"}``. Runs stop at the first failed one. The result file gets, per run, its Airflow run id, state
and each task's state and seconds. With ``--log``, Airflow's own output (and that of spark-submit and torchrun)
goes to that file and this process prints one line per task on its standard output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def _progress_listener(out: TextIO) -> Any:
    """An Airflow listener printing one line per finished task on ``out`` (the original standard output)."""
    from airflow.listeners import hookimpl

    class Progress:
        def __init__(self) -> None:
            self.started: dict[str, float] = {}
            self.label = ""

        def _done(self, ti: Any, state: str, note: str = "") -> None:
            seconds = time.monotonic() - self.started.pop(f"{ti.run_id}/{ti.task_id}", time.monotonic())
            out.write(f"  {self.label:<26} {ti.task_id:<16} {state:<8} {seconds:7.1f} s{note}\n")
            out.flush()

        @hookimpl
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
            self.started[f"{task_instance.run_id}/{task_instance.task_id}"] = time.monotonic()

        @hookimpl
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            self._done(task_instance, "success")

        @hookimpl
        def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
            first = str(error).strip().splitlines()[0][:200] if error else ""
            self._done(task_instance, "failed", f"  ({first})" if first else "")

        @hookimpl
        def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
            self._done(task_instance, "skipped")

    return Progress()


def run_plan(plan: dict[str, Any], progress_out: TextIO) -> list[dict[str, Any]]:
    from airflow.listeners.listener import get_listener_manager
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.cli import get_bagged_dag
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    progress = _progress_listener(progress_out)
    get_listener_manager().add_listener(progress)
    dags: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    for item in plan["runs"]:
        dag_id = item["dag_id"]
        if dag_id not in dags:
            dags[dag_id] = get_bagged_dag(None, dag_id)  # parses the DAGs folder and syncs it to the database
        logical = item.get("logical_date")
        logical_date = None if logical is None else dt.datetime.fromisoformat(logical).replace(tzinfo=dt.UTC)
        progress.label = item.get("label") or f"{dag_id} {logical or ''}".strip()
        started = time.monotonic()
        dag_run = dags[dag_id].test(logical_date=logical_date, run_conf=item.get("conf") or None)
        with create_session() as session:
            tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id,
                                                             TaskInstance.run_id == dag_run.run_id)).all()
            tasks = {ti.task_id: {"state": str(ti.state.value if hasattr(ti.state, "value") else ti.state),
                                  "seconds": ti.duration} for ti in tis}
        state = str(getattr(dag_run.state, "value", dag_run.state))
        results.append({"dag_id": dag_id, "label": progress.label, "logical_date": logical,
                        "run_id": dag_run.run_id, "state": state, "tasks": tasks,
                        "seconds": round(time.monotonic() - started, 1)})
        if dag_run.state != DagRunState.SUCCESS:
            break
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.dag_runner", description=__doc__.splitlines()[0])
    parser.add_argument("plan", type=Path, help="JSON plan of the DAG runs")
    parser.add_argument("--log", type=Path, help="send Airflow's output to this file")
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text())
    progress_out: TextIO = sys.stdout
    if args.log is not None:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        progress_out = os.fdopen(os.dup(1), "w", buffering=1)
        log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log_fd, 1)  # Airflow's logging, spark-submit's and torchrun's output: into the log file
        os.dup2(log_fd, 2)
        os.close(log_fd)
    results = run_plan(plan, progress_out)
    Path(plan["result"]).write_text(json.dumps(results, indent=2))
    ok = len(results) == len(plan["runs"]) and all(r["state"] == "success" for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
