"""clean_events: one hand-built row per rule, duplicates, orphan clicks, and the count invariant."""

from __future__ import annotations

import datetime as dt

from chispa import assert_df_equality

from features.events import CLEAN_COLUMNS, clean_events
from features.schemas import RAW_EVENTS

DS = dt.date(2026, 1, 5)
NOW = dt.datetime(2026, 1, 5, 18, 0)


def t(hh: int, mm: int = 0, ss: int = 0, day: dt.date = DS) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hh, mm, ss))


GOOD = [
    ("imp1", "u1", "i1", "impression", t(10), "r1", 1, DS),
    ("imp2", "u1", "i2", "impression", t(10), "r1", 2, DS),
    ("clk1", "u1", "i1", "click", t(10, 1), "r1", 1, DS),  # same request
    ("imp3", "u2", "i3", "impression", t(11), None, None, DS),
    ("clk3", "u2", "i3", "click", t(11, 20), None, None, DS),  # no request: impression 20 min before
]
BAD = {
    "missing_event_id": ("  ", "u1", "i1", "impression", t(9), "r0", 1, DS),
    "missing_user_id": ("b1", None, "i1", "impression", t(9), "r0", 1, DS),
    "missing_item_id": ("b2", "u1", "", "impression", t(9), "r0", 1, DS),
    "unknown_event_type": ("b3", "u1", "i1", "hover", t(9), "r0", 1, DS),
    "missing_event_time": ("b4", "u1", "i1", "impression", None, "r0", 1, DS),
    "time_outside_partition": ("b5", "u1", "i1", "impression", t(9, day=DS - dt.timedelta(days=1)), "r0", 1, DS),
    "future_time": ("b6", "u1", "i1", "impression", t(18, 10), "r0", 1, DS),  # 10 min after now, skew 5 min
    "invalid_position": ("b7", "u1", "i1", "impression", t(9), "r0", -2, DS),
    "orphan_click": ("b8", "u1", "i9", "click", t(10, 2), "r1", 3, DS),  # i9 was never shown in r1
}
CONFLICT = [
    ("dup", "u3", "i1", "impression", t(12), "r5", 1, DS),
    ("dup", "u3", "i2", "impression", t(12), "r5", 1, DS),
]


def run(spark, rows, **kwargs):
    raw = spark.createDataFrame(rows, RAW_EVENTS)
    result = clean_events(raw, now=NOW, **kwargs)
    rejected = {(r.event_id, r.reason) for r in result.rejected.collect()}
    return result, rejected


def test_every_rule_quarantines_its_row_with_its_reason(spark):
    result, rejected = run(spark, GOOD + list(BAD.values()) + CONFLICT)
    expected = {(row[0], reason) for reason, row in BAD.items()} | {
        ("dup", "conflicting_duplicate_id"),
    }
    assert {reason for _, reason in rejected} == set(BAD) | {"conflicting_duplicate_id"}
    assert rejected == expected
    assert result.rejected.where("event_id = 'dup'").count() == 2  # both variants, nothing kept
    assert_df_equality(
        result.clean, spark.createDataFrame(GOOD, RAW_EVENTS), ignore_row_order=True, ignore_nullable=True
    )


def test_rejected_rows_keep_the_whole_raw_row(spark):
    result, _ = run(spark, [BAD["missing_user_id"]])
    row = result.rejected.first()
    assert row.raw_row == (
        '{"event_id":"b1","user_id":null,"item_id":"i1","event_type":"impression",'
        '"event_time":"2026-01-05T09:00:00.000Z","request_id":"r0","position":1,"ds":"2026-01-05"}'
    )


def test_exact_duplicates_are_dropped_to_one_and_counted(spark):
    rows = GOOD + [GOOD[0], GOOD[0], BAD["invalid_position"], BAD["invalid_position"]]
    result, rejected = run(spark, rows)
    assert result.clean.count() == len(GOOD)
    assert rejected == {("b7", "invalid_position")}
    copies = {r.event_id: r.copies for r in result.variants.collect()}
    assert copies["imp1"] == 3 and copies["b7"] == 2
    duplicates = sum(c - 1 for c in copies.values())
    assert len(rows) == result.clean.count() + result.rejected.count() + duplicates  # the invariant, 9 = 5 + 1 + 3


def test_a_click_needs_a_valid_impression(spark):
    late_click = ("clk4", "u2", "i3", "click", t(11, 40), None, None, DS)  # 40 min after imp3, window 30
    bad_impression_click = [
        ("imp5", "u4", "i5", "impression", t(13), "r7", -1, DS),  # quarantined itself
        ("clk5", "u4", "i5", "click", t(13, 1), "r7", 1, DS),  # its only impression is not valid
    ]
    _, rejected = run(spark, GOOD + [late_click] + bad_impression_click)
    assert ("clk4", "orphan_click") in rejected
    assert {("imp5", "invalid_position"), ("clk5", "orphan_click")} <= rejected
    _, rejected_wide = run(spark, GOOD + [late_click], click_window_seconds=3600)
    assert rejected_wide == set()


def test_the_click_window_includes_both_of_its_ends(spark):
    # no request: an impression at the click's own time, or exactly click_window_seconds before it, counts
    impression = ("imp9", "u9", "i9", "impression", t(12), None, None, DS)
    same_time = ("clk9a", "u9", "i9", "click", t(12), None, None, DS)
    at_the_edge = ("clk9b", "u9", "i9", "click", t(12, 30), None, None, DS)
    one_second_late = ("clk9c", "u9", "i9", "click", t(12, 30, 1), None, None, DS)
    _, rejected = run(spark, [impression, same_time, at_the_edge, one_second_late])
    assert rejected == {("clk9c", "orphan_click")}


def test_a_request_click_needs_an_impression_of_its_own_user(spark):
    # the same request id, item and time, but another user's impression: the click has none of its own
    rows = [("imp8", "u8", "i8", "impression", t(12), "r8", 1, DS),
            ("clk8", "u7", "i8", "click", t(12, 1), "r8", 1, DS)]
    _, rejected = run(spark, rows)
    assert rejected == {("clk8", "orphan_click")}


def test_a_click_after_midnight_finds_yesterdays_impression(spark):
    yesterday = DS - dt.timedelta(days=1)
    previous = spark.createDataFrame([("imp0", "u9", "i9", "impression", t(23, 59, day=yesterday), "r9", 1,
                                       yesterday)], RAW_EVENTS)
    click = [("clk0", "u9", "i9", "click", t(0, 1), "r9", 1, DS)]
    _, alone = run(spark, click)
    assert alone == {("clk0", "orphan_click")}
    _, with_previous = run(spark, click, previous_impressions=previous)
    assert with_previous == set()


def test_configured_event_types_are_accepted(spark):
    purchase = ("p1", "u1", "i1", "purchase", t(10, 5), "r1", 1, DS)
    _, rejected = run(spark, GOOD + [purchase])
    assert rejected == {("p1", "unknown_event_type")}
    result, rejected = run(spark, GOOD + [purchase], event_types=("impression", "click", "purchase"))
    assert rejected == set() and result.clean.count() == len(GOOD) + 1


def test_the_clean_rows_have_the_contract_columns(spark):
    result, _ = run(spark, GOOD)
    assert result.clean.columns == CLEAN_COLUMNS
    assert [f.dataType for f in result.clean.schema.fields] == [f.dataType for f in RAW_EVENTS.fields]
