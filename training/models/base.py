"""BaseModel (Embedding & MLP): the DIN and DIEN papers' baseline.

Each id field is embedded (dimension D); the user's behaviour history is pooled by a plain sum over its valid
steps (item and category embeddings concatenated per step, [B, 2D]); the pooled history, the candidate's
embeddings [e(item); e(cate)] and the other fields are concatenated into an MLP with one logit::

    x = [e(user), e(gender), e(age_bucket), e(city), e(shop), e(brand), e(item), e(cate), Σ_j [e(h_j); e(c_j)]]
    logit = MLP(x)                                     (200-80 hidden units, PReLU by default)

A user with an empty history pools to 0.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torchrec import KeyedJaggedTensor

from training.layers.jagged import segment_sum
from training.layers.mlp import MLP
from training.models.common import CTRModel, ModelConfig, ModelOutput

PROFILE_FEATURES = ("user", "gender", "age_bucket", "city", "shop", "brand")
TARGET_FEATURES = ("item", "cate")
HISTORY_FEATURES = ("hist_item", "hist_cate")


class BaseModelConfig(ModelConfig):
    mlp_hidden: tuple[int, ...] = (200, 80)
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "prelu"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    profile_features: tuple[str, ...] = PROFILE_FEATURES


class BaseModel(CTRModel):
    name = "base"
    config_class = BaseModelConfig

    def __init__(self, config: BaseModelConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        unknown = [f for f in config.profile_features if f not in PROFILE_FEATURES]
        if unknown:
            raise ValueError(f"profile_features {unknown} are not scalar side features; choose from {PROFILE_FEATURES}")
        super().__init__(config, table_sizes, (*config.profile_features, *TARGET_FEATURES, *HISTORY_FEATURES),
                         embedding_device)
        dim = config.embedding_dim
        in_dim = dim * (len(config.profile_features) + 2 + 2)
        self.mlp = MLP(in_dim, config.mlp_hidden, activation=config.mlp_activation, dropout=config.dropout)

    def user_interest(self, embedded, target: torch.Tensor) -> torch.Tensor:
        """[B, 2D]: the sum of the history's [e(item); e(cate)] (DIN replaces it with attention pooling)."""
        history = torch.cat([embedded["hist_item"].values(), embedded["hist_cate"].values()], dim=1)
        return segment_sum(history, embedded["hist_item"].lengths())

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        profile = [self.scalar(embedded, name) for name in self.config.profile_features]
        target = torch.cat([self.scalar(embedded, "item"), self.scalar(embedded, "cate")], dim=1)
        interest = self.user_interest(embedded, target)
        logits = self.mlp(torch.cat([*profile, target, interest], dim=1)).squeeze(1)
        zero = torch.zeros((), device=logits.device)
        return ModelOutput(logits, self.mba_penalty(sparse, embedded), zero)
