"""Estimators on Dask arrays: one implementation run chunk by chunk by Dask, on the threaded
scheduler and on a dask.distributed LocalCluster started and closed here."""

from __future__ import annotations

import numpy as np
import pytest

import xpdl

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request, cluster):
    if request.param == "threads":
        yield None
        return
    with distributed.Client(cluster) as client:
        yield client


def _reg(n=1200, p=5, k=None):
    X, y = xpdl.datasets.make_regression(n, p, random_state=0, dtype=np.float64)
    if k:
        y = np.stack([y, 0.5 * y + X[:, 0]], axis=1)
    return X, y


def _clf(n=1200, p=5, classes=3):
    return xpdl.datasets.make_classification(n, p, n_classes=classes, random_state=0,
                                             dtype=np.float64)


def _d(a, rows=300):
    return da.from_array(a, chunks=(rows,) + a.shape[1:])


def _unknown(Xd):
    """The same rows behind unknown chunk sizes (a filter that keeps everything)."""
    keep = Xd[:, 0] > -np.inf
    return keep


# -- LinearRegression: one pass of moments --------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 3.0])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [None, 2])
def test_lstsq_equals_the_in_memory_fit(scheduler, alpha, fit_intercept, weighted, k):
    X, y = _reg(k=k)
    w = np.random.default_rng(1).random(X.shape[0]) if weighted else None
    kw = dict(alpha=alpha, fit_intercept=fit_intercept)
    ref = xpdl.LinearRegression(**kw).fit(X, y, sample_weight=w)
    m = xpdl.LinearRegression(**kw).fit(_d(X), _d(y), sample_weight=None if w is None else _d(w))
    assert isinstance(m.coef_, np.ndarray)  # concrete, not a graph
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.intercept_, ref.intercept_, rtol=1e-10, atol=1e-10)
    if alpha:
        assert not hasattr(m, "rank_") and not hasattr(m, "singular_")
    else:
        assert m.rank_ == ref.rank_
        np.testing.assert_allclose(m.singular_, ref.singular_, rtol=1e-10)


def test_lstsq_ill_conditioned_takes_the_tall_skinny_qr(scheduler):
    """Nearly collinear columns: the Gram matrix is refused, R of the centred data is
    formed by a blockwise QR, and the minimum-norm solution (rank 3 at tol=1e-6) equals
    scikit-learn's, rank_ and singular_ included."""
    g = np.random.default_rng(0)
    A = g.normal(size=(1200, 3))
    X = np.concatenate([A, A[:, :1] + 1e-9 * g.normal(size=(1200, 1))], axis=1) + 5.0
    y = A @ [1.0, -2.0, 0.5] + 0.1 * g.normal(size=1200)
    m = xpdl.LinearRegression().fit(_d(X), _d(y))
    assert m._lstsq_path == "svd"
    sk = pytest.importorskip("sklearn.linear_model")
    ref = sk.LinearRegression().fit(X, y)  # lstsq(Xc, yc, cond=tol): rank 3
    np.testing.assert_allclose(m.predict(X), ref.predict(X), rtol=1e-8, atol=1e-8)
    assert m.rank_ == ref.rank_ == 3
    np.testing.assert_allclose(m.singular_, ref.singular_, rtol=1e-8, atol=1e-10)
    ram = xpdl.LinearRegression().fit(X, y)
    np.testing.assert_allclose(m.predict(X), ram.predict(X), rtol=1e-8, atol=1e-8)


# -- LogisticRegression: one distributed reduction per L-BFGS evaluation ---------------
@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_lbfgs_has_the_in_memory_iterates(scheduler, classes, weighted):
    X, y = _clf(classes=classes)
    w = np.random.default_rng(2).random(X.shape[0]) + 0.5 if weighted else None
    ref = xpdl.LogisticRegression(C=0.5).fit(X, y, sample_weight=w)
    m = xpdl.LogisticRegression(C=0.5).fit(_d(X), _d(y),
                                           sample_weight=None if w is None else _d(w))
    assert m.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(m.predict_proba(X), ref.predict_proba(X), rtol=1e-8,
                               atol=1e-10)
    assert m.classes_.tolist() == ref.classes_.tolist()


# -- streamed minibatch training ---------------------------------------------------------
STREAMED = [
    lambda: xpdl.MLPClassifier((8,), max_iter=3, batch_size=50, random_state=0),
    lambda: xpdl.MLPRegressor((8,), max_iter=3, batch_size=50, random_state=0),
    lambda: xpdl.LogisticRegression(solver="sgd", max_iter=3, batch_size=50, random_state=0),
    lambda: xpdl.LinearRegression(solver="adam", max_iter=3, batch_size=50, random_state=0),
]
IDS = ["mlpc", "mlpr", "logistic-sgd", "linear-adam"]


def _xy(est):
    if est._is_classifier:
        return _clf()
    return _reg()


@pytest.mark.parametrize("make", STREAMED, ids=IDS)
def test_one_chunk_equals_the_in_memory_fit(scheduler, make):
    X, y = _xy(make())
    ref = make().fit(X, y)
    m = make().fit(_d(X, rows=X.shape[0]), _d(y, rows=X.shape[0]))
    assert m.loss_curve_ == ref.loss_curve_
    for a, b in zip(m.module_.parameters(), ref.module_.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("make", STREAMED, ids=IDS)
def test_chunks_streamed_same_seed_same_numbers(scheduler, make):
    X, y = _xy(make())
    a = make().fit(_d(X), _d(y))
    b = make().fit(_d(X), y)  # y in memory, sliced like X's chunks
    assert a.loss_curve_ == b.loss_curve_
    assert a.loss_curve_[-1] < a.loss_curve_[0]
    ref = make().fit(X, y)  # a different order of the same samples: close, not equal
    assert abs(a.loss_curve_[-1] - ref.loss_curve_[-1]) < 0.5 * abs(ref.loss_curve_[0])


@pytest.mark.parametrize("solver", ["gd"])
def test_full_batch_gd_sums_gradients_over_chunks(scheduler, solver):
    X, y = _clf()
    ref = xpdl.LogisticRegression(solver=solver, max_iter=15).fit(X, y)
    m = xpdl.LogisticRegression(solver=solver, max_iter=15).fit(_d(X), _d(y))
    np.testing.assert_allclose(m.predict_proba(X), ref.predict_proba(X), rtol=1e-10)
    Xr, yr = _reg()
    ref = xpdl.LinearRegression(solver="gd", max_iter=20).fit(Xr, yr)
    m = xpdl.LinearRegression(solver="gd", max_iter=20).fit(_d(Xr), _d(yr))
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-10)


def test_partial_fit_and_early_stopping_on_chunks(scheduler):
    X, y = _clf()
    m = xpdl.MLPClassifier((8,), random_state=0)
    m.partial_fit(_d(X), _d(y), classes=[2, 1, 0])
    m.partial_fit(_d(X), _d(y))
    assert m.n_iter_ == 2
    es = xpdl.MLPClassifier((8,), max_iter=5, early_stopping=True, validation_fraction=0.25,
                            random_state=0).fit(_d(X), _d(y))
    assert len(es.validation_scores_) == es.n_iter_
    assert 0.0 <= es.best_validation_score_ <= 1.0
    with pytest.raises(ValueError, match="at least 2 chunks"):
        xpdl.MLPClassifier((8,), early_stopping=True).fit(_d(X, 1200), _d(y, 1200))


# -- prediction, unknown chunks, moving and saving --------------------------------------
@pytest.mark.parametrize("make", [
    lambda: xpdl.LinearRegression(), lambda: xpdl.LogisticRegression(),
    lambda: xpdl.MLPClassifier((8,), max_iter=3, random_state=0),
    lambda: xpdl.MLPRegressor((8,), max_iter=3, random_state=0)], ids=[
    "linear", "logistic", "mlpc", "mlpr"])
def test_predictions_are_lazy_and_chunked_like_X(scheduler, make, tmp_path):
    X, y = _xy(make())
    Xd = _d(X)
    m = make().fit(Xd, _d(y))
    methods = [k for k in ("predict", "predict_proba", "decision_function")
               if hasattr(m, k)]
    for name in methods:
        out = getattr(m, name)(Xd)
        assert isinstance(out, da.Array) and out.chunks[0] == Xd.chunks[0]
        # the graph: X's layers plus one map over its blocks, nothing of the training
        assert len(out.dask.layers) == len(Xd.dask.layers) + 1
        np.testing.assert_allclose(out.compute(), getattr(m, name)(X), rtol=1e-12)
    score = m.score(Xd, _d(y))
    assert score == pytest.approx(m.score(X, y), rel=1e-12)
    path = str(tmp_path / "m.safetensors")
    xpdl.save(m, path)
    back = xpdl.load(path)
    np.testing.assert_allclose(back.predict(Xd).compute(), m.predict(X), rtol=1e-12)
    torch = pytest.importorskip("torch")
    moved = xpdl.load(path).to(xp=xpdl._namespace.array_namespace(torch.zeros(1)))
    np.testing.assert_allclose(moved.predict(torch.asarray(X)).numpy(), m.predict(X),
                               rtol=1e-6)


def test_unknown_chunk_sizes_and_dask_or_numpy_labels(scheduler):
    X, y = _clf()
    Xd, yd = _d(X), _d(y)
    keep = Xd[:, 0] > -np.inf
    Xu, yu = Xd[keep], yd[keep]
    assert np.isnan(Xu.chunks[0][0])
    for make in (lambda: xpdl.LinearRegression(), lambda: xpdl.LogisticRegression(),
                 lambda: xpdl.MLPClassifier((8,), max_iter=2, random_state=0)):
        target = (yu * 1.0) if "Linear" in type(make()).__name__ else yu
        a = make().fit(Xu, target)
        b = make().fit(Xu, y * 1.0 if "Linear" in type(make()).__name__ else y)
        c = make().fit(Xd, yd * 1.0 if "Linear" in type(make()).__name__ else yd)
        pa, pc = a.predict(Xu).compute(), c.predict(X)
        np.testing.assert_allclose(pa, pc, rtol=1e-10)
        np.testing.assert_allclose(b.predict(X), pc, rtol=1e-10)


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: xpdl.LinearRegression(), lambda: xpdl.LogisticRegression(),
    lambda: xpdl.MLPClassifier((4,), max_iter=1)], ids=["lstsq", "lbfgs", "stream"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_in_any_chunk_is_the_usual_error(scheduler, make, bad):
    X, y = _clf()
    X = X.copy()
    X[1111, 2] = bad  # in the last chunk
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        make().fit(_d(X), _d(y))


@pytest.mark.parametrize("make", STREAMED, ids=IDS)
@pytest.mark.parametrize("bad", ["nan", "inf", "negative", "all negative"])
def test_bad_weights_streamed_are_the_in_memory_error(scheduler, make, bad):
    # the streamed fit checked the weights' total first: NaN and negative weights were
    # "sample_weight sums to zero"
    X, y = _xy(make())
    w = np.ones(X.shape[0])
    if bad == "all negative":
        w = -w
    else:
        w[1111] = {"nan": np.nan, "inf": np.inf, "negative": -1.0}[bad]  # the last chunk
    with pytest.raises(ValueError) as memory:
        make().fit(X, y, sample_weight=w)
    with pytest.raises(ValueError) as streamed:
        make().fit(_d(X), _d(y), sample_weight=_d(w))
    assert str(streamed.value) == str(memory.value)
    assert "sums to zero" not in str(streamed.value)


def test_layout_and_namespace_errors(scheduler):
    X, y = _clf()
    m = xpdl.LinearRegression()
    with pytest.raises(ValueError, match="chunked by rows only"):
        m.fit(da.from_array(X, chunks=(300, 2)), y * 1.0)
    with pytest.raises(ValueError, match="chunked differently"):
        m.fit(_d(X), da.from_array(y * 1.0, chunks=400))
    with pytest.raises(ValueError, match="1200 samples but y has 10"):
        m.fit(_d(X), y[:10] * 1.0)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="Dask array but y is a torch"):
        m.fit(_d(X), torch.asarray(y * 1.0))
    with pytest.raises(ValueError, match="in memory"):
        xpdl.MLPClassifier((4,), dp_noise_multiplier=1.0).fit(_d(X), _d(y))
    fitted = xpdl.LinearRegression().fit(X, y * 1.0)
    with pytest.raises(ValueError, match="expecting 5 features"):
        fitted.predict(_d(X[:, :3]))


@pytest.mark.slow
def test_mlp_trains_on_data_four_times_the_clusters_memory():
    """A lazily generated 3.2 GB X (4x the 2 x 400 MiB memory_limit) streams through one
    MLP epoch: chunks are made on the workers, fetched one at a time; no worker dies."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="400MiB",
                                  dashboard_address=None) as c, distributed.Client(c) as client:
        n, p = 4_200_000, 100
        X = da.random.default_rng(0).standard_normal((n, p), chunks=(40_000, p))
        y = (X @ np.linspace(-1, 1, p) > 0).astype("int64")
        assert X.nbytes >= 4 * 2 * 400 * 2 ** 20
        workers = set(client.scheduler_info()["workers"])
        m = xpdl.MLPClassifier((16,), max_iter=1, batch_size=1000, random_state=0).fit(X, y)
        assert set(client.scheduler_info()["workers"]) == workers  # none was restarted
        assert m.loss_curve_[0] < 0.3


def test_mlp_regressor_column_y_on_dask_predicts_as_in_memory(scheduler):
    """A Dask y of shape (n, 1): one target, predictions of shape (n,), as in memory."""
    from sklearn.exceptions import DataConversionWarning

    X, y = _reg(n=600)
    kw = dict(hidden_layer_sizes=(4,), max_iter=2, batch_size=50, random_state=0)
    with pytest.warns(DataConversionWarning):
        m = xpdl.MLPRegressor(**kw).fit(_d(X, rows=600), _d(y[:, None], rows=600))
    with pytest.warns(DataConversionWarning):
        ref = xpdl.MLPRegressor(**kw).fit(X, y[:, None])
    pred = m.predict(_d(X)).compute()
    assert pred.shape == ref.predict(X).shape == (600,)
    np.testing.assert_array_equal(pred, ref.predict(X))


def test_batches_of_dask_arrays_are_lazy_rows(backend):
    """xpdl.datasets.batches over Dask arrays: lazy batches holding the shuffled rows;
    an unknown length (after boolean indexing) is named."""
    if backend.name != "numpy":
        pytest.skip("Dask arrays of NumPy chunks")
    import dask.array as da

    from xpdl import datasets
    from xpdl.random import Generator

    X = da.from_array(np.arange(20.0).reshape(10, 2), chunks=(4, 2))
    y = da.from_array(np.arange(10), chunks=4)
    got = list(datasets.batches(X, y, batch_size=3, shuffle=True, rng=0))
    assert all(isinstance(b, da.Array) for pair in got for b in pair)
    rows = np.concatenate([np.asarray(yb) for _, yb in got])
    np.testing.assert_array_equal(rows, Generator(0).permutation(10))
    np.testing.assert_array_equal(np.concatenate([np.asarray(Xb) for Xb, _ in got]),
                                  np.arange(20.0).reshape(10, 2)[rows])
    for arrays in ((X[X[:, 0] > 3],), (X[X[:, 0] > 3], y[y > 3])):
        with pytest.raises(ValueError, match="length is unknown"):
            datasets.batches(*arrays, batch_size=3)
