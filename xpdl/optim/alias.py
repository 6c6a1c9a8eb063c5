"""The optimizers, each a chain of :mod:`xpdl.optim.transforms` with PyTorch's defaults."""

from __future__ import annotations

from .base import chain
from .transforms import (
    add_decayed_weights,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)

__all__ = ["gd", "sgd", "adam", "adamw", "rmsprop", "adagrad"]


def _check_lr(lr):
    if not callable(lr) and not lr >= 0:
        raise ValueError(f"xpdl.optim: learning rate must be non-negative, got {lr}")


def sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    r"""Stochastic gradient descent (``torch.optim.SGD``).

    .. math:: g \leftarrow g + \lambda p,\quad b \leftarrow \mu b + g,\quad
              p \leftarrow p - \eta\,(g + \mu b \text{ if Nesterov else } b)

    Parameters
    ----------
    lr : float or callable
        Learning rate :math:`\eta`, or a schedule ``step -> float``.
    momentum : float, default 0
    nesterov : bool, default False
        Needs ``momentum > 0``.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda` added to the gradient.
    """
    _check_lr(lr)
    if momentum < 0:
        raise ValueError(f"xpdl.optim.sgd: momentum must be non-negative, got {momentum}")
    if nesterov and momentum <= 0:
        raise ValueError("xpdl.optim.sgd: nesterov needs momentum > 0")
    parts = []
    if weight_decay:
        parts.append(add_decayed_weights(weight_decay))
    if momentum:
        parts.append(trace(momentum, nesterov))
    parts.append(scale_by_learning_rate(lr))
    return chain(*parts)


def gd(lr):
    r"""Plain (full-batch) gradient descent :math:`p \leftarrow p - \eta g`."""
    return sgd(lr)


def adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    r"""Adam (``torch.optim.Adam``): :math:`p \leftarrow p - \eta\,\hat m/(\sqrt{\hat v} +
    \epsilon)`; ``weight_decay`` is added to the gradient (L2, not decoupled)."""
    _check_lr(lr)
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    parts += [scale_by_adam(betas[0], betas[1], eps), scale_by_learning_rate(lr)]
    return chain(*parts)


def adamw(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    r"""AdamW (``torch.optim.AdamW``): decoupled decay
    :math:`p \leftarrow p - \eta\,(\hat m/(\sqrt{\hat v}+\epsilon) + \lambda p)`."""
    _check_lr(lr)
    return chain(scale_by_adam(betas[0], betas[1], eps), add_decayed_weights(weight_decay),
                 scale_by_learning_rate(lr))


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0):
    r"""RMSprop (``torch.optim.RMSprop``): :math:`p \leftarrow p - \eta\, g/(\sqrt{s}+\epsilon)`,
    through a momentum buffer when ``momentum > 0``."""
    _check_lr(lr)
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    parts.append(scale_by_rms(alpha, eps, centered))
    if momentum:
        parts.append(trace(momentum))
    parts.append(scale_by_learning_rate(lr))
    return chain(*parts)


def adagrad(lr=1e-2, eps=1e-10, weight_decay=0.0, initial_accumulator_value=0.0):
    r"""Adagrad (``torch.optim.Adagrad``, no learning-rate decay):
    :math:`p \leftarrow p - \eta\, g/(\sqrt{\sum g^2}+\epsilon)`."""
    _check_lr(lr)
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    parts += [scale_by_adagrad(eps, initial_accumulator_value), scale_by_learning_rate(lr)]
    return chain(*parts)
