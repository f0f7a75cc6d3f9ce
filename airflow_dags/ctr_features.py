"""ctr_features: the daily feature chain, one spark-submit task per job, each a range job.

    validate_events -> build_vocab -> build_samples -> build_rank_eval

* Each task is ``spark-submit jobs/<job>.py --lakehouse L --ds FIRST --until LAST`` with the Spark connection and
  the Delta package and confs of ``ctr_settings`` (embedded default: ``local[*]`` and the jars resolved in
  ``.cache/ivy``). A range job reads its inputs once, computes every day in one plan and commits each table once.
* The days asked for are the run's day (``{{ ds }}``), or ``{{ ds }}`` to the conf's ``until``. Before its submit,
  each task plans its range (``jobs.airflow_tasks.feature_plan``, from the run records in ``features/runs``): the
  job's missing and stale days since ``start_date`` and the asked days that are missing or stale (validate_events
  always redoes the asked days; ``{"rebuild": true}`` makes every task do so), through the later days built on the
  ones it replaces; a task with nothing to do is skipped. So one run catches up whatever is missing (the DAG was
  paused, a task failed yesterday, the lakehouse is new) and rebuilds whatever a late day made stale, with one
  range job per task, not one Airflow run per day. That is why ``catchup`` is off by default: the scheduler's latest
  run does the catch-up. A day whose content did not change (same fingerprint) makes nothing stale.
* Every job is idempotent for its range (it replaces its ``ds`` partitions), so a retry, a rerun or a backfill of a
  day gives the tables of the daily runs. Retries back off exponentially.
* The vocabulary and the samples carry state from day to day; the DAG runs one run at a time
  (``max_active_runs=1``).
* ``build_rank_eval`` builds the evaluation sets anchored at the range's days (and rebuilds stale anchors); it is
  skipped when the range ends before the split's current anchor (a backfill does not move the split back), for the
  first days (too few sample days for a split) and when the run's conf says ``{"rank_eval": false}``.
* Backfilling a year of a new log: write the raw days, then trigger one run for the last day
  (``airflow dags trigger ctr_features -l LAST``): every task runs once, over every day since ``start_date``.
  ``{"until": "YYYY-MM-DD"}`` in a run's conf asks for a range explicitly.
* Each task publishes the tables it wrote as Airflow assets (``ctr/features/...``); ``ctr_training`` is scheduled
  on ``ctr/features/samples`` and ``ctr/features/split``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag
from airflow.timetables.interval import CronDataIntervalTimetable
from ctr_common import FeatureJobOperator, default_args
from ctr_settings import SETTINGS


@dag(
    dag_id="ctr_features",
    description="raw/events -> validated events, vocabulary, samples and evaluation sets in Delta, one day a run",
    # a run per UTC day D, started once D is over; {{ ds }} is D (the data interval's start)
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.parse(SETTINGS.start_date, tz="UTC"),
    catchup=SETTINGS.catchup,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "rank_eval": Param(True, type="boolean",
                           description="build features/split and features/rank_eval for the run's days"),
        "rebuild": Param(False, type="boolean",
                         description="redo the asked days even where they are processed and current"),
        "until": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}$",
                       description="catch up in one run: every day from the run's day to this one (YYYY-MM-DD), "
                                   "each job in one spark-submit"),
    },
    tags=["ctr", "features", "spark"],
    doc_md=__doc__,
)
def ctr_features() -> None:
    validate = FeatureJobOperator(job="validate_events")
    vocab = FeatureJobOperator(job="build_vocab")
    samples = FeatureJobOperator(job="build_samples")
    rank_eval = FeatureJobOperator(job="build_rank_eval")
    validate >> vocab >> samples >> rank_eval


ctr_features()
