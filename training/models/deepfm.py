"""DeepFM (Guo et al., IJCAI 2017): an FM and a DNN over the same (shared) embeddings.

::

    y_FM  = w0 + Σ_i w_i x_i + Σ_{i<j} ⟨v_i, v_j⟩ x_i x_j
          = w0 + Σ_i w_i x_i + Σ_d ½[(Σ_i x_i v_{i,d})² − Σ_i (x_i v_{i,d})²]       (O(F·D))
    y_DNN = MLP([x_1 v_1; ...; x_F v_F])                              hidden layers ``mlp_hidden``, one linear output
    logit = y_FM + y_DNN                                              (σ(logit) is the CTR)

The FM's second-order term and the DNN read the same v_i (no separate embeddings, no pre-training), as the paper
stresses. Fields (``fields``) default to the scalar fields user, gender, age_bucket, city, item, cate, shop,
brand (x_i = 1) and the mean-pooled history hist_item, hist_cate (x = 1/|H| per id, :mod:`training.models.fields`).
Each id's first-order weight w_i is one extra column of its table (:func:`training.models.fields.
with_linear_column`): ``self.config`` is the tables' config (D + 1), ``self.deepfm_config`` the user's (D). w0 is a
dense bias; the DNN's output layer has its own bias as well.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torchrec import KeyedJaggedTensor

from training.layers.interaction import fm_second_order
from training.layers.mlp import MLP
from training.models.common import CTRModel, ModelConfig, ModelOutput
from training.models.fields import DEFAULT_FIELDS, check_fields, field_embeddings, split_linear, with_linear_column


class DeepFMConfig(ModelConfig):
    embedding_dim: int = Field(default=16, ge=1)
    fields: tuple[str, ...] = DEFAULT_FIELDS
    mlp_hidden: tuple[int, ...] = (200, 200, 200)
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout after each hidden layer of the DNN")


class DeepFM(CTRModel):
    name = "deepfm"
    config_class = DeepFMConfig

    def __init__(self, config: DeepFMConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        check_fields(self.name, config.fields, minimum=2)
        super().__init__(with_linear_column(config), table_sizes, tuple(config.fields), embedding_device)
        self.deepfm_config = config
        self.factor_dim = config.embedding_dim
        self.bias = nn.Parameter(torch.zeros(1))  # w0
        self.mlp = MLP(len(config.fields) * config.embedding_dim, config.mlp_hidden,
                       activation=config.mlp_activation, dropout=config.dropout)

    def parts(self, sparse: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(y_FM ``[B]``, y_DNN ``[B]``, the looked-up embeddings)."""
        embedded = self.lookup(sparse)
        v, w = split_linear(field_embeddings(embedded, self.deepfm_config.fields), self.factor_dim)
        y_fm = self.bias + w.sum(dim=1) + fm_second_order(v)
        y_dnn = self.mlp(v.flatten(1)).squeeze(1)
        return y_fm, y_dnn, embedded

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        y_fm, y_dnn, embedded = self.parts(sparse)
        logits = y_fm + y_dnn
        return ModelOutput(logits, self.mba_penalty(sparse, embedded), torch.zeros((), device=logits.device))
