"""The model zoo: name -> model class (each with its ``config_class``); one model per file."""

from __future__ import annotations

from training.models.afm import AFM
from training.models.autorec import AutoRec
from training.models.base import BaseModel
from training.models.common import CTRModel, ModelConfig, ModelOutput
from training.models.deep_crossing import DeepCrossing
from training.models.deepfm import DeepFM
from training.models.dien import DIEN
from training.models.din import DIN
from training.models.drn import DRN
from training.models.dstn import DSTN
from training.models.fism import FISM
from training.models.nais import NAIS
from training.models.neuralcf import GMF, NCFMLP, NeuMF
from training.models.nfm import NFM
from training.models.pnn import PNN
from training.models.two_tower import TwoTower
from training.models.wide_deep import WideDeep

MODELS: dict[str, type[CTRModel]] = {cls.name: cls for cls in (BaseModel, DIN, DIEN, DSTN, AFM, FISM, NAIS,
                                                      GMF, NCFMLP, NeuMF, TwoTower, AutoRec,
                                                      DeepCrossing, PNN, WideDeep, DeepFM, NFM, DRN)}

__all__ = ["MODELS", "CTRModel", "ModelConfig", "ModelOutput", "BaseModel", "DIN", "DIEN", "DSTN", "AFM", "FISM",
           "NAIS", "GMF", "NCFMLP", "NeuMF", "TwoTower", "AutoRec", "DeepCrossing", "PNN", "WideDeep", "DeepFM", "NFM",
           "DRN"]
