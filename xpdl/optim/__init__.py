"""Optimizers: an Optax-style functional core and PyTorch-style objects over it."""

from . import schedules
from .alias import adagrad, adam, adamw, gd, rmsprop, sgd
from .base import GradientTransformation, apply_updates, chain, identity
from .transforms import (
    add_decayed_weights,
    clip_by_global_norm,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)
from .wrappers import GD, SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop

__all__ = [
    "sgd", "gd", "adam", "adamw", "rmsprop", "adagrad", "clip_by_global_norm", "chain",
    "identity", "apply_updates", "GradientTransformation", "add_decayed_weights", "trace",
    "scale_by_adam", "scale_by_rms", "scale_by_adagrad", "scale_by_learning_rate",
    "schedules", "Optimizer", "SGD", "GD", "Adam", "AdamW", "RMSprop", "Adagrad",
]
