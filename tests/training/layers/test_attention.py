"""DIN's activation unit with hand-set weights, D = 1, hidden = (2,), ReLU.

Input per key: [k, q, k - q, k*q]. Layer 1: W1 = [[1, 1, 0, 0], [0, 0, 1, 1]], b1 = [0, -1];
layer 2: W2 = [[2, 1]], b2 = [0.5]. So

    g(k, q) = 2 * relu(k + q) + relu(k - q + k*q - 1) + 0.5

Values used below:
    g(3, 1)  = 2*relu(4) + relu(2 + 3 - 1)   + 0.5 = 8 + 4 + 0.5 = 12.5
    g(-1, 1) = 2*relu(0) + relu(-2 - 1 - 1)  + 0.5 = 0 + 0 + 0.5 = 0.5
    g(-1, 2) = 2*relu(1) + relu(-3 - 2 - 1)  + 0.5 = 2 + 0 + 0.5 = 2.5
    g(2, 2)  = 2*relu(4) + relu(0 + 4 - 1)   + 0.5 = 8 + 3 + 0.5 = 11.5
"""

from __future__ import annotations

import pytest
import torch

from training.layers.attention import ActivationUnit, din_pooling, weighted_sum


def hand_unit() -> ActivationUnit:
    unit = ActivationUnit(1, hidden=(2,), activation="relu")
    first, last = unit.mlp.layers[0], unit.mlp.layers[2]
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]))
        first.bias.copy_(torch.tensor([0.0, -1.0]))
        last.weight.copy_(torch.tensor([[2.0, 1.0]]))
        last.bias.copy_(torch.tensor([0.5]))
    return unit


def col(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).unsqueeze(1)  # [n] -> [n, D=1]


def test_weights_lengths_2_0():
    # row 0 (q = 1) holds keys 3, -1; row 1 (q = 2) is empty
    unit = hand_unit()
    keys, query, lengths = col([3.0, -1.0]), col([1.0, 2.0]), torch.tensor([2, 0])
    assert unit(keys, query, lengths).tolist() == pytest.approx([12.5, 0.5])
    # pooled: row 0 = 12.5*3 + 0.5*(-1) = 37; row 1 empty -> exactly 0
    pooled = din_pooling(unit, keys, query, lengths)
    assert pooled.squeeze(1).tolist() == pytest.approx([37.0, 0.0])
    assert pooled[1].item() == 0.0


def test_weights_lengths_1_2():
    # row 0 (q = 1) holds key 3; row 1 (q = 2) holds keys -1, 2
    unit = hand_unit()
    keys, query, lengths = col([3.0, -1.0, 2.0]), col([1.0, 2.0]), torch.tensor([1, 2])
    assert unit(keys, query, lengths).tolist() == pytest.approx([12.5, 2.5, 11.5])
    # pooled: row 0 = 12.5*3 = 37.5; row 1 = 2.5*(-1) + 11.5*2 = 20.5
    assert din_pooling(unit, keys, query, lengths).squeeze(1).tolist() == pytest.approx([37.5, 20.5])


def test_weights_are_not_normalised():
    unit = hand_unit()
    query = col([1.0, 2.0])
    # duplicating key 2 of row 1 adds g(2, 2) * 2 = 23 to it: 20.5 -> 43.5 (a softmax would keep it at a weighted mean)
    pooled = din_pooling(unit, col([3.0, -1.0, 2.0, 2.0]), query, torch.tensor([1, 3]))
    assert pooled.squeeze(1).tolist() == pytest.approx([37.5, 43.5])
    weights = unit(col([3.0, -1.0, 2.0, 2.0]), query, torch.tensor([1, 3]))
    assert weights[1:].sum().item() == pytest.approx(2.5 + 11.5 + 11.5)  # far from 1


def test_rows_only_see_their_own_valid_steps():
    unit = hand_unit()
    keys, query, lengths = col([3.0, -1.0, 2.0]), col([1.0, 2.0]), torch.tensor([1, 2])
    base = din_pooling(unit, keys, query, lengths)
    # changing row 0's key and query leaves row 1 alone
    other = din_pooling(unit, col([-7.0, -1.0, 2.0]), col([5.0, 2.0]), lengths)
    assert torch.equal(other[1], base[1])
    # an empty row pools to 0 whatever its query is
    empty = din_pooling(unit, keys, col([1.0, 2.0, 123.0]), torch.tensor([1, 2, 0]))
    assert torch.equal(empty[:2], base) and empty[2].item() == 0.0


def test_weighted_sum_d2():
    # row 0: 2*[1, 0] + 0.5*[0, 4] = [2, 2]; row 1: empty; row 2: -1*[3, 3] = [-3, -3]
    keys = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 3.0]])
    out = weighted_sum(keys, torch.tensor([2.0, 0.5, -1.0]), torch.tensor([2, 0, 1]))
    assert torch.equal(out, torch.tensor([[2.0, 2.0], [0.0, 0.0], [-3.0, -3.0]]))


def test_default_unit_with_dice_shapes_and_gradients():
    torch.manual_seed(0)
    unit = ActivationUnit(4)  # hidden (80, 40), Dice
    keys = torch.randn(5, 4, requires_grad=True)
    query = torch.randn(3, 4)
    lengths = torch.tensor([2, 0, 3])
    assert unit(keys, query, lengths).shape == (5,)
    pooled = din_pooling(unit, keys, query, lengths)
    assert pooled.shape == (3, 4) and torch.equal(pooled[1], torch.zeros(4))
    pooled.sum().backward()
    assert keys.grad is not None and unit.mlp.layers[1].alpha.grad is not None


def test_mismatched_lengths_are_an_error():
    unit = hand_unit()
    with pytest.raises(ValueError, match="lengths sum to 3 but there are 2 keys"):
        unit(col([3.0, -1.0]), col([1.0, 2.0]), torch.tensor([1, 2]))
