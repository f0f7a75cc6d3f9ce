"""FailureGuard: a failed run is recorded once on rank 0, even when torchrun's SIGTERM lands in the middle, and by
the deputy rank when rank 0 is gone."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from training.train import DistContext, FailureGuard


class FakeRecorder:
    """Stands in for RunRecorder; ``during_upsert`` runs inside the write, as a signal would land there."""

    def __init__(self, during_upsert=None, recorded=None):
        self.row = {"status": "running"}
        self.writes: list[dict] = []
        self.during_upsert = during_upsert
        self.recorded = recorded  # what ``previous()`` reads back: the table's row as another rank left it

    def upsert(self, **fields):
        if self.during_upsert is not None:
            self.during_upsert()
        self.writes.append(fields)
        self.row.update(fields)

    def previous(self):
        return self.recorded() if callable(self.recorded) else self.recorded


def context(rank: int, world_size: int = 2, local_world_size: int = 2, hosts: tuple[str, ...] = ()) -> DistContext:
    return DistContext(rank=rank, world_size=world_size, local_rank=rank % local_world_size,
                       local_world_size=local_world_size, device=torch.device("cpu"), backend="gloo", hosts=hosts)


@pytest.fixture(autouse=True)
def restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def guard_with(recorder: FakeRecorder, rank: int = 0, ctx: DistContext | None = None,
               deputy_wait_s: float = 10.0) -> FailureGuard:
    guard = FailureGuard(deputy_wait_s=deputy_wait_s)
    guard.ctx, guard.recorder, guard.attempt = ctx or context(rank), recorder, 2
    guard.install()
    return guard


def test_a_sigterm_during_the_failure_record_does_not_cut_it_short():
    recorder = FakeRecorder(during_upsert=lambda: os.kill(os.getpid(), signal.SIGTERM))
    guard = guard_with(recorder)
    guard.record("RuntimeError: Connection reset by peer")  # no SystemExit escapes the write
    assert [w["status"] for w in recorder.writes] == ["failed"]
    assert recorder.row["error"].startswith("RuntimeError: Connection reset by peer")


def test_a_sigterm_that_arrives_first_records_the_failure_then_stops_the_rank():
    recorder = FakeRecorder()
    guard_with(recorder)
    with pytest.raises(SystemExit, match="signal 15"):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # Python runs the handler between bytecodes
            pass
    assert [w["status"] for w in recorder.writes] == ["failed"]
    assert "terminated by signal 15" in recorder.row["error"]
    guard = guard_with(recorder)
    guard.settled = True
    guard.record("later error")  # already settled: the first record stays
    assert len(recorder.writes) == 1


def test_a_succeeded_run_is_not_overwritten_by_a_late_failure_and_other_ranks_write_nothing():
    recorder = FakeRecorder()
    guard = guard_with(recorder)
    guard.succeeded(best_step=7)
    guard.record("SIGTERM after the run finished")
    assert [w["status"] for w in recorder.writes] == ["succeeded"]

    other = FakeRecorder()  # rank 1 of 4 on two nodes: neither rank 0 nor the deputy (rank 2)
    guard_with(other, ctx=context(1, world_size=4, hosts=("node-a", "node-b"))).record("boom")
    assert other.writes == []


def test_the_deputy_is_the_first_rank_of_the_second_node():
    assert context(0, world_size=4, hosts=("node-a", "node-b")).deputy == 2
    assert context(0, world_size=2).deputy == 1  # one node: rank 1
    assert context(0, world_size=1, local_world_size=1).deputy is None


RUNNING = {"run_id": "r", "status": "running", "attempt": 2, "error": None, "world_size": 2}


def test_the_deputy_records_the_failure_when_rank_0_does_not():
    recorder = FakeRecorder(recorded=dict(RUNNING))
    recorder.row = {}  # the deputy never wrote the run's row itself
    guard_with(recorder, rank=1, deputy_wait_s=0.2).record("RuntimeError: Connection closed by peer")
    assert [w["status"] for w in recorder.writes] == ["failed"]
    assert recorder.row["world_size"] == 2  # the recorded row, with only the failure changed
    assert recorder.row["error"].startswith("rank 0 did not record this failure within 0.2 s")
    assert recorder.row["error"].endswith("RuntimeError: Connection closed by peer")


def test_the_deputy_leaves_the_record_to_rank_0_when_rank_0_writes_it():
    reads = iter([RUNNING, {**RUNNING, "status": "failed"}])  # rank 0's record lands during the wait
    recorder = FakeRecorder(recorded=lambda: next(reads))
    guard_with(recorder, rank=1, deputy_wait_s=30).record("RuntimeError: Connection reset by peer")
    assert recorder.writes == []
    # a failure before this attempt recorded itself as running leaves the previous attempt's row alone
    earlier = FakeRecorder(recorded={**RUNNING, "attempt": 1, "status": "failed"})
    guard_with(earlier, rank=1, deputy_wait_s=30).record("boom")
    assert earlier.writes == []
