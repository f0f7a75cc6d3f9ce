"""Field handling shared by the field-embedding models (Deep Crossing, PNN, Wide&Deep, DeepFM, NFM).

A *field* is one categorical input: a scalar feature (one id per row: ``user``, ``item``, ...) or a multi-valued
sequence feature (``hist_item``, ...) that becomes one field by mean pooling, i.e. the ids of a history H each
get the value x = 1/|H|, so the field's vector is (1/|H|) Σ_{j∈H} e(j). The ids within one sequence field do not
interact with each other (the field-level view of FM / AFM). An empty sequence pools to the zero vector: the field
is absent (no first-order term, no interaction).

First-order weights (DeepFM, NFM, Wide&Deep's wide part): every id's w_i is stored as one extra column of its
embedding table, so a model still reads all of its embeddings through one :meth:`CTRModel.lookup`. The tables are
built from :func:`with_linear_column` (``embedding_dim = D + 1``; the user-facing config keeps D) and
:func:`split_linear` cuts a looked-up field tensor into v (its first D columns) and w (its last). CTRModel rounds
the stored width D + 1 up to a multiple of 4 and ``lookup`` slices that padding off, so w is exactly column D.
Pooling a sequence field pools v and w alike: its w is the mean of its ids' w.
"""

from __future__ import annotations

import torch
from torchrec import JaggedTensor

from training.features import FEATURES
from training.layers.jagged import segment_sum
from training.models.common import ModelConfig

__all__ = ["DEFAULT_FIELDS", "FIELD_CHOICES", "SCALAR_FIELDS", "SEQUENCE_FIELDS", "check_fields",
           "field_embeddings", "split_linear", "with_linear_column"]

#: the sample's scalar categorical fields
SCALAR_FIELDS = ("user", "gender", "age_bucket", "city", "item", "cate", "shop", "brand")
#: multi-valued fields that can be added as one mean-pooled field each
SEQUENCE_FIELDS = tuple(f"{prefix}_{table}" for prefix in ("hist", "ctx", "clk", "unclk") for table in ("item", "cate"))
FIELD_CHOICES = SCALAR_FIELDS + SEQUENCE_FIELDS
#: the models' default fields: every scalar field plus the mean-pooled behaviour history (item and category)
DEFAULT_FIELDS = (*SCALAR_FIELDS, "hist_item", "hist_cate")


def check_fields(model: str, fields: tuple[str, ...], minimum: int = 1) -> None:
    """ValueError unless ``fields`` are at least ``minimum`` distinct names of :data:`FIELD_CHOICES`."""
    unknown = [name for name in fields if name not in FIELD_CHOICES]
    if unknown:
        raise ValueError(f"{model}: fields {unknown} are not fields; choose from {FIELD_CHOICES}")
    if len(set(fields)) != len(fields) or len(fields) < minimum:
        raise ValueError(f"{model} needs at least {minimum} distinct field(s), got {list(fields)}")


def field_embeddings(embedded: dict[str, JaggedTensor], fields: tuple[str, ...]) -> torch.Tensor:
    """``[B, F, D']``: each field's looked-up vector, a sequence field mean-pooled over its ids (empty -> 0)."""
    columns = []
    for name in fields:
        jagged = embedded[name]
        if FEATURES[name].is_sequence:
            lengths = jagged.lengths()
            pooled = segment_sum(jagged.values(), lengths)
            columns.append(pooled / lengths.clamp(min=1).unsqueeze(1).to(pooled.dtype))
        else:
            columns.append(jagged.values())
    return torch.stack(columns, dim=1)


def with_linear_column(config: ModelConfig) -> ModelConfig:
    """A copy of ``config`` with ``embedding_dim`` D + 1: the tables' config when each id also stores its w_i."""
    return config.model_copy(update={"embedding_dim": config.embedding_dim + 1})


def split_linear(fields: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, F, D + 1]`` -> (v ``[B, F, D]``, w ``[B, F]``)."""
    if fields.shape[-1] != dim + 1:
        raise ValueError(f"expected {dim + 1} columns (D factors and w), got {fields.shape[-1]}")
    return fields[..., :dim], fields[..., dim]
