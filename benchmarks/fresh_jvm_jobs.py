"""Seconds of each feature job as its own fresh process (a fresh JVM, as every spark-submit of the DAG pays).

    python -m benchmarks.fresh_jvm_jobs                                   # the pipeline's small preset
    python -m benchmarks.fresh_jvm_jobs --conf spark.sql.codegen.factoryMode=NO_CODEGEN
    python -m benchmarks.fresh_jvm_jobs --users 58140 --items 200000 --days 2 --seed 1   # about 1M events a day

Generates the synthetic log into a fresh temporary lakehouse (not timed; the pipeline's small preset by default),
then runs the feature jobs in the DAG's order, each over all the days (``--until``, build_rank_eval for the last
day), each in a new Python process whose session gets the settings the Airflow DAG gives a local spark-submit
(``ctr_settings.LOCAL_CONF``: driver memory, shuffle partitions, C1-only JIT) plus ``--conf``. The time printed is
the job's ``main``; the session's start is printed apart.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

JOBS = ("validate_events", "build_vocab", "build_samples", "build_rank_eval")
_CHILD = """
import json, sys, time
sys.path.insert(0, {dags!r})
from ctr_settings import LOCAL_CONF
from features.spark import get_spark
started = time.perf_counter()
get_spark("fresh-jvm-" + {job!r}, conf={{**LOCAL_CONF, **json.loads({conf!r})}})
session = time.perf_counter() - started
from jobs.{job} import main
started = time.perf_counter()
status = main({argv!r})
print("FRESH_JVM_RESULT " + json.dumps({{"status": status, "session": session, "job": time.perf_counter() - started}}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fresh_jvm_jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--corrupt-fraction", type=float, default=0.001)
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, in order (default {','.join(JOBS)})")
    args = parser.parse_args(argv)
    conf = dict(item.split("=", 1) for item in args.conf)
    project = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-fresh-jvm-") as tmp:
        lakehouse = str(Path(tmp) / "lakehouse")
        generate = ["--lakehouse", lakehouse, "--users", str(args.users), "--items", str(args.items), "--days",
                    str(args.days), "--seed", str(args.seed), "--corrupt-fraction", str(args.corrupt_fraction)]
        if subprocess.run([sys.executable, "-m", "jobs.generate_synthetic", *generate], cwd=project,
                          capture_output=True).returncode != 0:
            print("generating the log failed", file=sys.stderr)
            return 1
        from jobs.generate_synthetic import parse_args

        dates = parse_args(generate)[1].dates()
        status = _run_jobs(project, lakehouse, dates[0].isoformat(), dates[-1].isoformat(), conf, args.jobs)
    given = argv if argv is not None else sys.argv[1:]
    print("command: .venv/bin/python -m benchmarks.fresh_jvm_jobs " + shlex.join(given))
    return status


def _run_jobs(project: Path, lakehouse: str, first: str, last: str, conf: dict[str, str], jobs: str) -> int:
    total = 0.0
    for job in jobs.split(","):
        days = ["--ds", last] if job == "build_rank_eval" else ["--ds", first, "--until", last]
        code = _CHILD.format(dags=str(project / "airflow_dags"), job=job, conf=json.dumps(conf),
                             argv=["--lakehouse", lakehouse, *days])
        done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("FRESH_JVM_RESULT ")]
        result = json.loads(lines[-1].split(" ", 1)[1]) if lines else None
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
