"""The MLP tower shared by the models, and the activations it can use.

``MLP(in_dim, hidden=(h1, h2), output_dim=1)`` is::

    Linear(in_dim, h1) → act(h1) → [Dropout] → Linear(h1, h2) → act(h2) → [Dropout] → Linear(h2, 1)

Input ``[N, in_dim]`` -> output ``[N, out_dim]``. N is a batch (B) or the N valid steps of a jagged batch; inputs
are 2-D because Dice keeps one statistic per unit over the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from training.layers.dice import Dice

__all__ = ["ACTIVATIONS", "MLP", "activation_layer"]

ActivationName = Literal["relu", "prelu", "dice", "sigmoid"]
ACTIVATIONS: tuple[str, ...] = ("relu", "prelu", "dice", "sigmoid")


def activation_layer(name: ActivationName | str, width: int) -> nn.Module:
    """A fresh activation for a layer of ``width`` units.

    ``relu``: ``nn.ReLU()``; ``prelu``: ``nn.PReLU(width)`` (one slope per unit, initialised to 0.25);
    ``dice``: ``Dice(width)`` (see :mod:`training.layers.dice`); ``sigmoid``: ``nn.Sigmoid()``.
    Any other name is a ValueError.
    """
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(width)
    if name == "dice":
        return Dice(width)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


class MLP(nn.Module):
    """Fully connected tower ``[N, in_dim]`` -> ``[N, out_dim]``.

    Each hidden width h gives ``Linear → activation → Dropout`` (the Dropout module is only added when
    ``dropout > 0``). Then a final ``Linear(hidden[-1], output_dim)`` with no activation after it (logits), unless
    ``output_dim`` is None: then the output is the last hidden layer (after its activation and dropout) and
    ``out_dim == hidden[-1]``. With no hidden layer and ``output_dim=None`` the MLP is the identity.

    Attributes:
        out_dim: width of the output.
        layers: the ``nn.Sequential`` of the modules above, in order.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        activation: ActivationName | str = "relu",
        dropout: float = 0.0,
        output_dim: int | None = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        modules: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            modules += [nn.Linear(width, h), activation_layer(activation, h)]
            if dropout > 0:
                modules.append(nn.Dropout(dropout))
            width = h
        if output_dim is not None:
            modules.append(nn.Linear(width, output_dim))
            width = output_dim
        self.in_dim = in_dim
        self.out_dim = width
        self.layers = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
