"""Training across two torchrun nodes on loopback (issue 12: part 4 and the training fault of part 5).

Each node is its own torchrun agent, started separately as it would be on its own machine: ``--nnodes=2
--nproc_per_node=1``, c10d rendezvous at 127.0.0.1 on a port picked free for the test, a rendezvous id per launch,
``--max-restarts=0``, gloo on CPU bound to the loopback interface. Node 0 is at 127.0.0.1, node 1 at 127.0.0.2
(both loopback): c10d orders the nodes by address, so rank 0 is on node 0 (with one address for both it would
follow the agents' process ids). Both nodes see the same lakehouse (on a real cluster: shared storage). The
embedding tables are sharded table-wise over the two ranks, one per node.

The reference is the single-node ``torchrun --standalone --nproc_per_node=2`` run with the same settings on the same
lakehouse (the same files in the same order), with one torch thread per rank in both (``train.cpu_threads=1``: the
thread count changes the order of floating-point sums; with it equal, the runs agree to the bit). A node is killed
as a machine would die: SIGKILL to its agent and its worker (torchrun starts workers in sessions of their own, so
the agent's process group alone would miss them).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from features.tableio import Lakehouse
from jobs.spark_cluster import free_port
from tests.training.test_train_e2e import COMMON, SPEC, metrics, predictions, runs, torchrun
from training.testing import write_training_lakehouse

pytestmark = pytest.mark.cluster

SETTINGS = [*COMMON, "--set", "train.cpu_threads=1"]  # two epochs of 9 steps, a checkpoint every 3
#: a rank whose peer stops answering without closing its connections fails after this long, not torch's 30 minutes
COLLECTIVE_TIMEOUT_S = "120"
NODE_EXIT_S = 60  # a surviving node learns of its peer's death at its next collective: it is out within seconds
TIMINGS = ("samples_per_second", "peak_rss_mib")  # measurements of the process, not results


@dataclass
class Node:
    agent: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the agent and its workers at once, as when the machine dies."""
        try:
            root = psutil.Process(self.agent.pid)
            processes = [*root.children(recursive=True), root]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.agent.wait(timeout=30)


def node_command(lakehouse: Lakehouse, endpoint: str, rdzv_id: str, node: int, *train_args: str) -> list[str]:
    """Node ``node``'s torchrun command: the same on every node but for the node's own address."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}",
            # both agents are on the endpoint's host here: say which one hosts the store instead of letting them
            # race for the port (on separate machines the one on the endpoint's host does)
            f"--rdzv-conf=is_host={int(node == 0)}",
            f"--local-addr=127.0.0.{node + 1}", "--max-restarts=0",
            "-m", "training.train", "--lakehouse", lakehouse.root, *train_args]


class TwoNodes:
    """Two torchrun agents started separately (one per node), with their output in ``<folder>/<name>-nodeN.log``."""

    def __init__(self, lakehouse: Lakehouse, folder: Path, name: str, *train_args: str):
        endpoint, env = f"127.0.0.1:{free_port()}", {
            **os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
            "CTR_TRAIN_COLLECTIVE_TIMEOUT_S": COLLECTIVE_TIMEOUT_S}
        self.nodes = []
        for node in range(2):
            log = folder / f"{name}-node{node}.log"
            with log.open("w") as out:
                agent = subprocess.Popen(node_command(lakehouse, endpoint, name, node, *train_args), stdout=out,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.nodes.append(Node(agent, log))

    def __enter__(self) -> TwoNodes:
        return self

    def __exit__(self, *exc) -> None:
        for node in self.nodes:  # a failed assertion must not leave agents behind
            if node.agent.poll() is None:
                node.kill()

    def wait(self, timeout: float = 240) -> list[int]:
        deadline = time.monotonic() + timeout
        return [node.agent.wait(timeout=max(1.0, deadline - time.monotonic())) for node in self.nodes]

    def output(self) -> str:
        return "\n".join(f"--- node {i}\n{node.output()[-6000:]}" for i, node in enumerate(self.nodes))

    def assert_rank0_on_node0(self, run_id: str) -> str:
        """Node 0's output, where rank 0's log lines must be (and only there)."""
        logged = [f"[train {run_id}] " in node.output() for node in self.nodes]
        assert logged == [True, False], self.output()
        return self.nodes[0].output()

    def wait_for_a_checkpoint(self, lakehouse: Lakehouse, run_id: str, timeout: float = 240) -> None:
        """Until the run has a complete checkpoint (DCP writes ``.metadata`` last)."""
        folder = Path(lakehouse.path("training/checkpoints")) / run_id
        deadline = time.monotonic() + timeout
        while not any(folder.glob("step-*/.metadata")):
            assert all(node.agent.poll() is None for node in self.nodes), "a node ended early\n" + self.output()
            assert time.monotonic() < deadline, f"no checkpoint in {timeout} s\n" + self.output()
            time.sleep(0.02)


def assert_same_results(lakehouse: Lakehouse, expected_run: str, got_run: str) -> None:
    expected, got = metrics(lakehouse, expected_run), metrics(lakehouse, got_run)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        if key[3] not in TIMINGS:
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    expected_scores, got_scores = predictions(lakehouse, expected_run), predictions(lakehouse, got_run)
    assert expected_scores.keys() == got_scores.keys()
    ids = sorted(expected_scores)
    np.testing.assert_allclose([got_scores[i] for i in ids], [expected_scores[i] for i in ids], rtol=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Lakehouse:
    """A lakehouse holding the single-node, two-process run ``single`` that the two-node runs must equal."""
    lakehouse = Lakehouse(tmp_path_factory.mktemp("two-node") / "lakehouse")
    write_training_lakehouse(lakehouse, SPEC)
    done = torchrun(lakehouse, "--model", "din", "--run-id", "single", *SETTINGS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return lakehouse


def test_two_nodes_train_like_one_node_with_two_processes(reference, tmp_path):
    lakehouse = reference
    with TwoNodes(lakehouse, tmp_path, "two-node", "--model", "din", "--run-id", "two-node", *SETTINGS) as nodes:
        assert nodes.wait() == [0, 0], nodes.output()
    log = nodes.assert_rank0_on_node0("two-node")
    assert "rank:0/cpu" in log and "rank:1/cpu" in log  # the sharding plan puts tables on both nodes

    single, two = runs(lakehouse)["single"], runs(lakehouse)["two-node"]
    assert two["status"] == "succeeded" and two["error"] is None and two["attempt"] == 1
    assert two["world_size"] == 2
    host = socket.gethostname()
    assert two["devices"] == f"2 x cpu (gloo, 1 threads each) on 2 nodes ({host}, {host})"
    assert single["devices"] == "2 x cpu (gloo, 1 threads each)"
    for column in ("model", "config", "feature_version", "split_version", "vocab_version", "splits", "best_step"):
        assert two[column] == single[column], column
    assert two["best_metric"] == pytest.approx(single["best_metric"], rel=1e-5)
    assert_same_results(lakehouse, "single", "two-node")
    test_day = lakehouse.read_arrow("features/samples", where="ds = '2026-01-04'", columns=["sample_id"])
    assert set(predictions(lakehouse, "two-node")) == set(test_day.column("sample_id").to_pylist())


def test_a_killed_node_fails_the_run_and_resuming_on_both_nodes_completes_it(reference, tmp_path):
    lakehouse, run_id = reference, "node-lost"
    with TwoNodes(lakehouse, tmp_path, run_id, "--model", "din", "--run-id", run_id, *SETTINGS) as nodes:
        nodes.wait_for_a_checkpoint(lakehouse, run_id)  # step 3's, of the 9 steps of epoch 0
        nodes.assert_rank0_on_node0(run_id)
        nodes.nodes[1].kill()
        killed_at = time.monotonic()
        status = nodes.nodes[0].agent.wait(timeout=NODE_EXIT_S + 60)
        assert time.monotonic() - killed_at < NODE_EXIT_S, nodes.output()
        assert status != 0
    failed = runs(lakehouse)[run_id]
    assert failed["status"] == "failed" and failed["attempt"] == 1 and failed["finished_at"] is not None
    assert "by peer" in failed["error"], failed["error"]  # gloo: connection reset / closed by peer

    with TwoNodes(lakehouse, tmp_path, f"{run_id}-resume", "--resume", run_id) as nodes:
        assert nodes.wait() == [0, 0], nodes.output()
    # rank 0 (node 0) says where it resumed: in epoch 0, after a step of it
    resumed_from = re.search(r"resumed from \S+ \(epoch (\d+), step (\d+) of it", nodes.nodes[0].output())
    assert resumed_from and resumed_from.group(1) == "0" and int(resumed_from.group(2)) > 0, nodes.output()
    run = runs(lakehouse)[run_id]
    assert run["status"] == "succeeded" and run["attempt"] == 2 and run["error"] is None
    assert_same_results(lakehouse, "single", run_id)


def test_when_rank_0_s_node_dies_the_other_node_records_the_failure(reference, tmp_path):
    lakehouse, run_id = reference, "rank0-lost"
    with TwoNodes(lakehouse, tmp_path, run_id, "--model", "din", "--run-id", run_id, *SETTINGS) as nodes:
        nodes.wait_for_a_checkpoint(lakehouse, run_id)
        nodes.assert_rank0_on_node0(run_id)
        nodes.nodes[0].kill()  # rank 0, and the rendezvous store with it
        killed_at = time.monotonic()
        status = nodes.nodes[1].agent.wait(timeout=NODE_EXIT_S + 60)
        # the deputy (rank 1) waits up to 10 s for rank 0's record before it writes its own
        assert time.monotonic() - killed_at < NODE_EXIT_S, nodes.output()
        assert status != 0
    failed = runs(lakehouse)[run_id]
    assert failed["status"] == "failed" and failed["attempt"] == 1
    # what rank 1 saw first: gloo's closed connection, or its agent's SIGTERM (the agent loses the store too)
    assert failed["error"].startswith("rank 0 did not record this failure within 10 s"), failed["error"]
    assert failed["config"] == runs(lakehouse)["single"]["config"]  # the recorded row, only its status changed

