"""Feature-interaction layers over field embeddings: pairwise products, FM, bi-interaction, AFM's attention.

Notation: B batch, F fields, D embedding dim, P = F(F − 1)/2 field pairs. ``fields [B, F, D]`` holds one embedding
v_i per field (a scalar feature's embedding, or a pooled multi-valued field); the optional ``values [B, F]`` are
the feature values x_i (1 for a one-hot categorical field, the default), applied as x_i v_i.

Pairs are always listed in row-major upper-triangle order, the order of :func:`pair_indices`::

    F = 4 -> (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)

* :func:`pairwise_products`: the pair-wise interaction layer of AFM (and the element-wise products NFM sums),
  ``(x_i v_i) ⊙ (x_j v_j)`` for every i < j -> ``[B, P, D]``.
* :func:`pairwise_inner_products`: IPNN's ⟨x_i v_i, x_j v_j⟩ -> ``[B, P]``.
* :func:`summed_outer_product`: OPNN's f_Σ f_Σᵀ with f_Σ = Σ_i x_i v_i -> ``[B, D, D]``.
* :func:`bi_interaction`: NFM's bi-interaction pooling Σ_{i<j} (x_i v_i) ⊙ (x_j v_j), computed in O(F·D) as
  ½[(Σ_i x_i v_i)² − Σ_i (x_i v_i)²] (squares element-wise) -> ``[B, D]``.
* :func:`fm_second_order`: FM's Σ_{i<j} ⟨v_i, v_j⟩ x_i x_j = the sum over D of the bi-interaction -> ``[B]``.
* :class:`AttentionalPairPooling`: AFM's attention-based pooling (Xiao et al., IJCAI 2017, eq. 4-5)
  Σ_{i<j} a_ij (v_i ⊙ v_j) x_i x_j with a'_ij = hᵀ ReLU(W (v_i ⊙ v_j) x_i x_j + b), a = softmax over the P pairs.

Example, F = 3, D = 1, v = [1, 2, −1] (one row): pairs (0, 1), (0, 2), (1, 2) -> products [2, −1, −2];
bi-interaction = ½[(1 + 2 − 1)² − (1 + 4 + 1)] = ½[4 − 6] = −1 = 2 − 1 − 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "AttentionalPairPooling",
    "bi_interaction",
    "fm_second_order",
    "num_pairs",
    "pair_indices",
    "pairwise_inner_products",
    "pairwise_products",
    "summed_outer_product",
]


def num_pairs(num_fields: int) -> int:
    """P = F(F − 1)/2."""
    return num_fields * (num_fields - 1) // 2


def pair_indices(num_fields: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """(i, j), two LongTensors ``[P]`` with i < j, in row-major order: F = 3 -> i = [0, 0, 1], j = [1, 2, 2]."""
    if num_fields < 0:
        raise ValueError(f"num_fields must be >= 0, got {num_fields}")
    index = torch.triu_indices(num_fields, num_fields, offset=1, device=device)
    return index[0], index[1]


def _weighted(fields: Tensor, values: Tensor | None) -> Tensor:
    """x_i v_i: fields ``[B, F, D]`` times values ``[B, F]`` (None: all 1)."""
    if fields.dim() != 3:
        raise ValueError(f"fields must be [B, F, D], got shape {tuple(fields.shape)}")
    if values is None:
        return fields
    if values.shape != fields.shape[:2]:
        raise ValueError(f"values must be [B, F] = {list(fields.shape[:2])}, got {list(values.shape)}")
    return fields * values.unsqueeze(-1)


def pairwise_products(fields: Tensor, values: Tensor | None = None) -> Tensor:
    """(x_i v_i) ⊙ (x_j v_j) for i < j: ``[B, F, D]`` -> ``[B, P, D]`` in :func:`pair_indices` order."""
    weighted = _weighted(fields, values)
    i, j = pair_indices(weighted.shape[1], device=weighted.device)
    return weighted[:, i] * weighted[:, j]


def pairwise_inner_products(fields: Tensor, values: Tensor | None = None) -> Tensor:
    """⟨x_i v_i, x_j v_j⟩ for i < j: ``[B, F, D]`` -> ``[B, P]`` in :func:`pair_indices` order."""
    return pairwise_products(fields, values).sum(dim=-1)


def summed_outer_product(fields: Tensor, values: Tensor | None = None) -> Tensor:
    """f_Σ f_Σᵀ with f_Σ = Σ_i x_i v_i: ``[B, F, D]`` -> ``[B, D, D]`` (OPNN's product layer input)."""
    total = _weighted(fields, values).sum(dim=1)
    return total.unsqueeze(2) * total.unsqueeze(1)


def bi_interaction(fields: Tensor, values: Tensor | None = None) -> Tensor:
    """Σ_{i<j} (x_i v_i) ⊙ (x_j v_j) = ½[(Σ_i x_i v_i)² − Σ_i (x_i v_i)²]: ``[B, F, D]`` -> ``[B, D]``.

    NFM's bi-interaction pooling; O(F·D) instead of the O(F²·D) of summing :func:`pairwise_products`.
    """
    weighted = _weighted(fields, values)
    return 0.5 * (weighted.sum(dim=1).pow(2) - weighted.pow(2).sum(dim=1))


def fm_second_order(fields: Tensor, values: Tensor | None = None) -> Tensor:
    """FM's second-order term Σ_{i<j} ⟨v_i, v_j⟩ x_i x_j: ``[B, F, D]`` -> ``[B]``."""
    return bi_interaction(fields, values).sum(dim=-1)


class AttentionalPairPooling(nn.Module):
    """AFM's attention-based pooling over the pair-wise interaction layer: pairs ``[B, P, D]`` -> ``[B, D]``.

    With e_ij = (v_i ⊙ v_j) x_i x_j (one pair, from :func:`pairwise_products`)::

        a'_ij = hᵀ ReLU(W e_ij + b)              W [t, D], b [t], h [t] (t = ``attention_dim``)
        a_ij  = exp(a'_ij) / Σ_{(k,l)} exp(a'_kl) (softmax over the P pairs of the row)
        out   = Σ_{i<j} a_ij e_ij                [B, D]

    AFM's prediction is then ``pᵀ out`` (the projection p belongs to the model). Dropout (``dropout``, training
    only) is applied to the pair-wise interaction layer, i.e. to the e_ij that both the attention network and the
    weighted sum read, as the paper states (its authors' TensorFlow code drops the pooled vector instead). The
    paper's L2 penalty λ||W||² is :meth:`l2_penalty` (W only, not b or h).

    Attributes:
        attention: ``nn.Linear(D, t)``: W and b.
        projection: ``nn.Linear(t, 1, bias=False)``: h.
    """

    def __init__(self, embed_dim: int, attention_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.attention = nn.Linear(embed_dim, attention_dim)
        self.projection = nn.Linear(attention_dim, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def _check(self, pairs: Tensor) -> None:
        if pairs.dim() != 3 or pairs.shape[2] != self.embed_dim:
            raise ValueError(f"pairs must be [B, P, {self.embed_dim}], got shape {tuple(pairs.shape)}")
        if pairs.shape[1] == 0:
            raise ValueError("attention over pairs needs at least one pair (two fields)")

    def weights(self, pairs: Tensor) -> Tensor:
        """a_ij: pairs ``[B, P, D]`` -> ``[B, P]``, each row summing to 1 (no dropout here)."""
        self._check(pairs)
        scores = self.projection(torch.relu(self.attention(pairs))).squeeze(-1)  # [B, P]
        return torch.softmax(scores, dim=1)

    def forward(self, pairs: Tensor) -> Tensor:
        pairs = self.dropout(pairs)
        return (self.weights(pairs).unsqueeze(-1) * pairs).sum(dim=1)

    def l2_penalty(self) -> Tensor:
        """||W||²_F, the squared Frobenius norm of the attention network's weight matrix."""
        return self.attention.weight.pow(2).sum()
