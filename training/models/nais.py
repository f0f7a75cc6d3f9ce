"""NAIS, Neural Attentive Item Similarity (He et al., TKDE 2018), on FISM's two item tables (MODELS.md).

The score of item i for user u weighs each item j the user clicked before (R_u⁺, the history ``hist_item_idx``)
by an attention a_ij that depends on both items::

    ŷ_ui  = σ( Σ_{j ∈ R_u⁺ \\ {i}} a_ij · p_iᵀ q_j )                    (the model returns the logit, no σ)
    a_ij  = exp(f(p_i, q_j)) / [Σ_{j' ∈ R_u⁺ \\ {i}} exp(f(p_i, q_j'))]^β    β in (0, 1], 0.5 by default
    f_concat(p_i, q_j) = hᵀ ReLU(W [p_i; q_j] + b)       W [A, 2D]
    f_prod(p_i, q_j)   = hᵀ ReLU(W (p_i ⊙ q_j) + b)      W [A, D]             (A = ``attention_hidden``)

p_i is the scored item's row of ``item_target`` and q_j the history item's row of ``item_history`` (the same
tables as :mod:`training.models.fism`, so a FISM run can initialise them: ``train.init_from``). β < 1 smooths the
softmax's denominator so users with long histories are not over-penalised; β = 1 is the plain softmax. The weights
are computed in log space, log a_ij = f_ij − β · logsumexp_j' f_ij' over the row's valid steps
(:func:`training.layers.jagged_softmax.smoothed_softmax`). History steps equal to i are masked out (they neither get
a weight nor enter the denominator); a row with no step left has logit 0. There is no bias term (the paper has
none).

Example, D = 1, β = 1, f ≡ 0, target p_i = 2, history q = [1, 3] (two other items): a = [1/2, 1/2] and the logit is
1/2 · 2 · 1 + 1/2 · 2 · 3 = 4; with β = 0.5, a = [1/√2, 1/√2] and the logit is 8/√2.

Objective and sampled negatives (``num_negatives`` uniform items per positive, scored with the row's history;
``use_impression_negatives``) are FISM's, see :class:`training.models.fism.ItemSimilarityModel`. Regularisation:
``l2_target`` and ``l2_history`` on the p and q rows the batch uses, ``l2_attention`` on W, b and h (the paper's
λ‖Θ‖² over all its parameters; its code uses separate weights for P, Q and the attention network).

Initialisation of the attention network as in the authors' code: W Xavier-normal, b = 0, h = 1.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from training.layers.jagged_softmax import smoothed_softmax
from training.models.fism import ItemSimilarityConfig, ItemSimilarityModel, Pairs


class NAISConfig(ItemSimilarityConfig):
    attention: Literal["concat", "prod"] = "prod"
    beta: float = Field(default=0.5, gt=0, le=1, description="smoothing exponent of the softmax's denominator")
    attention_hidden: int = Field(default=16, ge=1, description="A: rows of W, length of h")
    l2_attention: float = Field(default=1e-5, ge=0, description="λ on the attention network's W, b and h")


class NAISAttention(nn.Module):
    """f(p_i, q_j) per (scored item, history step) pair: p ``[M, D]``, q ``[N, D]``, pairs -> scores ``[T]``.

    ``concat``: W [p; q] + b is computed as (W_p p + b) per scored item and W_q q per history step, then added per
    pair (the same numbers as concatenating each pair, without building a [T, 2D] input). ``prod``: W (p ⊙ q) + b
    per pair.
    """

    def __init__(self, embed_dim: int, hidden: int, kind: Literal["concat", "prod"]):
        super().__init__()
        if kind not in ("concat", "prod"):
            raise ValueError(f"attention must be 'concat' or 'prod', got {kind!r}")
        self.kind, self.embed_dim = kind, embed_dim
        self.linear = nn.Linear(2 * embed_dim if kind == "concat" else embed_dim, hidden)  # W, b
        self.h = nn.Parameter(torch.ones(hidden))
        nn.init.xavier_normal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, p: Tensor, q: Tensor, scored: Tensor, step: Tensor) -> Tensor:
        if self.kind == "concat":
            w_p, w_q = self.linear.weight.split(self.embed_dim, dim=1)  # each [A, D]
            target_term = nn.functional.linear(p, w_p, self.linear.bias)  # [M, A]
            history_term = nn.functional.linear(q, w_q)  # [N, A]
            hidden = target_term[scored] + history_term[step]
        else:
            hidden = self.linear(p[scored] * q[step])
        return torch.relu(hidden) @ self.h  # [T]

    def penalty(self) -> Tensor:
        """||W||² + ||b||² + ||h||²."""
        return self.linear.weight.pow(2).sum() + self.linear.bias.pow(2).sum() + self.h.pow(2).sum()


class NAIS(ItemSimilarityModel):
    name = "nais"
    config_class = NAISConfig

    def __init__(self, config: NAISConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, embedding_device)
        self.attention = NAISAttention(config.embedding_dim, config.attention_hidden, config.attention)

    def score(self, p: Tensor, q: Tensor, pairs: Pairs) -> Tensor:
        """Σ_{valid pairs} a_ij p_iᵀ q_j per scored item, a the β-smoothed softmax of f over its valid pairs."""
        scores = self.attention(p, q, pairs.scored, pairs.step)
        weights = smoothed_softmax(scores, pairs.lengths, self.config.beta, mask=pairs.valid)
        similarity = (p[pairs.scored] * q[pairs.step]).sum(dim=1)
        return pairs.sum(weights * similarity)

    def dense_penalty(self) -> Tensor:
        return self.config.l2_attention * self.attention.penalty()
