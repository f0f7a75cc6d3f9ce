"""jobs.build_vocab end to end: main([...]) on hand-built events (the days of tests/features/test_vocab.py), validated
by jobs.validate_events.

Indices are the ones worked out by hand in tests/features/test_vocab.py (min_count 2).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from features.schemas import RAW_ITEMS, RAW_USERS
from features.vocab import DAYS_TABLE, PENDING_TABLE, VOCAB, VOCAB_PENDING, VOCAB_TABLE
from jobs import validate_events
from jobs.build_vocab import main
from tests.features.test_vocab import D1, D2, DAY1, DAY2, ITEMS, USERS, events

D3 = dt.date(2026, 1, 7)
REPO = Path(__file__).resolve().parents[2]
STATE = (VOCAB_TABLE, PENDING_TABLE, DAYS_TABLE)


def write_day(spark, lakehouse, pairs, ds):
    """The day's raw events (all valid), validated."""
    lakehouse.write(events(spark, pairs, ds), "raw/events", mode="overwrite", replace_ds=[ds], partition_by=["ds"])
    assert validate_events.main(["--lakehouse", str(lakehouse.root), "--ds", ds.isoformat()]) == 0


def run(lakehouse, ds, *extra):
    return main(["--lakehouse", str(lakehouse.root), "--ds", ds.isoformat(), "--set", "min_count=2", *extra])


def snapshot(spark, lakehouse):
    return {t: sorted(map(tuple, lakehouse.read(spark, t).collect()), key=repr) for t in STATE}


def vocab_rows(spark, rows):
    return spark.createDataFrame(rows, VOCAB)


DAY1_ROWS = [(f, r, i, c, D1, D1) for f, r, i, c in [
    ("user", "u1", 2, 3), ("user", "u2", 3, 2), ("item", "i1", 2, 3), ("category", "c1", 2, 4), ("shop", "s1", 2, 4),
    ("brand", "b1", 2, 3), ("gender", "F", 2, 2), ("age_bucket", "18-24", 2, 2)]]
DAY2_ROWS = [(f, r, i, 2, first, D2) for f, r, i, first in [
    ("user", "u3", 4, D1), ("user", "u4", 5, D2), ("item", "i2", 3, D1), ("item", "i3", 4, D1), ("item", "i5", 5, D2),
    ("category", "c2", 3, D1), ("shop", "s2", 3, D1), ("brand", "b2", 3, D1), ("age_bucket", "25-34", 3, D1),
    ("city", "lyon", 2, D1), ("city", "paris", 3, D1)]]


def test_days_in_order_stable_indices_reruns_and_refusals(spark, lakehouse, capsys):
    lakehouse.write(spark.createDataFrame(ITEMS, RAW_ITEMS), "raw/items", mode="overwrite")
    lakehouse.write(spark.createDataFrame(USERS, RAW_USERS), "raw/users", mode="overwrite")
    write_day(spark, lakehouse, DAY1, D1)
    write_day(spark, lakehouse, DAY2, D2)

    # Day 1: ids of count >= 2 get 2, 3, ... (0 and 1 never appear); the rest wait in vocab_pending.
    assert run(lakehouse, D1) == 0
    assert_df_equality(lakehouse.read(spark, VOCAB_TABLE), vocab_rows(spark, DAY1_ROWS), ignore_row_order=True,
                       ignore_nullable=True)
    assert lakehouse.read(spark, PENDING_TABLE).count() == 11

    # the run record: succeeded, with the input versions read and the counts of what was written
    record = lakehouse.read(spark, "features/runs").where(F.col("job") == "build_vocab").collect()
    assert [(r.run_id, r.ds, r.status, r.error) for r in record] == [("build_vocab/2026-01-05", D1, "succeeded", None)]
    assert record[0].inputs == {t: lakehouse.version(t) for t in ("features/events_clean", "raw/items", "raw/users")}
    assert record[0].outputs == {t: lakehouse.version(t) for t in STATE}
    counts = dict(record[0].counts)
    assert isinstance(counts.pop("fingerprint"), int)  # of the day's additions and pending rows
    assert counts == {"events": 6, "new_ids": 8, "pending_ids": 11, "vocab_ids": 8, "new_ids.user": 2,
                      "new_ids.item": 1, "new_ids.category": 1, "new_ids.shop": 1, "new_ids.brand": 1,
                      "new_ids.gender": 1, "new_ids.age_bucket": 1, "new_ids.city": 0}
    assert '"min_count": 2' in record[0].config

    # Day 2: day 1's rows unchanged; new ids continue after each field's max; u3, i2, i3, ... reach 2 today.
    assert run(lakehouse, D2) == 0
    assert_df_equality(lakehouse.read(spark, VOCAB_TABLE), vocab_rows(spark, DAY1_ROWS + DAY2_ROWS),
                       ignore_row_order=True, ignore_nullable=True)
    pending_d2 = lakehouse.read(spark, PENDING_TABLE).where(F.col("ds") == D2)
    assert_df_equality(pending_d2, spark.createDataFrame([("user", "u5", 1, D2), ("item", "i6", 1, D2)], VOCAB_PENDING),
                       ignore_row_order=True, ignore_nullable=True)

    # A rerun of the latest day gives the same tables.
    before = snapshot(spark, lakehouse)
    assert run(lakehouse, D2) == 0
    assert snapshot(spark, lakehouse) == before

    # A rerun after day 2's input changed recomputes day 2 from the vocabulary as it was after day 1.
    write_day(spark, lakehouse, [("u3", "i3"), ("u1", "i5"), ("u5", "i6")], D2)
    assert run(lakehouse, D2) == 0
    changed = [("user", "u3", 4, D1), ("item", "i3", 3, D1), ("shop", "s2", 3, D1), ("brand", "b2", 3, D1),
               ("age_bucket", "25-34", 3, D1), ("city", "lyon", 2, D1), ("city", "paris", 3, D1)]
    assert_df_equality(lakehouse.read(spark, VOCAB_TABLE),
                       vocab_rows(spark, DAY1_ROWS + [(f, r, i, 2, first, D2) for f, r, i, first in changed]),
                       ignore_row_order=True, ignore_nullable=True)
    pending_d2 = lakehouse.read(spark, PENDING_TABLE).where(F.col("ds") == D2)
    assert {(r.field, r.raw_id, r["count"]) for r in pending_d2.collect()} == {
        ("user", "u5", 1), ("item", "i5", 1), ("item", "i6", 1)}

    # A day without events (validated: no events_clean partition) adds nothing, and is still recorded as processed
    assert validate_events.main(["--lakehouse", str(lakehouse.root), "--ds", D3.isoformat()]) == 0
    assert run(lakehouse, D3) == 0
    assert "build_vocab 2026-01-07: events = 0" in capsys.readouterr().out
    assert lakehouse.read(spark, VOCAB_TABLE).where(F.col("ds") == D3).count() == 0
    # ... so day 2 alone, now earlier than the latest processed day, is refused (day 3 was built on it), and nothing
    # changes; the message names the run that would do it
    versions = {t: lakehouse.version(t) for t in STATE}
    assert run(lakehouse, D2) == 1
    err = capsys.readouterr().err
    assert "has processed days up to 2026-01-07" in err and "--ds 2026-01-06 --until 2026-01-07" in err
    assert {t: lakehouse.version(t) for t in STATE} == versions
    failed = lakehouse.read(spark, "features/runs").where(F.col("status") == "failed").collect()
    assert [(r.ds, "processed days up to" in r.error) for r in failed] == [(D2, True)]
    # ... and so is a day after a day that was never processed (validated, not in the vocabulary)
    d5 = D3 + dt.timedelta(days=2)
    for day in (D3 + dt.timedelta(days=1), d5):
        assert validate_events.main(["--lakehouse", str(lakehouse.root), "--ds", day.isoformat()]) == 0
    assert run(lakehouse, d5) == 1
    assert "but 2026-01-08 was never processed by it; run it from 2026-01-08" in capsys.readouterr().err
    # the range from day 2 on rebuilds them all, with day 2's indices as before
    assert run(lakehouse, D2, "--until", d5.isoformat()) == 0
    assert snapshot(spark, lakehouse)[VOCAB_TABLE] == sorted(map(tuple, vocab_rows(
        spark, DAY1_ROWS + [(f, r, i, 2, first, D2) for f, r, i, first in changed]).collect()), key=repr)
    versions = {t: lakehouse.version(t) for t in STATE}

    # The table refuses rows that take the padding or unknown index.
    with pytest.raises(Exception, match="valid_vocab_row"):
        lakehouse.write(vocab_rows(spark, [("user", "zz", 1, 1, D3, D3)]), VOCAB_TABLE, mode="append")
    assert lakehouse.version(VOCAB_TABLE) == versions[VOCAB_TABLE]


def test_missing_input_table_exits_1_naming_it(spark, lakehouse, capsys):
    assert main(["--lakehouse", str(lakehouse.root), "--ds", "2026-01-05"]) == 1
    err = capsys.readouterr().err
    assert "validate_events has not processed 2026-01-05" in err and "python -m jobs.validate_events" in err
    assert not lakehouse.exists(VOCAB_TABLE)


@pytest.mark.parametrize(
    "extra",
    [["--ds", "2026-02-30"], ["--ds", "2026-01-05", "--set", "min_count=0"],
     ["--ds", "2026-01-05", "--set", "min_cout=2"], ["--ds", "2026-01-05", "--set", "min_count=two"]],
)
def test_bad_arguments_exit_2(tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--lakehouse", str(tmp_path), *extra])
    assert exit_info.value.code == 2
    assert "jobs/build_vocab.py: error:" in capsys.readouterr().err


def test_runs_as_a_script_from_another_folder(tmp_path):
    # spark-submit jobs/build_vocab.py runs the file, not the module: its imports must work that way too.
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "build_vocab.py"), "--lakehouse", str(tmp_path),
                           "--ds", "yesterday"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--ds must be a date YYYY-MM-DD, got 'yesterday'" in done.stderr
