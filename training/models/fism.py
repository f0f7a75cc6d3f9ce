"""FISM, Factored Item Similarity Models (Kabbur et al., KDD 2013), and what it shares with NAIS.

An item has two embeddings: p_i when it is the item being scored (table ``item_target``) and q_j when it is a step
of the user's history (table ``item_history``). The score of item i for user u is the similarity of i to the items
u clicked before, R_u⁺ (the history ``hist_item_idx``: clicks strictly before the impression)::

    ŷ_ui = b_0 + (n_u⁺ − 1)^(−α) · Σ_{j ∈ R_u⁺ \\ {i}} p_iᵀ q_j                 (α in [0, 1], 0.5 by default)

The history steps equal to i are masked out (R_u⁺ \\ {i}, so an item never recommends itself) and n_u⁺ − 1 is the
number of steps left, |R_u⁺ \\ {i}| (our history never holds the impression itself, so it is counted, not taken as
"history length − 1"); a row with no step left scores b_0. Repeated clicks on one item are kept as separate steps.

Biases: the paper's b_u + b_i are replaced by one learned intercept b_0. A per-item bias would need a column past
``embedding_dim`` in ``item_target`` (which :meth:`CTRModel.lookup` does not return) or a table of its own, and it
would make the p table differ from NAIS's, which FISM pre-trains (``train.init_from``: same table names, same
shapes); b_u is constant per user, so it does not change a user's ranking. b_0 also gives the trainer's dense
optimizer a parameter (the embeddings are all updated by TorchRec's fused optimizer).

Objective, shared with NAIS (:class:`ItemSimilarityModel`): log loss with ``num_negatives`` sampled negatives per
positive. In training (``self.training`` and labels given) each row with label 1 gets ``num_negatives`` items drawn
uniformly from the item ids [2, table size) with ``torch.randint`` (the global RNG, which the trainer checkpoints),
redrawn while equal to the row's target; they are scored with the same row's history (and the steps equal to the
negative masked, as for any scored item). Their p embeddings come from the same single lookup: the
``target_item_p`` feature is rebuilt with 1 + k_b values for row b (its target, then its k_b negatives; k_b =
``num_negatives`` for a positive, 0 otherwise). Example, B = 2, labels [1, 0], num_negatives 2, targets [7, 5]::

    target_item_p lengths [1, 1] values [7, 5]   ->   lengths [3, 1] values [7, n1, n2, 5]
    logits  = [ŷ(row 0, 7), ŷ(row 1, 5), ŷ(row 0, n1), ŷ(row 0, n2)]      targets = [1, 0, 0, 0]

The impressions shown and not clicked (label 0) stay in as negatives (``use_impression_negatives: true``). With
``false`` only the positives and their sampled negatives are returned (logits [P + P·k], targets [1]·P + [0]·P·k):
label-0 rows then have no influence, and a batch without any positive returns one constant logit of −100 with
target 0 (loss ≈ 0, no gradient) instead of an empty tensor whose mean loss would be NaN. In evaluation (no labels,
or ``eval()``) the output is the batch's logits [B] and ``targets`` is None.

Regularisation (in training): λ_p Σ ||p_r||² + λ_q Σ ||q_r||² over the distinct rows the batch looks up (``l2_target``,
``l2_history``). The papers regularise whole tables; a sharded table is only ever seen through the rows a batch
reads, so a row is penalised at the steps that use it (as TorchRec's fused, sparse optimizers update it).

Shapes: B rows, M = B + Σ_b k_b scored items, N history steps (jagged), T = Σ_m |history of m's row| pairs, D dim.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn
from torchrec import KeyedJaggedTensor

from training.layers.jagged import offsets, segment_ids
from training.models.common import CTRModel, ModelConfig, ModelOutput

TARGET_FEATURE = "target_item_p"  # table item_target (p)
HISTORY_FEATURE = "hist_item_q"  # table item_history (q)
FIRST_ITEM_ID = 2  # 0 is padding, 1 the unknown item: negatives are drawn from [2, table size)


class ItemSimilarityConfig(ModelConfig):
    """Settings FISM and NAIS share (the ``model:`` section; unknown keys are errors)."""

    embedding_dim: int = Field(default=16, ge=1)
    mba_lambda: float = Field(default=0.0, ge=0, le=0, description="DIN's regulariser: not used here, see l2_*")
    num_negatives: int = Field(default=4, ge=0, description="items sampled per positive in training")
    use_impression_negatives: bool = Field(default=True, description="label-0 rows stay in the loss as negatives")
    l2_target: float = Field(default=1e-7, ge=0, description="λ on the p rows (item_target) a batch uses")
    l2_history: float = Field(default=1e-7, ge=0, description="λ on the q rows (item_history) a batch uses")


class Pairs:
    """The (scored item, history step) pairs of a batch: scored item m is paired with every step of its row.

    ``scored [T]`` and ``step [T]`` index the scored items ([M]) and the history steps ([N]); pairs are grouped by
    scored item, ``lengths [M]`` of them each (jagged, so :mod:`training.layers.jagged` helpers apply); ``valid [T]``
    is False for the steps equal to the scored item (R_u⁺ \\ {i}). Example: history lengths [2, 1], scored items'
    rows [0, 1, 0] -> lengths [2, 1, 2], scored [0, 0, 1, 2, 2], step [0, 1, 2, 0, 1].
    """

    def __init__(self, scored_ids: Tensor, rows: Tensor, hist_ids: Tensor, hist_lengths: Tensor):
        self.lengths = hist_lengths[rows]  # [M]
        self.scored = segment_ids(self.lengths)  # [T]
        position = torch.arange(self.scored.shape[0], device=rows.device) - offsets(self.lengths)[self.scored]
        self.step = offsets(hist_lengths)[rows][self.scored] + position  # [T]
        self.valid = hist_ids[self.step] != scored_ids[self.scored]  # [T]
        self.count = rows.shape[0]  # M

    def sum(self, values: Tensor) -> Tensor:
        """Σ over each scored item's pairs of ``values [T]`` -> ``[M]`` (0 for an item with no pair)."""
        return values.new_zeros(self.count).index_add(0, self.scored, values)


class ItemSimilarityModel(CTRModel):
    """FISM and NAIS: features, sampled negatives, the single lookup and the output; subclasses define ``score``."""

    config_class: ClassVar[type[ItemSimilarityConfig]] = ItemSimilarityConfig

    def __init__(self, config: ItemSimilarityConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, (TARGET_FEATURE, HISTORY_FEATURE), embedding_device)
        self.num_items = self.table_sizes["item_target"]
        if config.num_negatives > 0 and self.num_items < FIRST_ITEM_ID + 2:
            raise ValueError(f"sampling negatives needs at least 2 items besides padding and unknown; the item table "
                             f"has {self.num_items} rows")

    # ------------------------------------------------------------------ to be defined by the model
    def score(self, p: Tensor, q: Tensor, pairs: Pairs) -> Tensor:
        """Logits ``[M]`` of the scored items from p ``[M, D]``, the history's q ``[N, D]`` and their pairs."""
        raise NotImplementedError  # pragma: no cover - abstract

    def dense_penalty(self) -> Tensor | None:
        """The model's L2 on its dense weights (None: it has none)."""
        return None

    # ------------------------------------------------------------------ shared
    def sample_negatives(self, targets: Tensor) -> Tensor:
        """``num_negatives`` ids per target, uniform over [2, table size) without the target: ``[P]`` -> ``[P, k]``.

        Drawn with ``torch.randint`` from the global generator, and redrawn where a draw equals its target (a
        rejection loop, so the draw is exactly uniform over the other items; a redraw is rare: about k / items).
        """
        shape = (targets.shape[0], self.config.num_negatives)
        negatives = torch.randint(FIRST_ITEM_ID, self.num_items, shape, device=targets.device)
        clash = negatives == targets[:, None]
        while bool(clash.any()):
            negatives[clash] = torch.randint(FIRST_ITEM_ID, self.num_items, (int(clash.sum()),), device=targets.device)
            clash = negatives == targets[:, None]
        return negatives

    @staticmethod
    def with_negatives(sparse: KeyedJaggedTensor, positive: Tensor, negatives: Tensor) -> KeyedJaggedTensor:
        """``sparse`` with row b's ``target_item_p`` values [target_b, negatives of b] (only positives have some)."""
        target = sparse[TARGET_FEATURE]
        history = sparse[HISTORY_FEATURE]
        batch, k = positive.shape[0], negatives.shape[1]
        slots = target.values().new_zeros((batch, 1 + k))
        slots[:, 0] = target.values()
        slots[positive, 1:] = negatives
        keep = torch.ones_like(slots, dtype=torch.bool)
        keep[:, 1:] = positive[:, None]
        lengths = target.lengths() + k * positive.to(target.lengths().dtype)
        return KeyedJaggedTensor.from_lengths_sync(
            keys=[TARGET_FEATURE, HISTORY_FEATURE],
            values=torch.cat([slots[keep], history.values()]),
            lengths=torch.cat([lengths, history.lengths().to(lengths.dtype)]),
        )

    def l2_penalty(self) -> Tensor:
        """λ_p Σ ||p||² + λ_q Σ ||q||² over the distinct rows of the last lookup, plus the dense penalty."""
        (p_rows, _), (q_rows, _) = self._distinct_rows["item_target"], self._distinct_rows["item_history"]
        total = self.config.l2_target * p_rows.pow(2).sum() + self.config.l2_history * q_rows.pow(2).sum()
        dense = self.dense_penalty()
        return total if dense is None else total + dense

    def forward(self, sparse: KeyedJaggedTensor, labels: Tensor | None = None) -> ModelOutput:
        """Eval: logits [B], targets None. Training: [batch rows (or positives), sampled negatives] and targets."""
        config = self.config
        sampling = self.training and labels is not None
        if sampling:
            positive = labels > 0.5
            negatives = self.sample_negatives(sparse[TARGET_FEATURE].values()[positive])
            sparse = self.with_negatives(sparse, positive, negatives)
        embedded = self.lookup(sparse)
        p, q = embedded[TARGET_FEATURE], embedded[HISTORY_FEATURE]
        scored_ids = sparse[TARGET_FEATURE].values()
        rows = segment_ids(p.lengths(), total=scored_ids.shape[0])  # [M]: the row of each scored item
        pairs = Pairs(scored_ids, rows, sparse[HISTORY_FEATURE].values(), q.lengths())
        logits = self.score(p.values(), q.values(), pairs)  # [M], row-major: row b's target, then its negatives
        zero = torch.zeros((), device=logits.device)
        if not sampling:
            return ModelOutput(logits, self.l2_penalty() if self.training else zero, zero)
        own = torch.zeros_like(scored_ids, dtype=torch.bool)
        own[offsets(p.lengths())] = True
        batch_logits, sampled = logits[own], logits[~own]
        sampled_targets = torch.zeros_like(sampled)
        if config.use_impression_negatives:
            out_logits = torch.cat([batch_logits, sampled])
            targets = torch.cat([labels.to(sampled.dtype), sampled_targets])
        elif bool(positive.any()):
            out_logits = torch.cat([batch_logits[positive], sampled])
            targets = torch.cat([torch.ones_like(batch_logits[positive]), sampled_targets])
        else:  # nothing to learn from: one constant logit of -100 with target 0 (loss ~ 4e-44, no gradient)
            out_logits = batch_logits[:1] * 0.0 - 100.0
            targets = torch.zeros_like(out_logits)
        return ModelOutput(out_logits, self.l2_penalty(), zero, targets)


class FISMConfig(ItemSimilarityConfig):
    alpha: float = Field(default=0.5, ge=0, le=1, description="(n_u⁺ − 1)^(−α) normalisation of the history sum")


class FISM(ItemSimilarityModel):
    name = "fism"
    config_class = FISMConfig

    def __init__(self, config: FISMConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, embedding_device)
        self.bias = nn.Parameter(torch.zeros(()))  # b_0

    def score(self, p: Tensor, q: Tensor, pairs: Pairs) -> Tensor:
        """b_0 + (n − 1)^(−α) Σ_{valid pairs} p_iᵀ q_j, with n − 1 the valid pairs of the scored item."""
        similarity = torch.where(pairs.valid, (p[pairs.scored] * q[pairs.step]).sum(dim=1), p.new_zeros(()))
        count = pairs.sum(pairs.valid.to(p.dtype))
        return self.bias + count.clamp(min=1.0).pow(-self.config.alpha) * pairs.sum(similarity)
