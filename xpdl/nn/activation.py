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
    """

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        return F.softmax(x, axis=self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


class Identity(Module):
    """Returns its input."""

    def forward(self, x):
        return x
