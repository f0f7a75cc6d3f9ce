"""Deep Crossing (Shan et al., KDD 2016): embedding, stacking, residual units, scoring.

::

    X_0 = [e(f_1); ...; e(f_F); log(1 + |H|)]                     stacking layer, K = F·D (+ 1) columns
    X_l = ReLU(X_{l−1} + W_1^l ReLU(W_0^l X_{l−1} + b_0^l) + b_1^l)   residual units l = 1..L (K -> h_l -> K)
    logit = wᵀ X_L + b                                            (σ(logit) is the CTR: the logistic output)

Fields (``fields``, default the scalar fields user, gender, age_bucket, city, item, cate, shop, brand and the
mean-pooled history hist_item, hist_cate; see :mod:`training.models.fields`), each embedded with D =
``embedding_dim``. The paper stacks low-dimensional dense features as they are, next to the embeddings; the only
dense quantity a batch carries is the history length, so ``history_length_feature`` (default on) appends
log(1 + |H|) (|H| = the length of ``hist_item``, which then is read even when it is not a field). One residual
unit per entry of ``residual_hidden`` (its inner width h_l); every unit keeps the stack's width K, as in the paper.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torchrec import KeyedJaggedTensor

from training.layers.product import ResidualUnit
from training.models.common import CTRModel, ModelConfig, ModelOutput
from training.models.fields import DEFAULT_FIELDS, check_fields, field_embeddings


class DeepCrossingConfig(ModelConfig):
    embedding_dim: int = Field(default=16, ge=1)
    fields: tuple[str, ...] = DEFAULT_FIELDS
    history_length_feature: bool = Field(default=True, description="stack log(1 + hist_len) as a dense feature")
    residual_hidden: tuple[int, ...] = Field(default=(256, 128, 64), description="inner width of each unit")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout after each residual unit")


class DeepCrossing(CTRModel):
    name = "deep_crossing"
    config_class = DeepCrossingConfig

    def __init__(self, config: DeepCrossingConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        check_fields(self.name, config.fields)
        if any(h < 1 for h in config.residual_hidden):
            raise ValueError(f"residual_hidden widths must be >= 1, got {list(config.residual_hidden)}")
        features = tuple(config.fields)
        if config.history_length_feature and "hist_item" not in features:
            features = (*features, "hist_item")
        super().__init__(config, table_sizes, features, embedding_device)
        width = len(config.fields) * config.embedding_dim + int(config.history_length_feature)
        units: list[nn.Module] = []
        for hidden in config.residual_hidden:
            units.append(ResidualUnit(width, hidden))
            if config.dropout > 0:
                units.append(nn.Dropout(config.dropout))
        self.residual = nn.Sequential(*units)
        self.output = nn.Linear(width, 1)

    def stack(self, sparse: KeyedJaggedTensor, embedded) -> torch.Tensor:
        """The stacking layer X_0: ``[B, K]``."""
        parts = [field_embeddings(embedded, self.config.fields).flatten(1)]
        if self.config.history_length_feature:
            length = sparse["hist_item"].lengths().to(parts[0].dtype)
            parts.append(torch.log1p(length).unsqueeze(1))
        return torch.cat(parts, dim=1)

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        logits = self.output(self.residual(self.stack(sparse, embedded))).squeeze(1)
        return ModelOutput(logits, self.mba_penalty(sparse, embedded), torch.zeros((), device=logits.device))
