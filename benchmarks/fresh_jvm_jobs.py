"""Seconds of each feature job as its own fresh process (a fresh JVM, as every spark-submit of the DAG pays).

    python -m benchmarks.fresh_jvm_jobs                                   # the pipeline's small preset
    python -m benchmarks.fresh_jvm_jobs --conf spark.sql.codegen.factoryMode=NO_CODEGEN
    python -m benchmarks.fresh_jvm_jobs --preset medium

Generates the preset's synthetic log (``jobs.pipeline`` presets) into a fresh temporary lakehouse (not timed), then
runs the feature jobs in the DAG's order, each over all the days (``--until``; build_rank_eval for the last day),
each in a new Python process whose session gets the settings the Airflow DAG gives a local spark-submit
(``ctr_settings.LOCAL_CONF``: driver memory, shuffle partitions, C1-only JIT) plus ``--conf``; the preset's own
Spark settings are not applied, so ``--conf`` alone decides. The time printed is the job's ``main``; the session's
start is printed apart.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs import pipeline

sys.path.insert(0, str(pipeline.DAGS_FOLDER))
import ctr_settings  # noqa: E402  (the DAGs' settings module: pure Python)

_RESULT = "FRESH_JVM_RESULT "


def run_one(job: str, conf_json: str, argv: list[str]) -> None:
    """In the child process: open the session with the DAG's local settings, run the job, print the timings."""
    from features.spark import get_spark

    started = time.perf_counter()
    get_spark(f"fresh-jvm-{job}", conf={**ctr_settings.LOCAL_CONF, **json.loads(conf_json)})
    session = time.perf_counter() - started
    job_main = importlib.import_module(f"jobs.{job}").main
    started = time.perf_counter()
    status = job_main(argv)
    print(_RESULT + json.dumps({"status": status, "session": session, "job": time.perf_counter() - started}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fresh_jvm_jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(pipeline.PRESETS), default="small", help="synthetic log to build")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting")
    args = parser.parse_args(argv)
    malformed = [item for item in args.conf if "=" not in item]
    if malformed:
        parser.error(f"--conf takes KEY=VALUE, got {malformed[0]!r}")
    conf = dict(item.split("=", 1) for item in args.conf)
    project = Path(__file__).resolve().parents[1]
    days = pipeline.preset_days(args.preset)
    with tempfile.TemporaryDirectory(prefix="bench-fresh-jvm-") as tmp:
        lakehouse = str(Path(tmp) / "lakehouse")
        generate = [sys.executable, "-m", "jobs.generate_synthetic", *pipeline.generate_argv(lakehouse, args.preset)]
        if subprocess.run(generate, cwd=project, capture_output=True).returncode != 0:
            print("generating the log failed", file=sys.stderr)
            return 1
        status = _run_jobs(project, lakehouse, days[0].isoformat(), days[-1].isoformat(), conf)
    given = argv if argv is not None else sys.argv[1:]
    print("command: .venv/bin/python -m benchmarks.fresh_jvm_jobs " + shlex.join(given))
    return status


def _run_jobs(project: Path, lakehouse: str, first: str, last: str, conf: dict[str, str]) -> int:
    total = 0.0
    for job in ctr_settings.FEATURE_JOBS:
        days = ["--ds", last] if job == "build_rank_eval" else ["--ds", first, "--until", last]
        code = (f"from benchmarks.fresh_jvm_jobs import run_one; "
                f"run_one({job!r}, {json.dumps(conf)!r}, {['--lakehouse', lakehouse, *days]!r})")
        done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
        result = json.loads(lines[-1].removeprefix(_RESULT)) if lines else None
        if done.returncode != 0 or result is None or result["status"] != 0:
            print(done.stdout[-2000:] + done.stderr[-4000:], file=sys.stderr)
            print(f"{job} failed (process exit {done.returncode}, job exit {result and result['status']})",
                  file=sys.stderr)
            return 1
        total += result["job"]
        print(f"{job}: {result['job']:.1f} s (session start {result['session']:.1f} s)", flush=True)
    print(f"all jobs: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
