"""Activation layers (thin wrappers over :mod:`xpdl.functional`)."""

from __future__ import annotations

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
