"""Run records of training in Delta, written with delta-rs (training ranks load no JVM).

* ``training/runs`` (:data:`RUNS`): one row per run, upserted by ``run_id`` as the run moves from ``running`` to
  ``succeeded`` or ``failed`` (a failure records the error; a resumed run goes back to ``running`` with
  ``attempt`` + 1). ``updated_at`` moves at every checkpoint, so a run whose process was killed outright (no chance
  to record anything) shows as ``running`` with a stale ``updated_at`` until it is resumed.
* ``training/metrics`` (:data:`METRICS`): one row per (run, kind, epoch, split, metric). ``kind`` is ``epoch``
  (train loss and validation after each epoch), ``final`` (valid and test with the best checkpoint, and split
  ``rank_eval``: HR@K / NDCG@K on ``features/rank_eval``) or ``data`` (facts of the training split, such as the
  share of DIEN's auxiliary negatives drawn from the catalogue). Each batch of rows is appended once: a resumed
  run that repeats an evaluation does not add its rows twice (Delta app transactions).
* ``training/predictions`` (:data:`PREDICTIONS`, partitioned by ``run_id``): the test split's scores of the best
  checkpoint, one row per sample; each rank appends its own shard once.
* ``training/item_vectors`` (:data:`ITEM_VECTORS`, partitioned by ``run_id``): for models with an item tower
  (two-tower), the best checkpoint's vector of every item in the samples, for nearest-neighbour retrieval.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from features.tableio import Lakehouse

RUNS_TABLE = "training/runs"
METRICS_TABLE = "training/metrics"
PREDICTIONS_TABLE = "training/predictions"
TIMESTAMP = pa.timestamp("us", tz="UTC")

RUNS = pa.schema([
    ("run_id", pa.string()),
    ("model", pa.string()),
    ("status", pa.string()),
    ("attempt", pa.int32()),
    ("config", pa.string()),
    ("feature_table", pa.string()),
    ("feature_version", pa.int64()),
    ("split_table", pa.string()),
    ("split_version", pa.int64()),
    ("vocab_version", pa.int64()),
    ("splits", pa.string()),
    ("code_version", pa.string()),
    ("torch_version", pa.string()),
    ("devices", pa.string()),
    ("world_size", pa.int32()),
    ("started_at", TIMESTAMP),
    ("updated_at", TIMESTAMP),
    ("finished_at", TIMESTAMP),
    ("best_step", pa.int64()),
    ("best_metric", pa.float64()),
    ("checkpoint_dir", pa.string()),
    ("error", pa.string()),
])
METRICS = pa.schema([
    ("run_id", pa.string()),
    ("kind", pa.string()),
    ("epoch", pa.int32()),
    ("step", pa.int64()),
    ("split", pa.string()),
    ("metric", pa.string()),
    ("value", pa.float64()),
    ("recorded_at", TIMESTAMP),
])
PREDICTIONS = pa.schema([
    ("run_id", pa.string()),
    ("sample_id", pa.string()),
    ("user_idx", pa.int64()),
    ("score", pa.float64()),
    ("label", pa.int32()),
])
ITEM_VECTORS_TABLE = "training/item_vectors"
ITEM_VECTORS = pa.schema([
    ("run_id", pa.string()),
    ("item_idx", pa.int64()),
    ("vector", pa.list_(pa.float32())),
])
FINAL_EPOCH = -1  # ``epoch`` of the final rows


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def code_version() -> str:
    """The git commit of the code (with ``-dirty`` for uncommitted changes), or the package version outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "ctr-suite " + version("ctr-suite")
        except PackageNotFoundError:
            return "unknown"


class RunRecorder:
    """Writes one run's rows; only rank 0 calls the run-level methods, every rank writes its predictions."""

    def __init__(self, lakehouse: Lakehouse, run_id: str):
        self.lakehouse = lakehouse
        self.run_id = run_id
        self.row: dict[str, Any] = {}

    def previous(self) -> dict[str, Any] | None:
        """The run's row as recorded (None when the run is unknown)."""
        if not self.lakehouse.exists(RUNS_TABLE):
            return None
        rows = self.lakehouse.read_arrow(RUNS_TABLE, where=f"run_id = '{self.run_id}'").to_pylist()
        return rows[0] if rows else None

    def upsert(self, **changes: Any) -> None:
        self.row.update(changes, run_id=self.run_id, updated_at=now())
        row = {name: self.row.get(name) for name in RUNS.names}
        self.lakehouse.upsert_arrow(pa.Table.from_pylist([row], schema=RUNS), RUNS_TABLE, keys=["run_id"])

    def metrics(self, kind: str, epoch: int, step: int, values: dict[str, dict[str, float]]) -> None:
        """``values``: split -> metric -> value. Appended once per (run, kind, epoch)."""
        recorded = now()
        rows = [{"run_id": self.run_id, "kind": kind, "epoch": epoch, "step": step, "split": split,
                 "metric": metric, "value": float(value), "recorded_at": recorded}
                for split, metrics in values.items() for metric, value in metrics.items()]
        app_id = f"{METRICS_TABLE}/{self.run_id}"
        if kind == "data":  # facts of the data, written once before training: a sequence of their own
            app_id, sequence = f"{app_id}/data", 1
        else:
            sequence = epoch + 1 if kind == "epoch" else 1_000_000  # final rows come after every epoch's
        self.lakehouse.write_arrow(pa.Table.from_pylist(rows, schema=METRICS), METRICS_TABLE, mode="append",
                                   txn=(app_id, sequence))

    def predictions(self, rank: int, sample_ids: np.ndarray, user_idx: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray) -> None:
        table = pa.table({
            "run_id": pa.array([self.run_id] * len(sample_ids), pa.string()),
            "sample_id": pa.array(sample_ids.astype(str), pa.string()),
            "user_idx": pa.array(user_idx, pa.int64()),
            "score": pa.array(scores, pa.float64()),
            "label": pa.array(labels.astype(np.int32), pa.int32()),
        }, schema=PREDICTIONS)
        self.lakehouse.write_arrow(table, PREDICTIONS_TABLE, mode="append", partition_by=["run_id"],
                                   txn=(f"{PREDICTIONS_TABLE}/{self.run_id}/rank{rank}", 1))


def write_item_vectors(lakehouse: Lakehouse, run_id: str, rank: int, item_idx: np.ndarray,
                       vectors: np.ndarray) -> None:
    """Append one rank's share of a run's item vectors once (partitioned by ``run_id``)."""
    table = pa.table({
        "run_id": pa.array([run_id] * len(item_idx), pa.string()),
        "item_idx": pa.array(item_idx, pa.int64()),
        "vector": pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32())),
    }, schema=ITEM_VECTORS)
    lakehouse.write_arrow(table, ITEM_VECTORS_TABLE, mode="append", partition_by=["run_id"],
                          txn=(f"{ITEM_VECTORS_TABLE}/{run_id}/rank{rank}", 1))


def config_json(config: Any) -> str:
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)
