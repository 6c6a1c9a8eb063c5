"""Fits on Dask arrays (threaded scheduler; 200,000 x 50 float64 in 20,000-row chunks,
persisted), beside the one-pass bound and the in-memory fit."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from .common import SkipNotImplemented


class DaskFits:
    timeout = 300

    def setup(self):
        if importlib.util.find_spec("dask") is None:
            raise SkipNotImplemented("dask is not installed")
        import dask.array as da

        g = np.random.default_rng(0)
        self.Xh = g.standard_normal((200_000, 50))
        self.yh = self.Xh @ g.standard_normal(50) + 0.1 * g.standard_normal(200_000)
        self.yc = (self.yh > 0).astype(np.int64)
        self.X = da.from_array(self.Xh, chunks=(20_000, 50)).persist()
        self.y = da.from_array(self.yh, chunks=20_000).persist()
        self.ycd = da.from_array(self.yc, chunks=20_000).persist()
        warnings.simplefilter("ignore")

    def time_gram_bound(self):
        import dask

        dask.compute(self.X.T @ self.X, self.X.T @ self.y)

    def time_lstsq_dask(self):
        from xpdl import LinearRegression

        LinearRegression().fit(self.X, self.y)

    def time_lstsq_numpy(self):
        from xpdl import LinearRegression

        LinearRegression().fit(self.Xh, self.yh)

    def time_lbfgs_dask(self):
        from xpdl import LogisticRegression

        LogisticRegression().fit(self.X, self.ycd)

    def time_mlp_epoch_dask(self):
        from xpdl import MLPClassifier

        MLPClassifier((64,), random_state=0).partial_fit(self.X, self.ycd, classes=[0, 1])

    def time_mlp_epoch_numpy(self):
        from xpdl import MLPClassifier

        MLPClassifier((64,), random_state=0).partial_fit(self.Xh, self.yc, classes=[0, 1])
