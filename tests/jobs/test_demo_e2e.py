"""The README's main command (`make demo` -> jobs.demo) end to end on a fresh lakehouse."""

from __future__ import annotations

from features.tableio import Lakehouse
from jobs import demo


def test_demo_builds_the_raw_lakehouse_and_prints_where_it_is(spark, tmp_path, capsys):
    root = tmp_path / "lh"
    assert demo.main(["--lakehouse", str(root)]) == 0
    out = capsys.readouterr().out
    lakehouse = Lakehouse(root)
    assert f"lakehouse: {lakehouse.root}" in out
    for table in demo.RAW_TABLES + demo.FEATURE_TABLES:
        assert lakehouse.exists(table)
        assert lakehouse.path(table) in out
    assert lakehouse.count("raw/users") == 2000
    assert lakehouse.count("raw/items") == 5000
    assert lakehouse.count("raw/planted_corruptions") > 0  # the small preset plants bad rows for validation
    events = lakehouse.count("raw/events")
    assert 150_000 < events < 400_000
    assert f"{events:>12}" in out
    # every generated day went through the feature jobs, and each run was recorded as succeeded
    runs = lakehouse.read_arrow("features/runs", columns=["job", "ds", "status"]).to_pylist()
    assert len(runs) == 7 * len(demo.FEATURE_JOBS) and {r["status"] for r in runs} == {"succeeded"}
    assert lakehouse.count("features/quarantine") >= lakehouse.count("raw/planted_corruptions") // 2
