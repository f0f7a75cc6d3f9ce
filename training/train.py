"""Train a CTR model on ``features/samples`` with TorchRec; the ``torchrun`` entry point.

    torchrun --nproc_per_node=2 -m training.train --lakehouse lakehouse --model din [--config FILE] [--set k=v]
    torchrun --nproc_per_node=2 -m training.train --lakehouse lakehouse --resume RUN_ID

Without torchrun (``python -m training.train ...``) it runs as a single process. What a run does:

1. Resolves its data once on rank 0 and shares it with every rank: the samples table at a pinned Delta version
   (``data.version``, latest when unset), the train / valid / test days from ``features/split``, the embedding
   table sizes from ``features/vocab`` and the fixed sequence lengths from the samples table's properties. All of
   it is recorded in ``training/runs``. Out-of-range indices, an empty split or too few row groups for the ranks
   are errors before training starts.
2. Builds the model on the ``meta`` device and shards its embedding tables with ``DistributedModelParallel`` (the
   TorchRec planner picks the sharding unless ``train.sharding`` forces one); embeddings are updated by the fused
   optimizer inside backward, the dense part by DDP + ``optim.dense_optimizer``. nccl on GPU, gloo on CPU.
3. Trains epoch by epoch on the Petastorm reader (every rank the same number of steps), checkpoints every
   ``train.checkpoint_every_steps`` and at each epoch end, evaluates the validation split after each epoch and
   stops early when ``train.early_stopping_metric`` has not improved for ``train.early_stopping_patience`` epochs.
4. Loads the best checkpoint, evaluates valid and test, writes ``training/metrics`` and the test predictions, and
   marks the run ``succeeded``. An exception marks it ``failed`` with the error.

``--resume RUN_ID`` continues a run from its newest complete checkpoint with the recorded configuration and
data versions; the result equals the uninterrupted run (same batches in the same order, same random state).

Several nodes: the same command on each node with ``--nnodes=N --nproc_per_node=P --rdzv-backend=c10d
--rdzv-endpoint=HOST:PORT --rdzv-id=ID --max-restarts=0`` (tests/cluster/test_two_node_training.py runs two on
loopback). Ranks are global: rank 0, wherever it lands, resolves the data and writes the run-level records; every
rank writes its own checkpoint shards and predictions. So the lakehouse, and with it
``training/checkpoints/<run_id>``, must be a shared file system mounted at the same path on every node (a URI is
refused: see ``_prepare_run``), and ``--resume`` is launched on all nodes again. A node that dies makes its peers'
next collective fail within seconds (the connection closes); a node that hangs or drops off the network without
closing it is noticed after the collective timeout, ``CTR_TRAIN_COLLECTIVE_TIMEOUT_S`` (default 1800). The failure
is recorded by rank 0, or by a deputy when rank 0 is the one lost (``FailureGuard``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from features.tableio import Lakehouse
from training.checkpoint import CheckpointManager, rng_state, set_rng_state
from training.config import ConfigError, RunConfig, load_config
from training.features import FEATURES
from training.metrics import CTRMetrics, hit_rate_at_k, ndcg_at_k
from training.models import MODELS, CTRModel
from training.reader import (
    EmptySplitError,
    IndexOutOfRangeError,
    NotEnoughDataError,
    SequenceLengthError,
    check_index_ranges,
    check_shardable,
    distinct_items,
    id_frequencies,
    negative_fallback_counts,
    rank_candidate_count,
    read_batches,
    resolve_files,
    synchronised,
)
from training.records import (
    FINAL_EPOCH,
    ITEM_VECTORS,
    ITEM_VECTORS_TABLE,
    PREDICTIONS,
    PREDICTIONS_TABLE,
    RunRecorder,
    code_version,
    config_json,
    write_item_vectors,
)

VOCAB_TABLE = "features/vocab"
RANK_EVAL_TABLE = "features/rank_eval"
SPLITS = ("train", "valid", "test")
#: Fault injection for the kill-and-resume tests: the rank CTR_TRAIN_FAIL_RANK (default 1) exits abruptly right
#: after global step CTR_TRAIN_FAIL_AT_STEP, as a crashed process would (no clean-up, no record).
FAIL_AT_STEP_ENV = "CTR_TRAIN_FAIL_AT_STEP"
FAIL_RANK_ENV = "CTR_TRAIN_FAIL_RANK"
#: seconds a collective waits for a silent peer before it fails (torch's own default for gloo: 30 minutes)
COLLECTIVE_TIMEOUT_ENV = "CTR_TRAIN_COLLECTIVE_TIMEOUT_S"


class TrainingInputError(RuntimeError):
    """The data a run needs is missing or unusable; the message says which and what to run first."""


#: errors that are the user's to fix: reported in one line (exit 1), no traceback
INPUT_ERRORS = (ConfigError, TrainingInputError, EmptySplitError, NotEnoughDataError, IndexOutOfRangeError,
                SequenceLengthError)


# ---------------------------------------------------------------------------------------------------- set-up
@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str
    hosts: tuple[str, ...] = ()  # each node's host name, in torchrun's node order

    def describe(self) -> str:
        if self.device.type == "cuda":
            ranks = f"{self.world_size} x {torch.cuda.get_device_name(self.device)} ({self.backend})"
        else:
            ranks = f"{self.world_size} x cpu ({self.backend}, {torch.get_num_threads()} threads each)"
        return ranks + (f" on {len(self.hosts)} nodes ({', '.join(self.hosts)})" if len(self.hosts) > 1 else "")

    @property
    def deputy(self) -> int | None:
        """The rank that records a failure when rank 0 cannot: the first rank of the second node (torchrun numbers
        ranks node by node), rank 1 on a single node, none alone."""
        if len(self.hosts) > 1:
            return self.local_world_size
        return 1 if self.world_size > 1 else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_process_group() -> bool:
    """Join the torchrun process group (or make a one-process group when started without torchrun).

    With CUDA present the group gets both backends (gloo for CPU tensors, nccl for CUDA ones), so the device can
    be chosen after rank 0 has read the run's configuration. Returns whether this call created the group (a
    caller that runs several trainings in one launch creates it once: torchrun's store cannot host a second one).
    """
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    if dist.is_initialized():
        return False
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    # how long a rank waits in a collective for a peer that neither answers nor closes its connection (a hung or
    # unreachable node); a peer that dies is noticed at once, its connections closing
    timeout = dt.timedelta(seconds=float(os.environ.get(COLLECTIVE_TIMEOUT_ENV, "1800")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def make_context(device_choice: str, cpu_threads: int | None = None) -> DistContext:
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    node_hosts: list[Any] = [None] * world
    dist.all_gather_object(node_hosts, (int(os.environ.get("GROUP_RANK", "0")), socket.gethostname()))
    hosts = tuple(host for _, host in sorted(set(node_hosts)))
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available")
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
        # ranks on one machine share its cores
        torch.set_num_threads(cpu_threads or max(1, (os.cpu_count() or 1) // local_world))
    return DistContext(rank, world, local_rank, local_world, device, backend, hosts)


def broadcast(value: Any, rank: int) -> Any:
    """Rank 0's ``value`` on every rank (an exception on rank 0 is re-raised on every rank, so none hangs)."""
    holder = [value if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    if isinstance(holder[0], BaseException):
        raise holder[0]
    return holder[0]


@dataclass
class DataPlan:
    table: str
    version: int
    split_table: str
    split_version: int
    vocab_version: int
    days: dict[str, list[str]]
    files: dict[str, list[str]]
    table_sizes: dict[str, int]
    sequence_lengths: dict[str, int]
    # features/rank_eval at the split's anchor day (None and [] when the table is absent or switched off)
    rank_eval_version: int | None = None
    rank_eval_files: list[str] = field(default_factory=list)
    rank_candidates: int = 0

    def describe(self) -> str:
        return json.dumps({"days": self.days, "table_sizes": self.table_sizes,
                           "sequence_lengths": self.sequence_lengths, "rank_eval_version": self.rank_eval_version,
                           "rank_candidates": self.rank_candidates}, sort_keys=True)


def resolve_data(lakehouse: Lakehouse, cfg: RunConfig, version: int | None,
                 split_version: int | None = None, vocab_version: int | None = None,
                 rank_eval_version: int | None = None) -> DataPlan:
    """Rank 0: the pinned samples version, its split days and files, table sizes and sequence lengths.

    The versions default to the latest; a resumed run passes the ones it recorded, so it trains on the same data.
    """
    for table, job in ((cfg.data.table, "jobs/build_samples.py"), (cfg.data.split_table, "jobs/build_rank_eval.py"),
                       (VOCAB_TABLE, "jobs/build_vocab.py")):
        if not lakehouse.exists(table):
            raise TrainingInputError(f"table {table!r} does not exist at {lakehouse.path(table)}; run {job} first")
    version = lakehouse.version(cfg.data.table) if version is None else version
    properties = lakehouse.properties(cfg.data.table, version=version)
    lengths = {key.removeprefix("ctr.samples."): int(value) for key, value in properties.items()
               if key.startswith("ctr.samples.")}
    split_version = lakehouse.version(cfg.data.split_table) if split_version is None else split_version
    split = lakehouse.read_arrow(cfg.data.split_table, version=split_version,
                                 columns=["ds", "split", "anchor_ds"]).to_pylist()
    days = {name: sorted(str(row["ds"]) for row in split if row["split"] == name) for name in SPLITS}
    files = {}
    for name in SPLITS:
        if not days[name]:
            raise TrainingInputError(f"the {name} split of {cfg.data.split_table} (version {split_version}) has no "
                                     "day; run jobs/build_rank_eval.py with enough sample days")
        files[name] = resolve_files(lakehouse, cfg.data.table, version=version, days=days[name])[1]
    vocab_version = lakehouse.version(VOCAB_TABLE) if vocab_version is None else vocab_version
    vocab = lakehouse.read_arrow(VOCAB_TABLE, version=vocab_version, columns=["field", "idx"]).to_pandas()
    largest = vocab.groupby("field")["idx"].max().to_dict()
    from training.features import TABLE_VOCAB_FIELD

    # index 0 is padding, 1 unknown: a field with no id yet still needs those two rows
    sizes = {table: int(max(largest.get(field_name, 1), 1)) + 1 for table, field_name in TABLE_VOCAB_FIELD.items()}
    plan = DataPlan(cfg.data.table, version, cfg.data.split_table, split_version, vocab_version, days, files,
                    sizes, lengths)
    if cfg.train.rank_eval and lakehouse.exists(RANK_EVAL_TABLE):
        anchors = sorted({str(row["anchor_ds"]) for row in split})
        pinned = lakehouse.version(RANK_EVAL_TABLE) if rank_eval_version is None else rank_eval_version
        try:
            plan.rank_eval_files = resolve_files(lakehouse, RANK_EVAL_TABLE, version=pinned, days=anchors[-1:])[1]
            plan.rank_eval_version = pinned
            plan.rank_candidates = rank_candidate_count(plan.rank_eval_files)
        except EmptySplitError:
            pass  # no user had a test-day click with enough unseen items: nothing to rank
    return plan


# ---------------------------------------------------------------------------------------------------- the run
@dataclass
class TrainerState:
    epoch: int = 0  # the epoch in progress
    step_in_epoch: int = 0  # batches of that epoch already trained
    global_step: int = 0
    best_step: int | None = None
    best_value: float | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    finished: bool = False  # training is over; only the final evaluation is left
    loss_sum: float = 0.0  # this rank's training loss over the epoch so far (the epoch's mean is recorded)
    loss_batches: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: an embedding table's weight in a model's state dict: ``...embeddings.<group>.embedding_bags.<table>.weight``
#: (and ``...embeddings.embeddings.<table>.weight``, the EmbeddingCollection of runs before 2026-11-24)
_TABLE_KEY = re.compile(r"(?:^|\.)(?:embedding_bags|embeddings\.embeddings)\.(\w+)\.weight$")


def table_of_key(key: str) -> str | None:
    """The embedding table whose weight ``key`` (a state-dict key) is; None for any other tensor."""
    match = _TABLE_KEY.search(key)
    return match.group(1) if match else None


def table_keys(keys) -> dict[str, str]:
    """table -> its weight's key, from state-dict keys."""
    return {table: key for key in keys if (table := table_of_key(key)) is not None}


def _optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    return {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]


def create_model(cfg: RunConfig, plan: DataPlan) -> CTRModel:
    """The configured model, unsharded (embedding tables on the meta device), seeded by ``train.seed``."""
    model_cls = MODELS[cfg.model_name]
    torch.manual_seed(cfg.train.seed)
    return model_cls(model_cls.config_class.model_validate(cfg.model), plan.table_sizes)


def check_device_settings(cfg: RunConfig, device_type: str) -> None:
    """A ConfigError for settings that TorchRec or FBGEMM support only on a GPU, before any sharding starts."""
    if device_type != "cpu":
        return
    if cfg.optim.embedding_optimizer == "adam":
        # FBGEMM's fused CPU kernels have no Adam ("Optimizer adam is not supported in CPU mode")
        raise ConfigError("optim.embedding_optimizer=adam needs a GPU (FBGEMM's fused CPU kernels have no Adam); "
                          "use adagrad or sgd on CPU")
    if cfg.train.sharding == "row_wise":
        # EmbeddingBagCollectionSharder offers row-wise only for CUDA (the planner otherwise fails with "No
        # available sharding type and compute kernel combination")
        raise ConfigError("train.sharding=row_wise needs a GPU (TorchRec shards pooled embedding lookups row-wise "
                          "only on CUDA); use auto, table_wise or column_wise on CPU")


def shard_model(model: CTRModel, cfg: RunConfig, ctx: DistContext):
    """``model`` sharded by DistributedModelParallel, and its combined (fused embedding + dense) optimizer."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    check_device_settings(cfg, ctx.device.type)
    apply_optimizer_in_backward(_optimizer_class(cfg.optim.embedding_optimizer), model.embeddings.parameters(),
                                {"lr": cfg.optim.embedding_lr})
    # no TorchRec index dedup: CTRModel.lookup sends each table's distinct ids already
    sharders = [EmbeddingBagCollectionSharder()]
    # Never data-parallel: TorchRec gives a replicated table the dense kernel, whose weights then leave the fused
    # embedding optimizer for the dense one (Adam at optim.dense_lr instead of optim.embedding_optimizer)
    allowed = [kind for kind in sharders[0].sharding_types(ctx.device.type) if kind != "data_parallel"]
    sharding_types = allowed if cfg.train.sharding == "auto" else [cfg.train.sharding]
    constraints = {table: ParameterConstraints(sharding_types=sharding_types) for table in model.table_sizes}
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=ctx.world_size, compute_device=ctx.device.type,
                          local_world_size=ctx.local_world_size),
        constraints=constraints,
    )
    sharding_plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=ctx.device, plan=sharding_plan, sharders=sharders)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: _optimizer_class(cfg.optim.dense_optimizer)(
                                      params, lr=cfg.optim.dense_lr))
    optimizer = CombinedOptimizer([dmp.fused_optimizer, dense])
    return dmp, optimizer, dense, sharding_plan


class Trainer:
    def __init__(self, lakehouse: Lakehouse, cfg: RunConfig, ctx: DistContext, run_id: str, *,
                 plan: DataPlan, recorder: RunRecorder):
        self.lakehouse, self.cfg, self.ctx, self.run_id = lakehouse, cfg, ctx, run_id
        self.plan, self.recorder = plan, recorder
        self.model = create_model(cfg, plan)  # sharded in prepare(), after the data checks
        self.features = self.model.features
        self.checkpoints = CheckpointManager(
            Path(lakehouse.path("training/checkpoints")) / run_id, rank=ctx.rank, keep=cfg.train.keep_checkpoints)
        self.state = TrainerState()
        fail_at = os.environ.get(FAIL_AT_STEP_ENV)
        self.fail_at_step = int(fail_at) if fail_at else None
        self.fail_rank = int(os.environ.get(FAIL_RANK_ENV, "1"))

    def log(self, message: str) -> None:
        if self.ctx.rank == 0:
            print(f"[train {self.run_id}] {message}", flush=True)

    # ------------------------------------------------------------------ checks and model
    def prepare(self) -> None:
        self.model.prepare_data(self.plan.files["train"])
        for split in SPLITS:
            check_shardable(self.plan.files[split], self.ctx.world_size)
            check_index_ranges(self.plan.files[split], self.features, self.plan.table_sizes)
        if self.model.config.mba_lambda > 0:
            counts = id_frequencies(self.plan.files["train"], self.features, self.plan.table_sizes)
            self.model.set_frequencies({table: torch.from_numpy(n) for table, n in counts.items()})
        self.dmp, self.optimizer, self.dense_optimizer, sharding_plan = shard_model(self.model, self.cfg, self.ctx)
        self.log(f"sharding plan:\n{sharding_plan}")

    def checkpoint_state(self) -> dict[str, Any]:
        # the trainer's position travels as one JSON string: DCP flattens nested containers, and an empty list
        # or a None would otherwise leave no key to load back
        # per rank: the loss sums and the random state differ between ranks (an object saved under a key that every
        # rank has is written by one rank only)
        return {"model": self.dmp.state_dict(), "optim": self.optimizer.state_dict(),
                f"trainer/rank{self.ctx.rank}": json.dumps(self.state.as_dict()),
                f"rng/rank{self.ctx.rank}": rng_state()}

    def save_checkpoint(self) -> None:
        self.sync_buffers()  # replicated tensors are written by one rank (DCP picks which): make them equal first
        self.checkpoints.save(self.state.global_step, self.checkpoint_state(), best_step=self.state.best_step)
        if self.ctx.rank == 0:
            self.recorder.upsert(best_step=self.state.best_step, best_metric=self.state.best_value)

    def restore(self, *, reset_optimizer: bool = False) -> None:
        path, skipped = self.checkpoints.latest()
        for item in skipped:
            self.log(f"skipping checkpoint {item.path}: {item.reason}")
        if path is None:
            self.log("no complete checkpoint: starting from the beginning")
            return
        if not reset_optimizer:
            # Adam's state is created at its first step; DCP loads in place, so it must exist first (a step with
            # zero gradients leaves the weights as they are; the loaded state then replaces its moments and count)
            self.dense_optimizer.init_state()
        state = self.checkpoint_state()
        if reset_optimizer:
            del state["optim"]
        self.checkpoints.load(path, state)
        self.dmp.load_state_dict(state["model"])
        if not reset_optimizer:
            self.optimizer.load_state_dict(state["optim"])
        self.state = TrainerState(**json.loads(state[f"trainer/rank{self.ctx.rank}"]))
        set_rng_state(state[f"rng/rank{self.ctx.rank}"])
        self.log(f"resumed from {path} (epoch {self.state.epoch}, step {self.state.step_in_epoch} of it, "
                 f"global step {self.state.global_step})")

    def initialise_from(self, sources: list[str]) -> None:
        """Copy the embedding tables this model shares (same name and shape) with each source run's best checkpoint.

        For pre-training: NAIS's p and q from a FISM run; NeuMF's GMF and MLP tables from a GMF and an NCF-MLP run
        (a later source wins a table both have). A model with a ``load_pretrained(dense)`` method also gets each
        source's dense tensors (``{source model name: {parameter name: tensor}}``), e.g. NeuMF's tower and fused
        head. Every rank reads the same records and checkpoints; a source that did not succeed, or that shares no
        table with this model, is an error.
        """
        from torchrec.distributed.model_parallel import get_unwrapped_module

        dense: dict[str, dict[str, torch.Tensor]] = {}
        for source_run in sources:
            model_name, tensors = self._copy_tables_from(source_run)
            dense[model_name] = tensors
        hook = getattr(get_unwrapped_module(self.dmp), "load_pretrained", None)
        if callable(hook):
            with torch.no_grad():
                message = hook(dense)
            if message:
                self.log(message)

    def _copy_tables_from(self, source_run: str) -> tuple[str, dict[str, torch.Tensor]]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        previous = RunRecorder(self.lakehouse, source_run).previous()
        if previous is None or previous["status"] != "succeeded":
            state = "not in training/runs" if previous is None else f"recorded as {previous['status']}"
            raise TrainingInputError(f"train.init_from={source_run!r}: that run is {state}; it must have succeeded")
        source = CheckpointManager(Path(self.lakehouse.path("training/checkpoints")) / source_run, rank=self.ctx.rank)
        path = source.path_for(previous["best_step"]) if previous["best_step"] is not None else None
        if path is None or not (path / ".metadata").is_file():
            path = source.latest()[0]
        if path is None:
            raise TrainingInputError(f"train.init_from={source_run!r}: no complete checkpoint in {source.directory}")
        saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
        # matched by table name: the source may group its tables into other lookups (model.shared_lookup_max_rows)
        source_keys = table_keys(key.removeprefix("model.") for key in saved if key.startswith("model."))
        wanted, targets, skipped = {}, {}, []  # source key -> this run's tensor; source key -> this run's key
        for key, tensor in self.dmp.state_dict().items():
            table = table_of_key(key)
            if table is None:
                continue
            source_key = source_keys.get(table)
            meta = saved.get(f"model.{source_key}") if source_key else None
            if meta is not None and tuple(getattr(meta, "size", ())) == tuple(tensor.size()):
                wanted[source_key], targets[source_key] = tensor, key
            else:
                skipped.append(table)
        if not wanted:
            raise TrainingInputError(f"train.init_from={source_run!r}: its checkpoint {path} has none of this "
                                     f"model's tables {sorted(self.model.table_sizes)} with the same shape")
        # the source's dense tensors (its replicated parameters and buffers), for load_pretrained
        dense = {key.removeprefix("model."): torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
                 for key, meta in saved.items()
                 if key.startswith("model.") and table_of_key(key) is None
                 and isinstance(meta, TensorStorageMetadata) and len(meta.chunks) == 1}
        state = self.checkpoints.load(path, {"model": {**wanted, **dense}})  # in place, into these tensors
        full = self.dmp.state_dict()  # TorchRec's load hooks want every table's key, even with strict=False
        full.update({targets[key]: value for key, value in state["model"].items() if key in targets})
        self.dmp.load_state_dict(full)
        self.log(f"initialised {sorted(targets.values())} from {path}"
                 + (f"; not in it (or another shape): {skipped}" if skipped else ""))
        stripped = {}
        for key, value in dense.items():
            while key.startswith(("module.", "_dmp_wrapped_module.")):  # DMP / DDP wrappers' prefixes
                key = key.split(".", 1)[1]
            stripped[key] = value
        return str(previous["model"]), stripped

    # ------------------------------------------------------------------ loops
    def batches(self, split: str, *, epoch: int, train: bool):
        size = self.cfg.data.batch_size if train else self.cfg.data.eval_batch_size
        source = read_batches(self.plan.files[split], self.features, size, rank=self.ctx.rank,
                              world_size=self.ctx.world_size, seed=self.cfg.train.seed, epoch=epoch, shuffle=train,
                              drop_last=train, prefetch=self.cfg.data.prefetch)
        return synchronised(source, mode="train" if train else "eval", features=self.features,
                            device=self.ctx.device)

    def train_epoch(self) -> dict[str, float]:
        """Train the rest of the current epoch.

        Returns the epoch's mean training loss over all ranks, the throughput of this (part of the) epoch in samples
        per second over all ranks (reader included), and the largest peak RSS of a rank so far (MiB).
        """
        from tqdm import tqdm

        state, cfg = self.state, self.cfg
        skip = state.step_in_epoch
        bar = tqdm(desc=f"epoch {state.epoch}", unit="batch", disable=not (cfg.train.progress and self.ctx.rank == 0),
                   initial=skip, dynamic_ncols=True, mininterval=1.0)
        started, samples = time.perf_counter(), 0
        self.dmp.train()
        with contextlib.closing(self.batches("train", epoch=state.epoch, train=True)) as batches:
            for index, batch in enumerate(batches):
                if index < skip:
                    continue  # a resumed epoch replays the same batches up to where the checkpoint was taken
                if cfg.train.max_steps_per_epoch is not None and index >= cfg.train.max_steps_per_epoch:
                    break
                batch = batch.to(self.ctx.device, non_blocking=True)
                output = self.dmp(batch.sparse, batch.labels)
                targets = batch.labels if output.targets is None else output.targets
                loss = F.binary_cross_entropy_with_logits(output.logits, targets)
                total = loss + output.regularization + output.aux_loss
                self.optimizer.zero_grad()
                total.backward()
                self.optimizer.step()
                state.step_in_epoch += 1
                state.global_step += 1
                state.loss_sum += loss.item()
                state.loss_batches += 1
                samples += len(batch)
                elapsed = time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}",
                                samples_s=f"{samples * self.ctx.world_size / max(elapsed, 1e-9):,.0f}")
                every = cfg.train.checkpoint_every_steps
                if every and state.global_step % every == 0:
                    self.save_checkpoint()
                if self.fail_at_step == state.global_step and self.ctx.rank == self.fail_rank:
                    bar.close()
                    print(f"[rank {self.ctx.rank}] fault injection: exiting at step {state.global_step}", flush=True)
                    os._exit(3)
        bar.close()
        if state.step_in_epoch == 0:
            raise TrainingInputError("the train split gave no full batch on some rank: lower data.batch_size or use "
                                     "fewer ranks")
        seconds = time.perf_counter() - started
        totals = torch.tensor([state.loss_sum, float(state.loss_batches), float(samples)], dtype=torch.float64)
        dist.all_reduce(totals)
        peak = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0], dtype=torch.float64)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        summary = {"loss": float(totals[0] / totals[1]), "samples_per_second": float(totals[2]) / max(seconds, 1e-9),
                   "peak_rss_mib": float(peak[0])}
        self.log(f"epoch {state.epoch}: {state.step_in_epoch} steps, mean loss {summary['loss']:.4f}, "
                 f"{summary['samples_per_second']:,.0f} samples/s, peak RSS {summary['peak_rss_mib']:,.0f} MiB")
        return summary

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (Dice's running statistics) before evaluating and checkpointing.

        TorchRec wraps the dense part in DDP with ``broadcast_buffers=False``, so each rank updates its own running
        statistics from its own batches. A checkpoint stores one copy of a replicated tensor, written by whichever
        rank DCP picks; syncing first makes that copy, and every evaluation, the same on a resumed run as on an
        uninterrupted one.
        """
        if self.ctx.world_size == 1:
            return
        for _, buffer in self.dmp.named_buffers():
            if buffer.is_floating_point() or buffer.dtype in (torch.int64, torch.int32):
                dist.broadcast(buffer.data, src=0)

    @torch.no_grad()
    def evaluate(self, split: str, *, collect: bool = False) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
        metrics = CTRMetrics().to(self.ctx.device)
        kept: dict[str, list[np.ndarray]] = {"sample_id": [], "user_idx": [], "score": [], "label": []}
        self.sync_buffers()
        self.dmp.eval()
        try:
            with contextlib.closing(self.batches(split, epoch=0, train=False)) as batches:
                for batch in batches:
                    batch = batch.to(self.ctx.device, non_blocking=True)
                    logits = self.dmp(batch.sparse).logits
                    real = batch.weights > 0
                    metrics.update(logits[real], batch.labels[real], batch.groups[real])
                    if collect and bool(real.any()):
                        real_cpu = real.cpu().numpy()
                        kept["sample_id"].append(np.asarray(batch.sample_ids)[real_cpu])
                        kept["user_idx"].append(batch.groups[real].cpu().numpy())
                        kept["score"].append(torch.sigmoid(logits[real]).double().cpu().numpy())
                        kept["label"].append(batch.labels[real].cpu().numpy())
            values = metrics.compute()
        finally:
            self.dmp.train()
        predictions = None
        if collect:
            predictions = {key: (np.concatenate(parts) if parts else np.empty(0)) for key, parts in kept.items()}
        return values, predictions

    def improved(self, value: float) -> bool:
        best = self.state.best_value
        if math.isnan(value):
            return False
        if best is None:
            return True
        return value < best if self.cfg.train.early_stopping_metric == "logloss" else value > best

    def fit(self) -> None:
        state, cfg = self.state, self.cfg
        while not state.finished:
            train_summary = self.train_epoch()
            valid, _ = self.evaluate("valid")
            self.log(f"epoch {state.epoch} valid: " + ", ".join(f"{k} {v:.4f}" for k, v in valid.items()))
            if self.ctx.rank == 0:
                self.recorder.metrics("epoch", state.epoch, state.global_step,
                                      {"train": train_summary, "valid": valid})
            value = valid[cfg.train.early_stopping_metric]
            if self.improved(value):
                state.best_step, state.best_value, state.bad_epochs = state.global_step, value, 0
            else:
                state.bad_epochs += 1
            state.history.append({"epoch": state.epoch, "step": state.global_step, **valid})
            patience = cfg.train.early_stopping_patience
            state.stopped_early = patience > 0 and state.bad_epochs >= patience
            state.epoch += 1
            state.step_in_epoch, state.loss_sum, state.loss_batches = 0, 0.0, 0
            state.finished = state.stopped_early or state.epoch >= cfg.train.epochs
            self.save_checkpoint()
            if state.stopped_early:
                self.log(f"early stop: valid {cfg.train.early_stopping_metric} did not improve for "
                         f"{state.bad_epochs} epoch(s)")

    @torch.no_grad()
    def rank_evaluate(self) -> dict[str, float] | None:
        """HR@K and NDCG@K on ``features/rank_eval`` (the positive against its sampled negatives), over all ranks.

        Every rank_eval row becomes one ordinary row per candidate (:func:`training.reader.expand_candidates`), so
        any model scores them as it scores samples; batches hold whole users. Ties count against the positive.
        """
        width, k = self.plan.rank_candidates, self.cfg.train.rank_k
        if not self.plan.rank_eval_files or width < 1:
            return None
        size = max(1, self.cfg.data.eval_batch_size // width) * width
        source = read_batches(self.plan.rank_eval_files, self.features, size, rank=self.ctx.rank,
                              world_size=self.ctx.world_size, shuffle=False, prefetch=self.cfg.data.prefetch,
                              shard="rows", candidates=True)
        totals = torch.zeros(3, dtype=torch.float64)  # users, hits, ndcg gains
        self.sync_buffers()
        self.dmp.eval()
        try:
            with contextlib.closing(synchronised(source, mode="eval", features=self.features,
                                                 device=self.ctx.device)) as batches:
                for batch in batches:
                    real = batch.weights > 0
                    logits = self.dmp(batch.sparse).logits
                    if not bool(real.any()):
                        continue
                    scores = logits[real].double().view(-1, width).cpu()
                    users = scores.shape[0]
                    totals += torch.tensor([users, float(hit_rate_at_k(scores, k)) * users,
                                            float(ndcg_at_k(scores, k)) * users], dtype=torch.float64)
        finally:
            self.dmp.train()
        dist.all_reduce(totals)
        users = int(totals[0])
        if users == 0:
            return None
        return {f"hr_at_{k}": float(totals[1]) / users, f"ndcg_at_{k}": float(totals[2]) / users,
                "rank_users": float(users), "rank_candidates": float(width)}

    def data_metrics(self) -> dict[str, float]:
        """Facts of the training split worth keeping with the run: the share of DIEN's auxiliary negatives that
        came from the catalogue sampler instead of a real exposure (models that read ``neg_*``)."""
        if "neg_item" not in self.features:
            return {}
        sampled, steps = negative_fallback_counts(self.plan.files["train"])
        return {"neg_steps": float(steps), "neg_fallback_share": sampled / steps if steps else float("nan")}

    @torch.no_grad()
    def export_item_vectors(self, chunk: int = 4096) -> int:
        """Write the item tower's vector of every item in the samples to ``training/item_vectors`` (all ranks).

        Items are taken in chunks, chunk c on rank c % world_size; every rank runs the same number of steps (the
        lookups are collective), a rank without a chunk scoring one padding row that it throws away.
        """
        from torchrec.distributed.model_parallel import get_unwrapped_module
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        names = self.model.item_features
        columns = [FEATURES[name].column for name in names]
        files = sorted({uri for split in SPLITS for uri in self.plan.files[split]})
        items = distinct_items(files, columns)
        total = len(items["item_idx"])
        starts = list(range(0, total, chunk))[self.ctx.rank::self.ctx.world_size]
        steps = math.ceil(math.ceil(total / chunk) / self.ctx.world_size)
        module = get_unwrapped_module(self.dmp)
        module.eval()
        kept_ids, kept_vectors = [], []
        try:
            for step in range(steps):
                start = starts[step] if step < len(starts) else None
                rows = slice(start, start + chunk) if start is not None else slice(0, 0)
                values = [torch.as_tensor(items[column][rows], dtype=torch.int64) for column in columns]
                n = len(values[0]) if values else 0
                if n == 0:  # padding id 0 in every table: scored, then dropped
                    values, n = [torch.zeros(1, dtype=torch.int64) for _ in columns], 1
                sparse = KeyedJaggedTensor.from_lengths_sync(
                    keys=list(names), values=torch.cat(values),
                    lengths=torch.ones(n * len(names), dtype=torch.int32)).to(self.ctx.device)
                vectors = module.item_vectors(sparse)
                if start is not None:
                    kept_ids.append(items["item_idx"][rows])
                    kept_vectors.append(vectors.float().cpu().numpy())
        finally:
            module.train()
        ids = np.concatenate(kept_ids) if kept_ids else np.empty(0, dtype=np.int64)
        vectors = np.concatenate(kept_vectors) if kept_vectors else np.empty((0, 0), dtype=np.float32)
        if self.ctx.rank == 0 and not self.lakehouse.exists(ITEM_VECTORS_TABLE):
            self.lakehouse.write_arrow(ITEM_VECTORS.empty_table(), ITEM_VECTORS_TABLE, mode="append",
                                       partition_by=["run_id"])
        dist.barrier()
        write_item_vectors(self.lakehouse, self.run_id, self.ctx.rank, ids, vectors)
        dist.barrier()
        self.log(f"wrote {total:,} item vectors to {ITEM_VECTORS_TABLE}")
        return total

    def finish(self) -> dict[str, dict[str, float]]:
        """Evaluate the best checkpoint on valid and test; write final metrics and test predictions."""
        best = self.state.best_step
        if best is not None and best != self.state.global_step:
            model_state = {"model": self.dmp.state_dict()}
            self.checkpoints.load(self.checkpoints.path_for(best), model_state)
            self.dmp.load_state_dict(model_state["model"])
            self.log(f"loaded the best checkpoint (step {best}) for the final evaluation")
        valid, _ = self.evaluate("valid")
        test, predictions = self.evaluate("test", collect=True)
        final = {"valid": valid, "test": test}
        ranking = self.rank_evaluate()
        if ranking is not None:
            final["rank_eval"] = ranking
        if self.ctx.rank == 0:
            if not self.lakehouse.exists(PREDICTIONS_TABLE):  # rank 0 creates it, so ranks never race to
                self.lakehouse.write_arrow(PREDICTIONS.empty_table(), PREDICTIONS_TABLE, mode="append",
                                           partition_by=["run_id"])
            self.recorder.metrics("final", FINAL_EPOCH, self.state.global_step, final)
        dist.barrier()
        assert predictions is not None
        self.recorder.predictions(self.ctx.rank, predictions["sample_id"], predictions["user_idx"],
                                  predictions["score"], predictions["label"])
        dist.barrier()
        if self.model.item_features:
            self.export_item_vectors()
        for split, values in final.items():
            self.log(f"final {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        return final


# ---------------------------------------------------------------------------------------------------- entry point
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True, help="lakehouse root with features/samples, split and vocab")
    parser.add_argument("--model", choices=sorted(MODELS), help="model to train (not with --resume)")
    parser.add_argument("--config", type=Path, help="YAML file overriding the model's defaults")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. train.epochs=2 or model.embedding_dim=8")
    parser.add_argument("--run-id", help="id for a new run (default: model-timestamp-random)")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue this run from its newest complete checkpoint")
    parser.add_argument("--reset-optimizer", action="store_true",
                        help="with --resume: load the weights but start the optimizers afresh (the result then "
                             "differs from an uninterrupted run)")
    args = parser.parse_args(argv)
    if args.reset_optimizer and not args.resume:
        parser.error("--reset-optimizer needs --resume RUN_ID")
    if args.resume and (args.model or args.config or args.set or args.run_id):
        parser.error("--resume takes the recorded configuration: do not pass --model, --config, --set or --run-id")
    if not args.resume and not args.model:
        parser.error("--model is required (or --resume RUN_ID)")
    return args


def _prepare_run(args: argparse.Namespace, lakehouse: Lakehouse) -> tuple[RunConfig, str, dict[str, Any], int]:
    """Rank 0: the config, run id, pinned data versions and attempt number (from the record when resuming)."""
    if "://" in lakehouse.root:
        # checkpoints go through pathlib and DCP's file-system writer: under a URI they would land in a local
        # folder named after it on each node, where no other node (and no resume elsewhere) finds them
        raise TrainingInputError(f"training writes its checkpoints under the lakehouse, which must be a file system "
                                 f"path, not {lakehouse.root}: mount the storage (on several nodes, the same shared "
                                 "mount at the same path on each)")
    if args.resume:
        previous = RunRecorder(lakehouse, args.resume).previous()
        if previous is None:
            raise TrainingInputError(f"no run {args.resume!r} in training/runs of {lakehouse.root}")
        if previous["status"] == "succeeded":
            raise TrainingInputError(f"run {args.resume!r} already succeeded; start a new run instead")
        cfg = RunConfig.model_validate(json.loads(previous["config"]))
        versions = {"version": previous["feature_version"], "split_version": previous["split_version"],
                    "vocab_version": previous["vocab_version"],
                    "rank_eval_version": json.loads(previous["splits"] or "{}").get("rank_eval_version")}
        return cfg, args.resume, versions, int(previous["attempt"]) + 1
    cfg = load_config(args.model, args.config, args.set)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    run_id = args.run_id or f"{args.model}-{stamp}-{uuid.uuid4().hex[:6]}"
    if RunRecorder(lakehouse, run_id).previous() is not None:
        raise TrainingInputError(f"run {run_id!r} already exists in training/runs: continue it with --resume "
                                 f"{run_id} or choose another --run-id")
    return cfg, run_id, {"version": cfg.data.version}, 1


def _set_sigterm(handler: Any) -> None:
    if threading.current_thread() is threading.main_thread():  # Python takes signal handlers only there
        signal.signal(signal.SIGTERM, handler)


class FailureGuard:
    """Records a failed run in ``training/runs`` once, however the failure arrives.

    Rank 0 writes the record. When one rank dies, torchrun sends SIGTERM to the others, often while rank 0 is
    already handling the collective's error from the same death. The record must not be cut short by that signal:
    SIGTERM is ignored from the moment a failure is being recorded, and a SIGTERM that arrives first records the
    failure itself before it stops the rank.

    Rank 0 may be the one that is gone (its node died, or it was killed outright). Then the deputy, the first rank
    of the second node (rank 1 on a single node), writes the record: it closes its process group, so that a rank 0
    still alive learns of the failure at once, waits up to ``deputy_wait_s`` for rank 0's record, and writes its
    own only if this attempt still shows as ``running``. Had both of them died, the run stays ``running`` with a
    stale ``updated_at`` (see ``training.records``); ``--resume`` continues it all the same.
    """

    def __init__(self, deputy_wait_s: float = 10.0) -> None:
        self.ctx: DistContext | None = None
        self.recorder: RunRecorder | None = None
        self.attempt: int | None = None
        self.deputy_wait_s = deputy_wait_s
        self.settled = False  # the run's final status is written (or being written)

    def install(self) -> None:
        _set_sigterm(self.on_sigterm)

    def on_sigterm(self, signum: int, frame: Any) -> None:
        self.record("".join(traceback.format_stack(frame, limit=8))  # where it was, then why
                    + f"terminated by signal {signum} (torchrun stops every rank when one fails)")
        raise SystemExit(f"terminated by signal {signum}")

    def succeeded(self, **fields: Any) -> None:
        if self.ctx is not None and self.ctx.rank == 0 and self.recorder is not None:
            self.recorder.upsert(status="succeeded", finished_at=dt.datetime.now(dt.UTC), **fields)
        self.settled = True

    def record(self, error: str) -> None:
        _set_sigterm(signal.SIG_IGN)  # the process is ending anyway: finish the record first
        if self.settled:
            return
        self.settled = True
        ctx, recorder = self.ctx, self.recorder
        if ctx is None or recorder is None:
            return
        try:
            if ctx.rank == 0 and recorder.row:
                recorder.upsert(status="failed", finished_at=dt.datetime.now(dt.UTC), error=error[-4000:])
            elif ctx.rank == ctx.deputy:
                self._record_if_rank0_does_not(error)
        except Exception as err:  # the original error matters more than this one
            print(f"training: could not record the failure in training/runs: {err}", file=sys.stderr)

    def _record_if_rank0_does_not(self, error: str) -> None:
        assert self.ctx is not None and self.recorder is not None
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
        deadline = time.monotonic() + self.deputy_wait_s
        while True:
            row = self.recorder.previous()
            if row is None or row["attempt"] != self.attempt or row["status"] != "running":
                return  # rank 0 has recorded it (or this attempt never got as far as its record)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        self.recorder.row = dict(row)
        note = (f"rank 0 did not record this failure within {self.deputy_wait_s:g} s (its node may be gone); "
                f"rank {self.ctx.rank} on {socket.gethostname()} saw:\n")
        self.recorder.upsert(status="failed", finished_at=dt.datetime.now(dt.UTC), error=note + error[-3500:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lakehouse = Lakehouse(args.lakehouse)
    guard = FailureGuard()
    guard.install()  # torchrun stops the surviving ranks with SIGTERM: the run is recorded as failed
    owns_group = False
    try:
        owns_group = init_process_group()
        prepared: Any = None
        if dist.get_rank() == 0:
            try:
                prepared = _prepare_run(args, lakehouse)
            except (ConfigError, TrainingInputError) as err:
                prepared = err  # every rank must learn of it, or the others wait forever
        cfg, run_id, versions, attempt = broadcast(prepared, dist.get_rank())
        guard.attempt = attempt
        ctx = guard.ctx = make_context(cfg.train.device, cfg.train.cpu_threads)
        recorder = guard.recorder = RunRecorder(lakehouse, run_id)
        plan_or_error: Any = None
        if ctx.rank == 0:
            try:
                plan_or_error = resolve_data(lakehouse, cfg, **versions)
            except Exception as err:  # every rank must learn of it, or the others wait forever
                plan_or_error = TrainingInputError(str(err)) if not isinstance(err, TrainingInputError) else err
        plan: DataPlan = broadcast(plan_or_error, ctx.rank)
        if ctx.rank == 0:
            recorder.upsert(
                model=cfg.model_name, status="running", attempt=attempt, config=config_json(cfg),
                feature_table=plan.table, feature_version=plan.version, split_table=plan.split_table,
                split_version=plan.split_version, vocab_version=plan.vocab_version, splits=plan.describe(),
                code_version=code_version(), torch_version=torch.__version__, devices=ctx.describe(),
                world_size=ctx.world_size, started_at=dt.datetime.now(dt.UTC), finished_at=None,
                checkpoint_dir=str(Path(lakehouse.path("training/checkpoints")) / run_id), error=None,
            )
        trainer = Trainer(lakehouse, cfg, ctx, run_id, plan=plan, recorder=recorder)
        trainer.log(f"{'resuming' if args.resume else 'starting'} run on {ctx.describe()}: {cfg.data.table} "
                    f"version {plan.version}, splits {plan.days}")
        trainer.prepare()
        if ctx.rank == 0:
            facts = trainer.data_metrics()
            if facts:
                recorder.metrics("data", FINAL_EPOCH, 0, {"train": facts})
        if cfg.train.init_from and not args.resume:  # a resumed run's own checkpoint holds the initialised tables
            trainer.initialise_from(cfg.train.init_from)
        if args.resume:
            trainer.restore(reset_optimizer=args.reset_optimizer)
        trainer.fit()
        final = trainer.finish()
        guard.succeeded(best_step=trainer.state.best_step, best_metric=trainer.state.best_value)
        if ctx.rank == 0:
            print(json.dumps({"run_id": run_id, **{f"{split}_{k}": v for split, values in final.items()
                                                   for k, v in values.items()}}, sort_keys=True))
        return 0
    except INPUT_ERRORS as err:
        guard.record(str(err))
        print(f"training: {err}", file=sys.stderr)
        return 1
    except BaseException:
        guard.record(traceback.format_exc())
        raise
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
