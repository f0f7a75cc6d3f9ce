"""What every CTR model shares: its output, the shared embedding tables, and DIN's mini-batch aware regulariser.

Models take a :class:`training.reader.Batch`'s ``KeyedJaggedTensor`` and return :class:`ModelOutput`. They hold
no optimiser, device, IO or target loss: the training loop adds ``regularization`` and ``aux_loss`` to its loss.
(A model's own extra terms, such as DIEN's auxiliary loss, need the model's internals, so they travel in the
output rather than being recomputed outside.)

Embeddings: one table per id field (``item``, ``cate``, ...), each table serving every feature of that field
(target item, history, negatives, sets: DESIGN.md section 5). The tables live in TorchRec
``EmbeddingBagCollection``s (``ModelConfig.shared_lookup_max_rows``: the small tables in one, each big table in
its own), built on the ``meta`` device; ``DistributedModelParallel`` materialises their shards. A batch looks each
table up with its distinct ids, one bag of one id per distinct id (:meth:`CTRModel.lookup`): a bag of one row
pools to that row, so the model gets exactly the rows an unpooled ``EmbeddingCollection`` would give. Bags,
because FBGEMM's fused CPU backward is about 9 times faster for pooled lookups than for unpooled ones (it keeps a
hash map of per-row vectors for the latter: ``benchmarks.embedding_kernels``, BENCHMARKS.md), and that backward
was the largest part of a DIN step.

FBGEMM's fused table-batched kernels (what TorchRec shards onto) need the embedding dimension to be a multiple of
4 (``AssertionError: embedding_dim must be a multiple of 4, but got 18``). A table is therefore stored with its
dimension rounded up (18 -> 20) and :meth:`CTRModel.lookup` hands the model only the first ``embedding_dim``
columns: the extra columns are never read, so they get no gradient and no update (element-wise optimizers), and
the model is exactly the D-dimensional one.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, JaggedTensor, KeyedJaggedTensor, PoolingType

from training.features import tables_of
from training.layers.jagged import segment_ids

#: name of the lookup group of the small tables (``ModelConfig.shared_lookup_max_rows``)
SHARED_GROUP = "shared"


def _ids_feature(table: str) -> str:
    """The one feature of ``table`` in its lookup group: the batch's distinct ids of that table."""
    return f"{table}.ids"


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # [B] (or [B + extra] with ``targets``)
    regularization: torch.Tensor  # scalar, already multiplied by its weight; 0 when the model has none
    aux_loss: torch.Tensor  # scalar, already multiplied by its weight; 0 when the model has none
    # labels of ``logits`` when the model scores rows of its own besides the batch's (NAIS's sampled negatives, in
    # training only); None: ``logits`` are the batch's rows and the batch's labels apply
    targets: torch.Tensor | None = None


class ModelConfig(BaseModel):
    """Base of the per-model configs (the ``model:`` section); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding_dim: int = Field(default=18, ge=1)
    mba_lambda: float = Field(default=0.0, ge=0, description="mini-batch aware L2 weight (DIN); 0 turns it off")
    # Tables of at most this many rows share one lookup (one EmbeddingBagCollection: one set of all-to-alls per
    # step for all of them); a bigger table gets a lookup of its own, so that its many distinct ids per batch do
    # not pad the small tables' lookups (a KJT has one stride for all of its keys). 8 tables in 8 lookups cost
    # DIN about 20 % of its speed on 2 CPU ranks against 3 lookups (BENCHMARKS.md). The rows looked up are the
    # same either way; only the random initial weights differ (the tables are initialised in another order).
    shared_lookup_max_rows: int = Field(default=4096, ge=0,
                                        description="tables up to this size share one embedding lookup")


class CTRModel(nn.Module):
    """Base class: subclasses set ``name``, ``config_class`` and ``features`` and implement ``forward``."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    #: the KJT keys the model reads, in the reader's order (training.features names)
    features: tuple[str, ...]

    def __init__(self, config: ModelConfig, table_sizes: dict[str, int], features: tuple[str, ...],
                 embedding_device: torch.device | None = None):
        super().__init__()
        self.config = config
        self.features = features
        self.table_features = tables_of(list(features))
        missing = [table for table in self.table_features if table not in table_sizes]
        if missing:
            raise ValueError(f"no size given for embedding table(s) {missing}")
        self.table_sizes = {table: int(table_sizes[table]) for table in self.table_features}
        self.storage_dim = -(-config.embedding_dim // 4) * 4
        # tables -> lookup groups (see ModelConfig.shared_lookup_max_rows): one EmbeddingBagCollection per group
        self.table_groups: dict[str, list[str]] = {}
        for table, size in self.table_sizes.items():
            group = SHARED_GROUP if size <= config.shared_lookup_max_rows else table
            self.table_groups.setdefault(group, []).append(table)
        self.embeddings = nn.ModuleDict({
            group: EmbeddingBagCollection(
                tables=[EmbeddingBagConfig(name=table, embedding_dim=self.storage_dim,
                                           num_embeddings=self.table_sizes[table],
                                           feature_names=[_ids_feature(table)], pooling=PoolingType.SUM)
                        for table in tables],
                # meta: DistributedModelParallel allocates each shard where it lives (tests pass "cpu")
                device=embedding_device or torch.device("meta"))
            for group, tables in self.table_groups.items()
        })
        # 1 / n_j per table for the mini-batch aware regulariser; plain attributes (not buffers), so they are
        # neither checkpointed nor broadcast by DDP every step. Set by the trainer from the training split.
        self.inverse_frequencies: dict[str, torch.Tensor] = {}
        self._distinct_rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ helpers for subclasses
    def lookup(self, sparse: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
        """feature -> JaggedTensor of [N, D] embeddings (the used columns of the stored rows).

        Each table is looked up once per batch with its distinct ids (all of its features together: the target
        item and the history items are the same rows); the result is gathered back per feature. Popular items
        and categories repeat many times in a batch's histories, so this cuts the lookups, the all-to-all traffic
        and, above all, the fused backward (its cost grows with the ids it receives). TorchRec's own index dedup
        does the same but has only a CUDA kernel.

        The distinct ids go to each lookup group's ``EmbeddingBagCollection`` as bags of one id. A KJT has one
        stride (number of bags) for all of its keys, so every table of a group gets the group's largest count of
        distinct ids and the surplus bags are empty (they pool to zeros, which are dropped). Ranks may send
        different counts: TorchRec's all-to-alls take a batch size per rank.
        """
        present = set(sparse.keys())  # a partial batch (an item tower's items) leaves the other tables empty
        table_features = {table: [n for n in names if n in present] for table, names in self.table_features.items()}
        uniques, inverses = {}, {}
        for table, names in table_features.items():
            ids = torch.cat([sparse[name].values() for name in names]) if names else sparse.values()[:0]
            uniques[table], inverses[table] = torch.unique(ids, sorted=False, return_inverse=True)
        rows_of: dict[str, torch.Tensor] = {}
        for group, tables in self.table_groups.items():
            # one bag of one id per distinct id; every table of a group gets the group's largest count of bags
            # (the KJT's stride), the extra bags empty; at least one bag, as every rank takes part in the lookup
            counts = [len(uniques[table]) for table in tables]
            stride = max(1, *counts)
            lengths = torch.zeros(len(tables), stride, dtype=torch.int32, device=sparse.values().device)
            for position, count in enumerate(counts):
                lengths[position, :count] = 1
            bags = KeyedJaggedTensor(keys=[_ids_feature(table) for table in tables],
                                     values=torch.cat([uniques[table] for table in tables]), lengths=lengths.view(-1),
                                     stride=stride)
            pooled = self.embeddings[group](bags).to_dict()
            for table, count in zip(tables, counts, strict=True):
                rows_of[table] = pooled[_ids_feature(table)][:count]
        dim = self.config.embedding_dim
        result: dict[str, JaggedTensor] = {}
        self._distinct_rows = {}
        for table, names in table_features.items():
            rows = rows_of[table]
            if dim != self.storage_dim:
                rows = rows[:, :dim]
            self._distinct_rows[table] = (rows, inverses[table])  # for mba_penalty on the distinct rows
            gathered = torch.index_select(rows, 0, inverses[table])
            lengths = [sparse[name].lengths() for name in names]
            parts = gathered.split([len(sparse[name].values()) for name in names])
            for name, part, length in zip(names, parts, lengths, strict=True):
                result[name] = JaggedTensor(values=part, lengths=length)
        return result

    def table_modules(self) -> dict[str, nn.Module]:
        """table -> the module holding its rows (``.weight``: ``[rows, storage_dim]`` before sharding; tests, tools)."""
        return {table: self.embeddings[group].embedding_bags[table]
                for group, tables in self.table_groups.items() for table in tables}

    @staticmethod
    def scalar(embedded: dict[str, JaggedTensor], name: str) -> torch.Tensor:
        """[B, D] embedding of a one-value-per-row feature."""
        return embedded[name].values()

    def set_frequencies(self, counts: dict[str, torch.Tensor | object]) -> None:
        """n_j per table (numbers of training samples using row j), for :meth:`mba_penalty`."""
        for table, count in counts.items():
            if table in self.table_sizes:
                tensor = torch.as_tensor(count, dtype=torch.float32)
                self.inverse_frequencies[table] = 1.0 / tensor.clamp(min=1.0)

    def mba_penalty(self, sparse: KeyedJaggedTensor, embedded: dict[str, JaggedTensor]) -> torch.Tensor:
        """DIN's mini-batch aware regulariser: λ · Σ_j (Σ_{x∈B} 1[x uses j] / n_j) · ||w_j||².

        Only rows looked up by the batch are regularised. Computed on the looked-up embeddings: every sample x
        that uses row j contributes ||w_j||² / n_j once, even when j appears several times in x (in the target
        and in the history, say), so each occurrence is weighted by 1 / (its multiplicity within the sample).
        """
        lam = self.config.mba_lambda
        if lam == 0.0 or not self.training:
            return torch.zeros((), device=sparse.values().device)
        total = torch.zeros((), device=sparse.values().device)
        for table, names in self.table_features.items():
            if table not in self.inverse_frequencies:
                raise RuntimeError(f"mba_lambda > 0 but no training frequencies were set for table {table!r}")
            # computed on the batch's distinct rows: coefficient_u = Σ over (sample, row u) pairs of 1 / n_u
            rows, inverse = self._distinct_rows[table]
            ids = torch.cat([sparse[name].values() for name in names])
            if ids.numel() == 0:
                continue
            samples = torch.cat([segment_ids(sparse[name].lengths()) for name in names])
            _, pair, counts = torch.unique(samples * len(rows) + inverse, return_inverse=True, return_counts=True)
            inverse_freq = self.inverse_frequencies[table].to(ids.device)
            # each occurrence weighs 1 / (n_j · its multiplicity within the sample): a sample counts once per row
            weights = inverse_freq[ids] / counts[pair].to(rows.dtype)
            coefficients = torch.zeros(len(rows), dtype=rows.dtype, device=rows.device).index_add_(0, inverse, weights)
            total = total + (coefficients * rows.pow(2).sum(dim=1)).sum()
        return lam * total

    # ------------------------------------------------------------------ optional hooks
    #: scalar features an item tower reads (two-tower models set it; the trainer then exports item vectors)
    item_features: ClassVar[tuple[str, ...]] = ()

    def prepare_data(self, train_files: list[str]) -> None:
        """Called once before sharding with the pinned training split's files (every rank, same files).

        For models that need statistics of the whole training data beyond a batch (AutoRec's item rating
        vectors). Build only plain tensors or buffers, deterministically, so a resumed run gets the same ones.
        """

    def item_vectors(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, d]`` item-tower vectors of a batch of items (keys: :attr:`item_features`, one value per row).

        Called on every rank at once (the embedding lookups are collective); only for models with
        ``item_features``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no item tower")

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        """Score the batch. ``labels`` ([B] float, training only) are for models that add rows of their own."""
        raise NotImplementedError  # pragma: no cover - abstract
