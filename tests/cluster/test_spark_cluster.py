"""The feature jobs on a real Spark standalone cluster on loopback (issue 12: parts 2, 3 and the Spark fault of 5).

One cluster for the module (``jobs.spark_cluster``: a master and two workers of one core each, every port picked
free, bound to 127.0.0.1; the executors' Python lacks the project). One seeded synthetic log (60 users, 800 items,
2 days), copied to a local and a cluster lakehouse:

* local: validate_events -> build_vocab -> build_samples for both days (``--until``) through the jobs' ``main`` in
  this process (the test run's ``local[2]`` session);
* cluster, day 1: each job spark-submitted directly with the bundle (``--py-files``, the bundle's applications,
  driver and executors on the interpreter without the project) and the Delta jars; one worker is SIGKILLed in the
  middle of ``build_samples`` (worker JVM and executor JVM), whose remaining tasks then run on the other worker;
* cluster, day 2: with the killed worker started again, the ``ctr_features`` DAG run for the day with real Airflow,
  its SparkSubmitOperator tasks sent to the cluster by the Spark connection (``CTR_SPARK_MODE=cluster``:
  ``--packages`` Delta, resolved from the project's Ivy cache), with the venv off the Airflow process's PATH.

Every feature table of both days must then hold the same rows on both sides, vocabulary indices included.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from features.spark import ivy_dir, resolve_delta_jars
from features.tableio import Lakehouse
from jobs import build_samples, build_vocab, generate_synthetic, pipeline, validate_events
from jobs.bundle import build_bundle, submit_command
from jobs.spark_cluster import LOOPBACK, SMALL_MACHINE_CONF, LocalStandaloneCluster, free_port
from tests.airflow.conftest import airflow_env

pytestmark = pytest.mark.cluster

DAYS = ("2026-01-01", "2026-01-02")
CHAIN = {"validate_events": validate_events, "build_vocab": build_vocab, "build_samples": build_samples}
#: every table the three jobs write, except features/runs (one row per run, with timings)
TABLES = ("features/events_clean", "features/quarantine", "features/vocab", "features/vocab_pending",
          "features/vocab_days", "features/samples", "features/user_state")
PROBE_APP = Path(__file__).with_name("executor_imports_app.py")


@pytest.fixture(scope="module")
def cluster():
    with LocalStandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="2g") as running:
        yield running


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def raw(spark, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw") / "lakehouse"
    started = time.monotonic()
    assert generate_synthetic.main(["--lakehouse", str(root), "--users", "60", "--items", "800", "--days", "2",
                                    "--seed", "42", "--start-date", DAYS[0], "--corrupt-fraction", "0.001"]) == 0
    print(f"generate: {time.monotonic() - started:.1f} s", flush=True)
    return root


@pytest.fixture(scope="module")
def local(spark, raw, tmp_path_factory) -> Lakehouse:
    root = tmp_path_factory.mktemp("local") / "lakehouse"
    shutil.copytree(raw, root)
    started = time.monotonic()
    for job in CHAIN.values():
        assert job.main(["--lakehouse", str(root), "--ds", DAYS[0], "--until", DAYS[1]]) == 0
    print(f"local chain, both days: {time.monotonic() - started:.1f} s", flush=True)
    return Lakehouse(root)


def submit(cluster, command: list[str], cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(command, env=cluster.client_env(), cwd=cwd, stdin=subprocess.DEVNULL, text=True, **popen)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def run_killing_a_worker(cluster, process: subprocess.Popen, ui_port: int, *, timeout: float = 900,
                         aim_seconds: float = 60) -> dict:
    """Watch a running build_samples through its driver's REST API and SIGKILL one worker in its middle.

    Once its first Delta write has started (the day's inputs are read and cached on the executors by then), watch
    the running jobs and the executors closely for up to ``aim_seconds`` and kill the worker of the first executor
    seen running a task (tasks here last milliseconds, so that task may still finish first; the first executor's
    worker if none is caught). Returns what was killed and how many of the application's jobs succeeded after the
    kill, once the submit has ended."""
    api = f"http://{LOOPBACK}:{ui_port}/api/v1/applications"
    killed: dict = {}
    aim_until = None
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            app = get_json(api)[0]["id"]
            if killed:
                jobs = get_json(f"{api}/{app}/jobs")
                killed["jobs_after"] = sum(1 for job in jobs
                                           if job["jobId"] > killed["last_job"] and job["status"] == "SUCCEEDED")
            elif aim_until is None:
                if any(job["name"].startswith("save at") for job in get_json(f"{api}/{app}/jobs")):
                    aim_until = time.monotonic() + aim_seconds
            else:
                running = get_json(f"{api}/{app}/jobs?status=running")
                executors = [e for e in get_json(f"{api}/{app}/executors") if e["id"] != "driver"]
                busy = [e["id"] for e in executors if e["activeTasks"] > 0]
                if (busy and any(job["numActiveTasks"] > 0 for job in running)) or time.monotonic() > aim_until:
                    executor = busy[0] if busy else executors[0]["id"]
                    worker = cluster.worker_of_executor(app, executor)
                    cluster.kill_worker(worker)
                    killed = {"app": app, "worker": worker, "executor": executor, "busy": bool(busy),
                              "jobs_after": 0, "last_job": max(job["jobId"] for job in get_json(f"{api}/{app}/jobs"))}
                continue  # aiming: poll again at once
        except (urllib.error.URLError, ConnectionError, TimeoutError, IndexError, KeyError, json.JSONDecodeError):
            pass  # the driver's UI is not up yet, or already down
        time.sleep(0.1)
    process.wait(timeout=max(1.0, deadline - time.monotonic()))
    return killed


def test_executors_import_the_project_only_from_the_bundle(cluster, bundle, tmp_path):
    """Executors do not have the project: a task that imports it fails without --py-files and runs with the bundle."""
    conf = [arg for key, value in {**cluster.client_conf(), **SMALL_MACHINE_CONF, "spark.task.maxFailures": "1"}.items()
            for arg in ("--conf", f"{key}={value}")]
    base = [cluster.spark_submit, "--master", cluster.master_url, *conf]
    without = submit(cluster, [*base, str(PROBE_APP)], tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = without.communicate(timeout=300)
    assert without.returncode != 0
    assert "ModuleNotFoundError: No module named 'features'" in err

    with_bundle = submit(cluster, [*base, "--py-files", str(bundle.zip_path), str(PROBE_APP)], tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = with_bundle.communicate(timeout=300)
    assert with_bundle.returncode == 0, err[-4000:]
    found = json.loads(out.strip().splitlines()[-1])["executors"]
    assert len(found) == 4
    from features.schemas import RAW_EVENTS

    for task in found:
        assert task["python"] == str(cluster.executor_python)
        assert "ctr_suite_jobs.zip/features/schemas.py" in task["module"]  # the executor's copy of the bundle
        assert task["raw_events"] == RAW_EVENTS.fieldNames()


@pytest.fixture(scope="module")
def on_cluster(cluster, bundle, raw, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("cluster")
    root = work / "lakehouse"
    shutil.copytree(raw, root)
    jars = ",".join(resolve_delta_jars())  # the jars `make setup` resolved: no network, no Ivy resolution
    record: dict = {"lakehouse": Lakehouse(root)}

    def command(job: str, **conf: str) -> list[str]:
        return submit_command(job, master=cluster.master_url, lakehouse=str(root), ds=DAYS[0],
                              bundle_dir=bundle.zip_path.parent, spark_submit=cluster.spark_submit, jars=jars,
                              conf={**SMALL_MACHINE_CONF, **cluster.client_conf(), **conf})

    # day 1, each job spark-submitted directly
    for job in ("validate_events", "build_vocab"):
        started = time.monotonic()
        done = subprocess.run(command(job), env=cluster.client_env(), cwd=work, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{job}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        print(f"cluster {job} {DAYS[0]}: {time.monotonic() - started:.1f} s", flush=True)
    started = time.monotonic()
    ui_port = free_port()
    log = work / "build_samples.log"
    with log.open("w") as out:
        process = submit(cluster, command("build_samples", **{"spark.ui.enabled": "true",
                                                               "spark.ui.port": str(ui_port)}), work,
                         stdout=out, stderr=subprocess.STDOUT)
        record["killed"] = run_killing_a_worker(cluster, process, ui_port)
    record["build_samples"] = {"returncode": process.returncode, "log": log.read_text()}
    lost = {what: record["build_samples"]["log"].count(what) for what in ("Lost task", "No more replicas")}
    print(f"cluster build_samples {DAYS[0]}, a worker killed ({record['killed']}, {lost}): "
          f"{time.monotonic() - started:.1f} s", flush=True)
    record["killed_worker_state"] = cluster.worker_state(record["killed"]["worker"]) if record["killed"] else None
    record["apps_before_airflow"] = cluster.state()["completedapps"]

    # day 2 through the feature DAG with real Airflow; the Spark connection points at the cluster
    if record["killed"]:
        cluster.start_worker(record["killed"]["worker"])
    home = work / "airflow"
    venv_bin = Path(sys.executable).parent
    env = airflow_env(home, str(root), retries=0, **{
        "AIRFLOW_CONN_CTR_SPARK": json.dumps({"conn_type": "spark", "host": f"spark://{LOOPBACK}",
                                              "port": int(cluster.master_url.rsplit(":", 1)[1])}),
        "CTR_SPARK_MODE": "cluster",
        "CTR_SPARK_PY_FILES": str(bundle.zip_path),
        # --packages Delta (cluster mode) resolves from the project's Ivy cache, where `make setup` put it
        "CTR_SPARK_CONF": json.dumps({**SMALL_MACHINE_CONF, **cluster.client_conf(), "spark.jars.ivy": str(ivy_dir())}),
        "CTR_SPARK_ENV": json.dumps({"SPARK_LOCAL_IP": LOOPBACK}),
        # as on an Airflow worker started by its full path: the venv is not on the PATH (the tasks must not need it)
        "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != venv_bin),
    })
    started = time.monotonic()
    airflow_log = home / "logs" / "cluster.log"
    airflow_log.parent.mkdir(parents=True, exist_ok=True)
    pipeline.migrate_airflow_db(env, airflow_log)
    record["airflow"] = pipeline.execute_plan(
        [{"dag_id": "ctr_features", "logical_date": DAYS[1], "label": "day 2 on the cluster",
          "conf": {"rank_eval": False}}], env, airflow_log)
    record["airflow_log"] = airflow_log
    print(f"cluster {DAYS[1]} through Airflow: {time.monotonic() - started:.1f} s", flush=True)
    record["apps_after_airflow"] = cluster.state()["completedapps"]
    return record


def snapshot(lakehouse: Lakehouse) -> dict[str, list[str]]:
    """Every table's rows, order-free (each row's repr, sorted)."""
    return {table: sorted(map(repr, lakehouse.read_arrow(table).to_pylist())) for table in TABLES}


def test_a_worker_killed_in_the_middle_of_build_samples_does_not_stop_it(on_cluster):
    killed, run = on_cluster["killed"], on_cluster["build_samples"]
    assert killed, f"build_samples ended before its first write was seen\n{run['log'][-4000:]}"
    assert run["returncode"] == 0, run["log"][-6000:]
    # the kill happened while the application ran: the driver lost that executor, the master the worker, and the
    # application went on to finish jobs after it (their tasks on the other worker's executor)
    assert f"Lost executor {killed['executor']}" in run["log"]
    assert on_cluster["killed_worker_state"] == "DEAD"
    assert killed["jobs_after"] > 0
    # and work of the lost executor had to be redone on the other one: the tasks it was running (retried), or the
    # cached partitions of the day's frames it held (recomputed from their lineage)
    assert "Lost task" in run["log"] or "No more replicas available for rdd_" in run["log"]
    assert "wrote features/samples version" in run["log"]
    # the day's three direct submits were applications of the cluster (the app names are the jobs' own)
    apps = [(app["name"], app["state"]) for app in on_cluster["apps_before_airflow"] if app["name"] in CHAIN]
    assert sorted(apps) == [(job, "FINISHED") for job in sorted(CHAIN)]


def test_day_2_ran_through_the_feature_dag_on_the_cluster(on_cluster):
    results = on_cluster["airflow"]
    tail = on_cluster["airflow_log"].read_text()[-6000:] if on_cluster["airflow_log"].exists() else ""
    assert len(results) == 1 and results[0]["state"] == "success", f"{results}\n{tail}"
    assert {t: v["state"] for t, v in results[0]["tasks"].items()} == {
        "validate_events": "success", "build_vocab": "success", "build_samples": "success",
        "build_rank_eval": "skipped"}
    # each task's spark-submit was an application of the cluster's master, which saw it finish
    before = {app["id"] for app in on_cluster["apps_before_airflow"]}
    new = [app for app in on_cluster["apps_after_airflow"] if app["id"] not in before]
    assert sorted((app["name"], app["state"]) for app in new) == [
        ("build_samples", "FINISHED"), ("build_vocab", "FINISHED"), ("validate_events", "FINISHED")]
    runs = on_cluster["lakehouse"].read_arrow("features/runs", columns=["job", "ds", "status"]).to_pylist()
    assert sorted((r["job"], str(r["ds"]), r["status"]) for r in runs) == sorted(
        (job, day, "succeeded") for job in CHAIN for day in DAYS)


def test_the_cluster_tables_equal_the_local_ones(local, on_cluster):
    cluster_tables, local_tables = snapshot(on_cluster["lakehouse"]), snapshot(local)
    for table in TABLES:
        assert cluster_tables[table] == local_tables[table], table
    # not vacuous: samples of both days, rows quarantined (the log has planted corruptions), a vocabulary
    for table in ("features/samples", "features/events_clean"):
        days = local.read_arrow(table, columns=["ds"]).column(0).to_pylist()
        assert sorted({str(d) for d in days}) == list(DAYS), table
    assert len(local_tables["features/quarantine"]) > 0 and len(local_tables["features/vocab"]) > 100


def test_free_ports_come_from_below_the_ephemeral_range_and_can_be_bound(monkeypatch, tmp_path):
    from jobs import spark_cluster

    low = int(spark_cluster.EPHEMERAL_RANGE.read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(spark_cluster.LOWEST_PORT <= port < low for port in ports)  # no outgoing connection can take them
    for port in ports:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, port))
    monkeypatch.setattr(spark_cluster, "EPHEMERAL_RANGE", tmp_path / "missing")  # not Linux: the OS picks one
    with socket.socket() as sock:
        sock.bind((LOOPBACK, free_port()))
