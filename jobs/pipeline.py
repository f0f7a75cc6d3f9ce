"""The main command: the whole pipeline on the embedded default, through the Airflow DAGs with real Airflow.

    python -m jobs.pipeline [--lakehouse ./lakehouse] [--preset tiny|small|medium|large] [--models dien,din]
                            [--nproc 2] [--set train.epochs=3 ...] [--airflow-home ./.airflow] [--verbose]

1. Generates the seeded synthetic event log of the preset (``jobs.generate_synthetic``) into the lakehouse.
2. Prepares a local Airflow (while step 1 runs): ``AIRFLOW_HOME`` in the project (``.airflow/``, SQLite metadata
   database made by ``airflow db migrate``, its output in ``logs/pipeline/<stamp>.db.log``), the DAGs folder
   ``airflow_dags/``, no example DAGs, and the Spark connection ``ctr_spark`` = ``local[*]`` (unless
   ``AIRFLOW_CONN_CTR_SPARK`` is already set).
3. Runs ``ctr_features`` once for all the generated days (a run with ``{"until": LAST_DAY}``: each task is
   one spark-submit of its job, a range job over all the days), then ``ctr_training`` once per model with
   ``{"model": M, "nproc": N, ...}``: torchrun on N CPU ranks, then the evaluation task. Runs go through
   ``dag.test`` (what ``airflow dags test`` runs) in one process, ``jobs.dag_runner``; Airflow's, Spark's and
   torchrun's output go to a log file under the Airflow home.
4. Prints one line per task, then a summary read back from ``training/metrics`` (model, AUC, GAUC, logloss,
   samples/s) and every table with its Delta version, row count and location.

Models: ``--models`` (comma-separated) must all be registered in ``training.models`` (else exit 2 before any
work). Without it the default list (dien, din) is used, leaving out, with a warning, a model not registered yet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
DAGS_FOLDER = PROJECT_DIR / "airflow_dags"
DEFAULT_MODELS = ("dien", "din")
START_DATE = "2026-01-01"
#: Spark settings for days of a few tens of thousands of events, over ctr_settings.LOCAL_CONF: the projections,
#: predicates and orderings Spark builds outside whole-stage code generation are interpreted instead of compiled
#: to Java classes first (an internal Spark setting, which its own tests use to run every expression both ways). On
#: such days compiling costs more than it saves (each feature job is a fresh JVM running many small queries):
#: measured on the small preset's 4 days, one fresh JVM per job, validate_events 50 -> 38-42 s and build_samples
#: 102 -> 89 s. On big days it is the other way round (1M events a day: validate_events 83 -> 169 s, build_samples
#: 294 -> 512 s), so the bigger presets keep Spark's default (compile; interpret only where compiling fails).
SMALL_DAYS_SPARK_CONF = {"spark.sql.codegen.factoryMode": "NO_CODEGEN"}
PRESETS: dict[str, dict[str, Any]] = {
    # the end-to-end tests' lakehouse: a few hundred samples a day
    "tiny": {"generate": ["--users", "60", "--items", "800", "--days", "3", "--corrupt-fraction", "0.001"],
             "train": ["train.epochs=1", "data.batch_size=128", "data.eval_batch_size=512"],
             "spark_conf": SMALL_DAYS_SPARK_CONF},
    # the default: about 4.5 minutes on a quiet 2-core machine, end to end (BENCHMARKS.md)
    "small": {"generate": ["--users", "1000", "--items", "3000", "--days", "4", "--corrupt-fraction", "0.001"],
              "train": ["train.epochs=2", "data.batch_size=512"],
              "spark_conf": SMALL_DAYS_SPARK_CONF},
    # the former demo lakehouse: 2,000 users over a week (about 240k events)
    "medium": {"generate": ["--users", "2000", "--items", "5000", "--days", "7", "--corrupt-fraction", "0.001"],
               "train": ["train.epochs=2", "data.batch_size=1024"]},
    # about 10M events (see BENCHMARKS.md)
    # (long jobs: the driver JVM gets its optimising compiler back, see ctr_settings.LOCAL_CONF)
    "large": {"generate": ["--users", "83056", "--items", "200000", "--days", "7", "--corrupt-fraction", "0.0001"],
              "train": ["train.epochs=1", "data.batch_size=1024"],
              "spark_conf": {"spark.driver.extraJavaOptions": "-Duser.timezone=UTC"}},
}
COMMON_GENERATE = ["--seed", "42", "--start-date", START_DATE]
COMMON_TRAIN = ["train.device=cpu", "train.progress=false"]
RAW_TABLES = ("raw/events", "raw/items", "raw/users", "raw/click_truth", "raw/planted_corruptions")
FEATURE_TABLES = ("features/events_clean", "features/quarantine", "features/vocab", "features/samples",
                  "features/user_state", "features/split", "features/rank_eval", "features/runs")
TRAINING_TABLES = ("training/runs", "training/metrics", "training/predictions")
SPARK_CONN_ENV = "AIRFLOW_CONN_CTR_SPARK"


class PipelineError(RuntimeError):
    """A step failed; the message says which and where its log is."""


def preset_days(preset: str) -> list[dt.date]:
    args = PRESETS[preset]["generate"]
    days = int(args[args.index("--days") + 1])
    first = dt.date.fromisoformat(START_DATE)
    return [first + dt.timedelta(days=i) for i in range(days)]


def generate_argv(lakehouse: str, preset: str) -> list[str]:
    return ["--lakehouse", lakehouse, *PRESETS[preset]["generate"], *COMMON_GENERATE]


def resolve_models(requested: str | None, known: list[str]) -> tuple[list[str], list[str]]:
    """(models to train, warnings). Explicit unknown models are an error (ValueError); defaults fall back."""
    if requested is not None:
        models = [m.strip() for m in requested.split(",") if m.strip()]
        if not models:
            raise ValueError("--models: name at least one model")
        unknown = [m for m in models if m not in known]
        if unknown:
            raise ValueError(f"--models: {', '.join(unknown)} not registered in training.models (known: "
                             f"{', '.join(known)})")
        return models, []
    models = [m for m in DEFAULT_MODELS if m in known]
    missing = [m for m in DEFAULT_MODELS if m not in known]
    warnings = [f"model {m!r} of the default list is not registered in training.models (known: {', '.join(known)}); "
                "training without it" for m in missing]
    if not models:
        raise ValueError(f"none of the default models ({', '.join(DEFAULT_MODELS)}) is registered in "
                         f"training.models (known: {', '.join(known)}); pass --models")
    return models, warnings


def known_models() -> list[str]:
    # the registry's names without importing torch, which would cost 10-25 s before any work (a test keeps them equal)
    from training.model_names import MODEL_NAMES

    return sorted(MODEL_NAMES)


def airflow_env(airflow_home: Path, lakehouse: str, *, retries: int, base: dict[str, str] | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the Airflow processes: a local home and database, our DAGs, the embedded default."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env.update({
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "CTR_LAKEHOUSE": lakehouse,
        "CTR_PROJECT_DIR": str(PROJECT_DIR),
        "CTR_PYTHON": sys.executable,
        "CTR_START_DATE": START_DATE,
        "CTR_RETRIES": str(retries),
        "CTR_RETRY_DELAY_SECONDS": "10",
    })
    env.setdefault(SPARK_CONN_ENV, json.dumps({"conn_type": "spark", "host": "local[*]"}))
    env.update(extra or {})
    return env


def preset_env(preset: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``CTR_SPARK_CONF`` with the preset's Spark settings (over ctr_settings.LOCAL_CONF), unless the user set it."""
    if "spark_conf" in PRESETS[preset] and "CTR_SPARK_CONF" not in environ:
        return {"CTR_SPARK_CONF": json.dumps(PRESETS[preset]["spark_conf"])}
    return {}


def migrate_airflow_db(env: dict[str, str], log_path: Path) -> None:
    """``airflow db migrate`` once per Airflow home and Airflow version (a stamp file remembers it)."""
    from importlib.metadata import version

    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    stamp = home / ".migrated"
    wanted = f"apache-airflow {version('apache-airflow')}"
    if stamp.exists() and (home / "airflow.db").exists() and stamp.read_text().strip() == wanted:
        return
    with log_path.open("a") as log:
        status = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, stdout=log,
                                stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise PipelineError(f"airflow db migrate failed (exit {status}); see {log_path}")
    stamp.write_text(wanted + "\n")


def execute_plan(runs: list[dict[str, Any]], env: dict[str, str], log_path: Path, *,
                 verbose: bool = False) -> list[dict[str, Any]]:
    """Run the DAG runs in order through ``jobs.dag_runner`` (one Airflow process); returns what ran (it stops at
    the first failed run): per run its Airflow run id, state and task states."""
    work = Path(env["AIRFLOW_HOME"]) / "plans"
    work.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    plan_path, result_path = work / f"plan-{stamp}.json", work / f"result-{stamp}.json"
    plan_path.write_text(json.dumps({"runs": runs, "result": str(result_path)}, indent=2))
    command = [sys.executable, "-m", "jobs.dag_runner", str(plan_path)]
    if not verbose:
        command += ["--log", str(log_path)]
    subprocess.run(command, env=env, cwd=PROJECT_DIR)
    return json.loads(result_path.read_text()) if result_path.exists() else []


def run_dags(runs: list[dict[str, Any]], env: dict[str, str], log_path: Path, *, verbose: bool) -> list[dict]:
    """:func:`execute_plan`, raising PipelineError unless every run succeeded."""
    results = execute_plan(runs, env, log_path, verbose=verbose)
    failed = [r for r in results if r["state"] != "success"]
    if failed or len(results) != len(runs):
        what = failed[0] if failed else None
        tasks = ", ".join(f"{t} {v['state']}" for t, v in (what or {}).get("tasks", {}).items())
        where = f"{what['label']} ({what['run_id']}): {tasks}" if what else "the DAG runner stopped"
        raise PipelineError(f"DAG run failed: {where}; Airflow, Spark and torchrun output: {log_path}")
    return results


def summary_text(lakehouse_root: str, run_ids: list[str]) -> str:
    from features.tableio import Lakehouse
    from jobs.airflow_tasks import format_summaries, summarize_run

    lakehouse = Lakehouse(lakehouse_root)
    lines = ["", "training runs (read back from training/metrics; test = the last day, valid = the day before):",
             format_summaries([summarize_run(lakehouse.root, run_id) for run_id in run_ids]), "",
             f"lakehouse: {lakehouse.root}", f"{'table':<26}{'version':>8}{'rows':>12}  location"]
    for table in RAW_TABLES + FEATURE_TABLES + TRAINING_TABLES:
        if lakehouse.exists(table):
            lines.append(f"{table:<26}{lakehouse.version(table):>8}{lakehouse.count(table):>12}  "
                         f"{lakehouse.path(table)}")
    lines.append("\nread them with Spark (format('delta')), deltalake or polars.read_delta; raw/click_truth and "
                 "raw/planted_corruptions are for evaluation only.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", default="lakehouse", help="lakehouse root (default ./lakehouse)")
    parser.add_argument("--preset", choices=list(PRESETS), default="small",
                        help="size of the synthetic log (default small: 1,000 users, 4 days)")
    parser.add_argument("--models", help=f"comma-separated models to train (default {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--nproc", type=int, default=2, help="training processes (gloo ranks on CPU; default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training override for every model, e.g. train.epochs=3")
    parser.add_argument("--airflow-home", type=Path, default=PROJECT_DIR / ".airflow",
                        help="AIRFLOW_HOME (default ./.airflow in the project)")
    parser.add_argument("--retries", type=int, default=0,
                        help="task retries (default 0: fail fast; the DAGs' own default is 2 with back-off)")
    parser.add_argument("--skip-generate", action="store_true", help="reuse the raw log already in the lakehouse")
    parser.add_argument("--verbose", action="store_true", help="show Airflow's output instead of logging it")
    args = parser.parse_args(argv)
    if args.nproc < 1:
        parser.error("--nproc must be at least 1")
    bad = [item for item in args.set if "=" not in item]
    if bad:
        parser.error(f"--set {bad[0]!r}: expected KEY=VALUE")
    return args


def main(argv: list[str] | None = None, *, extra_env: dict[str, str] | None = None) -> int:
    args = parse_args(argv)
    clock = time.perf_counter()
    try:
        models, warnings = resolve_models(args.models, known_models())
    except ValueError as err:
        print(f"pipeline: {err}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"pipeline: warning: {warning}", file=sys.stderr)
    lakehouse = str(Path(args.lakehouse).expanduser().resolve())
    airflow_home = args.airflow_home.expanduser().resolve()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    log_path = airflow_home / "logs" / "pipeline" / f"{stamp}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = airflow_env(airflow_home, lakehouse, retries=args.retries,
                      extra={**preset_env(args.preset, os.environ), **(extra_env or {})})
    days = preset_days(args.preset)
    print(f"pipeline: preset {args.preset}, days {days[0]}..{days[-1]}, models {', '.join(models)} on "
          f"{args.nproc} CPU ranks; lakehouse {lakehouse}; Airflow home {airflow_home}; log {log_path}", flush=True)
    if (Path(lakehouse) / "features" / "runs").exists():
        print("pipeline: note: the lakehouse already holds features; the generated days are rebuilt where their input "
              "changed (the same preset and seed give the same rows), other days stay as they are (use a fresh "
              "--lakehouse for another preset)", file=sys.stderr)
    # Airflow's database is made while the log is generated (independent work: a few seconds off the command)
    migration = ThreadPoolExecutor(max_workers=1).submit(migrate_airflow_db, env, log_path.with_suffix(".db.log"))
    try:
        if not args.skip_generate:
            step = time.perf_counter()
            with log_path.open("a") as log:
                status = subprocess.run([sys.executable, "-m", "jobs.generate_synthetic",
                                         *generate_argv(lakehouse, args.preset)], env=env, cwd=PROJECT_DIR,
                                        stdout=log, stderr=subprocess.STDOUT).returncode
            if status != 0:
                raise PipelineError(f"generating the synthetic log failed (exit {status}); see {log_path}")
            print(f"  {'generate_synthetic':<26} {'raw/*':<16} {'success':<8} {time.perf_counter() - step:7.1f} s",
                  flush=True)
        migration.result()
        # one catch-up run for all the days: each job is one spark-submit that runs its days in order
        runs: list[dict[str, Any]] = [
            {"dag_id": "ctr_features", "logical_date": days[0].isoformat(), "label": f"ctr_features {days[0]}..",
             "conf": {"until": days[-1].isoformat()}}]
        run_ids = {model: f"{model}-{args.preset}-{stamp}" for model in models}
        overrides = [*COMMON_TRAIN, *PRESETS[args.preset]["train"], *args.set]
        runs += [{"dag_id": "ctr_training", "logical_date": None, "label": f"ctr_training {model}",
                  "conf": {"model": model, "nproc": args.nproc, "overrides": overrides, "run_id": run_ids[model]}}
                 for model in models]
        run_dags(runs, env, log_path, verbose=args.verbose)
        print(summary_text(lakehouse, list(run_ids.values())))
    except PipelineError as err:
        print(f"pipeline: {err}", file=sys.stderr)
        _print_tail(log_path)
        return 1
    print(f"\npipeline: done in {time.perf_counter() - clock:,.0f} s; Airflow runs: AIRFLOW_HOME={airflow_home} "
          f".venv/bin/airflow dags list-runs ctr_features (task logs in {airflow_home / 'logs'})")
    return 0


def _print_tail(log_path: Path, lines: int = 40) -> None:
    if log_path.exists():
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- last {len(tail)} lines of {log_path} ---", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
