"""FBGEMM's fused CPU embedding kernels: unpooled (sequence) lookups against bags of one row, per optimiser.

    .venv/bin/python -m benchmarks.embedding_kernels [--rows 100000 10000] [--ids 40000] [--dim 20]

The models look each table up with the batch's distinct ids (``training.models.common``): ``--ids`` distinct rows
of a ``--rows`` table, the shape of a DIN batch (1,024 rows x 50 history steps of a 100k-item catalogue gives
about 40k distinct items). The same rows are looked up either unpooled (``PoolingMode.NONE``: what TorchRec's
``EmbeddingCollection`` runs) or as one bag per row (``PoolingMode.SUM`` with every length 1: what the models'
``EmbeddingBagCollection``s run); the forward outputs are the same rows. One thread, as each of the trainer's 2
ranks on this machine. Prints the mean forward and backward (gradient + fused optimiser update) milliseconds: the
measurement behind the models' bag-based lookup (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import time

import torch


def measure(rows: int, ids: int, dim: int, pooling, optimizer, steps: int = 8, warmup: int = 2) -> tuple[float, float]:
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        EmbeddingLocation,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    tbe = SplitTableBatchedEmbeddingBagsCodegen([(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)],
                                                optimizer=optimizer, pooling_mode=pooling, learning_rate=0.01)
    generator = torch.Generator().manual_seed(0)
    forward, backward = [], []
    for _ in range(warmup + steps):
        indices = torch.randperm(rows, generator=generator)[: min(ids, rows)]
        offsets = torch.arange(indices.numel() + 1)  # one row per bag (unpooled: one row per "bag" as well)
        start = time.perf_counter()
        out = tbe(indices, offsets)
        middle = time.perf_counter()
        out.sum().backward()
        end = time.perf_counter()
        forward.append(middle - start)
        backward.append(end - middle)
    return 1000 * sum(forward[warmup:]) / steps, 1000 * sum(backward[warmup:]) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embedding_kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 10_000])
    parser.add_argument("--ids", type=int, default=40_000, help="distinct ids looked up per step")
    parser.add_argument("--dim", type=int, default=20, help="stored dimension (FBGEMM: a multiple of 4)")
    args = parser.parse_args(argv)
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import PoolingMode

    torch.set_num_threads(1)
    print(f"{'rows':>8} {'ids':>7} {'lookup':<20} {'optimizer':<22} {'forward ms':>10} {'backward ms':>11}")
    for rows in args.rows:
        for pooling, label in ((PoolingMode.NONE, "unpooled (EC)"), (PoolingMode.SUM, "bags of one (EBC)")):
            for optimizer in (EmbOptimType.EXACT_ADAGRAD, EmbOptimType.EXACT_ROWWISE_ADAGRAD, EmbOptimType.EXACT_SGD):
                fwd, bwd = measure(rows, args.ids, args.dim, pooling, optimizer)
                print(f"{rows:>8} {min(args.ids, rows):>7} {label:<20} {optimizer.name.lower():<22} {fwd:>10.1f} "
                      f"{bwd:>11.1f}", flush=True)
    print("\nreproduce: .venv/bin/python -m benchmarks.embedding_kernels " + " ".join(argv or []))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
