"""PNN, Product-based Neural Network (Qu et al., ICDM 2016): IPNN and OPNN.

::

    z   = [f_1; ...; f_F]                                  the field embeddings, F·D
    p   = [⟨f_i, f_j⟩]_{i<j}                 (IPNN, ``product: inner``, P = F(F − 1)/2 values)
        = vec(f_Σ f_Σᵀ), f_Σ = Σ_i f_i       (OPNN, ``product: outer``, D² values)
    l_1 = ReLU(W_z z + W_p p + b_1)                        the product layer, ``product_dim`` = D_1 units
    logit = MLP(l_1)                                       hidden layers ``mlp_hidden``, one linear output

The product layer is :class:`training.layers.product.ProductLayer`. Fields (``fields``) default to the scalar
fields user, gender, age_bucket, city, item, cate, shop, brand and the mean-pooled history hist_item, hist_cate
(:mod:`training.models.fields`), F = 10.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torchrec import KeyedJaggedTensor

from training.layers.mlp import MLP
from training.layers.product import ProductLayer
from training.models.common import CTRModel, ModelConfig, ModelOutput
from training.models.fields import DEFAULT_FIELDS, check_fields, field_embeddings


class PNNConfig(ModelConfig):
    embedding_dim: int = Field(default=16, ge=1)
    fields: tuple[str, ...] = DEFAULT_FIELDS
    product: Literal["inner", "outer"] = "inner"
    product_dim: int = Field(default=128, ge=1, description="D_1, the width of the product layer l_1")
    mlp_hidden: tuple[int, ...] = (128, 64)
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout after l_1 and each hidden layer")


class PNN(CTRModel):
    name = "pnn"
    config_class = PNNConfig

    def __init__(self, config: PNNConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        check_fields(self.name, config.fields, minimum=2 if config.product == "inner" else 1)
        super().__init__(config, table_sizes, tuple(config.fields), embedding_device)
        self.product = ProductLayer(len(config.fields), config.embedding_dim, config.product_dim, config.product)
        self.dropout = torch.nn.Dropout(config.dropout)
        self.mlp = MLP(config.product_dim, config.mlp_hidden, activation=config.mlp_activation,
                       dropout=config.dropout)

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        hidden = self.dropout(self.product(field_embeddings(embedded, self.config.fields)))
        logits = self.mlp(hidden).squeeze(1)
        return ModelOutput(logits, self.mba_penalty(sparse, embedded), torch.zeros((), device=logits.device))
