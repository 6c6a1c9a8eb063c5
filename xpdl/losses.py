"""Loss functions with PyTorch's definitions, on any namespace.

Every loss takes Tensors or plain arrays and ``reduction="mean" | "sum" | "none"``; values
and gradients equal those of the ``torch.nn.functional`` function of the same name. The
logits forms are fused (log-softmax / log-sigmoid inside one node), so they stay finite for
logits of magnitude 1e4 in float32. Targets never receive gradients.

Shapes of ``pred`` and ``target`` must match exactly (where PyTorch only warns): silent
broadcasting of a ``(n, 1)`` prediction against an ``(n,)`` target gives an ``(n, n)`` loss,
the classic linear-regression bug.
"""

from __future__ import annotations

from . import _namespace as _ns
from .autodiff import ops as _ops
from .autodiff.tensor import Tensor, record

__all__ = ["mse", "mae", "huber", "binary_cross_entropy", "binary_cross_entropy_with_logits",
           "cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")
_TINY = 1e-45  # log(_TINY) < -100 in float32 and float64, so the clamp decides


def _prepare(pred, target, name):
    plain = not isinstance(pred, Tensor)
    p = _ops.lift(pred)
    xp = p._xp
    t = target.data if isinstance(target, Tensor) else target
    if not _ns.is_array(t):
        raise TypeError(f"xpdl.losses.{name}: target must be an array, got {type(t).__name__}")
    if _ns.array_namespace(t) is not xp:
        raise TypeError(f"xpdl.losses.{name}: pred and target come from different namespaces")
    return p, t, xp, plain


def _check_same_shape(p, t, name):
    if tuple(p.data.shape) != tuple(t.shape):
        raise ValueError(f"xpdl.losses.{name}: pred has shape {tuple(p.data.shape)} but target "
                         f"has shape {tuple(t.shape)}; they must match (reshape one)")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"xpdl: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _as_float(t, dtype, xp):
    return t if t.dtype == dtype else xp.astype(t, dtype)


def _elementwise_loss(p, xp, value, dvalue, reduction, plain):
    """Wrap an elementwise loss ``value`` with derivative ``dvalue`` and reduce it."""
    _check_reduction(reduction)
    d = p.data
    if reduction == "none":
        out = value
        res = record(out, xp, (p,), lambda g: (g * dvalue,))
    else:
        n = 1
        for s in d.shape:
            n *= s
        out = xp.sum(value)
        scale = 1.0
        if reduction == "mean":
            out = out / n
            scale = 1.0 / n
        res = record(out, xp, (p,), lambda g: (dvalue * (g * scale),))
    return res.data if plain else res


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
    diff = p.data - _as_float(t, p.data.dtype, xp)
    return _elementwise_loss(p, xp, diff * diff, 2 * diff, reduction, plain)


def mae(pred, target, reduction="mean"):
    r"""Mean absolute error :math:`\ell_i = |p_i - t_i|` (PyTorch's ``l1_loss``); the gradient
    is :math:`\operatorname{sign}(p - t)` (0 where equal)."""
    p, t, xp, plain = _prepare(pred, target, "mae")
    _check_same_shape(p, t, "mae")
    diff = p.data - _as_float(t, p.data.dtype, xp)
    return _elementwise_loss(p, xp, xp.abs(diff), xp.sign(diff), reduction, plain)


def huber(pred, target, delta=1.0, reduction="mean"):
    r"""Huber loss: :math:`\tfrac12 d^2` where :math:`|d| <` ``delta``, else
    :math:`\delta(|d| - \tfrac12\delta)`, with :math:`d = p - t`. The gradient is :math:`d`
    clipped to :math:`[-\delta, \delta]`."""
    if delta <= 0:
        raise ValueError(f"xpdl.losses.huber: delta must be positive, got {delta}")
    p, t, xp, plain = _prepare(pred, target, "huber")
    _check_same_shape(p, t, "huber")
    diff = p.data - _as_float(t, p.data.dtype, xp)
    ad = xp.abs(diff)
    small = ad < delta
    value = xp.where(small, 0.5 * diff * diff, delta * (ad - 0.5 * delta))
    dvalue = xp.where(small, diff, delta * xp.sign(diff))
    return _elementwise_loss(p, xp, value, dvalue, reduction, plain)


def binary_cross_entropy(prob, target, reduction="mean"):
    r"""Binary cross-entropy of probabilities, :math:`-[t\log p + (1-t)\log(1-p)]`.

    As in PyTorch each log is clamped at :math:`-100` so that :math:`p\in\{0,1\}` gives a
    finite loss, and the gradient is :math:`(p - t)/\max(p(1-p), 10^{-12})`. Prefer
    :func:`binary_cross_entropy_with_logits` on raw scores: it is exact for any logit.
    """
    p, t, xp, plain = _prepare(prob, target, "binary_cross_entropy")
    _check_same_shape(p, t, "binary_cross_entropy")
    d = p.data
    t = _as_float(t, d.dtype, xp)
    # Clip before the log as well, so p in {0, 1} gives -100 without a log(0) warning.
    logp = xp.clip(xp.log(xp.clip(d, _TINY, None)), -100.0, None)
    log1mp = xp.clip(xp.log(xp.clip(1 - d, _TINY, None)), -100.0, None)
    value = -(t * logp + (1 - t) * log1mp)
    dvalue = (d - t) / xp.clip(d * (1 - d), 1e-12, None)
    return _elementwise_loss(p, xp, value, dvalue, reduction, plain)


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    r"""Binary cross-entropy on logits :math:`x`:
    :math:`\max(x,0) - xt + \log(1+e^{-|x|})`, exact and finite for any :math:`x`.

    The gradient is :math:`\sigma(x) - t`.
    """
    p, t, xp, plain = _prepare(logits, target, "binary_cross_entropy_with_logits")
    _check_same_shape(p, t, "binary_cross_entropy_with_logits")
    x = p.data
    t = _as_float(t, x.dtype, xp)
    e = xp.exp(-xp.abs(x))
    value = xp.maximum(x, 0.0) - x * t + xp.log1p(e)
    sig = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return _elementwise_loss(p, xp, value, sig - t, reduction, plain)


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
    targets.
    """
    _check_reduction(reduction)
    p, t, xp, plain = _prepare(logits, target, "cross_entropy")
    x = p.data
    if x.ndim != 2:
        raise ValueError(f"xpdl.losses.cross_entropy: logits must be 2-D (n_samples, "
                         f"n_classes), got shape {tuple(x.shape)}")
    n, c = x.shape
    dev = _ns.device_of(x)
    if xp.isdtype(t.dtype, "integral"):
        if tuple(t.shape) != (n,):
            raise ValueError(f"xpdl.losses.cross_entropy: integer targets must have shape "
                             f"({n},), got {tuple(t.shape)}")
        tt = xp.astype(xp.expand_dims(t, axis=1) == xp.arange(c, device=dev), x.dtype)
        tsum = None  # one-hot rows sum to 1
    elif xp.isdtype(t.dtype, "real floating"):
        if tuple(t.shape) != (n, c):
            raise ValueError(f"xpdl.losses.cross_entropy: probability targets must have the "
                             f"logits' shape {(n, c)}, got {tuple(t.shape)}")
        tt = _as_float(t, x.dtype, xp)
        tsum = xp.sum(tt, axis=1, keepdims=True)
    else:
        raise TypeError(f"xpdl.losses.cross_entropy: target must be integer class indices or "
                        f"float probabilities, got dtype {t.dtype}")
    m = xp.max(x, axis=1, keepdims=True)
    z = x - m
    e = xp.exp(z)
    se = xp.sum(e, axis=1, keepdims=True)
    logp = z - xp.log(se)
    per = -xp.sum(tt * logp, axis=1)

    def dlogits():
        soft = e / se
        return soft - tt if tsum is None else soft * tsum - tt

    if reduction == "none":
        res = record(per, xp, (p,), lambda g: (dlogits() * xp.expand_dims(g, axis=1),))
    else:
        out = xp.sum(per)
        scale = 1.0
        if reduction == "mean":
            out = out / n
            scale = 1.0 / n
        res = record(out, xp, (p,), lambda g: (dlogits() * (g * scale),))
    return res.data if plain else res
