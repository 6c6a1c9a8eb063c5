"""LinearRegression(solver="lstsq")'s rank cut-off, ``rank_`` and ``singular_`` against
scikit-learn's LinearRegression (``scipy.linalg.lstsq(X, y, cond=tol)`` on the centred,
weighted data)."""

from __future__ import annotations

import numpy as np
import pytest

import xpdl
from xpdl.estimators import LinearRegression

sk = pytest.importorskip("sklearn.linear_model")


def _near_collinear(seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(50, 3))
    X = np.c_[X, X[:, 0] + 1e-9 * g.normal(size=50)]  # a fourth column 1e-9 from the first
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.01 * g.normal(size=50)
    return X, y, g.random(50) * 3


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_near_collinear_columns_give_scikit_learns_minimum_norm_fit(backend, fit_intercept,
                                                                   weighted):
    """A singular value 1e-9 of the largest counts as zero (tol=1e-6): the coefficients
    are scikit-learn's minimum-norm ones (before: +-4e5 fitting the noise), rank_ 3."""
    X, y, w = _near_collinear()
    w = w if weighted else None
    ref = sk.LinearRegression(fit_intercept=fit_intercept).fit(X, y, sample_weight=w)
    m = LinearRegression(fit_intercept=fit_intercept).fit(
        backend.asarray(X), backend.asarray(y),
        sample_weight=None if w is None else backend.asarray(w))
    tol = 1e-8 if backend.is64 else 2e-3
    np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(m.predict(backend.asarray(X))),
                               ref.predict(X), rtol=tol, atol=tol)
    assert m.rank_ == ref.rank_ == 3
    s = backend.to_numpy(m.singular_)
    np.testing.assert_allclose(s[:3], ref.singular_[:3], rtol=tol)
    assert abs(s[3] - ref.singular_[3]) < (1e-12 if backend.is64 else 1e-5) * s[0]


@pytest.mark.parametrize("tol_", [1e-6, 0.7])
def test_rank_and_singular_values_of_well_conditioned_data(backend, tol_):
    """Well conditioned, weighted (the Gram path, singular values from its eigenvalues),
    and with a tol that cuts real singular values (then the SVD): as scikit-learn."""
    g = np.random.default_rng(1)
    X = g.normal(size=(80, 5)) * np.array([1.0, 2.0, 0.5, 1.0, 0.9])
    y = X @ g.normal(size=5) + 0.1 * g.normal(size=80)
    w = g.random(80) + 0.5
    ref = sk.LinearRegression(tol=tol_).fit(X, y, sample_weight=w)
    m = LinearRegression(tol=tol_).fit(backend.asarray(X), backend.asarray(y),
                                       sample_weight=backend.asarray(w))
    tol = 1e-9 if backend.is64 else 1e-4
    assert m.rank_ == ref.rank_ and (ref.rank_ == 5) == (tol_ < 0.1)
    np.testing.assert_allclose(backend.to_numpy(m.singular_), ref.singular_, rtol=tol)
    np.testing.assert_allclose(backend.to_numpy(m.coef_), ref.coef_, rtol=tol, atol=tol)


def test_extreme_scales_keep_the_singular_values(backend):
    """X scaled by 1e200 and weights by 1e100 (solved on scaled copies): singular_ in the
    data's own units."""
    if not backend.is64:
        pytest.skip("the scales are beyond float32")
    g = np.random.default_rng(2)
    X = g.normal(size=(40, 3))
    y = X @ np.array([1.0, 2.0, 3.0])
    w = g.random(40) + 0.1
    ref = sk.LinearRegression().fit(X, y, sample_weight=w)
    m = LinearRegression().fit(backend.asarray(X * 1e200), backend.asarray(y),
                               sample_weight=backend.asarray(w * 1e100))
    np.testing.assert_allclose(backend.to_numpy(m.singular_), ref.singular_ * 1e250,
                               rtol=1e-12)


def test_ridge_has_no_rank_and_a_saved_fit_keeps_them(backend, tmp_path):
    """alpha > 0 (scikit-learn's Ridge has neither attribute): none, also after a fit
    without ridge; save and load keep rank_ and singular_."""
    X, y, _ = _near_collinear(3)
    m = LinearRegression().fit(backend.asarray(X), backend.asarray(y))
    path = tmp_path / "m.safetensors"
    xpdl.save(m, path)
    back = xpdl.load(path)
    assert back.rank_ == m.rank_ == 3
    np.testing.assert_array_equal(backend.to_numpy(back.singular_),
                                  backend.to_numpy(m.singular_))
    m.set_params(alpha=0.1).fit(backend.asarray(X), backend.asarray(y))
    assert not hasattr(m, "rank_") and not hasattr(m, "singular_")
