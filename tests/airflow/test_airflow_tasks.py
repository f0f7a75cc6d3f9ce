"""The DAGs' task bodies (jobs.airflow_tasks) and the pipeline's helpers, on small delta-rs tables (no JVM, no Airflow).

Expected values are worked out from the contracts: a feature task catches up its job's missing and stale days and
the later days built on them, the split never moves back, a failed training task leaves its run recorded as failed.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pyarrow as pa
import pytest

from jobs import airflow_tasks as T
from jobs import pipeline
from training.records import METRICS, RUNS

D1, D2, D3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)
UTC = dt.UTC


FEATURE_RUNS = pa.schema([("run_id", pa.string()), ("job", pa.string()), ("ds", pa.date32()),
                          ("status", pa.string()), ("inputs", pa.map_(pa.string(), pa.int64())),
                          ("outputs", pa.map_(pa.string(), pa.int64())), ("counts", pa.map_(pa.string(), pa.int64()))])


def write_feature_runs(lakehouse, job, days, *, inputs=None, outputs=None, fingerprint=None):
    """Succeeded run records of ``job`` for ``days`` (the columns the plans read), as one run."""
    counts = [] if fingerprint is None else [("fingerprint", fingerprint)]
    rows = [{"run_id": f"{job}/{days[0]}", "job": job, "ds": day, "status": "succeeded",
             "inputs": list((inputs or {}).items()), "outputs": list((outputs or {}).items()), "counts": counts}
            for day in days]
    lakehouse.write_arrow(pa.Table.from_pylist(rows, schema=FEATURE_RUNS), "features/runs", mode="append")


def write_split(lakehouse, anchor, days):
    lakehouse.write_arrow(pa.table({"ds": pa.array(days, pa.date32()), "split": ["train"] * len(days),
                                    "anchor_ds": pa.array([anchor] * len(days), pa.date32())}),
                          "features/split", mode="overwrite")


def run_row(run_id, status, **fields):
    row = {name: None for name in RUNS.names}
    row.update(run_id=run_id, model="din", status=status, attempt=1, config=json.dumps({"model_name": "din"}),
               started_at=dt.datetime(2026, 1, 4, 10, 0, tzinfo=UTC),
               updated_at=dt.datetime(2026, 1, 4, 10, 5, tzinfo=UTC), **fields)
    return row


def write_runs(lakehouse, rows):
    lakehouse.upsert_arrow(pa.Table.from_pylist(rows, schema=RUNS), T.RUNS_TABLE, keys=["run_id"])


def runs_by_id(lakehouse):
    return {r["run_id"]: r for r in lakehouse.read_arrow(T.RUNS_TABLE).to_pylist()}


# ---------------------------------------------------------------------------------------------------- feature ranges
D4 = dt.date(2026, 1, 4)
D5 = dt.date(2026, 1, 5)


def plan(lakehouse, job, first, last, params=None, config=None, since=None):
    got = T.feature_plan(lakehouse.root, job, first, last, params or {}, config, since)
    return got.first, got.last


def test_a_daily_run_covers_its_day_and_catches_up_the_days_missed_before(lakehouse):
    # nothing validated yet: the vocabulary has nothing to do; validate_events always does the days asked
    assert plan(lakehouse, "build_vocab", "2026-01-01", "2026-01-01") == (None, None)
    assert plan(lakehouse, "validate_events", "2026-01-01", "2026-01-01") == (D1, D1)
    write_feature_runs(lakehouse, "validate_events", [D1, D2, D3], outputs={"features/events_clean": 1})
    write_feature_runs(lakehouse, "build_vocab", [D1], inputs={"features/events_clean": 1},
                       outputs={"features/vocab": 1})
    assert plan(lakehouse, "build_vocab", "2026-01-02", "2026-01-02") == (D2, D3)  # and day 3, validated already
    write_feature_runs(lakehouse, "build_vocab", [D2, D3], inputs={"features/events_clean": 1},
                       outputs={"features/vocab": 2})
    write_feature_runs(lakehouse, "validate_events", [D5], outputs={"features/events_clean": 2})
    assert plan(lakehouse, "build_vocab", "2026-01-05", "2026-01-05") == (D5, D5)
    # a day that is processed and current has nothing to redo, unless the run's conf says rebuild; a rebuild of a
    # processed day goes on to the latest one, built on it
    assert plan(lakehouse, "build_vocab", "2026-01-02", "2026-01-02") == (D5, D5)  # only the missing day 5
    assert plan(lakehouse, "build_vocab", "2026-01-02", "2026-01-02", {"rebuild": True}) == (D2, D5)
    write_feature_runs(lakehouse, "build_vocab", [D5], inputs={"features/events_clean": 2},
                       outputs={"features/vocab": 3})
    got = T.feature_plan(lakehouse.root, "build_vocab", "2026-01-03", "2026-01-03", {})
    assert got.first is None and "processed every day of 2026-01-03..2026-01-03" in got.reason
    # raw days before the DAG's start date are not caught up
    lakehouse.write_arrow(pa.table({"event_id": ["e1", "e2", "e3"], "ds": pa.array([D3, D4, D5], pa.date32())}),
                          "raw/events", partition_by=["ds"])
    assert plan(lakehouse, "validate_events", "2026-01-05", "2026-01-05") == (D4, D5)  # day 4 never validated
    assert plan(lakehouse, "validate_events", "2026-01-05", "2026-01-05", since="2026-01-05") == (D5, D5)


def test_a_late_day_makes_the_later_days_stale_and_the_next_run_rebuilds_them(lakehouse):
    write_feature_runs(lakehouse, "validate_events", [D1, D2, D3], outputs={"features/events_clean": 1},
                       fingerprint=7)
    write_feature_runs(lakehouse, "build_vocab", [D1, D2, D3], inputs={"features/events_clean": 1},
                       outputs={"features/vocab": 1})
    write_feature_runs(lakehouse, "validate_events", [D4], outputs={"features/events_clean": 2}, fingerprint=7)
    assert plan(lakehouse, "build_vocab", "2026-01-04", "2026-01-04") == (D4, D4)
    # day 2 validated again with the same rows (same fingerprint): nothing is stale
    write_feature_runs(lakehouse, "validate_events", [D2], outputs={"features/events_clean": 3}, fingerprint=7)
    assert plan(lakehouse, "build_vocab", "2026-01-04", "2026-01-04") == (D4, D4)
    # ... with other rows (late events): the vocabulary's days 2 and 3 are stale
    write_feature_runs(lakehouse, "validate_events", [D2], outputs={"features/events_clean": 4}, fingerprint=8)
    got = T.feature_plan(lakehouse.root, "build_vocab", "2026-01-04", "2026-01-04", {})
    assert (got.first, got.last) == (D2, D4) and "missing or stale days from 2026-01-02" in got.reason
    # a backfill run for day 2 alone rebuilds day 2 and everything after it
    assert plan(lakehouse, "build_vocab", "2026-01-02", "2026-01-02") == (D2, D4)


def test_rank_eval_runs_unless_turned_off_or_the_split_is_anchored_later(lakehouse):
    write_feature_runs(lakehouse, "build_samples", [D1, D2, D3, D4], outputs={"features/samples": 1})
    write_sample_days(lakehouse, [D1, D2, D3, D4])
    assert plan(lakehouse, "build_rank_eval", "2026-01-03", "2026-01-03", {"rank_eval": True}) == (D3, D3)
    off = T.feature_plan(lakehouse.root, "build_rank_eval", "2026-01-03", "2026-01-04", {"rank_eval": False})
    assert off.first is None and "rank_eval = false" in off.reason
    write_split(lakehouse, D3, [D1, D2, D3])
    assert plan(lakehouse, "build_rank_eval", "2026-01-04", "2026-01-04") == (D4, D4)  # moves it forward
    moved_back = T.feature_plan(lakehouse.root, "build_rank_eval", "2026-01-02", "2026-01-02", {})
    assert moved_back.first is None and "anchored at 2026-01-03" in moved_back.reason
    # a missed anchor is not caught up (it is an evaluation set, not a link of a chain), a stale one is
    write_feature_runs(lakehouse, "build_rank_eval", [D3], inputs={"features/samples": 1},
                       outputs={"features/rank_eval": 1})
    write_feature_runs(lakehouse, "build_samples", [D5], outputs={"features/samples": 2})
    write_sample_days(lakehouse, [D1, D2, D3, D4, D5])
    assert plan(lakehouse, "build_rank_eval", "2026-01-05", "2026-01-05") == (D5, D5)
    write_feature_runs(lakehouse, "build_samples", [D3], outputs={"features/samples": 3})
    assert plan(lakehouse, "build_rank_eval", "2026-01-05", "2026-01-05") == (D3, D5)


def write_sample_days(lakehouse, days):
    lakehouse.write_arrow(pa.table({"sample_id": [f"s{i}" for i in range(len(days))],
                                    "ds": pa.array(days, pa.date32())}), "features/samples", mode="overwrite",
                          partition_by=["ds"])


def test_rank_eval_waits_for_enough_sample_days_for_a_split(lakehouse):
    # a split needs test + valid + 1 days: 3 by default, so the first two days of a new lakehouse are left out
    write_feature_runs(lakehouse, "build_samples", [D1, D2], outputs={"features/samples": 1})
    write_sample_days(lakehouse, [D1, D2])
    got = T.feature_plan(lakehouse.root, "build_rank_eval", "2026-01-01", "2026-01-02", {})
    assert got.first is None and "2 day(s) up to 2026-01-02" in got.reason and "needs 3" in got.reason
    write_feature_runs(lakehouse, "build_samples", [D3, D4], outputs={"features/samples": 2})
    write_sample_days(lakehouse, [D1, D2, D3, D4])
    got = T.feature_plan(lakehouse.root, "build_rank_eval", "2026-01-01", "2026-01-04", {})  # from the first day
    assert (got.first, got.last) == (D3, D4) and "first possible day: 2026-01-03" in got.reason
    # the job's own settings (its --config file) set how many days a split needs
    got = T.feature_plan(lakehouse.root, "build_rank_eval", "2026-01-01", "2026-01-04", {},
                         {"test_days": 2, "valid_days": 1})
    assert got.first == D4 and "needs 4" in got.reason
    assert T.feature_plan(lakehouse.root, "build_rank_eval", "2026-01-01", "2026-01-03", {},
                          {"test_days": 3}).first is None


# ---------------------------------------------------------------------------------------------------- failed runs
def test_a_run_left_running_by_dead_processes_is_marked_failed_and_keeps_its_record(lakehouse):
    write_runs(lakehouse, [run_row("r1", "running", feature_version=7, world_size=2)])
    assert T.mark_run_failed(lakehouse.root, "r1", model="din", error="torchrun exited with status 1") == "marked"
    row = runs_by_id(lakehouse)["r1"]
    assert row["status"] == "failed" and row["error"] == "torchrun exited with status 1"
    assert row["feature_version"] == 7 and row["world_size"] == 2 and row["finished_at"] is not None


def test_failures_recorded_by_the_trainer_and_successes_are_left_alone(lakehouse):
    write_runs(lakehouse, [run_row("f", "failed", error="the trainer's own error"), run_row("s", "succeeded")])
    version = lakehouse.version(T.RUNS_TABLE)
    assert T.mark_run_failed(lakehouse.root, "f", model="din", error="other") == "recorded"
    assert T.mark_run_failed(lakehouse.root, "s", model="din", error="other") == "succeeded"
    assert lakehouse.version(T.RUNS_TABLE) == version
    assert runs_by_id(lakehouse)["f"]["error"] == "the trainer's own error"


def test_a_run_that_failed_before_its_record_gets_a_failed_row(lakehouse):
    assert T.mark_run_failed(lakehouse.root, "early", model="dien", error="unknown model") == "inserted"
    row = runs_by_id(lakehouse)["early"]
    assert (row["model"], row["status"], row["error"], row["config"]) == ("dien", "failed", "unknown model", None)


def test_the_failure_callback_marks_only_this_dag_runs_running_runs(lakehouse):
    write_runs(lakehouse, [run_row("din-x", "running"), run_row("din-x-try2", "running"),
                           run_row("din-xy", "running"), run_row("din-x-try3", "succeeded")])
    assert sorted(T.mark_stale_runs_failed(lakehouse.root, "din-x", error="task failed")) == ["din-x", "din-x-try2"]
    status = {k: v["status"] for k, v in runs_by_id(lakehouse).items()}
    assert status == {"din-x": "failed", "din-x-try2": "failed", "din-xy": "running", "din-x-try3": "succeeded"}


# ---------------------------------------------------------------------------------------------------- retries
def test_a_retry_resumes_a_recorded_run_and_restarts_one_that_never_started(lakehouse):
    assert T._plan_attempt(lakehouse.root, "din-a", 1) == ("din-a", False)  # first try: a new run
    write_runs(lakehouse, [run_row("din-a", "failed")])
    assert T._plan_attempt(lakehouse.root, "din-a", 2) == ("din-a", True)  # recorded with its config: resume
    T.mark_run_failed(lakehouse.root, "din-b", model="din", error="failed before recording")
    assert T._plan_attempt(lakehouse.root, "din-b", 2) == ("din-b-try2", False)  # no config to resume from
    write_runs(lakehouse, [run_row("din-c", "succeeded")])
    assert T._plan_attempt(lakehouse.root, "din-c", 2) is None  # already done: nothing to train


def test_torchrun_command_for_a_new_and_a_resumed_run():
    new = T.torchrun_command(torchrun=["python", "-m", "torch.distributed.run"], torchrun_args=["--standalone"],
                             nproc=2, lakehouse="/lh", model="dien", run_id="r", overrides=["train.epochs=1"])
    assert new == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                   "training.train", "--lakehouse", "/lh", "--model", "dien", "--run-id", "r",
                   "--set", "train.epochs=1"]
    resumed = T.torchrun_command(torchrun=["torchrun"], torchrun_args=[], nproc=8, lakehouse="/lh", model="dien",
                                 run_id="r", resume=True, overrides=["train.epochs=1"])
    assert resumed == ["torchrun", "--nproc_per_node=8", "-m", "training.train", "--lakehouse", "/lh",
                       "--resume", "r"]
    with pytest.raises(ValueError, match="key=value"):
        T.torchrun_command(torchrun=["t"], torchrun_args=[], nproc=1, lakehouse="/lh", model="din", run_id="r",
                           overrides=["epochs"])


def test_training_run_ids_are_file_name_safe():
    assert T.training_run_id("din", "manual__2026-01-04T10:00:00+00:00") == "din-manual__2026-01-04T10-00-00-00-00"


def test_a_training_process_that_dies_without_recording_fails_the_task_and_is_recorded(lakehouse, tmp_path):
    # a stand-in for torchrun: records the run as running (as rank 0 does), prints, then dies
    script = tmp_path / "fake_torchrun.py"
    script.write_text(
        "import sys, json, datetime as dt, pyarrow as pa\n"
        "from features.tableio import Lakehouse\n"
        "from training.records import RUNS\n"
        "args = sys.argv[1:]; run_id = args[args.index('--run-id') + 1]\n"
        "row = {n: None for n in RUNS.names}\n"
        "row.update(run_id=run_id, model='din', status='running', attempt=1, config='{}',"
        " started_at=dt.datetime.now(dt.UTC))\n"
        "Lakehouse(args[args.index('--lakehouse') + 1]).upsert_arrow(pa.Table.from_pylist([row], schema=RUNS),"
        " 'training/runs', keys=['run_id'])\n"
        "print('rank 0: step 1', flush=True)\n"
        "sys.exit(3)\n"
    )
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="status 3.*training/runs: marked"):
        T.run_training(lakehouse=lakehouse.root, model="din", base_run_id="din-dead", nproc=2,
                       torchrun=[sys.executable, str(script)], log=lines.append)
    assert "rank 0: step 1" in lines
    row = runs_by_id(lakehouse)["din-dead"]
    assert row["status"] == "failed" and "status 3" in row["error"] and "rank 0: step 1" in row["error"]


# ---------------------------------------------------------------------------------------------------- summary
def test_summary_reads_the_final_metrics_and_the_training_throughput(lakehouse):
    write_runs(lakehouse, [run_row("din-s", "succeeded", finished_at=dt.datetime(2026, 1, 4, 10, 2, tzinfo=UTC))])
    at = dt.datetime(2026, 1, 4, tzinfo=UTC)
    rows = [("epoch", 0, "train", "samples_per_second", 1000.0), ("epoch", 1, "train", "samples_per_second", 3000.0),
            ("epoch", 0, "valid", "auc", 0.6), ("final", -1, "valid", "auc", 0.61),
            ("final", -1, "test", "auc", 0.7), ("final", -1, "test", "gauc", 0.65),
            ("final", -1, "test", "logloss", 0.4)]
    lakehouse.write_arrow(pa.Table.from_pylist(
        [{"run_id": "din-s", "kind": k, "epoch": e, "step": 1, "split": s, "metric": m, "value": v,
          "recorded_at": at} for k, e, s, m, v in rows], schema=METRICS), T.METRICS_TABLE, mode="append")
    summary = T.summarize_run(lakehouse.root, "din-s")
    assert summary == {"run_id": "din-s", "model": "din", "status": "succeeded", "epochs": 2,
                       "samples_per_second": 2000.0, "seconds": 120.0, "test_auc": 0.7, "test_gauc": 0.65,
                       "test_logloss": 0.4, "valid_auc": 0.61}
    table = T.format_summaries([summary]).splitlines()
    assert table[1].split() == ["din", "0.7000", "0.6500", "0.4000", "0.6100", "2,000", "2", "din-s"]


def test_summary_of_a_failed_run_is_an_error(lakehouse):
    write_runs(lakehouse, [run_row("din-f", "failed", error="boom")])
    with pytest.raises(RuntimeError, match="din-f is failed: boom"):
        T.summarize_run(lakehouse.root, "din-f")


# ---------------------------------------------------------------------------------------------------- pipeline
def test_explicit_models_must_be_registered():
    assert pipeline.resolve_models("din,base", ["base", "din"]) == (["din", "base"], [])
    with pytest.raises(ValueError, match="dien not registered in training.models"):
        pipeline.resolve_models("dien,din", ["base", "din"])


def test_the_pipelines_model_names_are_the_registry_and_need_no_torch():
    from training.models import MODELS

    assert pipeline.known_models() == sorted(MODELS)
    # the check runs before any work: it must not pay torch's import (10-25 s)
    code = ("import sys; from jobs import pipeline; names = pipeline.known_models(); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(len(names))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=pipeline.PROJECT_DIR)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(MODELS))


def test_the_default_models_fall_back_to_the_registered_ones_with_a_warning():
    assert pipeline.resolve_models(None, ["base", "dien", "din"]) == (["dien", "din"], [])
    models, warnings = pipeline.resolve_models(None, ["base", "din"])
    assert models == ["din"] and len(warnings) == 1 and "'dien'" in warnings[0]
    with pytest.raises(ValueError, match="pass --models"):
        pipeline.resolve_models(None, ["base"])


def test_pipeline_presets_generate_the_days_they_train_on():
    assert pipeline.preset_days("tiny") == [D1, D2, D3]
    assert len(pipeline.preset_days("small")) == 4
    argv = pipeline.generate_argv("/lh", "small")
    assert argv[:2] == ["--lakehouse", "/lh"] and argv.count("--seed") == 1 and argv.count("--corrupt-fraction") == 1


def test_airflow_environment_is_local_to_the_project_and_keeps_a_user_connection(tmp_path):
    env = pipeline.airflow_env(tmp_path / "af", "/lh", retries=0, base={"PATH": "/usr/bin"})
    assert env["AIRFLOW_HOME"] == str(tmp_path / "af")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'af' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(pipeline.DAGS_FOLDER)
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False" and env["CTR_LAKEHOUSE"] == "/lh"
    assert json.loads(env[pipeline.SPARK_CONN_ENV]) == {"conn_type": "spark", "host": "local[*]"}
    mine = pipeline.airflow_env(tmp_path / "af", "/lh", retries=0,
                                base={pipeline.SPARK_CONN_ENV: '{"conn_type": "spark", "host": "local[2]"}'})
    assert json.loads(mine[pipeline.SPARK_CONN_ENV])["host"] == "local[2]"
