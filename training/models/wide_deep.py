"""Wide&Deep (Cheng et al., DLRS 2016): a linear model over raw and cross-product features, jointly with a DNN.

::

    wide  = Σ_i w_i x_i + Σ_k Σ_{(s, t) ∈ φ_k(x)} u[hash_k(s, t)]          the raw fields x and the crosses φ(x)
    deep  = w_deepᵀ a_L + b,  a_L = MLP hidden layers over [x_1 v_1; ...; x_F v_F]
    logit = wide + deep           i.e. σ(w_wideᵀ [x, φ(x)] + w_deepᵀ a_L + b) is the CTR

Raw fields (``fields``, default the scalar fields user, gender, age_bucket, city, item, cate, shop, brand and the
mean-pooled history hist_item, hist_cate, :mod:`training.models.fields`) feed both parts: each id has an
embedding v (deep) and a first-order weight w (wide), stored as one extra column of its table
(:func:`training.models.fields.with_linear_column`; ``self.config`` is the tables' config with D + 1,
``self.wide_deep_config`` the user's). The deep output layer's bias is b; the wide part has no bias of its own.

Cross-product features (``crosses``, default history item × target item and history category × target category):
a cross (a, b) of a feature a (scalar or sequence) and a scalar feature b makes one binary feature per distinct
pair (s, t) with s among the row's a ids and t its b id, the paper's φ_k(x) = Π_i x_i^{c_ki}: "the user clicked s
before, and the candidate is t". Their weights u live in one hashed table of ``cross_buckets`` rows shared by all
crosses (:class:`training.layers.product.HashedCrossWeights`, bucket = ``cross_hash(s, t, k)``, the cross's
number k salting the hash).

Why the cross weights are not a TorchRec table: a table's size comes from ``features/vocab`` in
``training.train.resolve_data`` (``TABLE_VOCAB_FIELD`` maps each table to a vocab field), and every table of
``training.features`` is read from a ``<table>_idx`` column of the samples; a hashed cross has neither a vocab
field (its size is the configured ``cross_buckets``) nor a column (its ids are computed from two columns). The
weights are therefore a dense ``nn.Embedding(cross_buckets, 1)`` inside the model (replicated on every rank,
trained by the dense optimizer; 2^18 rows are 1 MiB of float32).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torchrec import KeyedJaggedTensor

from training.layers.mlp import MLP
from training.layers.product import HashedCrossWeights
from training.models.common import CTRModel, ModelConfig, ModelOutput
from training.models.fields import (
    DEFAULT_FIELDS,
    FIELD_CHOICES,
    SCALAR_FIELDS,
    check_fields,
    field_embeddings,
    split_linear,
    with_linear_column,
)


class WideDeepConfig(ModelConfig):
    embedding_dim: int = Field(default=16, ge=1)
    fields: tuple[str, ...] = DEFAULT_FIELDS
    crosses: tuple[tuple[str, str], ...] = (("hist_item", "item"), ("hist_cate", "cate"))
    cross_buckets: int = Field(default=2**18, ge=1, description="rows of the hashed cross-product weight table")
    mlp_hidden: tuple[int, ...] = (256, 128)
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout after each hidden layer of the DNN")


class WideDeep(CTRModel):
    name = "wide_deep"
    config_class = WideDeepConfig

    def __init__(self, config: WideDeepConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        check_fields(self.name, config.fields)
        for left, right in config.crosses:
            if left not in FIELD_CHOICES or right not in SCALAR_FIELDS or left == right:
                raise ValueError(f"cross ({left}, {right}): the left side must be one of {FIELD_CHOICES} and the "
                                 f"right side another, scalar, feature of {SCALAR_FIELDS}")
        if len(set(config.crosses)) != len(config.crosses):
            raise ValueError(f"crosses are repeated: {list(config.crosses)}")
        features = tuple(dict.fromkeys((*config.fields, *(name for cross in config.crosses for name in cross))))
        super().__init__(with_linear_column(config), table_sizes, features, embedding_device)
        self.wide_deep_config = config
        self.factor_dim = config.embedding_dim
        self.cross = HashedCrossWeights(config.cross_buckets) if config.crosses else None
        self.mlp = MLP(len(config.fields) * config.embedding_dim, config.mlp_hidden,
                       activation=config.mlp_activation, dropout=config.dropout)

    def wide(self, sparse: KeyedJaggedTensor, w: torch.Tensor) -> torch.Tensor:
        """``[B]``: Σ_i w_i x_i (``w`` [B, F], already x-weighted) plus the crossed features' weights."""
        total = w.sum(dim=1)
        if self.cross is not None:
            total = total + self.cross([(sparse[left].values(), sparse[left].lengths(), sparse[right].values())
                                        for left, right in self.wide_deep_config.crosses])
        return total

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        v, w = split_linear(field_embeddings(embedded, self.wide_deep_config.fields), self.factor_dim)
        logits = self.wide(sparse, w) + self.mlp(v.flatten(1)).squeeze(1)
        return ModelOutput(logits, self.mba_penalty(sparse, embedded), torch.zeros((), device=logits.device))
