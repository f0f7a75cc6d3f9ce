"""Dice against f(s) = p(s)·s + (1 − p(s))·α·s, p(s) = σ((s − E[s]) / sqrt(Var[s] + ε)), worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from training.layers.dice import Dice

EPS = 1e-9
# 3 rows, 2 units. Unit 0: s = [0, 3, 6]; unit 1: s = [1, -1, 3].
X = torch.tensor([[0.0, 1.0], [3.0, -1.0], [6.0, 3.0]])
# unit 0: mean 3, biased var (9 + 0 + 9) / 3 = 6, unbiased var 18 / 2 = 9
# unit 1: mean 1, biased var (0 + 4 + 4) / 3 = 8/3, unbiased var 8 / 2 = 4
MEAN = [3.0, 1.0]
BIASED_VAR = [6.0, 8.0 / 3.0]


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def dice_by_hand(s: float, mean: float, var: float, alpha: float) -> float:
    p = sigmoid((s - mean) / math.sqrt(var + EPS))
    return p * s + (1.0 - p) * alpha * s


def test_alpha_starts_at_zero_and_dice_is_then_p_times_s():
    dice = Dice(2)
    assert torch.equal(dice.alpha.detach(), torch.zeros(2))
    out = dice(X)
    # unit 0, row 2: z = (6 - 3) / sqrt(6) = 1.2247, p = 0.77290, f = 0.77290 * 6 = 4.6374
    assert out[2, 0].item() == pytest.approx(sigmoid(3.0 / math.sqrt(6.0)) * 6.0, rel=1e-6)
    assert out[2, 0].item() == pytest.approx(4.6374, abs=1e-4)
    for i in range(3):
        for u in range(2):
            s = X[i, u].item()
            assert out[i, u].item() == pytest.approx(dice_by_hand(s, MEAN[u], BIASED_VAR[u], 0.0), rel=1e-6, abs=1e-7)


def test_training_uses_batch_mean_and_biased_variance():
    dice = Dice(2)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.25, -0.5]))
    out = dice(X)
    # unit 1, row 1: s = -1, z = (-1 - 1) / sqrt(8/3) = -1.2247, p = 0.2271,
    # f = 0.2271 * (-1) + 0.7729 * (-0.5) * (-1) = -0.2271 + 0.3865 = 0.1594
    assert out[1, 1].item() == pytest.approx(0.1594, abs=1e-4)
    # unit 0, row 0: s = 0 -> f = 0 whatever p is
    assert out[0, 0].item() == 0.0
    for i in range(3):
        for u, alpha in enumerate([0.25, -0.5]):
            s = X[i, u].item()
            assert out[i, u].item() == pytest.approx(dice_by_hand(s, MEAN[u], BIASED_VAR[u], alpha), rel=1e-6, abs=1e-7)


def test_eval_uses_running_statistics_after_one_training_step():
    dice = Dice(2, momentum=0.1)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.25, -0.5]))
    dice(X)  # one training step
    # running_mean = 0.9 * 0 + 0.1 * [3, 1] = [0.3, 0.1]
    # running_var  = 0.9 * 1 + 0.1 * unbiased [9, 4] = [1.8, 1.3]
    assert dice.bn.running_mean.tolist() == pytest.approx([0.3, 0.1])
    assert dice.bn.running_var.tolist() == pytest.approx([1.8, 1.3])
    dice.eval()
    x = torch.tensor([[0.3, 1.4]])  # one row is fine in eval
    out = dice(x)
    # unit 0: z = (0.3 - 0.3) / sqrt(1.8) = 0, p = 0.5, f = 0.5 * 0.3 + 0.5 * 0.25 * 0.3 = 0.1875
    assert out[0, 0].item() == pytest.approx(0.1875, rel=1e-6)
    # unit 1: z = (1.4 - 0.1) / sqrt(1.3) = 1.1402, p = 0.7577, f = 0.7577 * 1.4 + 0.2423 * (-0.5) * 1.4 = 0.8911
    p = sigmoid(1.3 / math.sqrt(1.3 + EPS))
    assert out[0, 1].item() == pytest.approx(p * 1.4 + (1 - p) * -0.5 * 1.4, rel=1e-6)
    assert out[0, 1].item() == pytest.approx(0.8911, abs=1e-4)
    # eval does not move the running statistics
    assert dice.bn.running_mean.tolist() == pytest.approx([0.3, 0.1])


def test_one_row_in_training_is_a_clear_error_and_empty_batch_is_a_no_op():
    dice = Dice(2)
    with pytest.raises(ValueError, match="at least 2 rows in training"):
        dice(torch.tensor([[1.0, 2.0]]))
    out = dice(torch.zeros(0, 2))
    assert out.shape == (0, 2)
    assert dice.bn.running_mean.tolist() == [0.0, 0.0]
    assert dice.bn.running_var.tolist() == [1.0, 1.0]


def test_alpha_is_learned_per_unit():
    dice = Dice(2)
    dice(X).sum().backward()
    # df/dα = (1 - p) s summed over rows; unit 0: rows s = 0, 3, 6 with p = σ(-1.2247), σ(0), σ(1.2247)
    z = 3.0 / math.sqrt(6.0)
    expected0 = 0.0 + 0.5 * 3.0 + (1 - sigmoid(z)) * 6.0
    assert dice.alpha.grad[0].item() == pytest.approx(expected0, rel=1e-5)


def test_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        Dice(2)(torch.zeros(3, 2, 4))
