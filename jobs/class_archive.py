"""Build the class-data-sharing archive of the local Spark driver JVM (``.cache/cds/spark-driver.jsa``).

    python -m jobs.class_archive        # run by `make setup`; --force rebuilds an existing archive

Why: on the embedded default every Airflow task is its own spark-submit, so every feature job starts a fresh JVM
that loads and verifies about 20,000 classes of Spark, Scala, Hadoop and Delta from their jars before its first
query. The JVM can write the classes a run loaded into an archive at exit (``-XX:ArchiveClassesAtExit``, JDK 13+);
a later JVM maps that archive instead (``-XX:SharedArchiveFile``). Measured on the small preset (BENCHMARKS.md):
session start 5.8-6.5 -> 4.0-5.0 s, the four feature jobs, each in a fresh JVM, 228 -> 213 s, and the main
command 377 -> 348 s.

How: one session runs a representative workload (one day of the tiny synthetic log through generate_synthetic and
the daily chain, in a temporary lakehouse) with ``-XX:ArchiveClassesAtExit``, then ends the JVM and waits
for it to write the archive, which is moved into place only when complete. ``features.spark.get_spark`` and the
DAGs' local spark-submits (``ctr_settings``) add ``-XX:SharedArchiveFile`` when the file exists.

An archive is valid only for the JDK and the jars it was made with; the JVM checks both when it maps it, and on a
mismatch prints one warning ("Unable to use shared archive") and runs without it, so a stale archive costs the
gain, never a result. ``make setup`` rebuilds it whenever it reinstalls the environment. A JDK that cannot write
archives leaves none (a message, exit 0): the jobs run as before.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.spark import LOCAL_DEFAULTS, class_archive_path, get_spark  # noqa: E402

WORKLOAD_DAY = "2026-01-01"


def _workload(lakehouse: str) -> None:
    """One day of the tiny synthetic log through the daily chain (build_rank_eval needs 3 days of samples; its
    classes are those of the other jobs)."""
    from jobs import build_samples, build_vocab, generate_synthetic, validate_events

    generate_synthetic.main(["--lakehouse", lakehouse, "--users", "60", "--items", "800", "--days", "1", "--seed",
                             "1", "--start-date", WORKLOAD_DAY, "--corrupt-fraction", "0.001"])
    for job in (validate_events, build_vocab, build_samples):
        if job.main(["--lakehouse", lakehouse, "--ds", WORKLOAD_DAY]) != 0:
            raise RuntimeError(f"{job.__name__} failed in the archive's workload")


def build(target: Path) -> bool:
    """Run the workload in a fresh JVM that dumps its classes to ``target``; True when the archive was written."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        raise RuntimeError("build the archive in a process of its own: a Spark session is already open here")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    # the dump's own log (thousands of "skipping class" lines) is left out; errors still show
    options = (f"{LOCAL_DEFAULTS['spark.driver.extraJavaOptions']} -XX:ArchiveClassesAtExit={partial} "
               "-Xlog:cds*=error")
    spark = get_spark("class-archive", conf={"spark.driver.extraJavaOptions": options, "spark.log.level": "ERROR"})
    gateway = SparkContext._gateway
    jvm = gateway.proc  # the spark-submit launcher, which execs the JVM
    completed, printed = False, io.StringIO()
    try:
        with tempfile.TemporaryDirectory(prefix="class-archive-") as tmp, contextlib.redirect_stdout(printed):
            _workload(str(Path(tmp) / "lakehouse"))  # the jobs' own report lines are noise in make setup
        completed = True
    except Exception:
        print(printed.getvalue(), file=sys.stderr)
        raise
    finally:
        spark.stop()
        gateway.shutdown()
        jvm.stdin.close()  # the driver JVM exits on end of its stdin; the archive is written during that exit
        jvm.wait(timeout=600)
        if not completed:
            partial.unlink(missing_ok=True)
    if not partial.is_file() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        return False
    partial.replace(target)  # atomic: a JVM never maps a half-written archive
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.class_archive", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild the archive even if one exists")
    args = parser.parse_args(argv)
    target = class_archive_path()
    if target.is_file() and not args.force:
        print(f"class archive: {target} exists (--force rebuilds it)")
        return 0
    target.unlink(missing_ok=True)  # a stale archive must not be mapped by the dumping JVM itself
    started = time.perf_counter()
    if build(target):
        print(f"class archive: wrote {target} ({target.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - started:.0f} s")
    else:
        print("class archive: this JVM wrote no archive (it needs JDK 13 or later); the Spark jobs run without one",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
