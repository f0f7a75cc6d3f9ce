"""MLP structure and a forward value with hand-set weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.layers.dice import Dice
from training.layers.mlp import MLP, activation_layer


def test_activation_layer():
    assert isinstance(activation_layer("relu", 4), nn.ReLU)
    assert isinstance(activation_layer("sigmoid", 4), nn.Sigmoid)
    prelu = activation_layer("prelu", 4)
    assert isinstance(prelu, nn.PReLU) and prelu.weight.shape == (4,)  # one slope per unit
    dice = activation_layer("dice", 4)
    assert isinstance(dice, Dice) and dice.alpha.shape == (4,)
    with pytest.raises(ValueError, match="unknown activation"):
        activation_layer("tanh", 4)


def test_structure_and_out_dim():
    mlp = MLP(6, (4, 3), activation="prelu", dropout=0.1)
    kinds = [type(m) for m in mlp.layers]
    assert kinds == [nn.Linear, nn.PReLU, nn.Dropout, nn.Linear, nn.PReLU, nn.Dropout, nn.Linear]
    shapes = [(m.in_features, m.out_features) for m in mlp.layers if isinstance(m, nn.Linear)]
    assert shapes == [(6, 4), (4, 3), (3, 1)]
    assert mlp.out_dim == 1
    assert mlp(torch.zeros(5, 6)).shape == (5, 1)


def test_output_dim_none_ends_with_the_last_hidden_layer():
    mlp = MLP(6, (4, 3), activation="relu", output_dim=None)
    assert [type(m) for m in mlp.layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]  # no Dropout when dropout=0
    assert mlp.out_dim == 3
    assert MLP(6, (), output_dim=None).out_dim == 6
    assert MLP(6, (), output_dim=2).out_dim == 2


def _set(linear: nn.Linear, weight: list[list[float]], bias: list[float]) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))
        linear.bias.copy_(torch.tensor(bias))


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        # x = [1, 2]: pre-activation h = [1 - 2 + 0, 2 + 2 - 1] = [-1, 3]
        # relu:  h = [0, 3]       -> 1*0 + 3*3 + 0.5 = 9.5
        # prelu (slope 0.25): h = [-0.25, 3] -> -0.25 + 9 + 0.5 = 9.25
        # x = [3, -1]: h = [3 + 1, 6 - 1 - 1] = [4, 4] -> 4 + 12 + 0.5 = 16.5 for both
        ("relu", [9.5, 16.5]),
        ("prelu", [9.25, 16.5]),
    ],
)
def test_forward_with_hand_set_weights(activation, expected):
    mlp = MLP(2, (2,), activation=activation, output_dim=1)
    _set(mlp.layers[0], [[1.0, -1.0], [2.0, 1.0]], [0.0, -1.0])
    _set(mlp.layers[2], [[1.0, 3.0]], [0.5])
    out = mlp(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
    assert out.squeeze(1).tolist() == pytest.approx(expected)


def test_bad_dropout():
    with pytest.raises(ValueError, match="dropout"):
        MLP(2, (2,), dropout=1.0)
