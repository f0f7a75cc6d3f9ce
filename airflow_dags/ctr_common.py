"""What the ctr_* DAG files share: assets, default task arguments and the feature-job operator.

Imports Airflow, the standard library and ``ctr_settings`` only. Anything that needs the project (delta-rs checks,
the training launcher) is imported inside the callables, when a task runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.exceptions import AirflowNotFoundException, AirflowSkipException
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, BaseHook
from ctr_settings import FEATURE_OUTPUTS, SETTINGS, TRAINING_OUTPUTS, Settings


def table_asset(table: str, settings: Settings = SETTINGS) -> Asset:
    """The Airflow asset of a lakehouse table: named ``ctr/<table>``, its URI the table's location."""
    return Asset(name=f"ctr/{table}", uri=settings.table_uri(table), group="ctr-lakehouse")


FEATURE_ASSETS: dict[str, list[Asset]] = {
    job: [table_asset(t) for t in tables] for job, tables in FEATURE_OUTPUTS.items()
}
TRAINING_ASSETS: list[Asset] = [table_asset(t) for t in TRAINING_OUTPUTS]
#: what a training run reads: the samples and the split (build_rank_eval runs after build_samples, and last)
TRAINING_INPUTS: list[Asset] = [table_asset("features/samples"), table_asset("features/split")]


def default_args(settings: Settings = SETTINGS) -> dict[str, Any]:
    """Retries with exponential back-off (60 s, 120 s, ... up to 30 min by default)."""
    return {
        "owner": "ctr",
        "retries": settings.retries,
        "retry_delay": dt.timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(seconds=settings.max_retry_delay_seconds),
    }


def require_spark_connection(conn_id: str) -> None:
    """Fail with the fix when the Spark connection is missing (the provider would silently fall back to yarn)."""
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as err:
        key = "AIRFLOW_CONN_" + conn_id.upper()
        raise AirflowNotFoundException(
            f"the Spark connection {conn_id!r} is not defined. For the embedded default: "
            f"export {key}='{{\"conn_type\": \"spark\", \"host\": \"local[*]\"}}' (or `airflow connections add "
            f"{conn_id} --conn-type spark --conn-host 'local[*]'`); for a cluster, its master, e.g. --conn-host "
            f"spark://HOST --conn-port 7077, or yarn. The connection id comes from CTR_SPARK_CONN_ID."
        ) from err


class FeatureJobOperator(SparkSubmitOperator):
    """One feature job, ``spark-submit jobs/<job>.py --lakehouse L --ds FIRST --until LAST``, with Delta configured.

    The days asked for are the run's data interval (``{{ ds }}``), or ``{{ ds }}`` to the conf's ``until``. Before the
    submit, ``jobs.airflow_tasks.feature_plan`` widens them to the job's missing and stale days since the DAG's start
    date and to the later days built on them (one range job catches up everything), or skips the task.
    """

    def __init__(self, *, job: str, settings: Settings = SETTINGS, **kwargs: Any):
        super().__init__(
            task_id=job,
            application=settings.application(job),
            application_args=settings.job_args(job),
            conn_id=settings.spark_conn_id,
            conf=dict(settings.spark_conf),
            jars=settings.spark_jars,
            packages=settings.spark_packages,
            py_files=settings.spark_py_files,
            env_vars=dict(settings.spark_env) or None,
            spark_binary=settings.spark_binary,
            name=f"ctr_{job}",
            outlets=FEATURE_ASSETS[job],
            **kwargs,
        )
        self.job = job
        self.lakehouse = settings.lakehouse
        self.since = settings.start_date

    def execute(self, context: Any) -> None:
        require_spark_connection(self._conn_id)
        args = list(self.application_args)  # rendered by now
        first, last = args[args.index("--ds") + 1], args[args.index("--until") + 1]
        if last < first:
            raise ValueError(f"the run's conf says until = {last}, before the run's day {first}")
        from jobs.airflow_tasks import feature_plan

        plan = feature_plan(self.lakehouse, self.job, first, last, dict(context["params"]), _job_config(args),
                            self.since)
        if plan.first is None:
            raise AirflowSkipException(f"{self.job} skipped: {plan.reason}")
        if plan.reason:
            self.log.info("%s runs %s..%s: %s", self.job, plan.first, plan.last, plan.reason)
        args[args.index("--ds") + 1] = plan.first.isoformat()
        args[args.index("--until") + 1] = plan.last.isoformat()
        self.application_args = args
        super().execute(context)


def _job_config(args: list[str]) -> dict[str, Any]:
    """The settings of the job's ``--config`` file (a YAML mapping), if the task passes one."""
    if "--config" not in args:
        return {}
    import yaml

    with open(args[args.index("--config") + 1]) as file:
        return yaml.safe_load(file) or {}
