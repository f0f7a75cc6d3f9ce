"""FailureGuard: a failed run is recorded once on rank 0, even when torchrun's SIGTERM lands in the middle."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from training.train import DistContext, FailureGuard


class FakeRecorder:
    """Stands in for RunRecorder; ``during_upsert`` runs inside the write, as a signal would land there."""

    def __init__(self, during_upsert=None):
        self.row = {"status": "running"}
        self.writes: list[dict] = []
        self.during_upsert = during_upsert

    def upsert(self, **fields):
        if self.during_upsert is not None:
            self.during_upsert()
        self.writes.append(fields)
        self.row.update(fields)


def context(rank: int) -> DistContext:
    return DistContext(rank=rank, world_size=2, local_rank=rank, local_world_size=2, device=torch.device("cpu"),
                       backend="gloo")


@pytest.fixture(autouse=True)
def restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def guard_with(recorder: FakeRecorder, rank: int = 0) -> FailureGuard:
    guard = FailureGuard()
    guard.ctx, guard.recorder = context(rank), recorder
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

    other = FakeRecorder()
    guard_with(other, rank=1).record("boom")
    assert other.writes == []
