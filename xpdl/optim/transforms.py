"""The transformation cores. Each optimizer of :mod:`xpdl.optim` is a chain of these.

The update equations are PyTorch's (``torch.optim`` defaults), so trajectories match
step for step: weight decay added to the gradient (``add_decayed_weights`` before the
scaling, as ``SGD``/``Adam``/``RMSprop``/``Adagrad`` do) or to the update (after it, which
is AdamW's decoupled decay).
"""

from __future__ import annotations

import math
import numbers

from .. import _namespace as _ns
from . import _rules
from .base import GradientTransformation

__all__ = ["add_decayed_weights", "trace", "scale_by_adam", "scale_by_rms",
           "scale_by_adagrad", "scale_by_learning_rate", "clip_by_global_norm"]


def _concrete(v):
    """Whether a step counter is a plain number (not an array traced by ``jax.jit``)."""
    return isinstance(v, numbers.Number)


def _learning_rate_at(learning_rate, step):
    """The learning rate of update ``step`` (0 for the first): ``learning_rate`` itself, or
    a schedule's value there, which must be a non-negative number: ``ValueError`` (naming
    the step) for NaN or a negative value, raised before anything is updated. Inside
    ``jax.jit`` (a traced ``step``) the value is returned unchecked."""
    if not callable(learning_rate):
        return learning_rate
    lr = learning_rate(step)
    if not _concrete(step):
        return lr
    try:
        if isinstance(lr, (str, bytes)):
            raise TypeError
        lr = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"xpdl.optim: the learning-rate schedule gave {lr!r} at step {step}; "
                        f"a learning rate must be a number (nothing was updated)") from None
    if not lr >= 0:
        raise ValueError(f"xpdl.optim: the learning-rate schedule gave {lr} at step {step}; "
                         f"a learning rate must be a non-negative number (nothing was "
                         f"updated)")
    return lr


def _plain(*values):
    """NumPy scalars and 0-d arrays as Python floats (array_api_strict's arrays take Python
    scalars only, and the other namespaces would keep a NumPy scalar's dtype); callables
    (schedules) and Python numbers as they are. One value in, one out; several, a tuple."""
    out = []
    for v in values:
        if not (type(v) in (float, int, bool) or callable(v)):
            try:
                v = float(v)
            except (TypeError, ValueError):  # (checked where it is used)
                pass
        out.append(v)
    return out[0] if len(out) == 1 else tuple(out)


def _zeros_like(tree):
    out = {}
    for k, v in tree.items():
        xp = _ns.array_namespace(v)
        out[k] = xp.zeros(v.shape, dtype=v.dtype, device=_ns.device_of(v))
    return out


def _need_params(params, name):
    if params is None:
        raise ValueError(f"xpdl.optim.{name}: update() needs params")


def add_decayed_weights(weight_decay):
    r"""``g + weight_decay * p`` (L2 regularisation of the loss :math:`\tfrac{\lambda}{2}
    \|p\|^2`).

    Parameters
    ----------
    weight_decay : float
        :math:`\lambda`; 0 passes the gradients through.

    Returns
    -------
    GradientTransformation
        Stateless; ``update`` needs ``params``.
    """
    weight_decay = _plain(weight_decay)

    def update(grads, state, params=None, *, inplace=False):
        if not weight_decay:
            return grads, state
        _need_params(params, "add_decayed_weights")
        return {k: _rules.add_l2(g, params[k], weight_decay) for k, g in grads.items()}, state

    return GradientTransformation(lambda params: {}, update)


def trace(momentum, nesterov=False):
    r"""Momentum buffer :math:`b \leftarrow \mu b + g`; outputs :math:`b` or, with
    Nesterov, :math:`g + \mu b` (PyTorch's SGD, dampening 0).

    Parameters
    ----------
    momentum : float
        :math:`\mu`.
    nesterov : bool, default False

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds one buffer per parameter
        (``momentum/<name>``).
    """
    momentum = _plain(momentum)

    def init(params):
        return {f"momentum/{k}": v for k, v in _zeros_like(params).items()}

    def update(grads, state, params=None, *, inplace=False):
        out, new = {}, {}
        for k, g in grads.items():
            out[k], new[f"momentum/{k}"] = _rules.momentum(g, state[f"momentum/{k}"],
                                                           momentum, nesterov)
        return out, new

    return GradientTransformation(init, update)


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, amsgrad=False):
    r"""Adam's direction :math:`\hat m / (\sqrt{\hat v} + \epsilon)` with bias corrections
    :math:`\hat m = m/(1-\beta_1^t)`, :math:`\hat v = v/(1-\beta_2^t)`, where
    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g` and :math:`v \leftarrow \beta_2 v +
    (1-\beta_2) g^2` (PyTorch's operations, the bias corrections moved into the
    constants; the same definition the in-place executors run). With ``amsgrad``,
    :math:`v` in the direction is the largest so far, :math:`\max(v_{\max}, v)` (state
    ``max_exp_avg_sq``), as ``torch.optim.Adam``'s.

    Parameters
    ----------
    b1, b2 : float, default 0.9 and 0.999
        :math:`\beta_1, \beta_2`.
    eps : float, default 1e-8
        :math:`\epsilon`.
    amsgrad : bool, default False

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds ``step`` and
        ``exp_avg/<name>``, ``exp_avg_sq/<name>`` (and ``max_exp_avg_sq/<name>``).
    """
    b1, b2, eps = _plain(b1, b2, eps)

    def init(params):
        state = {"step": 0}
        for name in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()):
            state.update({f"{name}/{k}": v for k, v in _zeros_like(params).items()})
        return state

    def update(grads, state, params=None, *, inplace=False):
        t = state["step"] + 1
        bc1 = 1 - b1 ** t
        # a traced step counter (inside jax.jit) takes the array path: no Python math on it
        sbc2 = math.sqrt(1 - b2 ** t) if _concrete(t) else (1 - b2 ** t) ** 0.5
        new = {"step": t}
        out = {}
        for k, g in grads.items():
            m, v = _rules.adam_moments(g, state[f"exp_avg/{k}"], state[f"exp_avg_sq/{k}"],
                                       b1, 1 - b1, b2, 1 - b2)
            new[f"exp_avg/{k}"], new[f"exp_avg_sq/{k}"] = m, v
            xp = _ns.array_namespace(g)
            if amsgrad:  # (a state from before amsgrad was turned on has no maximum yet)
                top = state.get(f"max_exp_avg_sq/{k}")
                v = new[f"max_exp_avg_sq/{k}"] = v if top is None else xp.maximum(top, v)
            out[k] = _rules.adam_direction(m, v, eps * sbc2, sbc2 / bc1, xp.sqrt)
        return out, new

    return GradientTransformation(init, update)


def scale_by_rms(alpha=0.99, eps=1e-8, centered=False):
    r"""RMSprop's direction :math:`g / (\sqrt{s} + \epsilon)` with :math:`s \leftarrow
    \alpha s + (1-\alpha) g^2`; centered: :math:`g / (\sqrt{s - \bar g^2} + \epsilon)` with
    :math:`\bar g \leftarrow \alpha \bar g + (1-\alpha) g`.

    Parameters
    ----------
    alpha : float, default 0.99
        :math:`\alpha`, the decay of the average of squares.
    eps : float, default 1e-8
        :math:`\epsilon`.
    centered : bool, default False

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; the state holds ``square_avg/<name>`` (and
        ``grad_avg/<name>``).
    """
    alpha, eps = _plain(alpha, eps)

    def init(params):
        state = {f"square_avg/{k}": v for k, v in _zeros_like(params).items()}
        if centered:
            state.update({f"grad_avg/{k}": v for k, v in _zeros_like(params).items()})
        return state

    def update(grads, state, params=None, *, inplace=False):
        out, new = {}, {}
        for k, g in grads.items():
            out[k], new[f"square_avg/{k}"], ga = _rules.rms_direction(
                g, state[f"square_avg/{k}"], state.get(f"grad_avg/{k}"), alpha, 1 - alpha,
                eps, centered, _ns.array_namespace(g).sqrt)
            if centered:
                new[f"grad_avg/{k}"] = ga
        return out, new

    return GradientTransformation(init, update)


def scale_by_adagrad(eps=1e-10, initial_accumulator_value=0.0):
    r"""Adagrad's direction :math:`g / (\sqrt{\sum_t g_t^2} + \epsilon)`.

    Parameters
    ----------
    eps : float, default 1e-10
    initial_accumulator_value : float, default 0
        The sum's starting value.

    Returns
    -------
    GradientTransformation
        Its state is the running sum of squares per parameter.
    """
    eps, initial_accumulator_value = _plain(eps, initial_accumulator_value)

    def init(params):
        z = _zeros_like(params)
        if initial_accumulator_value:
            z = {k: v + initial_accumulator_value for k, v in z.items()}
        return {f"sum/{k}": v for k, v in z.items()}

    def update(grads, state, params=None, *, inplace=False):
        out, new = {}, {}
        for k, g in grads.items():
            out[k], new[f"sum/{k}"] = _rules.adagrad_direction(
                g, state[f"sum/{k}"], eps, _ns.array_namespace(g).sqrt)
        return out, new

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate):
    """Multiply by ``-learning_rate``; a callable is a schedule evaluated at the step count
    (0 for the first update).

    Parameters
    ----------
    learning_rate : float or callable
        Non-negative, or a schedule ``step -> float``.

    Returns
    -------
    GradientTransformation
        Its state is the step count.
    """
    learning_rate = _plain(learning_rate)
    if not callable(learning_rate) and not learning_rate >= 0:  # (NaN too)
        raise ValueError(f"xpdl.optim: learning rate must be non-negative, got {learning_rate}")

    def init(params):
        return {"step": 0}

    def update(grads, state, params=None, *, inplace=False):
        step = state["step"]
        lr = _learning_rate_at(learning_rate, step)
        return {k: g * (-lr) for k, g in grads.items()}, {"step": step + 1}

    def check(state):
        _learning_rate_at(learning_rate, state["step"])

    return GradientTransformation(init, update, check if callable(learning_rate) else None)


def clip_by_global_norm(max_norm):
    r"""Scale all gradients by :math:`\min(1, c / (\|g\|_2 + 10^{-6}))`, with
    :math:`\|g\|_2` the norm of all of them together (``torch.nn.utils.clip_grad_norm_``).
    Computed on the device: no host synchronisation.

    Parameters
    ----------
    max_norm : float
        :math:`c`, positive.

    Returns
    -------
    GradientTransformation
        ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``
        over flat ``{name: array}`` dicts; no state; each update has its gradient's shape.
    """
    max_norm = _plain(max_norm)
    if not max_norm > 0:  # (NaN too)
        raise ValueError(f"xpdl.optim.clip_by_global_norm: max_norm must be positive, "
                         f"got {max_norm}")

    def update(grads, state, params=None, *, inplace=False):
        if not grads:
            return grads, state
        return _clip_by_norm(grads, max_norm)[0], state

    return GradientTransformation(lambda params: {}, update)


def _clip_by_norm(grads, max_norm, norm_type=2.0, check=None):
    """``({name: g * min(1, max_norm / (norm + 1e-6))}, norm)`` for a non-empty dict of
    gradients, with ``norm`` their ``norm_type``-norm taken together (a 0-d array): the
    2-norm, the largest magnitude for ``inf``, else :math:`(\\sum |g|^p)^{1/p}`;
    ``check(norm)`` runs before any scaling."""
    total = None
    xp = None
    for g in grads.values():
        xp = _ns.array_namespace(g)
        if norm_type == 2.0:
            part = xp.sum(g * g)
        elif norm_type == math.inf:
            part = xp.max(xp.abs(g)) if g.size else xp.zeros((), dtype=g.dtype,
                                                            device=_ns.device_of(g))
        else:
            part = xp.sum(xp.abs(g) ** norm_type)
        if total is None:
            total = part
        else:
            total = xp.maximum(total, part) if norm_type == math.inf else total + part
    if norm_type == 2.0:
        norm = xp.sqrt(total)
    else:
        norm = total if norm_type == math.inf else total ** (1.0 / norm_type)
    if check is not None:
        check(norm)
    r = max_norm / (norm + 1e-6)
    coef = xp.minimum(r, _ns.lit(xp, 1.0, r))
    return {k: g * xp.astype(coef, g.dtype) for k, g in grads.items()}, norm
