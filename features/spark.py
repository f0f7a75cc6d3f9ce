"""The Spark session factory: the embedded default (local, Delta configured) or the cluster's session.

Two ways a job gets its session:

* ``python -m jobs.<name>`` (the embedded default): a ``local[*]`` session sized for a small machine, UTC,
  with the Delta Lake JVM package on the class path and Delta's two SQL confs set. The package is resolved
  from Maven Central once (``python -m features.spark --resolve-delta``, run by ``make setup``) into a
  git-ignored, project-local Ivy cache; later sessions put the resolved jars on ``spark.jars`` directly, so they
  start without network.
* ``spark-submit jobs/<name>.py`` (a cluster, or any submit): the session, master and packages come from the
  submit command and the cluster's defaults. Nothing is added here; if Delta is not configured the job stops
  with :class:`DeltaNotConfiguredError`, which prints the missing ``--packages``/``--conf`` lines. There is no
  fallback to plain Parquet.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyspark is imported lazily so that JVM-free callers never load it
    from pyspark.sql import SparkSession

DELTA_VERSION = "4.0.1"  # must match the delta-spark Python package (Delta 4.0.x <-> Spark 4.0.x)
SCALA_BINARY = "2.13"
DELTA_PACKAGE = f"io.delta:delta-spark_{SCALA_BINARY}:{DELTA_VERSION}"
DELTA_CONFS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

# Settings of the embedded default, for a 2-core / 24 GiB machine. Shuffle and Delta snapshot partitions are
# kept small: Spark's 200 shuffle partitions and Delta's 50 snapshot partitions are sized for clusters and
# cost seconds of task overhead per query on two cores.
LOCAL_DEFAULTS = {
    "spark.driver.memory": "6g",
    "spark.sql.shuffle.partitions": "8",
    "spark.default.parallelism": "4",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.warehouse.dir": "",  # filled in get_spark: keeps spark-warehouse/ out of the working folder
}


class DeltaNotConfiguredError(RuntimeError):
    """The Spark session has no Delta Lake: its package or one of its two confs is missing."""


def project_cache_dir() -> Path:
    """The git-ignored cache of the project (``<repo>/.cache``), or ``$CTR_SUITE_CACHE`` when set."""
    override = os.environ.get("CTR_SUITE_CACHE")
    return Path(override) if override else Path(__file__).resolve().parents[1] / ".cache"


#: JVM options that already decide about class sharing (an archive to map or to write, or sharing off)
ARCHIVE_FLAGS = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare:off")


def class_archive_path() -> Path:
    """The class-data-sharing archive of the local driver JVM (built by ``python -m jobs.class_archive``)."""
    return project_cache_dir() / "cds" / "spark-driver.jsa"


def with_class_archive(java_options: str) -> str:
    """``java_options`` plus ``-XX:SharedArchiveFile`` when the archive exists and the options do not already
    decide (:data:`ARCHIVE_FLAGS`; ``-Xshare:off`` turns it off). The JVM checks the archive against its JDK and
    class path and runs without it, with one warning, when it does not match."""
    archive = class_archive_path()
    if not archive.is_file() or any(flag in java_options for flag in ARCHIVE_FLAGS):
        return java_options
    option = f"-XX:SharedArchiveFile={archive}"
    return f"{java_options} {repr(option) if ' ' in option else option}".strip()  # Spark splits options shell-like


def ivy_dir() -> Path:
    return project_cache_dir() / "ivy"


def delta_classpath_manifest() -> Path:
    """The file listing the resolved Delta jars (one ``file://`` URI a line), written by resolve_delta_jars."""
    return ivy_dir() / f"delta-spark_{SCALA_BINARY}-{DELTA_VERSION}.classpath"


def _resolved_delta_jars() -> list[str] | None:
    manifest = delta_classpath_manifest()
    if not manifest.exists():
        return None
    jars = [line.strip() for line in manifest.read_text().splitlines() if line.strip()]
    if not jars or not all(Path(jar.removeprefix("file://")).exists() for jar in jars):
        return None  # a stale manifest (cache partly deleted): resolve again
    return jars


def running_under_spark_submit() -> bool:
    """True when this Python process was launched by spark-submit (the JVM started first and owns the conf)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(app_name: str, *, master: str | None = None, conf: dict[str, str] | None = None) -> SparkSession:
    """Return the job's SparkSession with Delta Lake, or raise DeltaNotConfiguredError.

    Under spark-submit the submit command's settings are used as they are (``master`` and ``conf`` may not be
    given then). A session already active in this process is returned unchanged. Otherwise the embedded
    default is built: ``master`` (default ``$CTR_SPARK_MASTER`` or
    ``local[*]``), :data:`LOCAL_DEFAULTS`, Delta's package and confs, then ``conf`` on top; the driver JVM maps the
    class archive of ``make setup`` when there is one (:func:`with_class_archive`).
    """
    from pyspark.sql import SparkSession

    if running_under_spark_submit():
        if master or conf:
            raise ValueError("under spark-submit, pass --master/--conf to spark-submit, not to get_spark()")
        spark = SparkSession.builder.appName(app_name).getOrCreate()
        check_delta_configured(spark)
        return spark

    active = SparkSession.getActiveSession()
    if active is not None:
        # A session this process already opened (a test run, a notebook, a job calling another job's main) is
        # reused as it is: re-applying the defaults would silently change its settings under its owner.
        check_delta_configured(active)
        return active

    settings = dict(LOCAL_DEFAULTS)
    settings["spark.sql.warehouse.dir"] = str(project_cache_dir() / "spark-warehouse")
    # Python workers (arrow/pandas functions, UDFs) must run this interpreter, not whatever `python3` is on the
    # PATH (which lacks the project's packages); PySpark reads the variable when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings.update(DELTA_CONFS)
    jars = _resolved_delta_jars()
    if jars is not None:
        settings["spark.jars"] = ",".join(jars)
    else:
        settings["spark.jars.packages"] = DELTA_PACKAGE
        settings["spark.jars.ivy"] = str(ivy_dir())
    settings.update(conf or {})
    # classes mapped from the archive instead of loaded from the jars: a fresh JVM's session starts ~2.5 s sooner
    settings["spark.driver.extraJavaOptions"] = with_class_archive(settings.get("spark.driver.extraJavaOptions", ""))
    builder = SparkSession.builder.appName(app_name).master(master or os.environ.get("CTR_SPARK_MASTER", "local[*]"))
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    check_delta_configured(spark)
    return spark


def check_delta_configured(spark: SparkSession) -> None:
    """Raise DeltaNotConfiguredError unless Delta's confs are set and its classes load in this JVM."""
    missing = [f"--conf {key}={value}" for key, value in DELTA_CONFS.items() if value not in spark.conf.get(key, "")]
    if not missing:
        from py4j.java_gateway import JavaClass

        # py4j resolves names through Spark's class loader (the one spark.jars feeds); an unknown class comes
        # back as a JavaPackage rather than raising.
        if not isinstance(spark._jvm.io.delta.tables.DeltaTable, JavaClass):  # type: ignore[union-attr]
            missing = [f"--packages {DELTA_PACKAGE}"]
    if missing:
        raise DeltaNotConfiguredError(
            "Delta Lake is not configured in this Spark session, and this suite only writes Delta tables. "
            "Submit the job with:\n  spark-submit --packages "
            f"{DELTA_PACKAGE} " + " ".join(f"--conf {k}={v}" for k, v in DELTA_CONFS.items()) + " ...\n"
            "(or set them in the cluster's spark-defaults.conf). Missing here: " + "; ".join(missing)
        )


def resolve_delta_jars() -> list[str]:
    """Resolve the Delta JVM package from Maven Central into the project's Ivy cache; write the manifest.

    Idempotent: returns the cached jars when the manifest is already valid.
    """
    jars = _resolved_delta_jars()
    if jars is not None:
        return jars
    from pyspark.sql import SparkSession

    ivy_dir().mkdir(parents=True, exist_ok=True)
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("resolve-delta")
        .config("spark.jars.packages", DELTA_PACKAGE)
        .config("spark.jars.ivy", str(ivy_dir()))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        jars = [j for j in spark.sparkContext.getConf().get("spark.jars", "").split(",") if j]
        if not any(f"delta-spark_{SCALA_BINARY}-{DELTA_VERSION}.jar" in j for j in jars):
            raise RuntimeError(f"resolving {DELTA_PACKAGE} gave no delta jar (spark.jars={jars!r})")
    finally:
        spark.stop()
    manifest = delta_classpath_manifest()
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("\n".join(jars) + "\n")
    tmp.replace(manifest)  # atomic: a half-written manifest is never read
    return jars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m features.spark", description=__doc__.splitlines()[0])
    parser.add_argument("--resolve-delta", action="store_true", help="resolve the Delta JVM package into the cache")
    args = parser.parse_args(argv)
    if not args.resolve_delta:
        parser.print_help()
        return 2
    for jar in resolve_delta_jars():
        print(jar)
    print(f"manifest: {delta_classpath_manifest()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
