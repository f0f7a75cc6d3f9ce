"""DAG integrity (guarantee 9): the DAGs import without errors within a parse-time budget, load no heavy module
at parse time, and have exactly the designed task graph, retries, schedules, assets and spark-submit commands.

The DAG folder is parsed the way Airflow 3 parses it (``BundleDagBag``, the bundle root on ``sys.path``) in a
fresh interpreter per scenario: the embedded default, and a cluster configured through ``CTR_*`` variables.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

from features import spark as feature_spark
from jobs import pipeline

from .conftest import DAGS_FOLDER, airflow_env, run_python

sys.path.insert(0, str(DAGS_FOLDER))
import ctr_settings  # noqa: E402  (the DAGs' settings module: pure Python)

PARSE_BUDGET_SECONDS = 2.0  # per DAG file; both parse in about 0.05 s here (Airflow's import timeout is 30 s)
HEAVY = ("torch", "torchrec", "pyspark", "py4j", "deltalake", "polars", "pandas", "pyarrow", "numpy", "petastorm",
         "features", "jobs", "training")

PROBE = """
import json, sys, time
from airflow.models.dagbag import BundleDagBag

folder, heavy_modules = sys.argv[1], json.loads(sys.argv[2])
started = time.perf_counter()
bag = BundleDagBag(dag_folder=folder, bundle_path=folder, include_examples=False)
seconds = time.perf_counter() - started
heavy = sorted(m for m in heavy_modules if m in sys.modules)

def names(assets):
    return sorted(a.name for a in assets)

def uris(assets):
    return sorted(a.uri for a in assets)

dags = {}
for dag_id, dag in bag.dags.items():
    tt = dag.timetable
    info = {"timetable": type(tt).__name__, "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
            "start_date": dag.start_date.isoformat(), "params": {k: dag.params[k] for k in dag.params},
            "schedule_assets": sorted(key.name for key, _ in tt.asset_condition.iter_assets())
            if hasattr(tt, "asset_condition") else None, "tasks": {}}
    info["param_schemas"] = {k: dag.params.get_param(k).schema for k in dag.params}
    if "model" in dag.params:
        try:
            dag.params.get_param("model").resolve(value="no_such_model")
            info["unknown_model"] = None
        except Exception as err:
            info["unknown_model"] = f"{type(err).__name__}: {err}"
    if hasattr(tt, "_expression"):
        info["cron"] = tt._expression
        info["timezone"] = str(tt._timezone)
    for task in dag.tasks:
        item = {"class": type(task).__name__, "upstream": sorted(task.upstream_task_ids),
                "downstream": sorted(task.downstream_task_ids), "retries": task.retries,
                "retry_delay": task.retry_delay.total_seconds(),
                "exponential_backoff": task.retry_exponential_backoff,
                "max_retry_delay": task.max_retry_delay.total_seconds() if task.max_retry_delay else None,
                "depends_on_past": task.depends_on_past, "trigger_rule": str(task.trigger_rule.value),
                "outlets": names(task.outlets), "outlet_uris": uris(task.outlets),
                "on_failure_callback": bool(task.on_failure_callback),
                "execution_timeout": task.execution_timeout.total_seconds() if task.execution_timeout else None}
        if type(task).__name__ == "FeatureJobOperator":
            hook = task._get_hook()
            item["command"] = hook._build_spark_submit_command(task.application)
            item["env"] = task.env_vars
        info["tasks"][task.task_id] = item
    dags[dag_id] = info
stats = [{"file": s.file, "seconds": s.duration.total_seconds(), "dags": s.dag_num} for s in bag.dagbag_stats]
print(json.dumps({"import_errors": bag.import_errors, "seconds": seconds, "stats": stats, "heavy": heavy,
                  "dags": dags}, default=str))
"""

LOCAL_CONN = json.dumps({"conn_type": "spark", "host": "local[*]"})
CLUSTER_CONN = json.dumps({"conn_type": "spark", "host": "spark://10.0.0.5", "port": 7077,
                           "extra": {"deploy-mode": "client"}})


def probe(env: dict[str, str]) -> dict:
    return run_python(PROBE, env, args=[str(DAGS_FOLDER), json.dumps(HEAVY)])


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-local")
    return probe(airflow_env(home, str(home / "lh"), AIRFLOW_CONN_CTR_SPARK=LOCAL_CONN))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-cluster")
    env = airflow_env(home, "s3a://bucket/lake", AIRFLOW_CONN_CTR_SPARK=CLUSTER_CONN, CTR_SPARK_MODE="cluster",
                      CTR_SPARK_PY_FILES="/opt/ctr/ctr_suite.zip", CTR_PYTHON="/opt/ctr/bin/python",
                      CTR_SPARK_CONF='{"spark.executor.memory": "8g"}', CTR_TRAIN_NPROC="8",
                      CTR_TRAIN_MODEL="dien", CTR_RETRIES="3", CTR_CATCHUP="false")
    return probe(env)


def test_dagbag_imports_both_dags_without_errors_within_the_parse_budget(local):
    assert local["import_errors"] == {}
    assert sorted(local["dags"]) == ["ctr_features", "ctr_training"]
    parsed = {Path(s["file"]).name: s for s in local["stats"]}
    assert sorted(parsed) == ["ctr_features.py", "ctr_training.py"]  # .airflowignore: helpers are not parsed
    for name, stat in parsed.items():
        assert stat["dags"] == 1
        assert stat["seconds"] < PARSE_BUDGET_SECONDS, f"{name} took {stat['seconds']:.2f} s to parse"


def test_parsing_loads_neither_torch_nor_pyspark_nor_the_project(local):
    assert local["heavy"] == []


def test_feature_dag_graph_is_exactly_the_daily_chain(local):
    dag = local["dags"]["ctr_features"]
    assert (dag["timetable"], dag["cron"], dag["timezone"]) == ("CronDataIntervalTimetable", "0 0 * * *", "UTC")
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False  # each run's tasks catch up by range
    assert dag["start_date"] == "2026-01-01T00:00:00+00:00"
    assert dag["params"] == {"rank_eval": True, "rebuild": False, "until": None}
    chain = ["validate_events", "build_vocab", "build_samples", "build_rank_eval"]
    tasks = dag["tasks"]
    assert sorted(tasks) == sorted(chain)
    for before, task, after in zip([None, *chain[:-1]], chain, [*chain[1:], None], strict=True):
        assert tasks[task]["upstream"] == ([before] if before else [])
        assert tasks[task]["downstream"] == ([after] if after else [])
        assert tasks[task]["class"] == "FeatureJobOperator"
        assert (tasks[task]["retries"], tasks[task]["retry_delay"], tasks[task]["exponential_backoff"],
                tasks[task]["max_retry_delay"]) == (2, 60.0, True, 1800.0)
    # a task widens its range to the days yesterday's run left missing (features/runs), so no task waits on the past
    assert not any(tasks[t]["depends_on_past"] for t in chain)
    assert {tasks[t]["trigger_rule"] for t in chain} == {"all_success"}
    assert {t: tasks[t]["outlets"] for t in chain} == {
        "validate_events": ["ctr/features/events_clean", "ctr/features/quarantine"],
        "build_vocab": ["ctr/features/vocab"],
        "build_samples": ["ctr/features/samples", "ctr/features/user_state"],
        "build_rank_eval": ["ctr/features/rank_eval", "ctr/features/split"]}


def test_training_dag_is_scheduled_on_the_feature_assets_and_trains_then_evaluates(local):
    features, dag = local["dags"]["ctr_features"], local["dags"]["ctr_training"]
    published = {name for task in features["tasks"].values() for name in task["outlets"]}
    assert dag["timetable"] == "AssetTriggeredTimetable"
    assert dag["schedule_assets"] == ["ctr/features/samples", "ctr/features/split"]
    assert set(dag["schedule_assets"]) <= published
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False
    assert dag["params"] == {"model": "din", "overrides": [], "nproc": 2, "run_id": None}
    # the model is validated when a run is triggered: one of the models with defaults in training/configs
    configs = sorted(p.stem for p in (DAGS_FOLDER.parent / "training" / "configs").glob("*.yaml"))
    assert dag["param_schemas"]["model"]["enum"] == configs and {"din", "dien"} <= set(configs)
    assert dag["unknown_model"].startswith("ParamValidationError") and "no_such_model" in dag["unknown_model"]
    train, evaluate = dag["tasks"]["train"], dag["tasks"]["evaluate"]
    assert sorted(dag["tasks"]) == ["evaluate", "train"]
    assert (train["upstream"], train["downstream"], evaluate["upstream"]) == ([], ["evaluate"], ["train"])
    assert train["on_failure_callback"] and train["execution_timeout"] == 360 * 60
    assert train["outlets"] == ["ctr/training/metrics", "ctr/training/predictions", "ctr/training/runs"]
    for task in (train, evaluate):
        assert (task["retries"], task["retry_delay"], task["exponential_backoff"]) == (2, 60.0, True)


def test_feature_tasks_submit_their_job_with_delta_on_the_embedded_default(local, tmp_path):
    lakehouse = str(Path(local["dags"]["ctr_features"]["tasks"]["validate_events"]["outlet_uris"][0]
                         .removeprefix("file://")).parents[1])
    manifest = feature_spark.delta_classpath_manifest()
    for job, task in local["dags"]["ctr_features"]["tasks"].items():
        cmd = task["command"]
        assert cmd[0] == str(Path(sys.executable).parent / "spark-submit")
        assert cmd[cmd.index("--master") + 1] == "local[*]"
        confs = dict(c.split("=", 1) for c in (cmd[i + 1] for i, a in enumerate(cmd) if a == "--conf"))
        for key, value in feature_spark.DELTA_CONFS.items():
            assert confs[key] == value
        assert confs["spark.sql.session.timeZone"] == "UTC" and confs["spark.driver.memory"] == "6g"
        if manifest.exists():  # resolved by make setup: the jars themselves, no network
            assert cmd[cmd.index("--jars") + 1].split(",") == manifest.read_text().split()
            assert "--packages" not in cmd
        else:
            assert cmd[cmd.index("--packages") + 1] == feature_spark.DELTA_PACKAGE
        app = cmd.index(str(DAGS_FOLDER.parent / "jobs" / f"{job}.py"))
        assert cmd[app + 1:] == ["--lakehouse", lakehouse, "--ds", "{{ ds }}", "--until", "{{ params.until or ds }}"]
        assert task["env"] == {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def test_on_a_cluster_the_tasks_take_master_packages_and_settings_from_configuration(cluster):
    assert cluster["import_errors"] == {} and cluster["heavy"] == []
    features = cluster["dags"]["ctr_features"]
    assert features["catchup"] is False
    for task in features["tasks"].values():
        cmd = task["command"]
        assert cmd[cmd.index("--master") + 1] == "spark://10.0.0.5:7077"
        assert cmd[cmd.index("--deploy-mode") + 1] == "client"
        assert cmd[cmd.index("--packages") + 1] == "io.delta:delta-spark_2.13:4.0.1" and "--jars" not in cmd
        assert cmd[cmd.index("--py-files") + 1] == "/opt/ctr/ctr_suite.zip"
        confs = dict(c.split("=", 1) for c in (cmd[i + 1] for i, a in enumerate(cmd) if a == "--conf"))
        assert confs == {**feature_spark.DELTA_CONFS, "spark.sql.session.timeZone": "UTC",
                         "spark.executor.memory": "8g"}  # nothing of the small machine's tuning
        assert cmd[-6:] == ["--lakehouse", "s3a://bucket/lake", "--ds", "{{ ds }}", "--until",
                            "{{ params.until or ds }}"]
        # the driver runs on the Airflow worker: its interpreter is the configured one, not python3 on the PATH
        assert task["retries"] == 3 and task["env"] == {"PYSPARK_DRIVER_PYTHON": "/opt/ctr/bin/python"}
    assert features["tasks"]["build_samples"]["outlet_uris"] == ["s3a://bucket/lake/features/samples",
                                                                 "s3a://bucket/lake/features/user_state"]
    assert cluster["dags"]["ctr_training"]["params"]["nproc"] == 8
    assert cluster["dags"]["ctr_training"]["params"]["model"] == "dien"


def test_settings_repeat_the_delta_package_and_local_tuning_of_the_session_factory():
    assert ctr_settings.DELTA_PACKAGE == feature_spark.DELTA_PACKAGE
    assert ctr_settings.DELTA_CONFS == feature_spark.DELTA_CONFS
    assert ctr_settings.COMMON_CONF["spark.sql.session.timeZone"] == feature_spark.LOCAL_DEFAULTS[
        "spark.sql.session.timeZone"]
    for key, value in feature_spark.LOCAL_DEFAULTS.items():
        if key in ("spark.sql.warehouse.dir", "spark.sql.session.timeZone"):
            continue
        if key == "spark.driver.extraJavaOptions":  # plus C1-only JIT for the short-lived submitted drivers, with
            # the tiered code cache size (C1 alone would get 48 MB, which Spark's generated code overflows)
            assert ctr_settings.LOCAL_CONF[key].split() == [value, "-XX:TieredStopAtLevel=1",
                                                            "-XX:ReservedCodeCacheSize=240m"]
        else:
            assert ctr_settings.LOCAL_CONF[key] == value, key
    assert ctr_settings.delta_manifest(DAGS_FOLDER.parent) == feature_spark.delta_classpath_manifest()
    assert ctr_settings.ARCHIVE_FLAGS == feature_spark.ARCHIVE_FLAGS  # the class archive's twin helper


def test_local_spark_submits_map_the_class_archive_when_make_setup_built_one(tmp_path, monkeypatch):
    monkeypatch.setenv("CTR_SUITE_CACHE", str(tmp_path))

    def driver_options(env: dict[str, str]) -> str | None:
        return ctr_settings.load_settings(env).spark_conf.get("spark.driver.extraJavaOptions")

    local = ctr_settings.LOCAL_CONF["spark.driver.extraJavaOptions"]
    assert driver_options({}) == local  # none built
    archive = ctr_settings.class_archive(DAGS_FOLDER.parent)
    assert archive == feature_spark.class_archive_path()  # where jobs.class_archive writes it
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"x")
    assert driver_options({}) == f"{local} -XX:SharedArchiveFile={archive}"
    # the user's own driver options get it too, unless they decide about class sharing themselves
    assert driver_options({"CTR_SPARK_CONF": '{"spark.driver.extraJavaOptions": "-Da=b"}'}) == \
        f"-Da=b -XX:SharedArchiveFile={archive}"
    assert driver_options({"CTR_SPARK_CONF": '{"spark.driver.extraJavaOptions": "-Xshare:off"}'}) == "-Xshare:off"
    assert driver_options({"CTR_SPARK_MODE": "cluster"}) is None  # a cluster's drivers have their own JDK and jars


def test_the_small_presets_have_spark_interpret_expressions_and_the_big_ones_compile_them():
    for preset in ("tiny", "small"):
        conf = ctr_settings.load_settings(pipeline.preset_env(preset, {})).spark_conf
        assert conf["spark.sql.codegen.factoryMode"] == "NO_CODEGEN"
        assert conf["spark.driver.extraJavaOptions"] == ctr_settings.with_class_archive(
            ctr_settings.LOCAL_CONF["spark.driver.extraJavaOptions"], DAGS_FOLDER.parent)
    for preset in ("medium", "large"):
        conf = ctr_settings.load_settings(pipeline.preset_env(preset, {})).spark_conf
        assert "spark.sql.codegen.factoryMode" not in conf
    assert ctr_settings.load_settings(pipeline.preset_env("large", {})).spark_conf[
        "spark.driver.extraJavaOptions"] == ctr_settings.with_class_archive("-Duser.timezone=UTC",
                                                                            DAGS_FOLDER.parent)  # C2 back for long jobs
    # the user's own CTR_SPARK_CONF wins over the preset's
    assert pipeline.preset_env("small", {"CTR_SPARK_CONF": '{"spark.executor.memory": "8g"}'}) == {}


def test_settings_come_from_the_environment_over_the_settings_file_over_the_defaults(tmp_path):
    file = tmp_path / "ctr.toml"
    file.write_text('lakehouse = "s3a://b/lake"\ntrain_nproc = 4\nspark_mode = "cluster"\n'
                    'train_env = { CUDA_VISIBLE_DEVICES = "0,1,2,3" }\ntorchrun = ["torchrun"]\n')
    settings = ctr_settings.load_settings({"CTR_AIRFLOW_SETTINGS": str(file), "CTR_TRAIN_NPROC": "8",
                                           "CTR_CATCHUP": "false"})
    assert (settings.lakehouse, settings.train_nproc, settings.catchup) == ("s3a://b/lake", 8, False)
    assert settings.train_env == {"CUDA_VISIBLE_DEVICES": "0,1,2,3"} and settings.torchrun == ("torchrun",)
    assert settings.spark_packages == ctr_settings.DELTA_PACKAGE
    assert settings.spark_env == {"PYSPARK_DRIVER_PYTHON": sys.executable}  # the driver runs here (client mode)
    default = ctr_settings.load_settings({})
    assert default.lakehouse == str(DAGS_FOLDER.parent / "lakehouse") and default.spark_mode == "local"
    assert default.torchrun == (sys.executable, "-m", "torch.distributed.run") and default.train_nproc == 2
    assert dt.date.fromisoformat(default.start_date) == dt.date(2026, 1, 1)
    # training needs the lakehouse as a file system path (its checkpoints are files): by default the same one
    assert default.train_lakehouse == default.lakehouse and settings.train_lakehouse == "s3a://b/lake"
    mounted = ctr_settings.load_settings({"CTR_LAKEHOUSE": "s3a://b/lake", "CTR_TRAIN_LAKEHOUSE": "/mnt/lake/"})
    assert (mounted.lakehouse, mounted.train_lakehouse) == ("s3a://b/lake", "/mnt/lake")
    file.write_text('lakehous = "typo"\n')
    with pytest.raises(ctr_settings.SettingsError, match="unknown settings \\['lakehous'\\]"):
        ctr_settings.load_settings({"CTR_AIRFLOW_SETTINGS": str(file)})
    with pytest.raises(ctr_settings.SettingsError, match="CTR_CATCHUP"):
        ctr_settings.load_settings({"CTR_CATCHUP": "maybe"})
