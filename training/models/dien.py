"""DIEN, Deep Interest Evolution Network (Zhou et al., AAAI 2019).

Behaviour step t of a user's history is e_b[t] = [e(hist_item_t); e(hist_cate_t)] (2D), the candidate is
e_a = [e(item); e(cate)], and the negative aligned with step t is ê_b[t] = [e(neg_item_t); e(neg_cate_t)] (the
``neg_*`` features share ``hist_len``). Each table serves target, history and negatives. With T_i valid steps::

    interest extractor   h_t = GRU(e_b[t], h_{t−1}),  h_0 = 0, hidden size 2D
    auxiliary loss       L_aux = −(1/N) Σ_i Σ_{t < T_i} [log σ(⟨h_t, e_b[t+1]⟩) + log(1 − σ(⟨h_t, ê_b[t+1]⟩))]
    attention            a_t = exp(h_t W e_a) / Σ_{j ≤ T_i} exp(h_j W e_a)            (W: [2D, 2D], bilinear)
    interest evolution   ``evolution``: "aigru": h'_t = GRU(a_t · h_t, h'_{t−1})
                                        "agru":  h'_t = (1 − a_t) · h'_{t−1} + a_t · h̃'_t
                                        "augru": ũ'_t = a_t · u'_t; h'_t = (1 − ũ'_t) ⊙ h'_{t−1} + ũ'_t ⊙ h̃'_t
    logit                MLP([profile, e_a, Σ_t e_b[t], h'_{T_i}])                      (200-80, Dice)
    loss (trainer)       L = mean_i BCE(logit_i, y_i) + α · L_aux                        (α = ``aux_weight``)

The cells are :mod:`training.layers.gru` (the paper's gate convention). h'_{T_i} is the state at each sequence's
LAST VALID step: padded steps leave every state unchanged (their mask / attention is 0). An empty history gives
h = h' = 0 and contributes nothing to the auxiliary loss; a history of length 1 has no (t, t+1) pair either.

Reductions: N is the batch size, so L_aux is a *per-sample* mean of each sample's sum over its steps, the same
reduction as the trainer's target loss (the batch mean of BCE) and the same for the click and the no-click terms
(deepctr-torch 0.3.0 sums one and averages the other, shrinking the auxiliary term about 1000-fold at B = 1024).
The model returns α · L_aux as ``aux_loss`` in training mode only; it is 0 in evaluation and when α = 0, and then
the negatives are neither read nor looked up. log σ is ``F.logsigmoid`` (log(1 − σ(x)) = log σ(−x)), stable for
large logits.

MLP input: besides the paper's [profile, e_a, h'_T], the sum-pooled history Σ_t e_b[t] (BaseModel's user vector)
and e_a ⊙ Σ_t e_b[t] are concatenated by default, as the authors' public code does (``history_sum``,
``history_product``). The product matters: an MLP forms a multiplicative target-history interaction poorly, and on
the quality benchmark's data DIEN without it trained no better than BaseModel while DIN (whose attention unit
has e_j ⊙ e_a) did. Ablation rows (MODELS.md): BaseModel + GRU + AIGRU / AGRU / AUGRU are ``evolution`` = aigru / agru
/ augru with ``aux_weight=0``; DIEN is ``evolution=augru`` with ``aux_weight=1``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torchrec import JaggedTensor, KeyedJaggedTensor

from training.layers.gru import AGRU, AUGRU, GRU
from training.layers.jagged import to_padded
from training.layers.mlp import MLP
from training.models.base import HISTORY_FEATURES, PROFILE_FEATURES, TARGET_FEATURES, BaseModelConfig
from training.models.common import CTRModel, ModelOutput

NEGATIVE_FEATURES = ("neg_item", "neg_cate")


class DIENConfig(BaseModelConfig):
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "dice"
    evolution: Literal["aigru", "agru", "augru"] = "augru"
    aux_weight: float = Field(default=1.0, ge=0, description="α on the auxiliary loss; 0 turns it off")
    history_sum: bool = Field(default=True, description="feed the sum-pooled history to the MLP (authors' code)")
    history_product: bool = Field(default=True, description="feed e_a ⊙ Σ_t e_b[t] to the MLP (authors' code)")


def interest_attention(states: Tensor, query: Tensor, mask: Tensor) -> Tensor:
    """a_t = softmax over the valid steps of ⟨h_t, q⟩, with q = W e_a: states ``[B, T, H]``, query ``[B, H]``,
    mask ``[B, T]`` (bool) -> ``[B, T]``, summing to 1 over each row's valid steps, exactly 0 at padded steps and
    0 everywhere for an empty row."""
    scores = torch.einsum("bth,bh->bt", states, query)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # exp(min − max) = 0; no NaN for empty rows
    return torch.softmax(scores, dim=1) * mask


def auxiliary_loss(states: Tensor, positives: Tensor, negatives: Tensor, mask: Tensor) -> Tensor:
    """L_aux = −(1/B) Σ_i Σ_t [log σ(⟨h_t, e_b[t+1]⟩) + log σ(−⟨h_t, ê_b[t+1]⟩)] over the pairs (t, t+1) both valid.

    states, positives, negatives ``[B, T, H]`` (right-padded, step-aligned), mask ``[B, T]`` (bool) -> scalar. The
    sum over a sample's steps is averaged over the B samples (empty rows included), like the batch-mean target loss.
    """
    batch = states.shape[0]
    if states.shape[1] < 2 or batch == 0:
        return states.new_zeros(())
    h = states[:, :-1]
    click = F.logsigmoid((h * positives[:, 1:]).sum(-1))
    no_click = F.logsigmoid(-(h * negatives[:, 1:]).sum(-1))
    valid = mask[:, 1:]  # step t+1 valid implies step t valid (right padding)
    return -torch.where(valid, click + no_click, 0.0).sum() / batch


class DIEN(CTRModel):
    name = "dien"
    config_class = DIENConfig

    def __init__(self, config: DIENConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        unknown = [f for f in config.profile_features if f not in PROFILE_FEATURES]
        if unknown:
            raise ValueError(f"profile_features {unknown} are not scalar side features; choose from {PROFILE_FEATURES}")
        negatives = NEGATIVE_FEATURES if config.aux_weight > 0 else ()
        super().__init__(config, table_sizes,
                         (*config.profile_features, *TARGET_FEATURES, *HISTORY_FEATURES, *negatives), embedding_device)
        hidden = 2 * config.embedding_dim  # = the width of e_b[t], so that ⟨h_t, e_b[t+1]⟩ is defined
        self.extractor = GRU(hidden, hidden)
        self.attention = nn.Linear(hidden, hidden, bias=False)  # q = W e_a, so that h_t W e_a = ⟨h_t, q⟩
        evolution = {"aigru": GRU, "agru": AGRU, "augru": AUGRU}[config.evolution]
        self.evolution = evolution(hidden, hidden)
        fields = (len(config.profile_features) + 2 + 2 + (2 if config.history_sum else 0)
                  + (2 if config.history_product else 0))
        self.mlp = MLP(config.embedding_dim * fields, config.mlp_hidden, activation=config.mlp_activation,
                       dropout=config.dropout)

    @staticmethod
    def _steps(embedded: dict[str, JaggedTensor], prefix: str) -> Tensor:
        """[N, 2D]: [e(item_t); e(cate_t)] of every valid step of ``prefix``_item / ``prefix``_cate."""
        return torch.cat([embedded[f"{prefix}_item"].values(), embedded[f"{prefix}_cate"].values()], dim=1)

    def forward(self, sparse: KeyedJaggedTensor, labels: Tensor | None = None) -> ModelOutput:
        config = self.config
        embedded = self.lookup(sparse)
        profile = [self.scalar(embedded, name) for name in config.profile_features]
        target = torch.cat([self.scalar(embedded, "item"), self.scalar(embedded, "cate")], dim=1)  # e_a [B, 2D]
        lengths = embedded["hist_item"].lengths()
        # T = the batch's longest history, at least 1 so that an all-empty batch still has a (masked) step
        steps = max(int(lengths.max()), 1) if lengths.numel() else 1
        history, mask = to_padded(self._steps(embedded, "hist"), lengths, steps)  # [B, T, 2D], [B, T]

        states = self.extractor(history, mask)  # h_t [B, T, 2D], frozen past each length
        if self.training and config.aux_weight > 0:
            if not torch.equal(embedded["neg_item"].lengths(), lengths):
                raise ValueError("neg_item must have one negative per history step (the lengths differ)")
            negatives, _ = to_padded(self._steps(embedded, "neg"), lengths, steps)
            aux = config.aux_weight * auxiliary_loss(states, history, negatives, mask)
        else:
            aux = torch.zeros((), device=target.device)

        attention = interest_attention(states, self.attention(target), mask)  # a_t [B, T]
        if config.evolution == "aigru":
            evolved = self.evolution(states * attention.unsqueeze(2), mask)
        else:
            evolved = self.evolution(states, attention)  # a_t = 0 at padded steps freezes h'
        final = evolved[:, -1]  # h'_T at the last valid step (frozen since), 0 for an empty history

        parts = [*profile, target]
        pooled = history.sum(dim=1)  # padded steps are 0
        if config.history_sum:
            parts.append(pooled)
        if config.history_product:
            parts.append(target * pooled)
        logits = self.mlp(torch.cat([*parts, final], dim=1)).squeeze(1)
        return ModelOutput(logits, self.mba_penalty(sparse, embedded), aux)
