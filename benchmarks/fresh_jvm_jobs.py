"""Seconds of each feature job as its own fresh process (a fresh JVM, as every spark-submit of the DAG pays).

    python -m benchmarks.fresh_jvm_jobs                                   # the pipeline's small preset
    python -m benchmarks.fresh_jvm_jobs --conf spark.sql.codegen.factoryMode=NO_CODEGEN
    python -m benchmarks.fresh_jvm_jobs --preset medium
    python -m benchmarks.fresh_jvm_jobs --events 100000 --days 213 --requests-per-user-day 0.1   # a long, thin log
    python -m benchmarks.fresh_jvm_jobs --events 100000 --days 213 --requests-per-user-day 0.1 --compare-days 7

Generates the preset's synthetic log (``jobs.pipeline`` presets), or about ``--events`` events over ``--days`` days,
into a fresh temporary lakehouse (not timed), then
runs the feature jobs in the DAG's order, each over all the days (``--until``; build_rank_eval for the last day),
each in a new Python process whose session gets the settings the Airflow DAG gives a local spark-submit
(``ctr_settings.LOCAL_CONF``: driver memory, shuffle partitions, C1-only JIT) plus ``--conf``; the preset's own
Spark settings are not applied, so ``--conf`` alone decides. The time printed is the job's ``main``; the session's
start is printed apart. ``--compare-days N`` then does the same for a log of the same users and about the same
events over N days (more requests per user and day), and prints what each additional day of a range costs beyond
its events.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate_synthetic import users_for_events
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
    parser.add_argument("--events", type=int, help="generate about this many events instead of a preset's log")
    parser.add_argument("--days", type=int, default=7, help="days of the --events log (default 7)")
    parser.add_argument("--items", type=int, default=5000, help="items of the --events log (default 5000)")
    parser.add_argument("--requests-per-user-day", type=float, default=2.0, help="of the --events log (default 2)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lakehouse", help="keep the lakehouse here (default: a temporary folder, deleted)")
    parser.add_argument("--compare-days", type=int, help="with --events: also the same users' events over N days")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting")
    args = parser.parse_args(argv)
    malformed = [item for item in args.conf if "=" not in item]
    if malformed:
        parser.error(f"--conf takes KEY=VALUE, got {malformed[0]!r}")
    conf = dict(item.split("=", 1) for item in args.conf)
    project = Path(__file__).resolve().parents[1]
    if args.compare_days is not None and args.events is None:
        parser.error("--compare-days needs --events")
    logs = [(args.days, args.requests_per_user_day)]
    if args.compare_days is not None:  # the same users (and events) over other days: more requests a day
        logs.append((args.compare_days, args.requests_per_user_day * args.days / args.compare_days))
    chains = []
    for n, (n_days, per_user_day) in enumerate(logs):
        with tempfile.TemporaryDirectory(prefix="bench-fresh-jvm-") as tmp:
            lakehouse = (args.lakehouse if n == 0 else None) or str(Path(tmp) / "lakehouse")
            if args.events is None:
                days = pipeline.preset_days(args.preset)
                generate_argv = pipeline.generate_argv(lakehouse, args.preset)
            else:
                days = [dt.date.fromisoformat(pipeline.START_DATE) + dt.timedelta(days=d) for d in range(n_days)]
                users = users_for_events(args.events, args.days, args.requests_per_user_day)
                generate_argv = ["--lakehouse", lakehouse, "--users", str(users), "--items", str(args.items),
                                 "--days", str(n_days), "--requests-per-user-day", f"{per_user_day:.4f}", "--seed",
                                 str(args.seed), "--start-date", pipeline.START_DATE, "--corrupt-fraction", "0.001"]
            generate = [sys.executable, "-m", "jobs.generate_synthetic", *generate_argv]
            if subprocess.run(generate, cwd=project, capture_output=True).returncode != 0:
                print("generating the log failed", file=sys.stderr)
                return 1
            events = _raw_events(lakehouse)
            print(f"log: {events:,} raw events over {len(days)} days ({shlex.join(generate_argv[2:])})", flush=True)
            chain = _run_jobs(project, lakehouse, days[0].isoformat(), days[-1].isoformat(), conf)
            if chain is None:
                return 1
            chains.append((len(days), events, chain))
    if len(chains) == 2:
        (days_a, events_a, chain_a), (days_b, events_b, chain_b) = chains
        # the events' share: the difference in events at the first log's rate
        share = (events_a - events_b) * chain_a / events_a
        per_day = (chain_a - chain_b - share) / (days_a - days_b)
        print(f"each additional day of a range: {per_day:.2f} s beyond its events' share "
              f"({days_a} days {chain_a:.1f} s, {days_b} days {chain_b:.1f} s, events' share {share:.1f} s)")
    given = argv if argv is not None else sys.argv[1:]
    print("command: .venv/bin/python -m benchmarks.fresh_jvm_jobs " + shlex.join(given))
    return 0


def _raw_events(lakehouse: str) -> int:
    from features.tableio import Lakehouse

    return Lakehouse(lakehouse).count("raw/events")


def _run_jobs(project: Path, lakehouse: str, first: str, last: str, conf: dict[str, str]) -> float | None:
    """Each job in a fresh process; the seconds of validate -> vocab -> samples, start to exit (None: a failure)."""
    total, wall = 0.0, {}
    for job in ctr_settings.FEATURE_JOBS:
        days = ["--ds", last] if job == "build_rank_eval" else ["--ds", first, "--until", last]
        code = (f"from benchmarks.fresh_jvm_jobs import run_one; "
                f"run_one({job!r}, {json.dumps(conf)!r}, {['--lakehouse', lakehouse, *days]!r})")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
        wall[job] = time.perf_counter() - started
        lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
        result = json.loads(lines[-1].removeprefix(_RESULT)) if lines else None
        if done.returncode != 0 or result is None or result["status"] != 0:
            print(done.stdout[-2000:] + done.stderr[-4000:], file=sys.stderr)
            print(f"{job} failed (process exit {done.returncode}, job exit {result and result['status']})",
                  file=sys.stderr)
            return None
        total += result["job"]
        print(f"{job}: {result['job']:.1f} s (session start {result['session']:.1f} s, process {wall[job]:.1f} s)",
              flush=True)
    chain = sum(wall[job] for job in ("validate_events", "build_vocab", "build_samples"))
    print(f"all jobs: {total:.1f} s; validate -> vocab -> samples, three processes start to exit: {chain:.1f} s")
    return chain


if __name__ == "__main__":
    sys.exit(main())
