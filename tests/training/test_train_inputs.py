"""Refusals of the training entry point that need no data and no process group."""

from __future__ import annotations

import pytest

from features.tableio import Lakehouse
from training.config import ConfigError, load_config
from training.train import TrainingInputError, _prepare_run, check_device_settings, parse_args, table_keys, table_of_key


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


def test_init_from_finds_a_sources_tables_by_name_whatever_its_lookup_groups():
    keys = [
        "embeddings.shared.embedding_bags.cate.weight",  # a small table in the shared lookup
        "embeddings.item.embedding_bags.item.weight",  # a big table in a lookup of its own
        "_dmp_wrapped_module.embeddings.embeddings.user.weight",  # the EmbeddingCollection of older runs
        "attention.mlp.layers.0.weight",  # dense tensors are not tables
        "embeddings.item.embedding_bags.item.weight_momentum",
    ]
    assert table_keys(keys) == {"cate": keys[0], "item": keys[1], "user": keys[2]}
    assert table_of_key("model.embeddings.user.embedding_bags.user.weight") == "user"
    assert table_of_key("mlp.layers.0.weight") is None
