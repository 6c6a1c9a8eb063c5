"""Differentiable functions on Tensors or plain arrays (import as ``F``).

Each function accepts :class:`~xpdl.Tensor` objects or plain arrays of any supported
namespace. If any input is a Tensor the result is a Tensor (recorded for backpropagation
when an input requires a gradient); if all inputs are plain arrays the result is a plain
array of the same namespace and device.

The softmax family, ``softplus``, ``sigmoid`` and the cross-entropies are written so that
values and gradients stay finite for float32 logits of magnitude 1e4: they subtract the
maximum before exponentiating or only exponentiate non-positive numbers.
"""

from __future__ import annotations

import functools
import math
import numbers

from . import _namespace as _ns
from .autodiff import ops as _ops
from .autodiff.primitive import primitive
from .autodiff.tensor import Tensor, apply, draw
from .random import as_generator

__all__ = [
    "relu", "leaky_relu", "sigmoid", "tanh", "softplus", "softmax", "log_softmax",
    "logsumexp", "linear", "dropout", "exp", "log", "sqrt", "abs", "where", "maximum",
    "minimum", "clip", "matmul", "sum", "mean", "reshape", "concat", "stack",
]


def _one(x):
    """(Tensor, plain) where plain says the caller passed a plain array."""
    if x.__class__ is Tensor:
        return x, False
    if isinstance(x, Tensor):
        return x, False
    return _ops.lift(x), True


def _out(t, plain):
    return t.data if plain else t


def _any_tensor(*xs):
    return any(isinstance(x, Tensor) for x in xs)


# -- activations -----------------------------------------------------------------------
def _act(prim, x, attrs=None):
    t, plain = _one(x)
    return _out(apply(prim, t._xp, (t,), attrs), plain)


@primitive("relu", forward_into=True, vjp_into=True, vjp_reads=lambda needs: ("g", "out"))
def _relu(xp, d, out=None):
    return _ns.maximum_zero(xp, d, out)


@_relu.defvjp
def _relu_vjp(xp, g, ins, out, saved, needs, outs=(None,)):
    # g * mask, not where(mask, g, 0): NumPy's where is ~15x slower than a multiply here.
    return (_ns.mask_multiply(xp, g, out > 0, outs[0]),)


def relu(x):
    """Rectified linear unit, ``max(x, 0)``; the gradient at 0 is 0.

    Parameters
    ----------
    x : Tensor or array of any shape

    Returns
    -------
    Tensor or array of the shape of ``x``
    """
    return _act(_relu, x)


@primitive("leaky_relu")
def _leaky(xp, d, negative_slope):
    return xp.where(d > 0, d, d * negative_slope)


@_leaky.defvjp
def _leaky_vjp(xp, g, ins, out, saved, needs, negative_slope):
    return (xp.where(ins[0] > 0, g, g * negative_slope),)


def leaky_relu(x, negative_slope=0.01):
    """``x`` where positive, ``negative_slope * x`` elsewhere; the gradient at 0 is
    ``negative_slope`` (PyTorch's).

    Parameters
    ----------
    x : Tensor or array of any shape
    negative_slope : float, default 0.01

    Returns
    -------
    Tensor or array of the shape of ``x``
    """
    return _act(_leaky, x, {"negative_slope": _slope(negative_slope)})


def _slope(v):
    """A leaky ReLU's slope as a float: a finite real number, else an error naming it."""
    if isinstance(v, (bool, str, bytes)) or not isinstance(v, numbers.Real):
        raise TypeError(f"xpdl: negative_slope must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"xpdl: negative_slope must be finite, got {v!r}")
    return float(v)


def _drop_p(p):
    """A dropout probability as a float: a real number in [0, 1], else an error naming it."""
    if isinstance(p, (bool, str, bytes)) or not isinstance(p, numbers.Real):
        raise TypeError(f"xpdl: dropout probability must be a number, got {p!r}")
    if not 0.0 <= p <= 1.0:  # (NaN fails)
        raise ValueError(f"xpdl: dropout probability must be in [0, 1], got {p}")
    return float(p)


def _sigmoid_data(xp, d):
    # Only exp of a non-positive number is taken: no overflow for |x| up to float max.
    e = xp.exp(-xp.abs(d))
    return xp.where(d >= 0, 1 / (1 + e), e / (1 + e))


@primitive("sigmoid")
def _sigmoid(xp, d):
    return _sigmoid_data(xp, d)


@_sigmoid.defvjp
def _sigmoid_vjp(xp, g, ins, out, saved, needs):
    return (g * (out * (1 - out)),)


def sigmoid(x):
    r"""Logistic function :math:`\sigma(x) = 1/(1+e^{-x})`, computed without overflow.

    The gradient is :math:`\sigma(x)(1-\sigma(x))`.

    Parameters
    ----------
    x : Tensor or array of any shape

    Returns
    -------
    Tensor or array of the shape of ``x``
        In (0, 1); exactly 0 or 1 only where ``x`` is beyond the dtype's range.
    """
    return _act(_sigmoid, x)


def tanh(x):
    """Hyperbolic tangent; its gradient is ``1 - tanh(x)**2``, computed from the output.

    Parameters
    ----------
    x : Tensor or array of any shape

    Returns
    -------
    Tensor or array of the shape of ``x``
    """
    t, plain = _one(x)
    return _out(_ops.tanh(t), plain)


@primitive("softplus")
def _softplus(xp, d, beta, threshold):
    bx = d * beta
    # exp is only taken of min(bx, threshold): finite for any input. (clip, not minimum
    # with a scalar: on torch that makes a tensor of it, a host-to-device copy that a CUDA
    # graph's capture refuses)
    return xp.where(bx > threshold, d, xp.log1p(xp.exp(xp.clip(bx, None, threshold))) / beta)


@_softplus.defvjp
def _softplus_vjp(xp, g, ins, out, saved, needs, beta, threshold):
    bx = ins[0] * beta
    return (xp.where(bx > threshold, g, g * _sigmoid_data(xp, bx)),)


def softplus(x, beta=1.0, threshold=20.0):
    r"""Smooth ReLU :math:`\frac{1}{\beta}\log(1+e^{\beta x})`, linear where
    :math:`\beta x >` ``threshold`` (PyTorch's definition).

    The gradient is :math:`\sigma(\beta x)` (1 where linear).

    Parameters
    ----------
    x : Tensor or array of any shape
    beta : float, default 1.0
        Positive and finite.
    threshold : float, default 20.0
        Above it (in units of :math:`\beta x`) the function is :math:`x`.

    Returns
    -------
    Tensor or array of the shape of ``x``
    """
    return _act(_softplus, x, _softplus_args(beta, threshold))


def _softplus_args(beta, threshold):
    for name, v in (("beta", beta), ("threshold", threshold)):
        if isinstance(v, (bool, str, bytes)) or not isinstance(v, numbers.Real):
            raise TypeError(f"xpdl: softplus {name} must be a number, got {v!r}")
        if not (math.isfinite(v) and (v > 0 or name == "threshold")):
            raise ValueError(f"xpdl: softplus {name} must be "
                             f"{'positive and ' if name == 'beta' else ''}finite, got {v!r}")
    return {"beta": beta, "threshold": threshold}


def _stable_max(xp, d, axis):
    m = _ns.max_of(xp, d, axis=axis, keepdims=True)
    # A slice of all -inf would give nan from (-inf) - (-inf); shift by 0 there instead.
    return xp.where(xp.isfinite(m), m, _ns.lit(xp, 0.0, m))


@primitive("softmax")
def _softmax(xp, d, axis):
    e = xp.exp(d - _stable_max(xp, d, axis))
    return e / _ns.sum_of(xp, e, axis=axis, keepdims=True)


@_softmax.defvjp
def _softmax_vjp(xp, g, ins, out, saved, needs, axis):
    return (out * (g - _ns.sum_of(xp, g * out, axis=axis, keepdims=True)),)


def _axis_or_dim(axis, dim, where):
    """``axis``, or PyTorch's ``dim`` in its place (``TypeError`` when both are given and
    differ)."""
    if dim is None:
        return axis
    if axis != -1 and axis != dim:
        raise TypeError(f"xpdl: {where} takes axis= or PyTorch's dim=, not both "
                        f"(got axis={axis!r}, dim={dim!r})")
    return dim


def softmax(x, axis=-1, *, dim=None):
    r"""Softmax along ``axis``: :math:`e^{x_i - m}/\sum_j e^{x_j - m}` with :math:`m=\max x`.

    The VJP is :math:`s \odot (g - \langle g, s\rangle)`.

    Parameters
    ----------
    x : Tensor or array of any shape
    axis : int, default -1
    dim : int, optional
        PyTorch's name for ``axis``.

    Returns
    -------
    Tensor or array of the shape of ``x``
        Non-negative, summing to 1 along ``axis``.
    """
    axis = _axis_or_dim(axis, dim, "softmax")
    t, plain = _one(x)
    return _out(apply(_softmax, t._xp, (t,), {"axis": _ops._axis_attr(axis, t.data.ndim)}),
                plain)


@primitive("log_softmax")
def _log_softmax(xp, d, axis):
    z = d - _stable_max(xp, d, axis)
    return z - xp.log(_ns.sum_of(xp, xp.exp(z), axis=axis, keepdims=True))


@_log_softmax.defvjp
def _log_softmax_vjp(xp, g, ins, out, saved, needs, axis):
    return (g - xp.exp(out) * _ns.sum_of(xp, g, axis=axis, keepdims=True),)


def log_softmax(x, axis=-1, *, dim=None):
    r"""Log of the softmax along ``axis``, :math:`x - \operatorname{logsumexp}(x)`, computed
    by shifting with the maximum (never the log of a softmax, which underflows).

    The VJP is :math:`g - \operatorname{softmax}(x) \sum g`.

    Parameters
    ----------
    x : Tensor or array of any shape
    axis : int, default -1
    dim : int, optional
        PyTorch's name for ``axis``.

    Returns
    -------
    Tensor or array of the shape of ``x``
    """
    axis = _axis_or_dim(axis, dim, "log_softmax")
    t, plain = _one(x)
    return _out(apply(_log_softmax, t._xp, (t,),
                      {"axis": _ops._axis_attr(axis, t.data.ndim)}), plain)


@primitive("logsumexp", saves=True)
def _logsumexp(xp, d, axes, keepdims):
    m = _stable_max(xp, d, axes)
    outk = xp.log(_ns.sum_of(xp, xp.exp(d - m), axis=axes, keepdims=True)) + m
    out = outk if keepdims else xp.reshape(
        outk, tuple(s for i, s in enumerate(d.shape) if i not in axes))
    return out, outk


@_logsumexp.defvjp
def _logsumexp_vjp(xp, g, ins, out, outk, needs, axes, keepdims):
    gk = g if keepdims else xp.reshape(g, outk.shape)
    return (gk * xp.exp(ins[0] - outk),)


def logsumexp(x, axis=None, keepdims=False):
    r""":math:`\log\sum e^{x}` over ``axis`` (all axes when ``None``), shifted by the maximum.

    The gradient is the softmax of ``x`` over the same axes.

    Parameters
    ----------
    x : Tensor or array of any shape
    axis : int, tuple of int or None, default None
    keepdims : bool, default False

    Returns
    -------
    Tensor or array
        ``x``'s shape without the reduced axes (kept with size 1 with ``keepdims``); 0-d
        for ``axis=None``.
    """
    t, plain = _one(x)
    return _out(apply(_logsumexp, t._xp, (t,),
                      {"axes": _ops._axes(axis, t.data.ndim), "keepdims": keepdims}), plain)


# -- layers ----------------------------------------------------------------------------
def _linear_reads(needs):
    return ("g",) + (("in1",) if needs[0] else ()) + (("in0",) if needs[1] else ())


@primitive("linear", forward_into=True, vjp_into=True, vjp_reads=_linear_reads)
def _linear(xp, X, W, b=None, out=None):
    # ``out``: a buffer a replayed program gives (see Primitive's forward_into)
    out = _ns.matmul_into(xp, X, W.T, out)
    if b is not None:
        if _ns.supports_inplace(xp):
            out += b  # out is our own buffer
        else:
            out = out + b
    return out


@_linear.defvjp
def _linear_vjp(xp, g, ins, out, saved, needs, outs=(None, None, None)):
    # ``outs``: buffers a replayed program gives for the gradients (NumPy/CuPy, see
    # Primitive's vjp_into); the same products and sum, written in place.
    X, W = ins[0], ins[1]
    gx = gW = gb = None
    if needs[0]:
        gx = _ns.matmul_into(xp, g, W, outs[0])
    if needs[1] or (len(ins) > 2 and needs[2]):
        g2 = g if g.ndim == 2 else xp.reshape(g, (-1, g.shape[-1]))
        if needs[1]:
            X2 = X if X.ndim == 2 else xp.reshape(X, (-1, X.shape[-1]))
            gW = _ns.matmul_into(xp, g2.T, X2, outs[1])
        if len(ins) > 2 and needs[2]:
            gb = _ns.sum0_into(xp, g2, outs[2])
    return (gx, gW) if len(ins) == 2 else (gx, gW, gb)


def linear(x, W, b=None):
    r"""Affine map :math:`x W^\top + b` (PyTorch's layout).

    Parameters
    ----------
    x : Tensor or array of shape (..., in_features)
    W : Tensor or array of shape (out_features, in_features)
    b : Tensor or array of shape (out_features,), optional

    Returns
    -------
    Tensor or array of shape (..., out_features)

    Notes
    -----
    One fused node: with :math:`G` the output gradient (leading axes flattened),
    :math:`\partial x = G W`, :math:`\partial W = G^\top x`, :math:`\partial b = \sum_i G_i`.
    """
    plain = not _any_tensor(x, W, b)
    xt = _ops.lift(x)
    xp = xt._xp
    Wt = _ops.lift(W, xp)
    bt = None if b is None else _ops.lift(b, xp)
    X, Wd = xt.data, Wt.data
    if Wd.ndim != 2:
        raise ValueError(f"xpdl: linear weight must be 2-D (out, in), got shape {Wd.shape}")
    if X.ndim == 0:  # (it failed with "tuple index out of range")
        raise ValueError("xpdl: linear input must have at least 1 dimension (..., "
                         "in_features), got a 0-d array")
    if X.shape[-1] != Wd.shape[1]:
        raise ValueError(f"xpdl: linear input has {X.shape[-1]} features, weight expects "
                         f"{Wd.shape[1]}")
    if bt is not None and tuple(bt.data.shape) != (Wd.shape[0],):
        raise ValueError(f"xpdl: linear bias has shape {tuple(bt.data.shape)}, the weight "
                         f"{Wd.shape[0]} outputs: it must be ({Wd.shape[0]},)")
    parents = (xt, Wt) if bt is None else (xt, Wt, bt)
    return _out(apply(_linear, xp, parents), plain)


def _dropout_mask(xp, shape, dtype, device, p, rng):
    """Inverted dropout's mask: 0 with probability ``p``, else ``1/(1-p)``, drawn on the
    host from ``rng`` as the caller gave it (an int seed makes a new generator on every
    call, a replay's included: the same mask each step, as on the tape)."""
    if p == 1.0:
        return xp.zeros(shape, dtype=dtype, device=device)
    host = as_generator(rng).bernoulli(1.0 - p, shape) * (1.0 / (1.0 - p))
    return _ns.from_host(host, xp, device=device, dtype=dtype)


@primitive("dropout", vjp_reads=lambda needs: ("g", "in1"))
def _dropout(xp, d, mask):
    return d * mask


@_dropout.defvjp
def _dropout_vjp(xp, g, ins, out, saved, needs):
    return (g * ins[1], None)


def dropout(x, p, *, rng, training=True):
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by
    ``1/(1-p)``, so the expectation is unchanged; the identity when ``training`` is False.

    Parameters
    ----------
    x : Tensor or array of any shape
    p : float in [0, 1]
    rng : int or xpdl.random.Generator
        Where the mask comes from (drawn on the host, moved to ``x``'s device; a replayed
        step draws again, in the same order). A Generator's draws continue from call to
        call; an int seeds a new generator on every call, so every call with it draws the
        same mask (pass a Generator, or use :class:`xpdl.nn.Dropout`, for fresh masks).
    training : bool, default True

    Returns
    -------
    Tensor or array of the shape of ``x``
        ``x`` itself when not ``training`` or ``p == 0``.
    """
    p = _drop_p(p)
    as_generator(rng)  # a TypeError now for anything else than a seed or a Generator
    t, plain = _one(x)
    if not training or p == 0.0:
        return x
    xp, d = t._xp, t.data
    mask = draw(functools.partial(_dropout_mask, xp, tuple(d.shape), d.dtype,
                                  _ns.device_of(d), p, rng))
    return _out(apply(_dropout, xp, (t, mask)), plain)


# -- elementwise and structural wrappers -----------------------------------------------
_UNARY_GRADS = {"exp": "``exp(x)``", "log": "``1 / x``", "sqrt": "``1 / (2 sqrt(x))``",
                "abs": "``sign(x)`` (0 at 0, as in PyTorch)"}


def _unary(op):
    def f(x):
        t, plain = _one(x)
        return _out(op(t), plain)

    f.__name__ = op.__name__
    f.__doc__ = (f"Elementwise ``{op.__name__}`` of a Tensor or array; the gradient is "
                 f"{_UNARY_GRADS[op.__name__]}.\n\n    Parameters\n    ----------\n"
                 f"    x : Tensor or array of any shape\n\n    Returns\n    -------\n"
                 f"    Tensor or array of the shape of ``x``\n    ")
    return f


exp = _unary(_ops.exp)
log = _unary(_ops.log)
sqrt = _unary(_ops.sqrt)
abs = _unary(_ops.abs)  # noqa: A001


def _binary_public(op, a, b):
    plain = not _any_tensor(a, b)
    if plain:
        a = _ops.lift(a)
    return _out(op(a, b), plain)


def maximum(a, b):
    """Elementwise maximum; ties split the gradient in half (as in PyTorch).

    Parameters
    ----------
    a, b : Tensor, array or Python scalar
        Broadcast against each other (at least one a Tensor or an array).

    Returns
    -------
    Tensor or array of the broadcast shape
    """
    return _binary_public(_ops.maximum, a, b)


def minimum(a, b):
    """Elementwise minimum; ties split the gradient in half (as in PyTorch).

    Parameters
    ----------
    a, b : Tensor, array or Python scalar
        Broadcast against each other (at least one a Tensor or an array).

    Returns
    -------
    Tensor or array of the broadcast shape
    """
    return _binary_public(_ops.minimum, a, b)


def matmul(a, b):
    """Matrix product with the standard's ``matmul`` semantics: 1-D operands are
    promoted to a row (``a``) or a column (``b``) and the added axis dropped; leading
    axes broadcast as a batch. The gradients are :math:`G b^\top` and :math:`a^\top G`,
    summed over broadcast batch axes.

    Parameters
    ----------
    a : Tensor or array of shape (..., n, k) or (k,)
    b : Tensor or array of shape (..., k, m) or (k,)

    Returns
    -------
    Tensor or array of shape (..., n, m) (without ``n`` or ``m`` for 1-D operands)
    """
    plain = not _any_tensor(a, b)
    at = _ops.lift(a)
    return _out(_ops.matmul(at, _ops.lift(b, at._xp)), plain)


def where(condition, a, b):
    """``a`` where ``condition`` is True, else ``b``; each gradient goes to the branch
    that was selected (zero elsewhere).

    Parameters
    ----------
    condition : bool array or Tensor
        Broadcast against ``a`` and ``b``; no gradient.
    a, b : Tensor, array or Python scalar

    Returns
    -------
    Tensor or array of the broadcast shape
    """
    plain = not _any_tensor(a, b)
    if plain:
        if _ns.is_array(a):
            a = _ops.lift(a)
        else:
            b = _ops.lift(b)
    return _out(_ops.where(condition, a, b), plain)


def clip(x, min=None, max=None):  # noqa: A002
    """Clamp ``x`` to ``[min, max]``; the gradient is 1 inside the interval (its ends
    included, as ``torch.clamp``) and 0 where a value was clipped.

    Parameters
    ----------
    x : Tensor or array of any shape
    min, max : float, optional
        Either may be omitted (no bound on that side).

    Returns
    -------
    Tensor or array of the shape of ``x``
    """
    t, plain = _one(x)
    return _out(_ops.clip(t, min, max), plain)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    """Sum over ``axis`` (all axes when ``None``); the gradient broadcasts the output
    gradient back over the summed axes.

    Parameters
    ----------
    x : Tensor or array of any shape
    axis : int or tuple of int, optional
    keepdims : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    Tensor or array
        ``x``'s shape without the reduced axes (0-d for all of them), or with them as
        length 1 when ``keepdims``.
    """
    t, plain = _one(x)
    return _out(_ops.sum(t, axis=axis, keepdims=keepdims), plain)


def mean(x, axis=None, keepdims=False):
    """Mean over ``axis`` (all axes when ``None``); the gradient is the output gradient
    divided by the number of elements averaged, broadcast back.

    Parameters
    ----------
    x : Tensor or array of any shape
    axis : int or tuple of int, optional
    keepdims : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    Tensor or array
        ``x``'s shape without the reduced axes (0-d for all of them), or with them as
        length 1 when ``keepdims``.
    """
    t, plain = _one(x)
    return _out(_ops.mean(t, axis=axis, keepdims=keepdims), plain)


def reshape(x, shape):
    """``x`` with a new shape of the same size (C order); the gradient is reshaped back.

    Parameters
    ----------
    x : Tensor or array
    shape : tuple of int
        One entry may be -1 (inferred).

    Returns
    -------
    Tensor or array of shape ``shape``
    """
    t, plain = _one(x)
    return _out(_ops.reshape(t, shape), plain)


def concat(arrays, axis=0):
    """Join a sequence of arrays along an existing ``axis``; each input's gradient is its
    slice of the output gradient.

    Parameters
    ----------
    arrays : sequence of Tensor or array
        Equal shapes except along ``axis``.
    axis : int, default 0

    Returns
    -------
    Tensor or array
        The inputs' shape with the lengths along ``axis`` summed.
    """
    arrays = list(arrays)
    plain = not _any_tensor(*arrays)
    return _out(_ops.concat(arrays, axis=axis), plain)


def stack(arrays, axis=0):
    """Join a sequence of arrays of one shape along a new ``axis``; each input's gradient
    is its index of the output gradient along that axis.

    Parameters
    ----------
    arrays : sequence of k Tensors or arrays of one shape
    axis : int, default 0
        Where the new axis of length k goes.

    Returns
    -------
    Tensor or array with one more axis than the inputs
    """
    arrays = list(arrays)
    plain = not _any_tensor(*arrays)
    return _out(_ops.stack(arrays, axis=axis), plain)
