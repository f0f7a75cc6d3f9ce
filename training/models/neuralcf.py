"""NeuralCF (He et al., WWW 2017): GMF, MLP and their fusion NeuMF, each branch with embeddings of its own.

Notation: B rows, D = ``embedding_dim``; p_u, q_i the user's and the item's embedding in one branch (the branches
never share a table: GMF reads ``user_gmf`` / ``item_gmf``, MLP reads ``user_mlp`` / ``item_mlp``, all looked up
by the samples' ``user_idx`` and ``item_idx``). The models return the logit; ŷ = σ(logit) is applied by the
trainer's log loss::

    GMF    φ_GMF = p_uᴳ ⊙ q_iᴳ                                   [B, D]
           logit = h_Gᵀ φ_GMF + b_G
    MLP    z_1   = [p_uᴹ; q_iᴹ]                                  [B, 2D]
           φ_MLP = a_L(W_L (… a_2(W_2 z_1 + b_2) …) + b_L)       ``mlp_hidden`` (tower 32-16-8, ReLU by default)
           logit = h_Mᵀ φ_MLP + b_M
    NeuMF  logit = hᵀ [φ_GMF; φ_MLP] + b                         ŷ = σ(hᵀ [φ_GMF; φ_MLP] + b)

The paper's equations have no output bias b; the authors' code (a Keras ``Dense(1)``) has one, and so have these
models. Example, GMF with D = 2: p_u = [1, 2], q_i = [3, −1], h = [0.5, 2], b = 0.1 -> φ = [3, −2] and the logit
is 1.5 − 4 + 0.1 = −2.4.

One ``embedding_dim`` for every table (:class:`CTRModel` builds all tables with it): the MLP branch's embeddings
have the same D as GMF's (the paper lets them differ), so its first layer reads 2D.

Objective: the paper's pointwise log loss with ``num_negatives`` sampled negatives per positive (4 in the paper).
In training (``self.training`` and labels given) every row with label 1 gets ``num_negatives`` items drawn
uniformly from [2, item table size) with ``torch.randint`` (the global generator, which the trainer checkpoints),
redrawn while equal to the row's item, and scored with the row's user. The impressions shown and not clicked keep
their label 0. The negatives come from the same single lookup: the batch is extended to M = B + P·k rows (the
user repeated, the negatives as items). Example, B = 2, labels [1, 0], k = 2, users [u, v], items [7, 5]::

    user_* values [u, v] -> [u, v, u, u]        item_* values [7, 5] -> [7, 5, n1, n2]
    logits = [ŷ(u, 7), ŷ(v, 5), ŷ(u, n1), ŷ(u, n2)]        targets = [1, 0, 0, 0]

In evaluation (no labels, or ``eval()``) the output is the batch's logits [B] and ``targets`` is None. No
regularisation (the paper uses none; ``dropout`` on the MLP tower is available).

Pre-training NeuMF from GMF and MLP (the paper's recipe; all three with the same ``embedding_dim`` and NeuMF's
``mlp_hidden`` equal to the MLP run's)::

    torchrun ... -m training.train --model gmf                                  # run G
    torchrun ... -m training.train --model ncf_mlp                              # run M
    torchrun ... -m training.train --model neumf --set "train.init_from=[G, M]"

``train.init_from`` copies the embedding tables of the same name and shape from each run (GMF's user_gmf and
item_gmf from G, MLP's user_mlp and item_mlp from M) and hands the runs' dense tensors to
:meth:`NeuMF.load_pretrained`, which initialises the dense part as the paper does: the MLP tower from M, and
h ← [α h_G; (1 − α) h_M] (α = ``pretrain_alpha``, 0.5), b ← α b_G + (1 − α) b_M (module names line up:
``mlp_tower.*`` in MLP and NeuMF, ``head.*`` in all three). The paper then trains with plain SGD
(``--set optim.dense_optimizer=sgd``). With only one of the two runs, only its tables are copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torchrec import KeyedJaggedTensor

from training.layers.mlp import MLP
from training.models.common import CTRModel, ModelConfig, ModelOutput

FIRST_ITEM_ID = 2  # 0 is padding, 1 the unknown item: negatives are drawn from [2, table size)


class NCFConfig(ModelConfig):
    """Settings GMF, MLP and NeuMF share (the ``model:`` section; unknown keys are errors)."""

    embedding_dim: int = Field(default=16, ge=1)
    mba_lambda: float = Field(default=0.0, ge=0, le=0, description="DIN's regulariser: not used by NeuralCF")
    num_negatives: int = Field(default=4, ge=0, description="items sampled per positive in training (0: none)")


class NCFMLPConfig(NCFConfig):
    mlp_hidden: tuple[int, ...] = (32, 16, 8)
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1)


class NeuMFConfig(NCFMLPConfig):
    pretrain_alpha: float = Field(default=0.5, ge=0, le=1,
                                  description="α of h = [α h_GMF; (1 − α) h_MLP] in load_pretrained_dense")


def sample_negatives(items: Tensor, count: int, num_items: int) -> Tensor:
    """``count`` ids per row, uniform over [2, num_items) without the row's own item: ``[P]`` -> ``[P, count]``.

    A rejection loop on ``torch.randint`` (the global generator): exactly uniform over the other items.
    """
    negatives = torch.randint(FIRST_ITEM_ID, num_items, (items.shape[0], count), device=items.device)
    clash = negatives == items[:, None]
    while bool(clash.any()):
        negatives[clash] = torch.randint(FIRST_ITEM_ID, num_items, (int(clash.sum()),), device=items.device)
        clash = negatives == items[:, None]
    return negatives


class NeuralCF(CTRModel):
    """What GMF, MLP and NeuMF share: features per branch, sampled negatives, the single lookup, the output."""

    config_class: ClassVar[type[NCFConfig]] = NCFConfig
    #: the branches whose tables the model holds ("gmf", "mlp")
    branches: ClassVar[tuple[str, ...]]

    def __init__(self, config: NCFConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        features = tuple(f"{side}_{branch}" for branch in self.branches for side in ("user", "item"))
        super().__init__(config, table_sizes, features, embedding_device)
        self.num_items = self.table_sizes[f"item_{self.branches[0]}"]
        if config.num_negatives > 0 and self.num_items < FIRST_ITEM_ID + 2:
            raise ValueError(f"sampling negatives needs at least 2 items besides padding and unknown; the item table "
                             f"has {self.num_items} rows")

    def score(self, embedded: Mapping[str, Tensor]) -> Tensor:
        """Logits ``[M]`` from each feature's ``[M, D]`` embeddings (``user_gmf``, ``item_gmf``, ...)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def with_negatives(self, sparse: KeyedJaggedTensor, positive: Tensor) -> KeyedJaggedTensor:
        """The batch extended by ``num_negatives`` rows per positive: its user, a sampled item (module docstring)."""
        k = self.config.num_negatives
        users = sparse[self.features[0]].values()
        items = sparse[self.features[1]].values()
        negatives = sample_negatives(items[positive], k, self.num_items).reshape(-1)
        extra_users = torch.repeat_interleave(users[positive], k)
        values = [torch.cat([users, extra_users]) if name.startswith("user_") else torch.cat([items, negatives])
                  for name in self.features]
        rows = users.shape[0] + negatives.shape[0]
        lengths = torch.ones(rows * len(self.features), dtype=torch.int32, device=users.device)
        return KeyedJaggedTensor.from_lengths_sync(keys=list(self.features), values=torch.cat(values), lengths=lengths)

    def forward(self, sparse: KeyedJaggedTensor, labels: Tensor | None = None) -> ModelOutput:
        sampling = self.training and labels is not None and self.config.num_negatives > 0
        if sampling:
            sparse = self.with_negatives(sparse, labels > 0.5)
        embedded = self.lookup(sparse)
        logits = self.score({name: self.scalar(embedded, name) for name in self.features})
        zero = torch.zeros((), device=logits.device)
        if not sampling:
            return ModelOutput(logits, zero, zero)
        assert labels is not None
        targets = torch.cat([labels.to(logits.dtype), logits.new_zeros(logits.shape[0] - labels.shape[0])])
        return ModelOutput(logits, zero, zero, targets)


class GMF(NeuralCF):
    """logit = h_Gᵀ (p_u ⊙ q_i) + b_G on the tables ``user_gmf`` and ``item_gmf``."""

    name = "gmf"
    config_class = NCFConfig
    branches = ("gmf",)

    def __init__(self, config: NCFConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, embedding_device)
        self.head = nn.Linear(config.embedding_dim, 1)  # h_G, b_G

    def score(self, embedded: Mapping[str, Tensor]) -> Tensor:
        return self.head(embedded["user_gmf"] * embedded["item_gmf"]).squeeze(1)


def _mlp_tower(config: NCFMLPConfig) -> MLP:
    """φ_MLP: the tower over [p_u; q_i] ([M, 2D] -> [M, mlp_hidden[-1]]), without an output layer."""
    return MLP(2 * config.embedding_dim, config.mlp_hidden, activation=config.mlp_activation,
               dropout=config.dropout, output_dim=None)


class NCFMLP(NeuralCF):
    """logit = h_Mᵀ φ_MLP([p_u; q_i]) + b_M on the tables ``user_mlp`` and ``item_mlp``."""

    name = "ncf_mlp"
    config_class = NCFMLPConfig
    branches = ("mlp",)

    def __init__(self, config: NCFMLPConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, embedding_device)
        self.mlp_tower = _mlp_tower(config)
        self.head = nn.Linear(self.mlp_tower.out_dim, 1)  # h_M, b_M

    def score(self, embedded: Mapping[str, Tensor]) -> Tensor:
        z = torch.cat([embedded["user_mlp"], embedded["item_mlp"]], dim=1)
        return self.head(self.mlp_tower(z)).squeeze(1)


class NeuMF(NeuralCF):
    """logit = hᵀ [p_uᴳ ⊙ q_iᴳ; φ_MLP([p_uᴹ; q_iᴹ])] + b on four tables (GMF's and MLP's)."""

    name = "neumf"
    config_class = NeuMFConfig
    branches = ("gmf", "mlp")

    def __init__(self, config: NeuMFConfig, table_sizes: dict[str, int],
                 embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, embedding_device)
        self.mlp_tower = _mlp_tower(config)
        self.head = nn.Linear(config.embedding_dim + self.mlp_tower.out_dim, 1)  # h = [h_G; h_M], b

    def score(self, embedded: Mapping[str, Tensor]) -> Tensor:
        gmf = embedded["user_gmf"] * embedded["item_gmf"]
        mlp = self.mlp_tower(torch.cat([embedded["user_mlp"], embedded["item_mlp"]], dim=1))
        return self.head(torch.cat([gmf, mlp], dim=1)).squeeze(1)

    @torch.no_grad()
    def load_pretrained(self, sources: Mapping[str, Mapping[str, Tensor]]) -> str:
        """``train.init_from`` hook: with a GMF and an NCF-MLP run among the sources, the paper's dense init."""
        if "gmf" in sources and "ncf_mlp" in sources:
            self.load_pretrained_dense(sources["gmf"], sources["ncf_mlp"])
            return f"NeuMF dense part initialised from GMF and MLP (alpha {self.config.pretrain_alpha})"
        return "NeuMF dense part not pre-trained: train.init_from needs both a gmf and an ncf_mlp run"

    def load_pretrained_dense(self, gmf: Mapping[str, Tensor], mlp: Mapping[str, Tensor]) -> None:
        """The paper's initialisation of the dense part from a trained GMF and a trained MLP.

        ``gmf``, ``mlp``: the models' dense state dicts (keys ``head.weight``, ``head.bias`` and, for MLP,
        ``mlp_tower.*``; a prefix such as DMP's ``_dmp_wrapped_module.`` must be stripped first). The tower is
        copied; h ← [α h_G; (1 − α) h_M], b ← α b_G + (1 − α) b_M with α = ``pretrain_alpha``. The embedding
        tables are not touched (``train.init_from`` copies those).
        """
        alpha = self.config.pretrain_alpha
        tower = {key.removeprefix("mlp_tower."): value for key, value in mlp.items() if key.startswith("mlp_tower.")}
        self.mlp_tower.load_state_dict(tower)
        with torch.no_grad():  # an initialisation, not part of any graph
            self.head.weight.copy_(torch.cat([alpha * gmf["head.weight"], (1 - alpha) * mlp["head.weight"]], dim=1))
            self.head.bias.copy_(alpha * gmf["head.bias"] + (1 - alpha) * mlp["head.bias"])
