"""``python -m jobs.generate_synthetic`` end to end: the job's main on a tiny config into a temporary lakehouse."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from features.schemas import CLICK_TRUTH, PLANTED_CORRUPTIONS, RAW_EVENTS, RAW_ITEMS, RAW_USERS
from jobs.generate_synthetic import main

TABLES = {
    "raw/events": RAW_EVENTS,
    "raw/click_truth": CLICK_TRUTH,
    "raw/planted_corruptions": PLANTED_CORRUPTIONS,
    "raw/items": RAW_ITEMS,
    "raw/users": RAW_USERS,
}


def args(lakehouse, *extra: str) -> list[str]:
    return [
        "--lakehouse", str(lakehouse.root), "--users", "40", "--items", "60", "--days", "2", "--seed", "4",
        "--corrupt-fraction", "0.05", *extra,
    ]  # fmt: skip


def snapshot(spark, lakehouse) -> dict[str, list[tuple]]:
    return {
        name: sorted((tuple(r) for r in lakehouse.read(spark, name).collect()), key=repr) for name in TABLES
    }


def test_writes_the_raw_tables_and_a_rerun_replaces_them(spark, lakehouse, capsys):
    assert main(args(lakehouse)) == 0
    out = capsys.readouterr().out
    for name, schema in TABLES.items():
        assert lakehouse.path(name) in out
        df = lakehouse.read(spark, name)
        assert [(f.name, f.dataType) for f in df.schema.fields] == [(f.name, f.dataType) for f in schema.fields]
    first = snapshot(spark, lakehouse)
    # 40 users x 2 days x 2 requests x ~8.6 events: a few hundred events; 60 items, 40 users
    assert 300 < len(first["raw/events"]) < 2500
    assert len(first["raw/items"]) == 60 and len(first["raw/users"]) == 40
    assert len(first["raw/planted_corruptions"]) > 0
    assert {r[-1] for r in first["raw/events"]} == {dt.date(2026, 1, 1), dt.date(2026, 1, 2)}
    # the printed counts are the table's
    assert f"{len(first['raw/events'])} rows" in out.split("raw/events", 1)[1].splitlines()[0]

    versions = {name: lakehouse.spark_version(spark, name) for name in TABLES}
    assert main(args(lakehouse)) == 0
    assert snapshot(spark, lakehouse) == first  # replaced, not appended
    assert all(lakehouse.spark_version(spark, name) > versions[name] for name in TABLES)

    # a run for days 2-3 replaces day 2 and adds day 3; day 1 stays as it was
    day1 = [r for r in first["raw/events"] if r[-1] == dt.date(2026, 1, 1)]
    assert main(args(lakehouse, "--start-date", "2026-01-02", "--corrupt-fraction", "0")) == 0
    after = snapshot(spark, lakehouse)
    assert [r for r in after["raw/events"] if r[-1] == dt.date(2026, 1, 1)] == day1
    assert {r[-1] for r in after["raw/events"]} == {dt.date(2026, 1, d) for d in (1, 2, 3)}
    assert {r[-1] for r in after["raw/planted_corruptions"]} == {dt.date(2026, 1, 1)}  # day 2's went with it




@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--users", "0"], "--users"),
        (["--categories", "100"], "must not exceed items"),
        (["--corrupt-fraction", "2"], "--corrupt-fraction"),
        (["--start-date", "2026-13-01"], "--start-date"),
        (["--seed", "x"], "--seed"),
    ],
)
def test_bad_arguments_exit_with_a_message(lakehouse, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args(lakehouse, *extra))
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert not Path(lakehouse.root).exists()  # nothing written


def test_missing_required_argument_exits(lakehouse):
    with pytest.raises(SystemExit) as exit_info:
        main(["--lakehouse", str(lakehouse.root), "--users", "3", "--items", "10", "--days", "1"])
    assert exit_info.value.code == 2
