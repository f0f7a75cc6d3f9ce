"""jobs.bundle: the zip for --py-files holds the packages' modules, imports alone, and rebuilds to the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from jobs import bundle

PROJECT = Path(bundle.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return bundle.build_bundle(tmp_path_factory.mktemp("dist"))


def test_the_zip_holds_every_module_of_features_and_jobs_and_nothing_else(built):
    names = zipfile.ZipFile(built.zip_path).namelist()
    expected = sorted(p.relative_to(PROJECT).as_posix() for pkg in ("features", "jobs")
                      for p in (PROJECT / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    assert names == expected  # sorted entries, .py only
    assert {"features/__init__.py", "features/samples.py", "jobs/__init__.py", "jobs/build_samples.py"} <= set(names)
    assert sorted(built.applications) == sorted(bundle.FEATURE_JOBS)
    for job, application in built.applications.items():
        assert application.read_bytes() == (PROJECT / "jobs" / f"{job}.py").read_bytes()


def test_rebuilding_gives_the_same_bytes_whatever_the_files_times(built, tmp_path):
    source = PROJECT / "features" / "schemas.py"
    stat = source.stat()
    try:
        os.utime(source, (stat.st_atime, stat.st_mtime + 3600))
        again = bundle.build_bundle(tmp_path / "again")
    finally:
        os.utime(source, (stat.st_atime, stat.st_mtime))
    assert again.zip_path.read_bytes() == built.zip_path.read_bytes()


def test_the_jobs_import_from_the_zip_alone(built, tmp_path):
    # -I: no PYTHONPATH, no user site, no current folder; -S: no site-packages processing, so the editable install's
    # finder (a .pth file of the venv) is not there to supply a module the zip lacks. The venv's packages (pyspark,
    # pydantic, deltalake) come in as a plain path, as on an executor whose Python has the third-party stack only.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.append(sys.argv[2]); "
            "import features.samples, jobs.build_samples; "
            "print(features.samples.__file__); print(jobs.build_samples.__file__)")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(built.zip_path),
                           sysconfig.get_paths()["purelib"]], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"{built.zip_path}/features/samples.py", f"{built.zip_path}/jobs/build_samples.py"]
    bundle.check_bundle(built.zip_path)  # what `python -m jobs.bundle` checks: all four jobs, nothing from outside


def test_the_check_fails_when_a_module_is_missing(built, tmp_path):
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(built.zip_path) as full, zipfile.ZipFile(partial, "w") as out:
        for name in full.namelist():
            if name != "features/events.py":
                out.writestr(name, full.read(name))
    with pytest.raises(RuntimeError, match="No module named 'features.events'"):
        bundle.check_bundle(partial)


def test_the_command_prints_the_submit_lines_with_the_bundle(tmp_path, capsys):
    assert bundle.main(["--out", str(tmp_path / "dist"), "--master", "spark://10.0.0.5:7077"]) == 0
    out = capsys.readouterr().out
    zip_path = tmp_path / "dist" / bundle.ZIP_NAME
    assert zip_path.is_file()
    command = bundle.submit_command("build_samples", master="spark://10.0.0.5:7077", lakehouse="s3a://bucket/lake",
                                    ds="YYYY-MM-DD", bundle_dir=tmp_path / "dist")
    assert bundle.format_command(command) in out
    assert command[command.index("--py-files") + 1:] == [
        str(zip_path), str(tmp_path / "dist" / "submit" / "build_samples.py"), "--lakehouse", "s3a://bucket/lake",
        "--ds", "YYYY-MM-DD"]
    assert "--packages io.delta:delta-spark_2.13:4.0.1" in out
    assert "--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in out
    assert "--conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog" in out
