"""The optimizers, each a chain of :mod:`xpdl.optim.transforms` with PyTorch's defaults."""

from __future__ import annotations

import numbers

from .. import _namespace as _ns
from . import _fused
from .base import FusedTransformation, chain
from .transforms import (
    _learning_rate_at,
    _plain,
    add_decayed_weights,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)

__all__ = ["gd", "sgd", "adam", "adamw", "rmsprop", "adagrad"]


def _with_fused(tx, fused, flat_stepper=None):
    out = FusedTransformation(tx.init, tx.update, tx.check)
    out.fused = fused
    out.flat_stepper = flat_stepper
    return out


def _fused_adam(lr, b1, b2, eps, wd_l2, wd_decoupled, i_adam, i_lr, amsgrad):
    pa, pl = f"{i_adam}/", f"{i_lr}/step"

    def fused(params, grads, state, scratch):
        t = state[pa + "step"] + 1
        lr_t = _learning_rate_at(lr, state[pl])
        for k, g in grads.items():
            _fused.adam_step(_fused_namespace(g), params[k], g, state[f"{pa}exp_avg/{k}"],
                             state[f"{pa}exp_avg_sq/{k}"], scratch(k), lr=lr_t, b1=b1, b2=b2,
                             eps=eps, t=t, wd_l2=wd_l2, wd_decoupled=wd_decoupled,
                             vmax=state[f"{pa}max_exp_avg_sq/{k}"] if amsgrad else None)
        state[pa + "step"] = t
        state[pl] += 1
        return state

    def flat_stepper(P, G, keys, shapes, state, cache, n_l2=0):
        xp = _fused_namespace(P)
        M = _fused.flat_views(xp, cache, "flat_m", state, [f"{pa}exp_avg/{k}" for k in keys],
                              shapes)
        V = _fused.flat_views(xp, cache, "flat_v", state,
                              [f"{pa}exp_avg_sq/{k}" for k in keys], shapes)
        X = _fused.flat_views(xp, cache, "flat_vmax", state,
                              [f"{pa}max_exp_avg_sq/{k}" for k in keys],
                              shapes) if amsgrad else None
        run = _fused.adam_stepper(xp, P, G, M, V, _fused.flat_scratch(xp, cache, P), n_l2,
                                  X, shapes, b1=b1, b2=b2, eps=eps,
                                  wd_l2=wd_l2, wd_decoupled=wd_decoupled)

        def step(c=0.0):
            t = state[pa + "step"] + 1
            run(_learning_rate_at(lr, state[pl]), t, c)
            state[pa + "step"] = t
            state[pl] += 1

        return step

    return fused, flat_stepper


def _fused_rule(rule, flags, keys, lr, pl, scalars):
    """The in-place executions of ``rule`` (:mod:`._rules`) for an object optimizer:
    ``fused`` (per parameter) and ``flat_stepper``. ``keys``: the state prefix of each of
    the rule's state arrays (None for one this configuration lacks); ``pl`` the schedule's
    step counter; ``scalars(lr_t, c)`` the rule's constants."""

    def fused(params, grads, state, scratch):
        lr_t = _learning_rate_at(lr, state[pl])
        for k, g in grads.items():
            arrays = [params[k], g] + [None if p is None else state[f"{p}/{k}"] for p in keys]
            _fused.apply_rule(_fused_namespace(g), rule, (False, *flags), arrays, scratch(k),
                              scalars(lr_t, 0.0))
        state[pl] += 1
        return state

    def flat_stepper(P, G, names, shapes, state, cache, n_l2=0):
        xp = _fused_namespace(P)
        flats = [None if p is None else _fused.flat_views(
            xp, cache, f"flat:{p}", state, [f"{p}/{k}" for k in names], shapes) for p in keys]
        run = _fused.rule_stepper(xp, rule, flags, (P, G, *flats),
                                  _fused.flat_scratch(xp, cache, P), n_l2)

        def step(c=0.0):
            run(scalars(_learning_rate_at(lr, state[pl]), c), c)
            state[pl] += 1

        return step

    return fused, flat_stepper


def _fused_namespace(a):
    return _ns.array_namespace(a)


def _check_lr(lr, betas=None, **non_negative):
    """``ValueError`` for a negative or NaN learning rate or other setting, or a beta
    outside [0, 1), as PyTorch's optimizers refuse them (they would train to NaN or
    diverge)."""
    if not callable(lr):
        _real(lr, "learning rate", "a number or a schedule")
        if not lr >= 0:
            raise ValueError(f"xpdl.optim: learning rate must be non-negative, got {lr}")
    for name, v in non_negative.items():
        if not _real(v, name) >= 0:
            raise ValueError(f"xpdl.optim: {name} must be non-negative, got {v}")
    if betas is not None:
        if not isinstance(betas, (tuple, list)):
            raise TypeError(f"xpdl.optim: betas must be two numbers, got {betas!r}")
        if not (len(betas) == 2 and all(0 <= _real(b, "betas") < 1 for b in betas)):
            raise ValueError(f"xpdl.optim: betas must be two numbers in [0, 1), got {betas}")


def _check_flag(v, name):
    if not isinstance(v, bool) and getattr(getattr(v, "dtype", None), "kind", "") != "b":
        raise TypeError(f"xpdl.optim: {name} must be True or False, got {v!r}")


def _real(v, name, what="a number"):
    """``v`` if it is a real number (a Python or NumPy one, a 0-d array; a bool or a string
    is not), else ``TypeError``."""
    boolean = isinstance(v, bool) or getattr(getattr(v, "dtype", None), "kind", "") == "b"
    if not boolean and not isinstance(v, (str, bytes)) and (
            isinstance(v, numbers.Real) or not isinstance(v, numbers.Complex)):
        try:
            float(v)
            return v
        except (TypeError, ValueError):
            pass
    raise TypeError(f"xpdl.optim: {name} must be {what}, got {v!r}")


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

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds the step counters as ints.
    """
    _check_lr(lr, momentum=momentum, weight_decay=weight_decay)
    lr, momentum, weight_decay = _plain(lr, momentum, weight_decay)
    if nesterov and momentum <= 0:
        raise ValueError("xpdl.optim.sgd: nesterov needs momentum > 0")
    parts = []
    if weight_decay:
        parts.append(add_decayed_weights(weight_decay))
    if momentum:
        parts.append(trace(momentum, nesterov))
    parts.append(scale_by_learning_rate(lr))
    i_mom = len(parts) - 2 if momentum else None
    pl = f"{len(parts) - 1}/step"

    def fused(params, grads, state, scratch):
        lr_t = _learning_rate_at(lr, state[pl])
        for k, g in grads.items():
            b = state[f"{i_mom}/momentum/{k}"] if momentum else None
            _fused.sgd_step(_fused_namespace(g), params[k], g, b, scratch(k), lr=lr_t,
                            momentum=momentum, nesterov=nesterov, wd=weight_decay)
        state[pl] += 1
        return state

    def flat_stepper(P, G, keys, shapes, state, cache, n_l2=0):
        xp = _fused_namespace(P)
        B = None
        if momentum:
            B = _fused.flat_views(xp, cache, "flat_b", state,
                                  [f"{i_mom}/momentum/{k}" for k in keys], shapes)
        run = _fused.sgd_stepper(xp, P, G, B, _fused.flat_scratch(xp, cache, P), n_l2,
                                 momentum=momentum, nesterov=nesterov, wd=weight_decay)

        def step(c=0.0):
            run(_learning_rate_at(lr, state[pl]), c)
            state[pl] += 1

        return step

    return _with_fused(chain(*parts), fused, flat_stepper)


def gd(lr):
    r"""Plain (full-batch) gradient descent :math:`p \leftarrow p - \eta g` (``sgd(lr)``).

    Parameters
    ----------
    lr : float or callable
        Learning rate :math:`\eta`, or a schedule ``step -> float``.

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds the step counters as ints.
    """
    return sgd(lr)


def adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
    r"""Adam (``torch.optim.Adam``): :math:`p \leftarrow p - \eta\,\hat m/(\sqrt{\hat v} +
    \epsilon)`; ``weight_decay`` is added to the gradient (L2, not decoupled).

    With :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g`, :math:`v_t = \beta_2 v_{t-1} +
    (1-\beta_2) g^2`, :math:`\hat m = m_t/(1-\beta_1^t)`, :math:`\hat v = v_t/(1-\beta_2^t)`.

    Parameters
    ----------
    lr : float or callable
        Learning rate :math:`\eta`, or a schedule ``step -> float``.
    betas : (float, float), default (0.9, 0.999)
        :math:`\beta_1, \beta_2`, each in [0, 1).
    eps : float, default 1e-8
        :math:`\epsilon`, non-negative.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`: :math:`g \leftarrow g + \lambda p` first.
    amsgrad : bool, default False
        AMSGrad (``torch.optim.Adam(amsgrad=True)``): the direction divides by the
        largest :math:`v_t` so far, :math:`\hat m/(\sqrt{\max_{s\le t} v_s/(1-\beta_2^t)}
        + \epsilon)`; the state keeps that maximum (``max_exp_avg_sq``).

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds the step counters as ints.
    """
    _check_lr(lr, betas, eps=eps, weight_decay=weight_decay)
    _check_flag(amsgrad, "amsgrad")
    lr, eps, weight_decay = _plain(lr, eps, weight_decay)
    betas = _plain(*betas)
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    parts += [scale_by_adam(betas[0], betas[1], eps, amsgrad), scale_by_learning_rate(lr)]
    i = len(parts) - 2
    out = _with_fused(chain(*parts), *_fused_adam(lr, betas[0], betas[1], eps, weight_decay,
                                                  0.0, i, i + 1, amsgrad))
    out.param_counters = (f"{i}/step",)
    return out


def adamw(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    r"""AdamW (``torch.optim.AdamW``): decoupled decay
    :math:`p \leftarrow p - \eta\,(\hat m/(\sqrt{\hat v}+\epsilon) + \lambda p)`.

    Parameters
    ----------
    lr : float or callable
        Learning rate :math:`\eta`, or a schedule ``step -> float``.
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1), as in :func:`adam`.
    eps : float, default 1e-8
    weight_decay : float, default 1e-2
        :math:`\lambda`, applied to the parameters, not added to the gradient.
    amsgrad : bool, default False
        AMSGrad, as in :func:`adam`.

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds the step counters as ints.
    """
    _check_lr(lr, betas, eps=eps, weight_decay=weight_decay)
    _check_flag(amsgrad, "amsgrad")
    lr, eps, weight_decay = _plain(lr, eps, weight_decay)
    betas = _plain(*betas)
    tx = chain(scale_by_adam(betas[0], betas[1], eps, amsgrad),
               add_decayed_weights(weight_decay), scale_by_learning_rate(lr))
    out = _with_fused(tx, *_fused_adam(lr, betas[0], betas[1], eps, 0.0, weight_decay, 0, 2,
                                       amsgrad))
    out.param_counters = ("0/step",)
    return out


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0):
    r"""RMSprop (``torch.optim.RMSprop``): :math:`p \leftarrow p - \eta\, g/(\sqrt{s}+\epsilon)`,
    through a momentum buffer when ``momentum > 0``.

    :math:`s \leftarrow \alpha s + (1-\alpha) g^2`; centered, :math:`\sqrt{s - \bar g^2}`
    replaces :math:`\sqrt{s}` with :math:`\bar g` the same average of :math:`g`.

    Parameters
    ----------
    lr : float or callable
        Learning rate :math:`\eta`, or a schedule ``step -> float``.
    alpha : float, default 0.99
        Smoothing constant in [0, 1].
    eps : float, default 1e-8
    momentum : float, default 0
    centered : bool, default False
    weight_decay : float, default 0
        L2 penalty added to the gradient.

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds the step counters as ints.
    """
    _check_lr(lr, eps=eps, momentum=momentum, weight_decay=weight_decay)
    lr, eps, momentum, weight_decay = _plain(lr, eps, momentum, weight_decay)
    if not 0 <= _real(alpha, "alpha") <= 1:
        raise ValueError(f"xpdl.optim.rmsprop: alpha must be in [0, 1], got {alpha}")
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    i = len(parts)
    parts.append(scale_by_rms(alpha, eps, centered))
    if momentum:
        parts.append(trace(momentum))
    parts.append(scale_by_learning_rate(lr))
    keys = (f"{i}/square_avg", f"{i}/grad_avg" if centered else None,
            f"{i + 1}/momentum" if momentum else None)
    alpha = _plain(alpha)
    return _with_fused(chain(*parts), *_fused_rule(
        _fused.RMSPROP, (bool(weight_decay), bool(centered), bool(momentum)), keys, lr,
        f"{len(parts) - 1}/step",
        lambda lr_t, c: (c, weight_decay, alpha, 1 - alpha, eps, lr_t, momentum)))


def adagrad(lr=1e-2, eps=1e-10, weight_decay=0.0, initial_accumulator_value=0.0):
    r"""Adagrad (``torch.optim.Adagrad``, no learning-rate decay):
    :math:`p \leftarrow p - \eta\, g/(\sqrt{\sum g^2}+\epsilon)`.

    Parameters
    ----------
    lr : float or callable
        Learning rate :math:`\eta`, or a schedule ``step -> float``.
    eps : float, default 1e-10
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    initial_accumulator_value : float, default 0
        Where the sum of squared gradients starts (non-negative).

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds the step counters as ints.
    """
    _check_lr(lr, eps=eps, weight_decay=weight_decay,
              initial_accumulator_value=initial_accumulator_value)
    lr, eps, weight_decay = _plain(lr, eps, weight_decay)
    parts = [add_decayed_weights(weight_decay)] if weight_decay else []
    parts += [scale_by_adagrad(eps, initial_accumulator_value), scale_by_learning_rate(lr)]
    i = len(parts) - 2
    return _with_fused(chain(*parts), *_fused_rule(
        _fused.ADAGRAD, (bool(weight_decay),), (f"{i}/sum",), lr, f"{i + 1}/step",
        lambda lr_t, c: (c, weight_decay, eps, lr_t)))
