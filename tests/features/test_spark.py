"""The session factory: embedded default settings, Delta on the class path, and spark-submit behaviour."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from features import spark as spark_factory

REPO = Path(__file__).resolve().parents[2]
SUBMITTED_JOB = """
from features.spark import get_spark
spark = get_spark("submitted")
spark.range(3).write.format("delta").save({table!r})
print("DELTA-ROWS", spark.read.format("delta").load({table!r}).count())
"""


def test_embedded_default_is_utc_with_delta_and_small_shuffles(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    for key, value in spark_factory.DELTA_CONFS.items():
        assert spark.conf.get(key) == value
    assert spark.conf.get("spark.databricks.delta.snapshotPartitions") == "2"
    assert int(spark.conf.get("spark.sql.shuffle.partitions")) <= 8
    # the resolved jars come from the project's cache (no resolution, no network at session start)
    jars = spark.sparkContext.getConf().get("spark.jars")
    assert f"delta-spark_2.13-{spark_factory.DELTA_VERSION}.jar" in jars
    assert str(spark_factory.ivy_dir()) in jars
    assert spark.sql("SELECT hour(TIMESTAMP '2026-01-01 00:30:00')").first()[0] == 0


def test_a_stale_manifest_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("CTR_SUITE_CACHE", str(tmp_path))
    manifest = spark_factory.delta_classpath_manifest()
    manifest.parent.mkdir(parents=True)
    manifest.write_text("file:///nowhere/io.delta_delta-spark_2.13.jar\n")
    assert spark_factory._resolved_delta_jars() is None
    jar = tmp_path / "present.jar"
    jar.write_bytes(b"")
    manifest.write_text(jar.as_uri() + "\n")
    assert spark_factory._resolved_delta_jars() == [jar.as_uri()]


def _spark_submit(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    script = tmp_path / "job.py"
    script.write_text(SUBMITTED_JOB.format(table=str(tmp_path / "table")))
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONPATH=str(REPO))
    submit = Path(sys.executable).parent / "spark-submit"
    return subprocess.run(
        [str(submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false", *extra, str(script)],
        capture_output=True, text=True, env=env, timeout=300,
    )


@pytest.mark.slow
def test_spark_submit_without_delta_fails_with_the_lines_to_add(tmp_path):
    result = _spark_submit(tmp_path)
    output = result.stdout + result.stderr  # spark-submit's Python runner sends the traceback to stdout
    assert result.returncode != 0
    assert "DeltaNotConfiguredError" in output
    assert f"--packages {spark_factory.DELTA_PACKAGE}" in output
    assert "Missing here: --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in output
    assert not (tmp_path / "table").exists()  # no silent fallback to plain Parquet


@pytest.mark.slow
def test_spark_submit_with_delta_uses_the_submit_settings(tmp_path):
    jars = ",".join(spark_factory._resolved_delta_jars() or [])
    confs = [arg for key, value in spark_factory.DELTA_CONFS.items() for arg in ("--conf", f"{key}={value}")]
    result = _spark_submit(tmp_path, "--jars", jars, *confs)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DELTA-ROWS 3" in result.stdout
    assert (tmp_path / "table" / "_delta_log").is_dir()


def test_master_and_conf_are_refused_under_spark_submit(monkeypatch):
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    with pytest.raises(ValueError, match="pass --master/--conf to spark-submit"):
        spark_factory.get_spark("x", master="local[1]")


def test_an_active_session_is_reused_without_changing_its_settings(spark):
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"  # set by the test fixture
    assert spark_factory.get_spark("another-job") is spark
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"


def test_python_workers_run_the_project_interpreter(spark):
    # A Python function on the executors imports the project's packages (pyarrow here) in this interpreter.
    def versions(batches):
        import sys

        import pyarrow as pa

        for batch in batches:
            yield pa.RecordBatch.from_pydict({"python": [sys.executable] * batch.num_rows})

    got = spark.range(1).mapInArrow(versions, "python string").first()["python"]
    assert got == spark.sparkContext.pythonExec


def test_the_class_archive_is_added_when_it_exists_and_the_options_do_not_decide(tmp_path, monkeypatch):
    monkeypatch.setenv("CTR_SUITE_CACHE", str(tmp_path / "cache"))
    archive = spark_factory.class_archive_path()
    assert archive == tmp_path / "cache" / "cds" / "spark-driver.jsa"
    assert spark_factory.with_class_archive("-Duser.timezone=UTC") == "-Duser.timezone=UTC"  # none built yet
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"x")
    assert spark_factory.with_class_archive("-Duser.timezone=UTC") == \
        f"-Duser.timezone=UTC -XX:SharedArchiveFile={archive}"
    assert spark_factory.with_class_archive("") == f"-XX:SharedArchiveFile={archive}"
    for decided in ("-Xshare:off", "-XX:SharedArchiveFile=/other.jsa", "-XX:ArchiveClassesAtExit=/new.jsa"):
        assert spark_factory.with_class_archive(f"-Da=b {decided}") == f"-Da=b {decided}"
    monkeypatch.setenv("CTR_SUITE_CACHE", str(tmp_path / "a cache"))  # Spark splits the options shell-like
    spaced = spark_factory.class_archive_path()
    spaced.parent.mkdir(parents=True)
    spaced.write_bytes(b"x")
    assert spark_factory.with_class_archive("-Da=b") == f"-Da=b '-XX:SharedArchiveFile={spaced}'"


MAPS_THE_ARCHIVE = """
from features.spark import get_spark
spark = get_spark("archive-check", conf={{"spark.driver.extraJavaOptions": "-Duser.timezone=UTC -Xshare:on"}})
args = list(spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
print("ARCHIVE-ARG", [a for a in args if "SharedArchiveFile" in a])
spark.range(3).write.format("delta").save({table!r})
print("DELTA-ROWS", spark.read.format("delta").load({table!r}).count())
"""


@pytest.mark.slow
def test_make_setup_builds_a_class_archive_that_the_driver_jvm_maps(tmp_path):
    # -Xshare:on: a JVM that cannot map the archive (another JDK, other jars) refuses to start instead of warning
    archive = spark_factory.class_archive_path()
    assert archive.is_file(), "make setup builds it (python -m jobs.class_archive)"
    script = tmp_path / "check.py"
    script.write_text(MAPS_THE_ARCHIVE.format(table=str(tmp_path / "table")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"ARCHIVE-ARG ['-XX:SharedArchiveFile={archive}']" in done.stdout
    assert "DELTA-ROWS 3" in done.stdout
