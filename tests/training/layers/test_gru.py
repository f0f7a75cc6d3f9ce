"""GRU, AUGRU and AGRU (training.layers.gru) against steps worked out by hand, on I = H = 1.

Hand-set weights (gates in the paper's convention, u weighs the new candidate):

    u = σ(1·x − 2·h + 0)            r = σ(1·x + 2·h + (ln 3 − 2))            h̃ = tanh(0.5·x + r·(2·h) − 1)

One step from h = 0.5 with x = 1:
    u  = σ(1 − 1 + 0)              = σ(0)    = 0.5
    r  = σ(1 + 1 + ln 3 − 2)       = σ(ln 3) = 3 / 4 = 0.75
    h̃  = tanh(0.5 + 0.75·(2·0.5) − 1) = tanh(0.25) = 0.244918662403709
    GRU          h' = (1 − u)·h + u·h̃        = 0.25  + 0.5·0.2449186624  = 0.372459331201855
    AUGRU a=0.5  ũ = 0.25; h' = 0.75·h + 0.25·h̃ = 0.375 + 0.25·0.2449186624 = 0.436229665600927
    AGRU  a=0.4  h' = 0.6·h + 0.4·h̃           = 0.3   + 0.4·0.2449186624  = 0.397967464961484
    AIGRU        the plain GRU fed a·i: a = 0.5, i = 2 -> x = 1 -> h' = 0.372459331201855
"""

from __future__ import annotations

import math

import pytest
import torch

from training.layers.gru import AGRU, AUGRU, GRU, gru_scan

LN3 = math.log(3.0)
# (W, U, b) per gate
U_GATE, R_GATE, H_GATE = (1.0, -2.0, 0.0), (1.0, 2.0, LN3 - 2.0), (0.5, 2.0, -1.0)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def step_by_hand(x: float, h: float, a: float = 1.0, agru: bool = False) -> float:
    """One step of the module docstring's equations in plain Python (independent of the layer's code)."""
    u = sigmoid(U_GATE[0] * x + U_GATE[1] * h + U_GATE[2])
    r = sigmoid(R_GATE[0] * x + R_GATE[1] * h + R_GATE[2])
    candidate = math.tanh(H_GATE[0] * x + r * (H_GATE[1] * h) + H_GATE[2])
    gate = a if agru else a * u
    return (1.0 - gate) * h + gate * candidate


def hand_module(cls):
    module = cls(1, 1)
    gates = (R_GATE, H_GATE) if cls is AGRU else (U_GATE, R_GATE, H_GATE)
    with torch.no_grad():
        module.weight_ih.copy_(torch.tensor([[g[0]] for g in gates]))
        module.weight_hh.copy_(torch.tensor([[g[1]] for g in gates]))
        module.bias.copy_(torch.tensor([g[2] for g in gates]))
    return module


def seq(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).unsqueeze(2)  # [B, T] -> [B, T, I=1]


def test_one_augru_step():
    out = hand_module(AUGRU)(seq([[1.0]]), torch.tensor([[0.5]]), h0=torch.tensor([[0.5]]))
    assert out.item() == pytest.approx(0.436229665600927, rel=1e-6)
    assert out.item() == pytest.approx(step_by_hand(1.0, 0.5, a=0.5), rel=1e-6)


def test_one_agru_step():
    out = hand_module(AGRU)(seq([[1.0]]), torch.tensor([[0.4]]), h0=torch.tensor([[0.5]]))
    assert out.item() == pytest.approx(0.397967464961484, rel=1e-6)
    assert out.item() == pytest.approx(step_by_hand(1.0, 0.5, a=0.4, agru=True), rel=1e-6)


def test_one_gru_and_aigru_step():
    gru = hand_module(GRU)
    plain = gru(seq([[1.0]]), torch.tensor([[True]]), h0=torch.tensor([[0.5]]))
    assert plain.item() == pytest.approx(0.372459331201855, rel=1e-6)
    # AIGRU: the input is a_t · i_t (a = 0.5, i = 2), fed to the plain GRU
    attention, interest = torch.tensor([[0.5]]), seq([[2.0]])
    aigru = gru(interest * attention.unsqueeze(2), torch.tensor([[True]]), h0=torch.tensor([[0.5]]))
    assert aigru.item() == pytest.approx(0.372459331201855, rel=1e-6)


def test_attention_zero_keeps_the_state_and_one_is_the_plain_gru():
    x, h0 = seq([[1.0]]), torch.tensor([[0.5]])
    assert hand_module(AUGRU)(x, torch.tensor([[0.0]]), h0=h0).item() == 0.5  # ũ = 0: exactly unchanged
    assert hand_module(AGRU)(x, torch.tensor([[0.0]]), h0=h0).item() == 0.5
    # a = 1: AUGRU is the GRU (0.3724...), AGRU takes the candidate whole: h' = h̃ = tanh(0.25)
    assert hand_module(AUGRU)(x, torch.tensor([[1.0]]), h0=h0).item() == pytest.approx(0.372459331201855, rel=1e-6)
    assert hand_module(AGRU)(x, torch.tensor([[1.0]]), h0=h0).item() == pytest.approx(math.tanh(0.25), rel=1e-6)


@pytest.mark.parametrize("cls", [GRU, AUGRU, AGRU])
def test_state_is_frozen_after_the_last_valid_step(cls):
    # lengths [3, 1, 0], T = 3; the padded inputs hold garbage (100), which must not matter
    x = seq([[1.0, -2.0, 0.5], [0.5, 100.0, 100.0], [100.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    attention = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scale = mask if cls is GRU else attention
    out = hand_module(cls)(x, scale).squeeze(2)
    agru = cls is AGRU
    a = attention if cls is not GRU else mask.float()
    h1 = step_by_hand(1.0, 0.0, a[0, 0].item(), agru)
    h2 = step_by_hand(-2.0, h1, a[0, 1].item(), agru)
    h3 = step_by_hand(0.5, h2, a[0, 2].item(), agru)
    g1 = step_by_hand(0.5, 0.0, 1.0, agru)
    expected = torch.tensor([[h1, h2, h3], [g1, g1, g1], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    # the last output is the state at each row's last valid step: h3, g1 and 0 for the empty row
    assert out[:, -1].tolist() == pytest.approx([h3, g1, 0.0], rel=1e-6)
    assert out[1, 1].item() == out[1, 0].item() and out[2].abs().sum().item() == 0.0


def test_gru_matches_torch_gru_with_z_equal_to_one_minus_u():
    torch.manual_seed(0)
    ours = GRU(3, 4)
    ref = torch.nn.GRU(3, 4, batch_first=True)
    with torch.no_grad():  # torch stacks (r, z, n) with z = 1 − u, so its z rows are our u rows negated
        for mine, theirs in ((ours.weight_ih, ref.weight_ih_l0), (ours.weight_hh, ref.weight_hh_l0),
                             (ours.bias, ref.bias_ih_l0)):
            u, r, n = mine.chunk(3)
            theirs.copy_(torch.cat([r, -u, n]))
        ref.bias_hh_l0.zero_()  # torch's second bias (inside r ⊙ (U_h h + b_hn)) is not in the paper's cell
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(ours(x, torch.ones(2, 5, dtype=torch.bool)), ref(x)[0])


def test_augru_with_attention_one_is_the_gru():
    torch.manual_seed(1)
    gru, augru = GRU(3, 4), AUGRU(3, 4)
    augru.load_state_dict(gru.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(augru(x, torch.ones(2, 5)), gru(x, torch.ones(2, 5, dtype=torch.bool)))


@pytest.mark.parametrize("attention_gate", [False, True])
def test_hand_written_backward_matches_finite_differences(attention_gate):
    torch.manual_seed(2)
    gates = 2 if attention_gate else 3
    xw = torch.randn(4, 3, gates * 2, dtype=torch.double, requires_grad=True)
    weight = torch.randn(gates * 2, 2, dtype=torch.double, requires_grad=True)
    scale = torch.rand(4, 3, dtype=torch.double)
    scale[2:, 1] = 0.0  # a padded tail in row 1
    scale.requires_grad_()
    h0 = torch.randn(3, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *args: gru_scan(*args, attention_gate=attention_gate),
                                    (xw, weight, scale, h0))


@pytest.mark.parametrize("cls", [GRU, AUGRU, AGRU])
def test_module_gradients_reach_inputs_weights_and_attention(cls):
    torch.manual_seed(3)
    module = cls(2, 3).double()
    x = torch.randn(2, 4, 2, dtype=torch.double, requires_grad=True)
    if cls is GRU:
        assert torch.autograd.gradcheck(lambda x_: module(x_, torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])), (x,))
    else:
        attention = torch.tensor([[0.1, 0.2, 0.7, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.double, requires_grad=True)
        assert torch.autograd.gradcheck(module, (x, attention))
    module(x, torch.ones(2, 4, dtype=torch.double)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="expected x"):
        GRU(2, 3)(torch.zeros(1, 2, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match="mask or attention"):
        AUGRU(2, 3)(torch.zeros(1, 2, 2), torch.ones(2, 1))
