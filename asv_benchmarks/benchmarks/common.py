"""Backend-aware benchmark base: parameters over the installed backends, device sync."""

from __future__ import annotations

import importlib.util

import numpy as np

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # pragma: no cover - outside asv
    class SkipNotImplemented(Exception):
        pass


BACKENDS = ["numpy", "torch", "cupy", "jax", "array_api_strict"]


def get_backend(name):
    """(xp, device, sync) for a backend name, or raise SkipNotImplemented."""
    if name == "numpy":
        import array_api_compat.numpy as xp

        return xp, "cpu", lambda: None
    if importlib.util.find_spec(name) is None:
        raise SkipNotImplemented(f"{name} is not installed")
    if name == "torch":
        import array_api_compat.torch as xp
        import torch

        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        return xp, dev, sync
    if name == "cupy":
        import cupy

        try:
            if cupy.cuda.runtime.getDeviceCount() == 0:
                raise SkipNotImplemented("no GPU")
        except Exception as exc:
            raise SkipNotImplemented("no GPU") from exc
        import array_api_compat.cupy as xp

        return xp, cupy.cuda.Device(0), cupy.cuda.runtime.deviceSynchronize
    if name == "jax":
        import jax
        import jax.numpy as jnp

        dev = jax.devices()[0]
        return jnp, dev, lambda: jnp.zeros(()).block_until_ready()
    if name == "array_api_strict":
        import array_api_strict as xp

        return xp, xp.Device("CPU_DEVICE"), lambda: None
    raise SkipNotImplemented(name)


class XPBenchmark:
    """Base class: ``self.xp``, ``self.device``, ``self.asarray`` and ``self.sync``.

    Subclasses list ``params``/``param_names`` with the backend first and call
    ``self.setup_backend(backend)`` in ``setup``; every ``time_*`` ends with ``self.sync()``
    so GPU work is finished before the clock stops.
    """

    def setup_backend(self, backend):
        self.backend = backend
        self.xp, self.device, self.sync = get_backend(backend)

    def asarray(self, a, dtype="float32"):
        from xpdl._namespace import from_host

        return from_host(np.asarray(a), self.xp, device=self.device,
                         dtype=None if dtype is None else getattr(self.xp, dtype))
