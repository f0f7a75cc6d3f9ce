"""AFM, Attentional Factorization Machine (Xiao et al., IJCAI 2017).

FM whose pair-wise interactions are pooled with learned attention instead of equal weights (MODELS.md)::

    ŷ     = w0 + Σ_i w_i x_i + pᵀ Σ_{i<j} a_ij (v_i ⊙ v_j) x_i x_j            (logit; σ(ŷ) is the CTR)
    a'_ij = hᵀ ReLU(W (v_i ⊙ v_j) x_i x_j + b),  a_ij = softmax of a' over all P = F(F − 1)/2 pairs of the row

Fields (``fields``, default the sample's categorical fields user, gender, age_bucket, city, item, cate, shop,
brand), each one-hot, so x_i = 1. A multi-valued sequence field (``hist_item``, ``clk_cate``, ...) may be added
as one more field: it is mean-pooled, i.e. x = 1/|H| for each of its |H| ids, both for v and for w; as in the
field-level formulation of AFM, the ids within that one field do not interact with each other. An empty
sequence gives the zero vector (the field is absent: no first-order term, no interaction).

Dropout on the pair-wise interaction layer and the L2 penalty λ||W||² on the attention network's weight matrix
(returned in ``regularization``) are :class:`training.layers.interaction.AttentionalPairPooling`'s.

First-order weights: every id's w_i is stored as one extra column of its embedding table, so the whole model reads
its embeddings through one :meth:`CTRModel.lookup`. The tables are built with ``embedding_dim = D + 1`` internally
(``self.config``; the user-facing config, with ``embedding_dim = D``, is ``self.afm_config``) and each looked-up row
is split into v (its first D columns) and w (its last). The stored width is D + 1 rounded up to a multiple of 4 by
:class:`CTRModel` (FBGEMM), and ``lookup`` slices off that padding, so w is exactly column D. w0 is a dense bias.
w_i starts with the table's own initialisation, like v. ``mba_lambda`` (off by default), when set, is added to
``regularization`` and penalises the whole looked-up row [v; w].
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torchrec import KeyedJaggedTensor

from training.features import FEATURES
from training.layers.interaction import AttentionalPairPooling, pairwise_products
from training.layers.jagged import segment_sum
from training.models.common import CTRModel, ModelConfig, ModelOutput

SCALAR_FIELDS = ("user", "gender", "age_bucket", "city", "item", "cate", "shop", "brand")
#: multi-valued fields that can be added as one mean-pooled field each
SEQUENCE_FIELDS = tuple(f"{prefix}_{table}" for prefix in ("hist", "ctx", "clk", "unclk") for table in ("item", "cate"))


class AFMConfig(ModelConfig):
    embedding_dim: int = Field(default=16, ge=1)
    fields: tuple[str, ...] = SCALAR_FIELDS
    attention_dim: int = Field(default=16, ge=1, description="t, the attention network's hidden size")
    dropout: float = Field(default=0.2, ge=0, lt=1, description="dropout on the pair-wise interaction layer")
    attention_l2: float = Field(default=1e-4, ge=0, description="λ of the L2 penalty λ||W||² on the attention net")


class AFM(CTRModel):
    name = "afm"
    config_class = AFMConfig

    def __init__(self, config: AFMConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        unknown = [f for f in config.fields if f not in SCALAR_FIELDS + SEQUENCE_FIELDS]
        if unknown:
            raise ValueError(f"fields {unknown} are not AFM fields; choose from {SCALAR_FIELDS + SEQUENCE_FIELDS}")
        if len(set(config.fields)) != len(config.fields) or len(config.fields) < 2:
            raise ValueError(f"AFM needs at least two distinct fields, got {list(config.fields)}")
        # tables hold [v (D columns); w (1 column)]: see the module docstring
        tables = config.model_copy(update={"embedding_dim": config.embedding_dim + 1})
        super().__init__(tables, table_sizes, tuple(config.fields), embedding_device)
        self.afm_config = config
        self.factor_dim = config.embedding_dim
        self.bias = nn.Parameter(torch.zeros(1))  # w0
        self.pair_pooling = AttentionalPairPooling(config.embedding_dim, config.attention_dim, config.dropout)
        self.p = nn.Linear(config.embedding_dim, 1, bias=False)

    def field_embeddings(self, embedded) -> torch.Tensor:
        """``[B, F, D + 1]``: each field's [x_i v_i; x_i w_i] (a sequence field mean-pooled over its ids)."""
        columns = []
        for name in self.afm_config.fields:
            jagged = embedded[name]
            if FEATURES[name].is_sequence:
                lengths = jagged.lengths()
                pooled = segment_sum(jagged.values(), lengths)
                columns.append(pooled / lengths.clamp(min=1).unsqueeze(1).to(pooled.dtype))
            else:
                columns.append(jagged.values())
        return torch.stack(columns, dim=1)

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        fields = self.field_embeddings(embedded)
        v, w = fields[..., : self.factor_dim], fields[..., self.factor_dim]  # [B, F, D], [B, F]
        pooled = self.pair_pooling(pairwise_products(v))  # [B, D]
        logits = self.bias + w.sum(dim=1) + self.p(pooled).squeeze(1)
        regularization = self.afm_config.attention_l2 * self.pair_pooling.l2_penalty()
        regularization = regularization + self.mba_penalty(sparse, embedded)
        return ModelOutput(logits, regularization, torch.zeros((), device=logits.device))
