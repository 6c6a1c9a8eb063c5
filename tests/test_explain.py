"""Saliency, integrated gradients and permutation importance, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import xpdl
from xpdl import nn
from xpdl.explain import integrated_gradients, permutation_importance, saliency

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _fitted(backend):
    X, y = xpdl.datasets.make_classification(150, 4, n_classes=3, random_state=0,
                                             xp=backend.xp, device=backend.device,
                                             dtype=backend.float_dtype)
    m = xpdl.MLPClassifier((8,), activation="tanh", max_iter=30, learning_rate=1e-2,
                           random_state=0).fit(X, y)
    return m, X, y


def _logits(m, X):
    return m.module_(X).data


def test_saliency_matches_finite_differences(backend):
    m, X, _ = _fitted(backend)
    Xh = backend.to_numpy(X)[:3]
    s = saliency(m, backend.asarray(Xh), target=1, abs=False)
    assert s.shape == (3, 4) and s.device == backend.device
    eps = 1e-6 if backend.is64 else 1e-2
    fd = np.zeros((3, 4))
    for j in range(4):
        e = np.zeros(4)
        e[j] = eps
        up = backend.to_numpy(_logits(m, backend.asarray(Xh + e)))[:, 1]
        dn = backend.to_numpy(_logits(m, backend.asarray(Xh - e)))[:, 1]
        fd[:, j] = (up - dn) / (2 * eps)
    np.testing.assert_allclose(backend.to_numpy(s), fd, rtol=1e-5 if backend.is64 else 5e-2,
                               atol=1e-7 if backend.is64 else 5e-3)
    np.testing.assert_allclose(backend.to_numpy(saliency(m, backend.asarray(Xh), target=1)),
                               np.abs(fd), rtol=1e-5 if backend.is64 else 5e-2,
                               atol=1e-7 if backend.is64 else 5e-3)


def test_integrated_gradients_completeness(backend):
    m, X, _ = _fitted(backend)
    attr, delta = integrated_gradients(m, X[:10, ...], n_steps=200, return_delta=True)
    assert attr.shape == (10, 4) and attr.device == backend.device
    assert float(backend.xp.max(backend.xp.abs(delta))) < 1e-2
    # Completeness against the model itself: sum(attr) = f(x) - f(0) for the predicted class.
    Xh = backend.to_numpy(X[:10, ...])
    f = backend.to_numpy(_logits(m, X[:10, ...]))
    f0 = backend.to_numpy(_logits(m, backend.asarray(np.zeros_like(Xh))))
    k = f.argmax(axis=1)
    expected = f[np.arange(10), k] - f0[np.arange(10), k]
    np.testing.assert_allclose(backend.to_numpy(attr).sum(axis=1), expected, atol=1e-2)


def test_integrated_gradients_of_a_linear_model_is_exact(backend):
    lin = nn.Linear(3, 1, rng=0, xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    Xh = np.random.default_rng(0).normal(size=(4, 3))
    base = np.full(3, 0.5)
    attr = integrated_gradients(lin, backend.asarray(Xh), baseline=backend.asarray(base),
                                n_steps=3)
    w = backend.to_numpy(lin.weight.data)[0]
    np.testing.assert_allclose(backend.to_numpy(attr), (Xh - base) * w,
                               rtol=1e-10 if backend.is64 else 1e-5)


def test_integrated_gradients_takes_a_number_as_baseline(backend):
    """A number is that baseline for every feature (Captum's scalar baseline); it raised
    'expected an array' (a float) or 'must have shape (3,)' (a NumPy scalar)."""
    lin = nn.Linear(3, 1, rng=0, xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    X = backend.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    ref = backend.to_numpy(integrated_gradients(lin, X, baseline=backend.asarray(np.full(3, 0.5)),
                                                n_steps=3))
    for b in (0.5, np.float64(0.5), np.float32(0.5)):
        np.testing.assert_array_equal(
            backend.to_numpy(integrated_gradients(lin, X, baseline=b, n_steps=3)), ref)
    with pytest.raises(ValueError, match="baseline must be finite"):
        integrated_gradients(lin, X, baseline=float("nan"))


def test_callable_models(backend):
    def f(t):
        return (t * t).sum(axis=1)  # f(x) = |x|^2, gradient 2x

    Xh = np.array([[1.0, -2.0], [0.5, 3.0]])
    s = saliency(f, backend.asarray(Xh), abs=False)
    np.testing.assert_allclose(backend.to_numpy(s), 2 * Xh, rtol=1e-6)
    attr = integrated_gradients(f, backend.asarray(Xh), n_steps=100)
    np.testing.assert_allclose(backend.to_numpy(attr), Xh ** 2, rtol=1e-3)
    with pytest.raises(TypeError, match="model"):
        saliency(42, backend.asarray(Xh))


def test_permutation_importance(backend):
    g = np.random.default_rng(0)
    Xh = g.normal(size=(200, 3))
    yh = 3 * Xh[:, 0] + 0.1 * Xh[:, 1]
    X, y = backend.asarray(Xh), backend.asarray(yh)
    m = xpdl.LinearRegression().fit(X, y)
    r = permutation_importance(m, X, y, n_repeats=4, random_state=0)
    assert set(r) == {"importances_mean", "importances_std", "importances"}
    assert r["importances"].shape == (3, 4) and r["importances_mean"].device == backend.device
    mean = backend.to_numpy(r["importances_mean"])
    assert mean[0] > 1.0 and abs(mean[2]) < 0.01 and mean[0] > 50 * mean[1]
    # Same seed, same shuffles on every backend.
    ref = permutation_importance(xpdl.LinearRegression().fit(Xh, yh), Xh, yh, n_repeats=4,
                                 random_state=0)
    np.testing.assert_allclose(mean, ref["importances_mean"], rtol=1e-4, atol=1e-6)


def test_permutation_importance_semantics_match_sklearn(backend):
    from sklearn.inspection import permutation_importance as sk_pi

    g = np.random.default_rng(1)
    X = g.normal(size=(300, 3))
    y = (X[:, 0] + 0.3 * X[:, 2] > 0).astype(int)
    Xb, yb = backend.asarray(X), backend.asarray(y)
    m = xpdl.LogisticRegression().fit(Xb, yb)
    ours = permutation_importance(m, Xb, yb, n_repeats=20, random_state=0)
    # scikit-learn's, on the same model fitted on NumPy (it scores NumPy arrays)
    theirs = sk_pi(xpdl.LogisticRegression().fit(X, y), X, y, n_repeats=20, random_state=0)
    np.testing.assert_allclose(backend.to_numpy(ours["importances_mean"]),
                               theirs["importances_mean"], atol=0.03)


def test_binary_classifier_targets_are_its_two_classes(backend):
    """A binary classifier has one output, the log-odds z of classes_[1]: target 1 explains
    z, target 0 explains -z (the log-odds of classes_[0]); anything else is an error (it
    used to be ignored silently)."""
    X, y = xpdl.datasets.make_classification(120, 4, n_classes=2, random_state=0,
                                             xp=backend.xp, device=backend.device,
                                             dtype=backend.float_dtype)
    m = xpdl.MLPClassifier((8,), activation="tanh", max_iter=30, learning_rate=1e-2,
                           random_state=0).fit(X, y)
    Xh = backend.to_numpy(X)[:4]
    eps = 1e-6 if backend.is64 else 1e-2
    fd = np.zeros((4, 4))
    for j in range(4):
        e = np.zeros(4)
        e[j] = eps
        up = backend.to_numpy(_logits(m, backend.asarray(Xh + e)))[:, 0]
        dn = backend.to_numpy(_logits(m, backend.asarray(Xh - e)))[:, 0]
        fd[:, j] = (up - dn) / (2 * eps)
    tol = dict(rtol=1e-5 if backend.is64 else 5e-2, atol=1e-7 if backend.is64 else 5e-3)
    Xb = backend.asarray(Xh)
    np.testing.assert_allclose(backend.to_numpy(saliency(m, Xb, target=1, abs=False)), fd, **tol)
    np.testing.assert_allclose(backend.to_numpy(saliency(m, Xb, target=0, abs=False)), -fd,
                               **tol)
    per = saliency(m, Xb, target=np.array([0, 1, 1, 0]), abs=False)
    np.testing.assert_allclose(backend.to_numpy(per), fd * np.array([[-1], [1], [1], [-1]]),
                               **tol)
    attr, delta = integrated_gradients(m, Xb, target=0, n_steps=200, return_delta=True)
    z = backend.to_numpy(_logits(m, Xb))[:, 0]
    z0 = backend.to_numpy(_logits(m, backend.asarray(np.zeros_like(Xh))))[:, 0]
    np.testing.assert_allclose(backend.to_numpy(attr).sum(axis=1), -(z - z0), atol=1e-2)
    for bad in (2, -1, np.array([0, 1, 2, 0])):
        with pytest.raises(ValueError, match="target"):
            saliency(m, Xb, target=bad)


def test_explain_rejects_bad_targets_inputs_and_baselines(backend):
    m, X, _ = _fitted(backend)  # three classes
    Xb = X[:3, ...]
    with pytest.raises(ValueError, match=r"target values must be in \[0, 3\)"):
        saliency(m, Xb, target=np.array([0, 3, 1]))
    with pytest.raises(ValueError, match="integers of shape"):
        saliency(m, Xb, target=np.array([0.0, 1.0, 2.0]))
    single = nn.Sequential(nn.Linear(4, 1, rng=0, xp=backend.xp, device=backend.device,
                                     dtype=backend.float_dtype))
    with pytest.raises(ValueError, match="out of range for 1 output"):
        saliency(single, Xb, target=1)
    assert saliency(single, Xb, target=0).shape == (3, 4)
    bad = backend.to_numpy(Xb).copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        integrated_gradients(m, backend.asarray(bad))
    with pytest.raises(ValueError, match="baseline must have shape"):
        integrated_gradients(m, Xb, baseline=backend.asarray(np.zeros(5)))
    # counts are ints >= 1 (2.5 steps and True repeats were run as int(2.5) and 1)
    for bad_n in (0, 2.5, True):
        with pytest.raises(ValueError, match="n_steps must be an int >= 1"):
            integrated_gradients(m, Xb, n_steps=bad_n)
        with pytest.raises(ValueError, match="n_repeats must be an int >= 1"):
            permutation_importance(m, X, _fitted(backend)[2], n_repeats=bad_n)


def test_explain_checks_the_estimator_like_predict(backend):
    # an unfitted estimator is NotFittedError (it was "model must be a fitted estimator, a
    # Module or a callable"), and X with another feature count is scikit-learn's message
    # (it was the linear layer's "weight expects 4")
    m, X, _ = _fitted(backend)
    for fn in (saliency, integrated_gradients):
        with pytest.raises(xpdl.NotFittedError):
            fn(xpdl.MLPClassifier(), X[:3, ...])
        with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is "
                                             "expecting 4 features"):
            fn(m, X[:3, :3])


def test_permutation_importance_takes_numpy_random_states(backend):
    # scikit-learn's random_state: an int, None or a NumPy RandomState (it was refused with
    # "seed must be a non-negative int")
    m, X, y = _fitted(backend)
    for make in (np.random.RandomState, np.random.default_rng):
        rs = make(3)
        a = permutation_importance(m, X, y, n_repeats=3, random_state=rs)
        b = permutation_importance(m, X, y, n_repeats=3, random_state=make(3))
        np.testing.assert_array_equal(backend.to_numpy(a["importances"]),
                                      backend.to_numpy(b["importances"]))
        # the instance advanced, as scikit-learn's does: the next call shuffles differently
        c = permutation_importance(m, X, y, n_repeats=3, random_state=rs)
        assert not np.array_equal(backend.to_numpy(a["importances"]),
                                  backend.to_numpy(c["importances"]))
    for bad in (-1, 1.5, "0", True):
        with pytest.raises(ValueError, match="random_state must be None, an int >= 0"):
            permutation_importance(m, X, y, random_state=bad)


def test_attributions_under_jax_jit_equal_eager():
    # integrated gradients read its (argmax) targets' values to range-check them, which
    # failed under jax.jit (TracerBoolConversionError); saliency already traced
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    X, y = xpdl.datasets.make_classification(40, 4, n_classes=3, random_state=0, xp=jnp)
    m = xpdl.MLPClassifier((8,), activation="tanh", max_iter=5, random_state=0).fit(X, y)
    t = jnp.asarray(np.arange(40) % 3)
    for fn in (lambda a: saliency(m, a), lambda a: saliency(m, a, target=t),
               lambda a: integrated_gradients(m, a, n_steps=8),
               lambda a: integrated_gradients(m, a, target=t, n_steps=8)):
        np.testing.assert_allclose(np.asarray(jax.jit(fn)(X)), np.asarray(fn(X)), rtol=1e-5,
                                   atol=1e-6)


def test_attributions_leave_the_models_gradients_alone(backend):
    # saliency and integrated gradients accumulated a gradient into every parameter's
    # .grad on each call (so a later optimizer step would have used it)
    m, X, _ = _fitted(backend)
    params = list(m.module_.parameters())
    for p in params:
        p.grad = None
    saliency(m, X[:5, ...])
    integrated_gradients(m, X[:5, ...], n_steps=4)
    assert all(p.grad is None for p in params)


def test_attributions_check_dataframe_columns_like_predict():
    # a frame with the fitted columns reordered was explained silently (each attribution
    # and importance then belongs to another feature); predict refuses it
    pd = pytest.importorskip("pandas")
    import warnings

    g = np.random.default_rng(0)
    X = pd.DataFrame(g.normal(size=(40, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int).to_numpy()
    m = xpdl.MLPClassifier((4,), max_iter=5, random_state=0).fit(X, y)
    swapped = X[["b", "a", "c"]]
    calls = [lambda Z: saliency(m, Z), lambda Z: integrated_gradients(m, Z, n_steps=4),
             lambda Z: permutation_importance(m, Z, y, n_repeats=2, random_state=0)]
    for call in calls:
        with pytest.raises(ValueError, match="same order as they were in fit"):
            call(swapped)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the right columns: no warning either
            call(X)
    np.testing.assert_allclose(saliency(m, X), saliency(m, X.to_numpy(np.float32)))
