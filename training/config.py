"""Typed training configuration: defaults per model in ``training/configs/<model>.yaml``, then ``--config FILE``,
then ``--set key=value`` overrides (dotted keys, YAML values), each layer deep-merged over the previous one.

Every section forbids unknown keys, so a misspelled setting is an error instead of being ignored. The model
section is validated by the chosen model's own config class (``training.models.MODELS[name].config_class``).
The resolved configuration is recorded in full with the run (``training/runs.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

CONFIG_DIR = Path(__file__).parent / "configs"


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(StrictConfig):
    table: str = "features/samples"
    version: int | None = Field(default=None, ge=0, description="Delta version of the samples table; latest if None")
    split_table: str = "features/split"
    batch_size: int = Field(default=1024, ge=1)
    eval_batch_size: int = Field(default=4096, ge=1)
    prefetch: int = Field(default=4, ge=1, description="batches the reader thread prepares ahead")


class OptimConfig(StrictConfig):
    # Embedding tables are updated by TorchRec's fused optimizer inside the backward pass.
    embedding_optimizer: Literal["adagrad", "adam", "sgd"] = "adagrad"
    embedding_lr: float = Field(default=0.05, gt=0)
    dense_optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    dense_lr: float = Field(default=0.001, gt=0)


class TrainLoopConfig(StrictConfig):
    epochs: int = Field(default=3, ge=1)
    seed: int = 0
    early_stopping_metric: Literal["auc", "gauc", "logloss"] = "auc"
    early_stopping_patience: int = Field(default=1, ge=0, description="epochs without improvement before stopping")
    checkpoint_every_steps: int | None = Field(default=500, ge=1, description="also checkpoint at every epoch end")
    keep_checkpoints: int = Field(default=2, ge=1, description="newest checkpoints kept, besides the best one")
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap (benchmarks, smoke runs)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch threads per rank on CPU; None: the node's cores divided by its ranks. Set it where ranks of different
    # nodes share cores (nodes tried on one machine), or to compare runs whose ranks are spread differently
    # across nodes bit for bit (the thread count changes the order of floating-point sums)
    cpu_threads: int | None = Field(default=None, ge=1)
    # "auto": TorchRec's planner chooses per table (any type but data-parallel, which would take the tables out of
    # the fused embedding optimizer); otherwise every table gets this sharding type (row_wise: GPU only)
    sharding: Literal["auto", "table_wise", "row_wise", "column_wise"] = "auto"
    progress: bool = True
    # leave-one-out ranking (HR@K, NDCG@K) on features/rank_eval after training, when that table exists
    rank_eval: bool = True
    rank_k: int = Field(default=10, ge=1)
    # start from the embedding tables of other runs' best checkpoints (same table names and shapes), e.g. NAIS
    # from FISM, NeuMF from GMF and NCF-MLP (which also takes their dense layers); runs of the same lakehouse
    init_from: list[str] = Field(default_factory=list)

    @field_validator("init_from", mode="before")
    @classmethod
    def _one_run_is_a_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value


class RunConfig(StrictConfig):
    model_name: str
    model: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainLoopConfig = TrainLoopConfig()


class ConfigError(ValueError):
    """A configuration file or override is unusable; the message says which and why."""


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings")
    return loaded


def parse_override(item: str) -> dict[str, Any]:
    """``"train.epochs=2"`` -> ``{"train": {"epochs": 2}}`` (the value is parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return nested


def load_config(model_name: str, config_file: Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults of ``model_name`` <- ``config_file`` <- ``overrides``, validated (model section included)."""
    from pydantic import ValidationError

    from training.models import MODELS

    if model_name not in MODELS:
        raise ConfigError(f"unknown model {model_name!r}; known: {sorted(MODELS)}")
    settings = _read_mapping(CONFIG_DIR / f"{model_name}.yaml")
    if config_file is not None:
        settings = _deep_merge(settings, _read_mapping(Path(config_file)))
    for item in overrides or []:
        settings = _deep_merge(settings, parse_override(item))
    settings["model_name"] = model_name
    try:
        config = RunConfig.model_validate(settings)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from err
    try:
        MODELS[model_name].config_class.model_validate(config.model)
    except ValidationError as err:
        raise ConfigError(_describe(err, prefix="model.")) from err
    return config


def _describe(err: Any, prefix: str = "") -> str:
    return "invalid configuration: " + "; ".join(
        f"{prefix}{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
