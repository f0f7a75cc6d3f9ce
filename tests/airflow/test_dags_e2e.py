"""The DAGs end to end with real Airflow on a tiny synthetic lakehouse (guarantee 9).

One lakehouse and one Airflow home for the module, built by the README's main command (``jobs.pipeline``, preset
tiny, DIN only): one catch-up run of ``ctr_features`` for the 3 generated days (every task a real spark-submit on
``local[*]`` running its job for the days in order), then ``ctr_training`` (torchrun on 2 gloo ranks, then the
evaluation task). The other tests run more DAG runs on it through the same runner (``dag.test`` in one Airflow
process):

* day 2 again, as a backfill after day 3, and day 3 again as its own daily run: validate_events redoes the day with
  the same rows (same fingerprint), so nothing is stale and the other tasks, with nothing to do, are skipped; every
  feature table keeps its rows;
* a training run whose rank 0 dies without recording anything: the task fails and the run is recorded as failed.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from features.tableio import Lakehouse
from jobs import pipeline

from .conftest import airflow_env

pytestmark = pytest.mark.slow

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
CHAIN = ["validate_events", "build_vocab", "build_samples", "build_rank_eval"]
#: every table the feature DAG writes, except features/runs (one row per job run: it grows by design)
FEATURE_TABLES = ("features/events_clean", "features/quarantine", "features/vocab", "features/vocab_pending",
                  "features/vocab_days", "features/samples", "features/user_state", "features/split",
                  "features/rank_eval")
TINY_TRAINING = [*pipeline.COMMON_TRAIN, *pipeline.PRESETS["tiny"]["train"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    lakehouse, home = root / "lh", root / "airflow"
    env = airflow_env(home, str(lakehouse))  # a clean environment: nothing of the caller's CTR_/AIRFLOW settings
    done = subprocess.run([sys.executable, "-m", "jobs.pipeline", "--lakehouse", str(lakehouse), "--preset", "tiny",
                           "--models", "din", "--airflow-home", str(home)], env=env, capture_output=True, text=True,
                          cwd=pipeline.PROJECT_DIR, timeout=1800)
    logs = sorted((home / "logs" / "pipeline").glob("*.log"))
    tail = logs[-1].read_text()[-6000:] if logs else ""
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}\n--- log ---\n{tail}"
    return {"lakehouse": Lakehouse(lakehouse), "home": home, "out": done.stdout,
            "env": airflow_env(home, str(lakehouse), retries=0)}


def snapshot(lakehouse: Lakehouse) -> dict[str, list[str]]:
    """Every feature table's rows, order-free (each row's repr, sorted)."""
    return {t: sorted(map(repr, lakehouse.read_arrow(t).to_pylist())) for t in FEATURE_TABLES}


def dag_runs(home) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(home / "airflow.db") as db:
        return db.execute("SELECT dag_id, state, logical_date FROM dag_run ORDER BY id").fetchall()


def asset_events(home) -> dict[str, int]:
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT a.name, count(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                          "GROUP BY a.name").fetchall()
    return dict(rows)


def test_the_main_command_builds_the_features_and_trains_through_the_dags(built):
    lakehouse, out = built["lakehouse"], built["out"]
    # one line per task: the catch-up run submits each job once for the 3 days
    for job in CHAIN:
        assert any(line.split()[:4] == ["ctr_features", f"{DAYS[0]}..", job, "success"] for line in out.splitlines()), (
            f"{job}\n{out}")
    assert any(line.split()[:4] == ["ctr_training", "din", "train", "success"] for line in out.splitlines())
    # real Airflow runs in the metadata database, and the tables published as assets
    runs = dag_runs(built["home"])
    assert [(d, s) for d, s, _ in runs] == [("ctr_features", "success"), ("ctr_training", "success")]
    assert str(runs[0][2])[:10] == DAYS[0]
    events = asset_events(built["home"])
    assert events["ctr/features/samples"] == 1 and events["ctr/features/vocab"] == 1
    assert events["ctr/features/split"] == 1 and events["ctr/training/metrics"] == 1
    # each job ran for each day, in its one spark-submit, and recorded each day's run; the evaluation sets need 3
    # sample days for a split (train, valid, test): build_rank_eval left the first two out
    jobs = lakehouse.read_arrow("features/runs", columns=["job", "ds", "status"]).to_pylist()
    assert sorted((r["job"], str(r["ds"])) for r in jobs) == sorted(
        [(job, day) for day in DAYS for job in CHAIN[:3]] + [("build_rank_eval", DAYS[-1])])
    assert {r["status"] for r in jobs} == {"succeeded"}
    split = lakehouse.read_arrow("features/split", columns=["anchor_ds"]).column(0).to_pylist()
    assert {str(d) for d in split} == {DAYS[-1]}
    clean = lakehouse.read_arrow("features/events_clean", columns=["event_type"]).column(0).to_pylist()
    assert lakehouse.count("features/samples") == clean.count("impression") > 0
    # the training run: recorded as succeeded on 2 ranks, its metrics read back into the summary
    training = lakehouse.read_arrow("training/runs").to_pylist()
    assert len(training) == 1
    run = training[0]
    assert (run["model"], run["status"], run["world_size"]) == ("din", "succeeded", 2)
    metrics = lakehouse.read_arrow("training/metrics", where=f"run_id = '{run['run_id']}'").to_pylist()
    final = {(m["split"], m["metric"]): m["value"] for m in metrics if m["kind"] == "final"}
    assert {("valid", "auc"), ("test", "auc"), ("test", "gauc"), ("test", "logloss")} <= set(final)
    assert any(m["metric"] == "samples_per_second" and m["kind"] == "epoch" for m in metrics)
    summary = next(line.split() for line in out.splitlines() if line.startswith("din ") and run["run_id"] in line)
    assert summary[1:4] == [f"{final['test', 'auc']:.4f}", f"{final['test', 'gauc']:.4f}",
                            f"{final['test', 'logloss']:.4f}"]
    for table in ("features/samples", "features/vocab", "training/runs", "training/metrics"):
        assert lakehouse.path(table) in out


@pytest.fixture(scope="module")
def reruns(built):
    """After the main command: a backfill of day 2, and a training run whose rank 0 dies.

    One Airflow process for both runs (the runner stops at a failed run: the failing one is last). Rank 0 exits
    abruptly after its first step (the trainer's fault injection): no record from the trainer, and torchrun stops
    rank 1, which does not write run records; the row written at the start says running until the task settles it.
    """
    lakehouse = built["lakehouse"]
    before = {"tables": snapshot(lakehouse), "runs": lakehouse.count("features/runs")}
    env = {**built["env"], "CTR_TRAIN_ENV": json.dumps({"CTR_TRAIN_FAIL_AT_STEP": "1", "CTR_TRAIN_FAIL_RANK": "0"})}
    results = pipeline.execute_plan(
        [{"dag_id": "ctr_features", "logical_date": DAYS[1], "label": "backfill", "conf": {"rank_eval": True}},
         {"dag_id": "ctr_features", "logical_date": DAYS[2], "label": "daily", "conf": {}},
         {"dag_id": "ctr_training", "logical_date": None, "label": "killed",
          "conf": {"model": "din", "nproc": 2, "overrides": TINY_TRAINING, "run_id": "din-killed"}}],
        env, built["home"] / "logs" / "reruns.log")
    return {"before": before, "results": {r["label"]: r for r in results}}


def test_one_run_per_day_again_leaves_every_table_of_the_catch_up_run_unchanged(built, reruns):
    lakehouse, backfill, daily = built["lakehouse"], reruns["results"]["backfill"], reruns["results"]["daily"]
    # day 2 as a backfill, day 3 as its own daily run: the events are validated again, with the same rows, so every
    # later job's days are current and those tasks are skipped
    for run in (backfill, daily):
        assert (run["state"], {t: v["state"] for t, v in run["tasks"].items()}) == (
            "success", {"validate_events": "success", "build_vocab": "skipped", "build_samples": "skipped",
                        "build_rank_eval": "skipped"})
    assert snapshot(lakehouse) == reruns["before"]["tables"]
    assert lakehouse.count("features/runs") == reruns["before"]["runs"] + 2


def test_a_training_task_whose_processes_die_without_recording_leaves_the_run_failed(built, reruns):
    killed = reruns["results"]["killed"]
    assert (killed["state"], killed["tasks"]["train"]["state"], killed["tasks"]["evaluate"]["state"]) == (
        "failed", "failed", "upstream_failed")
    run = {r["run_id"]: r for r in built["lakehouse"].read_arrow("training/runs").to_pylist()}["din-killed"]
    assert run["status"] == "failed" and run["finished_at"] is not None
    # recorded by the trainer's deputy (rank 1 saw rank 0 vanish and waited for its record in vain) or, when
    # torchrun stopped rank 1 first, by the task: torchrun's exit and its root cause, rank 0's exit code 3
    deputy = run["error"].startswith("rank 0 did not record this failure")
    task = run["error"].startswith("torchrun exited with status 1") and "exitcode: 3" in run["error"]
    assert deputy or task, run["error"]
