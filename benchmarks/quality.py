"""Model quality on one synthetic lakehouse: every model of the zoo, several seeds, one table.

    python -m benchmarks.quality build  --lakehouse /tmp/quality/lh      # synthetic log -> feature tables
    python -m benchmarks.quality train  --lakehouse /tmp/quality/lh [--seeds 0 1 2] [--only dien din ...]
    python -m benchmarks.quality report --lakehouse /tmp/quality/lh      # markdown table from training/metrics

``build`` runs the product's own path: ``jobs.generate_synthetic`` (drifting multi-interest users, a
position-based click model with the DSTN context effect: ``features/synthetic.py``), then ``validate_events``,
``build_vocab`` and ``build_samples`` day by day and ``build_rank_eval`` for the last day. ``train`` launches each
variant with ``torchrun --standalone --nproc_per_node=2 -m training.train`` (2 gloo CPU ranks) under the run id
``q-<variant>-s<seed>``; a variant whose run already succeeded is skipped, so an interrupted sweep continues.
``report`` reads ``training/metrics`` back and prints mean ± standard deviation over seeds of the test AUC, GAUC
and logloss, and HR@10 / NDCG@10 on ``features/rank_eval``; and the best achievable test AUC (the generator's true
click probabilities of the test impressions, ``raw/click_truth``), so every figure has its ceiling beside it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from features.tableio import Lakehouse

#: the data: about 50k impressions a day, 8 days (6 train, 1 valid, 1 test)
GENERATOR = ["--users", "3000", "--items", "3000", "--categories", "60", "--days", "8", "--seed", "7"]
COMMON = ["--set", "train.epochs=2", "--set", "train.progress=false", "--set", "train.device=cpu",
          "--set", "train.checkpoint_every_steps=100000", "--set", "train.early_stopping_patience=1"]


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    overrides: tuple[str, ...] = ()
    note: str = ""
    rank: bool = False  # also HR@10 / NDCG@10 on features/rank_eval (ranking models; it scores 100 rows per user)


VARIANTS: tuple[Variant, ...] = (
    Variant("base", "base", note="Embedding&MLP, sum-pooled history"),
    Variant("din", "din"),
    Variant("gru_aigru", "dien", ("model.evolution=aigru", "model.aux_weight=0"), "BaseModel+GRU+AIGRU"),
    Variant("gru_agru", "dien", ("model.evolution=agru", "model.aux_weight=0"), "BaseModel+GRU+AGRU"),
    Variant("gru_augru", "dien", ("model.evolution=augru", "model.aux_weight=0"), "BaseModel+GRU+AUGRU"),
    Variant("dien", "dien", ("model.evolution=augru", "model.aux_weight=1.0"), "AUGRU + auxiliary loss"),
    Variant("dien_a0.1", "dien", ("model.evolution=augru", "model.aux_weight=0.1"), "AUGRU + 0.1 x auxiliary loss"),
    Variant("dstn_pooling", "dstn", ("model.attention=pooling",)),
    Variant("dstn_self", "dstn", ("model.attention=self",)),
    Variant("dstn_interactive", "dstn", ("model.attention=interactive",)),
    Variant("afm", "afm"),
    Variant("fism", "fism", rank=True),
    Variant("nais_prod_b0.5", "nais", ("model.attention=prod", "model.beta=0.5"), rank=True),
    Variant("nais_prod_b1", "nais", ("model.attention=prod", "model.beta=1.0"), rank=True),
    Variant("nais_concat_b0.5", "nais", ("model.attention=concat", "model.beta=0.5"), rank=True),
    Variant("nais_concat_b1", "nais", ("model.attention=concat", "model.beta=1.0"), rank=True),
    # the classic line (issue 6)
    Variant("deep_crossing", "deep_crossing"),
    Variant("pnn_inner", "pnn", ("model.product=inner",), "IPNN"),
    Variant("pnn_outer", "pnn", ("model.product=outer",), "OPNN"),
    Variant("wide_deep", "wide_deep"),
    Variant("deepfm", "deepfm"),
    Variant("nfm", "nfm"),
    Variant("gmf", "gmf", rank=True),
    Variant("ncf_mlp", "ncf_mlp", rank=True),
    Variant("neumf", "neumf", rank=True),
    Variant("two_tower", "two_tower", rank=True),
    Variant("autorec", "autorec", rank=True),
    Variant("drn", "drn", note="dueling Q, offline major update (gamma 0)", rank=True),
)


def build(lakehouse: str) -> int:
    from jobs import build_rank_eval, build_samples, build_vocab, generate_synthetic, validate_events

    started = time.perf_counter()
    argv = ["--lakehouse", lakehouse, *GENERATOR]
    status = generate_synthetic.main(argv)
    days = generate_synthetic.parse_args(argv)[1].dates()
    for day in days:
        for job in (validate_events, build_vocab, build_samples):
            status = status or job.main(["--lakehouse", lakehouse, "--ds", day.isoformat()])
    status = status or build_rank_eval.main(["--lakehouse", lakehouse, "--ds", days[-1].isoformat()])
    print(f"built {lakehouse} in {time.perf_counter() - started:,.0f} s (status {status})")
    return status


def run_id(variant: Variant, seed: int, prefix: str = "q") -> str:
    return f"{prefix}-{variant.name}-s{seed}"


def train(lakehouse: str, seeds: list[int], only: list[str] | None, prefix: str = "q",
          extra: list[str] | None = None) -> int:
    from training.models import MODELS

    lh = Lakehouse(lakehouse)
    done = set()
    if lh.exists("training/runs"):
        done = {r["run_id"] for r in lh.read_arrow("training/runs", columns=["run_id", "status"]).to_pylist()
                if r["status"] == "succeeded"}
    failures = 0
    for variant in VARIANTS:
        if only and variant.name not in only and variant.model not in only:
            continue
        if variant.model not in MODELS:
            print(f"skip {variant.name}: model {variant.model!r} is not registered")
            continue
        for seed in seeds:
            rid = run_id(variant, seed, prefix)
            if rid in done:
                continue
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       "-m", "training.train", "--lakehouse", lakehouse, "--model", variant.model, "--run-id", rid,
                       *COMMON, "--set", f"train.seed={seed}", "--set", f"train.rank_eval={str(variant.rank).lower()}"]
            for item in (*variant.overrides, *(extra or [])):
                command += ["--set", item]
            started = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            print(f"{rid}: exit {result.returncode} in {time.perf_counter() - started:,.0f} s", flush=True)
            if result.returncode != 0:
                failures += 1
                print(result.stderr[-3000:], file=sys.stderr)
    return 1 if failures else 0


def true_auc(lh: Lakehouse) -> tuple[float, float] | None:
    """AUC of the generator's own click probabilities on the test samples: (the ceiling any model can reach, the
    ceiling without the position factor).

    ``raw/click_truth`` holds each impression's ``p_click`` and ``position`` by its ``event_id``, which is the
    sample's ``sample_id``; the label is the sample's. p_click = θ(pos) · σ(...) with θ(pos) = pos^−0.7
    (``features/synthetic.py``); the models here do not read the position, so p_click / θ(pos), the part a
    position-blind model can know, gives the second figure.
    """
    import torch
    from torchmetrics.functional.classification import binary_auroc

    if not lh.exists("raw/click_truth"):
        return None
    split = lh.read_arrow("features/split").to_pylist()
    where = " OR ".join(f"ds = '{r['ds']}'" for r in split if r["split"] == "test")
    samples = lh.read_arrow("features/samples", where=where, columns=["sample_id", "label"]).to_pandas()
    truth = lh.read_arrow("raw/click_truth", where=where, columns=["event_id", "p_click", "position"]).to_pandas()
    joined = samples.merge(truth, left_on="sample_id", right_on="event_id", how="inner")
    if joined.empty:
        return None
    labels = torch.tensor(joined["label"].to_numpy())
    p_click = torch.tensor(joined["p_click"].to_numpy())
    position_free = p_click / torch.tensor(joined["position"].to_numpy(), dtype=torch.float64).pow(-0.7)
    return float(binary_auroc(p_click, labels)), float(binary_auroc(position_free, labels))


def report(lakehouse: str, prefix: str = "q") -> int:
    lh = Lakehouse(lakehouse)
    rows = lh.read_arrow("training/metrics").to_pylist()
    by_run: dict[str, dict[tuple[str, str, str], float]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], {})[(r["kind"], r["split"], r["metric"])] = r["value"]
    columns = [("final", "test", "auc"), ("final", "test", "gauc"), ("final", "test", "logloss"),
               ("final", "rank_eval", "hr_at_10"), ("final", "rank_eval", "ndcg_at_10"),
               ("epoch", "train", "samples_per_second")]
    print("| variant | model | seeds | test AUC | test GAUC | test logloss | HR@10 | NDCG@10 | train samples/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in VARIANTS:
        runs = [values for rid, values in sorted(by_run.items()) if rid.startswith(f"{prefix}-{variant.name}-s")
                and ("final", "test", "auc") in values]
        if not runs:
            continue
        cells = []
        for column in columns:
            values = [run[column] for run in runs if column in run]
            if not values:
                cells.append("–")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4f}" if column[2] != "samples_per_second" else f"{values[0]:,.0f}")
            elif column[2] == "samples_per_second":
                cells.append(f"{statistics.mean(values):,.0f}")
            else:
                cells.append(f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}")
        print(f"| {variant.name} | {variant.model} {variant.note} | {len(runs)} | " + " | ".join(cells) + " |")
    share = [values[("data", "train", "neg_fallback_share")] for values in by_run.values()
             if ("data", "train", "neg_fallback_share") in values]
    if share:
        print(f"\nDIEN auxiliary negatives drawn from the catalogue (not real exposures): {share[0]:.1%} of steps")
    ceiling = true_auc(lh)
    if ceiling is not None:
        print(f"best achievable test AUC (the generator's true click probabilities): {ceiling[0]:.4f}; "
              f"without the position factor, which no model here reads: {ceiling[1]:.4f}")
    print(f"\nreproduce: python -m benchmarks.quality build|train|report --lakehouse {lakehouse} --prefix {prefix}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("build", "train", "report"))
    parser.add_argument("--lakehouse", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", help="variant or model names (default: all)")
    parser.add_argument("--prefix", default="q", help="run ids are PREFIX-<variant>-s<seed> (one sweep per prefix)")
    parser.add_argument("--set", action="append", default=[], dest="extra",
                        help="an override for every run of the sweep, e.g. data.batch_size=256")
    args = parser.parse_args(argv)
    if args.step == "build":
        return build(args.lakehouse)
    if args.step == "train":
        return train(args.lakehouse, args.seeds, args.only, args.prefix, args.extra)
    return report(args.lakehouse, args.prefix)


if __name__ == "__main__":
    sys.exit(main())
