"""Layers in PyTorch's shape, written once on the Array API standard."""

from . import init, utils
from .activation import (
           Flatten,
           Identity,
           LeakyReLU,
           LogSoftmax,
           ReLU,
           Sigmoid,
           Softmax,
           Softplus,
           Tanh,
)
from .dropout import Dropout
from .linear import Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss
from .module import Module, clip_grad_norm_, parameter
from .sequential import ModuleList, Sequential

__all__ = ["Module", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "Softmax",
           "LogSoftmax", "Identity", "Flatten", "Dropout", "Sequential", "ModuleList",
           "parameter", "clip_grad_norm_", "init", "utils", "MSELoss", "L1Loss", "HuberLoss",
           "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss"]
