"""xpdl: deep learning written once on the Python Array API standard.

The same models, losses, layers and optimizers run on NumPy, CuPy, PyTorch, JAX and
array_api_strict; arrays you pass decide where the work runs.
"""

from . import datasets, explain, functional, losses, nn, optim, privacy, random
from .autodiff import (
    Tensor,
    check_grad,
    enable_grad,
    grad,
    is_grad_enabled,
    no_grad,
    value_and_grad,
)
from .autodiff.program import compile_step
from .estimators import LinearRegression, LogisticRegression, MLPClassifier, MLPRegressor
from .exceptions import DivergenceError, NotFittedError
from .io import load, save

__version__ = "0.1.0"

__all__ = [
    "Tensor",
    "grad",
    "value_and_grad",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "check_grad",
    "compile_step",
    "functional",
    "losses",
    "nn",
    "optim",
    "random",
    "LinearRegression",
    "LogisticRegression",
    "MLPClassifier",
    "MLPRegressor",
    "NotFittedError",
    "DivergenceError",
    "save",
    "load",
    "datasets",
    "privacy",
    "explain",
    "__version__",
]
