r"""DRN's minor update: Dueling Bandit Gradient Descent (DBGD) against a simulation of the synthetic generator.

    python -m training.drn_online --lakehouse DIR --run-id RUN --world-seed 7 [--rounds 2000 --seed 0 ...]

Loads a trained ``drn`` run's best checkpoint (single process, CPU, no process group) and plays ``rounds``
requests of the synthetic generator's world (:mod:`training.drn_world`), one user each. Per round t:

1. **Request.** A user n is drawn in proportion to the generator's request rate ``min(R · activity_n, S)``; the
   candidates are the first ``candidates`` distinct items of the generator's slate process for (n, day) (its
   interest / popular / uniform sources, keyed by the simulation's seed and round). ``day`` is the day after the
   last day of the log (``--day`` to change it), so the users' interests are the generator's interests of
   "tomorrow". The state is the user's profile and click history as the feature pipeline left them
   at the end of the log (``features/user_state``, last ``hist_len`` clicks), mapped through ``features/vocab`` at
   the run's recorded vocab version (unknown ids -> 1, as the pipeline does). The history is not extended with
   simulated clicks: every round starts from the logged state, so the DBGD model and the frozen one always face
   the same states.
2. **Explore.** W are the advantage stream's parameters (every weight and bias of ``advantage_mlp``). The value
   stream V(s) adds one number to all candidates of a request, so perturbing it could not change a list and DBGD
   would get no signal for it: it is neither perturbed nor updated (nor are the embedding tables).
   ``ΔW = α · U(−1, 1) ⊙ W`` (element-wise, a fresh draw per round), ``W̃ = W + ΔW``.
3. **Rank and interleave.** List A ranks the candidates by Q under W, list B by Q̃ under W̃ (Q centred per
   request, :func:`training.models.drn.dueling_q`; ties keep the draw order). The user is shown the team-draft
   interleaving (Radlinski et al., 2008) of A and B, ``list_length`` items (:func:`team_draft_interleave`).
4. **Clicks** come from the generator's click model (:func:`training.drn_world.click_probability`): position
   bias θ(pos), the user's interest in the item's category on that day, the item's latent quality and the number
   of other shown items of the same category. Click at position k iff ``u_k < p_k`` with one uniform per
   position, drawn once per round.
5. **Credit and update.** Each click counts for the team whose list contributed the item. When B's items won
   more clicks than A's: ``W <- W + η ΔW``; otherwise W stays (ties included).

**Frozen baseline, common random numbers.** The same round is also served, counterfactually, the frozen model's
own list (the loaded weights W₀, never updated) and the DBGD model's own list A (its exploitation list before the
round's update); all three lists see the same user, candidates and click uniforms u_k. Besides the drawn clicks,
the expected clicks Σ p_k of each list are recorded (no click noise), and, as references for the scale, those of
the candidates in draw order (``expected_random``: a random list) and of a list built greedily on the click model
itself (``expected_oracle``: it reads the latent world, so no model can be expected to reach it).

**Output.** One row per round in ``training/online_rounds`` (:data:`ONLINE_ROUNDS`, partitioned by ``run_id``),
appended once per (run, seed) (a Delta app transaction: a rerun with the same seed writes nothing); a per-window
summary and a final JSON line are printed.

**World check.** The lakehouse does not record the generator's seed; ``--world-seed`` names it, and before
simulating, the click model is evaluated on impressions of ``raw/click_truth`` (the generator's own p) and must
reproduce them to 1e-9, or the run stops (a wrong seed or a lakehouse that was not generated is caught).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor
from torch.func import functional_call
from torchrec import KeyedJaggedTensor

from features.synthetic import A0, A_CTX, A_INT, POSITION_EXPONENT
from features.tableio import Lakehouse
from training import drn_world
from training.config import RunConfig
from training.models.drn import DRN, DRNConfig, dueling_q

ONLINE_ROUNDS_TABLE = "training/online_rounds"
CLICK_TRUTH_TABLE = "raw/click_truth"
VOCAB_TABLE = "features/vocab"
STATE_TABLE = "features/user_state"
SAMPLES_TABLE = "features/samples"
UNKNOWN_IDX = 1  # features.vocab.UNKNOWN_IDX (that module loads pyspark's DataFrame API)
VERIFY_TOLERANCE = 1e-9

ONLINE_ROUNDS = pa.schema([
    ("run_id", pa.string()),
    ("seed", pa.int64()),
    ("round", pa.int64()),
    ("user_idx", pa.int64()),
    ("candidates", pa.int32()),
    ("shown", pa.int32()),
    ("clicks_served", pa.int32()),  # the interleaved list the user saw
    ("clicks_dbgd", pa.int32()),  # the DBGD model's own list (W before this round's update)
    ("clicks_frozen", pa.int32()),  # the frozen model's own list (W0)
    ("expected_served", pa.float64()),  # Σ p_k of each list
    ("expected_dbgd", pa.float64()),
    ("expected_frozen", pa.float64()),
    ("expected_oracle", pa.float64()),  # references: a list built greedily on the click model itself,
    ("expected_random", pa.float64()),  # and the candidates in draw order (a random list)
    ("team_current_clicks", pa.int32()),  # interleaving credit: clicks on items contributed by W
    ("team_explore_clicks", pa.int32()),  # ... by W̃ = W + ΔW
    ("updated", pa.bool_()),  # W <- W + η ΔW this round
    ("lists_overlap", pa.int32()),  # items the top-L lists of W and W̃ share (L: no exploration; 0: all new)
    ("weight_change", pa.float64()),  # ||W − W0|| / ||W0|| after the round
    ("alpha", pa.float64()),
    ("eta", pa.float64()),
    ("world_seed", pa.int64()),
    ("day", pa.date32()),
    ("recorded_at", pa.timestamp("us", tz="UTC")),
])


class OnlineInputError(RuntimeError):
    """The run, its checkpoint or the generator's tables are missing or unusable."""


# ---------------------------------------------------------------------------------------------- DBGD pieces
def team_draft_interleave(ranking_a: Sequence[int], ranking_b: Sequence[int], length: int,
                          coins: Sequence[bool]) -> tuple[list[int], list[int]]:
    """Team-draft interleaving of two rankings of the same items: (shown items, team of each: 0 = A, 1 = B).

    While fewer than ``length`` items are shown, the team with fewer picks picks next; when both have as many,
    the next coin decides (True: A first). A team picks its highest-ranked item not shown yet. ``coins`` needs one
    entry per tie (at most ``ceil(length / 2)``).

    Example: A = [1, 2, 3, 4], B = [2, 1, 4, 3], length 4, coins [True, False]: tie -> A picks 1; B picks 2;
    tie, coin False -> B picks 4; A picks 3 -> shown [1, 2, 4, 3], teams [0, 1, 1, 0].
    """
    shown: list[int] = []
    teams: list[int] = []
    taken: set[int] = set()
    picks = [0, 0]
    cursor = [0, 0]
    rankings = (list(ranking_a), list(ranking_b))
    coin = iter(coins)
    limit = min(length, len(set(rankings[0]) | set(rankings[1])))
    while len(shown) < limit:
        if picks[0] != picks[1]:
            team = 0 if picks[0] < picks[1] else 1
        else:
            try:
                team = 0 if next(coin) else 1
            except StopIteration:
                raise ValueError("team_draft_interleave: ran out of coins") from None
        ranking = rankings[team]
        while cursor[team] < len(ranking) and ranking[cursor[team]] in taken:
            cursor[team] += 1
        if cursor[team] == len(ranking):  # this team has nothing left: the other one picks
            team = 1 - team
            ranking = rankings[team]
            while ranking[cursor[team]] in taken:
                cursor[team] += 1
        item = ranking[cursor[team]]
        shown.append(item)
        teams.append(team)
        taken.add(item)
        picks[team] += 1
    return shown, teams


def credit(teams: Sequence[int], clicks: Sequence[bool]) -> tuple[int, int]:
    """(clicks on team A's items, clicks on team B's items)."""
    a = sum(1 for team, click in zip(teams, clicks, strict=True) if click and team == 0)
    b = sum(1 for team, click in zip(teams, clicks, strict=True) if click and team == 1)
    return a, b


def perturbation(params: dict[str, Tensor], alpha: float, generator: torch.Generator) -> dict[str, Tensor]:
    """``ΔW = α · U(−1, 1) ⊙ W`` for every tensor of ``params``."""
    return {name: alpha * (2.0 * torch.rand(w.shape, generator=generator, dtype=w.dtype) - 1.0) * w
            for name, w in params.items()}


def dbgd_update(params: dict[str, Tensor], delta: dict[str, Tensor], clicks_current: int, clicks_explore: int,
                eta: float) -> tuple[dict[str, Tensor], bool]:
    """``W + η ΔW`` when the explorer's items won more clicks than the current model's, else W unchanged."""
    if clicks_explore > clicks_current:
        return {name: w + eta * delta[name] for name, w in params.items()}, True
    return params, False


def rank(scores: Tensor) -> list[int]:
    """Candidate positions by descending score; ties keep the candidates' order."""
    return torch.argsort(-scores, stable=True).tolist()


# ---------------------------------------------------------------------------------------------- the world
@dataclass
class SimWorld:
    """The generator's world (latent model) and the ids the model knows it by.

    ``user_*``: ``[N]`` indices by generator user n; ``hist_item`` / ``hist_cate``: per user n, the logged history's
    indices; ``item_*``: ``[M]`` indices by generator item j.
    """

    config: drn_world.WorldConfig
    user_idx: np.ndarray
    gender_idx: np.ndarray
    age_bucket_idx: np.ndarray
    city_idx: np.ndarray
    hist_item: list[np.ndarray]
    hist_cate: list[np.ndarray]
    item_idx: np.ndarray
    cate_idx: np.ndarray
    shop_idx: np.ndarray
    brand_idx: np.ndarray
    day: int  # absolute day number of the simulated requests

    def batch(self, user: int, items: np.ndarray) -> KeyedJaggedTensor:
        """The candidate rows of one request in :data:`DRN.features` order (one state repeated M times)."""
        m = len(items)
        hist_i, hist_c = self.hist_item[user], self.hist_cate[user]
        columns = {
            "user": np.full(m, self.user_idx[user]), "gender": np.full(m, self.gender_idx[user]),
            "age_bucket": np.full(m, self.age_bucket_idx[user]), "city": np.full(m, self.city_idx[user]),
            "hist_item": np.tile(hist_i, m), "hist_cate": np.tile(hist_c, m),
            "item": self.item_idx[items], "cate": self.cate_idx[items], "shop": self.shop_idx[items],
            "brand": self.brand_idx[items],
        }
        lengths = {name: np.full(m, len(hist_i) if name.startswith("hist_") else 1) for name in columns}
        keys = list(columns)
        return KeyedJaggedTensor.from_lengths_sync(
            keys=keys, values=torch.from_numpy(np.concatenate([columns[k] for k in keys]).astype(np.int64)),
            lengths=torch.from_numpy(np.concatenate([lengths[k] for k in keys]).astype(np.int32)))

    def oracle_list(self, user: int, items: np.ndarray, length: int) -> list[int]:
        """Candidate positions of a list built greedily on the click model itself: at each position the candidate
        that most raises the list's expected clicks Σ p_k (the context penalty of the items already chosen and
        of the newcomer included). A reference for the scale of the click rates, not a policy: it reads the
        latent interests and qualities.
        """
        cfg = self.config
        term = (A0 + A_INT * drn_world.interest(cfg.seed, cfg.categories, user, items, self.day)
                + drn_world.item_quality(cfg.seed, items))
        cats = drn_world.item_category(items, cfg.categories)
        chosen: list[int] = []
        for _ in range(min(length, len(items))):
            best, best_value = -1, -np.inf
            for candidate in range(len(items)):
                if candidate in chosen:
                    continue
                trial = np.array([*chosen, candidate])
                same = (cats[trial][:, None] == cats[trial][None, :]).sum(axis=1) - 1
                theta = np.power(np.arange(1.0, len(trial) + 1), -POSITION_EXPONENT)
                value = float((theta / (1.0 + np.exp(-(term[trial] - A_CTX * same)))).sum())
                if value > best_value:
                    best, best_value = candidate, value
            chosen.append(best)
        return chosen

    def click_probabilities(self, user: int, shown: np.ndarray) -> np.ndarray:
        """The generator's p_click of each shown item at positions 1..L of one request."""
        cfg = self.config
        return drn_world.click_probability(
            np.arange(1, len(shown) + 1), drn_world.interest(cfg.seed, cfg.categories, user, shown, self.day),
            drn_world.item_quality(cfg.seed, shown), drn_world.n_same(shown, cfg.categories))


def _vocab_maps(lakehouse: Lakehouse, version: int | None) -> dict[str, dict[str, int]]:
    vocab = lakehouse.read_arrow(VOCAB_TABLE, version=version, columns=["field", "raw_id", "idx"]).to_pylist()
    maps: dict[str, dict[str, int]] = {}
    for row in vocab:
        maps.setdefault(row["field"], {})[row["raw_id"]] = int(row["idx"])
    return maps


def _lookup(mapping: dict[str, int], raw: Sequence[str], size: int) -> np.ndarray:
    """Indices of raw ids (unknown -> 1; an index the run's table cannot hold -> 1)."""
    out = np.array([mapping.get(value, UNKNOWN_IDX) for value in raw], dtype=np.int64)
    out[out >= size] = UNKNOWN_IDX
    return out


def _numbered(raw: Sequence[str], prefix: str, what: str) -> np.ndarray:
    """Generator indices of ids ``<prefix><n>``; they must be exactly 0..len-1 (the generator's tables)."""
    try:
        numbers = np.array([int(value.removeprefix(prefix)) for value in raw], dtype=np.int64)
    except ValueError as err:
        raise OnlineInputError(f"{what}: ids are not the synthetic generator's '{prefix}<n>' ids ({err})") from None
    if not np.array_equal(np.sort(numbers), np.arange(len(numbers))):
        raise OnlineInputError(f"{what}: expected the ids {prefix}0..{prefix}{len(numbers) - 1}")
    return numbers


def load_world(lakehouse: Lakehouse, *, world_seed: int, table_sizes: dict[str, int], vocab_version: int | None,
               requests_per_user_day: float = 2.0, day: dt.date | None = None) -> SimWorld:
    """The generator's world of ``lakehouse`` (``raw/users``, ``raw/items``, ``features/vocab``, ``user_state``)."""
    for table in ("raw/users", "raw/items", VOCAB_TABLE):
        if not lakehouse.exists(table):
            raise OnlineInputError(f"table {table!r} does not exist in {lakehouse.root}: the simulation needs a "
                                   "lakehouse built from jobs/generate_synthetic by the feature jobs")
    users = lakehouse.read_arrow("raw/users").to_pydict()
    items = lakehouse.read_arrow("raw/items").to_pydict()
    n_order = np.argsort(_numbered(users["user_id"], "u", "raw/users"))
    j_order = np.argsort(_numbered(items["item_id"], "i", "raw/items"))
    users = {key: [values[i] for i in n_order] for key, values in users.items()}
    items = {key: [values[j] for j in j_order] for key, values in items.items()}
    categories = len(set(items["category_id"]))
    expected = [f"c{j % categories}" for j in range(len(j_order))]
    if items["category_id"] != expected:
        raise OnlineInputError("raw/items: item j's category is not c<j mod C>: not the synthetic generator's items")
    config = drn_world.WorldConfig(seed=world_seed, users=len(n_order), items=len(j_order), categories=categories,
                                   requests_per_user_day=requests_per_user_day)
    maps = _vocab_maps(lakehouse, vocab_version)

    def ids(field: str, table: str, raw: Sequence[str]) -> np.ndarray:
        return _lookup(maps.get(field, {}), raw, table_sizes[table])

    item_idx = ids("item", "item", items["item_id"])
    cate_idx = ids("category", "cate", items["category_id"])
    hist_len, last_ds = 0, None
    state: dict[str, list[str]] = {}
    if lakehouse.exists(STATE_TABLE):
        if lakehouse.exists(SAMPLES_TABLE):
            hist_len = int(lakehouse.properties(SAMPLES_TABLE).get("ctr.samples.hist_len", "0"))
        rows = lakehouse.read_arrow(STATE_TABLE, columns=["user_id", "clicks", "ds"]).to_pylist()
        if rows:
            last_ds = max(row["ds"] for row in rows)
            # a user's state at the end of the log: their latest row (the table keeps a row per active day)
            for row in sorted(rows, key=lambda r: r["ds"]):
                clicks = [c["item_id"] for c in row["clicks"]]  # oldest first
                state[row["user_id"]] = clicks[-hist_len:] if hist_len else clicks
    item_number = {raw: j for j, raw in enumerate(items["item_id"])}
    hist_item, hist_cate = [], []
    for raw_user in users["user_id"]:
        clicked = state.get(raw_user, [])
        hist_item.append(ids("item", "item", clicked))
        # an item unknown to the catalogue keeps an unknown category too
        hist_cate.append(np.array([cate_idx[item_number[i]] if i in item_number else UNKNOWN_IDX for i in clicked],
                                  dtype=np.int64))
    if day is None:
        if last_ds is None and lakehouse.exists(CLICK_TRUTH_TABLE):
            last_ds = max(lakehouse.read_arrow(CLICK_TRUTH_TABLE, columns=["ds"]).column("ds").to_pylist())
        if last_ds is None:
            raise OnlineInputError("cannot tell the log's last day (no features/user_state, no raw/click_truth): "
                                   "pass --day")
        day = last_ds + dt.timedelta(days=1)
    return SimWorld(
        config=config, user_idx=ids("user", "user", users["user_id"]),
        gender_idx=ids("gender", "gender", users["gender"]),
        age_bucket_idx=ids("age_bucket", "age_bucket", users["age_bucket"]),
        city_idx=ids("city", "city", users["city"]), hist_item=hist_item, hist_cate=hist_cate,
        item_idx=item_idx, cate_idx=cate_idx, shop_idx=ids("shop", "shop", items["shop_id"]),
        brand_idx=ids("brand", "brand", items["brand_id"]), day=(day - drn_world.EPOCH).days)


def verify_world(lakehouse: Lakehouse, config: drn_world.WorldConfig, requests: int = 200) -> float | None:
    """Largest |p − p_click| over the first ``requests`` requests of ``raw/click_truth``'s last day.

    None when the table is absent (nothing to check against). Raises :class:`OnlineInputError` above 1e-9.
    """
    if not lakehouse.exists(CLICK_TRUTH_TABLE):
        return None
    last = max(lakehouse.read_arrow(CLICK_TRUTH_TABLE, columns=["ds"]).column("ds").to_pylist())
    rows = lakehouse.read_arrow(CLICK_TRUTH_TABLE, columns=["request_id", "user_id", "item_id", "position",
                                                            "p_click", "ds"],
                                where=f"ds = '{last.isoformat()}'").to_pylist()
    by_request: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_request.setdefault(row["request_id"], []).append(row)
    worst = 0.0
    for request_id in sorted(by_request)[:requests]:
        impressions = sorted(by_request[request_id], key=lambda r: r["position"])
        truth = drn_world.ClickTruthRequest(
            user=int(impressions[0]["user_id"].removeprefix("u")), day=(last - drn_world.EPOCH).days,
            items=np.array([int(r["item_id"].removeprefix("i")) for r in impressions]),
            positions=np.array([r["position"] for r in impressions]),
            p_click=np.array([r["p_click"] for r in impressions]))
        worst = max(worst, drn_world.click_truth_error(config, truth))
    if worst > VERIFY_TOLERANCE:
        raise OnlineInputError(f"the click model with --world-seed {config.seed} does not reproduce raw/click_truth "
                               f"(max |Δp| = {worst:.3g} over {min(requests, len(by_request))} requests): wrong seed?")
    return worst


# ---------------------------------------------------------------------------------------------- the model
def load_run(lakehouse: Lakehouse, run_id: str) -> tuple[DRN, dict[str, Any], Path]:
    """The run's DRN with its best (else newest complete) checkpoint's weights, its runs row and the checkpoint."""
    import torch.distributed.checkpoint as dcp

    from training.checkpoint import CheckpointManager
    from training.records import RunRecorder

    row = RunRecorder(lakehouse, run_id).previous()
    if row is None:
        raise OnlineInputError(f"no run {run_id!r} in training/runs of {lakehouse.root}")
    if row["model"] != DRN.name:
        raise OnlineInputError(f"run {run_id!r} trained {row['model']!r}, not {DRN.name!r}")
    cfg = RunConfig.model_validate(json.loads(row["config"]))
    sizes = json.loads(row["splits"])["table_sizes"]
    model = DRN(DRNConfig.model_validate(cfg.model), sizes, embedding_device=torch.device("cpu"))
    manager = CheckpointManager(Path(lakehouse.path("training/checkpoints")) / run_id, rank=0)
    path = manager.path_for(row["best_step"]) if row["best_step"] is not None else None
    if path is None or not (path / ".metadata").is_file():
        path = manager.latest()[0]
    if path is None:
        raise OnlineInputError(f"run {run_id!r} has no complete checkpoint in {manager.directory}")
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():  # "torch.distributed is ... uninitialized, assuming ... a single process": yes
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=str(path))  # no process group: one process reads every shard
    model.load_state_dict(state["model"])
    return model.eval(), row, path


# ---------------------------------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class OnlineSettings:
    rounds: int = 2000
    seed: int = 0
    alpha: float = 0.1  # exploration: ΔW = α · U(−1, 1) ⊙ W
    eta: float = 0.5  # update: W <- W + η ΔW when W̃ wins
    candidates: int = 30  # distinct candidate items per request
    list_length: int = 10  # items shown per request
    window: int = 200  # rounds per line of the printed summary


def list_scores(model: DRN, value: Tensor, inputs: Tensor, params: dict[str, Tensor]) -> Tensor:
    """Centred Q ``[M]`` of one request's candidates with the advantage stream's parameters ``params``.

    ``value`` ``[1]`` is V(s) of the request's state, ``inputs`` ``[M, 10D]`` the rows' [s; a].
    """
    advantage = functional_call(model.advantage_mlp, params, (inputs,)).squeeze(1)
    return dueling_q(value, advantage.unsqueeze(0))[0]


def outcome(world: SimWorld, user: int, shown: np.ndarray, uniforms: np.ndarray) -> tuple[np.ndarray, float]:
    """(clicks ``[L]``, expected clicks Σ p) of a list shown to ``user``: click at position k iff ``u_k < p_k``."""
    p = world.click_probabilities(user, shown)
    return uniforms[:len(shown)] < p, float(p.sum())


@torch.no_grad()
def simulate(model: DRN, world: SimWorld, settings: OnlineSettings, run_id: str = "") -> list[dict[str, Any]]:
    """Play ``settings.rounds`` rounds of DBGD (module docstring); one dict per round (:data:`ONLINE_ROUNDS`)."""
    model.eval()
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    weights = world.config.request_weights()
    frozen = {name: p.detach().clone() for name, p in model.advantage_mlp.named_parameters()}
    current = {name: p.clone() for name, p in frozen.items()}
    frozen_norm = torch.sqrt(sum((w.double() ** 2).sum() for w in frozen.values()))
    recorded = dt.datetime.now(dt.UTC)
    day = drn_world.EPOCH + dt.timedelta(days=world.day)
    rows = []
    for t in range(settings.rounds):
        user = int(rng.choice(world.config.users, p=weights))
        items = drn_world.candidate_items(world.config, user, world.day, settings.candidates, settings.seed, t)
        uniforms = rng.random(settings.list_length)
        coins = rng.random(settings.list_length) < 0.5
        delta = perturbation(current, settings.alpha, generator)
        explore = {name: w + delta[name] for name, w in current.items()}

        state, action = model.encode(world.batch(user, items))
        value = model.value(state[:1])
        inputs = torch.cat([state, action], dim=1)

        list_current, list_explore, list_frozen = (rank(list_scores(model, value, inputs, params))
                                                   for params in (current, explore, frozen))
        shown, teams = team_draft_interleave(list_current, list_explore, settings.list_length, coins)
        k = len(shown)

        clicks_served, expected_served = outcome(world, user, items[shown], uniforms)
        clicks_dbgd, expected_dbgd = outcome(world, user, items[list_current[:k]], uniforms)
        clicks_frozen, expected_frozen = outcome(world, user, items[list_frozen[:k]], uniforms)
        _, expected_oracle = outcome(world, user, items[world.oracle_list(user, items, k)], uniforms)
        _, expected_random = outcome(world, user, items[:k], uniforms)
        team_current, team_explore = credit(teams, clicks_served.tolist())
        current, updated = dbgd_update(current, delta, team_current, team_explore, settings.eta)
        change = torch.sqrt(sum(((current[n] - frozen[n]).double() ** 2).sum() for n in frozen)) / frozen_norm
        rows.append({
            "run_id": run_id, "seed": settings.seed, "round": t, "user_idx": int(world.user_idx[user]),
            "candidates": len(items), "shown": k, "clicks_served": int(clicks_served.sum()),
            "clicks_dbgd": int(clicks_dbgd.sum()), "clicks_frozen": int(clicks_frozen.sum()),
            "expected_served": expected_served, "expected_dbgd": expected_dbgd, "expected_frozen": expected_frozen,
            "expected_oracle": expected_oracle, "expected_random": expected_random,
            "team_current_clicks": team_current, "team_explore_clicks": team_explore, "updated": updated,
            "lists_overlap": len(set(list_current[:k]) & set(list_explore[:k])),
            "weight_change": float(change), "alpha": settings.alpha, "eta": settings.eta,
            "world_seed": world.config.seed, "day": day, "recorded_at": recorded,
        })
    return rows


def summarise(rows: list[dict[str, Any]], window: int) -> list[dict[str, Any]]:
    """Click rates (clicks / shown) and expected click rates per window of rounds, then over all rounds."""
    def rates(part: list[dict[str, Any]], first: int | str, last: int | str) -> dict[str, Any]:
        shown = sum(r["shown"] for r in part) or 1
        return {"rounds": f"{first}-{last}", "ctr_served": sum(r["clicks_served"] for r in part) / shown,
                "ctr_dbgd": sum(r["clicks_dbgd"] for r in part) / shown,
                "ctr_frozen": sum(r["clicks_frozen"] for r in part) / shown,
                "expected_ctr_dbgd": sum(r["expected_dbgd"] for r in part) / shown,
                "expected_ctr_frozen": sum(r["expected_frozen"] for r in part) / shown,
                "expected_ctr_oracle": sum(r["expected_oracle"] for r in part) / shown,
                "expected_ctr_random": sum(r["expected_random"] for r in part) / shown,
                "explorer_wins": sum(r["updated"] for r in part),
                "lists_overlap": sum(r["lists_overlap"] for r in part) / shown,
                "weight_change": part[-1]["weight_change"] if part else 0.0}

    windows = [rates(rows[i:i + window], i, min(i + window, len(rows)) - 1) for i in range(0, len(rows), window)]
    return [*windows, {**rates(rows, 0, len(rows) - 1), "rounds": "all"}]


def write_rounds(lakehouse: Lakehouse, run_id: str, seed: int, rows: list[dict[str, Any]]) -> int | None:
    """Append the rounds once per (run, seed); None when that (run, seed) was written before."""
    table = pa.Table.from_pylist(rows, schema=ONLINE_ROUNDS)
    return lakehouse.write_arrow(table, ONLINE_ROUNDS_TABLE, mode="append", partition_by=["run_id"],
                                 txn=(f"{ONLINE_ROUNDS_TABLE}/{run_id}/seed{seed}", 1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = OnlineSettings()
    parser = argparse.ArgumentParser(prog="python -m training.drn_online", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True)
    parser.add_argument("--run-id", required=True, help="a succeeded drn run of this lakehouse")
    parser.add_argument("--world-seed", type=int, required=True,
                        help="the --seed jobs.generate_synthetic used (checked against raw/click_truth)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the simulation's seed")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="ΔW = α · U(−1, 1) ⊙ W")
    parser.add_argument("--eta", type=float, default=defaults.eta, help="W <- W + η ΔW when W̃ wins")
    parser.add_argument("--candidates", type=int, default=defaults.candidates,
                        help="distinct candidate items per request (the slate process drawn until there are as many)")
    parser.add_argument("--list-length", type=int, default=defaults.list_length, help="items shown per request")
    parser.add_argument("--window", type=int, default=defaults.window, help="rounds per summary line")
    parser.add_argument("--requests-per-user-day", type=float, default=2.0,
                        help="the generator's requests_per_user_day (user sampling weights)")
    parser.add_argument("--day", type=dt.date.fromisoformat, help="simulated day (default: after the log's last)")
    args = parser.parse_args(argv)
    for name in ("rounds", "candidates", "list_length", "window"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.list_length > args.candidates:
        parser.error("--list-length must not exceed --candidates")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lakehouse = Lakehouse(args.lakehouse)
    settings = OnlineSettings(rounds=args.rounds, seed=args.seed, alpha=args.alpha, eta=args.eta,
                              candidates=args.candidates, list_length=args.list_length, window=args.window)
    try:
        model, row, path = load_run(lakehouse, args.run_id)
        world = load_world(lakehouse, world_seed=args.world_seed, table_sizes=model.table_sizes,
                           vocab_version=row["vocab_version"], requests_per_user_day=args.requests_per_user_day,
                           day=args.day)
        error = verify_world(lakehouse, world.config)
    except OnlineInputError as err:
        print(f"drn_online: {err}", file=sys.stderr)
        return 1
    cfg = world.config
    print(f"[drn_online {args.run_id}] weights {path}; world seed {cfg.seed}: {cfg.users} users, {cfg.items} items, "
          f"{cfg.categories} categories, day {drn_world.EPOCH + dt.timedelta(days=world.day)}; click model "
          + ("not verified (no raw/click_truth)" if error is None else f"reproduces raw/click_truth (max |Δp| "
             f"{error:.1e})"), flush=True)
    rows = simulate(model, world, settings, run_id=args.run_id)
    summary = summarise(rows, settings.window)
    for line in summary:
        print(f"[drn_online {args.run_id}] rounds {line['rounds']}: CTR served {line['ctr_served']:.4f}, "
              f"DBGD {line['ctr_dbgd']:.4f} vs frozen {line['ctr_frozen']:.4f} (expected "
              f"{line['expected_ctr_dbgd']:.4f} vs {line['expected_ctr_frozen']:.4f}; random list "
              f"{line['expected_ctr_random']:.4f}, greedy oracle {line['expected_ctr_oracle']:.4f}), "
              f"explorer wins {line['explorer_wins']}, overlap of A and B {line['lists_overlap']:.2f}, "
              f"|W - W0| / |W0| {line['weight_change']:.4f}", flush=True)
    version = write_rounds(lakehouse, args.run_id, settings.seed, rows)
    where = (f"{ONLINE_ROUNDS_TABLE} version {version}" if version is not None
             else f"nothing: ({args.run_id}, seed {settings.seed}) is already in {ONLINE_ROUNDS_TABLE}")
    print(f"[drn_online {args.run_id}] wrote {len(rows)} rounds to {where}", flush=True)
    print(json.dumps({"run_id": args.run_id, "seed": settings.seed, "rounds": settings.rounds,
                      "alpha": settings.alpha, "eta": settings.eta, "world_seed": cfg.seed,
                      **{k: v for k, v in summary[-1].items() if k != "rounds"}}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
