"""Checkpoints with torch.distributed.checkpoint (DCP): sharded embedding tables, fused and dense optimizer state,
the trainer's position and every rank's random state, in ``<lakehouse>/training/checkpoints/<run_id>/step-N``.

A checkpoint folder is complete only when DCP has written its ``.metadata`` (last, after every rank's shards);
:meth:`CheckpointManager.latest` skips incomplete folders and says why, so a checkpoint half-written by a killed
run is never loaded. DCP loads with pickle: only checkpoints under the run's own lakehouse folder are read.
The newest ``keep`` complete checkpoints and the best one are kept; older ones are deleted by rank 0.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

_STEP_DIR = re.compile(r"^step-(\d{9})$")


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


class CheckpointManager:
    def __init__(self, directory: Path, *, rank: int, keep: int = 2):
        self.directory = Path(directory)
        self.rank = rank
        self.keep = keep

    def path_for(self, step: int) -> Path:
        return self.directory / f"step-{step:09d}"

    def _candidates(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = []
        for child in self.directory.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest(self) -> tuple[Path | None, list[Skipped]]:
        """The newest complete checkpoint, and the newer folders skipped with the reason."""
        skipped: list[Skipped] = []
        for _, path in reversed(self._candidates()):
            if (path / ".metadata").is_file():
                return path, skipped
            skipped.append(Skipped(path, "no .metadata: the checkpoint was not completely written"))
        return None, skipped

    def save(self, step: int, state: dict[str, Any], *, best_step: int | None) -> Path:
        """Save ``state`` (all ranks call this together), then prune old checkpoints."""
        path = self.path_for(step)
        if self.rank == 0 and path.exists():  # an incomplete leftover of a killed attempt at the same step
            shutil.rmtree(path)
        if dist.is_initialized():
            dist.barrier()
        dcp.save(state, checkpoint_id=str(path))
        if dist.is_initialized():
            dist.barrier()
        if self.rank == 0:
            self._prune(best_step)
        return path

    def load(self, path: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Load into ``state`` in place (tensors are copied into the existing, possibly sharded, ones)."""
        dcp.load(state, checkpoint_id=str(path))
        return state

    def _prune(self, best_step: int | None) -> None:
        complete = [(step, path) for step, path in self._candidates() if (path / ".metadata").is_file()]
        keep = {step for step, _ in complete[-self.keep:]}
        if best_step is not None:
            keep.add(best_step)
        newest_complete = complete[-1][0] if complete else -1
        for step, path in self._candidates():
            # incomplete folders older than the newest complete one are leftovers of killed attempts
            if step not in keep and (step < newest_complete):
                shutil.rmtree(path, ignore_errors=True)


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
