"""Whole-model work: an MLP epoch at three sizes, LinearRegression, LogisticRegression."""

from __future__ import annotations

import warnings

import numpy as np

from .common import BACKENDS, SkipNotImplemented, XPBenchmark


class MLPEpoch(XPBenchmark):
    params = (BACKENDS, ["small", "medium", "large"])
    param_names = ["backend", "size"]
    timeout = 300

    def setup(self, backend, size):
        from xpdl.bench import SIZES, _XpdlRunner
        from xpdl.datasets import make_classification

        if backend == "array_api_strict" and size != "small":
            raise SkipNotImplemented("array_api_strict is the oracle, not a fast backend")
        self.setup_backend(backend)
        sizes, batch = SIZES[size]
        X, y = make_classification(batch * 20, sizes[0], n_classes=sizes[-1], random_state=0)
        self.runner = _XpdlRunner(backend, sizes, batch, X, y)

    def time_epoch(self, backend, size):
        self.runner.epoch()

    def time_epoch_tape(self, backend, size):
        """The same epoch through the autodiff tape instead of the fused MLP step."""
        self.runner.m._compiled_training = False
        try:
            self.runner.epoch()
        finally:
            self.runner.m._compiled_training = True

    def time_matmul_bound(self, backend, size):
        self.runner.bound()

    def peakmem_epoch(self, backend, size):
        self.runner.epoch()

    def track_epoch_peak_allocated_bytes(self, backend, size):
        """The most bytes NumPy holds at once during an epoch beyond what it held before
        (tracemalloc; NumPy only): the buffers a replay keeps from step to step are
        allocated before, so they lower it."""
        if backend != "numpy":
            raise SkipNotImplemented("tracemalloc follows NumPy's allocations only")
        import tracemalloc

        self.runner.epoch()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            self.runner.epoch()
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()

    track_epoch_peak_allocated_bytes.unit = "bytes"


class LinearModels(XPBenchmark):
    """float64, 200,000 x 100 (issue 6's setting)."""

    params = (BACKENDS, ["linear_lstsq", "logistic_lbfgs"])
    param_names = ["backend", "model"]
    timeout = 300

    def setup(self, backend, model):
        if backend == "array_api_strict":
            raise SkipNotImplemented("oracle only")
        self.setup_backend(backend)
        g = np.random.default_rng(0)
        X = g.normal(size=(200_000, 100))
        w = g.normal(size=100)
        if model == "linear_lstsq":
            y = X @ w + 0.1 * g.normal(size=200_000)
        else:
            y = (X @ w + g.normal(size=200_000) > 0).astype(np.int64)
        self.X = self.asarray(X, dtype="float64")
        self.y = self.asarray(y, dtype="float64" if model == "linear_lstsq" else "int64")

    def time_fit(self, backend, model):
        import xpdl

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if model == "linear_lstsq":
                xpdl.LinearRegression().fit(self.X, self.y)
            else:
                xpdl.LogisticRegression().fit(self.X, self.y)
        self.sync()

    def peakmem_fit(self, backend, model):
        self.time_fit(backend, model)
