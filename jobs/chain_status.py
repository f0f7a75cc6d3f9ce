"""Print each feature job's processed, stale and missing days, and the command that rebuilds the stale ones.

    python -m jobs.chain_status --lakehouse DIR

Reads ``features/runs`` and the Delta log of ``raw/events`` only (no Spark, no data file); definitions in
``features.lineage``. Exit status 0 when nothing is stale, 3 when something is (for scripts and checks).
"""

from __future__ import annotations

import argparse
import sys

from features import lineage
from features.tableio import Lakehouse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.chain_status", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True)
    args = parser.parse_args(argv)
    lakehouse = Lakehouse(args.lakehouse)
    status = lineage.chain_status(lakehouse)
    for job, days in status.items():
        done = lineage.span(days.processed) if days.processed else "none"
        print(f"{job}: processed {done}; stale {lineage.span(days.stale) if days.stale else 'none'}; "
              f"missing {lineage.span(days.missing) if days.missing else 'none'}")
        for day, why in list(days.stale.items())[:3]:
            print(f"  stale {day}: {why}")
    if any(days.stale for days in status.values()):
        print("rebuild the stale days with: " + lineage.rebuild_advice(lakehouse, status))
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
