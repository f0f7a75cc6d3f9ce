"""Layers shared by the models: jagged helpers, Dice, the MLP tower and DIN's activation unit."""

from training.layers.attention import ActivationUnit, din_pooling, weighted_sum
from training.layers.dice import Dice
from training.layers.jagged import from_padded, offsets, repeat_rows, segment_ids, segment_sum, to_padded
from training.layers.mlp import ACTIVATIONS, MLP, activation_layer

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "ActivationUnit",
    "Dice",
    "activation_layer",
    "din_pooling",
    "from_padded",
    "offsets",
    "repeat_rows",
    "segment_ids",
    "segment_sum",
    "to_padded",
    "weighted_sum",
]
