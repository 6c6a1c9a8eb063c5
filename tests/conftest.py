"""One backend fixture for the whole suite.

Backends: numpy; array_api_strict on ``device1`` (a non-default device, float64) and on
``no_float64`` (float32 only); torch CPU; cupy (skipped without a GPU); jax (skipped when
not installed). Every test that touches arrays takes ``backend``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

# JAX takes 75% of a GPU's memory when it starts; with CuPy and torch beside it, and one
# JAX per pytest-xdist worker, the tests then fail for want of memory (seen on an H200:
# 74 failures, every one an out-of-memory error). Set before anything imports JAX.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np
import pytest

from xpdl import _namespace as ns

try:  # property tests: the same examples on every run, so CI cannot flake on a new draw
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("xpdl", derandomize=True, deadline=None)
    _hsettings.load_profile("xpdl")
except ImportError:  # pragma: no cover
    pass


@dataclass
class Backend:
    name: str
    xp: object
    device: object

    @property
    def kind(self) -> str:
        """The namespace's name without the device: ``torch`` for ``torch:cuda``."""
        return self.name.split(":")[0]

    @property
    def has_float64(self) -> bool:
        return ns.supports_float64(self.xp, self.device)

    @property
    def float_dtype(self):
        """float64 where the device has it, else float32."""
        return self.xp.float64 if self.has_float64 else self.xp.float32

    @property
    def is64(self) -> bool:
        return self.has_float64

    @property
    def rtol(self) -> float:
        """Tolerance for comparing with a float64 reference at this backend's precision."""
        return 1e-9 if self.has_float64 else 2e-4

    def asarray(self, a, dtype=None):
        a = np.asarray(a)
        if dtype is None and a.dtype.kind == "f":
            dtype = self.float_dtype
        return ns.from_host(a, self.xp, device=self.device, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        if hasattr(x, "data") and not ns.is_array(x):
            x = x.data
        return np.asarray(ns.to_host(x))

    def __repr__(self):
        return self.name


def _gpu_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _make(name):
    if name == "numpy":
        import array_api_compat.numpy as xp

        return Backend(name, xp, "cpu")
    if name.startswith("array_api_strict"):
        strict = pytest.importorskip("array_api_strict")
        # "array_api_strict:device1@2023.12": the older standard (the flags are global:
        # every test sets them afresh when it makes its backend)
        rest, _, version = name.partition("@")
        strict.set_array_api_strict_flags(api_version=version or "2024.12")
        dev = rest.split(":")[1]
        return Backend(name, strict, strict.Device(dev))
    if name in ("torch", "torch:cuda"):
        pytest.importorskip("torch")
        import array_api_compat.torch as xp
        import torch

        if name == "torch:cuda" and not torch.cuda.is_available():
            pytest.skip("torch: no CUDA device here")
        dev = torch.device("cuda", torch.cuda.current_device()) if name == "torch:cuda" \
            else torch.device("cpu")
        return Backend(name, xp, dev)
    if name == "cupy":
        if not _gpu_available():
            pytest.skip("cupy: no GPU here")
        import array_api_compat.cupy as xp
        import cupy

        return Backend(name, xp, cupy.cuda.Device(0))
    if name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return Backend(name, jnp, jax.devices("cpu")[0])
    raise ValueError(name)


BACKENDS = ["numpy", "array_api_strict:device1", "array_api_strict:no_float64",
            "array_api_strict:device1@2023.12", "torch", "torch:cuda", "cupy", "jax"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return _make(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_terminal_summary(terminalreporter):
    """Skips summed up by reason (a line each) instead of one line per skipped test."""
    from collections import Counter

    reasons = Counter()
    for rep in terminalreporter.stats.get("skipped", []):
        longrepr = rep.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.replace("Skipped: ", "")] += 1
    if reasons:
        terminalreporter.write_sep("-", f"{sum(reasons.values())} skipped, by reason")
        for reason, n in reasons.most_common():
            terminalreporter.write_line(f"{n:6d}  {reason}")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    """In a pytest-xdist worker, collect once and freeze what survives before the worker
    reports back. pytest's own cleanup then runs five full collections: 2.0-2.3 s after
    tests/test_program.py alone (JAX, torch loaded); past 5 s execnet sends a SIGINT, and
    an interrupt landing in a collector callback (JAX's, hypothesis') was printed as an
    "Exception ignored ... KeyboardInterrupt" warning after the last test (two of three CI
    runs). Frozen objects are not scanned: the worker exited 0.0-0.7 s after this hook."""
    if hasattr(session.config, "workerinput"):
        import gc

        gc.collect()
        gc.freeze()
