"""Learning-rate schedules: callables ``step -> float`` (step 0 is the first update).

Each takes a number or another schedule where it takes a value, so they compose:
``linear_warmup(cosine_decay(1e-3, 1000), 100)``.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["constant", "step_decay", "exponential_decay", "cosine_decay", "linear_warmup"]


def _number(v, name, *, minimum=0.0, strict=False, steps=False, schedule=True):
    """A schedule's number argument, or ``ValueError``/``TypeError`` naming it: a value a
    learning rate is made from (non-negative, not NaN; or, where ``schedule``, another
    schedule, whose values the optimizer checks when it calls it) or, with ``steps``, a
    finite step count (a bool is not one)."""
    if callable(v) and schedule and not steps:
        return v
    what = "a number of steps" if steps else "a number or a schedule" if schedule else "a number"
    try:  # a Python or NumPy number, a 0-d array
        f = None if isinstance(v, (bool, str, bytes)) else float(v)
    except (TypeError, ValueError):
        f = None
    if f is None:
        raise TypeError(f"xpdl.optim.schedules: {name} must be {what}, got {v!r}")
    ok = f > minimum if strict else f >= minimum  # (False for NaN)
    if not ok or (steps and not math.isfinite(f)):
        bound = f"{'finite and ' if steps else ''}{'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"xpdl.optim.schedules: {name} must be {bound}, got {v!r}")
    return v


def _value(v, step):
    if not callable(v):
        return float(v)
    out = v(step)
    return float(out) if _concrete(step) else out


def _concrete(step):
    """A plain step number; otherwise an array (traced inside ``jax.jit``), on which the
    schedules compute with its namespace instead of Python's math."""
    return isinstance(step, numbers.Number)


def _xp(step):
    from .. import _namespace as _ns

    return _ns.array_namespace(step)


def constant(value):
    """The same learning rate at every step.

    Parameters
    ----------
    value : float or callable

    Returns
    -------
    callable
        ``step -> float`` (step 0 is the first update; an array step, traced by
        ``jax.jit``, gives an array).
    """
    _number(value, "value")
    return lambda step: _value(value, step)


def step_decay(init_value, step_size, gamma=0.1):
    """``init_value * gamma ** (step // step_size)`` (``torch.optim.lr_scheduler.StepLR``).

    Parameters
    ----------
    init_value : float or callable
    step_size : int
        Steps between decays (at least 1).
    gamma : float, default 0.1
        Factor per decay.

    Returns
    -------
    callable
        ``step -> float`` (step 0 is the first update; an array step, traced by
        ``jax.jit``, gives an array).
    """
    _number(init_value, "init_value")
    _number(step_size, "step_size", minimum=1, steps=True)
    _number(gamma, "gamma", schedule=False)
    return lambda step: _value(init_value, step) * gamma ** (step // step_size)


def exponential_decay(init_value, decay_rate, transition_steps=1):
    """``init_value * decay_rate ** (step / transition_steps)`` (continuous, as Optax's
    ``exponential_decay`` without staircase).

    Parameters
    ----------
    init_value : float or callable
    decay_rate : float
        Positive; below 1 decays.
    transition_steps : int, default 1
        Steps over which the rate is multiplied by ``decay_rate`` once.

    Returns
    -------
    callable
        ``step -> float`` (step 0 is the first update; an array step, traced by
        ``jax.jit``, gives an array).
    """
    _number(init_value, "init_value")
    # (a negative rate would flip the learning rate's sign every step)
    _number(decay_rate, "decay_rate", strict=True, schedule=False)
    _number(transition_steps, "transition_steps", strict=True, steps=True)
    return lambda step: _value(init_value, step) * decay_rate ** (step / transition_steps)


def cosine_decay(init_value, decay_steps, alpha=0.0):
    r"""Cosine from ``init_value`` to ``alpha * init_value`` over ``decay_steps``:
    :math:`\eta_0\,[(1-\alpha)\tfrac12(1+\cos(\pi\min(t, T)/T)) + \alpha]`.

    Parameters
    ----------
    init_value : float or callable
        :math:`\eta_0`.
    decay_steps : int
        :math:`T`, positive; constant afterwards.
    alpha : float, default 0
        The final fraction of ``init_value``.

    Returns
    -------
    callable
        ``step -> float`` (step 0 is the first update; an array step, traced by
        ``jax.jit``, gives an array).
    """
    _number(init_value, "init_value")
    _number(decay_steps, "decay_steps", strict=True, steps=True)
    _number(alpha, "alpha", schedule=False)  # (a negative one would end below zero)

    def f(step):
        if _concrete(step):
            c = 0.5 * (1 + math.cos(math.pi * min(step, decay_steps) / decay_steps))
        else:
            xp = _xp(step)
            c = 0.5 * (1 + xp.cos(math.pi * xp.minimum(step, decay_steps) / decay_steps))
        return _value(init_value, step) * ((1 - alpha) * c + alpha)

    return f


def linear_warmup(schedule, warmup_steps, init_value=0.0):
    """Rise linearly from ``init_value`` to ``schedule(0)`` over ``warmup_steps``, then follow
    ``schedule`` (shifted by ``warmup_steps``).

    Parameters
    ----------
    schedule : float or callable
        What follows the warm-up.
    warmup_steps : int
        Non-negative.
    init_value : float, default 0

    Returns
    -------
    callable
        ``step -> float`` (step 0 is the first update; an array step, traced by
        ``jax.jit``, gives an array).
    """
    _number(schedule, "schedule")
    _number(warmup_steps, "warmup_steps", steps=True)
    _number(init_value, "init_value", schedule=False)

    def f(step):
        if _concrete(step):
            if step < warmup_steps:
                target = _value(schedule, 0)
                return init_value + (target - init_value) * step / warmup_steps
            return _value(schedule, step - warmup_steps)
        xp = _xp(step)
        rise = init_value + (_value(schedule, 0) - init_value) * step / max(warmup_steps, 1)
        return xp.where(step < warmup_steps, rise,
                        _value(schedule, xp.maximum(step - warmup_steps, 0)))

    return f
