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
