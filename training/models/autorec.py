"""I-AutoRec, item-based AutoRec (Sedhain et al., WWW 2015).

Each item i is the vector r⁽ⁱ⁾ ∈ R^m of its observed ratings by the m users; an autoencoder with k hidden units
reconstructs it, and its u-th output is user u's prediction for i::

    h(r⁽ⁱ⁾) = f(W · g(V r⁽ⁱ⁾ + μ) + b)          V [k, m], μ [k], W [m, k], b [m]
    min  Σ_i Σ_{u: r_ui observed} ℓ(r_ui, h(r⁽ⁱ⁾)_u) + λ/2 (‖W‖²_F + ‖V‖²_F)

Observed entries. Our samples are impressions with a binary label, so r_ui = label: 1 when u clicked i, 0 when u
was shown i and did not click; a pair never shown is unobserved. A pair shown several times in the training split
is one entry of r⁽ⁱ⁾ with the max of its labels (clicked at least once -> 1). :meth:`AutoRec.prepare_data` builds
r⁽ⁱ⁾ for every item from the training split (``user_idx``, ``item_idx``, ``label``; sorted by (item, user), so the
result does not depend on the file or row order) and keeps it as CSR tensors: ``item_ptr [n_items + 1]``, the
raters ``users [nnz]`` and their ``ratings [nnz]``. Validation, test and ranking rows are encoded with the same
training vectors; an item without training impressions has r = 0.

A batch row (user u, item i, label y) is one observed entry (u, i): the model returns h(r⁽ⁱ⁾)_u as a logit and
the trainer's log loss ℓ compares it with y. The loss therefore counts observed entries only: the batch rows are
the impressions (each impression is one term, so a pair shown twice counts twice), and the unobserved entries of
h(r⁽ⁱ⁾) are never computed. As in the paper the input r⁽ⁱ⁾ includes the entry being predicted (an autoencoder
reconstructs its input; the bottleneck k and λ keep it from copying it).

Computation, with the tables indexed by user (both sized by the vocab field ``user``)::

    V r⁽ⁱ⁾ = Σ_{u'} r_u'i · V[:, u']      a weighted sum of rows of ``user_encoder`` (feature ``autorec_raters``)
    h_u    = W[u, :] · g(V r⁽ⁱ⁾ + μ) + b_u   row u of ``user_decoder`` holds [W[u, :]; b_u] (k + 1 columns)

Entries with r = 0 add nothing to V r, so only the clicks of r⁽ⁱ⁾ are looked up (a non-clicked impression enters
the loss, not the encoder's input). ``embedding_dim`` is k; the tables are built with k + 1 columns (the
decoder's last column is b_u; the encoder's last one is never read, so it gets no gradient), like AFM's first-order
column. Each forward encodes the batch's distinct items once: the forward builds one KJT with the raters of the
distinct items (row j of ``autorec_raters`` = the raters of the j-th distinct item; rows past the distinct items
are empty) and the batch's users (``autorec_user``) and looks both up in the model's single :meth:`lookup`.

Activations: g = ``encoder_activation`` (sigmoid by default, as in the paper). f is the identity: h_u is a logit
and the trainer's loss applies σ, so the predicted click probability is σ(h_u) (a sigmoid f would make h a
probability, which the log loss on logits does not take; the paper's squared error on ratings is replaced by the
log loss on clicks, which is what the other models of the suite optimise).

Regularisation (training only): λ/2 (‖W‖² + ‖V‖²) over the rows the batch looks up (the raters of its items in
``user_encoder``, its users in ``user_decoder``; b is not regularised), since a sharded table is only seen through
the rows a batch reads; a row is penalised at each step that uses it. Example, λ = 2, k = 2, V rows [1, 0],
[0, 1], [1, 1] and W rows [1, 2], [−1, 1], [0, 1] all used -> 4 + 8 = 12.

Evaluation: AUC / GAUC / logloss on the impressions and HR@K / NDCG@K on ``features/rank_eval`` (the trainer).
RMSE is not computed: the samples carry binary click labels, not ratings, and the RMSE of a click probability
(the square root of the Brier score) adds nothing to the log loss.

Shapes: B rows, U ≤ B distinct items, N clicks of those items in the training split, k hidden units.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field
from torch import Tensor, nn
from torchrec import KeyedJaggedTensor

from training.layers.jagged import offsets, segment_ids, segment_sum
from training.models.common import CTRModel, ModelConfig, ModelOutput
from training.reader import _parquet

RATERS = "autorec_raters"  # table user_encoder (V)
DECODER_USER = "autorec_user"  # table user_decoder ([W; b])


class ItemRatings(NamedTuple):
    """r⁽ⁱ⁾ of every item as CSR: the entries of item i are ``users[item_ptr[i]:item_ptr[i + 1]]`` (ascending)."""

    item_ptr: Tensor  # [n_items + 1] int64
    users: Tensor  # [nnz] int64
    ratings: Tensor  # [nnz] float32

    def to(self, device: torch.device) -> ItemRatings:
        return ItemRatings(*(tensor.to(device) for tensor in self))

    def without_zeros(self) -> ItemRatings:
        """The same vectors without their zero entries (what V r reads)."""
        keep = self.ratings != 0
        counts = torch.diff(self.item_ptr)
        items = torch.repeat_interleave(torch.arange(len(counts)), counts)
        kept = torch.bincount(items[keep], minlength=len(counts))
        ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(kept, 0)])
        return ItemRatings(ptr, self.users[keep], self.ratings[keep])


def item_ratings(user_idx: np.ndarray, item_idx: np.ndarray, label: np.ndarray) -> ItemRatings:
    """CSR of the observed entries; a (user, item) pair seen several times keeps the max of its labels."""
    users, items = np.asarray(user_idx, dtype=np.int64), np.asarray(item_idx, dtype=np.int64)
    labels = np.asarray(label, dtype=np.float32)
    if users.size == 0:
        return ItemRatings(torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    width = int(users.max()) + 1
    keys, inverse = np.unique(items * width + users, return_inverse=True)  # sorted by (item, user)
    ratings = np.full(len(keys), -np.inf, dtype=np.float32)
    np.maximum.at(ratings, inverse, labels)
    entry_items, entry_users = keys // width, keys % width
    counts = np.bincount(entry_items, minlength=int(items.max()) + 1)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ItemRatings(torch.from_numpy(ptr), torch.from_numpy(entry_users), torch.from_numpy(ratings))


class AutoRecConfig(ModelConfig):
    embedding_dim: int = Field(default=500, ge=1, description="k, the hidden units (the tables store k + 1)")
    mba_lambda: float = Field(default=0.0, ge=0, le=0, description="DIN's regulariser: not used, see l2")
    encoder_activation: Literal["sigmoid", "identity", "relu", "tanh"] = "sigmoid"
    l2: float = Field(default=1e-4, ge=0, description="λ in λ/2 (‖W‖² + ‖V‖²) over the rows a batch uses")


_ACTIVATIONS = {"sigmoid": torch.sigmoid, "identity": lambda x: x, "relu": torch.relu, "tanh": torch.tanh}


class AutoRec(CTRModel):
    name = "autorec"
    config_class = AutoRecConfig

    def __init__(self, config: AutoRecConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        # tables hold k + 1 columns ([W; b] in the decoder); self.config is that, self.autorec_config the user's
        tables = config.model_copy(update={"embedding_dim": config.embedding_dim + 1})
        super().__init__(tables, table_sizes, (RATERS, DECODER_USER), embedding_device)
        # the batch's keys (what the reader builds); the lookup features above are built in forward
        self.features = ("user", "item")
        self.autorec_config = config
        self.hidden = config.embedding_dim
        self.mu = nn.Parameter(torch.zeros(self.hidden))  # μ
        self.ratings: ItemRatings | None = None  # observed entries (prepare_data / set_ratings)
        self._inputs: dict[torch.device, ItemRatings] = {}  # their non-zero entries, per device

    # ------------------------------------------------------------------ data
    def prepare_data(self, train_files: list[str]) -> None:
        """Build every item's observed vector r⁽ⁱ⁾ from the training split's files (see the module docstring)."""
        columns = ["user_idx", "item_idx", "label"]
        tables = []
        for uri in sorted(train_files):
            with _parquet(uri) as parquet_file:
                tables.append(parquet_file.read(columns=columns))
        table = pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.int64()) for c in columns})
        self.set_ratings(item_ratings(*(table.column(c).to_numpy() for c in columns)))

    def set_ratings(self, ratings: ItemRatings) -> None:
        self.ratings = ratings
        self._inputs = {}

    def _input(self, device: torch.device) -> ItemRatings:
        if self.ratings is None:
            raise RuntimeError("AutoRec has no item rating vectors: call prepare_data(train_files) first")
        if device not in self._inputs:
            self._inputs[device] = self.ratings.without_zeros().to(device)
        return self._inputs[device]

    # ------------------------------------------------------------------ model
    def raters_of(self, items: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The non-zero entries of r⁽ⁱ⁾ for ``items [U]``: (lengths [U], users [N], ratings [N]), item by item."""
        ptr, users, ratings = self._input(items.device)
        known = items < ptr.shape[0] - 1
        safe = torch.where(known, items, torch.zeros_like(items))
        start = ptr[safe]
        lengths = torch.where(known, ptr[safe + 1] - start, torch.zeros_like(start))
        total = int(lengths.sum())
        rows = segment_ids(lengths, total=total)
        positions = start[rows] + torch.arange(total, device=items.device) - offsets(lengths)[rows]
        return lengths, users[positions], ratings[positions]

    def forward(self, sparse: KeyedJaggedTensor, labels: Tensor | None = None) -> ModelOutput:
        users, items = sparse["user"].values(), sparse["item"].values()
        batch = users.shape[0]
        distinct, inverse = torch.unique(items, sorted=True, return_inverse=True)  # [U], [B]
        lengths, raters, ratings = self.raters_of(distinct)
        # row j < U of autorec_raters: the raters of distinct item j; rows U..B-1 are empty (one stride for both keys)
        rater_lengths = torch.cat([lengths, lengths.new_zeros(batch - distinct.shape[0])])
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=[RATERS, DECODER_USER], values=torch.cat([raters, users]),
            lengths=torch.cat([rater_lengths, torch.ones_like(rater_lengths)]).to(torch.int32))
        embedded = self.lookup(kjt)
        k = self.hidden
        encoder = embedded[RATERS].values()[:, :k] * ratings.unsqueeze(1).to(embedded[RATERS].values().dtype)
        code = segment_sum(encoder, lengths)  # V r⁽ⁱ⁾ per distinct item: [U, k]
        hidden = _ACTIVATIONS[self.autorec_config.encoder_activation](code + self.mu)
        decoder = self.scalar(embedded, DECODER_USER)  # [B, k + 1]
        logits = (hidden[inverse] * decoder[:, :k]).sum(dim=1) + decoder[:, k]
        return ModelOutput(logits, self.l2_penalty(), torch.zeros((), device=logits.device))

    def l2_penalty(self) -> Tensor:
        """λ/2 (‖W‖² + ‖V‖²) over the distinct rows of the last lookup (training only; b excluded)."""
        (v_rows, _), (w_rows, _) = self._distinct_rows["user_encoder"], self._distinct_rows["user_decoder"]
        if not self.training or self.autorec_config.l2 == 0.0:
            return torch.zeros((), device=w_rows.device)
        k = self.hidden
        return 0.5 * self.autorec_config.l2 * (v_rows[:, :k].pow(2).sum() + w_rows[:, :k].pow(2).sum())
