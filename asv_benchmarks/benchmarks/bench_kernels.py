"""Kernels: linear forward/backward, activations, softmax cross-entropy, optimizer steps."""

from __future__ import annotations

import numpy as np

from xpdl import _compiled

from .common import BACKENDS, SkipNotImplemented, XPBenchmark

SHAPES = {"256x512": (256, 512, 512), "1024x1024": (1024, 1024, 1024)}


class Linear(XPBenchmark):
    params = (BACKENDS, list(SHAPES))
    param_names = ["backend", "shape"]

    def setup(self, backend, shape):
        from xpdl import Tensor

        self.setup_backend(backend)
        n, i, o = SHAPES[shape]
        g = np.random.default_rng(0)
        self.x = self.asarray(g.normal(size=(n, i)))
        self.W = Tensor(self.asarray(g.normal(size=(o, i)) * 0.05), requires_grad=True)
        self.b = Tensor(self.asarray(np.zeros(o)), requires_grad=True)

    def time_forward(self, backend, shape):
        import xpdl.functional as F

        F.linear(self.x, self.W.data, self.b.data)
        self.sync()

    def time_forward_backward(self, backend, shape):
        import xpdl.functional as F

        self.W.grad = self.b.grad = None
        F.linear(self.x, self.W, self.b).sum().backward()
        self.sync()

    def peakmem_forward_backward(self, backend, shape):
        self.time_forward_backward(backend, shape)


class Activations(XPBenchmark):
    params = (BACKENDS, ["relu", "sigmoid", "tanh", "softmax", "log_softmax"])
    param_names = ["backend", "fn"]

    def setup(self, backend, fn):
        from xpdl import Tensor

        self.setup_backend(backend)
        self.x = Tensor(self.asarray(np.random.default_rng(0).normal(size=(512, 1024))),
                        requires_grad=True)

    def time_forward_backward(self, backend, fn):
        import xpdl.functional as F

        self.x.grad = None
        getattr(F, fn)(self.x).sum().backward()
        self.sync()


class SoftmaxCrossEntropy(XPBenchmark):
    params = (BACKENDS, [10, 1000])
    param_names = ["backend", "classes"]

    def setup(self, backend, classes):
        from xpdl import Tensor

        self.setup_backend(backend)
        g = np.random.default_rng(0)
        self.z = Tensor(self.asarray(g.normal(size=(512, classes))), requires_grad=True)
        self.y = self.asarray(g.integers(0, classes, size=512), dtype="int64")

    def time_forward_backward(self, backend, classes):
        from xpdl.losses import cross_entropy

        self.z.grad = None
        cross_entropy(self.z, self.y).backward()
        self.sync()


class OptimizerStep(XPBenchmark):
    params = (BACKENDS, ["sgd", "sgd_momentum", "adam", "adamw", "rmsprop", "adagrad"],
              ["fused", "portable", "flat", "flat_ufuncs"])
    param_names = ["backend", "optimizer", "path"]

    def setup(self, backend, optimizer, path):
        from xpdl import Tensor, optim

        self.setup_backend(backend)
        if path.startswith("flat") and backend in ("jax", "array_api_strict"):
            raise SkipNotImplemented("flat steps need in-place updates on a native module")
        # flat_ufuncs: NumPy's flat step without the compiled (Numba) kernels, when those
        # are installed, to show what they save
        if path == "flat_ufuncs" and (backend != "numpy" or not _compiled.available()):
            raise SkipNotImplemented("the compiled kernels are NumPy's, with Numba")
        g = np.random.default_rng(0)
        shapes = [(512, 784), (512,), (512, 512), (512,), (10, 512), (10,)]
        if path.startswith("flat"):  # the layout of the estimators' fused MLP step
            xp = self.xp
            sizes = [int(np.prod(s)) for s in shapes]
            self.P = self.asarray(g.normal(size=sum(sizes)))
            self.G = self.asarray(g.normal(size=sum(sizes)))
            offs = np.cumsum([0] + sizes)
            self.ps = [Tensor(xp.reshape(self.P[a:b], s), requires_grad=True)
                       for a, b, s in zip(offs[:-1], offs[1:], shapes)]
            for p, a, b, s in zip(self.ps, offs[:-1], offs[1:], shapes):
                p._own = True
                p.grad = xp.reshape(self.G[a:b], s)
        else:
            self.ps = [Tensor(self.asarray(g.normal(size=s)), requires_grad=True)
                       for s in shapes]
            for p in self.ps:
                p.grad = self.asarray(g.normal(size=p.shape))
        cls, kw = {"sgd": (optim.SGD, {"lr": 0.01}),
                   "sgd_momentum": (optim.SGD, {"lr": 0.01, "momentum": 0.9}),
                   "adam": (optim.Adam, {}), "adamw": (optim.AdamW, {}),
                   "rmsprop": (optim.RMSprop, {}), "adagrad": (optim.Adagrad, {})}[optimizer]
        self.opt = cls(self.ps, **kw)
        self.opt.use_fused = path != "portable"
        if path == "flat":
            self.flat_step = self.opt.flat_stepper(self.P, self.G, self.opt.param_names,
                                                   shapes)
        elif path == "flat_ufuncs":
            with _compiled.disabled():
                self.flat_step = self.opt.flat_stepper(self.P, self.G, self.opt.param_names,
                                                       shapes)

    def time_step(self, backend, optimizer, path):
        if path.startswith("flat"):
            self.flat_step()
        else:
            self.opt.step()
        self.sync()
