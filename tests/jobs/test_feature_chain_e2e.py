"""The feature chain as range jobs, end to end on a small generated log: any split of a range gives the same tables,
a late day makes the later days stale until the printed command rebuilds them, and racing runs never both commit.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading

import pytest
from pyspark.sql import functions as F

from features import lineage
from features.tableio import Lakehouse
from jobs import (
    build_rank_eval,
    build_samples,
    build_vocab,
    chain_status,
    feature_chain,
    generate_synthetic,
    validate_events,
)

DAYS = [dt.date(2026, 1, d) for d in range(1, 5)]
D1, D2, D3, D4 = DAYS
TABLES = ("features/events_clean", "features/quarantine", "features/vocab", "features/vocab_pending",
          "features/vocab_days", "features/samples", "features/user_state", "features/rank_eval", "features/split")
CHAIN = (validate_events, build_vocab, build_samples)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain") / "raw-only"
    assert generate_synthetic.main(["--lakehouse", str(root), "--users", "40", "--items", "300", "--days", "4",
                                    "--seed", "11", "--corrupt-fraction", "0.02", "--requests-per-user-day",
                                    "3"]) == 0
    return root


def copy_of(raw, path) -> Lakehouse:
    shutil.copytree(raw / "raw", path / "raw")
    return Lakehouse(path)


def run(job, lakehouse, first, last=None):
    argv = ["--lakehouse", str(lakehouse.root), "--ds", first.isoformat()]
    return job.main(argv + (["--until", last.isoformat()] if last else []))


def differences(spark, a: Lakehouse, b: Lakehouse) -> dict[str, tuple[int, int]]:
    """Per table, the rows only in ``a`` and only in ``b``."""
    out = {}
    for table in TABLES:
        left, right = (lh.read(spark, table) for lh in (a, b))
        out[table] = (left.exceptAll(right).count(), right.exceptAll(left).count())
    return {table: diff for table, diff in out.items() if diff != (0, 0)}


@pytest.fixture(scope="module")
def whole(spark, raw, tmp_path_factory):
    lakehouse = copy_of(raw, tmp_path_factory.mktemp("whole"))
    for job in CHAIN:
        assert run(job, lakehouse, D1, D4) == 0
    assert run(build_rank_eval, lakehouse, D3, D4) == 0
    return lakehouse


def test_a_range_split_any_way_gives_the_tables_of_one_run_per_day(spark, raw, whole, tmp_path):
    daily = copy_of(raw, tmp_path / "daily")
    for day in DAYS:
        for job in CHAIN:
            assert run(job, daily, day) == 0
    for anchor in (D3, D4):
        assert run(build_rank_eval, daily, anchor) == 0
    halves = copy_of(raw, tmp_path / "halves")
    for first, last in ((D1, D2), (D3, D4)):
        for job in CHAIN:
            assert run(job, halves, first, last) == 0
    for anchor in (D3, D4):
        assert run(build_rank_eval, halves, anchor) == 0

    samples = whole.read(spark, "features/samples")
    assert samples.select("ds").distinct().count() == 4 and samples.where(F.col("hist_len") > 0).count() > 100
    assert whole.read(spark, "features/quarantine").count() > 0
    assert whole.read(spark, "features/rank_eval").select("ds").distinct().count() == 2
    assert differences(spark, daily, whole) == {}
    assert differences(spark, halves, whole) == {}
    # one run record per day of each range, with that day's counts
    runs = whole.read(spark, "features/runs").where(F.col("job") == "build_samples").collect()
    assert sorted(r.ds for r in runs) == DAYS and {r.run_id for r in runs} == {"build_samples/2026-01-01..2026-01-04"}
    per_day = {r["ds"]: r["count"] for r in samples.groupBy("ds").count().collect()}
    assert {r.ds: r.counts["samples"] for r in runs} == per_day


def test_a_late_day_leaves_the_later_days_stale_until_the_printed_command_rebuilds_them(spark, raw, whole, tmp_path,
                                                                                       capsys):
    # day 2 gets late events: one more impression and its click for each of a few users
    events = whole.read(spark, "raw/events").where(F.col("ds") == F.lit(D2))
    extra = events.where(F.col("event_type") == "impression").orderBy("event_id").limit(5)
    late = extra.select(F.concat("event_id", F.lit("-late")).alias("event_id"), "user_id", "item_id",
                        "event_type", F.col("event_time") + F.expr("INTERVAL 2 SECONDS"), "request_id", "position",
                        "ds").toDF(*events.columns)
    clicks = late.select(F.concat("event_id", F.lit("-clk")).alias("event_id"), "user_id", "item_id",
                         F.lit("click").alias("event_type"), F.col("event_time") + F.expr("INTERVAL 1 SECONDS"),
                         "request_id", "position", "ds").toDF(*events.columns)
    corrected = events.unionByName(late).unionByName(clicks).localCheckpoint()
    whole.write(corrected, "raw/events", mode="overwrite", replace_ds=[D2], partition_by=["ds"])
    status = lineage.chain_status(whole)
    assert set(status["validate_events"].stale) == {D2, D3}  # day 3 reads day 2's impressions (midnight clicks)

    capsys.readouterr()
    assert run(validate_events, whole, D2) == 0
    report = capsys.readouterr().err
    command = f"python -m jobs.feature_chain --lakehouse {whole.root} --ds 2026-01-02 --until 2026-01-04"
    assert "stale until rebuilt" in report and command in report, report
    status = lineage.chain_status(whole)
    assert sorted(status["build_vocab"].stale) == [D2, D3, D4] == sorted(status["build_samples"].stale)
    assert sorted(status["build_rank_eval"].stale) == [D3, D4] and D3 in status["validate_events"].stale
    # a later job refuses to build on stale days, and names the same command
    assert run(build_samples, whole, D4) == 1
    refused = capsys.readouterr().err
    assert "validate_events for 2026-01-03 is stale" in refused and command in refused
    assert chain_status.main(["--lakehouse", str(whole.root)]) == 3  # visible to an operator, with the command
    shown = capsys.readouterr().out
    assert "build_samples: processed 2026-01-01..2026-01-04 (4 days); stale 2026-01-02..2026-01-04" in shown
    assert command in shown

    assert feature_chain.main(command.split()[3:]) == 0
    assert chain_status.main(["--lakehouse", str(whole.root)]) == 0
    # equal to a fresh run on the corrected input
    for table in ("raw/events", "raw/items", "raw/users"):
        shutil.copytree(whole.path(table), tmp_path / "fresh" / table)
    fresh = Lakehouse(tmp_path / "fresh")
    assert feature_chain.main(["--lakehouse", str(fresh.root), "--ds", "2026-01-01", "--until", "2026-01-04"]) == 0
    assert differences(spark, fresh, whole) == {}


def test_two_vocabulary_runs_that_race_never_both_commit(spark, raw, tmp_path):
    lakehouse = copy_of(raw, tmp_path / "race")
    assert run(validate_events, lakehouse, D1, D4) == 0
    codes: list[int | None] = [None, None]
    start = threading.Barrier(2)

    def race(n):
        start.wait()
        codes[n] = run(build_vocab, lakehouse, D1, D4)

    threads = [threading.Thread(target=race, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [0, 1], codes
    vocab = lakehouse.read(spark, "features/vocab")
    assert vocab.count() == vocab.select("field", "raw_id").distinct().count() == vocab.select(
        "field", "idx").distinct().count()
    runs = lakehouse.read(spark, "features/runs").where(F.col("job") == "build_vocab").collect()
    assert sorted((r.status, r.ds) for r in runs) == sorted([("failed", d) for d in DAYS]
                                                            + [("succeeded", d) for d in DAYS])
    assert all("another build_vocab run committed" in r.error for r in runs if r.status == "failed")
