"""Every model of the zoo trains a few steps on two gloo ranks and writes its outputs (one torchrun launch).

Each run goes through the real entry point (``training.train.main``) on a small synthetic lakehouse with
``features/rank_eval``; the runs share one launch (``tests/training/run_many.py``) to pay the start-up once. Per
run: recorded as succeeded, final valid/test AUC, GAUC and logloss and rank_eval HR@10 / NDCG@10 in
``training/metrics``, every test sample predicted exactly once. Model-specific outputs: DIEN's share of sampled
negatives, the two-tower item vectors, and pre-training through ``train.init_from`` (NAIS from FISM, NeuMF from
GMF).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.tableio import Lakehouse
from training.models import MODELS
from training.reader import distinct_items, negative_fallback_counts, resolve_files
from training.testing import SyntheticSpec, write_training_lakehouse

pytestmark = pytest.mark.slow
SPEC = SyntheticSpec(days=4, rows_per_file=300, files_per_day=2, users=120, items=240, categories=12, hist_len=8,
                     set_size=4, rank_candidates=40)
COMMON = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--set", "data.batch_size=64",
          "--set", "data.eval_batch_size=400", "--set", "train.progress=false", "--set", "model.embedding_dim=8",
          "--set", "train.device=cpu"]
#: run id -> (model, extra overrides); the order matters where a run initialises from an earlier one
RUNS: dict[str, tuple[str, list[str]]] = {
    "zoo-base": ("base", []),
    "zoo-din": ("din", []),
    "zoo-dien": ("dien", []),
    "zoo-dien-agru-noaux": ("dien", ["model.evolution=agru", "model.aux_weight=0"]),
    "zoo-dien-aigru-noaux": ("dien", ["model.evolution=aigru", "model.aux_weight=0"]),
    "zoo-dstn": ("dstn", []),
    "zoo-dstn-pooling": ("dstn", ["model.attention=pooling"]),
    "zoo-dstn-self": ("dstn", ["model.attention=self"]),
    "zoo-afm": ("afm", []),
    "zoo-fism": ("fism", []),
    "zoo-nais": ("nais", ["train.init_from=zoo-fism"]),
    "zoo-nais-concat": ("nais", ["model.attention=concat", "model.beta=1.0"]),
    # initialised from FISM and then barely moved: its tables must equal FISM's, though each is in a lookup of its
    # own here and in FISM's shared lookup there (tables are matched by name, not by state-dict key)
    "zoo-nais-frozen": ("nais", ["train.init_from=zoo-fism", "optim.embedding_lr=1e-12",
                                 "model.shared_lookup_max_rows=0"]),
    "zoo-gmf": ("gmf", []),
    "zoo-ncf_mlp": ("ncf_mlp", []),
    "zoo-neumf": ("neumf", ["train.init_from=[zoo-gmf, zoo-ncf_mlp]"]),
    "zoo-two_tower": ("two_tower", []),
    "zoo-autorec": ("autorec", []),
    "zoo-deep_crossing": ("deep_crossing", []),
    "zoo-pnn": ("pnn", []),
    "zoo-pnn-outer": ("pnn", ["model.product=outer"]),
    "zoo-wide_deep": ("wide_deep", []),
    "zoo-deepfm": ("deepfm", []),
    "zoo-nfm": ("nfm", []),
    "zoo-drn": ("drn", []),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    lakehouse = Lakehouse(root / "lakehouse")
    write_training_lakehouse(lakehouse, SPEC)
    runs = []
    for run_id, (model, overrides) in RUNS.items():
        argv = ["--lakehouse", lakehouse.root, "--model", model, "--run-id", run_id, *COMMON]
        for item in overrides:
            argv += ["--set", item]
        runs.append(argv)
    runs_file = root / "runs.json"
    runs_file.write_text(json.dumps(runs))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(Path(__file__).with_name("run_many.py")), str(runs_file)]
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=repo,
                          env={**os.environ, "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    return lakehouse, done.stdout


def test_every_registered_model_is_in_the_zoo_run():
    assert {model for model, _ in RUNS.values()} == set(MODELS)


@pytest.mark.parametrize("run_id", list(RUNS))
def test_each_run_succeeds_and_writes_metrics_and_predictions(zoo, run_id):
    lakehouse, _ = zoo
    record = lakehouse.read_arrow("training/runs", where=f"run_id = '{run_id}'").to_pylist()
    assert len(record) == 1 and record[0]["status"] == "succeeded", record
    assert record[0]["model"] == RUNS[run_id][0]
    rows = lakehouse.read_arrow("training/metrics", where=f"run_id = '{run_id}' AND kind = 'final'").to_pylist()
    final = {(r["split"], r["metric"]): r["value"] for r in rows}
    for split in ("valid", "test"):
        for metric in ("auc", "gauc", "logloss"):
            assert np.isfinite(final[(split, metric)]), (split, metric)
    assert 0.0 <= final[("rank_eval", "hr_at_10")] <= 1.0
    assert 0.0 <= final[("rank_eval", "ndcg_at_10")] <= final[("rank_eval", "hr_at_10")]
    assert final[("rank_eval", "rank_users")] == lakehouse.count("features/rank_eval")
    assert final[("rank_eval", "rank_candidates")] == SPEC.rank_candidates
    predicted = lakehouse.read_arrow("training/predictions", where=f"run_id = '{run_id}'",
                                     columns=["sample_id", "score"])
    test_ids = lakehouse.read_arrow("features/samples", where="ds = '2026-01-04'", columns=["sample_id"])
    ids = predicted.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(test_ids.column("sample_id").to_pylist())


def test_dien_records_the_share_of_sampled_negatives(zoo):
    lakehouse, _ = zoo
    rows = lakehouse.read_arrow("training/metrics", where="run_id = 'zoo-dien' AND kind = 'data'").to_pylist()
    recorded = {r["metric"]: r["value"] for r in rows}
    train_days = ["2026-01-01", "2026-01-02"]
    sampled, steps = negative_fallback_counts(resolve_files(lakehouse, "features/samples", days=train_days)[1])
    assert recorded == {"neg_steps": steps, "neg_fallback_share": pytest.approx(sampled / steps)}
    assert 0.2 < sampled / steps < 0.8  # the synthetic table flags about half


def test_two_tower_exports_one_vector_per_item(zoo):
    lakehouse, _ = zoo
    vectors = lakehouse.read_arrow("training/item_vectors", where="run_id = 'zoo-two_tower'").to_pylist()
    items = distinct_items(resolve_files(lakehouse, "features/samples")[1], ["item_idx"])["item_idx"]
    assert sorted(r["item_idx"] for r in vectors) == sorted(items.tolist())
    widths = {len(r["vector"]) for r in vectors}
    assert len(widths) == 1 and widths.pop() > 0
    assert all(np.isfinite(r["vector"]).all() for r in vectors)


def test_init_from_copies_the_pretrained_tables(zoo):
    _, stdout = zoo
    nais = next(line for line in stdout.splitlines() if line.startswith("[train zoo-nais] initialised"))
    assert "item_target" in nais and "item_history" in nais and "zoo-fism" in nais
    neumf = [line for line in stdout.splitlines() if line.startswith("[train zoo-neumf] initialised")]
    assert len(neumf) == 2 and "item_gmf" in neumf[0] and "zoo-gmf" in neumf[0]
    assert "item_mlp" in neumf[1] and "zoo-ncf_mlp" in neumf[1]
    assert "[train zoo-neumf] NeuMF dense part initialised from GMF and MLP" in stdout


def _tables(lakehouse: Lakehouse, run_id: str, tmp_path: Path) -> dict[str, np.ndarray]:
    """Embedding tables of a run's newest checkpoint, read back without a process group."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    newest = sorted((Path(lakehouse.path("training/checkpoints")) / run_id).glob("step-*"))[-1]
    target = tmp_path / f"{run_id}.pt"
    dcp_to_torch_save(str(newest), str(target))
    state = torch.load(target, weights_only=False)
    flat = {}
    for key, value in state["model"].items() if "model" in state else state.items():
        if key.endswith(".weight") and ".embedding_bags." in key:
            flat[key.split(".embedding_bags.")[1].removesuffix(".weight")] = value.numpy()
    return flat


def test_init_from_puts_the_source_runs_tables_in_place(zoo, tmp_path):
    lakehouse, _ = zoo
    fism, nais = _tables(lakehouse, "zoo-fism", tmp_path), _tables(lakehouse, "zoo-nais-frozen", tmp_path)
    for table in ("item_target", "item_history"):
        np.testing.assert_allclose(nais[table], fism[table], atol=1e-6)
    other = _tables(lakehouse, "zoo-nais-concat", tmp_path)  # not initialised: its own random tables
    assert not np.allclose(other["item_target"], fism["item_target"], atol=1e-3)
