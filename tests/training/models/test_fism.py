"""FISM against hand-computed scores, on 1-dimensional embeddings (the same tables as tests/.../test_nais.py).

    p (item_target):  p(2) = 1, p(3) = 2, p(4) = -1, p(5) = 0.5
    q (item_history): q(2) = 5, q(3) = 2, q(4) = -1, q(5) = 0
"""

from __future__ import annotations

import math

import pytest
import torch
from torchrec import KeyedJaggedTensor

from training.models.fism import FISM, FISMConfig
from training.models.nais import NAIS, NAISConfig

SIZES = {"item_target": 6, "item_history": 6}
KEYS = ["target_item_p", "hist_item_q"]


def batch(targets, histories) -> KeyedJaggedTensor:
    values = [*targets, *(item for history in histories for item in history)]
    lengths = [1] * len(targets) + [len(history) for history in histories]
    return KeyedJaggedTensor.from_lengths_sync(keys=KEYS, values=torch.tensor(values),
                                               lengths=torch.tensor(lengths, dtype=torch.int32))


def fism(bias: float = 0.25, **overrides) -> FISM:
    settings = {"embedding_dim": 1, "l2_target": 0.0, "l2_history": 0.0, **overrides}
    model = FISM(FISMConfig(**settings), SIZES, embedding_device=torch.device("cpu"))
    with torch.no_grad():
        model.table_modules()["item_target"].weight[:, :1].copy_(
            torch.tensor([[0.0], [0.0], [1.0], [2.0], [-1.0], [0.5]]))
        model.table_modules()["item_history"].weight[:, :1].copy_(
            torch.tensor([[0.0], [0.0], [5.0], [2.0], [-1.0], [0.0]]))
        model.bias.fill_(bias)
    return model


# row 0: item 2, history [3, 2, 4] (2 is the target: excluded); row 1: item 3, empty history;
# row 2: item 5, history [2, 3, 4, 3] (a repeated click counts twice); row 3: item 4, history [4] (only the target)
BATCH = batch((2, 3, 5, 4), ((3, 2, 4), (), (2, 3, 4, 3), (4,)))


def test_fism_score_by_hand():
    out = fism(alpha=0.5).eval()(BATCH)
    # row 0: Σ p(2)·q = 1·2 + 1·(-1) = 1 over n - 1 = 2 steps -> 0.25 + 2^-0.5 · 1
    # row 1: no history -> b_0 = 0.25
    # row 2: p(5) = 0.5: 0.5·(5 + 2 - 1 + 2) = 4 over 4 steps -> 0.25 + 4^-0.5 · 4 = 2.25
    # row 3: its only step is the target -> b_0
    expected = torch.tensor([0.25 + 1 / math.sqrt(2), 0.25, 2.25, 0.25])
    torch.testing.assert_close(out.logits, expected)
    assert out.targets is None and out.regularization.item() == 0.0


def test_alpha_sets_the_normalisation():
    # α = 1: the mean similarity (row 0: 1/2, row 2: 4/4); α = 0: the plain sum (row 0: 1, row 2: 4)
    torch.testing.assert_close(fism(bias=0.0, alpha=1.0).eval()(BATCH).logits, torch.tensor([0.5, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(fism(bias=0.0, alpha=0.0).eval()(BATCH).logits, torch.tensor([1.0, 0.0, 4.0, 0.0]))


def test_training_adds_sampled_negatives_scored_by_hand():
    model = fism(bias=0.0, alpha=1.0).train()
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0])
    torch.manual_seed(11)
    out = model(BATCH, labels)
    torch.manual_seed(11)
    drawn = model.sample_negatives(torch.tensor([2]))[0].tolist()
    # negative n of row 0 (history [3, 2, 4], steps equal to n masked), α = 1: mean of p(n)·q over the rest
    by_hand = {3: 2 * (5 - 1) / 2, 4: -1 * (2 + 5) / 2, 5: 0.5 * (2 + 5 - 1) / 3}
    assert len(drawn) == 4 and 2 not in drawn
    torch.testing.assert_close(out.logits, torch.tensor([0.5, 0.0, 1.0, 0.0, *(by_hand[n] for n in drawn)]))
    torch.testing.assert_close(out.targets, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))


def test_l2_on_the_rows_the_batch_uses():
    model = fism(num_negatives=0, l2_target=0.5, l2_history=0.25).train()
    out = model(BATCH, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # p rows {2, 3, 5, 4}: 1 + 4 + 0.25 + 1 = 6.25 -> 3.125; q rows {3, 2, 4}: 4 + 25 + 1 = 30 -> 7.5
    assert out.regularization.item() == pytest.approx(3.125 + 7.5)


def test_fism_tables_can_initialise_nais():
    config = {"embedding_dim": 6}
    fism_model = FISM(FISMConfig(**config), SIZES, embedding_device=torch.device("cpu"))
    nais_model = NAIS(NAISConfig(**config), SIZES, embedding_device=torch.device("cpu"))

    def tables(model):
        return {k: v.shape for k, v in model.state_dict().items() if k.startswith("embeddings.")}

    assert tables(fism_model) == tables(nais_model) and len(tables(fism_model)) == 2
    assert FISMConfig().alpha == 0.5 and FISMConfig().num_negatives == 4
    with pytest.raises(ValueError):
        FISMConfig(alpha=1.5)
