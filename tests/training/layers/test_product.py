"""Residual unit, PNN product layer and hashed cross-product weights against values worked out by hand.

Fields for the product layer, B = 2, F = 3, D = 2 (as in test_interaction.py):

    row 0: f1 = [1, 2], f2 = [3, -1], f3 = [0, 2]    inner products (1,2) = 1, (1,3) = 4, (2,3) = -2
           f_Σ = [4, 3]  -> f_Σ f_Σᵀ = [[16, 12], [12, 9]]
    row 1: f1 = [1, 1], f2 = [2, 0], f3 = [-1, 3]    inner products (1,2) = 2, (1,3) = 2, (2,3) = -2
           f_Σ = [2, 4]  -> f_Σ f_Σᵀ = [[4, 8], [8, 16]]
"""

from __future__ import annotations

import math

import pytest
import torch

from training.layers.product import HASH_PRIME, HashedCrossWeights, ProductLayer, ResidualUnit, cross_hash

FIELDS = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.0, 2.0]],
                       [[1.0, 1.0], [2.0, 0.0], [-1.0, 3.0]]])


def set_linear(linear: torch.nn.Linear, weight, bias=None) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        if bias is not None:
            linear.bias.copy_(torch.tensor(bias, dtype=torch.float32))


# ---------------------------------------------------------------------------------------------- residual unit
def test_residual_unit_by_hand():
    unit = ResidualUnit(2, 1)
    set_linear(unit.inner, [[1.0, -1.0]], [0.5])  # W_0, b_0
    set_linear(unit.outer, [[2.0], [-1.0]], [0.0, -1.0])  # W_1, b_1
    x = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    # row 0: W_0 x + b_0 = 1 - 3 + 0.5 = -1.5 -> ReLU 0 -> W_1·0 + b_1 = [0, -1] -> x + . = [1, 2] -> ReLU [1, 2]
    # row 1: 2 - 0 + 0.5 = 2.5 -> [5, -2.5] + [0, -1] = [5, -3.5] -> x + . = [7, -3.5] -> ReLU [7, 0]
    torch.testing.assert_close(unit(x), torch.tensor([[1.0, 2.0], [7.0, 0.0]]))


def test_residual_unit_matches_explicit_arithmetic():
    torch.manual_seed(0)
    unit = ResidualUnit(3, 4)
    x = torch.randn(5, 3)
    w0, b0 = unit.inner.weight.tolist(), unit.inner.bias.tolist()
    w1, b1 = unit.outer.weight.tolist(), unit.outer.bias.tolist()
    expected = []
    for row in x.tolist():
        hidden = [max(0.0, sum(w0[h][k] * row[k] for k in range(3)) + b0[h]) for h in range(4)]
        expected.append([max(0.0, row[k] + sum(w1[k][h] * hidden[h] for h in range(4)) + b1[k]) for k in range(3)])
    torch.testing.assert_close(unit(x), torch.tensor(expected))


# ---------------------------------------------------------------------------------------------- product layer
def explicit_inner(fields: torch.Tensor) -> list[list[float]]:
    rows = []
    for row in fields.tolist():
        rows.append([sum(a * b for a, b in zip(row[i], row[j], strict=True))
                     for i in range(len(row)) for j in range(i + 1, len(row))])
    return rows


def explicit_outer(fields: torch.Tensor) -> list[list[float]]:
    rows = []
    for row in fields.tolist():
        total = [sum(f[d] for f in row) for d in range(len(row[0]))]
        rows.append([total[a] * total[b] for a in range(len(total)) for b in range(len(total))])
    return rows


def test_inner_products_by_hand_and_by_loop():
    layer = ProductLayer(3, 2, 1, "inner")
    products = layer.products(FIELDS)
    torch.testing.assert_close(products, torch.tensor([[1.0, 4.0, -2.0], [2.0, 2.0, -2.0]]))
    torch.testing.assert_close(products, torch.tensor(explicit_inner(FIELDS)))
    assert layer.product_dim == 3 and layer.linear_p.bias is None


def test_outer_product_by_hand_and_by_loop():
    layer = ProductLayer(3, 2, 1, "outer")
    products = layer.products(FIELDS)
    torch.testing.assert_close(products, torch.tensor([[16.0, 12.0, 12.0, 9.0], [4.0, 8.0, 8.0, 16.0]]))
    torch.testing.assert_close(products, torch.tensor(explicit_outer(FIELDS)))
    assert layer.product_dim == 4


def test_ipnn_layer_output_by_hand():
    layer = ProductLayer(3, 2, 2, "inner")
    # unit 0: z reads f1[0], p weights [1, 1, 1], b = -1; unit 1: p weights [-1, -1, -1], b = 0
    set_linear(layer.linear_z, [[1.0, 0, 0, 0, 0, 0], [0.0] * 6], [-1.0, 0.0])
    set_linear(layer.linear_p, [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    # row 0: unit 0 = 1 + (1 + 4 - 2) - 1 = 3, unit 1 = ReLU(-3) = 0; row 1: 1 + (2 + 2 - 2) - 1 = 2, ReLU(-2) = 0
    torch.testing.assert_close(layer(FIELDS), torch.tensor([[3.0, 0.0], [2.0, 0.0]]))


def test_opnn_layer_output_by_hand():
    layer = ProductLayer(3, 2, 1, "outer")
    # z weights read f3[1] (the last column of z), W_p = [1, 0, 0, -1]: f_Σ[0]² - f_Σ[1]²
    set_linear(layer.linear_z, [[0.0, 0, 0, 0, 0, 1.0]], [0.0])
    set_linear(layer.linear_p, [[1.0, 0.0, 0.0, -1.0]])
    # row 0: 2 + 16 - 9 = 9; row 1: 3 + 4 - 16 = -9 -> ReLU 0
    torch.testing.assert_close(layer(FIELDS), torch.tensor([[9.0], [0.0]]))


def test_product_layer_checks_its_input():
    with pytest.raises(ValueError, match="inner"):
        ProductLayer(3, 2, 1, "kernel")
    with pytest.raises(ValueError, match="two fields"):
        ProductLayer(1, 2, 1, "inner")
    with pytest.raises(ValueError, match=r"\[B, 3, 2\]"):
        ProductLayer(3, 2, 1, "inner")(torch.zeros(2, 4, 2))


# ---------------------------------------------------------------------------------------------- hashed crosses
def reference_hash(left: int, right: int, cross: int, buckets: int) -> int:
    """The docstring's formula in plain Python integers."""
    p = 2**31 - 1
    x = (1_103_515_245 * (left % p) + 1_597_334_677 * (right % p) + 2_147_483_629 * cross + 12_345) % p
    x ^= x >> 16
    x = (x * 0x45D9F3B) % 2**32
    x ^= x >> 16
    return x % buckets


def test_cross_hash_matches_the_formula_in_python_integers():
    assert HASH_PRIME == 2**31 - 1
    left = torch.tensor([7, 9, 7, 3, 0, 2**31 - 2, 123_456_789])
    right = torch.tensor([3, 3, 4, 7, 0, 2**31 - 3, 987_654])
    for cross, buckets in ((0, 1000), (1, 1000), (5, 2**18), (2, 1)):
        got = cross_hash(left, right, cross, buckets).tolist()
        assert got == [reference_hash(a, b, cross, buckets) for a, b in zip(left.tolist(), right.tolist(),
                                                                            strict=True)]
    assert cross_hash(left, right, 0, 1).tolist() == [0] * 7


def test_cross_hash_same_pair_same_bucket_different_pairs_differ():
    buckets = 2**20
    left = torch.tensor([7, 7, 3, 9, 7])
    right = torch.tensor([3, 3, 7, 3, 4])
    got = cross_hash(left, right, 0, buckets).tolist()
    assert got[0] == got[1]  # the same pair
    # (7, 3), (3, 7) (the cross is directional), (9, 3), (7, 4) and cross 1's (7, 3): five features, five rows
    distinct = {got[0], got[2], got[3], got[4], cross_hash(torch.tensor([7]), torch.tensor([3]), 1, buckets).item()}
    assert len(distinct) == 5
    assert all(0 <= b < buckets for b in got)


def test_hashed_cross_weights_sum_distinct_pairs_by_hand():
    buckets = 1000
    cross = HashedCrossWeights(buckets)
    assert cross.weight.weight.abs().sum().item() == 0.0  # a linear model starts at zero
    with torch.no_grad():
        cross.weight.weight[:, 0] = torch.arange(buckets, dtype=torch.float32)  # u[k] = k: the sum is in buckets
    # cross 0 (history × target): row 0 history [7, 9, 7] × 3; row 1 empty × 3; row 2 [7] × 3 (row 0's first pair)
    history = (torch.tensor([7, 9, 7, 7]), torch.tensor([3, 0, 1]), torch.tensor([3, 3, 3]))
    # cross 1 (scalar × scalar, lengths 1): gender × cate = (1, 5), (2, 5), (1, 5)
    scalar = (torch.tensor([1, 2, 1]), torch.tensor([1, 1, 1]), torch.tensor([5, 5, 5]))
    h = lambda a, b, k: float(reference_hash(a, b, k, buckets))  # noqa: E731
    expected = torch.tensor([
        h(7, 3, 0) + h(9, 3, 0) + h(1, 5, 1),  # 7 counted once: φ is binary
        0.0 + h(2, 5, 1),
        h(7, 3, 0) + h(1, 5, 1),  # the same pair as row 0's gets the same weight
    ])
    torch.testing.assert_close(cross([history, scalar]), expected)
    torch.testing.assert_close(cross([history]), expected - torch.tensor([h(1, 5, 1), h(2, 5, 1), h(1, 5, 1)]))


def test_hashed_cross_weights_gradient_counts_rows():
    buckets = 1000
    cross = HashedCrossWeights(buckets)
    history = (torch.tensor([7, 9, 7, 7]), torch.tensor([3, 0, 1]), torch.tensor([3, 3, 3]))
    cross([history]).sum().backward()
    grad = cross.weight.weight.grad[:, 0]
    # (7, 3) appears in rows 0 (twice, counted once) and 2 -> 2; (9, 3) in row 0 -> 1; nothing else
    assert grad[reference_hash(7, 3, 0, buckets)].item() == pytest.approx(2.0)
    assert grad[reference_hash(9, 3, 0, buckets)].item() == pytest.approx(1.0)
    assert grad.sum().item() == pytest.approx(3.0)
    assert math.isclose(grad.abs().sum().item(), 3.0, rel_tol=1e-6)
