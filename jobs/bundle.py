"""Build the job bundle: what spark-submit needs to run the feature jobs where the project is not installed.

    python -m jobs.bundle [--out dist] [--master spark://HOST:7077] [--lakehouse s3a://bucket/lake]   (or make bundle)

Writes into ``--out`` (default ``dist/``):

* ``ctr_suite_jobs.zip``: the packages ``features/`` and ``jobs/`` (their ``.py`` files only), for ``--py-files``. The
  jobs import nothing else of the project (checked at every build: the job modules are imported from the zip alone
  in an isolated interpreter); the third-party packages (pyspark, delta-spark, deltalake, pydantic, PyYAML) are the
  cluster's Python environment's.
* ``submit/<job>.py``: the applications given to spark-submit, one per feature job (copies of ``jobs/<job>.py``).

and prints the spark-submit command line of each job. The zip is deterministic (sorted entries, fixed timestamps and
permissions): rebuilding from the same sources gives the same bytes, so its checksum identifies the code shipped.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

from features.spark import DELTA_CONFS, DELTA_PACKAGE

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_OUT = PROJECT_DIR / "dist"
PACKAGES = ("features", "jobs")
FEATURE_JOBS = ("validate_events", "build_vocab", "build_samples", "build_rank_eval")
ZIP_NAME = "ctr_suite_jobs.zip"
#: what every submit of a job needs besides Delta: the jobs' days are UTC days
COMMON_CONF = {"spark.sql.session.timeZone": "UTC"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold: no build time in the bytes


@dataclass(frozen=True)
class Bundle:
    zip_path: Path
    applications: dict[str, Path]  # job -> the .py file to give spark-submit


def bundle_files(project_dir: Path = PROJECT_DIR) -> list[str]:
    """The zip's entries: every ``.py`` file of the packages, as sorted relative POSIX paths."""
    files = [path.relative_to(project_dir).as_posix()
             for package in PACKAGES for path in (project_dir / package).rglob("*.py")
             if "__pycache__" not in path.parts]
    return sorted(files)


def build_bundle(out: Path = DEFAULT_OUT, project_dir: Path = PROJECT_DIR) -> Bundle:
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / ZIP_NAME
    partial = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(partial, "w") as archive:
        for name in bundle_files(project_dir):
            entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16  # rw-r--r--, whatever the checkout's umask
            archive.writestr(entry, (project_dir / name).read_bytes())
    partial.replace(zip_path)  # a half-written zip is never picked up by a submit
    submit_dir = out / "submit"
    submit_dir.mkdir(exist_ok=True)
    applications = {}
    for job in FEATURE_JOBS:
        applications[job] = submit_dir / f"{job}.py"
        applications[job].write_bytes((project_dir / "jobs" / f"{job}.py").read_bytes())
    return Bundle(zip_path, applications)


def check_bundle(zip_path: Path) -> None:
    """Import every feature job from the zip alone (no project on the path, no editable install), or raise.

    The interpreter runs isolated and without ``site`` (``-I -S``): the venv's site-packages is appended as a plain
    path, so its ``.pth`` files (the editable install's finder among them) are not processed.
    """
    site_packages = sysconfig.get_paths()["purelib"]
    modules = [f"jobs.{job}" for job in FEATURE_JOBS]
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(zip_path)!r}); sys.path.append({site_packages!r})\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "outside = sorted(n for n, m in sys.modules.items() if n.split('.')[0] in ('features', 'jobs', 'training')\n"
        f"                 and not (getattr(m, '__file__', None) or '').startswith({str(zip_path)!r}))\n"
        "assert not outside, f'imported from outside the bundle: {outside}'\n"
    )
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, cwd=zip_path.parent)
    if done.returncode != 0:
        raise RuntimeError(f"the bundle {zip_path} is incomplete:\n{done.stderr[-3000:]}")


def submit_command(job: str, *, master: str, lakehouse: str, ds: str, bundle_dir: Path = DEFAULT_OUT,
                   spark_submit: str = "spark-submit", packages: str | None = DELTA_PACKAGE, jars: str | None = None,
                   conf: dict[str, str] | None = None) -> list[str]:
    """The spark-submit command of one feature job for one day: Delta (``--packages``, or ``--jars`` when given),
    Delta's two confs, UTC, the bundle as ``--py-files`` and the job's application from the bundle."""
    command = [spark_submit, "--master", master, "--deploy-mode", "client", "--name", f"ctr_{job}"]
    command += ["--jars", jars] if jars else ["--packages", packages] if packages else []
    for key, value in {**DELTA_CONFS, **COMMON_CONF, **(conf or {})}.items():
        command += ["--conf", f"{key}={value}"]
    bundle_dir = Path(bundle_dir).resolve()
    return [*command, "--py-files", str(bundle_dir / ZIP_NAME), str(bundle_dir / "submit" / f"{job}.py"),
            "--lakehouse", lakehouse, "--ds", ds]


def format_command(command: list[str]) -> str:
    """A command as a shell line: an option and its value, or a positional argument, per line."""
    lines: list[list[str]] = [[command[0]]]
    for arg in command[1:]:
        last = lines[-1]
        option_done = len(last) > 1 or not last[0].startswith("--")
        if arg.startswith("--") or option_done:
            lines.append([arg])
        else:
            last.append(arg)
    lines[0:2] = [lines[0] + lines[1]]  # spark-submit --master ... on the first line
    return " \\\n    ".join(shlex.join(line) for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default dist/)")
    parser.add_argument("--master", default="spark://HOST:7077", help="master URL in the printed commands")
    parser.add_argument("--lakehouse", default="s3a://bucket/lake", help="lakehouse in the printed commands")
    parser.add_argument("--ds", default="YYYY-MM-DD", help="day in the printed commands")
    args = parser.parse_args(argv)
    bundle = build_bundle(args.out.resolve())
    check_bundle(bundle.zip_path)
    print(f"wrote {bundle.zip_path} ({len(bundle_files())} modules of {', '.join(PACKAGES)}) and "
          f"{bundle.zip_path.parent / 'submit'}/{{{','.join(FEATURE_JOBS)}}}.py\n")
    print("run a day's chain in order (validate_events, build_vocab, build_samples; build_rank_eval for the day to "
          "evaluate on), e.g.:\n")
    for job in FEATURE_JOBS[:3]:
        print(format_command(submit_command(job, master=args.master, lakehouse=args.lakehouse, ds=args.ds,
                                            bundle_dir=args.out)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
