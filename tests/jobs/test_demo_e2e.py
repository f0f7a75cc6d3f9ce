"""The README's main command (`make demo` -> jobs.demo) end to end on a fresh lakehouse."""

from __future__ import annotations

from features.tableio import Lakehouse
from jobs import demo


def test_demo_builds_the_raw_lakehouse_and_prints_where_it_is(spark, tmp_path, capsys):
    root = tmp_path / "lh"
    assert demo.main(["--lakehouse", str(root), "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    lakehouse = Lakehouse(root)
    assert f"lakehouse: {lakehouse.root}" in out
    for table in demo.RAW_TABLES + demo.FEATURE_TABLES + demo.TRAINING_TABLES:
        assert lakehouse.exists(table)
        assert lakehouse.path(table) in out
    assert lakehouse.count("raw/users") == 60
    assert lakehouse.count("raw/items") == 800
    events = lakehouse.count("raw/events")
    assert 1_000 < events < 20_000
    assert f"{events:>12}" in out
    # every generated day went through the feature jobs, then the evaluation sets; each run succeeded
    runs = lakehouse.read_arrow("features/runs", columns=["job", "ds", "status"]).to_pylist()
    assert len(runs) == 3 * len(demo.FEATURE_JOBS) + 1 and {r["status"] for r in runs} == {"succeeded"}
    clean = lakehouse.read_arrow("features/events_clean", columns=["event_type"]).column(0).to_pylist()
    assert lakehouse.count("features/samples") == clean.count("impression")
    assert lakehouse.count("features/rank_eval") > 0
    # then DIN trained on the samples the jobs built, on 2 ranks: every day has a file per rank
    run = lakehouse.read_arrow("training/runs").to_pylist()
    assert len(run) == 1 and run[0]["status"] == "succeeded" and run[0]["world_size"] == 2
    test_days = [str(r["ds"]) for r in lakehouse.read_arrow("features/split").to_pylist() if r["split"] == "test"]
    test_samples = lakehouse.read_arrow("features/samples", columns=["ds"]).column("ds").to_pylist()
    assert lakehouse.count("training/predictions") == sum(str(d) in test_days for d in test_samples) > 0
    assert f"DIN run {run[0]['run_id']}: valid auc" in out
