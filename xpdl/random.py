"""Seeded random numbers that are the same on every backend.

All draws come from one host generator (NumPy's PCG64), are made in float64 on the host,
cast there to the requested dtype and only then moved to the caller's namespace and device.
A model trained with ``random_state=0`` therefore starts from the same numbers on NumPy,
CuPy, torch, JAX and array_api_strict.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._namespace import check_xp, from_host

__all__ = ["Generator", "as_generator"]


def _seed_of(random_state, name="random_state"):
    """A seed for :class:`Generator` from scikit-learn's kinds of ``random_state``: None
    or an int >= 0 as they are; a ``numpy.random.RandomState`` or ``numpy.random.Generator``
    gives one draw (so, as in scikit-learn, the instance advances and two calls differ)."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2 ** 31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2 ** 63 - 1))
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(
            random_state, numbers.Integral) or random_state < 0):
        raise ValueError(f"xpdl: {name} must be None, an int >= 0, a numpy.random.RandomState "
                         f"or a numpy.random.Generator, got {random_state!r}")
    return random_state


class Generator:
    """Seeded host random generator whose draws can be placed on any device.

    Parameters
    ----------
    seed : int or None
        Seed of the PCG64 bit generator; ``None`` takes fresh entropy.

    Examples
    --------
    >>> import numpy as np
    >>> from xpdl.random import Generator
    >>> a = Generator(0).normal((2, 3), xp=np)
    >>> b = Generator(0).normal((2, 3), xp=np)
    >>> bool((a == b).all())
    True
    """

    def __init__(self, seed=None):
        if seed is not None and (not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"xpdl: seed must be a non-negative int or None, got {seed!r}")
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def _place(self, host, xp, device, dtype):
        xp = check_xp(xp)
        if xp is None:
            return host if dtype is None else host.astype(dtype)
        return from_host(host, xp, device=device, dtype=dtype)

    def _float_dtype(self, xp, dtype):
        xp = check_xp(xp)
        if dtype is None:
            return None if xp is None else xp.float32
        return _floating(xp, dtype)

    def normal(self, shape, *, loc=0.0, scale=1.0, xp=None, device=None, dtype=None):
        """Draw ``N(loc, scale**2)`` samples.

        Parameters
        ----------
        shape : int or tuple of int
        loc, scale : float, default 0.0 and 1.0
            Finite.
        xp : array namespace, optional
            Where the draws go (a NumPy array on the host when None). They are drawn on the
            host and moved, so the numbers are the same on every backend.
        device : optional
            A device of ``xp``.
        dtype : dtype or {"float32", "float64"}, optional
            float32 by default.

        Returns
        -------
        array of shape ``shape``
        """
        _finite((loc, scale), "normal: loc and scale")
        host = self._rng.normal(loc, scale, size=shape)
        return self._place(host, xp, device, self._float_dtype(xp, dtype))

    def uniform(self, shape, *, low=0.0, high=1.0, xp=None, device=None, dtype=None):
        """Draw ``U[low, high)`` samples.

        Parameters
        ----------
        shape : int or tuple of int
        low, high : float, default 0.0 and 1.0
            Finite.
        xp : array namespace, optional
            Where the draws go (a NumPy array on the host when None). They are drawn on the
            host and moved, so the numbers are the same on every backend.
        device : optional
            A device of ``xp``.
        dtype : dtype or {"float32", "float64"}, optional
            float32 by default.

        Returns
        -------
        array of shape ``shape``
        """
        _finite((low, high), "uniform: low and high")
        host = self._rng.uniform(low, high, size=shape)
        return self._place(host, xp, device, self._float_dtype(xp, dtype))

    def bernoulli(self, p, shape, *, xp=None, device=None, dtype=None):
        """0/1 draws equal to 1 with probability ``p``, as floats.

        Parameters
        ----------
        p : float in [0, 1]
        shape : int or tuple of int
        xp : array namespace, optional
            Where the draws go (a NumPy array on the host when None). They are drawn on the
            host and moved, so the numbers are the same on every backend.
        device : optional
            A device of ``xp``.
        dtype : dtype or {"float32", "float64"}, optional
            float32 by default.

        Returns
        -------
        array of shape ``shape``
        """
        _probability(p, "bernoulli: p")
        host = (self._rng.random(size=shape) < p).astype(np.float64)
        return self._place(host, xp, device, self._float_dtype(xp, dtype))

    def integers(self, low, high, shape=None, *, xp=None, device=None):
        """Integers in ``[low, high)``.

        Parameters
        ----------
        low, high : int
        shape : int or tuple of int, optional
            A 0-d array when None.
        xp : array namespace, optional
            Where the draws go (a NumPy array on the host when None). They are drawn on the
            host and moved, so the numbers are the same on every backend.
        device : optional
            A device of ``xp``.

        Returns
        -------
        int64 array of shape ``shape``
        """
        host = self._rng.integers(low, high, size=shape, dtype=np.int64)
        return self._place(np.asarray(host), xp, device, None)

    def permutation(self, n, *, xp=None, device=None):
        """A random permutation of ``range(n)``.

        Parameters
        ----------
        n : int >= 0
        xp : array namespace, optional
            Where the draws go (a NumPy array on the host when None). They are drawn on the
            host and moved, so the numbers are the same on every backend.
        device : optional
            A device of ``xp``.

        Returns
        -------
        int64 array of shape (n,)
        """
        _count(n, "permutation: n")
        host = self._rng.permutation(n).astype(np.int64)
        return self._place(host, xp, device, None)

    def poisson_indices(self, n, rate, *, xp=None, device=None):
        """Indices of a Poisson sample of ``range(n)``: each index joins independently with
        probability ``rate`` (DP-SGD's sampling).

        Parameters
        ----------
        n : int >= 0
        rate : float in [0, 1]
        xp : array namespace, optional
            Where the draws go (a NumPy array on the host when None). They are drawn on the
            host and moved, so the numbers are the same on every backend.
        device : optional
            A device of ``xp``.

        Returns
        -------
        int64 array of shape (k,)
            Increasing; ``k`` is random (binomial with mean ``n * rate``) and may be 0.
        """
        _count(n, "poisson_indices: n")
        _probability(rate, "poisson_indices: rate")
        host = np.flatnonzero(self._rng.random(n) < rate).astype(np.int64)
        return self._place(host, xp, device, None)

    def split_indices(self, n, fraction, labels=None):
        """Random ``(train, validation)`` index arrays with ``round(fraction * n)``
        validation samples (at least 1), stratified by ``labels`` when given.

        Parameters
        ----------
        n : int >= 1
        fraction : float in (0, 1)
        labels : array-like of shape (n,), optional
            Host labels: each class gets its share of the validation set (largest
            remainders rounded up).

        Returns
        -------
        train, validation : NumPy int arrays
            Sorted, disjoint, together ``range(n)``.
        """
        _count(n, "split_indices: n")
        if not 0 < fraction < 1:  # (NaN too)
            raise ValueError(f"xpdl: split_indices: fraction must be in (0, 1), got "
                             f"{fraction!r}")
        n_val = max(1, int(round(fraction * n)))
        if labels is None:
            perm = self._rng.permutation(n)
            return np.sort(perm[n_val:]), np.sort(perm[:n_val])
        labels = np.asarray(labels)
        val = []
        classes, counts = np.unique(labels, return_counts=True)
        # Per-class shares of the validation set, largest remainders rounded up.
        share = counts * (n_val / n)
        take = np.floor(share).astype(int)
        for i in np.argsort(-(share - take))[: n_val - take.sum()]:
            take[i] += 1
        for c, k in zip(classes, take):
            members = np.flatnonzero(labels == c)
            val.append(self._rng.permutation(members)[:k])
        val = np.sort(np.concatenate(val))
        train = np.setdiff1d(np.arange(n), val)
        return train, val

    def get_state(self) -> dict:
        """The generator's state.

        Returns
        -------
        dict
            JSON-serialisable (NumPy's PCG64 state), for :meth:`set_state` and the model
            files.
        """
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_state`.

        Parameters
        ----------
        state : dict
            A PCG64 state; ``ValueError`` if it is not one (checked on a scratch generator
            first, so this one is unchanged then).

        Returns
        -------
        None
        """
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ValueError("xpdl: not a PCG64 generator state")
        try:
            np.random.PCG64().state = state
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            raise ValueError(f"xpdl: corrupted PCG64 generator state ({exc})") from None
        self._rng.bit_generator.state = state

    def __repr__(self):
        return "xpdl.random.Generator(PCG64)"


def as_generator(rng) -> Generator:
    """Turn ``None``, an int seed or a :class:`Generator` into a :class:`Generator`.

    Parameters
    ----------
    rng : None, int or Generator
        A Generator is returned as it is (its draws continue); an int seeds a new one;
        None seeds one from the operating system.

    Returns
    -------
    Generator
    """
    if isinstance(rng, Generator):
        return rng
    if rng is None or isinstance(rng, numbers.Integral):
        return Generator(rng)
    raise TypeError(f"xpdl: rng must be None, an int seed or xpdl.random.Generator, "
                    f"got {type(rng).__name__}")


def _floating(xp, dtype):
    """``dtype`` if it is a real floating dtype (of ``xp``, or NumPy's when ``xp`` is None),
    else ``ValueError``: an integer dtype would truncate real draws silently."""
    try:
        kind = np.dtype(dtype).kind if xp is None or isinstance(dtype, str) else (
            "f" if xp.isdtype(dtype, "real floating") else "?")
    except TypeError:
        kind = "?"
    if kind != "f":
        raise ValueError(f"xpdl: dtype must be a floating dtype (the draws are real numbers), "
                         f"got {dtype!r}")
    return dtype


def _finite(values, what):
    """``ValueError`` unless every one of ``values`` is a finite real number."""
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
           for v in values):
        raise ValueError(f"xpdl: {what} must be finite numbers, got {values!r}")


def _probability(p, what):
    """``ValueError`` unless ``p`` is a number in [0, 1] (NaN is not)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"xpdl: {what} must be a probability in [0, 1], got {p!r}")


def _count(n, what):
    """``ValueError`` unless ``n`` is a non-negative int (NumPy's included; not a bool)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"xpdl: {what} must be a non-negative int, got {n!r}")
