"""DSTN, Deep Spatio-Temporal Neural Network (Ouyang et al., KDD 2019), in its three variants.

The target ad and three auxiliary sets of ads, all embedded the same way, from the same ``item`` and ``cate``
tables (MODELS.md)::

    x_t = [e(item); e(cate)]                                  the target ad               [B, 2D]
    a_i = [e(item_i); e(cate_i)]                              an auxiliary ad             [N, 2D] (jagged)
    C = ctx_* (contextual ads of the same request), K = clk_* (recently clicked), U = unclk_* (recently unclicked)

    pooling     (DSTN-P):  s_S = Σ_{i∈S} a_i
    self        (DSTN-S):  s_S = Σ_{i∈S} α_i a_i,  α_i = exp(f(a_i)) / Σ_{j∈S} exp(f(a_j)),
                           f(a) = h_fᵀ ReLU(W_f a + b_f) + c_f (an MLP of the ad alone)
    interactive (DSTN-I):  s_S = Σ_{i∈S} α_i a_i,  α_i = exp(min(hᵀ ReLU(W_t x_t + W_a a_i + b) + b0, M))

    logit = FC([profile, x_t, s_C, s_K, s_U])                 FC: 512-256, ReLU, dropout 0.5 → one output

Every set is jagged (its lengths may be 0): padded ads never exist, so they can neither take a share of the
self-attention softmax (the authors' TensorFlow code normalises over the padded slots too) nor add exp(·) > 0 to
the interactive sum. An empty set contributes s_S = 0 in every variant.

Each set type has its own attention parameters (W, b, h, b0 for C, for K and for U). The interactive weights
depend on the target and are NOT normalised, so a set of ads irrelevant to the target contributes little and
the size of s_S carries how much the set matters. Overflow guard: the exponent is clamped at
``attention_exponent_max`` = M (default 20, exp(20) ≈ 4.9e8; float32 overflows past 88). The clamp only caps
weights that are already huge, leaves them unnormalised, and passes no gradient through a capped exponent.

The attention networks have one hidden layer of ``attention_hidden`` units (128 in the authors' code), with
optional dropout on it (``attention_dropout``). ``profile`` is the paper's user/query fields: by default the
user profile (user, gender, age_bucket, city) and the target's shop and brand (the auxiliary ads carry only
item and category, so x_t, the attention query, is [item; cate]); ``profile_features: []`` gives the bare
[x_t, s_C, s_K, s_U].
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torchrec import KeyedJaggedTensor

from training.layers.jagged import repeat_rows, segment_ids, segment_sum
from training.layers.mlp import MLP
from training.models.common import CTRModel, ModelConfig, ModelOutput

PROFILE_FEATURES = ("user", "gender", "age_bucket", "city", "shop", "brand")
TARGET_FEATURES = ("item", "cate")
#: set name -> its (item, cate) features; all three share the item and cate tables with the target
SETS: dict[str, tuple[str, str]] = {
    "ctx": ("ctx_item", "ctx_cate"),
    "clk": ("clk_item", "clk_cate"),
    "unclk": ("unclk_item", "unclk_cate"),
}


def segment_softmax(scores: Tensor, lengths: Tensor) -> Tensor:
    """Softmax of jagged scores within each row: scores ``[N]``, lengths ``[B]`` -> ``[N]``.

    Each row's weights sum to 1; an empty row has none. Stable: each row's maximum is subtracted first.
    Example: scores [0, ln 3, 5], lengths [2, 0, 1] -> [1/4, 3/4, 1].
    """
    ids = segment_ids(lengths, total=scores.shape[0])
    row_max = scores.new_full((lengths.shape[0],), float("-inf"))
    row_max = row_max.scatter_reduce(0, ids, scores.detach(), reduce="amax", include_self=True)
    exp = torch.exp(scores - row_max[ids])
    return exp / segment_sum(exp, lengths)[ids]


class SelfSetAttention(nn.Module):
    """DSTN-S: α_i = softmax_{i∈S}(f(a_i)) with f(a) = h_fᵀ ReLU(W_f a + b_f) + c_f (the ad alone).

    ``weights(ads [N, A], lengths [B]) -> [N]`` (each non-empty row sums to 1); ``forward`` gives the pooled
    ``[B, A]`` Σ α_i a_i (0 for an empty set).
    """

    def __init__(self, ad_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.score = MLP(ad_dim, (hidden,), activation="relu", dropout=dropout, output_dim=1)

    def weights(self, ads: Tensor, lengths: Tensor) -> Tensor:
        return segment_softmax(self.score(ads).squeeze(1), lengths)

    def forward(self, ads: Tensor, lengths: Tensor, target: Tensor | None = None) -> Tensor:
        return segment_sum(ads * self.weights(ads, lengths).unsqueeze(1), lengths)


class InteractiveSetAttention(nn.Module):
    """DSTN-I: α_i = exp(min(hᵀ ReLU(W_t x_t + W_a a_i + b) + b0, M)), NOT normalised.

    ``weights(ads [N, A], lengths [B], target [B, T]) -> [N]``; ``forward`` gives ``[B, A]`` Σ α_i a_i (0 for an
    empty set). W_t x_t + b is computed once per row and repeated over the row's ads.

    Attributes:
        target: ``nn.Linear(T, H)``: W_t and b.   ads: ``nn.Linear(A, H, bias=False)``: W_a.
        output: ``nn.Linear(H, 1)``: h and b0.    exponent_max: M.
    """

    def __init__(self, target_dim: int, ad_dim: int, hidden: int, dropout: float = 0.0,
                 exponent_max: float = 20.0) -> None:
        super().__init__()
        self.target = nn.Linear(target_dim, hidden)
        self.ads = nn.Linear(ad_dim, hidden, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden, 1)
        self.exponent_max = exponent_max

    def weights(self, ads: Tensor, lengths: Tensor, target: Tensor) -> Tensor:
        hidden = torch.relu(repeat_rows(self.target(target), lengths) + self.ads(ads))  # [N, H]
        exponent = self.output(self.dropout(hidden)).squeeze(1)
        return torch.exp(exponent.clamp(max=self.exponent_max))

    def forward(self, ads: Tensor, lengths: Tensor, target: Tensor | None = None) -> Tensor:
        if target is None:
            raise ValueError("interactive attention needs the target ad")
        return segment_sum(ads * self.weights(ads, lengths, target).unsqueeze(1), lengths)


class DSTNConfig(ModelConfig):
    attention: Literal["pooling", "self", "interactive"] = "interactive"
    attention_hidden: int = Field(default=128, ge=1)
    attention_dropout: float = Field(default=0.0, ge=0, lt=1)
    attention_exponent_max: float = Field(default=20.0, gt=0, le=80,
                                          description="interactive attention: cap on the exponent of α_i")
    mlp_hidden: tuple[int, ...] = (512, 256)
    mlp_activation: Literal["relu", "prelu", "dice", "sigmoid"] = "relu"
    dropout: float = Field(default=0.5, ge=0, lt=1)
    profile_features: tuple[str, ...] = PROFILE_FEATURES


class DSTN(CTRModel):
    name = "dstn"
    config_class = DSTNConfig

    def __init__(self, config: DSTNConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        unknown = [f for f in config.profile_features if f not in PROFILE_FEATURES]
        if unknown:
            raise ValueError(f"profile_features {unknown} are not scalar side features; choose from {PROFILE_FEATURES}")
        set_features = tuple(name for pair in SETS.values() for name in pair)
        super().__init__(config, table_sizes, (*config.profile_features, *TARGET_FEATURES, *set_features),
                         embedding_device)
        ad_dim = 2 * config.embedding_dim
        self.set_attention: nn.ModuleDict | None = None
        if config.attention == "self":
            self.set_attention = nn.ModuleDict(
                {name: SelfSetAttention(ad_dim, config.attention_hidden, config.attention_dropout) for name in SETS})
        elif config.attention == "interactive":
            self.set_attention = nn.ModuleDict(
                {name: InteractiveSetAttention(ad_dim, ad_dim, config.attention_hidden, config.attention_dropout,
                                               config.attention_exponent_max) for name in SETS})
        in_dim = config.embedding_dim * len(config.profile_features) + ad_dim * (1 + len(SETS))
        self.mlp = MLP(in_dim, config.mlp_hidden, activation=config.mlp_activation, dropout=config.dropout)

    def set_representations(self, embedded, target: Tensor) -> dict[str, Tensor]:
        """set name -> s_S ``[B, 2D]`` (see the module docstring)."""
        result = {}
        for name, (item, cate) in SETS.items():
            ads = torch.cat([embedded[item].values(), embedded[cate].values()], dim=1)  # [N, 2D]
            lengths = embedded[item].lengths()
            if self.set_attention is None:
                result[name] = segment_sum(ads, lengths)
            else:
                result[name] = self.set_attention[name](ads, lengths, target)
        return result

    def forward(self, sparse: KeyedJaggedTensor, labels: torch.Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        profile = [self.scalar(embedded, name) for name in self.config.profile_features]
        target = torch.cat([self.scalar(embedded, "item"), self.scalar(embedded, "cate")], dim=1)
        sets = self.set_representations(embedded, target)
        logits = self.mlp(torch.cat([*profile, target, *sets.values()], dim=1)).squeeze(1)
        zero = torch.zeros((), device=logits.device)
        return ModelOutput(logits, self.mba_penalty(sparse, embedded), zero)
