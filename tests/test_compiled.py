"""The compiled (Numba) optimizer steps: the same bits as NumPy's ufunc path, and
torch.optim's trajectories; used only where they apply, never on other namespaces."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from xpdl import Tensor, _compiled, optim
from xpdl import _namespace as ns
from xpdl.estimators import MLPClassifier, MLPRegressor
from xpdl.optim import _fused

HAS_NUMBA = importlib.util.find_spec("numba") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")

CONFIGS = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, weight_decay=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("adam", dict(lr=0.05)),
    ("adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adamw", dict(lr=0.05, weight_decay=0.3)),
    ("adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("adamw", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]
CLS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
TORCH_CLS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


@pytest.fixture
def tiny_min(monkeypatch):
    """Every array takes the compiled path (the threshold is for speed, not semantics)."""
    monkeypatch.setattr(_compiled, "MIN_SIZE", 1)


@pytest.fixture
def calls(monkeypatch):
    """Counts the compiled steps that ran."""
    n = {}
    def counting(f, key):
        def counted(*args, **kw):
            n[key] += 1
            return f(*args, **kw)

        return counted

    for name, key in (("adam_flat", "adam"), ("sgd_flat", "sgd")):
        n[key] = 0
        monkeypatch.setattr(_compiled, name, counting(getattr(_compiled, name), key))
    return n


def _problem():
    g = np.random.default_rng(0)
    X = g.normal(size=(20, 3))
    Y = X @ g.normal(size=(3, 2)) + 0.1 * g.normal(size=(20, 2))
    return X, Y, {"W": g.normal(size=(3, 2)), "b": g.normal(size=(2,))}


def _run(backend, name, kw, steps=40):
    from xpdl.losses import mse

    X_h, Y_h, p0 = _problem()
    X, Y = backend.asarray(X_h), backend.asarray(Y_h)
    W = Tensor(backend.asarray(p0["W"]), requires_grad=True)
    b = Tensor(backend.asarray(p0["b"]), requires_grad=True)
    opt = getattr(optim, CLS[name])({"W": W, "b": b}, **kw)
    for _ in range(steps):
        opt.zero_grad()
        mse(Tensor(X) @ W + b, Y).backward()
        opt.step()
    return backend.to_numpy(W.data), backend.to_numpy(b.data), opt.state_dict()


@needs_numba
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_compiled_step_gives_the_ufunc_bits(backend, cfg, tiny_min, calls):
    """40 optimizer steps with the compiled kernels and without: equal bit for bit, state
    included; on NumPy the kernels ran, elsewhere they never do."""
    name, kw = cfg
    W1, b1, s1 = _run(backend, name, kw)
    ran = calls["adam"] + calls["sgd"]
    with _compiled.disabled():
        W0, b0, s0 = _run(backend, name, kw)
    assert calls["adam"] + calls["sgd"] == ran  # nothing compiled inside disabled()
    if backend.name == "numpy":
        assert ran == 2 * 40  # W and b, every step
    else:
        assert ran == 0
    np.testing.assert_array_equal(W1, W0)
    np.testing.assert_array_equal(b1, b0)
    assert s1.keys() == s0.keys()
    for k in s1:
        np.testing.assert_array_equal(backend.to_numpy(s1[k]) if ns.is_array(s1[k])
                                      else s1[k],
                                      backend.to_numpy(s0[k]) if ns.is_array(s0[k])
                                      else s0[k])


@needs_numba
@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_compiled_step_follows_torch_optim(backend, cfg, tiny_min):
    """The independent reference: torch.optim on the same least-squares problem."""
    import torch

    name, kw = cfg
    X, Y, p0 = _problem()
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    opt = getattr(torch.optim, TORCH_CLS[name])([ps["W"], ps["b"]], **kw)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.mse_loss(Xt @ ps["W"] + ps["b"], Yt).backward()
        opt.step()
    W, b, _ = _run(backend, name, kw)
    tol = 1e-9 if backend.is64 else 2e-3
    np.testing.assert_allclose(W, ps["W"].detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(b, ps["b"].detach().numpy(), rtol=tol, atol=tol)


def _flat(backend, n, seed):
    g = np.random.default_rng(seed)
    P = g.normal(size=n)
    P[:4] = 0.0  # zeros, and a gradient of -0.0, as fresh biases see
    G = g.normal(size=n)
    G[:2] = -0.0
    return P, G


@needs_numba
@pytest.mark.parametrize("kind", ["adam", "adamw", "amsgrad", "sgd", "sgd-nesterov",
                                  "sgd-plain"])
def test_flat_stepper_compiled_equals_blocked_ufuncs(backend, kind, monkeypatch):
    """The estimators' flat stepper, with the L2 term over a leading part: the compiled
    pass against the blocked ufuncs (blocks of 1000 that cut through the L2 boundary):
    parameters and optimizer state equal bit for bit; both only read G."""
    if not _fused.supported(backend.xp):
        pytest.skip("flat steppers are for NumPy, CuPy and torch (others take step())")
    monkeypatch.setattr(_fused, "_BLOCK", 1000)
    monkeypatch.setattr(_compiled, "MIN_SIZE", 1)
    xp = backend.xp
    n, n_l2, c = 10003, 9000, 0.03
    out = []
    for compiled in (True, False):
        P_h, G_h = _flat(backend, n, 0)
        P, G = backend.asarray(P_h), backend.asarray(G_h)
        M = xp.zeros_like(P)
        V = xp.zeros_like(P)
        B = xp.zeros_like(P)
        S = xp.empty_like(P)
        X = xp.zeros_like(P) if kind == "amsgrad" else None
        if kind.startswith("adam") or kind == "amsgrad":
            kw = dict(b1=0.9, b2=0.999, eps=1e-8, wd_l2=0.0 if kind == "adamw" else 0.01,
                      wd_decoupled=0.1 if kind == "adamw" else 0.0)
            make = lambda: _fused.adam_stepper(xp, P, G, M, V, S, n_l2, X,  # noqa: E731
                                               **kw)
        else:
            kw = dict(momentum=0.0 if kind == "sgd-plain" else 0.9,
                      nesterov=kind == "sgd-nesterov", wd=0.01)
            make = lambda: _fused.sgd_stepper(  # noqa: E731
                xp, P, G, None if kind == "sgd-plain" else B, S, n_l2, **kw)
        if compiled:
            run = make()
        else:
            with _compiled.disabled():
                run = make()
        g = np.random.default_rng(1)
        for t in range(1, 4):
            G_h = g.normal(size=n)
            G[...] = backend.asarray(G_h)
            if kind in ("adam", "adamw", "amsgrad"):
                run(1e-2, t, c)
            else:
                run(1e-2, c)
            np.testing.assert_array_equal(backend.to_numpy(G), G_h)  # only read
        out.append([backend.to_numpy(a) for a in (P, M, V, B) + ((X,) if X is not None
                                                                  else ())])
    for a, b in zip(out[0], out[1]):
        np.testing.assert_array_equal(a, b)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_amsgrad_maximum_lets_nan_win_as_numpy(dtype, monkeypatch):
    """AMSGrad's running maximum in the compiled loop: a NaN in the old maximum or in the
    new second moment stays NaN, as ``np.maximum`` (the ufunc path) gives; ``a > b ? a :
    b`` alone would drop the old maximum's NaN. Compiled and ufunc paths equal bit for
    bit."""
    monkeypatch.setattr(_compiled, "MIN_SIZE", 1)
    g = np.random.default_rng(0)
    n = 9
    P, G = g.normal(size=n).astype(dtype), g.normal(size=n).astype(dtype)
    M, V, X = np.zeros(n, dtype), g.random(n).astype(dtype), g.random(n).astype(dtype)
    X[1] = np.nan  # the maximum so far
    G[2] = np.nan  # so the new second moment
    kw = dict(b1=0.9, b2=0.999, eps=1e-8, wd_l2=0.0, wd_decoupled=0.0)
    runs = []
    for compiled in (True, False):
        arrays = [a.copy() for a in (P, G, M, V, X)]
        make = lambda: _fused.adam_stepper(np, *arrays[:4], [np.empty_like(P)], 0,  # noqa: E731
                                           arrays[4], **kw)
        if compiled:
            make()(1e-2, 3)
        else:
            with _compiled.disabled():
                make()(1e-2, 3)
        runs.append(arrays)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))
    Xc = runs[0][4]
    assert np.isnan(Xc[1]) and np.isnan(Xc[2]) and not np.isnan(np.delete(Xc, [1, 2])).any()
    assert np.isnan(runs[0][0][[1, 2]]).all()


@needs_numba
@pytest.mark.filterwarnings("ignore:xpdl. MLP.*max_iter")
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_estimator_fit_is_the_same_with_and_without_kernels(backend, Est, tiny_min, calls):
    """A whole fit (the replayed step, Adam through the compiled kernel, L2): the same
    parameters bit for bit as with the ufuncs."""
    g = np.random.default_rng(0)
    X_h = g.normal(size=(120, 6))
    y_h = (X_h[:, 0] + X_h[:, 1] > 0).astype(np.int64) + (X_h[:, 2] > 1)
    if Est is MLPRegressor:
        y_h = X_h @ g.normal(size=6)
    X = backend.asarray(X_h)
    y = backend.asarray(y_h) if Est is MLPRegressor else backend.asarray(y_h, dtype=None)
    kw = dict(hidden_layer_sizes=(16, 8), max_iter=15, batch_size=32, alpha=1e-3,
              random_state=0, learning_rate=1e-2, tol=0.0)
    m1 = Est(**kw).fit(X, y)
    ran = calls["adam"]
    with _compiled.disabled():
        m0 = Est(**kw).fit(X, y)
    steps = 15 * 4 if backend.name == "numpy" else 0  # epochs x minibatches
    assert ran == steps
    for a, b in zip(m1.coefs_ + m1.intercepts_, m0.coefs_ + m0.intercepts_):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    np.testing.assert_allclose(m1.loss_curve_, m0.loss_curve_,
                               rtol=1e-12 if backend.is64 else 1e-5)


def test_environment_switch_and_missing_numba(backend, monkeypatch):
    """XPDL_NUMBA=0 and an absent Numba both leave the ufunc path, with the same results."""
    P = np.zeros(_compiled.MIN_SIZE, dtype=np.float32)
    monkeypatch.setenv("XPDL_NUMBA", "0")
    assert not _compiled.available() and not _compiled.usable(P, P)
    assert _compiled.version() is None
    monkeypatch.delenv("XPDL_NUMBA")
    monkeypatch.setattr(_compiled, "_MISSING", True)
    assert not _compiled.available()
    W, b, _ = _run(backend, "adam", dict(lr=0.05))
    monkeypatch.setattr(_compiled, "_MISSING", False)
    with _compiled.disabled():
        W0, b0, _ = _run(backend, "adam", dict(lr=0.05))
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(b, b0)


@needs_numba
def test_kernels_only_take_arrays_they_can_write_in_one_pass():
    """Small, non-contiguous, read-only, mixed-dtype or integer arrays keep the ufuncs."""
    n = _compiled.MIN_SIZE
    a = np.zeros(n, dtype=np.float32)
    assert _compiled.usable(a, a.copy(), None)
    assert not _compiled.usable(a[: n // 2], a[: n // 2])  # below the threshold
    assert not _compiled.usable(np.zeros(2 * n, np.float32)[::2], a)  # strided
    ro = a.copy()
    ro.flags.writeable = False
    assert not _compiled.usable(a, ro)
    assert not _compiled.usable(a, np.zeros(n, np.float64))
    assert not _compiled.usable(np.zeros(n, np.int64), np.zeros(n, np.int64))
    assert not _compiled.usable(np.zeros(n, np.float16), np.zeros(n, np.float16))


@needs_numba
@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_per_parameter_kernel_does_not_write_the_gradient(name, calls):
    """With weight decay the per-parameter compiled step reads the caller's gradient and
    writes only the parameter and the optimizer's own state."""
    g = np.random.default_rng(0)
    p = Tensor(g.normal(size=(300, 300)), requires_grad=True)  # above MIN_SIZE
    grad = g.normal(size=(300, 300))
    keep = grad.copy()
    opt = getattr(optim, CLS[name])([p], lr=0.01, weight_decay=0.1,
                                    **({"momentum": 0.9} if name == "sgd" else {}))
    p.grad = grad
    opt.step()
    assert calls[name] == 1
    np.testing.assert_array_equal(grad, keep)


@needs_numba
def test_a_kernel_that_cannot_build_falls_back_once_with_a_warning(backend, monkeypatch):
    """A build failure (no writable cache, LLVM error) is found on empty views before any
    array is touched: one RuntimeWarning, then the ufunc path, with the same results."""
    assert _compiled.available()

    def broken(*a):
        raise RuntimeError("no locator available")

    monkeypatch.setattr(_compiled, "_KERNELS", dict(_compiled._KERNELS, adam=broken))
    monkeypatch.setattr(_compiled, "_READY", {})
    monkeypatch.setattr(_compiled, "MIN_SIZE", 1)
    a = np.ones(8)
    with pytest.warns(RuntimeWarning, match="could not be built for float64"):
        assert not _compiled.usable(a, a.copy())
    assert not _compiled.usable(a, a.copy())  # decided once per dtype
    assert np.all(a == 1.0)
    if backend.name == "numpy" and backend.is64:
        W, b, _ = _run(backend, "adam", dict(lr=0.05))
        with _compiled.disabled():
            W0, b0, _ = _run(backend, "adam", dict(lr=0.05))
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


@needs_numba
@pytest.mark.filterwarnings("ignore:xpdl. MLP.*max_iter")
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_exact_resume_with_the_kernels(tmp_path, optimizer, tiny_min, calls):
    """Save after 3 epochs, load, 5 more: the same parameters and loss curve, bit for bit,
    as 8 epochs in one fit, with every step through the compiled kernels."""
    import xpdl

    g = np.random.default_rng(0)
    X = g.normal(size=(90, 5))
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)
    kw = dict(hidden_layer_sizes=(12, 6), batch_size=25, random_state=1, optimizer=optimizer,
              learning_rate=1e-2, n_iter_no_change=10**6, warm_start=True, alpha=1e-3)
    full = MLPClassifier(max_iter=8, **kw).fit(X, y)
    first = MLPClassifier(max_iter=3, **kw).fit(X, y)
    path = tmp_path / "m.safetensors"
    xpdl.save(first, path)
    resumed = xpdl.load(path)
    resumed.set_params(max_iter=5).fit(X, y)
    assert calls["adam" if optimizer == "adam" else "sgd"] == 2 * 8 * 4  # both runs' steps
    assert resumed.n_iter_ == 8
    assert resumed.loss_curve_ == full.loss_curve_
    for a, b in zip(resumed.coefs_ + resumed.intercepts_, full.coefs_ + full.intercepts_):
        np.testing.assert_array_equal(a, b)



@needs_numba
def test_bench_ufuncs_row_runs_without_the_kernels(monkeypatch, calls):
    """``xpdl bench --ufuncs``: the row named "ufuncs" trains without the compiled
    kernels (its runner is made inside ``disabled()``: a compiled step keeps the stepper
    it made first, so one made outside would keep the kernels), the plain row with them."""
    from xpdl import bench

    made = []

    def runner(*a, real=bench._XpdlRunner, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(bench, "_XpdlRunner", runner)
    rows = bench.run_benchmark(vs=(), size="small", n_batches=2, repeats=1, log=lambda *a: 0,
                               pause=0.0, ufuncs=True, sequential=False)["rows"]
    assert [r["runner"] for r in rows] == ["xpdl[numpy]", "xpdl[numpy]/ufuncs"]
    plain, ufuncs = made
    before = calls["adam"]
    with _compiled.disabled():
        ufuncs.epoch()
    assert calls["adam"] == before
    ufuncs.epoch()  # its stepper stays on the ufuncs even outside disabled()
    assert calls["adam"] == before
    plain.epoch()
    assert calls["adam"] > before


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_layer_kernels_give_the_ufunc_bits(dtype):
    """The fused ReLU-layer passes against the ufuncs they replace, bit for bit (compared
    as integers, so NaN and the sign of zero count): forward ``maximum(h + b, 0)``
    (NaN stays NaN, -0.0 gives +0.0), backward ``g * (r > 0)`` (NaN * 0 is NaN, a negative
    gradient times 0 is -0.0) and the bias gradient ``add.reduce(d, axis=0)``."""
    g = np.random.default_rng(0)
    dt = np.dtype(dtype)
    n, k = 37, 300
    big = np.zeros(_compiled.MIN_SIZE, dt)
    assert _compiled.relu_layer_kernels(big[:10]) is None  # too small to pay
    forward, backward = _compiled.relu_layer_kernels(big)
    h = g.normal(size=(n, k)).astype(dt)
    b = g.normal(size=k).astype(dt)
    h[0, :6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, -1e-30]
    b[:6] = [0.0, -0.0, -0.0, 1.0, 1.0, 0.0]
    r = np.empty_like(h)
    forward(h.copy(), b, r)
    ref = np.maximum(h + b, np.zeros_like(h))
    bits = dt.str.replace("f", "u")
    np.testing.assert_array_equal(r.view(bits), ref.view(bits))
    gr = g.normal(size=(n, k)).astype(dt)
    gr[0, :4] = [np.nan, -2.0, np.nan, -0.0]
    d, gb = np.empty_like(gr), np.empty(k, dt)
    backward(gr, r, d, gb)
    dref = gr * (r > 0).astype(dt)
    np.testing.assert_array_equal(d.view(bits), dref.view(bits))
    np.testing.assert_array_equal(gb.view(bits), np.add.reduce(dref, axis=0).view(bits))
    backward(gr[:0], r[:0], d[:0], gb)  # no rows: a zero bias gradient, as NumPy's sum
    np.testing.assert_array_equal(gb, np.zeros(k, dt))
