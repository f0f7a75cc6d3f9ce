"""DIN's local activation unit on jagged behaviour sequences (Zhou et al., KDD 2018, section 4.3).

    v_U(A) = Σ_j g(e_j, e_a) · e_j,    g(e_j, e_a) = MLP([e_j, e_a, e_j − e_a, e_j ⊙ e_a])  (one linear output)

e_j are the user's behaviour embeddings (keys), e_a the candidate's (query). Keys are jagged, ``[N, D]`` with
``lengths [B]`` (see :mod:`training.layers.jagged`): there is no padded step, so masking is structural, an empty
history pools to exactly 0, and Dice's batch statistics are taken over the N valid steps only (a padded
implementation that forgets the mask feeds padding into them).

Pitfall kept out on purpose: the weights g are *not* normalised (no softmax, no sigmoid). The paper relaxes the
softmax so that v_U keeps the intensity of the user's interest: a user with many behaviours related to the
candidate gets a larger v_U than one with a single related behaviour.

Example, B = 2, D = 1, lengths [2, 1]: keys [k0, k1, k2], query [q0, q1] -> weights
[g(k0, q0), g(k1, q0), g(k2, q1)] and pooled [g(k0, q0)·k0 + g(k1, q0)·k1, g(k2, q1)·k2].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.layers.jagged import repeat_rows, segment_sum
from training.layers.mlp import MLP, ActivationName

__all__ = ["ActivationUnit", "din_pooling", "weighted_sum"]


class ActivationUnit(nn.Module):
    """g(e_j, e_a): one unnormalised weight per jagged key.

    ``forward(keys [N, D], query [B, D], lengths [B]) -> weights [N]``; key j of row b is scored against
    ``query[b]`` through ``MLP(4·D, hidden, activation, output_dim=1)`` over ``[e_j, e_a, e_j − e_a, e_j ⊙ e_a]``
    (in that order, ``[N, 4D]``). The output is the raw linear output: no softmax, no sigmoid (see the module
    docstring). The paper's optional outer product e_j ⊗ e_a is left out (the authors' public code leaves it out
    too; it would add D² inputs per step).

    Args:
        embed_dim: D.
        hidden: widths of the hidden layers (80-40 in the paper).
        activation: one of :data:`training.layers.mlp.ACTIVATIONS` (the paper uses Dice).
    """

    def __init__(
        self, embed_dim: int, hidden: Sequence[int] = (80, 40), activation: ActivationName | str = "dice"
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.mlp = MLP(4 * embed_dim, hidden, activation=activation, output_dim=1)

    def forward(self, keys: Tensor, query: Tensor, lengths: Tensor) -> Tensor:
        if keys.dim() != 2 or query.dim() != 2 or keys.shape[1] != self.embed_dim or query.shape[1] != self.embed_dim:
            raise ValueError(
                f"expected keys [N, {self.embed_dim}] and query [B, {self.embed_dim}], "
                f"got {tuple(keys.shape)} and {tuple(query.shape)}"
            )
        q = repeat_rows(query, lengths)  # [N, D]
        if q.shape[0] != keys.shape[0]:
            raise ValueError(f"lengths sum to {q.shape[0]} but there are {keys.shape[0]} keys")
        # The first layer W·[k, q, k − q, k ⊙ q] + b is computed as k·(W_k + W_d)ᵀ + (q·(W_q − W_d)ᵀ + b) +
        # (k ⊙ q)·W_pᵀ: the same numbers, but the query term is computed once per row (B) instead of once per
        # step (N), and the per-step matrix product is 2D wide instead of 4D (the unit's largest cost).
        first = self.mlp.layers[0]
        w_k, w_q, w_d, w_p = first.weight.split(self.embed_dim, dim=1)  # each [H, D]
        query_term = torch.nn.functional.linear(query, w_q - w_d, first.bias)  # [B, H]
        hidden = torch.addmm(repeat_rows(query_term, lengths), torch.cat([keys, keys * q], dim=1),
                             torch.cat([w_k + w_d, w_p], dim=1).t())  # [N, H]
        return self.mlp.layers[1:](hidden).squeeze(1)  # [N]


def weighted_sum(keys: Tensor, weights: Tensor, lengths: Tensor) -> Tensor:
    """Σ_j w_j e_j per row: keys ``[N, D]``, weights ``[N]``, lengths ``[B]`` -> ``[B, D]`` (an empty row gives 0)."""
    if weights.shape != keys.shape[:1]:
        raise ValueError(f"weights must be [N] = [{keys.shape[0]}], got {tuple(weights.shape)}")
    return segment_sum(keys * weights.unsqueeze(1), lengths)


def din_pooling(unit: ActivationUnit, keys: Tensor, query: Tensor, lengths: Tensor) -> Tensor:
    """v_U = Σ_j g(e_j, e_a) e_j: keys ``[N, D]``, query ``[B, D]``, lengths ``[B]`` -> ``[B, D]``."""
    return weighted_sum(keys, unit(keys, query, lengths), lengths)
