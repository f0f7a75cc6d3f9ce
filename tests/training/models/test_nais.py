"""NAIS against hand-computed values of its equations (MODELS.md), on 1-dimensional embeddings.

Embeddings used throughout (item ids 2..5; 0 is padding, 1 unknown):
    p (item_target):  p(2) = 1, p(3) = 2, p(4) = -1, p(5) = 0.5
    q (item_history): q(2) = 5, q(3) = 2, q(4) = -1, q(5) = 0
Batch: row 0 scores item 2 with history [3, 2, 4] (item 2 is the target: excluded); row 1 scores item 3 with an
empty history.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchrec import KeyedJaggedTensor

from training.models.fism import Pairs
from training.models.nais import NAIS, NAISAttention, NAISConfig

SIZES = {"item_target": 6, "item_history": 6}
KEYS = ["target_item_p", "hist_item_q"]
E = math.e


def batch(targets=(2, 3), histories=((3, 2, 4), ())) -> KeyedJaggedTensor:
    values = [*targets, *(item for history in histories for item in history)]
    lengths = [1] * len(targets) + [len(history) for history in histories]
    return KeyedJaggedTensor.from_lengths_sync(keys=KEYS, values=torch.tensor(values),
                                               lengths=torch.tensor(lengths, dtype=torch.int32))


def nais(attention="prod", **overrides) -> NAIS:
    settings = {"embedding_dim": 1, "attention": attention, "attention_hidden": 1, "l2_target": 0.0,
                "l2_history": 0.0, "l2_attention": 0.0, **overrides}
    config = NAISConfig(**settings)
    model = NAIS(config, SIZES, embedding_device=torch.device("cpu"))
    with torch.no_grad():
        model.table_modules()["item_target"].weight[:, :1].copy_(
            torch.tensor([[0.0], [0.0], [1.0], [2.0], [-1.0], [0.5]]))
        model.table_modules()["item_history"].weight[:, :1].copy_(
            torch.tensor([[0.0], [0.0], [5.0], [2.0], [-1.0], [0.0]]))
        # prod: f = relu(p * q); concat: f = relu(p + q)
        model.attention.linear.weight.fill_(1.0)
        model.attention.linear.bias.zero_()
        model.attention.h.fill_(1.0)
    return model


# ---------------------------------------------------------------------------------------------------- f(p, q)
def attention_unit(kind: str) -> NAISAttention:
    unit = NAISAttention(2, 2, kind)
    with torch.no_grad():
        unit.linear.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]) if kind == "prod"
                                 else torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]]))
        unit.linear.bias.copy_(torch.tensor([0.0, -1.0]))
        unit.h.copy_(torch.tensor([1.0, 2.0]))
    return unit


# two scored items p0 = [1, 2], p1 = [0, 1]; history q0 = [3, -1], q1 = [0.5, 1]; pairs (p0, q0), (p0, q1), (p1, q0)
P = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
Q = torch.tensor([[3.0, -1.0], [0.5, 1.0]])
SCORED, STEP = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])


def test_f_prod_by_hand():
    # W = [[1, 1], [1, -1]], b = [0, -1], h = [1, 2]
    # (p0, q0): p⊙q = [3, -2] -> W· = [1, 5] -> +b [1, 4] -> relu [1, 4] -> h· = 1 + 8 = 9
    # (p0, q1): p⊙q = [0.5, 2] -> [2.5, -1.5] -> [2.5, -2.5] -> [2.5, 0] -> 2.5
    # (p1, q0): p⊙q = [0, -1] -> [-1, 1] -> [-1, 0] -> [0, 0] -> 0
    torch.testing.assert_close(attention_unit("prod")(P, Q, SCORED, STEP), torch.tensor([9.0, 2.5, 0.0]))


def test_f_concat_by_hand():
    # W = [[1, 0, 1, 0], [0, 1, 0, -1]] over [p; q], b = [0, -1], h = [1, 2]
    # (p0, q0): [1, 2, 3, -1] -> W· = [4, 3] -> +b [4, 2] -> h· = 4 + 4 = 8
    # (p0, q1): [1, 2, 0.5, 1] -> [1.5, 1] -> [1.5, 0] -> 1.5
    # (p1, q0): [0, 1, 3, -1] -> [3, 2] -> [3, 1] -> 3 + 2 = 5
    torch.testing.assert_close(attention_unit("concat")(P, Q, SCORED, STEP), torch.tensor([8.0, 1.5, 5.0]))


def test_pairs_follow_each_scored_items_row_and_mask_the_scored_item():
    # history lengths [2, 1] (row 0: items 7, 9; row 1: item 9); scored items 9 (row 0), 9 (row 1), 7 (row 0)
    pairs = Pairs(torch.tensor([9, 9, 7]), torch.tensor([0, 1, 0]), torch.tensor([7, 9, 9]), torch.tensor([2, 1]))
    assert pairs.lengths.tolist() == [2, 1, 2]
    assert pairs.scored.tolist() == [0, 0, 1, 2, 2]
    assert pairs.step.tolist() == [0, 1, 2, 0, 1]
    assert pairs.valid.tolist() == [True, False, False, False, True]


# ---------------------------------------------------------------------------------------------------- logits
def test_logit_beta_one_is_a_softmax_and_excludes_the_target_from_the_history():
    model = nais(beta=1.0).eval()
    # row 0: p(2) = 1; history item 2 (the target) is dropped, leaving q(3) = 2 and q(4) = -1:
    # f = relu(1·2) = 2, relu(1·-1) = 0 -> a = [e²/(e² + 1), 1/(e² + 1)]; logit = a·[2, -1] = (2e² - 1)/(e² + 1)
    # (with item 2 kept, f = relu(5) = 5 would dominate). Row 1: empty history -> 0.
    out = model(batch())
    torch.testing.assert_close(out.logits, torch.tensor([(2 * E**2 - 1) / (E**2 + 1), 0.0]))
    assert out.targets is None and out.regularization.item() == 0.0 and out.aux_loss.item() == 0.0


def test_logit_beta_half_divides_by_the_square_root():
    # a = exp(f) / sqrt(e² + 1) -> logit = (2e² - 1) / sqrt(e² + 1) ≈ 4.757
    out = nais(beta=0.5).eval()(batch())
    torch.testing.assert_close(out.logits, torch.tensor([(2 * E**2 - 1) / math.sqrt(E**2 + 1), 0.0]))


def test_concat_attention_logit():
    # f = relu(p + q): q(3) -> relu(1 + 2) = 3, q(4) -> relu(1 - 1) = 0; β = 0.5:
    # logit = (e³·2 + 1·(-1)) / sqrt(e³ + 1)
    out = nais("concat", beta=0.5).eval()(batch())
    torch.testing.assert_close(out.logits, torch.tensor([(2 * E**3 - 1) / math.sqrt(E**3 + 1), 0.0]))


def test_history_holding_only_the_target_gives_zero():
    out = nais().eval()(batch(targets=(2,), histories=((2, 2),)))
    torch.testing.assert_close(out.logits, torch.tensor([0.0]))


# ---------------------------------------------------------------------------------------------------- negatives
# NAIS logit of item n for row 0's history [3, 2, 4] (steps equal to n masked), prod attention, β = 0.5
NEGATIVE_LOGIT = {
    # history [2, 4]: f = relu(2·5) = 10, relu(2·-1) = 0; p·q = [10, -2]
    3: (10 * math.exp(10) - 2) / math.sqrt(math.exp(10) + 1),
    # history [3, 2]: f = relu(-2) = relu(-5) = 0 -> a = 1/sqrt(2) each; p·q = [-2, -5]
    4: -7 / math.sqrt(2),
    # history [3, 2, 4]: f = [relu(1), relu(2.5), relu(-0.5)] = [1, 2.5, 0]; p·q = [1, 2.5, -0.5]
    5: (E + 2.5 * math.exp(2.5) - 0.5) / math.sqrt(E + math.exp(2.5) + 1),
}
ROW0_LOGIT = (2 * E**2 - 1) / math.sqrt(E**2 + 1)


def test_sample_negatives_never_draw_the_target_and_cover_the_other_items():
    model = nais()
    torch.manual_seed(0)
    negatives = model.sample_negatives(torch.tensor([2] * 250 + [5] * 250))
    assert negatives.shape == (500, 4)
    assert not bool((negatives[:250] == 2).any()) and not bool((negatives[250:] == 5).any())
    # uniform over [2, 6) without the target: every other item is drawn, padding (0) and unknown (1) never
    assert sorted(negatives[:250].unique().tolist()) == [3, 4, 5]
    assert sorted(negatives[250:].unique().tolist()) == [2, 3, 4]


def test_training_scores_sampled_negatives_with_the_rows_history():
    model = nais(beta=0.5).train()
    labels = torch.tensor([1.0, 0.0])  # row 0 is a click, row 1 a shown and not clicked impression
    torch.manual_seed(3)
    out = model(batch(), labels)
    torch.manual_seed(3)
    drawn = model.sample_negatives(torch.tensor([2]))[0].tolist()  # the same draw: forward's only use of the RNG
    assert len(drawn) == 4 and 2 not in drawn
    # logits: the batch's rows, then row 0's 4 negatives; targets: the labels, then zeros
    expected = [ROW0_LOGIT, 0.0, *(NEGATIVE_LOGIT[n] for n in drawn)]
    torch.testing.assert_close(out.logits, torch.tensor(expected))
    torch.testing.assert_close(out.targets, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))


def test_negatives_per_positive_only():
    model = nais().train()
    out = model(batch(targets=(2, 3, 4), histories=((3,), (), (2,))), torch.tensor([1.0, 1.0, 0.0]))
    assert out.logits.shape == (3 + 2 * 4,)
    torch.testing.assert_close(out.targets, torch.tensor([1.0, 1.0, 0.0] + [0.0] * 8))


def test_without_impression_negatives_only_positives_and_their_samples_count():
    model = nais(beta=0.5, use_impression_negatives=False).train()
    torch.manual_seed(5)
    out = model(batch(), torch.tensor([1.0, 0.0]))
    torch.manual_seed(5)
    drawn = model.sample_negatives(torch.tensor([2]))[0].tolist()
    torch.testing.assert_close(out.logits, torch.tensor([ROW0_LOGIT, *(NEGATIVE_LOGIT[n] for n in drawn)]))
    torch.testing.assert_close(out.targets, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))
    # a batch without a positive: one constant logit, loss ~ 0, no gradient
    empty = model(batch(), torch.tensor([0.0, 0.0]))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(empty.logits, empty.targets)
    assert empty.logits.tolist() == [-100.0] and loss.item() < 1e-30


def test_evaluation_and_unlabelled_training_score_only_the_batch():
    model = nais(beta=0.5)
    for out in (model.eval()(batch(), torch.tensor([1.0, 0.0])), model.train()(batch())):
        assert out.targets is None
        torch.testing.assert_close(out.logits, torch.tensor([ROW0_LOGIT, 0.0]))


# ---------------------------------------------------------------------------------------------------- L2, config
def test_l2_on_the_rows_the_batch_uses_and_the_attention_weights():
    model = nais(num_negatives=0, l2_target=0.5, l2_history=0.25, l2_attention=0.1)
    out = model.train()(batch(), torch.tensor([1.0, 0.0]))
    # p rows {2, 3}: 1 + 4 = 5 -> 2.5; q rows {3, 2, 4}: 4 + 25 + 1 = 30 -> 7.5; W = 1, b = 0, h = 1: 2 -> 0.2
    assert out.regularization.item() == pytest.approx(2.5 + 7.5 + 0.2)
    assert model.eval()(batch()).regularization.item() == 0.0


def test_config_defaults_and_errors():
    config = NAISConfig()
    assert (config.attention, config.beta, config.num_negatives, config.use_impression_negatives) == \
        ("prod", 0.5, 4, True)
    for bad in ({"beta": 0.0}, {"beta": 1.5}, {"attention": "dot"}, {"unknown": 1}, {"mba_lambda": 0.1}):
        with pytest.raises(ValueError):
            NAISConfig(**bad)
    # the item tables are the models' only ones
    assert set(NAIS(config, SIZES, embedding_device=torch.device("cpu")).table_sizes) == set(SIZES)


def test_gradients_are_finite_and_the_excluded_step_gets_none():
    # no sampled negatives: row 0's step equal to its target (q(2)) must not get any gradient; row 1 (empty history)
    # and the masked step must not bring NaN into the backward pass
    model = nais(num_negatives=0).train()
    out = model(batch(targets=(2, 3, 4), histories=((3, 2, 4), (), (4,))), torch.tensor([1.0, 0.0, 1.0]))
    torch.nn.functional.binary_cross_entropy_with_logits(out.logits, out.targets).backward()
    q_grad = model.table_modules()["item_history"].weight.grad[:, 0]
    p_grad = model.table_modules()["item_target"].weight.grad[:, 0]
    assert bool(torch.isfinite(q_grad).all()) and bool(torch.isfinite(p_grad).all())
    assert q_grad[2].item() == 0.0 and q_grad[4].item() != 0.0
    assert all(bool(torch.isfinite(w.grad).all()) for w in model.attention.parameters())
