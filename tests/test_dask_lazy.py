"""The functional ops and reverse-mode autodiff on Dask arrays: lazy results (Dask arrays,
nothing computed until asked), the same values and gradients as NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import xpdl
import xpdl.functional as F
from xpdl import losses

da = pytest.importorskip("dask.array")

OPS = {
    "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh, "softplus": F.softplus,
    "softmax": lambda a: F.softmax(a, axis=-1), "log_softmax": lambda a: F.log_softmax(a),
    "logsumexp": lambda a: F.logsumexp(a, axis=-1), "leaky_relu": F.leaky_relu,
}


def _x():
    return np.random.default_rng(0).normal(size=(7, 4)) * 3


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_stay_lazy_and_match_numpy(name):
    x = _x()
    out = OPS[name](da.from_array(x, chunks=(3, 4)))
    out = getattr(out, "data", out)
    assert isinstance(out, da.Array)
    ref = OPS[name](x)
    np.testing.assert_allclose(out.compute(), getattr(ref, "data", ref), rtol=1e-12)


def test_gradients_are_lazy_and_match_finite_differences():
    x = _x()
    W = np.random.default_rng(1).normal(size=(3, 4))
    y = np.array([0, 2, 1, 1, 0, 2, 1])

    def loss(Wt, xt):
        return losses.cross_entropy(F.linear(F.tanh(xt), Wt), da.from_array(y, chunks=3))

    gW, gx = xpdl.grad(loss, argnums=(0, 1))(da.from_array(W, chunks=(3, 4)),
                                              da.from_array(x, chunks=(3, 4)))
    assert isinstance(gW, da.Array) and isinstance(gx, da.Array)

    def host_loss(Wh):
        z = np.tanh(x) @ Wh.T
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(7), y]))

    eps, fd = 1e-6, np.zeros_like(W)
    for i in np.ndindex(W.shape):
        d = np.zeros_like(W)
        d[i] = eps
        fd[i] = (host_loss(W + d) - host_loss(W - d)) / (2 * eps)
    np.testing.assert_allclose(gW.compute(), fd, rtol=1e-6, atol=1e-9)
