"""Reverse-mode automatic differentiation written on the Array API standard."""

from .functions import check_grad, grad, value_and_grad
from .tensor import Tensor, enable_grad, is_grad_enabled, no_grad

__all__ = ["Tensor", "grad", "value_and_grad", "no_grad", "enable_grad", "is_grad_enabled",
           "check_grad"]
