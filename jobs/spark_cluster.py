"""A Spark standalone cluster on loopback: one master and N workers, for tests and for a local trial of cluster mode.

    python -m jobs.spark_cluster [--workers 2] [--cores-per-worker 1] [--memory-per-worker 2g]

runs in the foreground until Ctrl-C and prints the master URL and a spark-submit command for it. In code::

    with LocalStandaloneCluster(workers=2) as cluster:
        subprocess.run(["spark-submit", "--master", cluster.master_url, "--conf",
                        f"spark.pyspark.python={cluster.executor_python}", ...])
        cluster.kill_worker(0)        # SIGKILL the worker JVM and its executor JVMs

The daemons are the pyspark installation's own (``bin/spark-class`` with ``deploy.master.Master`` and
``deploy.worker.Worker``: pip's pyspark has no ``sbin/start-*.sh``), each worker a JVM that starts its own executor
JVMs. Every port
(RPC and web UI) is a free one chosen at start, never the fixed 7077, so two clusters can run side by side, and
everything binds to 127.0.0.1 only.

Executors do not get the project: the project is installed in the venv in editable mode, so an executor running the
venv's interpreter would import ``features`` without ``--py-files`` and hide exactly the fault a real cluster has.
The workers run :func:`make_executor_python` instead, an interpreter that sees the venv's third-party packages
(pyspark, numpy, pyarrow, ...) but not the project, and the executors' working folders are outside the project.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.spark import LOCAL_DEFAULTS

LOOPBACK = "127.0.0.1"
_FAST_JIT = "-Duser.timezone=UTC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"
#: confs for jobs submitted to a cluster on one small machine (this one's tests, its benchmark, a local trial): the
#: embedded default's tuning (features.spark.LOCAL_DEFAULTS: few shuffle and Delta snapshot partitions, no UI),
#: C1-only JIT in the driver and the executors, short-lived JVMs running many small queries (as
#: ctr_settings.LOCAL_CONF does for the driver), and no locality wait: with one core per executor, a task waiting
#: up to 3 s for the executor that caches its partition is idle time
SMALL_MACHINE_CONF = {k: v for k, v in LOCAL_DEFAULTS.items()
                      if k not in ("spark.driver.memory", "spark.sql.warehouse.dir")} | {
    "spark.driver.extraJavaOptions": _FAST_JIT, "spark.executor.extraJavaOptions": _FAST_JIT,
    "spark.executor.memory": "1g", "spark.locality.wait": "0s", "spark.log.level": "WARN"}
#: the daemons' environment: these are passed on, nothing else (no PYTHONPATH, SPARK_*, CTR_* of the caller)
_PASSED_ENV = ("PATH", "HOME", "JAVA_HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")


def spark_home() -> Path:
    """The pyspark installation, which holds ``bin/spark-class`` and ``jars/``."""
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server that a child process binds a few seconds later.

    Picked below the kernel's ephemeral range (Linux: 32768 and up) where that range can be read: ports the OS
    hands to other processes' outgoing connections come from that range, and one such connection taking the port in
    the meantime made a two-node torchrun test fail with EADDRINUSE. Below it only an explicit bind can take it.
    """
    try:
        ephemeral_low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    rng = random.SystemRandom()
    for _ in range(100 if ephemeral_low > LOWEST_PORT else 0):
        port = rng.randrange(LOWEST_PORT, ephemeral_low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue  # in use (a listening service, or TIME_WAIT): try another
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no readable range: the OS picks
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def make_executor_python(folder: Path) -> Path:
    """An interpreter with this venv's third-party packages and without the project; returns its ``python``.

    ``python -m venv --without-pip`` (about a second), plus one ``.pth`` line naming this venv's site-packages. A
    folder added by a ``.pth`` line does not get its own ``.pth`` files processed, so the editable install's finder
    (``__editable__.ctr_suite-*.pth``) never runs there, while plain packages import as usual.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "ctr_suite_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@dataclass
class _Daemon:
    name: str
    process: subprocess.Popen
    log: Path
    port: int
    webui_port: int


class ClusterError(RuntimeError):
    """The cluster did not come up (the message ends with the daemons' log tails)."""


class LocalStandaloneCluster:
    """One master and ``workers`` workers on 127.0.0.1, each worker offering ``cores_per_worker`` cores.

    ``start()`` (or ``with``) returns once the master lists every worker ALIVE. ``stop()`` ends every process and
    removes the temporary folder (logs, work folders, the executor interpreter); it also runs at interpreter exit if
    the owner forgot. ``work_root`` keeps that folder somewhere else (it is removed all the same).
    """

    def __init__(self, workers: int = 2, cores_per_worker: int = 1, memory_per_worker: str = "2g", *,
                 work_root: str | Path | None = None, start_timeout: float = 120.0):
        if workers < 1 or cores_per_worker < 1:
            raise ValueError("a cluster needs at least one worker with at least one core")
        self.workers = workers
        self.cores_per_worker = cores_per_worker
        self.memory_per_worker = memory_per_worker
        self.start_timeout = start_timeout
        self._work_root = work_root
        self.root: Path | None = None
        self.executor_python: Path | None = None
        self._master: _Daemon | None = None
        self._workers: list[_Daemon | None] = []

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> LocalStandaloneCluster:
        if self._master is not None:
            raise RuntimeError("the cluster is already started")
        self.root = Path(tempfile.mkdtemp(prefix="ctr-spark-cluster-", dir=self._work_root))
        atexit.register(self.stop)
        try:
            self.executor_python = make_executor_python(self.root / "executor-python")
            port, webui = free_port(), free_port()
            self._master = self._launch("master", ["org.apache.spark.deploy.master.Master", "--host", LOOPBACK,
                                                   "--port", str(port), "--webui-port", str(webui)], port, webui)
            self._wait(lambda state: state.get("status") == "ALIVE", "the master")
            self._workers = [None] * self.workers
            for index in range(self.workers):
                self.start_worker(index, wait=False)
            self._wait(lambda state: self.alive_workers(state) == self.workers, f"{self.workers} workers ALIVE")
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self, index: int, *, wait: bool = True) -> None:
        """Start worker ``index`` (again, after :meth:`kill_worker`); by default wait until the master has it."""
        assert self.root is not None and self.executor_python is not None, "start the cluster first"
        if self._workers[index] is not None and self._workers[index].process.poll() is None:
            raise RuntimeError(f"worker {index} is running")
        work_dir = self.root / f"worker-{index}"
        work_dir.mkdir(exist_ok=True)
        port, webui = free_port(), free_port()
        self._workers[index] = self._launch(
            f"worker-{index}",
            ["org.apache.spark.deploy.worker.Worker", self.master_url, "--host", LOOPBACK, "--port", str(port),
             "--webui-port", str(webui), "--cores", str(self.cores_per_worker), "--memory", self.memory_per_worker,
             "--work-dir", str(work_dir)], port, webui, cwd=work_dir)
        if wait:
            self._wait(lambda state: self.worker_state(index, state) == "ALIVE", f"worker {index} ALIVE")

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index`` and the executor JVMs it started (its process group), as a machine loss would."""
        daemon = self._workers[index]
        if daemon is None or daemon.process.poll() is not None:
            raise RuntimeError(f"worker {index} is not running")
        _kill_group(daemon.process, signal.SIGKILL)

    def stop(self) -> None:
        """End every process (workers first), then remove the temporary folder. Safe to call twice."""
        for daemon in [*self._workers, self._master]:
            if daemon is not None and daemon.process.poll() is None:
                _kill_group(daemon.process, signal.SIGTERM, grace=10.0)
        self._workers, self._master = [], None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        atexit.unregister(self.stop)

    def running(self) -> bool:
        """Whether the master and every worker are up (a killed worker counts as down until started again)."""
        daemons = [self._master, *self._workers]
        return bool(self._workers) and all(d is not None and d.process.poll() is None for d in daemons)

    def __enter__(self) -> LocalStandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the master reports -----------------------------------------------------------------------------------
    @property
    def master_url(self) -> str:
        assert self._master is not None, "start the cluster first"
        return f"spark://{LOOPBACK}:{self._master.port}"

    @property
    def master_webui_url(self) -> str:
        assert self._master is not None, "start the cluster first"
        return f"http://{LOOPBACK}:{self._master.webui_port}"

    # -- what a client needs ----------------------------------------------------------------------------------------
    @property
    def spark_submit(self) -> str:
        return str(spark_home() / "bin" / "spark-submit")

    def client_conf(self) -> dict[str, str]:
        """Confs of every submit to this cluster: the driver and the executors run the interpreter without the
        project (spark.pyspark.python wins over any PYSPARK_PYTHON), so the bundle must bring it."""
        assert self.executor_python is not None, "start the cluster first"
        return {"spark.pyspark.python": str(self.executor_python)}

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a spark-submit to this cluster: ``base`` (default this process's) without PYTHONPATH
        (it would hand the driver the project), with SPARK_HOME and loopback as the driver's address."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k != "PYTHONPATH"}
        return env | {"SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": LOOPBACK}

    def state(self) -> dict[str, Any]:
        """The master's JSON (``/json/``): workers and their state, active and completed applications."""
        with urllib.request.urlopen(f"{self.master_webui_url}/json/", timeout=5) as response:
            return json.load(response)

    def alive_workers(self, state: dict[str, Any] | None = None) -> int:
        state = self.state() if state is None else state
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")

    def worker_state(self, index: int, state: dict[str, Any] | None = None) -> str | None:
        """ALIVE, DEAD, ... of the current incarnation of worker ``index`` in the master's view (None: not known)."""
        daemon = self._workers[index]
        state = self.state() if state is None else state
        for worker in state.get("workers", []):
            if daemon is not None and worker.get("port") == daemon.port:
                return worker.get("state")
        return None

    def worker_of_executor(self, app_id: str, executor_id: str) -> int | None:
        """The index of the running worker that hosts an application's executor (from the workers' own JSON)."""
        for index, daemon in enumerate(self._workers):
            if daemon is None or daemon.process.poll() is not None:
                continue
            with urllib.request.urlopen(f"http://{LOOPBACK}:{daemon.webui_port}/json/", timeout=5) as response:
                executors = json.load(response).get("executors", [])
            if any(e.get("appid") == app_id and str(e.get("id")) == executor_id for e in executors):
                return index
        return None

    def daemon_logs(self) -> dict[str, str]:
        """Each daemon's output so far (master, worker-0, ...)."""
        return {d.name: d.log.read_text(errors="replace") for d in [self._master, *self._workers]
                if d is not None and d.log.exists()}

    # -- internals -------------------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
        env.update({
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": LOOPBACK,  # bind and advertise loopback only
            "SPARK_LOCAL_DIRS": str(self.root / "local"),  # shuffle and spill files
            "SPARK_LOG_DIR": str(self.root / "logs"),
            "PYSPARK_PYTHON": str(self.executor_python),
            "SPARK_DAEMON_MEMORY": "512m",  # the master's and workers' own heap (executors get theirs per app)
        })
        return env

    def _launch(self, name: str, args: list[str], port: int, webui_port: int, *, cwd: Path | None = None) -> _Daemon:
        assert self.root is not None
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            # a session of its own: kill_worker/stop signal the whole group, so a worker's executor JVMs go with it
            process = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], env=self._env(),
                                       cwd=cwd or self.root, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=_terminate_with_parent)
        return _Daemon(name, process, log, port, webui_port)

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            dead = [d.name for d in [self._master, *self._workers] if d is not None and d.process.poll() is not None]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}\n{self._log_tails()}")
            try:
                if ready(self.state()):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass  # the web UI is not up yet
            time.sleep(0.5)
        raise ClusterError(f"timed out after {self.start_timeout:.0f} s waiting for {what}\n{self._log_tails()}")

    def _log_tails(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {name} ---\n{text[-chars:]}" for name, text in self.daemon_logs().items())


def _terminate_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the thread that started it dies, so a killed test run (a CI
    timeout) does not leave daemons behind that atexit could not stop; a worker ends its executors on SIGTERM."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _kill_group(process: subprocess.Popen, sig: signal.Signals, *, grace: float = 10.0) -> None:
    try:
        os.killpg(process.pid, sig)  # the pid is the group id: each daemon leads its own session
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    try:  # executors the daemon started may outlive it by a moment: the group goes entirely
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.spark_cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores-per-worker", type=int, default=1)
    parser.add_argument("--memory-per-worker", default="2g", help="memory each worker offers its executors")
    args = parser.parse_args(argv)
    from features.spark import ivy_dir
    from jobs.bundle import DEFAULT_OUT, format_command, submit_command

    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the cluster as Ctrl-C does
    cluster = LocalStandaloneCluster(args.workers, args.cores_per_worker, args.memory_per_worker)
    with cluster:
        # Delta's package from the project's Ivy cache (`make setup` resolved it there): no download
        example = submit_command("build_samples", master=cluster.master_url, lakehouse=str(Path("lakehouse").resolve()),
                                 ds="2026-01-01", bundle_dir=DEFAULT_OUT, spark_submit=cluster.spark_submit,
                                 conf=cluster.client_conf() | {"spark.jars.ivy": str(ivy_dir())})
        print(f"master   {cluster.master_url}   (web UI {cluster.master_webui_url})\n"
              f"workers  {args.workers} x {args.cores_per_worker} core(s), {args.memory_per_worker}; executors run "
              f"{cluster.executor_python} (no project: it comes with --py-files)\n"
              f"logs     {cluster.root}\n\n"
              "after `make bundle`, submit a day's jobs in order (validate_events, build_vocab, build_samples), e.g.:\n"
              f"SPARK_LOCAL_IP={LOOPBACK} {format_command(example)}\n\nCtrl-C stops the cluster.", flush=True)
        try:
            while cluster.running():
                time.sleep(1)
            print("a daemon exited; stopping the cluster", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("stopping the cluster", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
