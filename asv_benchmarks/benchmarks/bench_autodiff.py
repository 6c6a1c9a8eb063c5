"""The tape's cost: one MLP minibatch forward+backward through ``xpdl.Tensor`` against the
same computation written by hand on the namespace."""

from __future__ import annotations

import numpy as np

from .common import XPBenchmark

SIZES = {
    "small": ((64, 128, 128, 10), 64),
    "medium": ((784, 512, 512, 10), 256),
}


def make_problem(sizes, batch, seed=0):
    """Host float32 data, labels and He-initialised weights for a 3-layer MLP."""
    g = np.random.default_rng(seed)
    X = g.normal(size=(batch, sizes[0])).astype(np.float32)
    y = g.integers(0, sizes[-1], size=batch)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        W = (g.normal(size=(fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        params += [W, np.zeros(fan_out, dtype=np.float32)]
    return X, y, params


def as_parameters(params):
    """Wrap arrays once as leaf Tensors, as a model holds its parameters."""
    from xpdl import Tensor

    return [Tensor(p, requires_grad=True) for p in params]


def tape_step(X, y, ts):
    """Forward and backward through xpdl's tape on parameter Tensors ``ts``; returns the
    gradients (zeroed first, as a training step does)."""
    import xpdl.functional as F
    from xpdl.losses import cross_entropy

    for t in ts:
        t.grad = None
    h = F.relu(F.linear(X, ts[0], ts[1]))
    h = F.relu(F.linear(h, ts[2], ts[3]))
    loss = cross_entropy(F.linear(h, ts[4], ts[5]), y)
    loss.backward()
    return [t.grad for t in ts]


def hand_step(X, y, params, xp):
    """The same forward and backward written by hand with the namespace's operators."""
    W1, b1, W2, b2, W3, b3 = params
    n = X.shape[0]
    h1 = X @ W1.T + b1
    a1 = xp.maximum(h1, 0.0)
    h2 = a1 @ W2.T + b2
    a2 = xp.maximum(h2, 0.0)
    z = a2 @ W3.T + b3
    z = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(z)
    s = xp.sum(e, axis=1, keepdims=True)
    onehot = xp.astype(xp.expand_dims(y, axis=1) == xp.arange(z.shape[1]), z.dtype)
    _loss = -xp.sum(onehot * (z - xp.log(s))) / n
    dz = (e / s - onehot) / n
    gW3 = dz.T @ a2
    gb3 = xp.sum(dz, axis=0)
    da2 = dz @ W3
    dh2 = da2 * xp.astype(h2 > 0, da2.dtype)
    gW2 = dh2.T @ a1
    gb2 = xp.sum(dh2, axis=0)
    da1 = dh2 @ W2
    dh1 = da1 * xp.astype(h1 > 0, da1.dtype)
    gW1 = dh1.T @ X
    gb1 = xp.sum(dh1, axis=0)
    return [gW1, gb1, gW2, gb2, gW3, gb3]


class TapeOverhead(XPBenchmark):
    params = (["numpy", "torch", "cupy", "jax", "array_api_strict"], list(SIZES),
              ["tape", "hand"])
    param_names = ["backend", "size", "impl"]

    def setup(self, backend, size, impl):
        self.setup_backend(backend)
        sizes, batch = SIZES[size]
        X, y, params = make_problem(sizes, batch)
        self.X = self.asarray(X)
        self.y = self.asarray(y, dtype="int64")
        self.params = [self.asarray(p) for p in params]
        self.tensors = as_parameters(self.params)

    def time_forward_backward(self, backend, size, impl):
        if impl == "tape":
            tape_step(self.X, self.y, self.tensors)
        else:
            hand_step(self.X, self.y, self.params, self.xp)
        self.sync()

    def peakmem_forward_backward(self, backend, size, impl):
        self.time_forward_backward(backend, size, impl)
