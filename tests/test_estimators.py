"""Estimators against scikit-learn, on every backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import xpdl
from xpdl import (
    LinearRegression,
    LogisticRegression,
    MLPClassifier,
    MLPRegressor,
)
from xpdl import _namespace as ns
from xpdl.estimators._base import InMemory

sklearn = pytest.importorskip("sklearn")
from sklearn import linear_model as sk_lm  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, load_iris  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _regression(n=80, p=4, k=None, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, p))
    coef = g.normal(size=(p,) if k is None else (p, k))
    y = X @ coef + 0.3 + 0.1 * g.normal(size=(n,) if k is None else (n, k))
    return X, y


def _tol(backend, strict=1e-8):
    return strict if backend.is64 else 2e-3


# -- LinearRegression ------------------------------------------------------------------
@pytest.mark.parametrize("k", [None, 3])
def test_linear_regression_matches_sklearn(backend, k):
    X, y = _regression(k=k)
    ref = sk_lm.LinearRegression().fit(X, y)
    m = LinearRegression().fit(backend.asarray(X), backend.asarray(y))
    tol = _tol(backend)
    np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(m.intercept_), ref.intercept_, rtol=tol,
                               atol=tol)
    assert m.coef_.device == backend.device
    assert m.score(backend.asarray(X), backend.asarray(y)) == pytest.approx(
        ref.score(X, y), rel=1e-6 if backend.is64 else 1e-3)
    if k is None:  # y as one column, scored against a fit on a 1-D y (scikit-learn's r2)
        assert m.score(backend.asarray(X), backend.asarray(y[:, None])) == pytest.approx(
            ref.score(X, y[:, None]), rel=1e-6 if backend.is64 else 1e-3)


def test_ridge_with_sample_weight_matches_sklearn(backend):
    X, y = _regression()
    sw = np.random.default_rng(1).uniform(0.1, 3, size=len(y))
    ref = sk_lm.Ridge(alpha=2.5).fit(X, y, sample_weight=sw)
    m = LinearRegression(alpha=2.5).fit(backend.asarray(X), backend.asarray(y),
                                        sample_weight=backend.asarray(sw))
    tol = _tol(backend)
    np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=tol, atol=tol)
    np.testing.assert_allclose(float(m.intercept_), ref.intercept_, rtol=tol, atol=tol)


def test_ill_conditioned_problem_falls_back_to_svd(backend):
    g = np.random.default_rng(3)
    X = g.normal(size=(300, 4))
    X[:, 3] = X[:, 0] + 1e-5 * g.normal(size=300)  # cond(X) ~ 1e5: Gram cond ~ 1e10
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.01 * g.normal(size=300)
    ref = sk_lm.LinearRegression().fit(X, y)
    m = LinearRegression().fit(backend.asarray(X), backend.asarray(y))
    assert m._lstsq_path == "svd"
    if backend.is64:
        np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=1e-7)
    well = LinearRegression().fit(backend.asarray(X[:, :3]), backend.asarray(y))
    assert well._lstsq_path == "gram"


def test_large_offsets_are_centred_before_the_gram_matrix(backend):
    if not backend.is64:
        pytest.skip("float64 comparison")  # (1e6 + x keeps ~1 significant digit of x)
    X, y = _regression(n=500)
    X = X + 1e6  # X^T X - n m m^T would cancel catastrophically here
    ref = sk_lm.LinearRegression().fit(X, y)
    m = LinearRegression().fit(backend.asarray(X), backend.asarray(y))
    np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=1e-8)
    np.testing.assert_allclose(backend.to_numpy(m.intercept_), ref.intercept_, rtol=1e-8)


def test_rank_deficient_lstsq_gives_min_norm_solution(backend):
    X, y = _regression()
    X = np.hstack([X, X[:, :1] * 2.0])  # a duplicated direction
    ref = sk_lm.LinearRegression().fit(X, y)
    m = LinearRegression().fit(backend.asarray(X), backend.asarray(y))
    tol = 1e-7 if backend.is64 else 2e-3
    np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=tol, atol=tol)


def test_no_intercept_matches_sklearn(backend):
    X, y = _regression()
    ref = sk_lm.LinearRegression(fit_intercept=False).fit(X, y)
    m = LinearRegression(fit_intercept=False).fit(backend.asarray(X), backend.asarray(y))
    np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=_tol(backend),
                               atol=_tol(backend))
    assert float(m.intercept_) == 0.0


def test_gradient_descent_converges_to_closed_form(backend):
    X, y = _regression()
    exact = LinearRegression(alpha=1.0).fit(X, y)
    m = LinearRegression(solver="gd", alpha=1.0, learning_rate=0.1, max_iter=3000,
                         tol=0.0).fit(backend.asarray(X), backend.asarray(y))
    tol = 1e-8 if backend.is64 else 1e-4
    np.testing.assert_allclose(backend.to_numpy(m.coef_), exact.coef_, rtol=tol, atol=tol)
    np.testing.assert_allclose(float(m.intercept_), float(exact.intercept_), atol=tol)
    assert m.loss_curve_[-1] <= m.loss_curve_[0]


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_minibatch_solvers_approach_closed_form(backend, solver):
    X, y = _regression(n=400)
    exact = LinearRegression().fit(X, y)
    m = LinearRegression(solver=solver, learning_rate=0.01 if solver == "sgd" else 0.05,
                         batch_size=32, max_iter=300, random_state=0,
                         tol=0.0).fit(backend.asarray(X), backend.asarray(y))
    np.testing.assert_allclose(backend.to_numpy(m.coef_), exact.coef_, atol=0.02)


def test_classic_teaching_example_on_every_backend(backend):
    """The article's example done right: y has shape (100,), not (100, 1), so the residual
    does not broadcast to (100, 100); GD for 1,500 iterations recovers least squares."""
    g = np.random.default_rng(42)
    X = g.normal(size=(100, 2))
    y = 3 * X @ np.array([0.5, 0.8]) + 0.5 * g.normal(size=100)
    lstsq = np.linalg.lstsq(X, y, rcond=None)[0]
    m = LinearRegression(solver="gd", fit_intercept=False, learning_rate=0.1, max_iter=1500,
                         tol=0.0).fit(backend.asarray(X), backend.asarray(y))
    assert m.n_iter_ <= 1500  # stops early once the loss no longer decreases
    theta = backend.to_numpy(m.coef_)
    np.testing.assert_allclose(theta, lstsq, rtol=1e-6 if backend.is64 else 1e-4)
    np.testing.assert_allclose(theta, [1.5, 2.4], atol=0.15)


# -- LogisticRegression ----------------------------------------------------------------
@pytest.mark.parametrize("loader", [load_breast_cancer, load_iris])
def test_logistic_lbfgs_matches_sklearn(backend, loader):
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ref = sk_lm.LogisticRegression().fit(X, y).predict_proba(X)
    m = LogisticRegression().fit(backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64))
    proba = m.predict_proba(backend.asarray(X))
    assert proba.device == backend.device
    assert np.abs(backend.to_numpy(proba) - ref).max() < 2e-3


def test_logistic_C_and_weights_match_sklearn():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    sw = np.random.default_rng(0).uniform(0.2, 2.0, size=len(y))
    ref = sk_lm.LogisticRegression(C=0.05, tol=1e-8, max_iter=1000).fit(X, y, sample_weight=sw)
    m = LogisticRegression(C=0.05, tol=1e-8, max_iter=1000).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.intercept_, ref.intercept_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_logistic_C_inf_is_unpenalised_like_sklearn(backend, k):
    """C=np.inf is scikit-learn's way to fit without a penalty (its penalty=None is
    deprecated since 1.8): accepted, and the same coefficients (to the solvers' tolerance
    on a well-conditioned problem)."""
    g = np.random.default_rng(0)
    X = g.normal(size=(80, 3))
    y = (X[:, 0] + 0.8 * g.normal(size=80) > 0).astype(int) if k == 2 else \
        np.digitize(X[:, 0] + 0.8 * g.normal(size=80), [-0.4, 0.4])
    ref = sk_lm.LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(X, y)
    # (float32 cannot reach tol=1e-10: it ran all 1000 iterations, 18 s a case)
    m = LogisticRegression(C=np.inf, tol=1e-10 if backend.is64 else 1e-5, max_iter=1000).fit(
        backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64))
    if k == 2:
        tol = 1e-5 if backend.is64 else 1e-2
        np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=tol, atol=tol)
    else:  # unpenalised softmax: defined up to a shift shared by the classes
        a, b = backend.to_numpy(m.coef_), ref.coef_
        tol = 1e-4 if backend.is64 else 5e-2
        np.testing.assert_allclose(a - a.mean(axis=0), b - b.mean(axis=0), rtol=tol, atol=tol)
    assert m.score(backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64)) == \
        pytest.approx(ref.score(X, y), abs=1e-6)


def test_logistic_string_labels_and_shapes():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    m = LogisticRegression().fit(X, names)
    assert list(m.classes_) == ["setosa", "versicolor", "virginica"]
    assert m.predict(X[:3]).tolist() == ["setosa"] * 3
    assert m.coef_.shape == (3, 4) and m.intercept_.shape == (3,)
    assert m.decision_function(X).shape == (150, 3)
    b = LogisticRegression().fit(X[:100], names[:100])
    assert b.coef_.shape == (1, 4) and b.decision_function(X[:100]).shape == (100,)
    assert b.score(X[:100], names[:100]) == 1.0


@pytest.mark.parametrize("kind", ["numbers", "strings"])
def test_score_counts_labels_unseen_in_fit_as_misses(backend, kind):
    """As scikit-learn's ``score`` (``accuracy_score``): a test label the model never saw
    (a rare class missing from a cross-validation fold's training part) is a miss, not an
    error; weights apply as usual."""
    from sklearn.metrics import accuracy_score

    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    train = y < 2
    labels = np.array([3, 7, 9]) if kind == "numbers" else np.array(["a", "b", "c"])
    put = backend.asarray if kind == "numbers" else (lambda a: a)
    m = LogisticRegression().fit(backend.asarray(X[train]), put(labels[y[train]]))
    pred = m.predict(backend.asarray(X))
    pred = backend.to_numpy(pred) if kind == "numbers" else pred
    w = np.linspace(0.5, 2.0, len(y))
    for sw in (None, w):
        want = accuracy_score(labels[y], pred, sample_weight=sw)
        got = m.score(backend.asarray(X), put(labels[y]),
                      sample_weight=None if sw is None else backend.asarray(sw))
        assert 0.5 < got < 0.7 and got == pytest.approx(want, rel=1e-6)
    # training on them is still an error, and leaves the model as it was
    c = MLPClassifier((4,), random_state=0).partial_fit(
        backend.asarray(X[train]), put(labels[y[train]]))
    before = [backend.to_numpy(p).copy() for p in c.module_.parameters()]
    with pytest.raises(ValueError, match="not in classes_"):
        c.partial_fit(backend.asarray(X), put(labels[y]))
    assert c.n_iter_ == 1
    for a, p in zip(before, c.module_.parameters()):
        np.testing.assert_array_equal(a, backend.to_numpy(p))


@pytest.mark.parametrize("solver", ["gd", "sgd", "adam"])
def test_logistic_iterative_solvers_approach_lbfgs(backend, solver):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    exact = LogisticRegression(tol=1e-8).fit(X, y).predict_proba(X)
    lr = {"gd": 1.0, "sgd": 0.3, "adam": 0.01}[solver]
    Xb = backend.asarray(X)
    m = LogisticRegression(solver=solver, learning_rate=lr, max_iter=400, batch_size=64,
                           random_state=0, tol=0.0).fit(Xb, backend.asarray(y))
    # Constant-step SGD ends in a noise ball around the optimum.
    err = np.abs(backend.to_numpy(m.predict_proba(Xb)) - exact).max()
    assert err < (0.08 if solver == "sgd" else 0.05)


# -- MLP -------------------------------------------------------------------------------
def test_mlp_reaches_096_on_digits_in_60_epochs():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=0)
    clf = MLPClassifier((100,), max_iter=60, random_state=0).fit(Xtr, ytr)
    assert clf.n_iter_ <= 60
    assert clf.score(Xte, yte) >= 0.96


def test_mlp_regressor_fits_a_smooth_function(backend):
    g = np.random.default_rng(0)
    Xh = g.uniform(-2, 2, size=(400, 2))
    yh = np.sin(Xh[:, 0]) + Xh[:, 1] ** 2 / 4
    X, y = backend.asarray(Xh), backend.asarray(yh)
    m = MLPRegressor((32, 32), activation="tanh", learning_rate=1e-2, max_iter=300,
                     random_state=0).fit(X, y)
    assert m.score(X, y) > 0.97
    assert tuple(m.predict(X).shape) == (400,)
    m2 = MLPRegressor((8,), max_iter=5, random_state=0).fit(
        X, backend.asarray(np.stack([yh, -yh], axis=1)))
    assert tuple(m2.predict(X).shape) == (400, 2)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor, LogisticRegression,
                                 LinearRegression])
def test_namespace_in_equals_namespace_out(backend, Est):
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    kw = {"random_state": 0}
    if Est in (MLPClassifier, MLPRegressor):
        kw.update(hidden_layer_sizes=(8,), max_iter=5)
    Xb = backend.asarray(X)
    yb = backend.asarray(y, dtype=backend.xp.int64) if Est in (
        MLPClassifier, LogisticRegression) else backend.asarray(y.astype(float))
    m = Est(**kw).fit(Xb, yb)
    outs = [m.predict(Xb)]
    if hasattr(m, "predict_proba"):
        outs.append(m.predict_proba(Xb))
        outs.append(m.classes_)
    if hasattr(m, "coefs_"):
        outs += m.coefs_ + m.intercepts_
    else:
        outs += [m.coef_, m.intercept_]
    for o in outs:
        assert ns.array_namespace(o) is backend.xp
        assert ns.device_of(o) == backend.device
    # y given as NumPy follows X.
    m2 = Est(**kw).fit(Xb, y if Est in (MLPClassifier, LogisticRegression) else y * 1.0)
    np.testing.assert_allclose(backend.to_numpy(m2.predict(Xb)),
                               backend.to_numpy(outs[0]), rtol=1e-6)


def test_other_namespace_at_predict_is_a_clear_error():
    torch = pytest.importorskip("torch")
    X, y = _regression()
    m = LinearRegression().fit(X, y)
    with pytest.raises(TypeError, match="fitted on numpy.*got torch.*to\\(xp="):
        m.predict(torch.tensor(X))
    import array_api_compat.torch as txp

    m.to(xp=txp)
    out = m.predict(torch.tensor(X))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), sk_lm.LinearRegression().fit(X, y).predict(X),
                               rtol=1e-8)


def test_mixed_device_at_predict_is_a_value_error():
    strict = pytest.importorskip("array_api_strict")
    X, y = _regression()
    d1 = strict.Device("device1")
    m = LinearRegression().fit(strict.asarray(X, device=d1), strict.asarray(y, device=d1))
    with pytest.raises(ValueError, match="device"):
        m.predict(strict.asarray(X))
    m.to(device=strict.Device("CPU_DEVICE"))
    assert m.predict(strict.asarray(X)).device == strict.Device("CPU_DEVICE")


def test_same_seed_same_results_across_backends(backend):
    if not backend.is64:
        pytest.skip("compares float64 trajectories")
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    kw = dict(hidden_layer_sizes=(16,), batch_size=32, max_iter=15, dropout=0.1,
              random_state=3, learning_rate=1e-2)
    ref = MLPClassifier(**kw).fit(X, y)
    m = MLPClassifier(**kw).fit(backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64))
    np.testing.assert_allclose(backend.to_numpy(m.predict_proba(backend.asarray(X))),
                               ref.predict_proba(X), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(m.loss_curve_, ref.loss_curve_, rtol=1e-8)


def test_warm_start_continues_like_one_long_fit(backend):
    Xh, yh = load_iris(return_X_y=True)
    X, y = backend.asarray(Xh), backend.asarray(yh)
    kw = dict(hidden_layer_sizes=(10,), batch_size=30, dropout=0.2, random_state=0,
              learning_rate=1e-2, optimizer="adam", n_iter_no_change=10**6)
    full = MLPClassifier(max_iter=7, **kw).fit(X, y)
    part = MLPClassifier(max_iter=3, warm_start=True, **kw).fit(X, y)
    part.set_params(max_iter=4).fit(X, y)
    assert part.n_iter_ == 7 and part.t_ == full.t_ == 7 * 150
    assert part.loss_curve_ == full.loss_curve_
    for a, b in zip(part.coefs_, full.coefs_):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_partial_fit_and_classes(backend):
    Xh, yh = load_iris(return_X_y=True)
    X, y = backend.asarray(Xh), backend.asarray(yh)
    m = MLPClassifier((8,), learning_rate=1e-2, random_state=0)
    # (rows 0-49 are all class 0: classes= names the others)
    m.partial_fit(backend.asarray(Xh[:50]), backend.asarray(yh[:50]),
                  classes=np.array([0, 1, 2]))
    assert backend.to_numpy(m.classes_).tolist() == [0, 1, 2]
    for _ in range(30):
        m.partial_fit(X, y)
    assert m.n_iter_ == 31 and m.loss_curve_[-1] < m.loss_curve_[1]
    assert not hasattr(LinearRegression(), "partial_fit")
    assert hasattr(LinearRegression(solver="sgd"), "partial_fit")


def test_sample_weight_ones_equal_none_and_zero_weight_ignored(backend):
    Xh, yh = _regression()
    X, y = backend.asarray(Xh), backend.asarray(yh)
    tol = 1e-10 if backend.is64 else 1e-4
    a = MLPRegressor((5,), max_iter=5, random_state=0).fit(X, y)
    b = MLPRegressor((5,), max_iter=5, random_state=0).fit(
        X, y, sample_weight=backend.asarray(np.ones(len(yh))))
    np.testing.assert_allclose(backend.to_numpy(a.predict(X)), backend.to_numpy(b.predict(X)),
                               rtol=tol, atol=tol)
    # LinearRegression (closed form): zero weights are the same as dropping the samples.
    w = np.ones(len(yh))
    w[:10] = 0
    c = LinearRegression().fit(X, y, sample_weight=backend.asarray(w))
    d = LinearRegression().fit(backend.asarray(Xh[10:]), backend.asarray(yh[10:]))
    np.testing.assert_allclose(backend.to_numpy(c.coef_), backend.to_numpy(d.coef_),
                               rtol=tol, atol=tol)


def test_early_stopping_restores_best_weights(backend):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    m = MLPClassifier((32,), early_stopping=True, n_iter_no_change=3, max_iter=200,
                      learning_rate=3e-2, random_state=0).fit(backend.asarray(X),
                                                               backend.asarray(y))
    assert m.n_iter_ < 200
    assert len(m.validation_scores_) == m.n_iter_
    assert m.best_validation_score_ == max(m.validation_scores_)
    # Re-score the restored weights on the same stratified split.
    g = xpdl.random.Generator(0)
    _, val = g.split_indices(len(y), 0.1, y)
    assert m.score(backend.asarray(X[val]), backend.asarray(y[val])) == \
        pytest.approx(m.best_validation_score_)
    counts = np.bincount(y[val], minlength=10)
    assert counts.min() >= 17 and counts.max() <= 19  # stratified: ~18 of each digit


def test_warm_fit_without_improvement_goes_back_to_the_best_weights(backend):
    """A warm early-stopping fit that finds no better validation score ends on the best
    weights so far, exactly (as scikit-learn's). The restored weights were the stored
    arrays themselves, so the next fit's in-place steps changed the stored best too
    (where steps run without compile_step's flat layout: array_api_strict)."""
    X, y = xpdl.datasets.make_classification(80, 4, n_classes=3, random_state=0,
                                             xp=backend.xp, device=backend.device,
                                             dtype=backend.float_dtype)
    m = MLPClassifier((6,), early_stopping=True, max_iter=3, optimizer="sgd",
                      learning_rate=1e-2, random_state=0, warm_start=True).fit(X, y)
    best = [backend.to_numpy(p).copy() for p in m.module_.parameters()]
    score = m.best_validation_score_
    m.set_params(learning_rate=1e-9).fit(X, y)  # steps too small to change the score
    assert m.best_validation_score_ == score and m.n_iter_ == 6
    for a, p in zip(best, m.module_.parameters()):
        np.testing.assert_array_equal(backend.to_numpy(p), a)


def test_divergence_raises_and_keeps_finite_parameters(backend):
    X, y = _regression()
    m = MLPRegressor((16,), optimizer="sgd", learning_rate=1e3, batch_size=10, max_iter=50,
                     random_state=0)
    with pytest.raises(xpdl.DivergenceError, match=r"epoch \d+.*[Ll]ower the learning rate"):
        m.fit(backend.asarray(X * 100), backend.asarray(y))
    for c in m.coefs_:
        assert np.all(np.isfinite(backend.to_numpy(c)))
    assert all(np.isfinite(v) for v in m.loss_curve_)


@pytest.mark.parametrize("Est", [LinearRegression, LogisticRegression, MLPClassifier,
                                 MLPRegressor])
def test_not_fitted_error(Est):
    with pytest.raises(xpdl.NotFittedError, match="not fitted"):
        Est().predict(np.ones((2, 3)))
    assert issubclass(xpdl.NotFittedError, ValueError)
    assert issubclass(xpdl.NotFittedError, AttributeError)


def test_verbose_shows_progress_bar(capsys):
    X, y = load_iris(return_X_y=True)
    MLPClassifier((4,), max_iter=3, verbose=True, random_state=0).fit(X, y)
    err = capsys.readouterr().err
    assert "MLPClassifier" in err and "loss=" in err


def test_dtype_parameter(backend):
    Xh, yh = load_iris(return_X_y=True)
    X, y = backend.asarray(Xh), backend.asarray(yh)
    m = MLPClassifier((4,), max_iter=2, dtype="float32", random_state=0).fit(X, y)
    assert m.coefs_[0].dtype == backend.xp.float32
    m = MLPClassifier((4,), max_iter=2, random_state=0).fit(
        backend.asarray(Xh.astype(np.int64)), y)
    assert m.coefs_[0].dtype == backend.xp.float32  # (other inputs become float32)
    m = MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    assert m.coefs_[0].dtype == backend.float_dtype  # a floating input keeps its dtype


# -- scikit-learn integration ----------------------------------------------------------
def test_pipeline_gridsearch_cross_val_score():
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline

    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.9
    gs = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(max_iter=30,
                                                                    random_state=0)),
                      {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)],
                       "mlpclassifier__learning_rate": [1e-2]}, cv=3).fit(X, y)
    assert gs.best_score_ > 0.85
    Xr, yr = _regression()
    assert cross_val_score(LinearRegression(alpha=0.1), Xr, yr, cv=3).mean() > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("est", [LinearRegression(), LogisticRegression(),
                                 MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)],
                         ids=lambda e: type(e).__name__)
def test_check_estimator(est):
    """scikit-learn's full suite with no expected failures (weights are repetitions for
    the MLPs too: their L2 term is divided by the total weight, as in scikit-learn)."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(est)


_DISPATCH_CHECK = """
import warnings
import sklearn
from sklearn.utils.estimator_checks import check_estimator
import xpdl
failed = []
with sklearn.config_context(array_api_dispatch=True):
    for est in [xpdl.LinearRegression(), xpdl.LogisticRegression(),
                xpdl.MLPClassifier(max_iter=100), xpdl.MLPRegressor(max_iter=100)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for r in check_estimator(est, on_fail=None):
                if r["status"] == "failed":
                    failed.append((type(est).__name__, r["check_name"], str(r["exception"])))
print("FAILED", failed)
print("CHECKS RUN")
"""


@pytest.mark.slow
def test_check_estimator_with_array_api_dispatch():
    """With SCIPY_ARRAY_API=1 and array_api_dispatch=True (set before SciPy is imported,
    hence a fresh interpreter), every check passes for all four estimators, among them
    check_array_api_same_namespace: predicting with another namespace than fit's raises
    the ValueError it expects, naming the method."""
    import os
    import subprocess
    import sys

    pytest.importorskip("array_api_strict")
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    out = subprocess.run([sys.executable, "-c", _DISPATCH_CHECK], env=env,
                         capture_output=True, text=True, timeout=600)
    assert "CHECKS RUN" in out.stdout, out.stderr[-3000:]
    assert "FAILED []" in out.stdout, out.stdout[-3000:]


_JAX32_CHECK = """
import warnings
warnings.simplefilter("error")  # JAX warns when int64 is asked for and truncated
warnings.filterwarnings("ignore", message=".*max_iter.*")  # a short fit, on purpose
import numpy as np, jax.numpy as jnp
import xpdl
from xpdl.datasets import make_classification
X, y = make_classification(120, 6, n_classes=3, random_state=0)
Xj = jnp.asarray(X, dtype=jnp.float32)
for labels in (jnp.asarray(y.astype(np.int32)), np.array(["a", "b", "c"])[y],
               jnp.asarray(y == 1)):
    for est in (xpdl.MLPClassifier((8,), max_iter=300, random_state=0),
                xpdl.LogisticRegression()):
        est.fit(Xj, labels)
        pred = est.predict(Xj)
        assert float(np.mean(np.asarray(pred) == np.asarray(labels))) > 0.6, type(est)
m = xpdl.MLPClassifier((8,), max_iter=300, random_state=0).fit(Xj, jnp.asarray(y))
a = xpdl.explain.integrated_gradients(m.module_, Xj[:4], target=1)
b = xpdl.explain.integrated_gradients(m.module_, Xj[:4], target=np.array([1, 1, 1, 1]))
assert a.dtype == jnp.float32 and bool(jnp.all(a == b))
print("JAX32 OK")
"""


def test_jax_without_x64_fits_without_dtype_warnings():
    """With JAX's default configuration (no float64, no int64), encoded labels and explain's
    targets use the namespace's default index dtype (int32 there): fitting, predicting and
    explaining warn about nothing (a fresh interpreter: the suite's JAX backend turns x64 on).
    """
    import subprocess
    import sys

    pytest.importorskip("jax")
    out = subprocess.run([sys.executable, "-c", _JAX32_CHECK], capture_output=True,
                         text=True, timeout=600)
    assert "JAX32 OK" in out.stdout, out.stderr[-3000:]


def test_other_namespace_at_predict_names_the_method():
    pytest.importorskip("array_api_strict")
    import array_api_strict as xps

    X, y = _regression(n=30)
    m = LinearRegression().fit(xps.asarray(X), xps.asarray(y))
    for method in ("predict", "score"):
        args = (X,) if method == "predict" else (X, y)
        with pytest.raises(ValueError, match=rf"LinearRegression\.{method}\(\) must use the "
                                             r"same namespace"):
            getattr(m, method)(*args)
        with pytest.raises(TypeError, match="fitted on array_api_strict"):
            getattr(m, method)(*args)


def test_l2_penalty_gradient_matches_autodiff():
    """The estimators add the L2 gradient by hand; check one full-batch GD step against
    autodiff of data loss + alpha/(2n) * sum ||W||^2."""
    import xpdl.functional as F
    from xpdl.losses import mse

    X, y = _regression(n=30)
    kw = dict(hidden_layer_sizes=(5,), alpha=0.7, optimizer="gd", batch_size=None,
              max_iter=1, random_state=0)
    before = MLPRegressor(learning_rate=1e-30, **kw).fit(X, y)
    after = MLPRegressor(learning_rate=0.1, **kw).fit(X, y)
    W1, b1, W2, b2 = [p.data for p in before.module_.parameters()]

    def objective(W1, b1, W2, b2):
        out = F.linear(F.relu(F.linear(X, W1, b1)), W2, b2)
        data = mse(out, y.reshape(-1, 1)) * 0.5
        return data + ((W1 * W1).sum() + (W2 * W2).sum()) * (0.7 / (2 * len(y)))

    grads = xpdl.grad(objective, argnums=(0, 1, 2, 3))(W1, b1, W2, b2)
    for p0, p1, g in zip([W1, b1, W2, b2], after.module_.parameters(), grads):
        np.testing.assert_allclose((p0 - p1.data) / 0.1, g, rtol=1e-7, atol=1e-10)
    start = objective(*[xpdl.Tensor(a) for a in (W1, b1, W2, b2)]).item()
    assert before.loss_curve_[0] == pytest.approx(start, rel=1e-12)


def test_training_steps_make_no_host_round_trips(monkeypatch):
    """On array_api_strict's device1, count every conversion of a device array to a host
    value during training: it must not grow with the number of minibatches (the per-epoch
    loss readout is the only one; shuffles go host -> device, never back)."""
    strict = pytest.importorskip("array_api_strict")
    d1 = strict.Device("device1")
    Array = type(strict.asarray(1.0))
    counts = {"n": 0}
    cpu = strict.Device("CPU_DEVICE")
    for name in ("__float__", "__bool__", "__int__", "__index__", "__array__", "__dlpack__",
                 "__complex__", "to_device"):
        orig = getattr(Array, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            # a value leaving device1 (a move to the CPU device, then read there, is one)
            leaves = self.device != cpu and (_name != "to_device" or a[0] == cpu)
            counts["n"] += leaves
            return _orig(self, *a, **k)

        monkeypatch.setattr(Array, name, spy)
    X, y = load_iris(return_X_y=True)
    Xd, yd = strict.asarray(X, device=d1), strict.asarray(y, device=d1)

    def conversions(batch_size):
        m = MLPClassifier((8,), batch_size=batch_size, max_iter=1, dropout=0.1,
                          random_state=0).fit(Xd, yd)
        data = InMemory(Xd, m._targets(yd, 150, reset=False)[0], None)
        counts["n"] = 0
        m._train(data, 2, None, True)  # two epochs
        return counts["n"]

    few, many = conversions(75), conversions(10)  # 2 vs 15 minibatches per epoch
    assert few == many
    assert many == 2  # the per-epoch loss readout (proves the spy works), no more


def test_hidden_layer_sizes_may_be_an_array(backend, tmp_path):
    """scikit-learn takes an array-like for hidden_layer_sizes (a value of a parameter
    grid built with NumPy); xpdl refused np.array([4, 3]) ('must be a tuple of positive
    ints'). The same network as the tuple's, and it saves and loads."""
    g = np.random.default_rng(0)
    X, y = backend.asarray(g.normal(size=(30, 3))), backend.asarray(np.arange(30) % 3,
                                                                    dtype=backend.xp.int64)
    kw = dict(max_iter=3, random_state=0)
    a = xpdl.MLPClassifier(np.array([4, 3]), **kw).fit(X, y)
    b = xpdl.MLPClassifier((4, 3), **kw).fit(X, y)
    np.testing.assert_array_equal(backend.to_numpy(a.predict_proba(X)),
                                  backend.to_numpy(b.predict_proba(X)))
    path = str(tmp_path / "m.safetensors")
    xpdl.save(a, path)
    back = xpdl.load(path, xp=backend.xp, device=backend.device)
    np.testing.assert_array_equal(backend.to_numpy(back.predict_proba(X)),
                                  backend.to_numpy(a.predict_proba(X)))
    for bad in (np.array([4.0]), np.array([[4]]), np.array([0])):
        with pytest.raises(ValueError, match="hidden_layer_sizes"):
            xpdl.MLPClassifier(bad, max_iter=1).fit(X, y)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression", "two_targets"])
def test_mlp_fitted_attributes_named_as_sklearn(backend, task):
    """loss_, n_layers_, n_outputs_ and out_activation_ as scikit-learn's MLPs give them
    for the same data and layers (scikit-learn code reading them ran into AttributeError)."""
    from sklearn.neural_network import MLPClassifier as SkC
    from sklearn.neural_network import MLPRegressor as SkR

    g = np.random.default_rng(0)
    X = g.normal(size=(60, 4))
    y = {"binary": (X[:, 0] > 0).astype(int), "multiclass": g.integers(0, 3, 60),
         "regression": X[:, 0], "two_targets": X[:, :2]}[task]
    ours, theirs = (MLPRegressor, SkR) if task in ("regression", "two_targets") else \
        (MLPClassifier, SkC)
    unfitted = ours((5, 3))
    with pytest.raises(xpdl.NotFittedError):
        unfitted.loss_  # noqa: B018
    with pytest.raises(xpdl.NotFittedError):
        unfitted.out_activation_  # noqa: B018
    a = ours((5, 3), max_iter=5, random_state=0).fit(backend.asarray(X), backend.asarray(y))
    b = theirs(hidden_layer_sizes=(5, 3), max_iter=5, random_state=0).fit(X, y)
    assert (a.n_layers_, a.n_outputs_, a.out_activation_) == \
        (b.n_layers_, b.n_outputs_, b.out_activation_)
    assert a.loss_ == a.loss_curve_[-1] and len(a.loss_curve_) == 5


def _imbalanced(seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(90, 3))
    y = np.where(X[:, 0] + 0.5 * g.normal(size=90) > 0.8, 2, np.where(X[:, 1] > 0, 0, 1))
    return X, y, g.uniform(0.5, 2.0, 90)


@pytest.mark.parametrize("cw", ["balanced", {2: 3.0, 0: 0.5}], ids=["balanced", "dict"])
@pytest.mark.parametrize("weighted", [False, True], ids=["", "sample_weight"])
@pytest.mark.parametrize("binary", [False, True], ids=["multiclass", "binary"])
def test_logistic_class_weight_matches_sklearn(backend, cw, weighted, binary):
    X, y, w = _imbalanced()
    if binary:
        y = (y == 2).astype(np.int64) * 2  # labels 0 and 2, so the dict still applies
    ref = sk_lm.LogisticRegression(class_weight=cw, tol=1e-10, max_iter=1000).fit(
        X, y, sample_weight=w if weighted else None).predict_proba(X)
    m = LogisticRegression(class_weight=cw, tol=1e-10, max_iter=1000).fit(
        backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64),
        sample_weight=backend.asarray(w) if weighted else None)
    tol = 1e-6 if backend.is64 else 2e-3
    np.testing.assert_allclose(backend.to_numpy(m.predict_proba(backend.asarray(X))), ref,
                               atol=tol)


def test_logistic_class_weight_with_string_labels_iterative_solvers_and_saving(tmp_path):
    X, y, _ = _imbalanced()
    labels = np.array(["cat", "dog", "eel"])[y]
    cw = {"eel": 3.0, "cat": 0.5}
    ref = sk_lm.LogisticRegression(class_weight=cw).fit(X, labels).predict_proba(X)
    m = LogisticRegression(class_weight=cw).fit(X, labels)
    np.testing.assert_allclose(m.predict_proba(X), ref, atol=1e-4)
    # the iterative solvers train on the same weighted objective
    tight = sk_lm.LogisticRegression(class_weight=cw, tol=1e-12, max_iter=10000).fit(
        X, labels).predict_proba(X)
    a = LogisticRegression(class_weight=cw, solver="gd", learning_rate=1.0, max_iter=20000,
                           tol=0).fit(X, labels)
    np.testing.assert_allclose(a.predict_proba(X), tight, atol=1e-6)
    path = tmp_path / "m.safetensors"
    xpdl.save(m, path)
    back = xpdl.load(path)
    assert back.get_params()["class_weight"] == cw
    np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))
    numeric = LogisticRegression(class_weight={2: 3.0}).fit(X, y)
    xpdl.save(numeric, path)
    assert xpdl.load(path).get_params()["class_weight"] == {2: 3.0}


@pytest.mark.parametrize("cw,exc,match", [
    ("balance", ValueError, "class_weight must be None, 'balanced' or a dict"),
    ({"owl": 2.0}, ValueError, r"names labels \['owl'\]"),
    ({"cat": -1.0}, ValueError, "finite non-negative"),
    ({"cat": float("nan")}, ValueError, "finite non-negative"),
])
def test_logistic_bad_class_weight_is_named(cw, exc, match):
    X, y, _ = _imbalanced()
    labels = np.array(["cat", "dog", "eel"])[y]
    with pytest.raises(exc, match=match):
        LogisticRegression(class_weight=cw).fit(X, labels)


def test_logistic_balanced_with_a_class_of_zero_weight_is_named():
    X, y, w = _imbalanced()
    w[y == 1] = 0.0
    with pytest.raises(ValueError, match="samples of class 1 weigh 0"):
        LogisticRegression(class_weight="balanced").fit(X, y, sample_weight=w)


def test_logistic_class_weight_refuses_dask():
    da = pytest.importorskip("dask.array")
    X, y, _ = _imbalanced()
    with pytest.raises(ValueError, match="class_weight is not supported with Dask"):
        LogisticRegression(class_weight="balanced").fit(da.from_array(X, chunks=30),
                                                        da.from_array(y, chunks=30))


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_iterative_solvers_with_sample_weights_minimise_sklearns_objective(backend, scale):
    """scikit-learn's ridge and logistic objectives weigh the penalty against the given
    weights' total, so they change when every weight is tripled; the iterative solvers
    rescale the weights to mean 1 and used to weigh the penalty against n instead (0.025
    and 0.078 off in the coefficients at mean weights 1.25 and 3.75)."""
    X, y, w = _imbalanced()
    w = w * scale
    yr = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * np.random.default_rng(3).normal(size=90)
    tol = 1e-6 if backend.is64 else 2e-3
    ridge = sk_lm.Ridge(alpha=5.0).fit(X, yr, sample_weight=w)
    a = LinearRegression(solver="gd", alpha=5.0, learning_rate=0.1, max_iter=5000,
                         tol=0).fit(backend.asarray(X), backend.asarray(yr),
                                    sample_weight=backend.asarray(w))
    np.testing.assert_allclose(backend.to_numpy(a.coef_), ridge.coef_, atol=tol)
    ref = sk_lm.LogisticRegression(tol=1e-12, max_iter=10000).fit(
        X, y, sample_weight=w).predict_proba(X)
    b = LogisticRegression(solver="gd", learning_rate=1.0, max_iter=20000, tol=0).fit(
        backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64),
        sample_weight=backend.asarray(w))
    np.testing.assert_allclose(backend.to_numpy(b.predict_proba(backend.asarray(X))), ref,
                               atol=tol)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_t_counts_the_samples_seen_as_scikit_learn(backend, early_stopping):
    """``t_`` is scikit-learn's: training samples seen by the solver (epochs times the
    training rows, validation rows excluded; partial_fit adds its rows), not optimizer
    steps (it counted steps before)."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    X, y = load_iris(return_X_y=True)
    kw = dict(hidden_layer_sizes=(5,), batch_size=16, max_iter=3, n_iter_no_change=100,
              tol=0.0, early_stopping=early_stopping, validation_fraction=0.2,
              random_state=0)
    sk = SkMLP(solver="adam", **kw).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (three epochs do not converge)
        m = MLPClassifier(**kw).fit(backend.asarray(X), backend.asarray(y))
    assert sk.n_iter_ == m.n_iter_ == 3
    assert isinstance(m.t_, int) and m.t_ == sk.t_ == (120 if early_stopping else 150) * 3
    assert m._steps == 3 * (8 if early_stopping else 10)  # ceil(rows / 16) per epoch
    if not early_stopping:  # (scikit-learn's partial_fit refuses early stopping)
        sk.partial_fit(X[:40], y[:40])
        m.partial_fit(backend.asarray(X[:40]), backend.asarray(y[:40]))
        assert m.t_ == sk.t_ == 450 + 40


def test_mlp_gd_takes_one_full_batch_step_per_epoch(backend):
    """optimizer="gd" is gradient descent, as the linear models' solver="gd": each epoch one
    step on all samples, whatever batch_size says (it ran minibatches, the same as "sgd").
    Checked against the full-batch gradient by central differences in float64."""
    X, y = _regression(n=30, p=3)
    kw = dict(hidden_layer_sizes=(4,), alpha=0.3, optimizer="gd", batch_size=8,
              learning_rate=0.05, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (one epoch does not converge)
        m = MLPRegressor(max_iter=1, **kw).fit(backend.asarray(X), backend.asarray(y))
        assert m._steps == 1 and m.t_ == 30  # one step, all 30 samples
        before = [backend.to_numpy(p.data).astype(np.float64) for p in m.module_.parameters()]
        m.set_params(warm_start=True).fit(backend.asarray(X), backend.asarray(y))
    assert m._steps == 2 and m.t_ == 60
    after = [backend.to_numpy(p.data).astype(np.float64) for p in m.module_.parameters()]

    def objective(W1, b1, W2, b2):  # scikit-learn's: half the MSE plus alpha/(2n) sum W^2
        out = np.maximum(X @ W1.T + b1, 0.0) @ W2.T + b2
        return 0.5 * np.mean((out[:, 0] - y) ** 2) + 0.3 / (2 * len(y)) * (
            np.sum(W1 ** 2) + np.sum(W2 ** 2))

    h = 1e-6
    for i, p in enumerate(before):
        g = np.zeros_like(p)
        for j in np.ndindex(p.shape):
            up = [q.copy() for q in before]
            dn = [q.copy() for q in before]
            up[i][j] += h
            dn[i][j] -= h
            g[j] = (objective(*up) - objective(*dn)) / (2 * h)
        tol = 1e-6 if backend.is64 else 2e-3
        np.testing.assert_allclose((p - after[i]) / 0.05, g, rtol=tol, atol=tol)


def test_warnings_point_at_the_callers_line(backend):
    """ConvergenceWarning and DataConversionWarning name the line that called fit (they
    named xpdl/estimators/_base.py, a fixed stacklevel counted from a moved call)."""
    X, y = _regression(n=40, p=3)
    with pytest.warns(Warning) as record:
        MLPRegressor(hidden_layer_sizes=(3,), max_iter=1, random_state=0).fit(
            backend.asarray(X), backend.asarray(y))
    assert [type(w.message).__name__ for w in record] == ["ConvergenceWarning"]
    assert record[0].filename == __file__
    with pytest.warns(Warning) as record:  # a column y, one iteration
        LogisticRegression(solver="gd", max_iter=1).fit(backend.asarray(X),
                                                        backend.asarray((y[:, None] > 0) * 1))
    assert "DataConversionWarning" in [type(w.message).__name__ for w in record]
    assert {w.filename for w in record} == {__file__}


def test_mlp_regressor_takes_a_column_y_as_one_target(backend):
    """y of shape (n, 1): one target, as scikit-learn's MLPRegressor takes it (a
    DataConversionWarning, predictions of shape (n,)); the same fit as the 1-D y.
    LinearRegression keeps the column, as scikit-learn's does."""
    from sklearn.exceptions import DataConversionWarning
    from sklearn.neural_network import MLPRegressor as SkMLP

    X, y = _regression(n=40, p=3)
    kw = dict(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    with pytest.warns(DataConversionWarning) as record:
        sk = SkMLP(**kw).fit(X, y[:, None])
    with pytest.warns(DataConversionWarning) as record:
        col = MLPRegressor(**kw).fit(backend.asarray(X), backend.asarray(y[:, None]))
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = MLPRegressor(**kw).fit(backend.asarray(X), backend.asarray(y))
    p_col, p_flat = col.predict(backend.asarray(X)), flat.predict(backend.asarray(X))
    assert tuple(p_col.shape) == sk.predict(X).shape == (40,)
    np.testing.assert_array_equal(backend.to_numpy(p_col), backend.to_numpy(p_flat))
    assert col.n_outputs_ == sk.n_outputs_ == 1
    assert col.score(backend.asarray(X), backend.asarray(y[:, None])) == pytest.approx(
        flat.score(backend.asarray(X), backend.asarray(y)))
    lin = LinearRegression().fit(backend.asarray(X), backend.asarray(y[:, None]))
    assert tuple(lin.predict(backend.asarray(X)).shape) == \
        sk_lm.LinearRegression().fit(X, y[:, None]).predict(X).shape == (40, 1)
    # a warning at every call with a column, as scikit-learn's (it warned at the first)
    counts = []
    for m, conv in ((SkMLP(**kw), lambda a: a), (MLPRegressor(**kw), backend.asarray)):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            m.fit(conv(X), conv(y[:, None]))
            m.partial_fit(conv(X), conv(y[:, None]))
            m.partial_fit(conv(X), conv(y[:, None]))
            m.partial_fit(conv(X), conv(y))
        counts.append(sum(issubclass(w.category, DataConversionWarning) for w in record))
    assert counts[1] == counts[0] == 3
