"""Divergence is seen: finite but exploding losses raise DivergenceError, and the model is
left at a consistent state from before the divergence that a warm continuation trains."""

from __future__ import annotations

import numpy as np
import pytest

import xpdl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _data(backend):
    X, y = xpdl.datasets.make_classification(120, 5, n_classes=3, random_state=0,
                                             dtype=np.float64)
    return backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64), X, y


def _state(backend, m):
    params = [backend.to_numpy(p.data) for p in m.module_.parameters()]
    opt = {k: (backend.to_numpy(v) if not isinstance(v, (int, float, tuple)) else v)
           for k, v in m._optimizer.state_dict().items()}
    return params, opt


def _full_loss(m, X, y):
    """Mean cross-entropy of the current parameters, computed with NumPy from coefs_."""
    a = X
    host = xpdl._namespace.to_host
    W = [np.asarray(host(c), dtype=np.float64) for c in m.coefs_]
    b = [np.asarray(host(c), dtype=np.float64) for c in m.intercepts_]
    for i, (Wi, bi) in enumerate(zip(W, b)):
        a = a @ Wi + bi
        if i < len(W) - 1:
            a = np.maximum(a, 0)
    a = a - a.max(axis=1, keepdims=True)
    logp = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def _full_loss_initial(kw, Xb, yb, X, y):
    """The untrained model's loss: a fit with learning rate ~0 leaves the parameters put."""
    m = xpdl.MLPClassifier(**dict(kw, optimizer="sgd", learning_rate=1e-300, max_iter=1))
    return _full_loss(m.fit(Xb, yb), X, y)


@pytest.mark.parametrize("optimizer,lr,batch_size", [
    ("adam", 1e3, None), ("adam", 1e3, 40), ("rmsprop", 1e3, None), ("rmsprop", 1e3, 40),
    ("adagrad", 1e3, None), ("adagrad", 1e3, 40), ("sgd", 1e3, 40),
    ("sgd", 10.0, None), ("sgd", 30.0, None)])  # the last two diverge after a few epochs
def test_exploding_finite_loss_raises_and_rolls_back(backend, optimizer, lr, batch_size):
    Xb, yb, X, y = _data(backend)
    kw = dict(hidden_layer_sizes=(8,), optimizer=optimizer, learning_rate=lr,
              batch_size=batch_size, max_iter=40, random_state=0)
    m = xpdl.MLPClassifier(**kw)
    with pytest.raises(xpdl.DivergenceError, match="diverged at epoch"):
        m.fit(Xb, yb)
    assert m.n_iter_ == len(m.loss_curve_)
    assert all(np.isfinite(m.loss_curve_))
    # The parameters are reasonable (their loss is near the start, not 1e6 times it) ...
    assert m._loss_ref == pytest.approx(_full_loss_initial(kw, Xb, yb, X, y), rel=1e-4)
    assert _full_loss(m, X, y) <= 10 * m._loss_ref
    # ... and they and the optimizer state are exactly those of a run of n_iter_ epochs.
    params, opt = _state(backend, m)
    if m.n_iter_:
        ref = xpdl.MLPClassifier(**dict(kw, max_iter=m.n_iter_)).fit(Xb, yb)
        ref_params, ref_opt = _state(backend, ref)
        assert m.t_ == ref.t_ and m._steps == ref._steps
        for a, b in zip(params, ref_params):
            np.testing.assert_array_equal(a, b)
        assert opt.keys() == ref_opt.keys()
        for k in ref_opt:
            np.testing.assert_array_equal(opt[k], ref_opt[k])
    else:  # back at the initial parameters, with an untouched optimizer
        assert m.t_ == m._steps == 0 and m.loss_curve_ == []
        assert all(not np.any(v) for v in opt.values())
        assert _full_loss(m, X, y) == pytest.approx(m._loss_ref, rel=1e-4)
    # A warm continuation at a small learning rate trains from there.
    before = _full_loss(m, X, y)
    m.set_params(learning_rate=1e-2 if optimizer != "sgd" else 1e-1, warm_start=True,
                 max_iter=30)
    m.fit(Xb, yb)
    assert m.n_iter_ == len(m.loss_curve_)
    assert _full_loss(m, X, y) < before


@pytest.mark.parametrize("solver", ["gd", "sgd", "adam"])
def test_logistic_iterative_solvers_see_divergence(backend, solver):
    Xb, yb, X, y = _data(backend)
    yb2 = backend.asarray((y > 0).astype(np.int64), dtype=backend.xp.int64)
    m = xpdl.LogisticRegression(solver=solver, learning_rate=1e3, max_iter=50)
    with pytest.raises(xpdl.DivergenceError, match="times the untrained model"):
        m.fit(Xb * 100, yb2)
    assert m.n_iter_ == len(m.loss_curve_)


def test_ordinary_training_is_not_flagged(backend):
    Xb, yb, _, _ = _data(backend)
    for opt, lr in [("adam", 1e-2), ("sgd", 0.5), ("rmsprop", 1e-2), ("adagrad", 0.1)]:
        m = xpdl.MLPClassifier((8,), optimizer=opt, learning_rate=lr, batch_size=20,
                               max_iter=30, random_state=0).fit(Xb, yb)
        assert m.loss_curve_[-1] < m.loss_curve_[0]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # (the point)
def test_data_too_large_for_the_dtype_says_to_scale_it(backend):
    # targets whose squares overflow the dtype gave "Lower the learning rate", which no
    # learning rate fixes: the untrained model's loss is already infinite
    X, _, Xh, _ = _data(backend)
    big = 1e200 if backend.is64 else 1e30
    y = backend.asarray(Xh[:, 0] * big)
    m = xpdl.MLPRegressor((4,), max_iter=3, random_state=0)
    with pytest.raises(xpdl.DivergenceError, match="too large for the model's floating dtype: "
                                                   "scale them") as err:
        m.fit(X, y)
    assert "Lower the learning rate" not in str(err.value) and err.value.epoch == 1
    with pytest.raises(xpdl.DivergenceError, match="Lower the learning rate"):
        xpdl.MLPRegressor((4,), max_iter=30, learning_rate=1e6, random_state=0).fit(
            X, backend.asarray(Xh[:, 0]))
