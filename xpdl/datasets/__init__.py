"""Bundled and synthetic data (no downloads).

``load_digits`` reads the 1,797 8x8 handwritten digits shipped inside the package (the UCI
"Optical Recognition of Handwritten Digits" test set, as scikit-learn also ships it; CC BY
4.0). The generators draw from :class:`xpdl.random.Generator` on the host, so a seed gives
the same data on every backend.
"""

from __future__ import annotations

import math
import numbers
from importlib import resources

import numpy as np

from .. import _namespace as _ns
from .._namespace import check_xp, from_host
from ..random import Generator, _floating, as_generator

__all__ = ["load_digits", "make_regression", "make_classification", "batches"]


def _place(X, y, xp, device, dtype, y_dtype=None, floating=False):
    xp = check_xp(xp)
    if floating and dtype is not None:  # (an int dtype truncated the normal draws)
        _floating(xp, dtype)
    if xp is None:
        fdt = dtype or np.float32
        return X.astype(fdt), y.astype(fdt if y_dtype is None else y_dtype)
    fdt = xp.float32 if dtype is None else dtype
    Xd = from_host(X, xp, device=device, dtype=fdt)
    yd = from_host(y, xp, device=device, dtype=fdt if y_dtype is None else getattr(xp, y_dtype))
    return Xd, yd


def _count(name, v, low=1):
    """``v`` as an int of at least ``low``, else a ``ValueError`` naming it."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        raise ValueError(f"xpdl: {name} must be an int >= {low}, got {v!r}")
    return int(v)


def _real(name, v, low=None):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or \
            (low is not None and v < low):
        raise ValueError(f"xpdl: {name} must be a finite number" +
                         (f" >= {low}" if low is not None else "") + f", got {v!r}")
    return float(v)


def load_digits(*, xp=None, device=None, dtype=None):
    """The bundled handwritten digits.

    Parameters
    ----------
    xp : namespace, optional
        Where to put the arrays (NumPy when None).
    device : device, optional
    dtype : dtype, optional
        Float dtype of ``X`` (float32 by default).

    Returns
    -------
    X : array of shape (1797, 64)
        Pixel intensities 0..16.
    y : array of shape (1797,)
        Digit labels 0..9 (int64).

    Examples
    --------
    >>> from xpdl.datasets import load_digits
    >>> X, y = load_digits()
    >>> X.shape, y.shape, int(X.max())
    ((1797, 64), (1797,), 16)
    """
    with resources.files(__package__).joinpath("data/digits.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as z:
            X = z["images"].astype(np.float64)
            y = z["target"].astype(np.int64)
    return _place(X, y, xp, device, dtype, "int64")


def make_regression(n_samples=100, n_features=10, *, n_targets=1, noise=0.0, bias=0.0,
                    random_state=None, xp=None, device=None, dtype=None):
    """A linear regression problem ``y = X w + bias + noise``.

    Parameters
    ----------
    n_samples, n_features : int, default 100 and 10
    n_targets : int, default 1
    noise : float, default 0.0
        Standard deviation of the Gaussian noise added to ``y``.
    bias : float, default 0.0
    random_state : int or None
        Seeds the host generator: the same numbers on every backend.
    xp : array namespace, optional
        Where the arrays go (NumPy by default).
    device : optional
        A device of ``xp``.
    dtype : dtype or {"float32", "float64"}, optional
        Of ``X`` (and a regression's ``y``); float32 by default.

    Returns
    -------
    X : array of shape (n_samples, n_features)
    y : array of shape (n_samples,) or (n_samples, n_targets)
    """
    n_samples, n_features = _count("n_samples", n_samples), _count("n_features", n_features)
    n_targets = _count("n_targets", n_targets)
    noise, bias = _real("noise", noise, low=0.0), _real("bias", bias)
    g = Generator(random_state)
    X = g.normal((n_samples, n_features))
    w = g.uniform((n_features, n_targets), low=-10, high=10)
    y = X @ w + bias + noise * g.normal((n_samples, n_targets))
    if n_targets == 1:
        y = y[:, 0]
    return _place(X, y, xp, device, dtype, floating=True)


def make_classification(n_samples=100, n_features=10, *, n_classes=2, class_sep=1.5,
                        random_state=None, xp=None, device=None, dtype=None):
    """Gaussian blobs, one per class, with centres ``class_sep`` apart on average.

    Parameters
    ----------
    n_samples, n_features : int, default 100 and 10
    n_classes : int >= 2, default 2
    class_sep : float, default 1.5
        Scale of the class centres (drawn from a normal distribution).
    random_state : int or None
        Seeds the host generator: the same numbers on every backend.
    xp : array namespace, optional
        Where the arrays go (NumPy by default).
    device : optional
        A device of ``xp``.
    dtype : dtype or {"float32", "float64"}, optional
        Of ``X`` (and a regression's ``y``); float32 by default.

    Returns
    -------
    X : array of shape (n_samples, n_features)
    y : array of shape (n_samples,) with labels ``0..n_classes-1`` (int64), balanced.
    """
    n_classes = _count("n_classes", n_classes, low=2)
    n_samples, n_features = _count("n_samples", n_samples), _count("n_features", n_features)
    if n_samples < n_classes:
        raise ValueError(f"xpdl: make_classification needs n_samples >= n_classes (one "
                         f"sample per class at least), got {n_samples} < {n_classes}")
    class_sep = _real("class_sep", class_sep, low=0.0)
    g = Generator(random_state)
    centres = g.normal((n_classes, n_features), scale=class_sep)
    y = np.arange(n_samples) % n_classes
    y = y[g.permutation(n_samples)]
    X = centres[y] + g.normal((n_samples, n_features))
    return _place(X, y, xp, device, dtype, "int64", floating=True)


def batches(*arrays, batch_size, shuffle=False, rng=None, drop_last=False):
    """Minibatches of the rows of ``arrays``, in their namespace and on their device (what
    ``torch.utils.data.DataLoader(TensorDataset(X, y), batch_size, shuffle)`` gives a
    PyTorch loop): one tuple ``(X_b, y_b, ...)`` per batch.

    Parameters
    ----------
    *arrays : arrays of one namespace and device, each with ``n`` rows (axis 0)
        ``None`` stands for an absent array (say, no sample weights) and comes back as
        None in every batch.
    batch_size : int >= 1
        Rows per batch; the last batch has the rest (fewer) unless ``drop_last``.
    shuffle : bool, default False
        Rows in an order drawn from ``rng`` (a permutation from the seeded host generator,
        the same on every backend), a new one at each call; in their order otherwise,
        each batch a slice. One batch holding every row is never shuffled (the estimators
        train so too: a full batch's order does not matter).
    rng : int or xpdl.random.Generator, optional
        The shuffle's source: pass one Generator to get a new order every epoch; an int
        gives the same order at every call.
    drop_last : bool, default False
        Leave out a last batch smaller than ``batch_size``.

    Yields
    ------
    tuple of arrays
        Shapes ``(b, ...)``, ``b = batch_size`` except perhaps for the last batch. In
        order, each batch is a slice of the arrays; shuffled, a slice of the rows of
        several batches gathered at once (at most 4M elements per array; one batch at a
        time on JAX): copy a batch before writing into it in place.

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> X, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    >>> [yb.tolist() for _, yb in xpdl.datasets.batches(X, y, batch_size=2)]
    [[0, 1], [2, 3], [4]]
    """
    present = [a for a in arrays if a is not None]
    if not present:
        raise TypeError("xpdl.datasets.batches: give at least one array")
    for a in present:
        if not _ns.is_array(a):
            raise TypeError(f"xpdl.datasets.batches: expected arrays (or None), got "
                            f"{type(a).__name__}")
    xp, device = _ns.get_namespace_and_device(*present)
    if any(a.ndim and (a.shape[0] is None or a.shape[0] != a.shape[0]) for a in present):
        raise ValueError("xpdl.datasets.batches: the arrays' length is unknown; compute "
                         "their chunk sizes first (dask's compute_chunk_sizes)")
    lengths = {a.shape[0] if a.ndim else None for a in present}
    if len(lengths) != 1 or None in lengths:
        raise ValueError(f"xpdl.datasets.batches: every array needs the same number of rows "
                         f"(axis 0); got shapes {[tuple(a.shape) for a in present]}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"xpdl.datasets.batches: batch_size must be an int, got "
                        f"{batch_size!r}")
    bs = _count("batch_size", batch_size)
    (n,) = lengths
    gen = as_generator(rng) if shuffle else None
    return _batches(arrays, xp, device, n, bs, gen if bs < n else None, drop_last)


#: Rows of several shuffled batches are gathered at once, up to this many elements per array.
_BLOCK = 1 << 22


def _batches(arrays, xp, device, n, bs, gen, drop_last):
    # a generator apart from batches(), so bad arguments raise at the call
    if gen is None and bs >= n:  # one batch: the arrays themselves
        yield tuple(arrays)
        return
    if gen is not None:
        # On JAX each eager call costs tens of microseconds: the permutation stays on the
        # host, where slicing it is free, and take() gathers a batch in one call (25
        # against 140 us per batch at 64-128-128-10).
        host = _ns.is_jax(xp)
        perm = gen.permutation(n, xp=None if host else xp, device=None if host else device)
        # Elsewhere the rows of several batches are gathered by one take() and the batches
        # are slices of it (a take is a kernel launch on CuPy and torch on CUDA, 25 us per
        # call measured with CuPy); a block holds at most _BLOCK elements per array.
        dims = [d for a in arrays if a is not None for d in a.shape[1:]]
        row = max((math.prod(a.shape[1:]) for a in arrays if a is not None), default=1) \
            if all(isinstance(d, int) for d in dims) else None  # (a lazy width: unknown)
        per = 1 if host or row is None else max(1, _BLOCK // max(1, bs * row))
    block, at = None, 0
    for start in range(0, n, bs):
        stop = min(start + bs, n)
        if drop_last and stop - start < bs:
            return
        if gen is None:
            yield tuple(None if a is None else a[start:stop, ...] for a in arrays)
            continue
        if start >= at + (0 if block is None else block[0]):
            at, end = start, min(start + per * bs, n)
            idx = perm[start:end]
            block = (end - start, [None if a is None else xp.take(a, idx, axis=0)
                                   for a in arrays])
        lo, hi = start - at, stop - at
        yield tuple(None if b is None else (b if per == 1 else b[lo:hi, ...])
                    for b in block[1])
