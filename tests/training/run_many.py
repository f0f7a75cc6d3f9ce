"""Run several training runs one after another in ONE torchrun launch (the model-zoo end-to-end test).

    torchrun --standalone --nproc_per_node=2 tests/training/run_many.py RUNS.json

``RUNS.json`` is a list of argument lists for ``training.train.main``. Each run is a full run of the real entry
point (its records and checkpoints; the process group is shared); sharing the launch saves the interpreter, torch and
TorchRec start-up per model. A run that fails stops the whole launch at once (``os._exit``), so the other rank
never waits in a collective for a partner that has given up.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import torch.distributed as dist

from training.train import init_process_group, main

if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        runs = json.load(handle)
    init_process_group()  # one group for every run: torchrun's store cannot host a second one
    for argv in runs:
        try:
            status = main(argv)
        except BaseException:  # noqa: BLE001 - reported, then the launch stops
            traceback.print_exc()
            status = 1
        if status != 0:
            print(f"run_many: run {argv} failed with status {status}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(1)
    dist.destroy_process_group()
    print(f"run_many: {len(runs)} runs succeeded", flush=True)
