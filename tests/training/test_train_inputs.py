"""Refusals of the training entry point that need no data and no process group."""

from __future__ import annotations

import pytest

from features.tableio import Lakehouse
from training.config import ConfigError, load_config
from training.train import TrainingInputError, _prepare_run, check_device_settings, parse_args


def test_a_lakehouse_uri_is_refused_since_checkpoints_need_a_shared_file_system_path():
    # DCP's file-system writer under a pathlib path: "s3a://bucket/lake" would become a local folder on each node
    args = parse_args(["--lakehouse", "s3a://bucket/lake", "--model", "din"])
    with pytest.raises(TrainingInputError, match="must be a file system path, not s3a://bucket/lake"):
        _prepare_run(args, Lakehouse(args.lakehouse))


@pytest.mark.parametrize(("override", "message"), [
    ("optim.embedding_optimizer=adam", "optim.embedding_optimizer=adam needs a GPU"),
    ("train.sharding=row_wise", "train.sharding=row_wise needs a GPU"),
])
def test_settings_that_only_a_gpu_supports_are_refused_on_cpu_before_sharding(override, message):
    cfg = load_config("din", overrides=[override])
    with pytest.raises(ConfigError, match=message):
        check_device_settings(cfg, "cpu")
    check_device_settings(cfg, "cuda")  # accepted where TorchRec and FBGEMM support them
    check_device_settings(load_config("din"), "cpu")  # the defaults run on CPU
