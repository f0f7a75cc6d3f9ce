"""ctr_training: train a CTR model with torchrun on the latest features, then read its metrics back.

    train -> evaluate

* Scheduled when ``ctr_features`` has updated both ``ctr/features/samples`` and ``ctr/features/split`` (the model
  is ``train_model`` of ``ctr_settings``), or triggered by hand with a conf such as::

      airflow dags trigger ctr_training -c '{"model": "dien", "overrides": ["train.epochs=2"], "nproc": 2}'

* ``train`` runs ``torchrun --nproc_per_node=N -m training.train --lakehouse L --model M --run-id R --set ...``
  (L: ``train_lakehouse`` of ``ctr_settings``, the lakehouse as a file system path)
  (command, arguments, environment and N from ``ctr_settings``; N and overrides from the conf). The run id is
  ``<model>-<Airflow run id>`` unless the conf names one. A retry of the task resumes the run from its newest
  checkpoint. Whatever ends the task, the run is recorded as failed in ``training/runs`` (the trainer records its
  own errors; a process that died without recording is marked by the task, and by its failure callback).
* ``evaluate`` reads the run back from ``training/runs`` and ``training/metrics`` (delta-rs, no JVM), logs it and
  returns it (XCom): model, test/valid AUC, GAUC, logloss, training samples/s.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from ctr_common import TRAINING_ASSETS, TRAINING_INPUTS, default_args
from ctr_settings import SETTINGS


def _base_run_id(params: Any, dag_run: Any) -> str:
    from jobs.airflow_tasks import training_run_id

    return params.get("run_id") or training_run_id(params["model"], dag_run.run_id)


def _record_failure(context: Any) -> None:
    """Failure callback of ``train``: runs of this DAG run still marked ``running`` become ``failed``."""
    from jobs.airflow_tasks import mark_stale_runs_failed

    base = _base_run_id(context["params"], context["dag_run"])
    error = f"the Airflow task {context['ti'].task_id} failed: {context.get('exception')!r}"
    marked = mark_stale_runs_failed(SETTINGS.train_lakehouse, base, error=error)
    print(f"failure callback: runs of {base} marked failed in training/runs: {', '.join(marked) or 'none running'}")


@dag(
    dag_id="ctr_training",
    description="torchrun training on features/samples, then its metrics read back from training/metrics",
    schedule=TRAINING_INPUTS,
    start_date=pendulum.parse(SETTINGS.start_date, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        # an unknown model is refused when the run is triggered (the names of training/configs/*.yaml)
        "model": Param(SETTINGS.train_model, type="string", minLength=1, description="a model of training.models",
                       **({"enum": SETTINGS.model_names()} if SETTINGS.model_names() else {})),
        "overrides": Param(list(SETTINGS.train_overrides), type="array", items={"type": "string"},
                           description="training settings, e.g. [\"train.epochs=2\", \"data.batch_size=512\"]"),
        "nproc": Param(SETTINGS.train_nproc, type="integer", minimum=1, description="torchrun --nproc_per_node"),
        "run_id": Param(None, type=["null", "string"], description="training run id (default <model>-<run id>)"),
    },
    tags=["ctr", "training", "torchrun"],
    doc_md=__doc__,
)
def ctr_training() -> None:
    @task(task_id="train", outlets=TRAINING_ASSETS, on_failure_callback=_record_failure,
          execution_timeout=dt.timedelta(minutes=SETTINGS.train_timeout_minutes))
    def train(params: Any = None, dag_run: Any = None, ti: Any = None) -> str:
        from jobs.airflow_tasks import run_training

        return run_training(
            lakehouse=SETTINGS.train_lakehouse, model=params["model"], base_run_id=_base_run_id(params, dag_run),
            try_number=ti.try_number, nproc=params["nproc"], overrides=SETTINGS.train_overrides + tuple(
                params["overrides"]), torchrun=SETTINGS.torchrun, torchrun_args=SETTINGS.torchrun_args,
            env=SETTINGS.train_env, cwd=SETTINGS.project_dir)

    @task(task_id="evaluate")
    def evaluate(training_run: str) -> dict[str, Any]:
        from jobs.airflow_tasks import format_summaries, summarize_run

        summary = summarize_run(SETTINGS.train_lakehouse, training_run)
        print(format_summaries([summary]))
        return summary

    evaluate(train())


ctr_training()
