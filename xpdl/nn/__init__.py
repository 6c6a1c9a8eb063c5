"""Layers in PyTorch's shape, written once on the Array API standard."""

from .activation import Identity, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .dropout import Dropout
from .linear import Linear
from .module import Module, clip_grad_norm_, parameter
from .sequential import ModuleList, Sequential

__all__ = ["Module", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
           "Identity", "Dropout", "Sequential", "ModuleList", "parameter", "clip_grad_norm_"]
