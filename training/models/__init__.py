"""The model zoo: name -> model class (each with its ``config_class``); one model per file."""

from __future__ import annotations

from training.models.base import BaseModel
from training.models.common import CTRModel, ModelConfig, ModelOutput
from training.models.din import DIN

MODELS: dict[str, type[CTRModel]] = {cls.name: cls for cls in (BaseModel, DIN)}

__all__ = ["MODELS", "CTRModel", "ModelConfig", "ModelOutput", "BaseModel", "DIN"]
