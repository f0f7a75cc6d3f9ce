"""The β-smoothed jagged softmax (NAIS eq. 6) on a 3-row batch with lengths [2, 0, 3], against values by hand."""

from __future__ import annotations

import math

import pytest
import torch

from training.layers.jagged_softmax import segment_logsumexp, smoothed_softmax

LENGTHS = torch.tensor([2, 0, 3])
# row 0: f = [0, log 3] -> exp f = [1, 3], Σ = 4; row 1: empty; row 2: f = [1, 1, 1] -> Σ = 3e
SCORES = torch.tensor([0.0, math.log(3.0), 1.0, 1.0, 1.0])


def test_logsumexp_per_row_and_empty_row_is_zero():
    expected = torch.tensor([math.log(4.0), 0.0, 1.0 + math.log(3.0)])
    torch.testing.assert_close(segment_logsumexp(SCORES, LENGTHS), expected)


def test_beta_one_is_the_plain_softmax_over_the_row():
    # row 0: [1/4, 3/4]; row 2: [1/3, 1/3, 1/3]; each row sums to 1
    expected = torch.tensor([0.25, 0.75, 1 / 3, 1 / 3, 1 / 3])
    torch.testing.assert_close(smoothed_softmax(SCORES, LENGTHS, beta=1.0), expected)


def test_beta_half_divides_by_the_square_root_of_the_sum():
    # row 0: exp f / sqrt(4) = [1/2, 3/2]; row 2: e / sqrt(3e) = sqrt(e/3) each (the weights sum to more than 1)
    third = math.sqrt(math.e / 3.0)
    expected = torch.tensor([0.5, 1.5, third, third, third])
    torch.testing.assert_close(smoothed_softmax(SCORES, LENGTHS, beta=0.5), expected)


def test_masked_steps_get_zero_and_leave_the_denominator():
    # row 2 without its middle step: Σ = 2e -> β = 1: [1/2, 0, 1/2]; β = 0.5: e / sqrt(2e) = sqrt(e/2)
    mask = torch.tensor([True, True, True, False, True])
    torch.testing.assert_close(smoothed_softmax(SCORES, LENGTHS, 1.0, mask),
                               torch.tensor([0.25, 0.75, 0.5, 0.0, 0.5]))
    half = math.sqrt(math.e / 2.0)
    torch.testing.assert_close(smoothed_softmax(SCORES, LENGTHS, 0.5, mask),
                               torch.tensor([0.5, 1.5, half, 0.0, half]))


def test_large_scores_do_not_overflow():
    # exp(100) overflows float32 (max ~3.4e38); in log space: β = 1 -> [1/2, 1/2]; β = 0.5 -> exp(50) / sqrt(2)
    scores, lengths = torch.tensor([100.0, 100.0]), torch.tensor([2])
    torch.testing.assert_close(smoothed_softmax(scores, lengths, 1.0), torch.tensor([0.5, 0.5]))
    expected = torch.full((2,), math.exp(50.0) / math.sqrt(2.0))
    torch.testing.assert_close(smoothed_softmax(scores, lengths, 0.5), expected)
    # very negative scores do not underflow to a 0 denominator either
    torch.testing.assert_close(smoothed_softmax(-scores * 10, lengths, 1.0), torch.tensor([0.5, 0.5]))


def test_gradient_is_finite_with_masked_and_empty_rows():
    # a masked step with a huge score, a row whose only step is masked and an empty row: no NaN, masked grads 0
    scores = torch.tensor([1.0, 500.0, 2.0], requires_grad=True)
    lengths = torch.tensor([2, 1, 0])
    mask = torch.tensor([True, False, False])
    weights = smoothed_softmax(scores, lengths, 0.5, mask)
    torch.testing.assert_close(weights.detach(), torch.tensor([math.exp(0.5), 0.0, 0.0]))  # e / sqrt(e)
    weights.sum().backward()
    # d/df exp(f - 0.5 f) = 0.5 exp(0.5 f) at f = 1
    torch.testing.assert_close(scores.grad, torch.tensor([0.5 * math.exp(0.5), 0.0, 0.0]))


def test_beta_must_be_in_zero_one():
    for beta in (0.0, 1.5):
        with pytest.raises(ValueError, match="beta"):
            smoothed_softmax(SCORES, LENGTHS, beta)
