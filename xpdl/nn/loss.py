"""Losses as modules, PyTorch's ``nn.MSELoss`` and the rest: each holds its ``reduction``
(and Huber's ``delta``) and calls the one definition in :mod:`xpdl.losses`. A loss module
is a ``loss_fn`` for :func:`xpdl.compile_step` (without ``sample_weight``: PyTorch's loss
modules take none either)."""

from __future__ import annotations

from .. import losses as L
from .module import Module

__all__ = ["MSELoss", "L1Loss", "HuberLoss", "BCELoss", "BCEWithLogitsLoss",
           "CrossEntropyLoss"]


class _Loss(Module):
    """``loss(input, target)``: :mod:`xpdl.losses`' function with this module's settings.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
    """

    _fn = None

    def __init__(self, reduction="mean"):
        super().__init__()
        L._check_reduction(reduction)
        self.reduction = reduction

    def forward(self, input, target):  # noqa: A002 - PyTorch's argument names
        return type(self)._fn(input, target, reduction=self.reduction)


class MSELoss(_Loss):
    """Mean squared error (:func:`xpdl.losses.mse`); ``input`` and ``target`` of one
    shape, the result 0-d (``"mean"``, ``"sum"``) or of that shape (``"none"``).

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
    """

    _fn = staticmethod(L.mse)


class L1Loss(_Loss):
    """Mean absolute error (:func:`xpdl.losses.mae`); shapes as :class:`MSELoss`.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
    """

    _fn = staticmethod(L.mae)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities (:func:`xpdl.losses.binary_cross_entropy`);
    shapes as :class:`MSELoss`.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
    """

    _fn = staticmethod(L.binary_cross_entropy)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits
    (:func:`xpdl.losses.binary_cross_entropy_with_logits`); shapes as :class:`MSELoss`.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
    """

    _fn = staticmethod(L.binary_cross_entropy_with_logits)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy (:func:`xpdl.losses.cross_entropy`): ``input`` logits of
    shape ``(n, c)``; ``target`` class indices of shape ``(n,)`` or probabilities of shape
    ``(n, c)``; the result 0-d, or of shape ``(n,)`` with ``"none"``.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
    """

    _fn = staticmethod(L.cross_entropy)


class HuberLoss(_Loss):
    """Huber loss (:func:`xpdl.losses.huber`); shapes as :class:`MSELoss`.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
    delta : float > 0, default 1.0
    """

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = L._huber_delta(delta)

    def forward(self, input, target):  # noqa: A002
        return L.huber(input, target, delta=self.delta, reduction=self.reduction)
