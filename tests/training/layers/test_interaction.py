"""Interaction layers against values worked out by hand (and FM's identity against an explicit loop over pairs).

Fields used throughout, B = 2, F = 3, D = 2:

    row 0: v0 = [1, 2], v1 = [3, -1], v2 = [0, 2]
           pairs (0,1) = [3, -2], (0,2) = [0, 4], (1,2) = [0, -2]       sum [3, 0]
           Σv = [4, 3], (Σv)² = [16, 9], Σv² = [1+9+0, 4+1+4] = [10, 9] -> ½[6, 0] = [3, 0]
    row 1: v0 = [1, 1], v1 = [2, 0], v2 = [-1, 3]
           pairs (0,1) = [2, 0], (0,2) = [-1, 3], (1,2) = [-2, 0]        sum [-1, 3]
           Σv = [2, 4], (Σv)² = [4, 16], Σv² = [6, 10]                  -> ½[-2, 6] = [-1, 3]
"""

from __future__ import annotations

import math

import pytest
import torch

from training.layers.interaction import (
    AttentionalPairPooling,
    bi_interaction,
    fm_second_order,
    num_pairs,
    pair_indices,
    pairwise_inner_products,
    pairwise_products,
    summed_outer_product,
)

FIELDS = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.0, 2.0]],
                       [[1.0, 1.0], [2.0, 0.0], [-1.0, 3.0]]])


def test_pair_indices_are_row_major_upper_triangle():
    i, j = pair_indices(4)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert [len(pair_indices(f)[0]) for f in range(5)] == [0, 0, 1, 3, 6]
    assert [num_pairs(f) for f in range(5)] == [0, 0, 1, 3, 6]


def test_pairwise_products_order_and_values():
    expected = torch.tensor([[[3.0, -2.0], [0.0, 4.0], [0.0, -2.0]],
                             [[2.0, 0.0], [-1.0, 3.0], [-2.0, 0.0]]])
    assert torch.equal(pairwise_products(FIELDS), expected)
    # inner products: row 0: 3 - 2, 0 + 4, 0 - 2; row 1: 2, -1 + 3, -2
    assert pairwise_inner_products(FIELDS).tolist() == [[1.0, 4.0, -2.0], [2.0, 2.0, -2.0]]


def test_pairwise_products_with_feature_values():
    # row 0 with x = [1, 2, 0.5]: x·v = [1, 2], [6, -2], [0, 1] -> pairs [6, -4], [0, 2], [0, -2]
    values = torch.tensor([[1.0, 2.0, 0.5], [1.0, 1.0, 1.0]])
    out = pairwise_products(FIELDS, values)
    assert out[0].tolist() == [[6.0, -4.0], [0.0, 2.0], [0.0, -2.0]]
    assert torch.equal(out[1], pairwise_products(FIELDS)[1])
    assert bi_interaction(FIELDS, values)[0].tolist() == [6.0, -4.0]
    with pytest.raises(ValueError, match="values must be"):
        pairwise_products(FIELDS, torch.ones(2, 2))


def test_bi_interaction_and_fm_by_hand():
    assert bi_interaction(FIELDS).tolist() == [[3.0, 0.0], [-1.0, 3.0]]
    # FM second order = Σ over D of the bi-interaction: 3 + 0, -1 + 3 (= Σ of the inner products 1 + 4 - 2, 2 + 2 - 2)
    assert fm_second_order(FIELDS).tolist() == [3.0, 2.0]


def test_fm_identity_equals_the_explicit_pairwise_sum():
    torch.manual_seed(0)
    fields, values = torch.randn(4, 5, 3), torch.rand(4, 5)
    expected = torch.zeros(4)
    for b in range(4):
        for i in range(5):
            for j in range(i + 1, 5):
                expected[b] += (fields[b, i] * fields[b, j]).sum() * values[b, i] * values[b, j]
    torch.testing.assert_close(fm_second_order(fields, values), expected)
    torch.testing.assert_close(bi_interaction(fields, values).sum(-1), pairwise_products(fields, values).sum((1, 2)))


def test_summed_outer_product():
    # row 0: f_Σ = [4, 3] -> [[16, 12], [12, 9]]; row 1: f_Σ = [2, 4] -> [[4, 8], [8, 16]]
    assert summed_outer_product(FIELDS).tolist() == [[[16.0, 12.0], [12.0, 9.0]], [[4.0, 8.0], [8.0, 16.0]]]


def hand_pooling() -> AttentionalPairPooling:
    # W = I, b = [0, -1], h = [1, 2]: a'(e) = relu(e_0) + 2 relu(e_1 - 1)
    layer = AttentionalPairPooling(2, 2)
    with torch.no_grad():
        layer.attention.weight.copy_(torch.eye(2))
        layer.attention.bias.copy_(torch.tensor([0.0, -1.0]))
        layer.projection.weight.copy_(torch.tensor([[1.0, 2.0]]))
    return layer


def test_afm_pair_attention_by_hand():
    layer = hand_pooling().eval()
    pairs = pairwise_products(FIELDS)
    # row 0: a'([3, -2]) = 3, a'([0, 4]) = 2·3 = 6, a'([0, -2]) = 0 -> softmax over [3, 6, 0]
    z0 = math.exp(3) + math.exp(6) + 1
    # row 1: a'([2, 0]) = 2, a'([-1, 3]) = 2·2 = 4, a'([-2, 0]) = 0 -> softmax over [2, 4, 0]
    z1 = math.exp(2) + math.exp(4) + 1
    weights = layer.weights(pairs)
    torch.testing.assert_close(weights, torch.tensor([[math.exp(3) / z0, math.exp(6) / z0, 1 / z0],
                                                      [math.exp(2) / z1, math.exp(4) / z1, 1 / z1]]))
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    expected = torch.tensor([[3 * math.exp(3) / z0, (-2 * math.exp(3) + 4 * math.exp(6) - 2) / z0],
                             [(2 * math.exp(2) - math.exp(4) - 2) / z1, 3 * math.exp(4) / z1]])
    torch.testing.assert_close(layer(pairs), expected)
    # λ||W||² with W = I (2 x 2): 2
    assert layer.l2_penalty().item() == 2.0


def test_afm_pair_attention_against_an_explicit_loop_over_pairs():
    torch.manual_seed(1)
    layer = AttentionalPairPooling(3, 4).eval()
    fields = torch.randn(2, 4, 3)
    W, b, h = layer.attention.weight, layer.attention.bias, layer.projection.weight[0]
    expected = torch.zeros(2, 3)
    for row in range(2):
        products, scores = [], []
        for i in range(4):
            for j in range(i + 1, 4):
                e = fields[row, i] * fields[row, j]
                products.append(e)
                scores.append(torch.dot(h, torch.relu(W @ e + b)))
        a = torch.exp(torch.stack(scores))
        a = a / a.sum()
        expected[row] = sum(a_ij * e for a_ij, e in zip(a, products, strict=True))
    with torch.no_grad():
        torch.testing.assert_close(layer(pairwise_products(fields)), expected)


def test_afm_pair_attention_dropout_and_shape_errors():
    layer = hand_pooling()
    pairs = pairwise_products(FIELDS)
    layer.dropout.p = 0.5
    torch.manual_seed(0)
    train_out = layer.train()(pairs)
    assert not torch.allclose(train_out, layer.eval()(pairs))  # dropout acts on the pairs in training only
    with pytest.raises(ValueError, match="at least one pair"):
        layer(pairwise_products(FIELDS[:, :1]))
    with pytest.raises(ValueError, match=r"pairs must be \[B, P, 2\]"):
        layer(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="dropout"):
        AttentionalPairPooling(2, 2, dropout=1.0)
