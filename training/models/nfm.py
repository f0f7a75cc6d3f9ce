"""NFM, Neural Factorization Machine (He & Chua, SIGIR 2017).

::

    f_BI  = Σ_{i<j} x_i v_i ⊙ x_j v_j = ½[(Σ_i x_i v_i)² − Σ_i (x_i v_i)²]        bi-interaction pooling, [D]
    logit = w0 + Σ_i w_i x_i + hᵀ σ_L(W_L(... σ_1(W_1 f_BI + b_1) ...) + b_L)      (σ(logit) is the CTR)

Dropout (``bi_dropout``) on the bi-interaction layer as in the paper, and after each hidden layer (``dropout``).
With no hidden layer (``mlp_hidden: []``) the model is NFM-0: logit = w0 + Σ w_i x_i + hᵀ f_BI, an FM when h = 1.
The paper's batch normalisation of f_BI is not included. Fields (``fields``) default to the scalar fields user,
gender, age_bucket, city, item, cate, shop, brand (x_i = 1) and the mean-pooled history hist_item, hist_cate
(x = 1/|H| per id, :mod:`training.models.fields`). Each id's w_i is one extra column of its table
(:func:`training.models.fields.with_linear_column`): ``self.config`` is the tables' config (D + 1),
``self.nfm_config`` the user's (D). w0 is a dense bias; h has none.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torchrec import KeyedJaggedTensor

from training.layers.interaction import bi_interaction
from training.layers.mlp import MLP
from training.models.common import CTRModel, ModelConfig, ModelOutput
from training.models.fields import DEFAULT_FIELDS, check_fields, field_embeddings, split_linear, with_linear_column


class NFMConfig(ModelConfig):
    embedding_dim: int = Field(default=16, ge=1)
    fields: tuple[str, ...] = DEFAULT_FIELDS
    mlp_hidden: tuple[int, ...] = (64,)
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "relu"
    bi_dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout on the bi-interaction layer f_BI")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout after each hidden layer")


class NFM(CTRModel):
    name = "nfm"
    config_class = NFMConfig

    def __init__(self, config: NFMConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        check_fields(self.name, config.fields, minimum=2)
        super().__init__(with_linear_column(config), table_sizes, tuple(config.fields), embedding_device)
        self.nfm_config = config
        self.factor_dim = config.embedding_dim
        self.bias = nn.Parameter(torch.zeros(1))  # w0
        self.bi_dropout = nn.Dropout(config.bi_dropout)
        self.mlp = MLP(config.embedding_dim, config.mlp_hidden, activation=config.mlp_activation,
                       dropout=config.dropout, output_dim=None)
        self.h = nn.Linear(self.mlp.out_dim, 1, bias=False)

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        v, w = split_linear(field_embeddings(embedded, self.nfm_config.fields), self.factor_dim)
        pooled = self.bi_dropout(bi_interaction(v))  # [B, D]
        logits = self.bias + w.sum(dim=1) + self.h(self.mlp(pooled)).squeeze(1)
        return ModelOutput(logits, self.mba_penalty(sparse, embedded), torch.zeros((), device=logits.device))
