"""Evaluation metrics: AUC, GAUC and log loss for CTR, HR@k and NDCG@k for leave-one-out ranking.

Definitions, and why each is computed the way it is:

* **AUC** is the probability that a random positive scores above a random negative, ties counting 1/2 (the
  Mann–Whitney statistic). Computed exactly by ``torchmetrics.classification.BinaryAUROC(thresholds=None)``, which
  keeps every score and integrates the ROC over the distinct scores (so tied scores count 1/2; its counts and
  trapezoids are float32, so the value carries float32 rounding, about 1e-7 relative). A binned AUC
  (``thresholds=k``) would be cheaper but approximate, and the gains reported between models are often in the
  third decimal. When the labels are all one class the AUC is undefined: ``nan`` here (torchmetrics warns and
  returns 0).
* **LogLoss** = −(1/M) Σ_i [y_i log σ(z_i) + (1 − y_i) log(1 − σ(z_i))] over the M rows, from the logits z_i through
  ``binary_cross_entropy_with_logits`` (stable for large |z|: log σ(z) is never formed from a rounded σ(z)). The
  state is a float64 sum and a count, so it aggregates across ranks by summing.
* **GAUC** (DIN, Zhou et al. KDD 2018, eq. 1): GAUC = Σ_u w_u · AUC_u / Σ_u w_u, with w_u the number of user u's
  impressions and AUC_u the AUC of u's impressions alone (ties 1/2). Users whose impressions are all positives or all
  negatives have no AUC and are left out of both sums, their impressions included. This is our own code because
  torchrec's ``GAUCMetric`` (1.8.0) is a different number: an unweighted mean of per-session AUCs; tied scores count
  0 or 1 depending on the argsort order; a session is a contiguous run of ``num_candidates`` rows of one batch (a
  user split across batches or ranks counts as several sessions); and it skips sessions whose scores are all equal.
  Here groups may be interleaved anywhere, across batches and ranks; the rows are gathered and grouped at compute.
  (The DIN repository's own GAUC and RecBole's, which weights users by their positives, also differ.)
* **Scores**: AUC and GAUC only depend on the order of the scores, so any monotone map of the logits gives the same
  value *as long as it keeps distinct logits distinct*. :class:`CTRMetrics` uses σ(z) computed in float64: in float32
  σ(z) rounds to exactly 1.0 for z above about 17, which would turn confident, distinct predictions into ties (σ in
  float64 saturates only above about 37). Logits themselves are not passed to BinaryAUROC because it applies a
  sigmoid of its own only when some value lies outside [0, 1], a data-dependent switch.
* **HR@k and NDCG@k** for leave-one-out evaluation (NAIS, NeuralCF): each user has one held-out positive (column 0)
  and C − 1 sampled negatives. rank = the number of negatives scoring >= the positive (ties, and NaNs, count
  against the model, so a constant scorer gets the worst rank rather than a lucky one). HR@k = mean 1[rank < k];
  NDCG@k = mean 1[rank < k] / log2(rank + 2) (one relevant item, so the ideal DCG is 1). torchmetrics' retrieval
  metrics are not used: they order tied scores by an unspecified (topk/sort-dependent) rule, which can reward a
  degenerate model that scores everything equally and can change with the hardware.

Distributed use: the torchmetrics states are synchronised on ``compute()`` across the default process group (or
the one given), which must then be called on every rank; every rank gets the same result. Ranks may hold different
numbers of rows, and a rank may hold none. AUC and GAUC are exact, so they keep every row until ``reset()``:
about 40 bytes a row (float64 score, int64 label and group, twice), gathered on every rank at compute time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC
from torchmetrics.utilities.data import dim_zero_cat

__all__ = [
    "CTRMetrics",
    "ExactBinaryAUROC",
    "GroupAUC",
    "LogLoss",
    "gather_all",
    "group_auc",
    "hit_rate_at_k",
    "ndcg_at_k",
    "rank_of_positive",
]


def gather_all(result: Tensor, group: Any | None = None) -> list[Tensor]:
    """All-gather tensors whose shapes may differ between ranks (pad to the largest, gather, trim); the metrics' sync.

    The same algorithm as torchmetrics 1.0.3's ``gather_all_tensors``, which trims with a *list* of slices: torch
    warns that this indexing is deprecated and will change meaning, and it is hit exactly when ranks hold different
    numbers of rows. This one trims with a tuple.
    """
    group = group if group is not None else dist.group.WORLD
    result = result.contiguous()
    world_size = dist.get_world_size(group)
    if result.ndim == 0:
        gathered = [torch.zeros_like(result) for _ in range(world_size)]
        dist.all_gather(gathered, result, group=group)
        return gathered
    local_size = torch.tensor(result.shape, device=result.device)
    sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    dist.all_gather(sizes, local_size, group=group)
    max_size = torch.stack(sizes).max(dim=0).values.tolist()
    pad: list[int] = []
    for have, want in reversed(list(zip(result.shape, max_size, strict=True))):
        pad += [0, want - have]
    padded = F.pad(result, pad)
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded, group=group)
    return [t[tuple(slice(int(n)) for n in size.tolist())] for t, size in zip(gathered, sizes, strict=True)]


def _check_binary(labels: Tensor) -> None:
    if ((labels != 0) & (labels != 1)).any():
        raise ValueError("labels must be 0 or 1")


def _flat(name: str, x: Tensor, numel: int) -> Tensor:
    x = x.detach().reshape(-1)
    if x.numel() != numel:
        raise ValueError(f"{name} has {x.numel()} values, expected {numel}")
    return x


class _SyncEmptyListStates:
    """Mixin for a ``Metric`` with list states: a rank without rows still takes part in the gather.

    torchmetrics 1.0.3 skips the all-gather of a list state that is empty on this rank, so that rank computes on its
    own (empty) rows while the other ranks wait for it. Before syncing, an empty list gets one empty tensor of the
    dtype every rank uses for that state (the gather needs equal dtypes), so every rank gathers every state.
    """

    _list_state_dtypes: dict[str, torch.dtype] = {}

    def sync(self, *args: Any, **kwargs: Any) -> None:
        for attr, dtype in self._list_state_dtypes.items():
            value = getattr(self, attr)
            if isinstance(value, list) and not value:
                value.append(torch.zeros(0, dtype=dtype, device=self.device))  # type: ignore[attr-defined]
        super().sync(*args, **kwargs)  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------------------- GAUC
def group_auc(scores: Tensor, labels: Tensor, groups: Tensor) -> dict[str, Any]:
    """Impression-weighted mean of the per-group AUCs (DIN's GAUC), vectorised over groups.

    Args:
        scores: ``[M]`` finite scores (any monotone map of the logits).
        labels: ``[M]`` 0/1 (int, float or bool).
        groups: ``[M]`` int64 group (user) ids, in any order; a group's rows need not be contiguous.

    Returns:
        ``gauc``: 0-dim float64 tensor, Σ_u n_u AUC_u / Σ_u n_u over the users having both classes (``nan`` if none);
        ``users``: how many users qualified; ``impressions``: Σ_u n_u over them.

    AUC_u is the Mann–Whitney statistic with ties counted 1/2: sort by (group, score), give each row the average
    1-based rank of its (group, score) tie block within its group, and AUC_u = (R_u − P_u(P_u + 1)/2) / (P_u N_u) with
    R_u the rank sum of u's P_u positives and N_u its negatives. Ranks are kept doubled, so the arithmetic is in
    int64 and exact until the final division.

    Example: user 1 with scores [0.9, 0.5, 0.5, 0.1] and labels [1, 1, 0, 0] has AUC (1 + 1 + 0.5 + 1) / 4 = 0.875;
    user 2 with [0.3, 0.3, 0.3] and [1, 0, 0] has 0.5; user 3 with only positives is left out.
    GAUC = (4 · 0.875 + 3 · 0.5) / (4 + 3) = 5/7.
    """
    scores = scores.reshape(-1)
    labels = _flat("labels", labels, scores.numel())
    groups = _flat("groups", groups, scores.numel())
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    _check_binary(labels)
    nan = torch.tensor(math.nan, dtype=torch.float64, device=scores.device)
    if scores.numel() == 0:
        return {"gauc": nan, "users": 0, "impressions": 0}
    pos = labels.bool()

    _, g = torch.unique(groups, return_inverse=True)  # dense group id [M], in [0, G)
    num_groups = int(g.max()) + 1
    _, s = torch.unique(scores, return_inverse=True)  # dense score id [M], ascending with the score
    num_scores = int(s.max()) + 1
    block_key, block, block_size = torch.unique(g * num_scores + s, return_inverse=True, return_counts=True)
    # block_key is sorted, i.e. the tie blocks are in (group, score) order; block [M] is each row's block.

    n = torch.bincount(g, minlength=num_groups)  # impressions per group [G]
    n_pos = torch.bincount(g[pos], minlength=num_groups)  # positives per group [G]
    n_neg = n - n_pos
    group_start = torch.cumsum(n, 0) - n  # first sorted position of each group [G]
    block_start = torch.cumsum(block_size, 0) - block_size  # first sorted position of each block [K]
    block_group = torch.div(block_key, num_scores, rounding_mode="floor")
    # the block spans 1-based ranks start+1 .. start+c within its group; twice their average is 2·start + c + 1
    twice_rank = (2 * (block_start - group_start[block_group]) + block_size + 1)[block]  # [M]
    twice_rank_sum = torch.zeros_like(n).index_add(0, g[pos], twice_rank[pos])  # 2 R_u [G]
    twice_u = twice_rank_sum - n_pos * (n_pos + 1)  # 2 U_u: (positive, negative) pairs won, ties 1/2, doubled

    ok = (n_pos > 0) & (n_neg > 0)
    users = int(ok.sum())
    if users == 0:
        return {"gauc": nan, "users": 0, "impressions": 0}
    auc = twice_u[ok].double() / (2 * n_pos[ok] * n_neg[ok]).double()
    weight = n[ok].double()
    return {"gauc": (weight * auc).sum() / weight.sum(), "users": users, "impressions": int(n[ok].sum())}


class GroupAUC(_SyncEmptyListStates, Metric):
    """DIN's GAUC as a torchmetrics ``Metric``: keeps (score, label, group) of every row; compute calls
    :func:`group_auc` on the rows of all ranks and returns its dict.

    ``update(scores [B], labels [B], groups [B])``; scores are kept as float64, labels and groups as int64. Extra
    keyword arguments go to ``torchmetrics.Metric``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    _list_state_dtypes = {"preds": torch.float64, "target": torch.int64, "groups": torch.int64}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_all)
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor, groups: Tensor) -> None:
        scores = scores.detach().reshape(-1)
        labels = _flat("labels", labels, scores.numel())
        _check_binary(labels)
        self.preds.append(scores.double())
        self.target.append(labels.long())
        self.groups.append(_flat("groups", groups, scores.numel()).long())

    def compute(self) -> dict[str, Any]:
        if isinstance(self.preds, list) and not self.preds:
            empty = torch.zeros(0, device=self.device)
            return group_auc(empty, empty.long(), empty.long())
        return group_auc(dim_zero_cat(self.preds), dim_zero_cat(self.target), dim_zero_cat(self.groups))


# ------------------------------------------------------------------------------------------------- AUC, LogLoss
class ExactBinaryAUROC(_SyncEmptyListStates, BinaryAUROC):
    """``BinaryAUROC(thresholds=None)`` (exact, ties 1/2) that returns ``nan`` when the rows are all one class or
    there are none (torchmetrics warns and returns 0), keeps scores as float64, and syncs with :func:`gather_all`
    (a rank without rows included)."""

    _list_state_dtypes = {"preds": torch.float64, "target": torch.int64}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_all)
        super().__init__(thresholds=None, **kwargs)

    def update(self, preds: Tensor, target: Tensor) -> None:
        # float labels are passed on as they are, for BinaryAUROC's own check to reject them
        super().update(preds.double(), target if target.is_floating_point() else target.long())

    def compute(self) -> Tensor:  # type: ignore[override]
        if isinstance(self.target, list) and not self.target:
            return torch.tensor(math.nan, dtype=torch.float64, device=self.device)
        target = dim_zero_cat(self.target)
        if target.numel() == 0 or bool(target.min() == target.max()):
            return torch.tensor(math.nan, dtype=torch.float64, device=self.device)
        return super().compute()


class LogLoss(Metric):
    """Mean binary cross-entropy from logits: ``update(logits [B], labels [B])``, compute -> 0-dim float64 tensor.

    States: ``loss_sum`` (float64) and ``count`` (int64), both summed across ranks. ``nan`` before any row.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_all)
        super().__init__(**kwargs)
        self.add_state("loss_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        logits = logits.detach().reshape(-1).double()
        labels = _flat("labels", labels, logits.numel()).double()
        self.loss_sum += F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        self.count += logits.numel()

    def compute(self) -> Tensor:
        return self.loss_sum / self.count


# ------------------------------------------------------------------------------------------------------- bundle
class CTRMetrics(nn.Module):
    """AUC, GAUC and log loss of a CTR model over an evaluation set, on one process or across ranks.

    ``update(logits [B], labels [B], groups [B])``: logits are the model's raw outputs, labels 0/1 (float or int),
    groups the int64 user ids. ``compute()`` -> ``{"auc", "gauc", "logloss", "gauc_users", "samples"}``: the three
    metrics as floats (``nan`` where undefined), the number of users that entered GAUC and the number of rows.
    ``reset()`` clears everything. Scores for AUC and GAUC are σ(logits) in float64 (see the module docstring).

    Distributed: ``compute()`` is a collective over ``process_group`` (default: the whole world, when
    ``torch.distributed`` is initialised; otherwise nothing is synced) and must be called on every rank; all ranks
    get the same values. Row counts may differ between ranks, and a rank may have no rows.
    """

    def __init__(self, process_group: Any | None = None) -> None:
        super().__init__()
        # No cached results: a rank that returned a cached value while another rank syncs would hang that one.
        kwargs = {"process_group": process_group, "compute_with_cache": False}
        self.auc = ExactBinaryAUROC(**kwargs)
        self.gauc = GroupAUC(**kwargs)
        self.logloss = LogLoss(**kwargs)

    def update(self, logits: Tensor, labels: Tensor, groups: Tensor) -> None:
        logits = logits.detach().reshape(-1)
        labels = _flat("labels", labels, logits.numel())
        groups = _flat("groups", groups, logits.numel())
        _check_binary(labels)
        scores = torch.sigmoid(logits.double())
        self.auc.update(scores, labels.long())
        self.gauc.update(scores, labels, groups)
        self.logloss.update(logits, labels)

    def compute(self) -> dict[str, float]:
        auc = float(self.auc.compute())
        gauc = self.gauc.compute()
        logloss = float(self.logloss.compute())
        with self.logloss.sync_context(dist_sync_fn=self.logloss.dist_sync_fn):
            samples = int(self.logloss.count)
        return {
            "auc": auc,
            "gauc": float(gauc["gauc"]),
            "logloss": logloss,
            "gauc_users": int(gauc["users"]),
            "samples": samples,
        }

    def reset(self) -> None:
        for metric in (self.auc, self.gauc, self.logloss):
            metric.reset()


# ------------------------------------------------------------------------------------------------ ranking (LOO)
def rank_of_positive(scores: Tensor) -> Tensor:
    """0-based rank of the positive among its candidates, ties broken pessimistically.

    ``scores [U, C]``, column 0 the held-out positive, columns 1.. its negatives -> LongTensor ``[U]``: the number of
    negatives with score >= the positive's (a NaN on either side counts against the positive). Example: a row
    [0.5, 0.5, 0.1, 0.7] has rank 2.
    """
    if scores.dim() != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be [U, C] with C >= 1, got {tuple(scores.shape)}")
    positive = scores[:, :1]
    negatives = scores[:, 1:]
    beaten = (negatives >= positive) | torch.isnan(negatives) | torch.isnan(positive)
    return beaten.sum(dim=1)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def hit_rate_at_k(scores: Tensor, k: int) -> Tensor:
    """HR@k = mean over users of 1[rank < k]: ``scores [U, C]`` (positive in column 0) -> 0-dim float tensor."""
    _check_k(k)
    return (rank_of_positive(scores) < k).float().mean()


def ndcg_at_k(scores: Tensor, k: int) -> Tensor:
    """NDCG@k = mean over users of 1[rank < k] / log2(rank + 2): ``scores [U, C]`` -> 0-dim float tensor."""
    _check_k(k)
    rank = rank_of_positive(scores).float()
    gain = torch.where(rank < k, 1.0 / torch.log2(rank + 2.0), torch.zeros_like(rank))
    return gain.mean()
