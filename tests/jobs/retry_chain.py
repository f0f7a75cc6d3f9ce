"""Run the daily feature chain on ``local[2,3]`` with one failing task attempt per write (guarantee 8).

    python -m tests.jobs.retry_chain LAKEHOUSE MARKER_DIR [--inject]

Generates a tiny seeded log and runs validate_events -> build_vocab -> build_samples over its two days. With
``--inject``, every Delta write of a job goes through a task that raises on its first attempt of partition 0
(after the job's shuffles), so Spark retries it; each raise leaves a file in MARKER_DIR as proof that it happened.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path


def failing_first_attempt(df, marker_dir: str):
    def fail_once(batches):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx.attemptNumber() == 0 and ctx.partitionId() == 0:
            Path(marker_dir, f"failed-{ctx.stageId()}-{uuid.uuid4().hex}").touch()
            raise RuntimeError("injected failure of a first task attempt")
        yield from batches

    return df.mapInArrow(fail_once, df.schema)


def main(argv: list[str]) -> int:
    root, marker_dir, inject = argv[0], argv[1], "--inject" in argv
    from features.spark import get_spark
    from features.tableio import Lakehouse
    from jobs import build_samples, build_vocab, generate_synthetic, validate_events

    get_spark("retry-chain", master="local[2,3]", conf={"spark.sql.shuffle.partitions": "3"})
    assert generate_synthetic.main(["--lakehouse", root, "--users", "12", "--items", "200", "--days", "2",
                                    "--seed", "9", "--corrupt-fraction", "0.01"]) == 0
    if inject:
        original = Lakehouse.write

        def write(self, df, table, **kwargs):
            return original(self, failing_first_attempt(df, marker_dir), table, **kwargs)

        Lakehouse.write = write
    for job in (validate_events, build_vocab, build_samples):  # each a range job over both days
        if job.main(["--lakehouse", root, "--ds", "2026-01-01", "--until", "2026-01-02"]) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
