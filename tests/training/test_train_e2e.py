"""End to end: the real ``training.train`` entry point under torchrun with 2 gloo ranks on CPU (guarantees 10-12, 15).

The lakehouse is written by ``training.testing`` (same table contracts as the feature jobs, no JVM), small enough
for a run of two epochs in well under a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from features.tableio import Lakehouse
from training.testing import SyntheticSpec, write_training_lakehouse

pytestmark = pytest.mark.slow
SPEC = SyntheticSpec(days=4, rows_per_file=600, files_per_day=2, hist_len=10)
COMMON = ["--set", "train.epochs=2", "--set", "train.checkpoint_every_steps=3", "--set", "data.batch_size=128",
          "--set", "train.sharding=table_wise", "--set", "train.progress=false",
          "--set", "train.early_stopping_patience=0", "--set", "model.embedding_dim=8",
          "--set", "optim.dense_lr=0.01", "--set", "optim.embedding_lr=0.1",
          # the item (402 rows) and user (202) tables get lookups of their own, the small ones share one
          "--set", "model.shared_lookup_max_rows=100"]


def torchrun(lakehouse: Lakehouse, *args: str, nproc: int = 2, env: dict[str, str] | None = None,
             timeout: int = 240) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "training.train", "--lakehouse", lakehouse.root, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def runs(lakehouse: Lakehouse) -> dict[str, dict]:
    return {row["run_id"]: row for row in lakehouse.read_arrow("training/runs").to_pylist()}


def metrics(lakehouse: Lakehouse, run_id: str) -> dict[tuple, float]:
    rows = lakehouse.read_arrow("training/metrics", where=f"run_id = '{run_id}'").to_pylist()
    table = {(r["kind"], r["epoch"], r["split"], r["metric"]): r["value"] for r in rows}
    assert len(table) == len(rows), "a metric row was written twice"
    return table


def predictions(lakehouse: Lakehouse, run_id: str) -> dict[str, float]:
    rows = lakehouse.read_arrow("training/predictions", where=f"run_id = '{run_id}'").to_pylist()
    scores = {r["sample_id"]: r["score"] for r in rows}
    assert len(scores) == len(rows), "a test sample was predicted twice"
    return scores


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted DIN run on 2 ranks, shared by the tests below."""
    lakehouse = Lakehouse(tmp_path_factory.mktemp("train") / "lakehouse")
    write_training_lakehouse(lakehouse, SPEC)
    done = torchrun(lakehouse, "--model", "din", "--run-id", "straight", *COMMON)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return lakehouse, done


def test_two_gloo_ranks_train_din_and_write_the_three_tables(trained):
    lakehouse, done = trained
    run = runs(lakehouse)["straight"]
    assert run["status"] == "succeeded" and run["error"] is None
    assert run["model"] == "din" and run["world_size"] == 2 and "gloo" in run["devices"]
    assert run["feature_version"] == lakehouse.version("features/samples")
    assert run["finished_at"] is not None and run["code_version"]
    assert "table_wise" in done.stdout  # the sharding plan asked for
    values = metrics(lakehouse, "straight")
    # the training loss falls from the first epoch to the second
    assert values[("epoch", 1, "train", "loss")] < values[("epoch", 0, "train", "loss")]
    for split in ("valid", "test"):
        for metric in ("auc", "gauc", "logloss"):
            assert ("final", -1, split, metric) in values
    assert values[("final", -1, "test", "auc")] > 0.6  # the synthetic labels follow the preferred category
    test_rows = lakehouse.read_arrow("features/samples", where="ds = '2026-01-04'", columns=["sample_id"])
    scores = predictions(lakehouse, "straight")
    assert set(scores) == set(test_rows.column("sample_id").to_pylist())  # every test sample exactly once
    assert all(0.0 < s < 1.0 for s in scores.values())


def test_killed_run_resumes_to_the_same_result_and_skips_a_half_written_checkpoint(trained):
    # same lakehouse as the uninterrupted run: the same files in the same order (a run's batches depend on them)
    lakehouse = straight_lakehouse = trained[0]
    # rank 1 dies right after step 8 (after the checkpoints of steps 3 and 6; epoch 0 has 4-5 steps)
    killed = torchrun(lakehouse, "--model", "din", "--run-id", "broken", *COMMON,
                      env={"CTR_TRAIN_FAIL_AT_STEP": "8", "CTR_TRAIN_FAIL_RANK": "1"})
    assert killed.returncode != 0
    assert runs(lakehouse)["broken"]["status"] == "failed", killed.stdout[-3000:] + killed.stderr[-8000:]
    checkpoints = Path(lakehouse.path("training/checkpoints")) / "broken"
    newest = sorted(checkpoints.iterdir())[-1]
    (newest / ".metadata").unlink()  # as if the run had been killed while writing it

    resumed = torchrun(lakehouse, "--resume", "broken")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert f"skipping checkpoint {newest}" in resumed.stdout
    run = runs(lakehouse)["broken"]
    assert run["status"] == "succeeded" and run["attempt"] == 2

    expected, got = metrics(straight_lakehouse, "straight"), metrics(lakehouse, "broken")
    assert expected.keys() == got.keys()
    timings = ("samples_per_second", "peak_rss_mib")  # measurements of the process, not results
    for key, value in expected.items():
        if key[3] in timings:
            continue
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    straight_scores, resumed_scores = predictions(straight_lakehouse, "straight"), predictions(lakehouse, "broken")
    ids = sorted(straight_scores)
    np.testing.assert_allclose([resumed_scores[i] for i in ids], [straight_scores[i] for i in ids], rtol=1e-5)


def test_resuming_without_optimizer_state_differs(trained):
    lakehouse = straight_lakehouse = trained[0]
    killed = torchrun(lakehouse, "--model", "din", "--run-id", "fresh-optim", *COMMON,
                      env={"CTR_TRAIN_FAIL_AT_STEP": "7"})
    assert killed.returncode != 0
    resumed = torchrun(lakehouse, "--resume", "fresh-optim", "--reset-optimizer")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    expected, got = predictions(straight_lakehouse, "straight"), predictions(lakehouse, "fresh-optim")
    ids = sorted(expected)
    assert not np.allclose([got[i] for i in ids], [expected[i] for i in ids], rtol=1e-5)


def test_too_few_row_groups_for_the_ranks_is_a_clear_error_not_a_hang(tmp_path):
    lakehouse = Lakehouse(tmp_path / "lakehouse")
    write_training_lakehouse(lakehouse, SyntheticSpec(days=3, rows_per_file=200, files_per_day=1))
    done = torchrun(lakehouse, "--model", "base", *COMMON, timeout=180)
    assert done.returncode != 0
    assert "row group" in done.stderr
    run = next(iter(runs(lakehouse).values()))
    assert run["status"] == "failed" and "row group" in run["error"]


def test_empty_split_and_out_of_range_index_fail_before_training(tmp_path):
    lakehouse = Lakehouse(tmp_path / "lakehouse")
    write_training_lakehouse(lakehouse, SyntheticSpec(days=3, rows_per_file=200, files_per_day=2))
    split = lakehouse.read_arrow("features/split")
    no_valid = split.filter(pa.compute.not_equal(split["split"], "valid"))
    lakehouse.write_arrow(no_valid, "features/split", mode="overwrite")
    done = torchrun(lakehouse, "--model", "base", *COMMON, nproc=1, timeout=120)
    assert done.returncode == 1
    assert "the valid split" in done.stderr and "has no day" in done.stderr

    lakehouse.write_arrow(split, "features/split", mode="overwrite")
    vocab = lakehouse.read_arrow("features/vocab")
    smaller = vocab.filter(pa.compute.not_equal(vocab["raw_id"], "item-399"))  # the largest item index goes away
    lakehouse.write_arrow(smaller, "features/vocab", mode="overwrite")
    done = torchrun(lakehouse, "--model", "base", *COMMON, nproc=1, timeout=120)
    assert done.returncode == 1
    assert "item_idx" in done.stderr
