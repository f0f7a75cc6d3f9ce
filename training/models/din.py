"""DIN, Deep Interest Network (Zhou et al., KDD 2018).

BaseModel with the history pooled by the activation unit instead of a sum (MODELS.md)::

    v_U = Σ_j g(e_j, e_a) · e_j        e_j = [e(h_j); e(c_j)] (step j of the history), e_a = [e(item); e(cate)]
    g   = MLP([e_j, e_a, e_j − e_a, e_j ⊙ e_a]) → one linear output, NOT normalised (no softmax), so v_U keeps
          the intensity of the user's interest in the candidate
    logit = MLP([profile, e_a, v_U])   (200-80, Dice)

Each id field attends only to the same field of the candidate because a step's [item; cate] is compared with the
candidate's [item; cate] position by position. Padded steps never enter: the history is jagged. Regularised by
the mini-batch aware L2 on the embedding rows each batch touches (``mba_lambda``, :mod:`training.models.common`).
"""

from __future__ import annotations

from typing import Literal

import torch

from training.layers.attention import ActivationUnit, weighted_sum
from training.models.base import BaseModel, BaseModelConfig


class DINConfig(BaseModelConfig):
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "dice"
    attention_hidden: tuple[int, ...] = (80, 40)
    attention_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "dice"
    mba_lambda: float = 0.01


class DIN(BaseModel):
    name = "din"
    config_class = DINConfig

    def __init__(self, config: DINConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, embedding_device)
        self.attention = ActivationUnit(2 * config.embedding_dim, config.attention_hidden,
                                        activation=config.attention_activation)

    def user_interest(self, embedded, target: torch.Tensor) -> torch.Tensor:
        history = torch.cat([embedded["hist_item"].values(), embedded["hist_cate"].values()], dim=1)
        lengths = embedded["hist_item"].lengths()
        weights = self.attention(history, target, lengths)
        return weighted_sum(history, weights, lengths)
