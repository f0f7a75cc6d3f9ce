"""Softmax over the valid steps of each row of a jagged batch, with NAIS's smoothing exponent β.

NAIS (He et al., TKDE 2018, eq. 6) normalises attention scores f_j of one row by a *smoothed* denominator::

    a_j = exp(f_j) / [Σ_{j'} exp(f_j')]^β          β in (0, 1]

β = 1 is the plain softmax (the weights sum to 1); β < 1 shrinks the denominator, so a row with many steps is not
penalised as much (with β = 0.5 and n equal scores every weight is 1/sqrt(n) instead of 1/n). It is computed in log
space, ``log a_j = f_j − β · logsumexp_{j'}(f_j')``, with the row's maximum taken out of the logsumexp, so large
scores do not overflow and small ones do not underflow to a 0 denominator.

Layout as in :mod:`training.layers.jagged`: scores ``[N]`` with lengths ``[B]`` (N = lengths.sum()). An optional
BoolTensor ``mask [N]`` drops steps from their row (NAIS drops the history steps equal to the scored item): a
masked step gets weight exactly 0 and enters no denominator. A row with no valid step gives no weight at all (its
logsumexp is reported as 0). No NaN reaches the gradient, even for masked or empty rows.

Example, one row of lengths [3] with scores f = [0, 0, log 2] and mask [1, 1, 0]: the valid steps are 0 and 1,
Σ exp f = 2, so β = 1 gives [1/2, 1/2, 0] and β = 0.5 gives [1/sqrt(2), 1/sqrt(2), 0].
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.layers.jagged import segment_ids

__all__ = ["segment_logsumexp", "smoothed_softmax"]


def _valid(scores: Tensor, mask: Tensor | None) -> Tensor:
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D [N], got shape {tuple(scores.shape)}")
    if mask is None:
        return torch.ones_like(scores, dtype=torch.bool)
    if mask.shape != scores.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a BoolTensor of the scores' shape {tuple(scores.shape)}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    return mask


def _shifted_logsumexp(scores: Tensor, valid: Tensor, ids: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """(m [B], log Σ_valid exp(f − m) [B]) per row, m the row's largest valid score (0 for a row with none)."""
    # the row maxima are constants for the gradient (the result does not depend on them)
    with torch.no_grad():
        filled = scores.detach().masked_fill(~valid, float("-inf"))
        row_max = scores.new_full((batch,), float("-inf")).scatter_reduce(0, ids, filled, "amax")
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    # masked steps: exp(-inf) = 0 with a 0 gradient (a masked value is never exponentiated, so it cannot overflow)
    shifted = torch.where(valid, scores - row_max[ids], scores.new_tensor(float("-inf")))
    sums = scores.new_zeros(batch).index_add(0, ids, torch.exp(shifted))
    # an empty row sums to 0: log(1) keeps its result (0) and its gradient finite
    return row_max, torch.log(torch.where(sums > 0, sums, torch.ones_like(sums)))


def segment_logsumexp(scores: Tensor, lengths: Tensor, mask: Tensor | None = None) -> Tensor:
    """log Σ_{valid j of row b} exp(scores_j) per row: scores ``[N]``, lengths ``[B]`` -> ``[B]``; empty rows give 0.

    ``mask [N]`` (bool, True = valid) leaves steps out. Stable: the row's largest valid score is subtracted before
    ``exp`` and added back after ``log``.
    """
    valid = _valid(scores, mask)
    ids = segment_ids(lengths, total=scores.shape[0])
    row_max, log_sums = _shifted_logsumexp(scores, valid, ids, lengths.shape[0])
    return log_sums + row_max


def smoothed_softmax(scores: Tensor, lengths: Tensor, beta: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """a_j = exp(f_j) / [Σ_{valid j' of j's row} exp(f_j')]^β per jagged step: ``[N]`` -> ``[N]``.

    ``beta`` in (0, 1]; 1 is the plain softmax over each row's valid steps. Masked steps (``mask`` False) get 0.
    With m the row's largest valid score, log a_j = (f_j − m) − β · log Σ exp(f − m) + (1 − β) · m: every term is
    O(1) but the last, which is exactly 0 for β = 1, so the plain softmax loses no precision to large |f|.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    valid = _valid(scores, mask)
    ids = segment_ids(lengths, total=scores.shape[0])
    row_max, log_sums = _shifted_logsumexp(scores, valid, ids, lengths.shape[0])
    log_weights = (scores - row_max[ids]) - beta * log_sums[ids]
    if beta != 1.0:
        log_weights = log_weights + (1.0 - beta) * row_max[ids]
    return torch.exp(torch.where(valid, log_weights, scores.new_tensor(float("-inf"))))
