"""Dice, the data-adaptive activation of DIN (Zhou et al., KDD 2018, section 4.3).

    f(s) = p(s) · s + (1 − p(s)) · α · s,    p(s) = σ((s − E[s]) / sqrt(Var[s] + ε))

per unit (column) of an input ``[N, H]``: N rows (for the activation unit, the N valid steps of a jagged batch, so
padding never enters the statistics), H units. α is learned per unit and starts at 0, so a fresh Dice is
``p(s) · s``. With E[s] = 0 and Var[s] → 0, p is a step at 0 and Dice is PReLU with slope α (the paper's remark);
otherwise the rectifying point and its sharpness follow the data.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Dice"]


class Dice(nn.Module):
    """Dice activation over ``[N, H]`` -> ``[N, H]``.

    Statistics (an ``nn.BatchNorm1d(H, affine=False)`` does the bookkeeping):

    * training: E[s] and Var[s] are the batch mean and the *biased* batch variance (divide by N) over the N rows,
      per unit; the running averages are then updated with ``momentum``:
      ``running_mean ← (1 − momentum) · running_mean + momentum · mean`` and the same for ``running_var`` with the
      *unbiased* batch variance (divide by N − 1), as BatchNorm does. They start at mean 0 and variance 1.
    * evaluation (``.eval()``): E[s] = running_mean, Var[s] = running_var.

    Batch sizes in training: N = 0 returns an empty ``[0, H]`` and leaves the running statistics alone (a batch
    whose histories are all empty); N = 1 raises a ValueError, since the variance of one row is not an estimate of
    anything (BatchNorm's own error names neither Dice nor the cause). Evaluation accepts any N.

    Args:
        num_features: H, the number of units.
        eps: ε inside the square root (1e-9 as in the DIN reference code).
        momentum: weight of the new batch in the running averages.
    """

    def __init__(self, num_features: int, eps: float = 1e-9, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum, affine=False)
        self.alpha = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"Dice expects [N, {self.num_features}], got {tuple(x.shape)}")
        if self.training:
            if x.shape[0] == 0:
                return x * self.alpha
            if x.shape[0] == 1:
                raise ValueError(
                    "Dice needs at least 2 rows in training mode to estimate the batch mean and variance (got 1); "
                    "use a larger batch or call .eval() to use the running statistics"
                )
        p = torch.sigmoid(self.bn(x))
        # p·s + (1 − p)·α·s = s·(α + p·(1 − α)): the same value in two [N, H] operations instead of five
        return x * torch.addcmul(self.alpha, p, 1.0 - self.alpha)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.bn.eps}, momentum={self.bn.momentum}"
