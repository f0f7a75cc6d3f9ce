"""Helpers for the jagged layout of a batch: the values of all rows concatenated, plus one length per row.

This is the layout of a TorchRec ``KeyedJaggedTensor`` feature after the embedding lookup (see
``training/features.py``): padding never exists, so a layer that works on jagged values cannot attend to, sum or
normalise over a padded step by mistake. Notation: B rows, N = ``lengths.sum()`` valid steps in the whole batch,
D embedding dim (any trailing shape ``*`` works where ``[N, D]`` is written), L a padded length.

Example, B = 3 rows with lengths [2, 0, 3]::

    values  = [a, b, c, d, e]            # [N=5, D]: row 0 holds a, b; row 1 is empty; row 2 holds c, d, e
    segment_ids(lengths)         -> [0, 0, 2, 2, 2]
    segment_sum(values, lengths) -> [a + b, 0, c + d + e]
    to_padded(values, lengths, 3) -> [[a, b, 0], [0, 0, 0], [c, d, e]], mask [[1, 1, 0], [0, 0, 0], [1, 1, 1]]

Every helper is vectorised (no Python loop over rows). ``total`` (= N), where a helper accepts it, saves the
device-to-host sync that ``repeat_interleave`` otherwise needs to learn the output size; a wrong ``total`` is an error.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["from_padded", "offsets", "repeat_rows", "segment_ids", "segment_sum", "to_padded"]


def _check_lengths(lengths: Tensor) -> None:
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D [B], got shape {tuple(lengths.shape)}")
    if lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"lengths must be an integer tensor (int32/int64), got {lengths.dtype}")


def offsets(lengths: Tensor) -> Tensor:
    """Start of each row in the jagged values: ``[B]`` -> ``[B]`` (exclusive cumulative sum; [2, 0, 3] -> [0, 2, 2])."""
    _check_lengths(lengths)
    return torch.cumsum(lengths, 0) - lengths


def segment_ids(lengths: Tensor, total: int | None = None) -> Tensor:
    """Row index of each jagged value: lengths ``[B]`` -> LongTensor ``[N]`` ([2, 0, 3] -> [0, 0, 2, 2, 2])."""
    _check_lengths(lengths)
    rows = torch.arange(lengths.shape[0], device=lengths.device)
    try:
        return torch.repeat_interleave(rows, lengths.long(), output_size=total)
    except RuntimeError as err:  # torch only says "allocated size does not match required size"
        raise ValueError(f"lengths sum to {int(lengths.sum())} but there are {total} jagged values") from err


def segment_sum(values: Tensor, lengths: Tensor) -> Tensor:
    """Per-row sum of jagged values: values ``[N, D]``, lengths ``[B]`` -> ``[B, D]``; an empty row gives zeros.

    Differentiable w.r.t. ``values`` (out-of-place ``index_add``: the gradient of value j is the gradient of its row).
    """
    ids = segment_ids(lengths, total=values.shape[0])
    out = values.new_zeros((lengths.shape[0], *values.shape[1:]))
    return out.index_add(0, ids, values)


def repeat_rows(x: Tensor, lengths: Tensor) -> Tensor:
    """Repeat row b of ``x`` ``lengths[b]`` times: ``[B, D]`` -> ``[N, D]`` (e.g. the query aligned with jagged keys).

    ``x = [q0, q1, q2]``, lengths [2, 0, 3] -> ``[q0, q0, q2, q2, q2]``.
    """
    _check_lengths(lengths)
    if x.shape[0] != lengths.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but lengths has {lengths.shape[0]}")
    return torch.repeat_interleave(x, lengths.long(), dim=0)


def _positions(lengths: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """(row, position within the row) of each jagged value, both LongTensor ``[N]``."""
    rows = segment_ids(lengths, total=total)
    pos = torch.arange(total, device=lengths.device) - offsets(lengths).long()[rows]
    return rows, pos


def _check_max_len(lengths: Tensor, max_len: int) -> None:
    if lengths.numel() and int(lengths.max()) > max_len:
        raise ValueError(f"a row is longer ({int(lengths.max())}) than max_len={max_len}; rows are never truncated")


def to_padded(values: Tensor, lengths: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """Right-pad jagged values: ``[N, D]``, lengths ``[B]`` -> (padded ``[B, max_len, D]``, mask ``[B, max_len]``).

    Padded positions hold 0; the BoolTensor ``mask[b, t]`` is True for the valid steps ``t < lengths[b]``. A row
    longer than ``max_len`` is a ValueError (it is never truncated silently). Differentiable w.r.t. ``values``.
    Inverse: :func:`from_padded`.
    """
    _check_lengths(lengths)
    _check_max_len(lengths, max_len)
    rows, pos = _positions(lengths, values.shape[0])
    padded = values.new_zeros((lengths.shape[0], max_len, *values.shape[1:]))
    padded = padded.index_put((rows, pos), values)
    mask = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
    return padded, mask


def from_padded(padded: Tensor, lengths: Tensor) -> Tensor:
    """Keep the valid steps of a right-padded batch: ``[B, L, D]``, lengths ``[B]`` -> ``[N, D]`` (row-major order).

    Whatever the padded positions hold is ignored. Inverse of :func:`to_padded`.
    """
    _check_lengths(lengths)
    if padded.shape[0] != lengths.shape[0]:
        raise ValueError(f"padded has {padded.shape[0]} rows but lengths has {lengths.shape[0]}")
    _check_max_len(lengths, padded.shape[1])
    mask = torch.arange(padded.shape[1], device=lengths.device)[None, :] < lengths[:, None]
    return padded[mask]
