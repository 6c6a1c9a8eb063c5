"""Differentiable primitives: each forward next to its vector-Jacobian product.

Every function takes Tensors (and Python scalars where noted) and returns a Tensor. The
backward closures return one gradient per parent; broadcasting is undone centrally by
:func:`xpdl.autodiff.tensor.unbroadcast`, so these VJPs may return gradients of the
broadcast shape. All arithmetic goes through the inputs' namespace ``xp``.
"""

from __future__ import annotations

import builtins
import math
import numbers
import operator

from .. import _namespace as _ns
from .tensor import Tensor, _wrap, record

_Scalar = (int, float, bool, numbers.Number)


# -- lifting operands ------------------------------------------------------------------
def lift(x, xp=None) -> Tensor:
    """``x`` as a Tensor (arrays are wrapped without history)."""
    if x.__class__ is Tensor:
        if xp is not None and x._xp is not xp:
            _mixed(xp, x._xp)
        return x
    if isinstance(x, Tensor):  # subclasses
        return x
    xq = _ns.array_namespace(x)
    if xp is not None and xq is not xp:
        _mixed(xp, xq)
    return _wrap(x, xq)


def _mixed(a, b):
    raise TypeError(f"xpdl: arrays from different namespaces were mixed in one operation "
                    f"({_ns.backend_name(a)} and {_ns.backend_name(b)}); convert one first")


def _operand(x, xp):
    """A Tensor, or a Python scalar kept as is (scalars broadcast and get no gradient)."""
    if x.__class__ is Tensor:
        if x._xp is not xp:
            _mixed(xp, x._xp)
        return x
    if isinstance(x, _Scalar):
        return x
    return lift(x, xp)


def _data(x):
    return x.data if x.__class__ is Tensor else x


def _needs(x):
    return x.__class__ is Tensor and x.requires_grad


# -- elementwise binary ----------------------------------------------------------------
def _binary_prep(a, b):
    if a.__class__ is Tensor:
        xp = a._xp
    elif b.__class__ is Tensor:
        xp = b._xp
    else:
        raise TypeError("xpdl: an operation needs at least one Tensor")
    return _operand(a, xp), _operand(b, xp), xp


def add(a, b):
    a, b, xp = _binary_prep(a, b)
    out = _data(a) + _data(b)
    return record(out, xp, (a, b), lambda g: (g, g))


def sub(a, b):
    a, b, xp = _binary_prep(a, b)
    out = _data(a) - _data(b)
    return record(out, xp, (a, b), lambda g: (g, -g if _needs(b) else None))


def mul(a, b):
    a, b, xp = _binary_prep(a, b)
    ad, bd = _data(a), _data(b)

    def backward(g):
        return (g * bd if _needs(a) else None, g * ad if _needs(b) else None)

    return record(ad * bd, xp, (a, b), backward)


def div(a, b):
    a, b, xp = _binary_prep(a, b)
    ad, bd = _data(a), _data(b)
    out = ad / bd

    def backward(g):
        ga = g / bd if _needs(a) else None
        gb = -(g * out) / bd if _needs(b) else None
        return ga, gb

    return record(out, xp, (a, b), backward)


def pow(a, b):  # noqa: A001 - mirrors operator.pow
    a, b, xp = _binary_prep(a, b)
    ad, bd = _data(a), _data(b)
    out = ad ** bd

    def backward(g):
        ga = gb = None
        if _needs(a):
            if isinstance(bd, _Scalar):
                ga = g * (bd * ad ** (bd - 1)) if bd != 0 else g * 0
            else:
                ga = g * (bd * ad ** (bd - 1))
        if _needs(b):
            # d/db a**b = a**b log a; taken as 0 where a == 0 (PyTorch's convention).
            if isinstance(ad, _Scalar):
                gb = g * out * math.log(ad) if ad > 0 else g * 0
            else:
                safe = xp.where(ad == 0, 1, ad)
                gb = xp.where(ad == 0, 0, g * out * xp.log(safe))
        return ga, gb

    return record(out, xp, (a, b), backward)


def maximum(a, b):
    return _minmax(a, b, True)


def minimum(a, b):
    return _minmax(a, b, False)


def _minmax(a, b, is_max):
    a, b, xp = _binary_prep(a, b)
    ad, bd = _data(a), _data(b)
    out = xp.maximum(ad, bd) if is_max else xp.minimum(ad, bd)

    def backward(g):
        # Ties split the gradient in half, as PyTorch does.
        wins = (ad > bd) if is_max else (ad < bd)
        tie = ad == bd
        half = g * 0.5
        ga = xp.where(wins, g, xp.where(tie, half, 0.0)) if _needs(a) else None
        gb = xp.where(wins, 0.0, xp.where(tie, half, g)) if _needs(b) else None
        return ga, gb

    return record(out, xp, (a, b), backward)


def where(cond, a, b):
    """``a`` where ``cond`` else ``b``; the gradient flows to the branch taken."""
    a, b, xp = _binary_prep(a, b)
    c = _data(cond)
    if not _ns.is_array(c):
        raise TypeError("xpdl: where() needs a boolean array condition")
    out = xp.where(c, _data(a), _data(b))

    def backward(g):
        m = xp.astype(c, g.dtype)  # multiplying by a 0/1 mask is faster than where
        return (g * m if _needs(a) else None, g * (1 - m) if _needs(b) else None)

    return record(out, xp, (a, b), backward)


# -- matrix product --------------------------------------------------------------------
def matmul(a, b):
    a, b, xp = _binary_prep(a, b)
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("xpdl: matmul needs two arrays, not a scalar")
    A, B = a.data, b.data
    out = A @ B

    def backward(g):
        ga = gb = None
        if a.requires_grad:
            if A.ndim >= 2 and B.ndim >= 2:
                ga = g @ (B.T if B.ndim == 2 else xp.matrix_transpose(B))
            elif B.ndim == 1 and A.ndim == 1:
                ga = g * B
            elif B.ndim == 1:  # (..., n, k) @ (k,) -> (..., n)
                ga = xp.expand_dims(g, axis=-1) * B
            else:  # (k,) @ (..., k, m) -> (..., m)
                ga = (B @ xp.expand_dims(g, axis=-1))[..., 0]
        if b.requires_grad:
            if A.ndim >= 2 and B.ndim >= 2:
                gb = (A.T if A.ndim == 2 else xp.matrix_transpose(A)) @ g
            elif A.ndim == 1 and B.ndim == 1:
                gb = g * A
            elif A.ndim == 1:  # (k,) @ (..., k, m)
                gb = xp.expand_dims(A, axis=-1) * xp.expand_dims(g, axis=-2)
            else:  # (..., n, k) @ (k,)
                gb = (xp.matrix_transpose(A) @ xp.expand_dims(g, axis=-1))[..., 0]
        return ga, gb

    return record(out, xp, (a, b), backward)


# -- elementwise unary -----------------------------------------------------------------
def neg(x):
    return record(-x.data, x._xp, (x,), lambda g: (-g,))


def exp(x):
    xp = x._xp
    out = xp.exp(x.data)
    return record(out, xp, (x,), lambda g: (g * out,))


def log(x):
    xp = x._xp
    d = x.data
    return record(xp.log(d), xp, (x,), lambda g: (g / d,))


def sqrt(x):
    xp = x._xp
    out = xp.sqrt(x.data)
    return record(out, xp, (x,), lambda g: (g / (2 * out),))


def abs(x):  # noqa: A001
    xp = x._xp
    d = x.data
    return record(xp.abs(d), xp, (x,), lambda g: (g * xp.sign(d),))


def tanh(x):
    xp = x._xp
    out = xp.tanh(x.data)
    return record(out, xp, (x,), lambda g: (g * (1 - out * out),))


def clip(x, min=None, max=None):  # noqa: A002
    xp = x._xp
    d = x.data
    out = xp.clip(d, min, max)

    def backward(g):
        # The gradient passes where min <= x <= max (PyTorch's clamp).
        keep = None
        if min is not None:
            keep = d >= _data(min)
        if max is not None:
            hi = d <= _data(max)
            keep = hi if keep is None else xp.logical_and(keep, hi)
        return (g if keep is None else g * xp.astype(keep, g.dtype),)

    return record(out, xp, (x,), backward)


# -- reductions ------------------------------------------------------------------------
def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    out = []
    for a in axis:
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"xpdl: axis {a} is out of range for {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _expand(g, shape, axes, keepdims, xp):
    """Broadcast a reduced gradient back over the reduced axes."""
    if not keepdims:
        g = xp.reshape(g, _kept_shape(shape, axes))
    return xp.broadcast_to(g, tuple(shape))


def sum(x, axis=None, keepdims=False):  # noqa: A001
    xp = x._xp
    d = x.data
    out = xp.sum(d, axis=axis, keepdims=keepdims)
    shape = d.shape

    def backward(g):
        return (_expand(g, shape, _axes(axis, len(shape)), keepdims, xp),)

    return record(out, xp, (x,), backward)


def mean(x, axis=None, keepdims=False):
    xp = x._xp
    d = x.data
    out = xp.mean(d, axis=axis, keepdims=keepdims)
    shape = d.shape
    axes = _axes(axis, len(shape))
    n = 1
    for i in axes:
        n *= shape[i]

    def backward(g):
        return (_expand(g / n, shape, axes, keepdims, xp),)

    return record(out, xp, (x,), backward)


def max(x, axis=None, keepdims=False):  # noqa: A001
    """Maximum; ties share the gradient equally (like ``torch.amax``)."""
    xp = x._xp
    d = x.data
    out = xp.max(d, axis=axis, keepdims=keepdims)
    shape = d.shape
    axes = _axes(axis, len(shape))

    def backward(g):
        m = out if keepdims else xp.reshape(out, _kept_shape(shape, axes))
        mask = xp.astype(d == m, g.dtype)
        count = xp.sum(mask, axis=axes, keepdims=True)
        gk = g if keepdims else xp.reshape(g, _kept_shape(shape, axes))
        return (mask * (gk / count),)

    return record(out, xp, (x,), backward)


# -- shape -----------------------------------------------------------------------------
def reshape(x, shape):
    xp = x._xp
    d = x.data
    old = d.shape
    return record(xp.reshape(d, tuple(shape)), xp, (x,), lambda g: (xp.reshape(g, old),))


def permute_dims(x, axes):
    xp = x._xp
    axes = tuple(axes)
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a] = i
    inv = tuple(inv)
    return record(xp.permute_dims(x.data, axes), xp, (x,),
                  lambda g: (xp.permute_dims(g, inv),))


def transpose(x):
    """``x.T``: reverses all axes."""
    return permute_dims(x, tuple(range(x.ndim - 1, -1, -1)))


def matrix_transpose(x):
    """``x.mT``: swaps the last two axes."""
    xp = x._xp
    if x.ndim < 2:
        raise ValueError("xpdl: mT needs at least 2 dimensions")
    return record(xp.matrix_transpose(x.data), xp, (x,),
                  lambda g: (xp.matrix_transpose(g),))


def _lift_all(tensors, what):
    """A sequence of Tensors/arrays as Tensors of one namespace, and that namespace."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"xpdl: {what} needs at least one array")
    xp = next((t._xp for t in tensors if isinstance(t, Tensor)), None)
    tensors = [lift(t, xp) for t in tensors]
    return tensors, tensors[0]._xp


def concat(tensors, axis=0):
    tensors, xp = _lift_all(tensors, "concat")
    out = xp.concat([t.data for t in tensors], axis=axis)
    ax = axis % out.ndim
    sizes = [t.data.shape[ax] for t in tensors]

    def backward(g):
        res, start = [], 0
        for n in sizes:
            idx = (slice(None),) * ax + (slice(start, start + n), Ellipsis)
            res.append(g[idx])
            start += n
        return tuple(res)

    return record(out, xp, tuple(tensors), backward)


def stack(tensors, axis=0):
    tensors, xp = _lift_all(tensors, "stack")
    out = xp.stack([t.data for t in tensors], axis=axis)
    ax = axis % out.ndim

    def backward(g):
        return tuple(g[(slice(None),) * ax + (i, Ellipsis)] for i in range(len(tensors)))

    return record(out, xp, tuple(tensors), backward)


def _key_data(key):
    if isinstance(key, tuple):
        return tuple(_data(k) for k in key)
    return _data(key)


def _is_int_array(k):
    return _ns.is_array(k) and not k.dtype == _ns.array_namespace(k).bool


def getitem(x, key):
    xp = x._xp
    key = _key_data(key)
    d = x.data
    out = d[key]
    parts = key if isinstance(key, tuple) else (key,)
    int_arrays = [k for k in parts if _is_int_array(k)]

    def backward(g):
        if int_arrays:
            idx = parts[0]
            rest_ok = all(k is Ellipsis or k == slice(None) for k in parts[1:])
            if not (_is_int_array(idx) and idx.ndim == 1 and rest_ok):
                raise NotImplementedError(
                    "xpdl: the gradient of integer-array indexing is supported for one 1-D "
                    "index array on the first axis (x[idx])")
            # Scatter-add through a one-hot product: correct with repeated indices and
            # written on the standard (no index_add in the Array API).
            n = d.shape[0]
            onehot = xp.astype(xp.expand_dims(idx, axis=-1)
                               == xp.arange(n, device=_ns.device_of(d)), g.dtype)
            g2 = xp.reshape(g, (g.shape[0], -1))
            return (xp.reshape(onehot.T @ g2, d.shape),)
        z = xp.zeros(d.shape, dtype=g.dtype, device=_ns.device_of(d))
        if _ns.is_jax(xp):
            return (z.at[key].add(g),)
        z[key] = g  # basic or boolean indexing selects each element once
        return (z,)

    return record(out, xp, (x,), backward)


# -- comparisons (no gradient) ---------------------------------------------------------
def _compare(op):
    def f(a, b):
        a, b, xp = _binary_prep(a, b)
        return _wrap(op(_data(a), _data(b)), xp)

    return f


lt, le, gt, ge = (_compare(operator.lt), _compare(operator.le),
                  _compare(operator.gt), _compare(operator.ge))
eq, ne = _compare(operator.eq), _compare(operator.ne)


# -- install operators on Tensor -------------------------------------------------------
def _install():
    T = Tensor
    T.__add__ = add
    T.__radd__ = lambda s, o: add(o, s)
    T.__sub__ = sub
    T.__rsub__ = lambda s, o: sub(o, s)
    T.__mul__ = mul
    T.__rmul__ = lambda s, o: mul(o, s)
    T.__truediv__ = div
    T.__rtruediv__ = lambda s, o: div(o, s)
    T.__pow__ = pow
    T.__rpow__ = lambda s, o: pow(o, s)
    T.__matmul__ = matmul
    T.__rmatmul__ = lambda s, o: matmul(o, s)
    T.__neg__ = neg
    T.__pos__ = lambda s: s
    T.__lt__, T.__le__, T.__gt__, T.__ge__ = lt, le, gt, ge
    T.__eq__, T.__ne__ = eq, ne
    T.__getitem__ = getitem
    T.sum = sum
    T.mean = mean
    T.max = max
    T.reshape = lambda s, *shape: reshape(
        s, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)
    T.T = property(transpose)
    T.mT = property(matrix_transpose)
    T.exp = exp
    T.log = log
    T.sqrt = sqrt
    T.abs = abs
    T.tanh = tanh
    T.__abs__ = abs


_install()
