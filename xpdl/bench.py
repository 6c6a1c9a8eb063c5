"""Side-by-side training benchmark behind ``xpdl bench``.

For one MLP (float32, Adam, fixed batch) it times an epoch of xpdl's training loop on each
backend, the same epoch in PyTorch and scikit-learn's ``MLPClassifier`` when installed, and
the *matrix-multiply bound*: the forward and backward matrix products of that epoch alone
on the same backend. All runs are interleaved round by round and the median is reported,
so every ratio compares numbers measured under the same machine noise; a short pause
before each timed call lets the previous runner's thread pools stop busy-waiting (torch's
OpenMP threads otherwise slow the next runner by up to 2x on a 2-core machine).
"""

from __future__ import annotations

import importlib.util
import statistics
import time

from . import _compiled
from . import _namespace as _ns
from .datasets import make_classification

__all__ = ["SIZES", "run_benchmark", "format_table"]

SIZES = {
    "small": ((64, 128, 128, 10), 64),
    "medium": ((784, 512, 512, 10), 256),
    "large": ((1024, 2048, 2048, 10), 512),
}


def _backend(name):
    """(xp, device, sync) or raise ImportError."""
    if name == "numpy":
        import array_api_compat.numpy as xp

        return xp, "cpu", lambda: None
    if name == "torch":
        import array_api_compat.torch as xp
        import torch

        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return xp, dev, (torch.cuda.synchronize if dev.type == "cuda" else (lambda: None))
    if name == "cupy":
        import array_api_compat.cupy as xp
        import cupy

        return xp, cupy.cuda.Device(0), cupy.cuda.runtime.deviceSynchronize
    if name == "jax":
        import jax
        import jax.numpy as xp

        return xp, jax.devices()[0], (lambda: xp.zeros(()).block_until_ready())
    if name == "array_api_strict":
        import array_api_strict as xp

        return xp, xp.Device("CPU_DEVICE"), lambda: None
    raise ImportError(f"unknown backend {name!r}")


class _XpdlRunner:
    """xpdl's training loop; ``tape=True`` runs every step eagerly on the autodiff tape
    instead of replaying the recorded program (to show what the replay saves)."""

    def __init__(self, backend, sizes, batch, Xh, yh, tape=False, graphs=True):
        import os

        from .estimators import MLPClassifier

        xp, dev, self.sync = _backend(backend)
        X = _ns.from_host(Xh, xp, device=dev, dtype=xp.float32)
        y = _ns.from_host(yh, xp, device=dev, dtype=xp.int64)
        self.m = MLPClassifier(sizes[1:-1], batch_size=batch, max_iter=1, random_state=0,
                               learning_rate=1e-4)
        if tape:
            self.m._compiled_training = False
        before = os.environ.get("XPDL_CUDA_GRAPHS")
        if not graphs:  # (read when the training step is made, in the first fit)
            os.environ["XPDL_CUDA_GRAPHS"] = "0"
        try:
            self.m.partial_fit(X, y)  # builds the model; also warms up
        finally:
            if before is None:
                os.environ.pop("XPDL_CUDA_GRAPHS", None)
            else:
                os.environ["XPDL_CUDA_GRAPHS"] = before
        from .estimators._base import InMemory

        self.data = InMemory(X, y, None)
        self.xp, self.dev = xp, dev
        # The matrix products of one epoch, with the same shapes, on the same backend.
        g = self.m._rng
        self.Ws = [m.weight.data for m in self.m.module_ if hasattr(m, "weight")]
        self.batch = batch
        self.sizes = sizes
        self.Xb = g.normal((batch, sizes[0]), xp=xp, device=dev)
        self.Gs = [g.normal((batch, s), xp=xp, device=dev) for s in sizes[1:]]
        self.n_batches = -(-Xh.shape[0] // batch)

    def epoch(self):
        m = self.m
        m._train(self.data, 1, None, True)
        self.sync()

    def bound(self):
        for _ in range(self.n_batches):
            a = self.Xb
            for W in self.Ws:  # forward
                a = a @ W.T
            for i, (W, G) in enumerate(zip(self.Ws, self.Gs)):  # backward
                _ = G.T @ (self.Xb if i == 0 else self.Gs[i - 1])
                if i:
                    _ = G @ W
        self.sync()


class _SequentialRunner:
    """The same network built by hand from :mod:`xpdl.nn`, trained with
    :class:`xpdl.optim.Adam` through :func:`xpdl.compile_step` (the estimator's loss: mean
    cross-entropy plus its L2 term), batches drawn as the estimator draws them."""

    def __init__(self, backend, sizes, batch, Xh, yh, alpha=1e-4):
        from . import losses, nn, optim
        from .autodiff.ops import sqnorm
        from .autodiff.program import compile_step
        from .random import Generator

        xp, dev, self.sync = _backend(backend)
        self.xp, self.dev = xp, dev
        self.X = _ns.from_host(Xh, xp, device=dev, dtype=xp.float32)
        self.y = _ns.from_host(yh, xp, device=dev, dtype=xp.int64)
        self.g = Generator(0)
        layers = []
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            layers.append(nn.Linear(sizes[i], sizes[i + 1], init="glorot" if last else "he",
                                    rng=self.g, xp=xp, device=dev, dtype="float32"))
            if not last:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        weights = [m.weight for m in layers if hasattr(m, "weight")]

        def loss_fn(out, t):
            l2 = sqnorm(weights[0])
            for W in weights[1:]:
                l2 = l2 + sqnorm(W)
            return losses.cross_entropy(out, t) + l2 * (0.5 * alpha / out.shape[0])

        self.step = compile_step(model, loss_fn, optim.Adam(model, lr=1e-4))
        self.batch = batch
        self.epoch()

    def epoch(self):
        from .datasets import batches

        for Xb, yb in batches(self.X, self.y, batch_size=self.batch, shuffle=True,
                              rng=self.g):
            self.step(Xb, yb)
        self.sync()


class _TorchRunner:
    def __init__(self, device, sizes, batch, Xh, yh):
        import torch

        self.torch = torch
        torch.manual_seed(0)
        self.dev = torch.device(device)
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers).to(self.dev)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.X = torch.tensor(Xh, dtype=torch.float32, device=self.dev)
        self.y = torch.tensor(yh, dtype=torch.int64, device=self.dev)
        self.batch = batch
        self.g = torch.Generator(device="cpu").manual_seed(0)
        self.epoch()

    def epoch(self):
        torch = self.torch
        n = self.X.shape[0]
        perm = torch.randperm(n, generator=self.g).to(self.dev)
        for s in range(0, n, self.batch):
            idx = perm[s:s + self.batch]
            self.opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.net(self.X[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
        if self.dev.type == "cuda":
            torch.cuda.synchronize()


class _SklearnRunner:
    def __init__(self, sizes, batch, Xh, yh):
        import warnings

        from sklearn.neural_network import MLPClassifier

        self.m = MLPClassifier(sizes[1:-1], batch_size=batch, max_iter=1, solver="adam",
                               learning_rate_init=1e-4, random_state=0)
        self.X, self.y = Xh.astype("float32"), yh
        self.classes = sorted(set(yh.tolist()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.epoch()

    def epoch(self):
        self.m.partial_fit(self.X, self.y, classes=self.classes)


def _captures_graphs(runner):
    """Whether the runner's training step launches captured graphs (CuPy, torch on CUDA)."""
    from .autodiff.program import _graph_backend

    cached = runner.m.__dict__.get("_step_cache")
    return cached is not None and cached[3].graphs and \
        _graph_backend(runner.xp, runner.Ws[0]) is not None


def run_benchmark(backends=("numpy",), vs=("torch", "sklearn"), size="medium", n_batches=20,
                  repeats=5, log=print, pause=0.3, warm=True, tape=False, ufuncs=False,
                  sequential=True):
    """Time one training epoch per runner, interleaved; returns a list of result rows.

    Each round runs every runner (and every bound) once: a ``pause`` in seconds, one
    untimed epoch when ``warm``, then the timed epoch; ``tape`` adds, per backend, the same
    training through the autodiff tape (``xpdl[numpy]/tape``); where the step launches
    CUDA graphs (CuPy, torch on CUDA) ``xpdl[cupy]/nographs`` is the same without them;
    ``sequential`` adds the
    same network built from :mod:`xpdl.nn` and trained through :func:`xpdl.compile_step`
    (``xpdl[numpy]/nn``); ``ufuncs`` adds NumPy's replayed step without the compiled
    kernels (``xpdl[numpy]/ufuncs``, when Numba
    is installed: the kernels' own gain, side by side). Each row:
    ``{"runner", "seconds_per_epoch", "bound", "ratio_to_bound", "ratio_to", ...}``:
    median seconds, and ratios as medians over rounds of the ratio within a round;
    ``ratio_to`` maps each peer's name to this runner's time divided by the peer's.
    ``times`` and ``bound_times`` keep every round's seconds.
    """
    sizes, batch = SIZES[size]
    Xh, yh = make_classification(batch * n_batches, sizes[0], n_classes=sizes[-1],
                                 random_state=0)
    runners, bounds = {}, {}
    for b in backends:
        try:
            r = _XpdlRunner(b, sizes, batch, Xh, yh)
        except ImportError as exc:
            log(f"skipping {b}: {exc}")
            continue
        runners[f"xpdl[{b}]"] = r.epoch
        bounds[f"xpdl[{b}]"] = r.bound
        if sequential:
            runners[f"xpdl[{b}]/nn"] = _SequentialRunner(b, sizes, batch, Xh, yh).epoch
            bounds[f"xpdl[{b}]/nn"] = r.bound
        if tape:
            rt = _XpdlRunner(b, sizes, batch, Xh, yh, tape=True)
            runners[f"xpdl[{b}]/tape"] = rt.epoch
            bounds[f"xpdl[{b}]/tape"] = r.bound
        if _captures_graphs(r):  # the CUDA graphs' own gain, side by side
            rg = _XpdlRunner(b, sizes, batch, Xh, yh, graphs=False)
            runners[f"xpdl[{b}]/nographs"] = rg.epoch
            bounds[f"xpdl[{b}]/nographs"] = r.bound
        if ufuncs and b == "numpy" and _compiled.available():
            # made (and warmed up) without the kernels: a compiled step keeps the
            # optimizer stepper it made first, so disabling them later would change nothing
            with _compiled.disabled():
                ru = _XpdlRunner(b, sizes, batch, Xh, yh)

            def epoch_ufuncs(ru=ru):
                with _compiled.disabled():
                    ru.epoch()

            runners[f"xpdl[{b}]/ufuncs"] = epoch_ufuncs
            bounds[f"xpdl[{b}]/ufuncs"] = r.bound
    peers = []
    if "torch" in vs and importlib.util.find_spec("torch") is not None:
        import torch

        devs = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for d in devs:
            name = f"torch[{d}]"
            runners[name] = _TorchRunner(d, sizes, batch, Xh, yh).epoch
            peers.append(name)
    if "sklearn" in vs and importlib.util.find_spec("sklearn") is not None:
        runners["sklearn"] = _SklearnRunner(sizes, batch, Xh, yh).epoch
        peers.append("sklearn")
    times = {k: [] for k in list(runners) + [f"bound:{k}" for k in bounds]}
    jobs = list(runners.items()) + [(f"bound:{k}", f) for k, f in bounds.items()]
    for _ in range(repeats):
        for k, f in jobs:
            # Let the previous runner's thread pools (OpenMP, OpenBLAS) stop spinning:
            # their busy-waiting would otherwise be charged to whoever runs next. Then one
            # untimed epoch brings the core, caches and this runner's own threads back to
            # a steady state, so the timed epoch does not pay for waking up from the pause
            # (at the small size an epoch is a few milliseconds).
            time.sleep(pause)
            if warm:
                f()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(a, b):
        # Median over rounds of the ratio within each round: the two numbers of a pair
        # were measured a fraction of a second apart, so slow drifts of the machine's
        # speed cancel (the ratio of the two medians is also kept, as "ratio_of_medians").
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    rows = []
    for k in runners:
        bk = f"bound:{k}"
        row = {"runner": k, "seconds_per_epoch": med[k], "bound": med.get(bk),
               "ratio_to_bound": paired(k, bk) if k in bounds else None,
               "ratio_of_medians_to_bound": (med[k] / med[bk]) if k in bounds else None,
               "ratio_to": {p: paired(k, p) for p in peers if p != k},
               "times": times[k], "bound_times": times.get(bk)}
        rows.append(row)
    return {"size": size, "layers": sizes, "batch": batch, "n_batches": n_batches,
            "repeats": repeats, "numba": _compiled.version(), "rows": rows}


def format_table(res):
    peers = sorted({p for r in res["rows"] for p in r["ratio_to"]})
    head = (f"MLP {'-'.join(map(str, res['layers']))}, batch {res['batch']}, "
            f"{res['n_batches']} batches/epoch, Adam, float32; medians of {res['repeats']} "
            f"rounds (ratios: median of the per-round ratios); compiled kernels: "
            f"{('numba ' + res['numba']) if res.get('numba') else 'no'}")
    cols = ["runner", "s/epoch", "bound s", "x bound"] + [f"x {p}" for p in peers]
    lines = [head, "  ".join(f"{c:>16}" for c in cols)]
    for r in res["rows"]:
        vals = [r["runner"], f"{r['seconds_per_epoch']:.4f}",
                "-" if r["bound"] is None else f"{r['bound']:.4f}",
                "-" if r["ratio_to_bound"] is None else f"{r['ratio_to_bound']:.2f}"]
        vals += [f"{r['ratio_to'][p]:.2f}" if p in r["ratio_to"] else "-" for p in peers]
        lines.append("  ".join(f"{v:>16}" for v in vals))
    return "\n".join(lines)
