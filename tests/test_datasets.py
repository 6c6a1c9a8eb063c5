"""Bundled and synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from xpdl import datasets
from xpdl.datasets import make_classification, make_regression


def test_load_digits_is_bundled_and_placed(backend):
    X, y = datasets.load_digits(xp=backend.xp, device=backend.device)
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.device == backend.device and X.dtype == backend.xp.float32
    Xh, yh = backend.to_numpy(X), backend.to_numpy(y)
    assert Xh.min() == 0 and Xh.max() == 16
    assert sorted(set(yh.tolist())) == list(range(10))
    try:
        from sklearn.datasets import load_digits

        ref = load_digits()
        np.testing.assert_array_equal(Xh, ref.data)
        np.testing.assert_array_equal(yh, ref.target)
    except ImportError:
        pass


def test_generators_are_seeded_and_backend_independent(backend):
    X, y = datasets.make_classification(50, 4, n_classes=3, random_state=1, xp=backend.xp,
                                        device=backend.device)
    Xr, yr = datasets.make_classification(50, 4, n_classes=3, random_state=1)
    np.testing.assert_array_equal(backend.to_numpy(X), Xr)
    np.testing.assert_array_equal(backend.to_numpy(y), yr)
    assert np.bincount(yr).tolist() == [17, 17, 16]
    X, y = datasets.make_regression(30, 5, noise=0.1, random_state=2, xp=backend.xp,
                                    device=backend.device)
    assert X.shape == (30, 5) and y.shape == (30,)
    Xr, yr = datasets.make_regression(30, 5, noise=0.1, random_state=2)
    np.testing.assert_array_equal(backend.to_numpy(y), yr)


@pytest.mark.parametrize("call,match", [
    # each made an empty or shapeless data set, or failed inside NumPy (AxisError,
    # "negative dimensions") instead of naming the argument
    (lambda: make_classification(0, 3), "n_samples must be an int >= 1"),
    (lambda: make_classification(-1, 3), "n_samples must be an int >= 1"),
    (lambda: make_classification(10.5, 3), "n_samples must be an int >= 1"),
    (lambda: make_classification(True, 3), "n_samples must be an int >= 1"),
    (lambda: make_classification(10, 0), "n_features must be an int >= 1"),
    (lambda: make_classification(10, 3, n_classes=1), "n_classes must be an int >= 2"),
    (lambda: make_classification(3, 2, n_classes=5), "n_samples >= n_classes"),
    (lambda: make_classification(10, 2, class_sep=float("nan")), "class_sep"),
    (lambda: make_regression(10, 3, noise=-1.0), "noise must be a finite number >= 0"),
    (lambda: make_regression(10, 3, n_targets=0), "n_targets must be an int >= 1"),
    (lambda: make_regression(10, 3, bias=float("inf")), "bias must be a finite number"),
])
def test_generators_name_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
    X, y = make_classification(np.int64(6), 2, n_classes=3)  # NumPy ints are counts
    assert X.shape == (6, 2) and sorted(np.unique(y)) == [0, 1, 2]


def test_generators_refuse_an_integer_dtype(backend):
    # make_regression(dtype=int32) truncated the normal draws to integers (mostly 0, -1,
    # 1) without a word; load_digits' pixel counts may be integers
    from xpdl.datasets import load_digits

    ints = [backend.xp.int32, "int64"]
    for make in (make_regression, make_classification):
        for dt in ints:
            with pytest.raises(ValueError, match="dtype must be a floating dtype"):
                make(20, 3, xp=backend.xp, device=backend.device, dtype=dt)
        X, _ = make(20, 3, xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
        assert X.dtype == backend.float_dtype
    X, _ = load_digits(xp=backend.xp, device=backend.device, dtype=backend.xp.int32)
    assert X.dtype == backend.xp.int32 and int(backend.to_numpy(X).max()) == 16


def test_batches_in_order_keep_namespace_device_and_rows(backend):
    """Without shuffling: slices in order, the last one shorter (or dropped); None stays
    None; one batch holding every row is the arrays themselves."""
    Xh = np.arange(22.0).reshape(11, 2)
    X, y = backend.asarray(Xh), backend.asarray(np.arange(11), dtype=backend.xp.int64)
    got = list(datasets.batches(X, y, None, batch_size=4))
    assert [b[0].shape[0] for b in got] == [4, 4, 3] and all(b[2] is None for b in got)
    for Xb, yb, _ in got:
        assert Xb.device == backend.device and yb.dtype == backend.xp.int64
    np.testing.assert_array_equal(np.concatenate([backend.to_numpy(b[0]) for b in got]), Xh)
    np.testing.assert_array_equal(np.concatenate([backend.to_numpy(b[1]) for b in got]),
                                  np.arange(11))
    assert [b[0].shape[0] for b in datasets.batches(X, batch_size=4, drop_last=True)] == [4, 4]
    ((whole,),) = list(datasets.batches(X, batch_size=11, shuffle=True, rng=0))
    assert whole is X


def test_batches_shuffle_from_the_seeded_generator(backend):
    """Shuffled rows follow xpdl.random.Generator's permutation (the same on every
    backend), X and y rows together; a Generator gives a new order each epoch, an int the
    same one."""
    from xpdl.random import Generator

    Xh = np.arange(20.0).reshape(10, 2)
    X, y = backend.asarray(Xh), backend.asarray(np.arange(10), dtype=backend.xp.int64)
    order = Generator(5).permutation(10)
    got = list(datasets.batches(X, y, batch_size=3, shuffle=True, rng=5))
    rows = np.concatenate([backend.to_numpy(b[1]) for b in got])
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_array_equal(np.concatenate([backend.to_numpy(b[0]) for b in got]),
                                  Xh[order])
    gen = Generator(5)
    first = np.concatenate([backend.to_numpy(b[0]) for b in datasets.batches(
        y, batch_size=3, shuffle=True, rng=gen)])
    second = np.concatenate([backend.to_numpy(b[0]) for b in datasets.batches(
        y, batch_size=3, shuffle=True, rng=gen)])
    np.testing.assert_array_equal(first, order)
    assert sorted(second.tolist()) == list(range(10)) and second.tolist() != first.tolist()
    again = np.concatenate([backend.to_numpy(b[0]) for b in datasets.batches(
        y, batch_size=3, shuffle=True, rng=5)])
    np.testing.assert_array_equal(again, order)


@pytest.mark.parametrize("block", [1, 12, 40, 1 << 22])
def test_shuffled_batches_gathered_in_blocks_are_the_permutations_rows(backend, monkeypatch,
                                                                        block):
    """Shuffled rows are gathered several batches at a time (one take per block of at most
    ``_BLOCK`` elements per array, the batches slices of it): still batch after batch the
    seeded permutation's rows of every array, whatever the block holds (one batch, two and
    a part, all of them), with drop_last and an absent array."""
    from xpdl.random import Generator

    monkeypatch.setattr(datasets, "_BLOCK", block)
    Xh = np.arange(46.0).reshape(23, 2)
    X, y = backend.asarray(Xh), backend.asarray(np.arange(23), dtype=backend.xp.int64)
    order = Generator(2).permutation(23)
    for drop_last in (False, True):
        got = list(datasets.batches(X, None, y, batch_size=5, shuffle=True, rng=2,
                                    drop_last=drop_last))
        sizes = [5, 5, 5, 5] + ([] if drop_last else [3])
        assert [b[0].shape[0] for b in got] == sizes and all(b[1] is None for b in got)
        at = 0
        for (Xb, _, yb), k in zip(got, sizes):
            assert Xb.device == backend.device and yb.dtype == backend.xp.int64
            np.testing.assert_array_equal(backend.to_numpy(Xb), Xh[order[at:at + k]])
            np.testing.assert_array_equal(backend.to_numpy(yb), order[at:at + k])
            at += k


def test_batches_name_bad_arguments(backend):
    X = backend.asarray(np.ones((4, 2)))
    with pytest.raises(ValueError, match="same number of rows"):
        datasets.batches(X, backend.asarray(np.ones(3)), batch_size=2)
    with pytest.raises(ValueError, match="same number of rows"):
        datasets.batches(backend.asarray(np.array(1.0)), batch_size=2)
    other = np.ones(4) if backend.name != "numpy" else \
        pytest.importorskip("array_api_strict").asarray([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError, match="different namespaces"):
        datasets.batches(X, other, batch_size=2)
    with pytest.raises(TypeError, match="expected arrays .or None., got list"):
        datasets.batches(X, [1, 2, 3, 4], batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        datasets.batches(X, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        datasets.batches(X, batch_size=2.0)
    with pytest.raises(TypeError, match="at least one array"):
        datasets.batches(None, batch_size=2)


@pytest.mark.filterwarnings("ignore:xpdl.*max_iter")
def test_a_loop_over_batches_trains_as_the_estimator(backend):
    """A PyTorch-style loop (nn model, Adam, compile_step, batches shuffled by the same
    seeded generator) gives MLPClassifier's fit: bit for bit on NumPy."""
    import xpdl
    from xpdl import MLPClassifier, nn, optim
    from xpdl import losses as L
    from xpdl.random import Generator

    g = np.random.default_rng(3)
    Xh = g.normal(size=(100, 4))
    yh = (Xh[:, 0] + Xh[:, 1] > 0).astype(np.int64) + (Xh[:, 2] > 0.5)
    X, y = backend.asarray(Xh), backend.asarray(yh, dtype=backend.xp.int64)
    est = MLPClassifier((9,), batch_size=30, max_iter=3, alpha=0.0, learning_rate=1e-2,
                        random_state=7, n_iter_no_change=10**6).fit(X, y)
    gen = Generator(7)
    kw = dict(rng=gen, xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    model = nn.Sequential(nn.Linear(4, 9, init="he", **kw), nn.ReLU(),
                          nn.Linear(9, 3, init="glorot", **kw))
    step = xpdl.compile_step(model, L.cross_entropy, optim.Adam(model, lr=1e-2))
    for _ in range(3):
        for Xb, yb in datasets.batches(X, y, batch_size=30, shuffle=True, rng=gen):
            step(Xb, yb)
    for a, b in zip([model[0].weight, model[2].weight], est.coefs_):
        a, b = backend.to_numpy(a).T, backend.to_numpy(b)
        if backend.name == "numpy":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-9 if backend.is64 else 1e-4, atol=1e-6)
