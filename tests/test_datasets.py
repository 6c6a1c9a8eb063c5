"""Bundled and synthetic data."""

from __future__ import annotations

import numpy as np

from xpdl import datasets


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
