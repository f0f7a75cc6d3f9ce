"""Run the feature jobs for a range of days in one process: validate -> vocab -> samples -> rank eval.

    python -m jobs.feature_chain --lakehouse DIR --ds YYYY-MM-DD [--until YYYY-MM-DD] [--from JOB] [--to JOB]

Each job runs once for the whole range (its own ``main``, its own run records), in one Spark session. ``--from``
starts later in the chain (the command ``features.lineage`` prints to rebuild stale days starts at the first stale
job), ``--to`` stops earlier. ``build_rank_eval`` runs for the anchors that have enough sample days for a split
and for its stale ones, and not at all when that would move the current split back (as the feature DAG does).
The first job that fails stops the chain (exit status 1). Job settings are the defaults; run the jobs one by one
to pass ``--config``/``--set``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys

from features import jobkit, lineage
from features.tableio import Lakehouse
from features.tables import CHAIN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.feature_chain", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True)
    parser.add_argument("--ds", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--until", help="last day (default: --ds)")
    parser.add_argument("--from", dest="first_job", choices=CHAIN, default=CHAIN[0])
    parser.add_argument("--to", dest="last_job", choices=CHAIN, default=CHAIN[-1])
    args = parser.parse_args(argv)
    jobs = CHAIN[CHAIN.index(args.first_job):CHAIN.index(args.last_job) + 1]
    if not jobs:
        parser.error(f"--from {args.first_job} comes after --to {args.last_job}")
    jobkit.REPORT_STALE = False  # the chain runs the later jobs itself; what is still stale is reported at the end
    try:
        for job in jobs:
            days = ["--ds", args.ds] + (["--until", args.until] if args.until else [])
            if job == "build_rank_eval":  # the anchors with enough sample days for a split, and the stale ones
                plan = lineage.plan_range(Lakehouse(args.lakehouse), job, dt.date.fromisoformat(args.ds),
                                          dt.date.fromisoformat(args.until or args.ds))
                if plan.first is None:
                    print(f"feature_chain: build_rank_eval not run: {plan.reason}", file=sys.stderr)
                    continue
                days = ["--ds", plan.first.isoformat(), "--until", plan.last.isoformat()]
            status = importlib.import_module(f"jobs.{job}").main(["--lakehouse", args.lakehouse, *days])
            if status != 0:
                print(f"feature_chain: {job} failed (exit status {status}); the jobs after it were not run",
                      file=sys.stderr)
                return status
    finally:
        jobkit.REPORT_STALE = True
    report = lineage.stale_report(Lakehouse(args.lakehouse), after=jobs[0])
    if report:
        print(report, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
