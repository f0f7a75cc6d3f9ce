"""Two-tower retrieval model: a user tower and an item tower, scored by their dot product (MODELS.md).

Notation: B rows, D = ``embedding_dim``, d = ``output_dim``, e(·) an id's embedding (shared tables: the item of
the item tower and the items of the user's history are rows of the same ``item`` table)::

    x_user = [e(user); e(gender); e(age_bucket); e(city); pool_j [e(h_j); e(c_j)]]      [B, 6D]
    x_item = [e(item); e(cate); e(shop); e(brand)]                                      [B, 4D]
    u = Tower_U(x_user),  v = Tower_I(x_item)                                           [B, d] each
    logit = uᵀ v / τ                     (u, v L2-normalised first when ``normalize``; τ = ``temperature``)

pool is the mean (``history_pooling: mean``) or the sum of the history steps' [item; cate] embeddings; an empty
history pools to 0. Each tower is an MLP with ``tower_hidden`` hidden layers and a last linear layer of d units
without activation. Example, d = 2, τ = 1: u = [1, 2], v = [3, −1] -> logit 1.

Item vectors can be precomputed: :meth:`TwoTower.item_vectors` is the item tower alone (v, normalised when
``normalize``) on a batch that holds only the item features (``item_features``); the trainer exports them to
``training/item_vectors`` for nearest-neighbour retrieval by inner product (τ does not change the ranking).

Objective: the trainer's log loss on the impression labels. With ``in_batch_negatives: k > 0``, training also
scores each positive row's user against the items of the k next positive rows of the batch (cyclically: positive
j with positives j+1, …, j+k mod P, at most P − 1 of them) as extra negatives (target 0), returned through
``targets``; a pair is dropped when its item equals the user's own item or its row has the same user (that item is
then a known positive of the user, not a negative). They reuse the batch's tower outputs: no extra lookup. The
other items of a batch are drawn by popularity (clicked items), so unlike uniform negatives they push down popular
items; no log-Q correction is applied. Example, positives rows [0, 2, 3] with items [a, b, c], k = 1:
extra pairs (user 0, b), (user 2, c), (user 3, a); logits [B + 3], targets [labels; 0, 0, 0].
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torchrec import JaggedTensor, KeyedJaggedTensor

from training.layers.jagged import segment_sum
from training.layers.mlp import MLP
from training.models.common import CTRModel, ModelConfig, ModelOutput

USER_FEATURES = ("user", "gender", "age_bucket", "city")
HISTORY_FEATURES = ("hist_item", "hist_cate")
ITEM_FEATURES = ("item", "cate", "shop", "brand")


class TwoTowerConfig(ModelConfig):
    embedding_dim: int = Field(default=16, ge=1)
    mba_lambda: float = Field(default=0.0, ge=0, le=0, description="DIN's regulariser: not used by two-tower")
    tower_hidden: tuple[int, ...] = (128, 64)
    output_dim: int = Field(default=32, ge=1, description="d: the width of u and v")
    activation: Literal["relu", "prelu", "dice", "sigmoid"] = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    history_pooling: Literal["mean", "sum"] = "mean"
    normalize: bool = Field(default=False, description="L2-normalise u and v (cosine score)")
    temperature: float = Field(default=1.0, gt=0, description="τ in logit = uᵀv / τ")
    in_batch_negatives: int = Field(default=0, ge=0, description="other positives' items per positive (training)")


class TwoTower(CTRModel):
    name = "two_tower"
    config_class = TwoTowerConfig
    item_features: ClassVar[tuple[str, ...]] = ITEM_FEATURES

    def __init__(self, config: TwoTowerConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, (*USER_FEATURES, *HISTORY_FEATURES, *ITEM_FEATURES), embedding_device)
        dim = config.embedding_dim
        tower = dict(activation=config.activation, dropout=config.dropout, output_dim=config.output_dim)
        self.user_tower = MLP(dim * (len(USER_FEATURES) + len(HISTORY_FEATURES)), config.tower_hidden, **tower)
        self.item_tower = MLP(dim * len(ITEM_FEATURES), config.tower_hidden, **tower)

    # ------------------------------------------------------------------ towers
    def user_vector(self, embedded: dict[str, JaggedTensor]) -> Tensor:
        """u ``[B, d]`` from the user's profile and pooled history."""
        history = torch.cat([embedded[name].values() for name in HISTORY_FEATURES], dim=1)  # [N, 2D]
        lengths = embedded[HISTORY_FEATURES[0]].lengths()
        pooled = segment_sum(history, lengths)
        if self.config.history_pooling == "mean":
            pooled = pooled / lengths.clamp(min=1).unsqueeze(1).to(pooled.dtype)
        u = self.user_tower(torch.cat([*(self.scalar(embedded, n) for n in USER_FEATURES), pooled], dim=1))
        return F.normalize(u, dim=1) if self.config.normalize else u

    def item_vector(self, embedded: dict[str, JaggedTensor]) -> Tensor:
        """v ``[B, d]`` from the item's scalar features."""
        v = self.item_tower(torch.cat([self.scalar(embedded, name) for name in ITEM_FEATURES], dim=1))
        return F.normalize(v, dim=1) if self.config.normalize else v

    def item_vectors(self, sparse: KeyedJaggedTensor) -> Tensor:
        """``[B, d]`` item-tower vectors of a batch holding (at least) the keys ``item_features``, one id per row.

        The other features get empty rows, so the single lookup still visits every table (a collective under
        sharding: every rank calls this together) but reads only item-side rows.
        """
        rows = sparse[ITEM_FEATURES[0]].lengths().shape[0]
        values, lengths = [], []
        for name in self.features:
            if name in ITEM_FEATURES:
                values.append(sparse[name].values())
                lengths.append(sparse[name].lengths().to(torch.int32))
            else:
                values.append(sparse.values().new_zeros(0))
                lengths.append(torch.zeros(rows, dtype=torch.int32, device=sparse.values().device))
        items_only = KeyedJaggedTensor.from_lengths_sync(keys=list(self.features), values=torch.cat(values),
                                                         lengths=torch.cat(lengths))
        return self.item_vector(self.lookup(items_only))

    # ------------------------------------------------------------------ scoring
    def in_batch_pairs(self, sparse: KeyedJaggedTensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(user row, item row) ``[T]`` each: positive j against the items of positives j+1 … j+k (mod P)."""
        positive = torch.nonzero(labels > 0.5).squeeze(1)
        count = positive.shape[0]
        k = min(self.config.in_batch_negatives, max(count - 1, 0))
        shifts = torch.arange(1, k + 1, device=positive.device)
        user_rows = positive.repeat_interleave(k)
        item_rows = positive[(torch.arange(count, device=positive.device).repeat_interleave(k)
                              + shifts.repeat(count)) % max(count, 1)]
        users, items = sparse["user"].values(), sparse["item"].values()
        keep = (items[user_rows] != items[item_rows]) & (users[user_rows] != users[item_rows])
        return user_rows[keep], item_rows[keep]

    def forward(self, sparse: KeyedJaggedTensor, labels: Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        u, v = self.user_vector(embedded), self.item_vector(embedded)
        scale = 1.0 / self.config.temperature
        logits = (u * v).sum(dim=1) * scale
        zero = torch.zeros((), device=logits.device)
        if not (self.training and labels is not None and self.config.in_batch_negatives > 0):
            return ModelOutput(logits, zero, zero)
        user_rows, item_rows = self.in_batch_pairs(sparse, labels)
        extra = (u[user_rows] * v[item_rows]).sum(dim=1) * scale
        targets = torch.cat([labels.to(logits.dtype), extra.new_zeros(extra.shape[0])])
        return ModelOutput(torch.cat([logits, extra]), zero, zero, targets)
