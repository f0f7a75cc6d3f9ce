"""jobs.validate_events end to end on a generated log with planted corruptions."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs import generate_synthetic, validate_events

DAY1, DAY2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
EXPECTED_REASON = {  # planted kind -> the reason the validator must give (exact duplicates are dropped instead)
    "null_user_id": "missing_user_id",
    "empty_item_id": "missing_item_id",
    "unknown_event_type": "unknown_event_type",
    "null_event_time": "missing_event_time",
    "time_outside_ds": "time_outside_partition",
    "future_time": "time_outside_partition",  # moved to 2099 with ds kept: outside its partition first
    "negative_position": "invalid_position",
    "conflicting_duplicate": "conflicting_duplicate_id",
    "orphan_click": "orphan_click",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("validate") / "lh"
    assert generate_synthetic.main(["--lakehouse", str(root), "--users", "60", "--items", "80", "--days", "2",
                                    "--seed", "7", "--corrupt-fraction", "0.05"]) == 0
    return root


def test_planted_corruptions_are_quarantined_with_their_reason_and_counts_add_up(spark, generated):
    from features.tableio import Lakehouse

    lakehouse = Lakehouse(generated)
    assert validate_events.main(["--lakehouse", str(generated), "--ds", str(DAY1)]) == 0
    quarantine_rows = lakehouse.read(spark, "features/quarantine").collect()
    quarantine = {(r.event_id, r.reason) for r in quarantine_rows}
    planted = lakehouse.read(spark, "raw/planted_corruptions").where(f"ds = DATE '{DAY1}'").collect()
    assert {p.kind for p in planted} >= {"null_user_id", "conflicting_duplicate", "exact_duplicate"}
    for p in planted:
        if p.kind in EXPECTED_REASON:
            assert (p.event_id, EXPECTED_REASON[p.kind]) in quarantine, p
    # anything else quarantined is a click whose own impression was corrupted
    planted_ids = {p.event_id for p in planted}
    for event_id, reason in quarantine - {(p.event_id, EXPECTED_REASON.get(p.kind)) for p in planted}:
        assert reason == "orphan_click" and event_id.endswith("-clk"), (event_id, reason)
        assert event_id.removesuffix("-clk") + "-imp" in planted_ids

    run = lakehouse.read(spark, "features/runs").where("job = 'validate_events'").collect()
    assert len(run) == 1 and run[0].status == "succeeded" and run[0].ds == DAY1
    counts = run[0].counts
    assert counts["rows_in"] == lakehouse.read(spark, "raw/events").where(f"ds = DATE '{DAY1}'").count()
    assert counts["rows_in"] == counts["clean"] + counts["quarantined"] + counts["duplicates_dropped"]
    assert counts["duplicates_dropped"] == sum(p.kind == "exact_duplicate" for p in planted)
    assert counts["quarantined"] == len(quarantine_rows)
    # a conflicting duplicate puts both of its variants in quarantine, under the same event id
    conflicting = [p.event_id for p in planted if p.kind == "conflicting_duplicate"]
    assert all(sum(r.event_id == event_id for r in quarantine_rows) == 2 for event_id in conflicting)
    assert run[0].inputs == {"raw/events": lakehouse.version("raw/events")}


def test_a_rerun_gives_the_same_rows_and_leaves_other_days(spark, generated):
    from features.tableio import Lakehouse

    lakehouse = Lakehouse(generated)
    assert validate_events.main(["--lakehouse", str(generated), "--ds", str(DAY2)]) == 0

    def snapshot():
        clean = sorted(tuple(r) for r in lakehouse.read(spark, "features/events_clean").collect())
        quarantined = sorted(tuple(r) for r in lakehouse.read(spark, "features/quarantine").collect())
        return clean, quarantined

    before = snapshot()
    assert validate_events.main(["--lakehouse", str(generated), "--ds", str(DAY2)]) == 0
    assert snapshot() == before
    assert {r.ds for r in lakehouse.read(spark, "features/events_clean").select("ds").distinct().collect()} == {
        DAY1, DAY2}


def test_missing_input_and_bad_arguments_fail_clearly(spark, tmp_path, capsys):
    assert validate_events.main(["--lakehouse", str(tmp_path / "empty"), "--ds", "2026-01-01"]) == 1
    assert "input table 'raw/events' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad_date:
        validate_events.main(["--lakehouse", str(tmp_path), "--ds", "yesterday"])
    assert bad_date.value.code == 2
    with pytest.raises(SystemExit) as bad_key:
        validate_events.main(["--lakehouse", str(tmp_path), "--ds", "2026-01-01", "--set", "max_skew=3"])
    assert bad_key.value.code == 2
    assert "max_skew" in capsys.readouterr().err
