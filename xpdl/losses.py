"""Loss functions with PyTorch's definitions, on any namespace.

Every loss takes Tensors or plain arrays and ``reduction="mean" | "sum" | "none"``; values
and gradients equal those of the ``torch.nn.functional`` function of the same name. The
logits forms are fused (log-softmax / log-sigmoid inside one node), so they stay finite for
logits of magnitude 1e4 in float32. A target Tensor that requires grad gets PyTorch's
gradient too (say an MSE between two learned outputs); class indices get none.

Shapes of ``pred`` and ``target`` must match exactly (where PyTorch only warns): silent
broadcasting of a ``(n, 1)`` prediction against an ``(n,)`` target gives an ``(n, n)`` loss,
the classic linear-regression bug.
"""

from __future__ import annotations

import math
import numbers

from . import _namespace as _ns
from .autodiff import ops as _ops
from .autodiff.primitive import primitive
from .autodiff.tensor import Tensor, apply

__all__ = ["mse", "mae", "huber", "binary_cross_entropy", "binary_cross_entropy_with_logits",
           "cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")
_TINY = 1e-45  # log(_TINY) < -100 in float32 and float64, so the clamp decides


def _prepare(pred, target, name):
    plain = not isinstance(pred, Tensor) and not isinstance(target, Tensor)
    p = _ops.lift(pred)
    xp = p._xp
    t = target.data if isinstance(target, Tensor) else target
    if not _ns.is_array(t):
        raise TypeError(f"xpdl.losses.{name}: target must be an array, got {type(t).__name__}")
    if _ns.array_namespace(t) is not xp:
        raise TypeError(f"xpdl.losses.{name}: pred and target come from different namespaces")
    # the target is an input of the loss's primitive (no gradient), so a recorded step
    # reads each batch's target
    tt = target if isinstance(target, Tensor) else _ops.lift(t, xp)
    return p, tt, xp, plain


def _check_same_shape(p, t, name):
    if tuple(p.data.shape) != tuple(t.data.shape):
        raise ValueError(f"xpdl.losses.{name}: pred has shape {tuple(p.data.shape)} but target "
                         f"has shape {tuple(t.shape)}; they must match (reshape one)")


def _check_reduction(reduction):
    if not isinstance(reduction, str):  # (an array here compared elementwise)
        raise TypeError(f"xpdl: reduction must be one of {_REDUCTIONS}, got "
                        f"{type(reduction).__name__}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"xpdl: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _as_float(t, dtype, xp):
    return t if t.dtype == dtype else xp.astype(t, dtype)


def _elementwise_check(xp, ins, pointwise, **_):
    if pointwise is not _bce:
        return
    for name, a in zip(("prob", "target"), ins):
        if _ns.has_values(a) and bool(xp.any(~((a >= 0) & (a <= 1)))):  # (NaN too)
            raise ValueError(f"xpdl.losses.binary_cross_entropy: {name} must be in [0, 1]; "
                             f"got values from {float(xp.min(a))} to {float(xp.max(a))}")


@primitive("elementwise_loss", saves=True, check=_elementwise_check)
def _elementwise(xp, p, t, pointwise, reduction, kw):
    """An elementwise loss: ``pointwise(xp, p, t, **kw) -> (value, dvalue/dp)``, reduced."""
    value, dvalue = pointwise(xp, p, _as_float(t, p.dtype, xp), **kw)
    if reduction == "none":
        return value, dvalue
    out = _ns.sum_of(xp, value)
    if reduction == "mean":
        out = out / _size(p)
    return out, dvalue


@_elementwise.defvjp
def _elementwise_vjp(xp, g, ins, out, dvalue, needs, pointwise, reduction, kw):
    if reduction != "none":
        g = g * (1.0 / _size(ins[0]) if reduction == "mean" else 1.0)
    gt = None
    if needs[1]:  # d value / d target, computed only when the target requires grad
        p = ins[0]
        gt = g * _TARGET_GRAD[pointwise](xp, p, _as_float(ins[1], p.dtype, xp), dvalue, **kw)
    return (g * dvalue if needs[0] else None), gt


def _size(a):
    n = 1
    for s in a.shape:
        n *= s
    return n


def _elementwise_loss(p, t, xp, pointwise, reduction, plain, **kw):
    _check_reduction(reduction)
    res = apply(_elementwise, xp, (p, t), {"pointwise": pointwise, "reduction": reduction,
                                           "kw": kw})
    return res.data if plain else res


def _mse(xp, p, t):
    diff = p - t
    return diff * diff, 2 * diff


def _mae(xp, p, t):
    diff = p - t
    return xp.abs(diff), xp.sign(diff)


def _huber(xp, p, t, delta):
    diff = p - t
    ad = xp.abs(diff)
    small = ad < delta
    value = xp.where(small, 0.5 * diff * diff, delta * (ad - 0.5 * delta))
    return value, xp.where(small, diff, delta * xp.sign(diff))


def _bce(xp, d, t):
    # Clip before the log as well, so p in {0, 1} gives -100 without a log(0) warning.
    logp = xp.clip(xp.log(xp.clip(d, _TINY, None)), -100.0, None)
    log1mp = xp.clip(xp.log(xp.clip(1 - d, _TINY, None)), -100.0, None)
    value = -(t * logp + (1 - t) * log1mp)
    return value, (d - t) / xp.clip(d * (1 - d), 1e-12, None)


def _bce_logits(xp, x, t):
    e = xp.exp(-xp.abs(x))
    value = _ns.maximum_zero(xp, x) - x * t + xp.log1p(e)
    sig = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return value, sig - t


def _minus_dp(xp, p, t, dvalue, **kw):  # the loss is a function of p - t
    return -dvalue


def _bce_dt(xp, d, t, dvalue):
    logp = xp.clip(xp.log(xp.clip(d, _TINY, None)), -100.0, None)
    log1mp = xp.clip(xp.log(xp.clip(1 - d, _TINY, None)), -100.0, None)
    return log1mp - logp


def _bce_logits_dt(xp, x, t, dvalue):
    return -x


_TARGET_GRAD = {_mse: _minus_dp, _mae: _minus_dp, _huber: _minus_dp, _bce: _bce_dt,
                _bce_logits: _bce_logits_dt}


def mse(pred, target, reduction="mean"):
    r"""Mean squared error :math:`\ell_i = (p_i - t_i)^2`.

    Parameters
    ----------
    pred, target : Tensor or array, same shape
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor or array: a scalar, or ``pred``'s shape with ``reduction="none"``.
    The gradient is :math:`2(p - t)`, divided by the number of elements for ``"mean"``.
    """
    p, t, xp, plain = _prepare(pred, target, "mse")
    _check_same_shape(p, t, "mse")
    return _elementwise_loss(p, t, xp, _mse, reduction, plain)


def mae(pred, target, reduction="mean"):
    r"""Mean absolute error :math:`\ell_i = |p_i - t_i|` (PyTorch's ``l1_loss``); the gradient
    is :math:`\operatorname{sign}(p - t)` (0 where equal).

    Parameters
    ----------
    pred, target : Tensor or array, same shape
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor or array: a scalar, or ``pred``'s shape with ``reduction="none"``.
    """
    p, t, xp, plain = _prepare(pred, target, "mae")
    _check_same_shape(p, t, "mae")
    return _elementwise_loss(p, t, xp, _mae, reduction, plain)


def _huber_delta(delta):
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise TypeError(f"xpdl.losses.huber: delta must be a number, got {delta!r}")
    if not 0 < delta < math.inf:  # (NaN too: it made every loss NaN)
        raise ValueError(f"xpdl.losses.huber: delta must be positive and finite, got {delta}")
    return float(delta)  # a NumPy scalar is no operand for array_api_strict's arrays


def huber(pred, target, delta=1.0, reduction="mean"):
    r"""Huber loss: :math:`\tfrac12 d^2` where :math:`|d| <` ``delta``, else
    :math:`\delta(|d| - \tfrac12\delta)`, with :math:`d = p - t`. The gradient is :math:`d`
    clipped to :math:`[-\delta, \delta]`.

    Parameters
    ----------
    pred, target : Tensor or array, same shape
    delta : float, default 1.0
        Positive and finite: where the loss turns from quadratic to linear.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor or array: a scalar, or ``pred``'s shape with ``reduction="none"``.
    """
    delta = _huber_delta(delta)
    p, t, xp, plain = _prepare(pred, target, "huber")
    _check_same_shape(p, t, "huber")
    return _elementwise_loss(p, t, xp, _huber, reduction, plain, delta=delta)


def binary_cross_entropy(prob, target, reduction="mean"):
    r"""Binary cross-entropy of probabilities, :math:`-[t\log p + (1-t)\log(1-p)]`.

    As in PyTorch each log is clamped at :math:`-100` so that :math:`p\in\{0,1\}` gives a
    finite loss, and the gradient is :math:`(p - t)/\max(p(1-p), 10^{-12})`. Prefer
    :func:`binary_cross_entropy_with_logits` on raw scores: it is exact for any finite
    logit.

    Parameters
    ----------
    prob : Tensor or array of any shape
        Probabilities in [0, 1] (a ValueError otherwise).
    target : Tensor or array of ``prob``'s shape
        Targets in [0, 1].
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor or array: a scalar, or ``prob``'s shape with ``reduction="none"``.
    """
    p, t, xp, plain = _prepare(prob, target, "binary_cross_entropy")
    _check_same_shape(p, t, "binary_cross_entropy")
    # (one look at the values per eager call, as torch's; a replayed step on host memory
    # repeats it): outside [0, 1] the loss is no cross-entropy (1.5 gave -0.41)
    _elementwise_check(xp, (p.data, t.data), _bce)
    return _elementwise_loss(p, t, xp, _bce, reduction, plain)


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    r"""Binary cross-entropy on logits :math:`x`:
    :math:`\max(x,0) - xt + \log(1+e^{-|x|})`, exact and finite for any finite :math:`x`
    (an infinite logit gives NaN, as in PyTorch).

    The gradient is :math:`\sigma(x) - t`.

    Parameters
    ----------
    logits : Tensor or array of any shape
    target : Tensor or array of ``logits``' shape
        Targets in [0, 1].
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor or array: a scalar, or ``logits``' shape with ``reduction="none"``.
    """
    p, t, xp, plain = _prepare(logits, target, "binary_cross_entropy_with_logits")
    _check_same_shape(p, t, "binary_cross_entropy_with_logits")
    return _elementwise_loss(p, t, xp, _bce_logits, reduction, plain)


def cross_entropy(logits, target, reduction="mean"):
    r"""Softmax cross-entropy of ``logits`` against class indices or class probabilities.

    Parameters
    ----------
    logits : Tensor or array of shape (n_samples, n_classes)
    target : array
        Integer class indices of shape (n_samples,), or probabilities of shape
        (n_samples, n_classes).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` averages over samples.

    Returns
    -------
    Tensor or array: a scalar, or shape (n_samples,) with ``reduction="none"``.

    Notes
    -----
    With :math:`\log s = \operatorname{log\_softmax}(x)` (shifted by the row maximum),
    :math:`\ell_i = -\sum_k t_{ik}\log s_{ik}`; one fused node whose gradient is
    :math:`s_i\sum_k t_{ik} - t_i`, i.e. :math:`s_i - t_i` for one-hot or probability
    targets. A logit of :math:`-\infty` masks its class (as in PyTorch): a term with
    :math:`t_{ik} = 0` adds nothing (:math:`0 \cdot \infty = 0`), and the loss is
    infinite only when the target itself is masked.
    """
    _check_reduction(reduction)
    p, tt, xp, plain = _prepare(logits, target, "cross_entropy")
    x, t = p.data, tt.data
    if x.ndim != 2:
        raise ValueError(f"xpdl.losses.cross_entropy: logits must be 2-D (n_samples, "
                         f"n_classes), got shape {tuple(x.shape)}")
    n, c = x.shape
    indices = xp.isdtype(t.dtype, "integral")
    if indices:
        if tuple(t.shape) != (n,):
            raise ValueError(f"xpdl.losses.cross_entropy: integer targets must have shape "
                             f"({n},), got {tuple(t.shape)}")
        # (one look at the values per eager call, as torch's; a replayed step on host
        # memory repeats it: Primitive.check)
        _ce_check(xp, (x, t), indices=True)
    elif xp.isdtype(t.dtype, "real floating"):
        if tuple(t.shape) != (n, c):
            raise ValueError(f"xpdl.losses.cross_entropy: probability targets must have the "
                             f"logits' shape {(n, c)}, got {tuple(t.shape)}")
    else:
        raise TypeError(f"xpdl.losses.cross_entropy: target must be integer class indices or "
                        f"float probabilities, got dtype {t.dtype}")
    res = apply(_cross_entropy, xp, (p, tt), {"reduction": reduction, "indices": indices})
    return res.data if plain else res


def _ce_check(xp, ins, indices, **_):
    x, t = ins
    c = x.shape[-1]
    if not (indices and t.shape[0] and _ns.has_values(t)):
        return
    lo, hi = int(_ns.min_of(xp, t)), int(_ns.max_of(xp, t))  # (3 us at 64 labels: it runs
    if lo < 0 or hi >= c:  # every replayed step; any() of two comparisons took 6.5 us)
        raise ValueError(f"xpdl.losses.cross_entropy: class indices must be in [0, {c}) "
                         f"for {c} logits; got values from {lo} to {hi}")


@primitive("cross_entropy", saves=True, check=_ce_check)
def _cross_entropy(xp, x, t, reduction, indices):
    # ``indices``: whether ``t`` holds class indices (else probabilities), decided by the
    # caller from its dtype, once (a replay then does not ask again every step)
    n, c = x.shape
    if indices:
        hot = t[:, None] == _ns.arange(xp, c, x)
        tt = _ns.astype(xp, hot, x.dtype)
        tsum = None  # one-hot rows sum to 1
    else:
        tt = _as_float(t, x.dtype, xp)
        tsum = _ns.sum_of(xp, tt, axis=1, keepdims=True)
    m = _ns.max_of(xp, x, axis=1, keepdims=True)
    z = x - m
    e = xp.exp(z)
    se = _ns.sum_of(xp, e, axis=1, keepdims=True)
    # -sum_j t_j (z_j - log se) = log(se) sum_j t_j - sum_j t_j z_j: two sums of
    # non-negative terms (z <= 0, log se >= 0), the batch's total without a per-row sum
    # first (a reduction along the short class axis costs as much as the rest together)
    lse = xp.log(se) if tsum is None else xp.log(se) * tsum
    # t_j z_j with 0 * -inf = 0: a class masked with a logit of -inf adds nothing unless
    # it is the target (then the loss is inf), as in torch (tt * z gave NaN)
    zero = _ns.lit(xp, 0.0, z)
    tz = xp.where(hot, z, zero) if indices else tt * xp.where(tt == 0, zero, z)
    if reduction == "none":
        return xp.reshape(lse, (n,)) - _ns.sum_of(xp, tz, axis=1), (e, se, tt, tsum)
    per = _ns.sum_of(xp, lse) - _ns.sum_of(xp, tz)
    if reduction == "mean":
        per = per / n
    return per, (e, se, tt, tsum)


@_cross_entropy.defvjp
def _cross_entropy_vjp(xp, g, ins, out, saved, needs, reduction, indices):
    e, se, tt, tsum = saved
    soft = e / se
    d = soft - tt if tsum is None else soft * tsum - tt
    if reduction == "none":
        g = xp.expand_dims(g, axis=1)
    elif reduction == "mean":
        g = g * (1.0 / ins[0].shape[0])
    gt = None
    if needs[1] and not indices:  # probabilities that require grad: -log_softmax(x)
        x = ins[0]
        gt = (xp.log(se) - (x - xp.max(x, axis=1, keepdims=True))) * g
    return d * g, gt
