"""Layers of the classic deep CTR models: Deep Crossing's residual unit, PNN's product layer, Wide&Deep's crosses.

Notation: B batch, F fields, D embedding dim, P = F(F − 1)/2 field pairs, N valid steps of a jagged feature.
The pairwise products themselves (inner products, the summed outer product, FM, bi-interaction) live in
:mod:`training.layers.interaction`; this module builds the layers around them.

* :class:`ResidualUnit` (Deep Crossing, Shan et al., KDD 2016), ``[B, K]`` -> ``[B, K]``::

      X_O = ReLU(X_I + W_1 ReLU(W_0 X_I + b_0) + b_1)        W_0 [h, K], W_1 [K, h]

* :class:`ProductLayer` (PNN, Qu et al., ICDM 2016), fields ``[B, F, D]`` -> ``[B, D_1]``::

      l_1 = ReLU(W_z z + W_p p + b_1),  z = [f_1; ...; f_F]                          (the embeddings, F·D)
      IPNN: p = [⟨f_i, f_j⟩ for i < j]                                               (P inner products)
      OPNN: p = vec(f_Σ f_Σᵀ),  f_Σ = Σ_i f_i                                         (D × D)

  The paper writes the IPNN signal over all (i, j); with a learned W_p the symmetric pairs (j, i) add nothing
  and the diagonal ⟨f_i, f_i⟩ is left out, as in the paper's own code and the common implementations.

* :func:`cross_hash` and :class:`HashedCrossWeights` (Wide&Deep, Cheng et al., DLRS 2016): the wide part's
  cross-product features φ_k(x) = Π_i x_i^{c_ki}. For a pair of categorical features (a, b), "a = s and b = t"
  is one binary feature; its weight sits in a hashed table of ``num_buckets`` rows, at
  ``cross_hash(s, t, k, num_buckets)``. A multi-valued left side (the history) gives one crossed feature per
  distinct value: history {7, 9, 7} × target 3 -> the features (7, 3) and (9, 3), each with value 1.

Example, F = 3, D = 2 with f_1 = [1, 2], f_2 = [3, −1], f_3 = [0, 2]: IPNN p = [1·3 − 2, 0 + 4, 0 − 2] = [1, 4, −2];
OPNN f_Σ = [4, 3] -> p = vec([[16, 12], [12, 9]]) = [16, 12, 12, 9].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from training.layers.interaction import num_pairs, pairwise_inner_products, summed_outer_product
from training.layers.jagged import repeat_rows, segment_ids

__all__ = ["HASH_PRIME", "HashedCrossWeights", "ProductLayer", "ResidualUnit", "cross_hash"]


class ResidualUnit(nn.Module):
    """Deep Crossing's residual unit: ``[B, K]`` -> ``[B, K]``, X_O = ReLU(X_I + W_1 ReLU(W_0 X_I + b_0) + b_1).

    Attributes:
        inner: ``nn.Linear(K, hidden)``: W_0, b_0.
        outer: ``nn.Linear(hidden, K)``: W_1, b_1.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.inner = nn.Linear(dim, hidden)
        self.outer = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.outer(torch.relu(self.inner(x))))


class ProductLayer(nn.Module):
    """PNN's product layer: fields ``[B, F, D]`` -> l_1 = ReLU(W_z z + W_p p + b_1) ``[B, out_dim]``.

    ``product="inner"`` (IPNN): p holds the P = F(F − 1)/2 inner products ⟨f_i, f_j⟩, i < j, in
    :func:`training.layers.interaction.pair_indices` order. ``product="outer"`` (OPNN): p is the D × D outer
    product f_Σ f_Σᵀ of the summed embeddings, flattened row-major (p[a·D + b] = f_Σ[a] f_Σ[b]).

    Attributes:
        linear_z: ``nn.Linear(F·D, out_dim)``: W_z and b_1 (z is the fields flattened row-major, field by field).
        linear_p: ``nn.Linear(P or D², out_dim, bias=False)``: W_p.
    """

    def __init__(self, num_fields: int, embed_dim: int, out_dim: int, product: Literal["inner", "outer"]) -> None:
        super().__init__()
        if product not in ("inner", "outer"):
            raise ValueError(f"product must be 'inner' or 'outer', got {product!r}")
        if product == "inner" and num_fields < 2:
            raise ValueError("an inner-product layer needs at least two fields")
        self.num_fields, self.embed_dim, self.product = num_fields, embed_dim, product
        self.product_dim = num_pairs(num_fields) if product == "inner" else embed_dim * embed_dim
        self.linear_z = nn.Linear(num_fields * embed_dim, out_dim)
        self.linear_p = nn.Linear(self.product_dim, out_dim, bias=False)

    def _check(self, fields: Tensor) -> None:
        if fields.dim() != 3 or tuple(fields.shape[1:]) != (self.num_fields, self.embed_dim):
            raise ValueError(f"fields must be [B, {self.num_fields}, {self.embed_dim}], got {tuple(fields.shape)}")

    def products(self, fields: Tensor) -> Tensor:
        """p: ``[B, F, D]`` -> ``[B, P]`` (inner) or ``[B, D²]`` (outer)."""
        self._check(fields)
        if self.product == "inner":
            return pairwise_inner_products(fields)
        return summed_outer_product(fields).flatten(1)

    def forward(self, fields: Tensor) -> Tensor:
        self._check(fields)
        return torch.relu(self.linear_z(fields.flatten(1)) + self.linear_p(self.products(fields)))


#: the Mersenne prime 2^31 − 1: the modulus of :func:`cross_hash`'s polynomial step
HASH_PRIME = 2**31 - 1
_MULTIPLIERS = (1_103_515_245, 1_597_334_677, 2_147_483_629)  # all < HASH_PRIME: each product stays < 2^62
_OFFSET = 12_345
_MIX = 0x45D9F3B  # 32-bit integer finaliser constant (x ^= x >> 16; x *= C mod 2^32; x ^= x >> 16)


def cross_hash(left: Tensor, right: Tensor, cross: int, num_buckets: int) -> Tensor:
    """Bucket of the crossed feature (left, right) of cross number ``cross``: LongTensors of one shape -> same.

    Exact integer arithmetic on int64 (no overflow: every product is below 2^62)::

        x = (A_0·(left mod p) mod p + A_1·(right mod p) mod p + A_2·cross mod p + c) mod p     p = 2^31 − 1
        x = x ^ (x >> 16);  x = (x · 0x45d9f3b) mod 2^32;  x = x ^ (x >> 16)                 (bit mixing)
        bucket = x mod num_buckets

    The same (left, right, cross) always gives the same bucket, on any device; the cross is directional
    ((a, b) and (b, a) are different features) and different crosses of the same ids land in different rows
    unless they collide (probability about 1 / num_buckets per pair of features).
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    p = HASH_PRIME
    a0, a1, a2 = _MULTIPLIERS
    x = (left.long() % p) * a0 % p + (right.long() % p) * a1 % p + (cross * a2 + _OFFSET) % p
    x = x % p
    x = x ^ (x >> 16)
    x = (x * _MIX) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    return x % num_buckets


class HashedCrossWeights(nn.Module):
    """The wide part's weights of cross-product features: Σ_k Σ_{distinct pairs (s, t) of cross k} w[bucket].

    ``forward(crosses)`` takes one ``(left_values [N], left_lengths [B], right [B])`` per cross k (in order, k = 0,
    1, ...): row b's left ids are its ``left_lengths[b]`` jagged values (a scalar feature is a jagged one with
    length 1), each crossed with the row's one ``right`` id. Returns ``[B]``: the sum over every cross of the
    weights of the row's distinct crossed features. φ is binary, so a pair repeated within a row (the same item
    twice in a history) counts once; an empty history has no crossed feature and contributes 0.

    The weights start at 0 (a linear model's usual start). Attributes: ``weight``, ``nn.Embedding(num_buckets, 1)``.
    """

    def __init__(self, num_buckets: int) -> None:
        super().__init__()
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        self.num_buckets = num_buckets
        self.weight = nn.Embedding(num_buckets, 1)
        nn.init.zeros_(self.weight.weight)

    def buckets(self, left_values: Tensor, left_lengths: Tensor, right: Tensor, cross: int) -> Tensor:
        """LongTensor ``[N]``: the bucket of each left value crossed with its row's right id."""
        return cross_hash(left_values, repeat_rows(right.unsqueeze(1), left_lengths).squeeze(1), cross,
                          self.num_buckets)

    def forward(self, crosses: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        if not crosses:
            raise ValueError("HashedCrossWeights needs at least one cross")
        batch = crosses[0][1].shape[0]
        total = self.weight.weight.new_zeros(batch)
        for k, (left_values, left_lengths, right) in enumerate(crosses):
            if left_lengths.shape[0] != batch or right.shape != (batch,):
                raise ValueError(f"cross {k}: lengths {tuple(left_lengths.shape)} and right {tuple(right.shape)} "
                                 f"must both be [{batch}]")
            if left_values.numel() == 0:
                continue
            rows = segment_ids(left_lengths, total=left_values.shape[0])
            weights = self.weight(self.buckets(left_values, left_lengths, right, k)).squeeze(1)  # [N]
            # binary features: each distinct (row, left id) pair counts once (ids are < 2^31: the key is exact)
            _, pair, counts = torch.unique(rows * HASH_PRIME + left_values.long(), return_inverse=True,
                                           return_counts=True)
            total = total.index_add(0, rows, weights / counts[pair].to(weights.dtype))
        return total
