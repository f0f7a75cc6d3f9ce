"""DRN's minor update: the generator's world in numpy, team-draft interleaving, one DBGD round by hand, and the
simulation end to end on a tiny model and a tiny generated-style lakehouse (no torchrun, no Spark)."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from features.tableio import Lakehouse
from training import drn_world
from training.config import RunConfig
from training.drn_online import (
    ONLINE_ROUNDS_TABLE,
    OnlineInputError,
    credit,
    dbgd_update,
    load_run,
    load_world,
    main,
    perturbation,
    team_draft_interleave,
    verify_world,
)
from training.models.drn import DRN, DRNConfig
from training.records import RunRecorder, config_json

# ---------------------------------------------------------------------------------------------- the world in numpy


def test_xxhash64_matches_the_reference_vectors():
    # XXH64 test vectors (xxHash's own sanity values; the last one from python-xxhash's README), seed 0
    assert drn_world.xxhash64_bytes(b"", 0) == 0xEF46DB3751D8E999
    assert drn_world.xxhash64_bytes(b"a", 0) == 0xD24EC4F1A98C6E5B
    assert drn_world.xxhash64_bytes(b"abc", 0) == 0x44BC2CF5AD770999
    assert drn_world.xxhash64_bytes(b"Nobody inspects the spammish repetition", 0) == 0xFBCEA83C8A378BF1
    # a long hashes as its 8 little-endian bytes (two's complement for negatives), any 64-bit seed
    values = np.array([0, 1, -1, 123456789, -(1 << 63)])
    for seed in (0, 42, (1 << 64) - 5):
        got = drn_world.xxhash64_longs(values, seed)
        for value, h in zip(values.tolist(), got.tolist(), strict=True):
            assert h == drn_world.xxhash64_bytes((value & ((1 << 64) - 1)).to_bytes(8, "little"), seed)


def test_click_probability_by_hand():
    # pos 2, interest 0.5, quality 0, n_same 1: logit −2 + 4 · 0.5 + 0 − 0.5 · 1 = −0.5; θ(2) = 2^−0.7
    p = drn_world.click_probability(np.array([2]), np.array([0.5]), np.array([0.0]), np.array([1]))
    assert p[0] == pytest.approx(2 ** -0.7 / (1 + math.exp(0.5)), rel=1e-12)
    # pos 1, interest 1, quality −0.3, n_same 0: logit 1.7, θ = 1
    p = drn_world.click_probability(np.array([1]), np.array([1.0]), np.array([-0.3]), np.array([0]))
    assert p[0] == pytest.approx(1 / (1 + math.exp(-1.7)), rel=1e-12)


def test_n_same_and_interest_by_hand():
    # C = 3: items 0, 3, 6 are category 0, item 1 category 1 -> other items of the same category: 2, 2, 2, 0
    assert drn_world.n_same(np.array([0, 3, 6, 1]), 3).tolist() == [2, 2, 2, 0]
    cats, weights = drn_world.interest_slots(7, 60, np.array([17]), 20458)
    assert weights.sum() == pytest.approx(1.0) and cats.shape == (1, drn_world.INTEREST_SLOTS)
    # interest of an item = the weights of the slots holding its category
    items = np.array([int(cats[0, 0]), int(cats[0, 0]) + 60, (int(cats[0, 0]) + 1) % 60])
    expected = [weights[0][cats[0] == drn_world.item_category(j, 60)].sum() for j in items]
    np.testing.assert_allclose(drn_world.interest(7, 60, 17, items, 20458), expected)


# Three requests of 2026-01-05 (absolute day 20458) from raw/click_truth written by features.synthetic (Spark)
# with generate_synthetic --users 3000 --items 3000 --categories 60 --days 8 --seed 7: (user, slot, items by
# position, the generator's p_click). The numpy evaluator must reproduce the independent Spark implementation.
SPARK_REQUESTS = [
    (17, 4, [2260, 2750, 1773, 1480, 33, 40, 367, 2246],
     [0.2771090182055236, 0.1093104974040891, 0.06535352220920614, 0.26430035055865075, 0.07768808988080625,
      0.11201800144360691, 0.049186554775693926, 0.03235099116735193]),
    (1234, 7, [2480, 2266, 817, 739, 1606, 1228, 2626, 54],
     [0.6571101186155557, 0.04802792768598688, 0.05447535068283432, 0.022626415519340144, 0.03785727495154033,
      0.027890129488005788, 0.06576859405732453, 0.023652690317717943]),
    (2999, 5, [650, 841, 1021, 601, 2828, 831, 1138, 2761],
     [0.09686528425226963, 0.37150623174874303, 0.25993180377320235, 0.2462892124905531, 0.03542111141770655,
      0.06768391236346794, 0.03865334276389571, 0.08964092379739765]),
]
SPARK_WORLD = drn_world.WorldConfig(seed=7, users=3000, items=3000, categories=60)
SPARK_DAY = (dt.date(2026, 1, 5) - drn_world.EPOCH).days


@pytest.mark.parametrize("user,slot,items,p_click", SPARK_REQUESTS)
def test_numpy_world_reproduces_the_spark_generator(user, slot, items, p_click):
    request = drn_world.ClickTruthRequest(user=user, day=SPARK_DAY, items=np.array(items),
                                          positions=np.arange(1, 9), p_click=np.array(p_click))
    assert drn_world.click_truth_error(SPARK_WORLD, request) < 1e-12
    wrong = drn_world.WorldConfig(seed=8, users=3000, items=3000, categories=60)
    assert drn_world.click_truth_error(wrong, request) > 1e-3
    # the slate process keyed by the world's own seed and the request's slot gives the logged slate itself
    slate = drn_world.slate_items(SPARK_WORLD, user, SPARK_DAY, 8, draw_seed=7, request=slot)
    assert slate.tolist() == items


def test_verify_world_reads_click_truth_and_refuses_a_wrong_seed(tmp_path):
    lakehouse = Lakehouse(tmp_path / "lh")
    rows = [{"event_id": f"r20260105-u{user}-{slot}-{pos}-imp", "request_id": f"r20260105-u{user}-{slot}",
             "user_id": f"u{user}", "item_id": f"i{item}", "position": pos, "p_click": p,
             "ds": dt.date(2026, 1, 5)}
            for user, slot, items, ps in SPARK_REQUESTS
            for pos, (item, p) in enumerate(zip(items, ps, strict=True), start=1)]
    lakehouse.write_arrow(pa.Table.from_pylist(rows), "raw/click_truth", partition_by=["ds"])
    assert verify_world(lakehouse, SPARK_WORLD) < 1e-12
    with pytest.raises(OnlineInputError, match="--world-seed 8"):
        verify_world(lakehouse, drn_world.WorldConfig(seed=8, users=3000, items=3000, categories=60))


# ---------------------------------------------------------------------------------------------- DBGD by hand
def test_team_draft_interleave_by_hand():
    # tie, coin True -> A picks 1; B (fewer picks) picks 2; tie, coin False -> B picks 4; A picks 3
    assert team_draft_interleave([1, 2, 3, 4], [2, 1, 4, 3], 4, [True, False]) == ([1, 2, 4, 3], [0, 1, 1, 0])
    # coin False first: B picks 2; A picks 1; tie, coin True: A picks 3; B picks 4
    assert team_draft_interleave([1, 2, 3, 4], [2, 1, 4, 3], 4, [False, True]) == ([2, 1, 3, 4], [1, 0, 0, 1])
    # identical rankings still alternate teams; a shorter length stops early
    assert team_draft_interleave([5, 6, 7], [5, 6, 7], 2, [True]) == ([5, 6], [0, 1])
    # with a fixed seed the coins are the generator's draws: rng(3).random(2) = [0.086, 0.237] -> [True, True]:
    # A picks 1, B picks 2, tie -> A picks 3, B picks 4
    coins = np.random.default_rng(3).random(2) < 0.5
    assert coins.tolist() == [True, True]
    assert team_draft_interleave([1, 2, 3, 4], [2, 1, 4, 3], 4, coins) == ([1, 2, 3, 4], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="coins"):
        team_draft_interleave([1, 2], [2, 1], 2, [])


def test_one_dbgd_round_accepts_only_when_the_explorer_wins_more_clicks():
    params = {"w": torch.tensor([1.0, -2.0, 4.0]), "b": torch.tensor([0.5])}
    generator = torch.Generator().manual_seed(11)
    delta = perturbation(params, 0.1, generator)
    # ΔW = α · (2u − 1) ⊙ W with u the generator's uniforms in parameter order (w's three first)
    u_w = torch.rand(3, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(delta["w"], 0.1 * (2 * u_w - 1) * params["w"])
    assert (delta["w"].abs() <= 0.1 * params["w"].abs()).all()
    # A = current W's ranking, B = W̃'s; coins [True, True]: A 0, B 3, A 1, B 2 -> teams [A, B, A, B]
    shown, teams = team_draft_interleave([0, 1, 2, 3], [3, 2, 1, 0], 4, [True, True])
    assert (shown, teams) == ([0, 3, 1, 2], [0, 1, 0, 1])
    # clicks on positions 2 and 4 (both B's items): 0 vs 2 -> W <- W + η ΔW, exactly
    assert credit(teams, [False, True, False, True]) == (0, 2)
    updated, accepted = dbgd_update(params, delta, 0, 2, eta=0.5)
    assert accepted
    for name in params:
        torch.testing.assert_close(updated[name], params[name] + 0.5 * delta[name])
    # clicks on positions 1 and 2: one each -> a tie keeps W; A winning keeps W
    assert credit(teams, [True, True, False, False]) == (1, 1)
    for a, b in ((1, 1), (2, 1)):
        kept, accepted = dbgd_update(params, delta, a, b, eta=0.5)
        assert not accepted and kept is params


# ---------------------------------------------------------------------------------------------- end to end
WORLD_SEED, USERS, ITEMS, CATEGORIES = 3, 6, 12, 3
RUN = "drn-tiny"


def tiny_lakehouse(root: Path) -> tuple[Lakehouse, DRN]:
    """A generated-style lakehouse (raw/users, raw/items, features/vocab, features/user_state), a tiny DRN saved
    as a DCP checkpoint, and its succeeded run in training/runs."""
    lakehouse = Lakehouse(root)
    day = dt.date(2026, 1, 4)
    users = pa.table({"user_id": [f"u{n}" for n in range(USERS)], "gender": ["F", "M"] * 3,
                      "age_bucket": ["18-24"] * USERS, "city": [f"city{n % 2}" for n in range(USERS)]})
    items = pa.table({"item_id": [f"i{j}" for j in range(ITEMS)], "category_id": [f"c{j % CATEGORIES}"
                                                                                  for j in range(ITEMS)],
                      "shop_id": [f"s{j % 2}" for j in range(ITEMS)], "brand_id": ["b0"] * ITEMS})
    lakehouse.write_arrow(users, "raw/users")
    lakehouse.write_arrow(items, "raw/items")
    vocab = {"user": [f"u{n}" for n in range(USERS - 1)],  # u5 never reached the vocabulary: unknown (1)
             "item": [f"i{j}" for j in range(ITEMS)], "category": [f"c{c}" for c in range(CATEGORIES)],
             "shop": ["s0", "s1"], "brand": ["b0"], "gender": ["F", "M"], "age_bucket": ["18-24"],
             "city": ["city0", "city1"]}
    rows = [{"field": field, "raw_id": raw, "idx": 2 + k, "count": 1, "first_seen_ds": day, "ds": day}
            for field, raws in vocab.items() for k, raw in enumerate(raws)]
    lakehouse.write_arrow(pa.Table.from_pylist(rows), "features/vocab", partition_by=["ds"])
    click = pa.struct([("event_time", pa.timestamp("us", tz="UTC")), ("event_id", pa.string()),
                       ("item_id", pa.string()), ("neg_item_id", pa.string()), ("neg_is_sampled", pa.int32())])
    when = dt.datetime(2026, 1, 4, 12, tzinfo=dt.UTC)
    state = pa.table({
        "user_id": ["u0", "u1", "u0"],
        "clicks": pa.array([[{"event_time": when, "event_id": "e1", "item_id": "i4", "neg_item_id": "i1",
                              "neg_is_sampled": 0},
                             {"event_time": when, "event_id": "e2", "item_id": "i7", "neg_item_id": "i1",
                              "neg_is_sampled": 0}],
                            [{"event_time": when, "event_id": "e3", "item_id": "i99", "neg_item_id": "i1",
                              "neg_is_sampled": 0}],
                            [{"event_time": when, "event_id": "e0", "item_id": "i2", "neg_item_id": "i1",
                              "neg_is_sampled": 0}]], pa.list_(click)),
        "ds": [day, day, day - dt.timedelta(days=1)],
    })
    lakehouse.write_arrow(state, "features/user_state", partition_by=["ds"])
    sizes = {"user": 2 + USERS - 1, "item": 2 + ITEMS, "cate": 2 + CATEGORIES, "shop": 4, "brand": 3, "gender": 4,
             "age_bucket": 3, "city": 4}
    model_config = {"embedding_dim": 4, "value_hidden": [3], "advantage_hidden": [5]}
    torch.manual_seed(0)
    model = DRN(DRNConfig.model_validate(model_config), sizes, embedding_device=torch.device("cpu"))
    with torch.no_grad():
        for table in model.table_modules().values():
            table.weight.normal_()
    import torch.distributed.checkpoint as dcp

    checkpoint = Path(lakehouse.path("training/checkpoints")) / RUN / "step-000000003"
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(checkpoint))
    RunRecorder(lakehouse, RUN).upsert(
        model="drn", status="succeeded", config=config_json(RunConfig(model_name="drn", model=model_config)),
        splits=json.dumps({"table_sizes": sizes}), vocab_version=lakehouse.version("features/vocab"), best_step=3)
    return lakehouse, model


def test_load_run_and_world(tmp_path):
    lakehouse, saved = tiny_lakehouse(tmp_path / "lh")
    model, row, path = load_run(lakehouse, RUN)
    assert path.name == "step-000000003" and row["model"] == "drn"
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    world = load_world(lakehouse, world_seed=WORLD_SEED, table_sizes=model.table_sizes, vocab_version=None)
    assert (world.config.users, world.config.items, world.config.categories) == (USERS, ITEMS, CATEGORIES)
    assert world.day == (dt.date(2026, 1, 5) - drn_world.EPOCH).days  # the day after the last state
    assert world.user_idx.tolist() == [2, 3, 4, 5, 6, 1]  # u5 unknown
    assert world.gender_idx.tolist() == [2, 3] * 3 and world.city_idx.tolist() == [2, 3] * 3
    # the latest state (2026-01-04): u0 clicked i4, i7 (categories 1, 1); u1 clicked i99 (not an item: unknown)
    assert world.hist_item[0].tolist() == [6, 9] and world.hist_cate[0].tolist() == [3, 3]
    assert world.hist_item[1].tolist() == [1] and world.hist_cate[1].tolist() == [1]
    assert world.hist_item[2].tolist() == []
    assert world.item_idx[:4].tolist() == [2, 3, 4, 5] and world.cate_idx[:4].tolist() == [2, 3, 4, 2]
    batch = world.batch(0, np.array([3, 5]))
    assert batch.keys() == list(model.features)
    assert batch["hist_item"].lengths().tolist() == [2, 2] and batch["item"].values().tolist() == [5, 7]
    RunRecorder(lakehouse, "other").upsert(model="din", status="succeeded")
    with pytest.raises(OnlineInputError, match="not 'drn'"):
        load_run(lakehouse, "other")


def test_simulation_end_to_end_writes_one_row_per_round_once(tmp_path, capsys):
    lakehouse, _ = tiny_lakehouse(tmp_path / "lh")
    argv = ["--lakehouse", lakehouse.root, "--run-id", RUN, "--world-seed", str(WORLD_SEED), "--rounds", "12",
            "--seed", "5", "--candidates", "8", "--list-length", "4", "--window", "6", "--alpha", "0.5",
            "--eta", "1.0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "not verified (no raw/click_truth)" in out and "rounds 0-5" in out and "rounds 6-11" in out
    summary = json.loads(out.strip().splitlines()[-1])
    rows = sorted(lakehouse.read_arrow(ONLINE_ROUNDS_TABLE).to_pylist(), key=lambda r: r["round"])
    assert [r["round"] for r in rows] == list(range(12))
    assert {(r["run_id"], r["seed"], r["world_seed"], r["day"]) for r in rows} == {(RUN, 5, 3, dt.date(2026, 1, 5))}
    for r in rows:
        assert r["shown"] == 4 and r["candidates"] == 8
        assert r["team_current_clicks"] + r["team_explore_clicks"] == r["clicks_served"] <= 4
        assert r["updated"] == (r["team_explore_clicks"] > r["team_current_clicks"])
        assert 0 <= r["lists_overlap"] <= 4
        for name in ("served", "dbgd", "frozen", "oracle", "random"):
            assert 0 < r[f"expected_{name}"] < 4
    # the greedy list built on the click model itself is a ceiling of sorts: above the random list on average
    assert sum(r["expected_oracle"] for r in rows) > sum(r["expected_random"] for r in rows)
    # before the first update the DBGD model is the frozen one: same list, same clicks; after it, W has moved
    first = next((r["round"] for r in rows if r["updated"]), len(rows))
    for r in rows[:first + 1]:
        assert (r["clicks_dbgd"], r["expected_dbgd"]) == (r["clicks_frozen"], r["expected_frozen"])
    assert all(r["weight_change"] == 0.0 for r in rows[:first])
    assert all(r["weight_change"] > 0.0 for r in rows[first:])
    assert summary["ctr_frozen"] == sum(r["clicks_frozen"] for r in rows) / 48
    assert summary["explorer_wins"] == sum(r["updated"] for r in rows)
    # the same (run, seed) again: nothing appended; another seed: its own rows
    version = lakehouse.version(ONLINE_ROUNDS_TABLE)
    assert main(argv) == 0 and lakehouse.version(ONLINE_ROUNDS_TABLE) == version
    assert "already in training/online_rounds" in capsys.readouterr().out
    assert main([*argv[:9], "1", *argv[10:]]) == 0
    assert lakehouse.count(ONLINE_ROUNDS_TABLE) == 24
    # same seed, same rounds: the simulation is deterministic
    again = Lakehouse(tmp_path / "again")
    tiny_lakehouse(again.root)
    assert main(["--lakehouse", again.root, *argv[2:]]) == 0
    keep = ("user_idx", "candidates", "clicks_served", "clicks_dbgd", "clicks_frozen", "updated", "expected_dbgd")
    replay = sorted(again.read_arrow(ONLINE_ROUNDS_TABLE).to_pylist(), key=lambda r: r["round"])
    assert [[r[k] for k in keep] for r in replay] == [[r[k] for k in keep] for r in rows]


def test_a_lakehouse_without_the_generators_tables_is_a_clear_error(tmp_path, capsys):
    lakehouse, _ = tiny_lakehouse(tmp_path / "lh")
    Path(lakehouse.path("raw/users"), "_delta_log").rename(Path(lakehouse.path("raw/users"), "moved"))
    assert main(["--lakehouse", lakehouse.root, "--run-id", RUN, "--world-seed", "3"]) == 1
    assert "raw/users" in capsys.readouterr().err


def test_candidate_items_continue_the_slate_process_until_enough_distinct_items():
    world = drn_world.WorldConfig(seed=3, users=6, items=12, categories=3)
    items = drn_world.candidate_items(world, 2, 20458, 10, draw_seed=5, request=0)
    assert len(items) == len(set(items.tolist())) == 10 and ((0 <= items) & (items < 12)).all()
    # the first draws' distinct items come first, in draw order
    first = drn_world.slate_items(world, 2, 20458, 10, draw_seed=5, request=0)
    assert items[:len(first)].tolist() == first.tolist()
    assert len(drn_world.candidate_items(world, 2, 20458, 30, draw_seed=5, request=0)) == 12  # the whole catalogue
