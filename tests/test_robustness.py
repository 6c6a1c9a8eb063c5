"""Training state through every sequence of calls, hyperparameter validation, and extreme
but finite data (#17 items 5-7)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpdl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _clf_data(backend):
    X, y = xpdl.datasets.make_classification(90, 4, n_classes=3, random_state=0,
                                             dtype=np.float64)
    return backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64)


# -- 5. training state survives every sequence -------------------------------------------
SEQUENCES = {
    "early_stopping then partial_fit":
        lambda M, X, y, p: M(early_stopping=True).fit(X, y).partial_fit(X, y),
    "save/load then partial_fit":
        lambda M, X, y, p: _reload(M().fit(X, y), p).partial_fit(X, y),
    "early_stopping, save/load, partial_fit, warm fit":
        lambda M, X, y, p: _reload(M(early_stopping=True).fit(X, y), p).partial_fit(X, y)
        .set_params(warm_start=True).fit(X, y),
    "warm: early_stopping switched on":
        lambda M, X, y, p: M(warm_start=True).fit(X, y).set_params(early_stopping=True)
        .fit(X, y),
    "warm: early_stopping switched off":
        lambda M, X, y, p: M(warm_start=True, early_stopping=True).fit(X, y)
        .set_params(early_stopping=False).fit(X, y),
    "partial_fit, warm early_stopping fit, partial_fit":
        lambda M, X, y, p: M().partial_fit(X, y).set_params(warm_start=True,
                                                           early_stopping=True)
        .fit(X, y).partial_fit(X, y),
    "warm: new learning rate and optimizer":
        lambda M, X, y, p: M(warm_start=True).fit(X, y).set_params(learning_rate=1e-2)
        .fit(X, y).set_params(optimizer="sgd").fit(X, y),
    "DP fit, partial_fit, save/load, partial_fit":
        lambda M, X, y, p: _reload(M(dp_noise_multiplier=1.0).fit(X, y).partial_fit(X, y),
                                   p).partial_fit(X, y),
}


def _reload(m, path):
    xpdl.save(m, path)
    return xpdl.load(path, xp=m._xp, device=m._device)


@pytest.mark.parametrize("name", sorted(SEQUENCES))
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_every_sequence_trains_consistently(backend, tmp_path, name, kind):
    X, y = _clf_data(backend)
    if kind == "regressor":
        y = backend.xp.astype(y, X.dtype)
        Est = xpdl.MLPRegressor
    else:
        Est = xpdl.MLPClassifier

    def make(**kw):
        return Est((5,), max_iter=4, random_state=0, **kw)

    m = SEQUENCES[name](make, X, y, str(tmp_path / "m.safetensors"))
    assert m.n_iter_ == len(m.loss_curve_)
    assert all(math.isfinite(v) for v in m.loss_curve_)
    # best_loss_ is None while early stopping tracks validation scores, else the lowest loss
    assert m.best_loss_ is None or m.best_loss_ == pytest.approx(min(m.loss_curve_))
    out = m.predict(X)
    assert out.shape[0] == X.shape[0]


@pytest.mark.parametrize("change", [dict(hidden_layer_sizes=(7,)), dict(activation="tanh"),
                                    dict(dropout=0.3)])
def test_changed_architecture_on_a_warm_fit_is_a_clear_error(backend, change):
    X, y = _clf_data(backend)
    m = xpdl.MLPClassifier((5,), max_iter=3, warm_start=True, random_state=0).fit(X, y)
    before = [backend.to_numpy(p.data) for p in m.module_.parameters()]
    name = next(iter(change))
    with pytest.raises(ValueError, match=f"{name} changed .*warm_start=False"):
        m.set_params(**change).fit(X, y)
    with pytest.raises(ValueError, match=f"{name} changed"):
        m.partial_fit(X, y)
    for a, p in zip(before, m.module_.parameters()):  # nothing was trained or lost
        np.testing.assert_array_equal(a, backend.to_numpy(p.data))
    m.set_params(warm_start=False).fit(X, y)  # a fresh fit takes the new architecture
    assert m.predict_proba(X).shape == (X.shape[0], 3)


def test_changed_dtype_on_a_warm_fit_is_a_clear_error(backend):
    """set_params(dtype=...) then a warm fit kept training the parameters in the old dtype
    without a word; now it is refused like a changed architecture (naming the model's own
    dtype, or None, is no change)."""
    X, y = _clf_data(backend)
    m = xpdl.MLPClassifier((5,), max_iter=2, warm_start=True, random_state=0).fit(X, y)
    cur = str(m.module_[0].weight.dtype).split(".")[-1]
    other = "float32" if cur == "float64" else "float64"
    before = [backend.to_numpy(p.data) for p in m.module_.parameters()]
    with pytest.raises(ValueError, match=f"dtype changed from None to '{other}'.*are {cur}"):
        m.set_params(dtype=other).fit(X, y)
    for a, p in zip(before, m.module_.parameters()):
        np.testing.assert_array_equal(a, backend.to_numpy(p.data))
    for same in (cur, None):
        m.set_params(dtype=same).fit(X, y)
        assert str(m.module_[0].weight.dtype).split(".")[-1] == cur
    assert m.n_iter_ == 6


def test_a_new_learning_rate_keeps_the_optimizer_moments(backend):
    """warm_start with a changed learning rate equals an optimizer whose lr changed in
    place: the same parameters as torch.optim.Adam with param_group['lr'] set between."""
    X, y = _clf_data(backend)
    kw = dict(hidden_layer_sizes=(5,), batch_size=None, max_iter=3, random_state=0,
              warm_start=True, alpha=0.0, tol=0.0)
    m = xpdl.MLPClassifier(**kw).fit(X, y)
    st = {k: v for k, v in m._optimizer.state_dict().items()}
    m.set_params(learning_rate=1e-2).fit(X, y)
    after = m._optimizer.state_dict()
    assert int(after["step"] if "step" in after else m._steps) == 6 or m._steps == 6
    # The moments carried on: the second moment grew from its previous value, not from 0.
    key = next(k for k in st if "exp_avg_sq" in k)
    assert float(backend.xp.sum(after[key])) > float(backend.xp.sum(st[key])) * 0.5


@pytest.mark.parametrize("Est", [xpdl.MLPClassifier, xpdl.LogisticRegression])
def test_partial_fit_classes_in_any_order(backend, Est):
    X, y = _clf_data(backend)
    kw = dict(solver="sgd") if Est is xpdl.LogisticRegression else dict(
        hidden_layer_sizes=(5,), random_state=0)
    m = Est(**kw).partial_fit(X[:10, ...], y[:10], classes=[2, 0, 1])
    assert backend.to_numpy(m.classes_).tolist() == [0, 1, 2]
    m.partial_fit(X, y)
    m.partial_fit(X, y, classes=np.array([1, 2, 0]))
    with pytest.raises(ValueError, match="at least two classes"):
        Est(**kw).partial_fit(X, y, classes=[1])
    with pytest.raises(ValueError, match="not the same as on the first call"):
        m.partial_fit(X, y, classes=[0, 1, 2, 3])


def test_closed_form_models_continue_with_an_iterative_solver(tmp_path, backend):
    X, y = _clf_data(backend)
    yr = backend.xp.astype(y, X.dtype)
    m = _reload(xpdl.LinearRegression().fit(X, yr), str(tmp_path / "l.safetensors"))
    m.set_params(solver="sgd", learning_rate=1e-3).partial_fit(X, yr)
    assert len(m.loss_curve_) == 1 and math.isfinite(m.loss_curve_[0])
    lg = xpdl.LogisticRegression().fit(X, y)
    assert not hasattr(lg, "partial_fit")  # lbfgs has none, as in scikit-learn
    lg.set_params(solver="adam").partial_fit(X, y)
    assert len(lg.loss_curve_) >= 1


# -- 6. every hyperparameter is validated ------------------------------------------------
NAN, INF = float("nan"), float("inf")
BAD_MLP = [("alpha", NAN), ("alpha", INF), ("alpha", "1"), ("alpha", None), ("alpha", -1.0),
           ("learning_rate", NAN), ("learning_rate", INF), ("learning_rate", None),
           ("learning_rate", "0.1"), ("learning_rate", 0.0),
           ("dp_noise_multiplier", NAN), ("dp_noise_multiplier", INF),
           ("dp_noise_multiplier", "1"), ("dp_max_grad_norm", NAN), ("dp_max_grad_norm", INF),
           ("dp_max_grad_norm", None), ("dp_delta", NAN), ("tol", NAN), ("tol", -1.0),
           ("tol", None), ("n_iter_no_change", 0), ("n_iter_no_change", 2.5),
           ("n_iter_no_change", None), ("max_iter", 1.5), ("max_iter", None),
           ("batch_size", "big"), ("batch_size", 0), ("early_stopping", "yes"),
           ("warm_start", None), ("verbose", "no"), ("random_state", -1),
           ("random_state", "a"), ("validation_fraction", NAN), ("validation_fraction", 1.0),
           ("dropout", NAN), ("dropout", 1.0), ("hidden_layer_sizes", "10"),
           ("hidden_layer_sizes", None), ("hidden_layer_sizes", (4, 0)),
           ("activation", None), ("optimizer", 3)]


@pytest.mark.parametrize("name,value", BAD_MLP, ids=[f"{k}={v!r}" for k, v in BAD_MLP])
def test_mlp_hyperparameters_are_validated(name, value):
    X, y = xpdl.datasets.make_classification(30, 3, random_state=0)
    kw = {"hidden_layer_sizes": (3,), "max_iter": 2, name: value}
    with pytest.raises(ValueError, match=name):
        xpdl.MLPClassifier(**kw).fit(X, y)


# (C=inf is scikit-learn's spelling of no penalty: accepted, tested in test_estimators)
BAD_LINEAR = [("C", NAN), ("C", -INF), ("C", None), ("C", 0.0), ("max_iter", 0),
              ("max_iter", NAN), ("tol", NAN), ("fit_intercept", "no"), ("alpha", NAN),
              ("alpha", INF), ("alpha", None), ("learning_rate", NAN), ("solver", None)]


@pytest.mark.parametrize("name,value", BAD_LINEAR, ids=[f"{k}={v!r}" for k, v in BAD_LINEAR])
@pytest.mark.parametrize("iterative", [False, True])
def test_linear_model_hyperparameters_are_validated(name, value, iterative):
    X, y = xpdl.datasets.make_classification(30, 3, random_state=0)
    Est = xpdl.LogisticRegression if name == "C" else xpdl.LinearRegression
    if name in ("C",) or (name in ("max_iter", "tol", "fit_intercept") and iterative):
        Est = xpdl.LogisticRegression
    target = y if Est is xpdl.LogisticRegression else y * 1.0
    solver = ("sgd" if iterative else ("lbfgs" if Est is xpdl.LogisticRegression else
                                       "lstsq"))
    if name == "solver":
        solver = value
    kw = {"solver": solver, **({} if name == "solver" else {name: value})}
    if name == "alpha" and Est is xpdl.LogisticRegression:
        pytest.skip("LogisticRegression has C, not alpha")
    with pytest.raises(ValueError, match=name):
        Est(**kw).fit(X, target)


def test_numpy_scalars_are_valid_hyperparameters():
    X, y = xpdl.datasets.make_classification(40, 3, random_state=0)
    m = xpdl.MLPClassifier(np.int64(4), max_iter=np.int64(3), learning_rate=np.float32(1e-2),
                           alpha=np.float64(0.0), batch_size=np.int32(20),
                           early_stopping=np.bool_(False), random_state=np.int64(1)).fit(X, y)
    ref = xpdl.MLPClassifier(4, max_iter=3, learning_rate=float(np.float32(1e-2)), alpha=0.0,
                             batch_size=20, random_state=1).fit(X, y)
    np.testing.assert_array_equal(m.predict_proba(X), ref.predict_proba(X))


@pytest.mark.parametrize("labels", [
    np.array([1.0, np.inf] * 15), np.array([-np.inf, 2.0] * 15), np.array([1 + 1j, 2] * 15),
    np.array([1.0, -np.inf] * 15, dtype=object), np.array([1 + 2j, 3 + 0j] * 15, dtype=object),
], ids=["inf", "-inf", "complex", "inf-object", "complex-object"])
def test_infinite_and_complex_labels_are_refused(labels):
    X, _ = xpdl.datasets.make_classification(30, 3, random_state=0)
    with pytest.raises(ValueError, match="infinity|complex"):
        xpdl.MLPClassifier((3,), max_iter=2).fit(X, labels)
    with pytest.raises(ValueError, match="infinity|complex"):
        xpdl.LogisticRegression().fit(X, labels)


def test_infinite_and_complex_labels_on_the_device_are_refused(backend):
    X, _ = xpdl.datasets.make_classification(30, 3, random_state=0)
    y = backend.asarray(np.array([0.0, np.inf] * 15, dtype=np.float32),
                        dtype=backend.xp.float32)
    with pytest.raises(ValueError, match="infinity"):
        xpdl.LogisticRegression().fit(backend.asarray(X), y)


# -- 7. extreme but finite data ----------------------------------------------------------
def _regression():
    return xpdl.datasets.make_regression(50, 3, random_state=0, dtype=np.float64)


@pytest.mark.parametrize("scale", [1e200, 1e300, 1e-200, 1e-300])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_regression_fits_scaled_data(backend, scale, alpha, fit_intercept):
    """The solution on X * scale is the ridge solution of the unscaled problem with
    alpha / scale**2, formed here in float64 by NumPy (an independent solve)."""
    if not backend.is64:
        pytest.skip("the scales need float64")
    X, y = _regression()
    m = xpdl.LinearRegression(alpha=alpha, fit_intercept=fit_intercept).fit(
        backend.asarray(X * scale), backend.asarray(y))
    Xc = X - X.mean(0) if fit_intercept else X
    yc = y - y.mean() if fit_intercept else y
    a = alpha / scale / scale
    if a < 1e100:
        unscaled = np.linalg.solve(Xc.T @ Xc + a * np.eye(3), Xc.T @ yc)
        np.testing.assert_allclose(backend.to_numpy(m.coef_) * scale, unscaled, rtol=1e-9)
    else:  # the penalty dominates: coef = Xc^T yc / alpha in the scaled units
        ref = (Xc * scale).T @ yc / alpha
        np.testing.assert_allclose(backend.to_numpy(m.coef_), ref, rtol=1e-9)
    if fit_intercept and alpha == 0:
        np.testing.assert_allclose(float(m.intercept_), 0.0 - (X.mean(0) @ unscaled)
                                   + y.mean(), atol=1e-9)


def test_non_finite_alpha_is_a_value_error():
    X, y = _regression()
    for a in (NAN, INF, -INF):
        with pytest.raises(ValueError, match="alpha"):
            xpdl.LinearRegression(alpha=a).fit(X, y)


SCALE_FREE = [
    lambda: xpdl.LinearRegression(),
    lambda: xpdl.LinearRegression(solver="gd", max_iter=50),
    lambda: xpdl.LinearRegression(solver="adam", max_iter=5, random_state=0),
    # alpha=0: with an L2 term the MLPs follow scikit-learn, whose penalty is divided by
    # the total weight (equal weights c then change the objective; see
    # test_mlp_weights_are_repetitions)
    lambda: xpdl.MLPRegressor((4,), max_iter=5, random_state=0, alpha=0.0),
    lambda: xpdl.MLPClassifier((4,), max_iter=5, random_state=0, alpha=0.0),
]


@pytest.mark.parametrize("weight", [1e308, 1e-320])
@pytest.mark.parametrize("make", SCALE_FREE, ids=["lstsq", "gd", "adam", "mlpr", "mlpc"])
def test_extreme_equal_weights_equal_the_unweighted_fit(backend, make, weight):
    if not backend.is64:
        pytest.skip("1e308 and 1e-320 are float64 weights")
    if backend.name == "jax" and weight < 1e-300:
        pytest.skip("XLA on CPU flushes subnormal numbers to zero")
    X, y = _regression()
    if "Classifier" in type(make()).__name__:
        y = (y > 0).astype(np.int64)
    Xb = backend.asarray(X)
    yb = backend.asarray(y, dtype=backend.xp.int64 if y.dtype.kind == "i" else None)
    w = backend.asarray(np.full(50, weight))
    a = make().fit(Xb, yb, sample_weight=w)
    b = make().fit(Xb, yb)
    pa = a.predict_proba(Xb) if hasattr(a, "predict_proba") else a.predict(Xb)
    pb = b.predict_proba(Xb) if hasattr(b, "predict_proba") else b.predict(Xb)
    np.testing.assert_allclose(backend.to_numpy(pa), backend.to_numpy(pb), rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("weight", [1e308, 1e-320, 1e-3, 1.0, 1e3])
def test_extreme_weights_with_a_penalty_follow_scikit_learns_objective(backend, weight):
    """Ridge and penalised logistic regression weigh the data term by sum(w): the
    solution is that of the objective (closed form for ridge, scikit-learn's
    LogisticRegression for moderate weights; W -> 0 or the unpenalised limit for the
    extreme ones), never zero weights by underflow or a LinAlgError."""
    from sklearn.linear_model import LogisticRegression

    if not backend.is64:
        pytest.skip("the scales are beyond float32")
    if backend.name == "jax" and weight < 1e-300:
        # XLA on the CPU flushes subnormal numbers to zero: jnp.sum of 1e-320s is 0.0 and
        # 1e-320 > 0 is False, so such weights are zeros there (a clear error says so)
        pytest.skip("XLA flushes subnormal weights to zero")
    X, y = _regression()
    w = np.full(50, weight)
    Xb, wb = backend.asarray(X), backend.asarray(w)
    m = xpdl.LinearRegression(alpha=1.0).fit(Xb, backend.asarray(y), sample_weight=wb)
    Xc, yc = X - X.mean(0), y - y.mean()
    lam = 1.0 / weight  # the objective divided by the common weight
    ref = np.linalg.solve(Xc.T @ Xc + lam * np.eye(3), Xc.T @ yc) if lam < 1e300 else \
        weight * (Xc.T @ yc)
    np.testing.assert_allclose(backend.to_numpy(m.coef_), ref,
                               rtol=1e-8 if weight > 1e-300 else 1e-4, atol=0)
    yc2 = (y > 0).astype(np.int64)
    lg = xpdl.LogisticRegression(tol=1e-10, max_iter=500).fit(Xb, backend.asarray(yc2),
                                                              sample_weight=wb)
    coef = backend.to_numpy(lg.coef_)
    if 1e-3 <= weight <= 1e3:
        sk = LogisticRegression(tol=1e-12, max_iter=5000).fit(X, yc2, sample_weight=w)
        np.testing.assert_allclose(coef, sk.coef_, rtol=1e-4, atol=1e-6)
    elif weight < 1:  # the penalty dominates: W = 0, the intercept fits the base rate
        np.testing.assert_allclose(coef, 0.0, atol=1e-12)
        p = yc2.mean()
        assert float(lg.intercept_[0]) == pytest.approx(math.log(p / (1 - p)), rel=1e-6)
    else:  # the data dominate: the unpenalised fit (separable here, so large weights)
        assert np.all(np.isfinite(coef)) and np.abs(coef).max() > 10


@pytest.mark.parametrize("Est", [xpdl.MLPRegressor, xpdl.MLPClassifier])
def test_mlp_weights_are_repetitions(backend, Est):
    """Integer weights (zeros included) equal repeating the samples, L2 term and all, for a
    full-batch fit: scikit-learn's check_sample_weight_equivalence, which its own MLPs pass
    (their L2 term is divided by the total weight, not the sample count)."""
    if not backend.is64:
        pytest.skip("compares float64 fits")
    g = np.random.default_rng(42)
    X = g.random((15, 6))
    y = g.integers(0, 3, 15) if Est is xpdl.MLPClassifier else X @ g.normal(size=6)
    sw = g.integers(0, 5, 15)
    Xr, yr = np.repeat(X, sw, axis=0), np.repeat(y, sw)
    kw = dict(hidden_layer_sizes=(5,), batch_size=None, max_iter=30, alpha=0.5,
              learning_rate=1e-2, random_state=0, n_iter_no_change=10**6)
    as_y = (lambda a: backend.asarray(a, dtype=backend.xp.int64)) \
        if Est is xpdl.MLPClassifier else backend.asarray
    a = Est(**kw).fit(backend.asarray(X), as_y(y), sample_weight=backend.asarray(sw * 1.0))
    b = Est(**kw).fit(backend.asarray(Xr), as_y(yr))
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-9)
    method = "predict_proba" if Est is xpdl.MLPClassifier else "predict"
    np.testing.assert_allclose(backend.to_numpy(getattr(a, method)(backend.asarray(X))),
                               backend.to_numpy(getattr(b, method)(backend.asarray(X))),
                               rtol=1e-8, atol=1e-10)
