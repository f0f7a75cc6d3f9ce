"""ctr_features: the daily feature chain, one spark-submit task per job for the run's day (``{{ ds }}``).

    validate_events -> build_vocab -> build_samples -> build_rank_eval

* Each task is ``spark-submit jobs/<job>.py --lakehouse L --ds {{ ds }} --until {{ ds }}`` with the Spark
  connection and the Delta package and confs of ``ctr_settings`` (embedded default: ``local[*]`` and the jars
  resolved in ``.cache/ivy``).
* Every job is idempotent for its day (it replaces its ``ds`` partitions), so a retry, a rerun or a backfill of a
  day gives the tables of the daily run. Retries back off exponentially.
* The vocabulary is append-only and assigns indices in day order, and ``build_samples`` carries each user's state
  from the previous day: both tasks ``depends_on_past`` and the DAG runs one day at a time (``max_active_runs=1``;
  catch-up runs the missed days in order). On a backfill of a day the vocabulary has already passed, ``build_vocab``
  is skipped (its rows for that day stay as the daily run wrote them); ``build_samples`` then still runs.
* ``build_rank_eval`` rebuilds ``features/split`` (anchored at the day) and the day's ranking candidates; it is
  skipped for a day earlier than the split's anchor (a backfill does not move the split back), and when the run's
  conf says ``{"rank_eval": false}``.
* Catching up many days in one run (with ``catchup`` off, or where the scheduler's daily runs are not wanted):
  trigger a run for the first day with ``{"until": "YYYY-MM-DD"}`` in its conf.
  Each task then runs its job once for every day up to ``until``, in order, in one spark-submit (the JVM's start
  and warm-up paid once, not per day); the tables are those of one run per day (each day is the same job body
  with its own run record). The checks above leave out the days a backfill must not redo.
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
        "until": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}$",
                       description="catch up in one run: every day from the run's day to this one (YYYY-MM-DD), "
                                   "each job in one spark-submit"),
    },
    tags=["ctr", "features", "spark"],
    doc_md=__doc__,
)
def ctr_features() -> None:
    validate = FeatureJobOperator(job="validate_events")
    vocab = FeatureJobOperator(job="build_vocab", depends_on_past=True, day_plan="vocab")
    samples = FeatureJobOperator(job="build_samples", depends_on_past=True, trigger_rule="none_failed")
    rank_eval = FeatureJobOperator(job="build_rank_eval", day_plan="rank_eval")
    validate >> vocab >> samples >> rank_eval


ctr_features()
