"""DRN, Deep Reinforcement Recommendation Network (Zheng et al., WWW 2018): a dueling Q-network (MODELS.md).

Notation: B rows, D = ``embedding_dim``, e(·) an id's embedding, M candidates of one request::

    s = [e(user); e(gender); e(age_bucket); e(city); pool_j [e(h_j); e(c_j)]]        state     [B, 6D]
    a = [e(item); e(cate); e(shop); e(brand)]                                      action    [B, 4D]
    V(s)    = MLP_V(s)                      value stream      (``value_hidden``, one linear output)
    A(s, a) = MLP_A([s; a])                 advantage stream  (``advantage_hidden``, one linear output)

pool is the mean (``history_pooling: mean``) or the sum of the clicked history's [item; cate] embeddings (an
empty history pools to 0). The paper's user-news cross features are left to MLP_A, which sees s and a together.

**Identifiability.** Q = V + A does not determine V and A (a constant can move from one to the other).

* A list of M candidates scored for one state (:func:`dueling_q`, :meth:`DRN.score_list`, the online minor
  update) uses the usual fix (Wang et al., 2016): ``Q(s, a_m) = V(s) + A(s, a_m) − (1/M) Σ_m' A(s, a_m')``, so
  the advantages of a request's candidates average 0 and V(s) is the mean Q of the list. Subtracting one number
  per state does not change the order of the list.
* A row of the log is one (state, action) pair: there is no candidate list to centre over (the batch's rows are
  shuffled samples of many requests), and centring one action against itself would make A vanish and Q ignore
  the item. ``forward`` therefore returns ``Q = V(s) + A(s, a)`` uncentred; optionally ``advantage_l2`` adds
  ``λ · mean_B A²`` to the loss, a soft version of the same constraint: for a fixed Q the penalty is smallest
  when V(s) takes the mean Q of the actions the log shows in state s, i.e. A averages 0 over them. Default 0
  (only Q is fit; V and A are then not separately meaningful, and only Q is ever used). Rankings of one state's
  candidates are the same with or without the centring (rank_eval scores candidates as rows: same order).

**Major update** (offline, the normal trainer): logit = Q(s, a), loss = the trainer's BCE against the click, i.e.
the Q target is the immediate reward r = click with discount γ = 0 (``gamma`` is fixed at 0). The trainer reads
independent rows of ``features/samples``; no row names the user's next request (its state and candidate list),
so the bootstrapped target r + γ max_a' Q(s', a') cannot be formed there. (To add it one would join each
impression to the same user's next request in the feature job, carry s' and that request's candidates, and
regress on r + γ max_a' Q_target(s', a') with a target network; not done.) User activeness, the paper's second
reward, is not added: in the synthetic generator a user's request rate is a fixed latent draw per user
(``features.synthetic.user_activity``) that no recommendation changes, so it is the same for every action of a
state and could not change any ranking (it would only shift V).

**Minor update** (Dueling Bandit Gradient Descent on the advantage stream): :mod:`training.drn_online`.

Example (D = 1, no hidden layers, see the tests): s = [e(user), ...], V = w_vᵀ s + b_v, A = w_aᵀ [s; a] + b_a.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor
from torchrec import JaggedTensor, KeyedJaggedTensor

from training.layers.jagged import segment_sum
from training.layers.mlp import MLP
from training.models.common import CTRModel, ModelConfig, ModelOutput

STATE_FEATURES = ("user", "gender", "age_bucket", "city")
HISTORY_FEATURES = ("hist_item", "hist_cate")
ACTION_FEATURES = ("item", "cate", "shop", "brand")

__all__ = ["ACTION_FEATURES", "DRN", "DRNConfig", "HISTORY_FEATURES", "STATE_FEATURES", "dueling_q"]


class DRNConfig(ModelConfig):
    embedding_dim: int = Field(default=16, ge=1)
    value_hidden: tuple[int, ...] = Field(default=(128, 64), description="hidden widths of the value stream V(s)")
    advantage_hidden: tuple[int, ...] = Field(default=(200, 80), description="hidden widths of A(s, a)")
    activation: Literal["relu", "prelu", "dice", "sigmoid"] = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    history_pooling: Literal["mean", "sum"] = "mean"
    advantage_l2: float = Field(default=0.0, ge=0, description="λ of λ·mean(A²) (single-sample identifiability)")
    gamma: float = Field(default=0.0, ge=0, le=0, description="discount of the offline Q target: 0 (no next state)")


def dueling_q(value: Tensor, advantage: Tensor) -> Tensor:
    """``Q = V + A − mean_m A`` per state: value ``[S]``, advantage ``[S, M]`` (M candidates each) -> ``[S, M]``.

    Example: V = 1, A = [2, −1, 2] -> mean 1 -> Q = [2, −1, 2].
    """
    if value.dim() != 1 or advantage.dim() != 2 or advantage.shape[0] != value.shape[0]:
        raise ValueError(f"expected value [S] and advantage [S, M], got {tuple(value.shape)} and "
                         f"{tuple(advantage.shape)}")
    return value.unsqueeze(1) + advantage - advantage.mean(dim=1, keepdim=True)


class DRN(CTRModel):
    name = "drn"
    config_class = DRNConfig

    def __init__(self, config: DRNConfig, table_sizes: dict[str, int], embedding_device: torch.device | None = None):
        super().__init__(config, table_sizes, (*STATE_FEATURES, *HISTORY_FEATURES, *ACTION_FEATURES),
                         embedding_device)
        dim = config.embedding_dim
        state_dim = dim * (len(STATE_FEATURES) + len(HISTORY_FEATURES))
        action_dim = dim * len(ACTION_FEATURES)
        stream = dict(activation=config.activation, dropout=config.dropout)
        self.value_mlp = MLP(state_dim, config.value_hidden, **stream)
        self.advantage_mlp = MLP(state_dim + action_dim, config.advantage_hidden, **stream)

    # ------------------------------------------------------------------ inputs
    def state(self, embedded: dict[str, JaggedTensor]) -> Tensor:
        """s ``[B, 6D]``: the profile fields and the pooled click history."""
        history = torch.cat([embedded[name].values() for name in HISTORY_FEATURES], dim=1)  # [N, 2D]
        lengths = embedded[HISTORY_FEATURES[0]].lengths()
        pooled = segment_sum(history, lengths)
        if self.config.history_pooling == "mean":
            pooled = pooled / lengths.clamp(min=1).unsqueeze(1).to(pooled.dtype)
        return torch.cat([*(self.scalar(embedded, name) for name in STATE_FEATURES), pooled], dim=1)

    def action(self, embedded: dict[str, JaggedTensor]) -> Tensor:
        """a ``[B, 4D]``: the candidate item's fields."""
        return torch.cat([self.scalar(embedded, name) for name in ACTION_FEATURES], dim=1)

    def encode(self, sparse: KeyedJaggedTensor) -> tuple[Tensor, Tensor]:
        """(s ``[B, 6D]``, a ``[B, 4D]``) of a batch: the inputs of the two streams."""
        embedded = self.lookup(sparse)
        return self.state(embedded), self.action(embedded)

    # ------------------------------------------------------------------ streams
    def value(self, state: Tensor) -> Tensor:
        """V(s) ``[B]``."""
        return self.value_mlp(state).squeeze(1)

    def advantage(self, state: Tensor, action: Tensor) -> Tensor:
        """A(s, a) ``[B]``."""
        return self.advantage_mlp(torch.cat([state, action], dim=1)).squeeze(1)

    def score_list(self, sparse: KeyedJaggedTensor) -> Tensor:
        """Centred Q ``[M]`` of M candidate rows that share one state (every row the same user and history)."""
        state, action = self.encode(sparse)
        return dueling_q(self.value(state[:1]), self.advantage(state, action).unsqueeze(0))[0]

    def forward(self, sparse: KeyedJaggedTensor, labels: Tensor | None = None) -> ModelOutput:
        embedded = self.lookup(sparse)
        state, action = self.state(embedded), self.action(embedded)
        advantage = self.advantage(state, action)
        logits = self.value(state) + advantage  # one action per row: uncentred (see the module docstring)
        regularization = self.mba_penalty(sparse, embedded)
        if self.training and self.config.advantage_l2 > 0:
            regularization = regularization + self.config.advantage_l2 * advantage.pow(2).mean()
        return ModelOutput(logits, regularization, torch.zeros((), device=logits.device))
