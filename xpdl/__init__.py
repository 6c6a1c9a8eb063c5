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
from .exceptions import DivergenceError
from .io import load, save

# The estimators (which build on scikit-learn's base classes where it is installed) and
# NotFittedError (scikit-learn's subclass) load on first use: ``import xpdl`` imports
# neither scikit-learn nor SciPy.
_LAZY = {"LinearRegression": "estimators", "LogisticRegression": "estimators",
         "MLPClassifier": "estimators", "MLPRegressor": "estimators",
         "NotFittedError": "exceptions", "export_onnx": "export"}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in ("estimators", "bench", "bench_dask", "cli", "io", "export"):
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

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
    "export_onnx",
    "datasets",
    "privacy",
    "explain",
    "__version__",
]
