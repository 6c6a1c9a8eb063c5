"""The MLP estimators' hand-written training step against the tape (and so against finite
differences and PyTorch, which the tape is tested against), on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import xpdl.functional as F
from xpdl import MLPClassifier, MLPRegressor, Tensor
from xpdl import losses as L
from xpdl.estimators._fused_mlp import FusedStep, layer_plan
from xpdl.nn import Dropout, Linear, ReLU, Sequential, Sigmoid, Tanh
from xpdl.optim import Optimizer, _fused, adam, rmsprop, sgd

pytestmark = pytest.mark.filterwarnings("ignore:xpdl.*max_iter")

ACTS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


def _net(backend, act, k, sizes=(4, 7, 5)):
    kw = dict(xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    layers = []
    dims = (*sizes, k)
    for i in range(len(dims) - 1):
        layers.append(Linear(dims[i], dims[i + 1], rng=10 + i, **kw))
        if i < len(dims) - 2:
            layers.append(ACTS[act]())
    return Sequential(*layers)


def _data(backend, head, n=23, p=4, weighted=False, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, p))
    if head == "softmax":
        k, T = 3, backend.asarray(g.integers(0, 3, n), dtype=backend.xp.int64)
    elif head == "logistic":
        k, T = 1, backend.asarray(g.integers(0, 2, n), dtype=backend.xp.int64)
    else:
        k, T = 2, backend.asarray(g.normal(size=(n, 2)))
    w = backend.asarray(g.uniform(0.2, 2.0, n)) if weighted else None
    return backend.asarray(X), T, w, k


def _tape_loss(backend, module, X, T, w, head, alpha, l2n):
    xp = backend.xp
    out = module(X)
    if head == "softmax":
        per = L.cross_entropy(out, T, reduction="none")
    elif head == "logistic":
        per = L.binary_cross_entropy_with_logits(out[:, 0], xp.astype(T, out.dtype),
                                                 reduction="none")
    else:
        per = F.mean(L.mse(out, T, reduction="none"), axis=1) * 0.5
    loss = F.mean(per if w is None else per * Tensor(w))
    for m in module:
        if isinstance(m, Linear):
            loss = loss + F.sum(m.weight * m.weight) * (alpha / (2 * l2n))
    return loss


@pytest.mark.parametrize("head", ["softmax", "logistic", "squared"])
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("weighted", [False, True])
def test_step_value_and_gradients_match_the_tape(backend, head, act, weighted):
    if backend.name == "jax":
        pytest.skip("lr=0 SGD still rebinds JAX arrays; covered by the training test")
    X, T, w, k = _data(backend, head, weighted=weighted)
    module = _net(backend, act, k)
    ref = _tape_loss(backend, module, X, T, w, head, 0.3, 17)
    ref.backward()
    want = [backend.to_numpy(p.grad) for p in module.parameters()]
    params0 = [backend.to_numpy(p.data) for p in module.parameters()]
    for p in module.parameters():
        p.grad = None
    opt = Optimizer(module, sgd(0.0))  # no update: the step leaves its gradients in .grad
    step = FusedStep(layer_plan(module), head, opt, backend.xp)
    value = step(X, T, w, 0.3, 17)
    tol = dict(rtol=backend.rtol, atol=1e-12 if backend.is64 else 1e-5)
    np.testing.assert_allclose(float(value), ref.item(), **tol)
    for p, g, p0 in zip(module.parameters(), want, params0):
        np.testing.assert_allclose(backend.to_numpy(p.grad), g, **tol)
        np.testing.assert_array_equal(backend.to_numpy(p.data), p0)


def test_step_does_not_touch_the_callers_arrays(backend):
    X, T, w, k = _data(backend, "softmax", weighted=True)
    copies = [backend.to_numpy(a) for a in (X, T, w)]
    module = _net(backend, "relu", k)
    step = FusedStep(layer_plan(module), "softmax", Optimizer(module, adam(1e-2)), backend.xp)
    for _ in range(3):
        step(X, T, w, 0.1, 23)
    for a, c in zip((X, T, w), copies):
        np.testing.assert_array_equal(backend.to_numpy(a), c)


def test_only_plain_networks_take_the_fused_step():
    assert layer_plan(Sequential(Linear(3, 4), ReLU(), Linear(4, 2))) is not None
    assert layer_plan(Sequential(Linear(3, 4), ReLU(), Dropout(0.5), Linear(4, 2))) is None
    assert layer_plan(Sequential(Linear(3, 4), ReLU())) is None
    assert layer_plan(Sequential(Linear(3, 4, bias=False), ReLU(), Linear(4, 2))) is None


@pytest.mark.parametrize("Est,activation,optimizer", [
    (MLPClassifier, "relu", "adam"), (MLPClassifier, "tanh", "sgd"),
    (MLPRegressor, "sigmoid", "adamw"), (MLPRegressor, "relu", "rmsprop")])
def test_fused_training_equals_tape_training(backend, Est, activation, optimizer):
    """Whole fits, fused step against the tape (``_fused_training = False``): the same
    losses and parameters epoch after epoch; on NumPy this is the blocked in-place path."""
    g = np.random.default_rng(1)
    X = g.normal(size=(90, 5))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 0.5)
    if Est is MLPRegressor:
        y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    Xb = backend.asarray(X)
    yb = backend.asarray(y, dtype=backend.xp.int64) if y.dtype.kind == "i" else backend.asarray(y)
    wb = backend.asarray(g.uniform(0.5, 1.5, 90))
    kw = dict(hidden_layer_sizes=(16, 8), activation=activation, optimizer=optimizer,
              batch_size=32, max_iter=6, alpha=1e-2, learning_rate=1e-2, random_state=0,
              n_iter_no_change=10**6)
    fused = Est(**kw).fit(Xb, yb, sample_weight=wb)
    tape = Est(**kw)
    tape._fused_training = False
    tape.fit(Xb, yb, sample_weight=wb)
    rtol = 1e-9 if backend.is64 else 2e-3
    np.testing.assert_allclose(fused.loss_curve_, tape.loss_curve_, rtol=rtol)
    for a, b in zip(fused.coefs_ + fused.intercepts_, tape.coefs_ + tape.intercepts_):
        np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=rtol,
                                   atol=1e-12 if backend.is64 else 1e-5)


def test_fused_results_are_the_same_on_every_backend(backend):
    if not backend.is64:
        pytest.skip("compares float64 trajectories")
    g = np.random.default_rng(2)
    X = g.normal(size=(120, 6))
    y = (X[:, :3].sum(1) > 0).astype(np.int64) + 2 * (X[:, 3] > 0)
    kw = dict(hidden_layer_sizes=(12,), batch_size=25, max_iter=8, random_state=4,
              learning_rate=1e-2)
    ref = MLPClassifier(**kw).fit(X, y)
    m = MLPClassifier(**kw).fit(backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64))
    np.testing.assert_allclose(m.loss_curve_, ref.loss_curve_, rtol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(m.predict_proba(backend.asarray(X))),
                               ref.predict_proba(X), rtol=1e-9, atol=1e-12)


def test_parameters_replaced_from_outside_are_picked_up():
    """Restoring weights (early stopping, divergence, load) rebinds ``.data``; the next
    fused step must train the new arrays, not its stale flat copy."""
    g = np.random.default_rng(3)
    X, y = g.normal(size=(60, 4)), g.integers(0, 3, 60)
    m = MLPClassifier((6,), max_iter=2, random_state=0, n_iter_no_change=10**6).fit(X, y)
    W = m.module_[0].weight
    fresh = np.zeros_like(W.data)
    W.data = fresh
    m.partial_fit(X, y)
    assert W.data is not fresh and np.abs(W.data).sum() > 0  # trained from zeros
    assert np.shares_memory(W.data, m._fused_cache._flat.P)
    np.testing.assert_array_equal(fresh, 0.0)  # the replaced array was copied, not written


# -- the flat optimizer step ------------------------------------------------------------
def _flat_params(backend, sizes=((6, 5), (5,), (3, 6), (3,)), seed=0):
    xp = backend.xp
    g = np.random.default_rng(seed)
    total = sum(int(np.prod(s)) for s in sizes)
    P = backend.asarray(g.normal(size=total))
    G = backend.asarray(g.normal(size=total))
    views, gviews, off = [], [], 0
    for s in sizes:
        n = int(np.prod(s))
        views.append(xp.reshape(P[off:off + n], s))
        gviews.append(xp.reshape(G[off:off + n], s))
        off += n
    return P, G, views, gviews, [tuple(s) for s in sizes]


@pytest.mark.parametrize("make", [lambda: adam(1e-2, weight_decay=0.1),
                                  lambda: sgd(1e-2, momentum=0.9, nesterov=True),
                                  lambda: rmsprop(1e-2)])
@pytest.mark.parametrize("block", [None, 7])
def test_step_flat_equals_per_parameter_steps(backend, make, block, monkeypatch):
    """``step_flat`` (blocked; blocks of 7 cut through parameters and through the L2
    boundary) against ``step`` on separate arrays with the L2 gradient added by hand."""
    if backend.name == "jax":
        pytest.skip("flat views need in-place updates")
    if block:
        monkeypatch.setattr(_fused, "_BLOCK", block)
    xp = backend.xp
    P, G, views, gviews, shapes = _flat_params(backend)
    c, n_w = 0.05, 30 + 5  # decay the first weight, its bias... up to element 35
    ref_p = {str(i): Tensor(xp.asarray(v, copy=True), requires_grad=True)
             for i, v in enumerate(views)}
    flat = {str(i): Tensor(v, requires_grad=True) for i, v in enumerate(views)}
    for t in flat.values():
        t._own = True
    opt_ref, opt_flat = Optimizer(ref_p, make()), Optimizer(flat, make())
    Ph0 = backend.to_numpy(P)[:n_w].copy()
    for step in range(3):
        G2 = backend.to_numpy(G) * (step + 1)
        Gd = backend.asarray(G2)
        off = 0
        for i, s in enumerate(shapes):
            k = int(np.prod(s))
            g = G2[off:off + k].copy()
            lo, hi = off, min(off + k, n_w)
            p_host = backend.to_numpy(ref_p[str(i)].data).reshape(-1)
            if hi > lo:
                g[:hi - lo] += c * p_host[:hi - lo]
            ref_p[str(i)].grad = backend.asarray(g.reshape(s))
            off += k
        G[...] = Gd  # the flat gradient buffer, rewritten each step as the MLP step does
        for t, gv in zip(flat.values(), gviews):
            t.grad = gv
        sq = opt_flat.step_flat(P, G, list(flat), shapes, l2=(c, n_w))
        if step == 0:
            np.testing.assert_allclose(float(sq), float((Ph0 ** 2).sum()), rtol=backend.rtol)
        opt_ref.step()
    for i in range(len(shapes)):
        np.testing.assert_allclose(backend.to_numpy(flat[str(i)].data),
                                   backend.to_numpy(ref_p[str(i)].data), rtol=backend.rtol,
                                   atol=1e-12 if backend.is64 else 1e-6)
    st_ref, st_flat = opt_ref.state_dict(), opt_flat.state_dict()
    for k in st_ref:
        a, b = st_ref[k], st_flat[k]
        if isinstance(a, int):
            assert a == b
        else:
            np.testing.assert_allclose(backend.to_numpy(b), backend.to_numpy(a),
                                       rtol=backend.rtol, atol=1e-12 if backend.is64 else 1e-6)


@pytest.mark.parametrize("shift", [0.0, -1e3, 1e4])
def test_softmax_head_survives_rows_far_below_the_maximum(backend, shift):
    """The NumPy head shifts by the overall maximum and falls back to per-row maxima when
    a row underflows: values and gradients equal the tape's cross-entropy either way."""
    if backend.name == "jax":
        pytest.skip("the native head writes in place; JAX takes the portable head")
    g = np.random.default_rng(5)
    z = g.normal(size=(9, 4)) * 3
    z[2] += shift  # one row far below (or above) all the others
    T = backend.asarray(g.integers(0, 4, 9), dtype=backend.xp.int64)
    module = _net(backend, "relu", 4)
    step = FusedStep(layer_plan(module), "softmax", Optimizer(module, sgd(0.0)), backend.xp)
    zt = Tensor(backend.asarray(z), requires_grad=True)
    ref = L.cross_entropy(zt, T)
    ref.backward()
    value, dz = step._head(backend.asarray(z), T, None, 9, native=step.nat is not None)
    tol = dict(rtol=backend.rtol, atol=1e-12 if backend.is64 else 1e-5)
    np.testing.assert_allclose(float(value), ref.item(), **tol)
    np.testing.assert_allclose(backend.to_numpy(dz), backend.to_numpy(zt.grad), **tol)
    assert np.isfinite(float(value))


def test_device_branch_of_the_native_step_equals_the_tape(backend):
    """CuPy takes the native step without the host-only shortcuts (no data-dependent
    branch, ``sum`` instead of ``ufunc.reduce``); run that branch on NumPy here, so it is
    tested without a GPU."""
    if backend.name != "numpy":
        pytest.skip("NumPy stands in for CuPy's branch")
    xp = backend.xp
    X, T, w, k = _data(backend, "softmax", weighted=True)
    module = _net(backend, "tanh", k)
    ref = _tape_loss(backend, module, X, T, w, "softmax", 0.2, 23)
    ref.backward()
    want = [np.array(p.grad) for p in module.parameters()]
    for p in module.parameters():
        p.grad = None
    step = FusedStep(layer_plan(module), "softmax", Optimizer(module, sgd(0.0)), xp)
    step._host = False
    step._add_reduce = np.sum
    value = step(X, T, w, 0.2, 23)
    np.testing.assert_allclose(float(value), ref.item(), rtol=1e-12)
    for p, g in zip(module.parameters(), want):
        np.testing.assert_allclose(p.grad, g, rtol=1e-10, atol=1e-14)


def test_l2_block_device_branch(backend):
    """The L2 part of a flat step as CuPy runs it (``vecdot``, ``multiply(out=)``; NumPy
    stands in): ``g += c p`` over the block, and ``p @ p`` taken before."""
    if backend.name != "numpy":
        pytest.skip("NumPy stands in for CuPy's branch")
    xp = backend.xp
    g = np.random.default_rng(6)
    p0, g0 = g.normal(size=40), g.normal(size=40)
    p, gr, s = (backend.asarray(a.copy()) for a in (p0, g0, np.zeros(40)))
    sq = _fused._l2_part(xp, False, (p[:25], gr[:25], s[:25]), 0.3)
    np.testing.assert_allclose(float(sq), (p0[:25] ** 2).sum(), rtol=backend.rtol)
    want = g0.copy()
    want[:25] += 0.3 * p0[:25]
    np.testing.assert_allclose(backend.to_numpy(gr), want, rtol=backend.rtol, atol=1e-6)
    np.testing.assert_array_equal(backend.to_numpy(p), backend.to_numpy(backend.asarray(p0)))
