"""Jagged helpers on a 3-row batch with lengths [2, 0, 3] (row 1 empty); every expected value is written out."""

from __future__ import annotations

import pytest
import torch

from training.layers.jagged import from_padded, offsets, repeat_rows, segment_ids, segment_sum, to_padded

LENGTHS = torch.tensor([2, 0, 3])
# row 0: [1, 10], [2, 20]; row 1: nothing; row 2: [3, 30], [4, 40], [5, 50]
VALUES = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [5.0, 50.0]])


def test_segment_ids_and_offsets():
    assert segment_ids(LENGTHS).tolist() == [0, 0, 2, 2, 2]
    assert segment_ids(LENGTHS, total=5).tolist() == [0, 0, 2, 2, 2]
    assert offsets(LENGTHS).tolist() == [0, 2, 2]
    assert segment_ids(torch.tensor([0, 0])).tolist() == []


def test_segment_ids_wrong_total_is_a_clear_error():
    with pytest.raises(ValueError, match="lengths sum to 5 but there are 4"):
        segment_ids(LENGTHS, total=4)


def test_segment_sum_empty_row_is_zero():
    # row 0: [1+2, 10+20]; row 1: empty -> 0; row 2: [3+4+5, 30+40+50]
    expected = torch.tensor([[3.0, 30.0], [0.0, 0.0], [12.0, 120.0]])
    assert torch.equal(segment_sum(VALUES, LENGTHS), expected)


def test_segment_sum_all_rows_empty():
    out = segment_sum(torch.zeros(0, 2), torch.tensor([0, 0, 0]))
    assert torch.equal(out, torch.zeros(3, 2))


def test_segment_sum_gradient_is_the_rows_gradient():
    values = VALUES.clone().requires_grad_(True)
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    (segment_sum(values, LENGTHS) * c).sum().backward()
    # d/dvalue_j of sum_b c_b . sum_{j in b} value_j = c_{row(j)}: rows [0, 0, 2, 2, 2]
    expected = torch.tensor([[1.0, 2.0], [1.0, 2.0], [5.0, 6.0], [5.0, 6.0], [5.0, 6.0]])
    assert torch.equal(values.grad, expected)


def test_segment_sum_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="lengths sum to 4 but there are 5"):
        segment_sum(VALUES, torch.tensor([2, 0, 2]))


def test_repeat_rows_aligns_the_query_with_the_keys():
    x = torch.tensor([[7.0, 70.0], [8.0, 80.0], [9.0, 90.0]])
    expected = torch.tensor([[7.0, 70.0], [7.0, 70.0], [9.0, 90.0], [9.0, 90.0], [9.0, 90.0]])
    assert torch.equal(repeat_rows(x, LENGTHS), expected)


def test_to_padded_and_mask():
    padded, mask = to_padded(VALUES, LENGTHS, max_len=4)
    z = [0.0, 0.0]
    expected = torch.tensor(
        [
            [[1.0, 10.0], [2.0, 20.0], z, z],
            [z, z, z, z],
            [[3.0, 30.0], [4.0, 40.0], [5.0, 50.0], z],
        ]
    )
    assert torch.equal(padded, expected)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, False, False], [False] * 4, [True, True, True, False]]


def test_to_padded_is_differentiable_and_refuses_to_truncate():
    values = VALUES.clone().requires_grad_(True)
    padded, _ = to_padded(values, LENGTHS, max_len=3)
    padded.sum().backward()
    assert torch.equal(values.grad, torch.ones(5, 2))
    with pytest.raises(ValueError, match="longer"):
        to_padded(VALUES, LENGTHS, max_len=2)


def test_from_padded_ignores_padding_and_inverts_to_padded():
    padded = torch.full((3, 3, 2), 99.0)  # garbage everywhere...
    padded[0, :2] = VALUES[:2]  # ...except the valid steps
    padded[2, :3] = VALUES[2:]
    assert torch.equal(from_padded(padded, LENGTHS), VALUES)
    assert torch.equal(from_padded(*to_padded(VALUES, LENGTHS, 5)[:1], LENGTHS), VALUES)


def test_lengths_must_be_integer_1d():
    with pytest.raises(ValueError, match="integer"):
        segment_ids(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="1-D"):
        segment_ids(torch.tensor([[1, 2]]))
