"""Benchmark: the feature chain on ``local[2]`` versus a two-worker standalone cluster, same input, same submits.

    python -m benchmarks.cluster_chain [--users 1000] [--items 3000] [--days 2]

Generates the seeded synthetic log once (not timed), copies it to two lakehouses, then runs the chain
validate_events -> build_vocab -> build_samples for all the days, each job one spark-submit of the bundle's
application (``--ds FIRST --until LAST``, as the feature DAG's catch-up does) with the Delta jars and the same
confs (``jobs.spark_cluster.SMALL_MACHINE_CONF``), first with ``--master local[2]``, then on a
``LocalStandaloneCluster`` of two workers with one core each (started before the clock starts). Prints each job's
wall seconds on both, the totals, whether the tables came out equal, and the command that reproduces the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOBS = ("validate_events", "build_vocab", "build_samples")
COMPARED = ("features/events_clean", "features/quarantine", "features/vocab", "features/samples", "features/user_state")


def run_chain(master: str, lakehouse: Path, days: tuple[str, str], bundle_dir: Path, *, spark_submit: str,
              env: dict[str, str], conf: dict[str, str], jars: str, work: Path) -> dict[str, float]:
    from jobs.bundle import submit_command

    seconds = {"load before": os.getloadavg()[0]}
    for job in JOBS:
        command = submit_command(job, master=master, lakehouse=str(lakehouse), ds=days[0], bundle_dir=bundle_dir,
                                 spark_submit=spark_submit, jars=jars, conf=conf) + ["--until", days[1]]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
        seconds[job] = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{job} on {master} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    seconds["load after"] = os.getloadavg()[0]  # the 1-minute load average: other work on the machine skews both
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_chain", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from features.spark import resolve_delta_jars
    from features.tableio import Lakehouse
    from jobs.bundle import build_bundle
    from jobs.spark_cluster import SMALL_MACHINE_CONF, LocalStandaloneCluster, spark_home

    first = dt.date(2026, 1, 1)
    days = (first.isoformat(), (first + dt.timedelta(days=args.days - 1)).isoformat())
    jars = ",".join(resolve_delta_jars())
    with tempfile.TemporaryDirectory(prefix="bench-cluster-chain-") as tmp:
        work = Path(tmp)
        raw = work / "raw"
        subprocess.run([sys.executable, "-m", "jobs.generate_synthetic", "--lakehouse", str(raw), "--users",
                        str(args.users), "--items", str(args.items), "--days", str(args.days), "--seed",
                        str(args.seed), "--start-date", days[0], "--corrupt-fraction", "0.001"], check=True,
                       stdout=subprocess.DEVNULL)
        bundle = build_bundle(work / "dist")
        lakehouses = {side: work / side for side in ("local", "cluster")}
        for root in lakehouses.values():
            shutil.copytree(raw, root)
        events = Lakehouse(raw).count("raw/events")

        # the local side: the same interpreter for the driver and its Python workers, no cluster running
        local_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        local_env |= {"SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1"}
        local = run_chain("local[2]", lakehouses["local"], days, bundle.zip_path.parent,
                          spark_submit=str(spark_home() / "bin" / "spark-submit"), env=local_env,
                          conf=SMALL_MACHINE_CONF | {"spark.pyspark.python": sys.executable}, jars=jars, work=work)
        with LocalStandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="2g") as cluster:
            on_cluster = run_chain(cluster.master_url, lakehouses["cluster"], days, bundle.zip_path.parent,
                                   spark_submit=cluster.spark_submit, env=cluster.client_env(),
                                   conf=SMALL_MACHINE_CONF | cluster.client_conf(), jars=jars, work=work)
        equal = all(sorted(map(repr, Lakehouse(lakehouses["local"]).read_arrow(t).to_pylist()))
                    == sorted(map(repr, Lakehouse(lakehouses["cluster"]).read_arrow(t).to_pylist()))
                    for t in COMPARED)

    print(f"\nraw events: {events} over {args.days} days ({args.users} users, {args.items} items); "
          f"each job one spark-submit for days {days[0]}..{days[1]}")
    print(f"{'job':<18}{'local[2] s':>12}{'cluster s':>12}")
    for job in JOBS:
        print(f"{job:<18}{local[job]:>12.1f}{on_cluster[job]:>12.1f}")
    print(f"{'chain':<18}{sum(local[j] for j in JOBS):>12.1f}{sum(on_cluster[j] for j in JOBS):>12.1f}")
    for when in ("load before", "load after"):
        print(f"{when:<18}{local[when]:>12.2f}{on_cluster[when]:>12.2f}")
    print(f"tables equal on both: {equal}")
    print(f"reproduce: .venv/bin/python -m benchmarks.cluster_chain --users {args.users} --items {args.items} "
          f"--days {args.days} --seed {args.seed}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
