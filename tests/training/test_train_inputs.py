"""Refusals of the training entry point that need no data and no process group."""

from __future__ import annotations

import pytest

from features.tableio import Lakehouse
from training.train import TrainingInputError, _prepare_run, parse_args


def test_a_lakehouse_uri_is_refused_since_checkpoints_need_a_shared_file_system_path():
    # DCP's file-system writer under a pathlib path: "s3a://bucket/lake" would become a local folder on each node
    args = parse_args(["--lakehouse", "s3a://bucket/lake", "--model", "din"])
    with pytest.raises(TrainingInputError, match="must be a file system path, not s3a://bucket/lake"):
        _prepare_run(args, Lakehouse(args.lakehouse))
