"""Settings of the ctr_* DAGs: pure Python (standard library only), read once when a DAG file is parsed.

Where a value comes from, first match wins:

1. an environment variable ``CTR_<NAME>`` of the Airflow process (scheduler, DAG processor and workers must agree:
   set it in their service definition or ``airflow.cfg``'s environment);
2. a TOML file named by ``$CTR_AIRFLOW_SETTINGS``, with the same names in lower case at top level, e.g.::

       lakehouse = "s3a://bucket/lake"
       spark_mode = "cluster"
       spark_conn_id = "spark_prod"
       spark_conf = { "spark.executor.memory" = "8g" }
       train_nproc = 8
       train_env = { NCCL_DEBUG = "WARN" }

3. the embedded default below (one machine: ``local[*]`` Spark, the lakehouse folder of the project, CPU training on
   2 gloo ranks).

Names (environment variables hold lists and mappings as JSON, numbers and booleans as text):

====================== =================================================================================
``lakehouse``          lakehouse root given to every job (folder or URI); default ``<project>/lakehouse``
``train_lakehouse``    the same lakehouse as the training nodes mount it: a file system path (training writes its
                       checkpoints there as files; a URI is refused), e.g. ``/mnt/lake`` for ``s3a://bucket/lake``;
                       default ``lakehouse``
``project_dir``        folder holding ``jobs/`` (the spark-submit applications); default: this file's parent's parent
``python``             interpreter of the PySpark driver/workers and of torchrun; default: the one parsing the DAG
``start_date``         first data interval of ``ctr_features`` (``YYYY-MM-DD``, UTC); default ``2026-01-01``
``catchup``            let the scheduler create a run for every missed day since ``start_date``; default false:
                       each run's tasks catch up every missing day themselves, in one range job
``retries``            task retries; default 2, with exponential back-off from ``retry_delay_seconds`` (60)
                       up to ``max_retry_delay_seconds`` (1800)
``spark_conn_id``      Airflow connection of the Spark master (type ``spark``); default ``ctr_spark``
``spark_mode``         ``local`` (embedded default: the Delta jars resolved by ``make setup`` in ``.cache/ivy``,
                       small-machine tuning, the driver's class archive ``.cache/cds/spark-driver.jsa`` when
                       ``make setup`` built one: ``-Xshare:off`` in ``spark.driver.extraJavaOptions`` leaves it
                       out) or ``cluster`` (``--packages`` Delta, nothing machine-specific; the
                       driver, here in client mode, runs ``python``)
``spark_binary``       spark-submit to run; default the one beside ``python``, else ``spark-submit`` on the PATH
``spark_packages``     ``--packages``; default Delta's package on a cluster (none locally once resolved)
``spark_jars``         ``--jars``; default the resolved Delta jars locally
``spark_py_files``     ``--py-files``: the bundle of ``features/`` and ``jobs/`` (``make bundle``:
                       ``dist/ctr_suite_jobs.zip``) for executors without the project
``spark_conf``         extra ``--conf`` entries (a mapping), applied over the defaults
``spark_env``          extra environment of spark-submit (a mapping)
``job_config_dir``     folder of per-job YAML configs: ``<dir>/<job>.yaml`` is passed as ``--config`` if present
``torchrun``           command that starts training (a list); default ``[python, -m, torch.distributed.run]``
``torchrun_args``      arguments before ``--nproc_per_node``; default ``["--standalone"]`` (one node)
``train_nproc``        processes per node (one per GPU; 2 gloo ranks on CPU); default 2
``train_model``        model of runs triggered by the feature assets; default ``din``
``train_overrides``    ``--set`` overrides of every run (a list of ``key=value``); default none
``train_env``          extra environment of torchrun (a mapping), e.g. ``CUDA_VISIBLE_DEVICES``
``train_timeout_minutes`` execution timeout of the training task; default 360
====================== =================================================================================

The Spark connection itself is an Airflow connection (``airflow connections add`` or ``AIRFLOW_CONN_CTR_SPARK``):
its host (and port) is the master: ``local[*]`` for the embedded default, ``spark://HOST`` + port 7077,
``yarn``, or ``k8s://https://HOST``; its extra may set ``deploy-mode``, ``queue`` and ``namespace``.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Must match features/spark.py (checked by tests/airflow/test_dag_integrity.py): the DAG files do not import the
# project at parse time.
DELTA_VERSION = "4.0.1"
SCALA_BINARY = "2.13"
DELTA_PACKAGE = f"io.delta:delta-spark_{SCALA_BINARY}:{DELTA_VERSION}"
DELTA_CONFS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
#: every mode: the jobs' dates are UTC days
COMMON_CONF = {"spark.sql.session.timeZone": "UTC"}
#: the embedded default's tuning for a small machine: features.spark.LOCAL_DEFAULTS, and the driver JVM compiles with
#: C1 only (-XX:TieredStopAtLevel=1): each job is a short-lived JVM running many small queries, and skipping the C2
#: compiler made validate_events on a small day 40 % faster here (70 s -> 42 s on a loaded 2-core machine). C1 alone
#: would also shrink the code cache to 48 MB, which Spark's generated classes overflow ("Out of space in CodeCache
#: for adapters", a VirtualMachineError that kills the job): it keeps the tiered default of 240 MB. For long jobs
#: on big days override spark.driver.extraJavaOptions (CTR_SPARK_CONF).
LOCAL_CONF = {
    "spark.driver.memory": "6g",
    "spark.sql.shuffle.partitions": "8",
    "spark.default.parallelism": "4",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.log.level": "WARN",
}
#: JVM options that already decide about class sharing (as features.spark.ARCHIVE_FLAGS)
ARCHIVE_FLAGS = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare:off")
FEATURE_JOBS = ("validate_events", "build_vocab", "build_samples", "build_rank_eval")
#: lakehouse tables each feature job writes (published as Airflow assets)
FEATURE_OUTPUTS = {
    "validate_events": ("features/events_clean", "features/quarantine"),
    "build_vocab": ("features/vocab",),
    "build_samples": ("features/samples", "features/user_state"),
    "build_rank_eval": ("features/split", "features/rank_eval"),
}
TRAINING_OUTPUTS = ("training/runs", "training/metrics", "training/predictions")
SETTINGS_FILE_ENV = "CTR_AIRFLOW_SETTINGS"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it and where it came from."""


@dataclass(frozen=True)
class Settings:
    project_dir: str
    lakehouse: str
    python: str
    train_lakehouse: str = ""
    start_date: str = "2026-01-01"
    catchup: bool = False
    retries: int = 2
    retry_delay_seconds: int = 60
    max_retry_delay_seconds: int = 1800
    spark_conn_id: str = "ctr_spark"
    spark_mode: str = "local"
    spark_binary: str = "spark-submit"
    spark_packages: str | None = None
    spark_jars: str | None = None
    spark_py_files: str | None = None
    spark_conf: dict[str, str] = field(default_factory=dict)
    spark_env: dict[str, str] = field(default_factory=dict)
    job_config_dir: str | None = None
    torchrun: tuple[str, ...] = ()
    torchrun_args: tuple[str, ...] = ("--standalone",)
    train_nproc: int = 2
    train_model: str = "din"
    train_overrides: tuple[str, ...] = ()
    train_env: dict[str, str] = field(default_factory=dict)
    train_timeout_minutes: int = 360

    def application(self, job: str) -> str:
        """The spark-submit application of a feature job (``<project>/jobs/<job>.py``)."""
        return str(Path(self.project_dir) / "jobs" / f"{job}.py")

    def job_args(self, job: str) -> list[str]:
        """The job's arguments, rendered by Airflow: the days from the run's data interval start (a UTC day) to the
        conf's ``until`` (a catch-up in one run) or that same day."""
        args = ["--lakehouse", self.lakehouse, "--ds", "{{ ds }}", "--until", "{{ params.until or ds }}"]
        if self.job_config_dir:
            config = Path(self.job_config_dir) / f"{job}.yaml"
            if config.is_file():
                args += ["--config", str(config)]
        return args

    def model_names(self) -> list[str]:
        """The models with defaults in ``<project>/training/configs/<model>.yaml`` (one per registered model)."""
        return sorted(p.stem for p in (Path(self.project_dir) / "training" / "configs").glob("*.yaml"))

    def table_uri(self, table: str) -> str:
        """A URI for a lakehouse table (the Airflow asset's URI)."""
        root = self.lakehouse.rstrip("/")
        if "://" in root:
            return f"{root}/{table}"
        return Path(root, table).resolve().as_uri()


def _project_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def cache_dir(project_dir: Path) -> Path:
    """The project's git-ignored cache (``<project>/.cache``, or ``$CTR_SUITE_CACHE``), as in features.spark."""
    cache = os.environ.get("CTR_SUITE_CACHE")
    return Path(cache) if cache else project_dir / ".cache"


def delta_manifest(project_dir: Path) -> Path:
    """Where ``python -m features.spark --resolve-delta`` lists the resolved Delta jars (one file:// URI a line)."""
    return cache_dir(project_dir) / "ivy" / f"delta-spark_{SCALA_BINARY}-{DELTA_VERSION}.classpath"


def class_archive(project_dir: Path) -> Path:
    """The driver JVM's class-data-sharing archive (``python -m jobs.class_archive``, run by ``make setup``)."""
    return cache_dir(project_dir) / "cds" / "spark-driver.jsa"


def with_class_archive(java_options: str, project_dir: Path) -> str:
    """As features.spark.with_class_archive: add ``-XX:SharedArchiveFile`` when the archive exists and the options
    do not already decide about class sharing. The JVM runs without a stale archive (one warning)."""
    archive = class_archive(project_dir)
    if not archive.is_file() or any(flag in java_options for flag in ARCHIVE_FLAGS):
        return java_options
    option = f"-XX:SharedArchiveFile={archive}"
    return f"{java_options} {repr(option) if ' ' in option else option}".strip()


def _resolved_jars(project_dir: Path) -> str | None:
    manifest = delta_manifest(project_dir)
    if not manifest.is_file():
        return None
    jars = [line.strip() for line in manifest.read_text().splitlines() if line.strip()]
    if not jars or not all(Path(jar.removeprefix("file://")).exists() for jar in jars):
        return None
    return ",".join(jars)


_KINDS: dict[str, str] = {
    "catchup": "bool", "retries": "int", "retry_delay_seconds": "int", "max_retry_delay_seconds": "int",
    "spark_conf": "map", "spark_env": "map", "train_env": "map", "torchrun": "list", "torchrun_args": "list",
    "train_overrides": "list", "train_nproc": "int", "train_timeout_minutes": "int",
}


def _convert(name: str, value: Any, source: str) -> Any:
    kind = _KINDS.get(name, "str")
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(f"expected true or false, got {value!r}")
            return text in {"1", "true", "yes"}
        if kind == "int":
            return int(value)
        if kind in {"map", "list"}:
            parsed = json.loads(value) if isinstance(value, str) else value
            if kind == "map":
                if not isinstance(parsed, dict):
                    raise ValueError("expected a mapping")
                return {str(k): str(v) for k, v in parsed.items()}
            if not isinstance(parsed, list):
                raise ValueError("expected a list")
            return tuple(str(v) for v in parsed)
        return None if value is None else str(value)
    except (ValueError, TypeError) as err:
        raise SettingsError(f"setting {name} from {source}: {err}") from err


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """The settings from the environment, the settings file and the embedded defaults (see the module doc)."""
    env = dict(os.environ if environ is None else environ)
    names = [f for f in Settings.__dataclass_fields__]
    values: dict[str, Any] = {}
    settings_file = env.get(SETTINGS_FILE_ENV)
    if settings_file:
        path = Path(settings_file)
        if not path.is_file():
            raise SettingsError(f"${SETTINGS_FILE_ENV} names {path}, which is not a file")
        loaded = tomllib.loads(path.read_text())
        unknown = sorted(set(loaded) - set(names))
        if unknown:
            raise SettingsError(f"{path}: unknown settings {unknown}; known: {sorted(names)}")
        values.update({k: _convert(k, v, str(path)) for k, v in loaded.items()})
    for name in names:
        key = f"CTR_{name.upper()}"
        if key in env:
            values[name] = _convert(name, env[key], f"${key}")

    project_dir = Path(values.get("project_dir") or _project_dir()).resolve()
    python = values.get("python") or sys.executable
    mode = values.get("spark_mode") or "local"
    if mode not in {"local", "cluster"}:
        raise SettingsError(f"setting spark_mode must be 'local' or 'cluster', got {mode!r}")
    conf = dict(DELTA_CONFS) | COMMON_CONF
    spark_env: dict[str, str] = {}
    if mode == "local":
        conf |= LOCAL_CONF | {"spark.sql.warehouse.dir": str(cache_dir(project_dir) / "spark-warehouse")}
        # the PySpark driver and its workers run the project's interpreter, not whatever python3 is on the PATH
        spark_env = {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
        jars = values.get("spark_jars") or _resolved_jars(project_dir)
        packages = values.get("spark_packages")
        if not jars and not packages:  # not resolved yet: spark-submit resolves into the project's Ivy cache
            packages = DELTA_PACKAGE
            conf["spark.jars.ivy"] = str(delta_manifest(project_dir).parent)
        values["spark_jars"], values["spark_packages"] = jars, packages
    else:
        # the driver (client mode) runs here, so the project's interpreter, not whatever python3 is on the PATH; pip's
        # spark-submit also runs it to find its SPARK_HOME. The executors run the cluster's own Python.
        spark_env = {"PYSPARK_DRIVER_PYTHON": python}
        values.setdefault("spark_packages", DELTA_PACKAGE)
    values["spark_conf"] = conf | values.get("spark_conf", {})
    if mode == "local":  # the driver maps the class archive of `make setup` (a fresh JVM starts ~2.5 s sooner)
        options = values["spark_conf"].get("spark.driver.extraJavaOptions", "")
        values["spark_conf"]["spark.driver.extraJavaOptions"] = with_class_archive(options, project_dir)
    values["spark_env"] = spark_env | values.get("spark_env", {})
    if "spark_binary" not in values:
        beside = Path(python).parent / "spark-submit"
        values["spark_binary"] = str(beside) if beside.exists() else "spark-submit"
    values.setdefault("torchrun", (python, "-m", "torch.distributed.run"))
    values.setdefault("lakehouse", str(project_dir / "lakehouse"))
    if "://" not in values["lakehouse"]:
        values["lakehouse"] = str(Path(values["lakehouse"]).expanduser().resolve())
    values["train_lakehouse"] = values.get("train_lakehouse") or values["lakehouse"]
    if "://" not in values["train_lakehouse"]:
        values["train_lakehouse"] = str(Path(values["train_lakehouse"]).expanduser().resolve())
    values.update(project_dir=str(project_dir), python=python, spark_mode=mode)
    if values.get("train_nproc", 2) < 1:
        raise SettingsError("setting train_nproc must be at least 1")
    return Settings(**values)


SETTINGS = load_settings()
