"""Activation layers (thin wrappers over :mod:`xpdl.functional`)."""

from __future__ import annotations

import numbers

from .. import functional as F
from .module import Module


class ReLU(Module):
    """``max(x, 0)`` elementwise."""

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    """``x`` if positive else ``negative_slope * x`` (:func:`xpdl.functional.leaky_relu`).

    Parameters
    ----------
    negative_slope : float, default 0.01

    Input and output have the same shape, any number of axes.
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = F._slope(negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """Logistic function elementwise."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    """Hyperbolic tangent elementwise."""

    def forward(self, x):
        return F.tanh(x)


class Softplus(Module):
    r"""Smooth ReLU :math:`\frac{1}{\beta}\log(1+e^{\beta x})`, linear where
    :math:`\beta x >` ``threshold`` (:func:`xpdl.functional.softplus`, PyTorch's
    ``nn.Softplus``).

    Parameters
    ----------
    beta : float > 0, default 1.0
    threshold : float, default 20.0

    Input and output have the same shape, any number of axes.
    """

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        F._softplus_args(beta, threshold)
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Flatten(Module):
    """Axes ``start_dim`` to ``end_dim`` (inclusive) merged into one, as PyTorch's
    ``nn.Flatten``: ``(n, 8, 8)`` becomes ``(n, 64)`` with the defaults, so images go
    into a :class:`~xpdl.nn.Linear` layer.

    Parameters
    ----------
    start_dim : int, default 1
    end_dim : int, default -1
        Negative values count from the last axis. Both must be axes of the input, with
        ``start_dim`` not after ``end_dim`` (a ``ValueError`` names them otherwise).

    Input of shape ``(d_0, ..., d_{k-1})``; output of shape ``(d_0, ..., d_{s-1},
    d_s * ... * d_e, d_{e+1}, ...)`` in C order (the gradient is reshaped back).
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"xpdl.nn.Flatten: {name} must be an int, got {v!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x):
        shape = tuple(x.shape)
        n = max(len(shape), 1)  # (a 0-d input flattens to one axis, as in PyTorch)
        s, e = self.start_dim, self.end_dim
        s, e = s + n if s < 0 else s, e + n if e < 0 else e
        if not (0 <= s < n and 0 <= e < n and s <= e):
            raise ValueError(f"xpdl.nn.Flatten: start_dim={self.start_dim} and "
                             f"end_dim={self.end_dim} do not name axes in order of an input "
                             f"with {len(shape)} axes (shape {shape})")
        # an axis of unknown length (None on traced arrays such as ndonnx's, NaN on Dask)
        # becomes -1: reshape infers it, where it is the only one
        size = 1
        for d in shape[s:e + 1]:
            size = -1 if size == -1 or d is None or d != d else size * d
        new = tuple(-1 if d is None or d != d else d for d in shape[:s]) + (size,) + tuple(
            -1 if d is None or d != d else d for d in shape[e + 1:])
        if new.count(-1) > 1:
            raise ValueError(f"xpdl.nn.Flatten: the input's shape {shape} leaves more than "
                             f"one axis of unknown length")
        return F.reshape(x, new)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Softmax(Module):
    """Softmax along ``axis`` (:func:`xpdl.functional.softmax`).

    Parameters
    ----------
    axis : int, default -1
        The class axis: the output sums to 1 along it. Input and output have the same
        shape.
    dim : int, optional
        PyTorch's name for ``axis`` (``nn.Softmax(dim=1)``); give one of the two.
    """

    def __init__(self, axis=-1, *, dim=None):
        super().__init__()
        self.axis = F._axis_or_dim(axis, dim, type(self).__name__)

    def forward(self, x):
        return F.softmax(x, axis=self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    """Log-softmax along ``axis`` (:func:`xpdl.functional.log_softmax`), as PyTorch's
    ``nn.LogSoftmax``: log-probabilities computed without taking the log of a softmax
    (finite for any finite input).

    Parameters
    ----------
    axis : int, default -1
        The class axis. Input and output have the same shape.
    dim : int, optional
        PyTorch's name for ``axis``; give one of the two.
    """

    def forward(self, x):
        return F.log_softmax(x, axis=self.axis)


class Identity(Module):
    """Returns its input."""

    def forward(self, x):
        return x
