"""Every bad input is a ValueError/TypeError naming the problem; inputs are never mutated."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import xpdl
from xpdl import losses as L

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ESTIMATORS = [
    lambda: xpdl.LinearRegression(),
    lambda: xpdl.LinearRegression(solver="sgd", max_iter=2),
    lambda: xpdl.LogisticRegression(),
    lambda: xpdl.MLPClassifier((4,), max_iter=2, random_state=0),
    lambda: xpdl.MLPRegressor((4,), max_iter=2, random_state=0),
]
IDS = ["linear", "linear-sgd", "logistic", "mlpc", "mlpr"]


def _data(est, n=20, p=3):
    g = np.random.default_rng(0)
    X = g.normal(size=(n, p))
    y = (X[:, 0] > 0).astype(np.int64) if est._is_classifier else X @ np.arange(1.0, p + 1)
    return X, y


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_bad_inputs_name_the_problem(backend, make):
    est = make()
    Xh, yh = _data(est)
    X, y = backend.asarray(Xh), backend.asarray(yh, dtype=backend.xp.int64
                                               if est._is_classifier else None)
    bad = Xh.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make().fit(backend.asarray(bad), y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        make().fit(backend.asarray(bad), y)
    with pytest.raises(ValueError, match="2D"):
        make().fit(backend.asarray(Xh[:, 0]), y)
    with pytest.raises(ValueError, match="0 sample"):
        make().fit(backend.asarray(Xh[:0]), y[:0])
    with pytest.raises(ValueError, match="samples"):
        make().fit(X, y[:-2])
    with pytest.raises(ValueError, match="None"):
        make().fit(X, None)
    with pytest.raises(ValueError, match="shape|sample_weight"):
        make().fit(X, y, sample_weight=backend.asarray(np.ones(3)))
    with pytest.raises(ValueError, match="negative"):
        make().fit(X, y, sample_weight=backend.asarray(-np.ones(len(yh))))
    if est._is_classifier:
        with pytest.raises(ValueError, match=r"only one class \(0\)"):
            make().fit(X, backend.asarray(np.zeros(len(yh)), dtype=backend.xp.int64))
        with pytest.raises(ValueError, match=r"only one class \('cat'\)"):
            make().fit(Xh, np.array(["cat"] * len(yh)))
        with pytest.raises(ValueError, match="continuous"):
            make().fit(X, backend.asarray(yh + 0.5))
    else:
        ybad = yh.copy()
        ybad[0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            make().fit(X, backend.asarray(ybad))
    fitted = make().fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but .* expecting 3"):
        fitted.predict(backend.asarray(Xh[:, :2]))
    with pytest.raises(ValueError, match="infinity"):
        fitted.predict(backend.asarray(bad))


def test_non_numeric_and_sparse_inputs():
    est = xpdl.LinearRegression()
    with pytest.raises(ValueError, match="non-numeric"):
        est.fit(np.array([["a", "b"], ["c", "d"]]), np.array([1.0, 2.0]))
    obj = np.ones((2, 2), dtype=object)
    obj[0, 0] = {"k": 1}
    with pytest.raises(TypeError):
        est.fit(obj, np.array([1.0, 2.0]))
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse"):
        est.fit(sparse.csr_matrix(np.eye(3)), np.ones(3))
    with pytest.raises(ValueError, match="Complex"):
        est.fit(np.ones((3, 2), dtype=complex), np.ones(3))


def test_mixed_namespaces_and_devices_at_predict():
    torch = pytest.importorskip("torch")
    strict = pytest.importorskip("array_api_strict")
    X, y = _data(xpdl.LinearRegression())
    m = xpdl.LinearRegression().fit(X, y)
    with pytest.raises(TypeError, match="fitted on numpy"):
        m.predict(torch.asarray(X))
    d1 = strict.Device("device1")
    m = xpdl.MLPRegressor((3,), max_iter=2).fit(strict.asarray(X, device=d1),
                                                 strict.asarray(y, device=d1))
    with pytest.raises(ValueError, match="device"):
        m.predict(strict.asarray(X, device=strict.Device("device2")))
    # y follows X: a torch y with NumPy X is converted, not refused.
    m = xpdl.LinearRegression().fit(X, torch.asarray(y))
    assert isinstance(m.coef_, np.ndarray)


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_read_only_inputs_are_not_mutated(make):
    est = make()
    X, y = _data(est)
    w = np.linspace(0.5, 1.5, len(y))
    copies = [a.copy() for a in (X, y, w)]
    for a in (X, y, w):
        a.flags.writeable = False
    est.fit(X, y, sample_weight=w)
    est.predict(X)
    est.score(X, y, sample_weight=w)
    if hasattr(est, "partial_fit") and not isinstance(est, xpdl.LinearRegression):
        est.partial_fit(X, y)
    for a, c in zip((X, y, w), copies):
        np.testing.assert_array_equal(a, c)


def test_torch_inputs_are_not_mutated():
    torch = pytest.importorskip("torch")
    X, y = _data(xpdl.MLPClassifier())
    Xt, yt = torch.asarray(X), torch.asarray(y)
    Xc, yc = Xt.clone(), yt.clone()
    xpdl.MLPClassifier((4,), max_iter=3).fit(Xt, yt).predict(Xt)
    assert torch.equal(Xt, Xc) and torch.equal(yt, yc)


# -- property-based --------------------------------------------------------------------
finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


# (the backend fixture is the same object for every example of one test run)
_EXAMPLES = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.function_scoped_fixture])


@settings(max_examples=60, **_EXAMPLES)
@given(st.data())
def test_cross_entropy_properties(backend, data):
    n = data.draw(st.integers(1, 6))
    c = data.draw(st.integers(2, 5))
    dtype = data.draw(st.sampled_from([np.float32, np.float64] if backend.is64 else
                                      [np.float32]))
    logits = data.draw(hnp.arrays(dtype, (n, c), elements=finite32))
    target = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    t = xpdl.Tensor(backend.asarray(logits, dtype=getattr(backend.xp, dtype.__name__)),
                    requires_grad=True)
    out = L.cross_entropy(t, backend.asarray(target, dtype=backend.xp.int64),
                          reduction="none")
    out.sum().backward()
    v = backend.to_numpy(out.data)
    assert v.dtype == dtype and np.all(np.isfinite(v)) and np.all(v >= -1e-6)
    ref = np.logaddexp.reduce(logits.astype(np.float64), axis=1) - \
        logits.astype(np.float64)[np.arange(n), target]
    np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-2 if dtype == np.float32 else 1e-9)
    g = backend.to_numpy(t.grad)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-5)  # softmax - onehot sums to 0


@settings(max_examples=60, **_EXAMPLES)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                  elements=st.floats(-1e6, 1e6)),
       st.sampled_from(["mse", "mae", "huber", "binary_cross_entropy_with_logits"]))
def test_elementwise_loss_properties(backend, x, name):
    if not backend.is64:  # (the draws as float32: the same values as the reference sees)
        x = x.astype(np.float32).astype(np.float64)
    target = np.clip(np.round(np.abs(x) % 1), 0, 1) if "logits" in name else x[::-1].copy() \
        if x.ndim == 1 else np.zeros_like(x)
    v = getattr(L, name)(backend.asarray(x), backend.asarray(target.reshape(x.shape)),
                         reduction="none")
    v = backend.to_numpy(v).astype(np.float64)
    assert v.shape == x.shape and np.all(np.isfinite(v)) and np.all(v >= 0)
    if name == "binary_cross_entropy_with_logits":
        ref = np.logaddexp(0, x) - x * target.reshape(x.shape)
        tol = 1e-9 if backend.is64 else 1e-5
        np.testing.assert_allclose(v, ref, rtol=tol, atol=tol)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_estimators_on_random_shapes_and_extreme_values(data):
    n = data.draw(st.integers(3, 25))
    p = data.draw(st.integers(1, 4))
    scale = data.draw(st.sampled_from([1e-6, 1.0, 1e6]))
    dtype = data.draw(st.sampled_from([np.float32, np.float64, np.int64]))
    X = (data.draw(hnp.arrays(np.float64, (n, p), elements=st.floats(-1, 1))) * scale)
    X = X.astype(dtype)
    y = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, 2)))
    if len(np.unique(y)) < 2:
        y[0], y[-1] = 0, 1
    yr = X.astype(np.float64) @ np.ones(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lin = xpdl.LinearRegression().fit(X, yr)
        assert np.all(np.isfinite(lin.predict(X)))
        for est in (xpdl.LogisticRegression(max_iter=20),
                    xpdl.MLPClassifier((3,), max_iter=2, random_state=0)):
            try:
                est.fit(X, y)
            except xpdl.DivergenceError:
                continue
            proba = est.predict_proba(X)
            assert proba.shape == (n, len(np.unique(y)))
            assert np.all(np.isfinite(proba))
            np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-4)


# -- pandas: feature names and nullable dtypes (#16.1) ------------------------------------
_ESTIMATORS = [lambda: xpdl.LinearRegression(), lambda: xpdl.LogisticRegression(),
               lambda: xpdl.MLPClassifier((4,), max_iter=3, random_state=0),
               lambda: xpdl.MLPRegressor((4,), max_iter=3, random_state=0)]


def _frame_problem(make):
    pd = pytest.importorskip("pandas")
    g = np.random.default_rng(0)
    X = g.normal(size=(40, 3))
    est = make()
    y = (X[:, 0] > 0).astype(np.int64) if est._is_classifier else X @ np.array([1.0, 2, 3])
    return pd, pd.DataFrame(X, columns=["a", "b", "c"]), X, y, est


@pytest.mark.filterwarnings("ignore:xpdl.*max_iter")
@pytest.mark.parametrize("make", _ESTIMATORS, ids=["linear", "logistic", "mlpc", "mlpr"])
def test_feature_names_follow_scikit_learn(make, tmp_path):
    pd, df, X, y, est = _frame_problem(make)
    est.fit(df, y)
    assert list(est.feature_names_in_) == ["a", "b", "c"]
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_allclose(est.predict(df), est.predict(X), rtol=1e-12)
    with pytest.raises(ValueError, match="same order as they were in fit"):
        est.predict(df[["b", "a", "c"]])
    with pytest.raises(ValueError, match="unseen at fit time:\n- z"):
        est.predict(df.rename(columns={"a": "z"}))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        est.predict(X)
    from sklearn.metrics import accuracy_score, r2_score

    metric = accuracy_score if est._is_classifier else r2_score
    with warnings.catch_warnings():  # scoring a frame checks its names once, silently
        warnings.simplefilter("error")
        got = est.score(df, y)
        want = metric(y, est.predict(df))
    assert got == pytest.approx(want, rel=1e-12)
    path = tmp_path / "m.safetensors"
    xpdl.save(est, path)
    assert list(xpdl.load(path).feature_names_in_) == ["a", "b", "c"]
    plain = make().fit(X, y)
    assert not hasattr(plain, "feature_names_in_")
    with pytest.warns(UserWarning, match="has feature names, but"):
        plain.predict(df)
    with pytest.raises(TypeError, match="all input features have string names"):
        make().fit(pd.DataFrame(X, columns=["a", 1, "c"]), y)


@pytest.mark.filterwarnings("ignore:xpdl.*max_iter")
@pytest.mark.parametrize("make", _ESTIMATORS, ids=["linear", "logistic", "mlpc", "mlpr"])
def test_pandas_nullable_and_integer_frames(make):
    pd, df, X, y, est = _frame_problem(make)
    na = pd.DataFrame({"a": pd.array([1, None] + [3] * 38, dtype="Int64"), "b": X[:, 1],
                       "c": X[:, 2]})
    with pytest.raises(ValueError, match="Input X contains NaN"):
        make().fit(na, y)
    ints = pd.DataFrame({"a": np.arange(40) % 7, "b": np.arange(40) % 5, "c": np.arange(40)})
    nullable = ints.astype("Int64")
    d1 = make().fit(ints, y)._dtype
    d2 = make().fit(ints.to_numpy(), y)._dtype
    d3 = make().fit(nullable, y)._dtype
    assert d1 == d2 == d3 and "float32" in str(d1)
