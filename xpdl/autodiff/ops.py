"""Differentiable primitives: each forward next to its vector-Jacobian product.

Every primitive (:class:`~xpdl.autodiff.primitive.Primitive`) is defined here once, as a
forward and a VJP on plain arrays; the functions below apply them to Tensors (and Python
scalars where noted) and return a Tensor. The VJPs return one gradient per input;
broadcasting is undone centrally by :func:`xpdl.autodiff.tensor.unbroadcast`, so they may
return gradients of the broadcast shape. All arithmetic goes through the inputs' namespace
``xp``. The eager tape and a replayed program (:mod:`xpdl.autodiff.program`) call the same
functions.
"""

from __future__ import annotations

import builtins
import math
import numbers
import operator

from .. import _namespace as _ns
from .primitive import primitive
from .tensor import Tensor, _mode, _wrap, apply

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
        return _py(x)
    return lift(x, xp)


def _py(x):
    """A number as a Python scalar: NumPy's scalar types (``np.float32(0.5)``) are no
    operands for array_api_strict's arrays. The same value (a NumPy scalar's exactly)."""
    t = type(x)
    if t is float or t is int or t is bool or not isinstance(x, numbers.Number):
        return x
    if isinstance(x, numbers.Integral):
        return int(x)
    return float(x) if isinstance(x, numbers.Real) else complex(x)


def _data(x):
    return x.data if x.__class__ is Tensor else x


# -- elementwise binary ----------------------------------------------------------------
def _binary_prep(a, b):
    if a.__class__ is Tensor:
        xp = a._xp
    elif b.__class__ is Tensor:
        xp = b._xp
    else:
        raise TypeError("xpdl: an operation needs at least one Tensor")
    return _operand(a, xp), _operand(b, xp), xp


def _lits(xp, a, b):
    """Python scalars among ``a, b`` as arrays where the namespace needs them so."""
    if isinstance(a, _Scalar) and not isinstance(b, _Scalar):
        a = _ns.lit(xp, a, b)
    elif isinstance(b, _Scalar) and not isinstance(a, _Scalar):
        b = _ns.lit(xp, b, a)
    return a, b


def _binary(prim):
    def f(a, b):
        a, b, xp = _binary_prep(a, b)
        return apply(prim, xp, (a, b))

    f.__name__ = prim.name
    return f


_G_ONLY = lambda needs: ("g",)  # noqa: E731  (the VJP reads only the output gradient)


@primitive("add", vjp_reads=_G_ONLY)
def _add(xp, a, b):
    return a + b


@_add.defvjp
def _add_vjp(xp, g, ins, out, saved, needs):
    return g, g


@primitive("sub", vjp_reads=_G_ONLY)
def _sub(xp, a, b):
    return a - b


@_sub.defvjp
def _sub_vjp(xp, g, ins, out, saved, needs):
    return g, (-g if needs[1] else None)


@primitive("mul", vjp_reads=lambda needs: ("g",) + ((("in1",) if needs[0] else ()) +
                                                   (("in0",) if needs[1] else ())))
def _mul(xp, a, b):
    return a * b


@_mul.defvjp
def _mul_vjp(xp, g, ins, out, saved, needs):
    a, b = ins
    return (g * b if needs[0] else None, g * a if needs[1] else None)


@primitive("div")
def _div(xp, a, b):
    return a / b


@_div.defvjp
def _div_vjp(xp, g, ins, out, saved, needs):
    a, b = ins
    return (g / b if needs[0] else None, -(g * out) / b if needs[1] else None)


@primitive("pow")
def _pow(xp, a, b):
    return a ** b


@_pow.defvjp
def _pow_vjp(xp, g, ins, out, saved, needs):
    ad, bd = ins
    ga = gb = None
    if needs[0]:
        if isinstance(bd, _Scalar):
            ga = g * (bd * ad ** (bd - 1)) if bd != 0 else g * 0
        else:
            ga = g * (bd * ad ** (bd - 1))
    if needs[1]:
        # d/db a**b = a**b log a; taken as 0 where a == 0 (PyTorch's convention).
        if isinstance(ad, _Scalar):
            gb = g * out * math.log(ad) if ad > 0 else g * 0
        else:
            safe = xp.where(ad == 0, _ns.lit(xp, 1, ad), ad)
            gb = g * out * xp.log(safe)
            gb = xp.where(ad == 0, _ns.lit(xp, 0, gb), gb)
    return ga, gb


@primitive("maximum")
def _maximum(xp, a, b):
    a, b = _lits(xp, a, b)
    return xp.maximum(a, b)


@_maximum.defvjp
def _maximum_vjp(xp, g, ins, out, saved, needs):
    return _minmax_vjp(xp, g, ins, needs, True)


@primitive("minimum")
def _minimum(xp, a, b):
    a, b = _lits(xp, a, b)
    return xp.minimum(a, b)


@_minimum.defvjp
def _minimum_vjp(xp, g, ins, out, saved, needs):
    return _minmax_vjp(xp, g, ins, needs, False)


def _minmax_vjp(xp, g, ins, needs, is_max):
    # Ties split the gradient in half, as PyTorch does.
    ad, bd = ins
    ad, bd = _lits(xp, ad, bd)
    wins = (ad > bd) if is_max else (ad < bd)
    tie = ad == bd
    half = g * 0.5
    zero = _ns.lit(xp, 0.0, g)
    ga = xp.where(wins, g, xp.where(tie, half, zero)) if needs[0] else None
    gb = xp.where(wins, zero, xp.where(tie, half, g)) if needs[1] else None
    return ga, gb


add, sub, mul, div = _binary(_add), _binary(_sub), _binary(_mul), _binary(_div)
pow = _binary(_pow)  # noqa: A001 - mirrors operator.pow
maximum, minimum = _binary(_maximum), _binary(_minimum)


@primitive("where")
def _where(xp, c, a, b):
    a, b = _lits(xp, a, b)
    return xp.where(c, a, b)


@_where.defvjp
def _where_vjp(xp, g, ins, out, saved, needs):
    m = xp.astype(ins[0], g.dtype)  # multiplying by a 0/1 mask is faster than where
    return (None, g * m if needs[1] else None, g * (1 - m) if needs[2] else None)


def where(cond, a, b):
    """``a`` where ``cond`` else ``b``; the gradient flows to the branch taken."""
    a, b, xp = _binary_prep(a, b)
    c = cond if cond.__class__ is Tensor else None
    cd = _data(cond)
    if not _ns.is_array(cd) or cd.dtype != _ns.array_namespace(cd).bool:
        # (NumPy would read a float condition as "nonzero"; the standard and torch refuse)
        what = f"dtype {cd.dtype}" if _ns.is_array(cd) else type(cd).__name__
        raise TypeError(f"xpdl: where() needs a boolean array condition, got {what}")
    return apply(_where, xp, (c if c is not None else _wrap(cd, xp), a, b))


# -- matrix product --------------------------------------------------------------------
@primitive("matmul")
def _matmul(xp, A, B):
    return _ns.matmul_into(xp, A, B) if A.ndim == 2 == B.ndim else A @ B


@_matmul.defvjp
def _matmul_vjp(xp, g, ins, out, saved, needs):
    A, B = ins
    ga = gb = None
    if needs[0]:
        if A.ndim >= 2 and B.ndim >= 2:
            ga = _ns.matmul_into(xp, g, B.T) if B.ndim == 2 == g.ndim else \
                g @ xp.matrix_transpose(B)
        elif B.ndim == 1 and A.ndim == 1:
            ga = g * B
        elif B.ndim == 1:  # (..., n, k) @ (k,) -> (..., n)
            ga = xp.expand_dims(g, axis=-1) * B
        else:  # (k,) @ (..., k, m) -> (..., m)
            ga = (B @ xp.expand_dims(g, axis=-1))[..., 0]
    if needs[1]:
        if A.ndim >= 2 and B.ndim >= 2:
            gb = _ns.matmul_into(xp, A.T, g) if A.ndim == 2 == g.ndim else \
                xp.matrix_transpose(A) @ g
        elif A.ndim == 1 and B.ndim == 1:
            gb = g * A
        elif A.ndim == 1:  # (k,) @ (..., k, m)
            gb = xp.expand_dims(A, axis=-1) * xp.expand_dims(g, axis=-2)
        else:  # (..., n, k) @ (k,)
            gb = (xp.matrix_transpose(A) @ xp.expand_dims(g, axis=-1))[..., 0]
    return ga, gb


def matmul(a, b):
    a, b, xp = _binary_prep(a, b)
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("xpdl: matmul needs two arrays, not a scalar")
    return apply(_matmul, xp, (a, b))


# -- elementwise unary -----------------------------------------------------------------
def _unary(prim):
    def f(x):
        return apply(prim, x._xp, (x,))

    f.__name__ = prim.name
    f.__doc__ = (f"Elementwise ``{prim.name}``.\n\nParameters\n----------\nx : Tensor\n\n"
                 f"Returns\n-------\nTensor of the shape of ``x``")
    return f


@primitive("neg", vjp_reads=_G_ONLY)
def _neg(xp, x):
    return -x


@_neg.defvjp
def _neg_vjp(xp, g, ins, out, saved, needs):
    return (-g,)


@primitive("exp")
def _exp(xp, x):
    return xp.exp(x)


@_exp.defvjp
def _exp_vjp(xp, g, ins, out, saved, needs):
    return (g * out,)


@primitive("log")
def _log(xp, x):
    return xp.log(x)


@_log.defvjp
def _log_vjp(xp, g, ins, out, saved, needs):
    return (g / ins[0],)


@primitive("sqrt")
def _sqrt(xp, x):
    return xp.sqrt(x)


@_sqrt.defvjp
def _sqrt_vjp(xp, g, ins, out, saved, needs):
    return (g / (2 * out),)


@primitive("abs")
def _abs(xp, x):
    return xp.abs(x)


@_abs.defvjp
def _abs_vjp(xp, g, ins, out, saved, needs):
    return (g * xp.sign(ins[0]),)


@primitive("tanh")
def _tanh(xp, x):
    return xp.tanh(x)


@_tanh.defvjp
def _tanh_vjp(xp, g, ins, out, saved, needs):
    return (g * (1 - out * out),)


neg, exp, log, sqrt = _unary(_neg), _unary(_exp), _unary(_log), _unary(_sqrt)
abs, tanh = _unary(_abs), _unary(_tanh)  # noqa: A001


@primitive("clip")
def _clip(xp, d, min=None, max=None):  # noqa: A002
    return xp.clip(d, min, max)


@_clip.defvjp
def _clip_vjp(xp, g, ins, out, saved, needs, min=None, max=None):  # noqa: A002
    # The gradient passes where min <= x <= max (PyTorch's clamp).
    d = ins[0]
    keep = None
    if min is not None:
        keep = d >= min
    if max is not None:
        hi = d <= max
        keep = hi if keep is None else xp.logical_and(keep, hi)
    return (g if keep is None else g * xp.astype(keep, g.dtype),)


def clip(x, min=None, max=None):  # noqa: A002
    return apply(_clip, x._xp, (x,), {"min": _py(_data(min)), "max": _py(_data(max))})


def _sqnorm_coef(g):
    """The sqnorm VJP is ``_sqnorm_coef(g) * x``: a recorded program whose ``g`` is a
    constant may fold the whole gradient into the optimizer's pass (``c * p`` added to the
    gradient there, the same bits), see :mod:`xpdl.autodiff.program`."""
    return 2 * g


@primitive("sqnorm", vjp_reads=lambda needs: ("g", "in0"))
def _sqnorm(xp, x):
    return _ns.sumsq(xp, x)


@_sqnorm.defvjp
def _sqnorm_vjp(xp, g, ins, out, saved, needs):
    return (_sqnorm_coef(g) * ins[0],)


_sqnorm.vjp_coef = _sqnorm_coef


def sqnorm(x):
    r"""The squared Euclidean norm :math:`\sum x^2` over all elements (a 0-d result); the
    gradient is :math:`2x`. Used for L2 penalties."""
    return apply(_sqnorm, x._xp, (x,))


# -- reductions ------------------------------------------------------------------------
def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return tuple(sorted(a % ndim if ndim else 0 for a in check_axis(axis, ndim)))


def check_axis(axis, ndim):
    """``axis`` (None, an int or a tuple of ints) as a tuple of ints, after checking it is
    one: NumPy-style ints (not bools), each in ``[-ndim, ndim)``, none twice. The errors
    name the axis the same way on every backend (they were NumPy's, torch's or strict's
    own, or "'float' object is not iterable")."""
    if axis is None:
        return tuple(range(ndim))
    many = isinstance(axis, (tuple, list))
    items = tuple(axis) if many else (axis,)
    for a in items:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"xpdl: axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"xpdl: axis {int(a)} is out of range for {ndim} dimensions")
    norm = [int(a) % ndim if ndim else 0 for a in items]
    if len(set(norm)) != len(norm):
        raise ValueError(f"xpdl: axis {axis!r} names a dimension twice")
    return tuple(int(a) for a in items)


def _axis_attr(axis, ndim):
    """A checked ``axis`` as the primitives take it: an int stays an int, a list becomes a
    tuple (what the namespaces accept)."""
    axes = check_axis(axis, ndim)
    return axes if isinstance(axis, (tuple, list)) else axes[0]


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _expand(g, shape, axes, keepdims, xp):
    """Broadcast a reduced gradient back over the reduced axes."""
    if not keepdims:
        g = xp.reshape(g, _kept_shape(shape, axes))
    return xp.broadcast_to(g, tuple(shape))


@primitive("sum", vjp_reads=_G_ONLY)
def _sum(xp, d, axis=None, keepdims=False):
    return _ns.sum_of(xp, d, axis=axis, keepdims=keepdims)


@_sum.defvjp
def _sum_vjp(xp, g, ins, out, saved, needs, axis=None, keepdims=False):
    shape = ins[0].shape
    return (_expand(g, shape, _axes(axis, len(shape)), keepdims, xp),)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    """Sum over ``axis``, as :func:`xpdl.functional.sum`.

    Parameters
    ----------
    x : Tensor
    axis : int, tuple of int or None, default None
        The axes reduced (all when None).
    keepdims : bool, default False

    Returns
    -------
    Tensor
        ``x``'s shape without the reduced axes (kept with size 1 with ``keepdims``).
    """
    if axis is not None:
        axis = _axis_attr(axis, x.data.ndim)
    return apply(_sum, x._xp, (x,), {"axis": axis, "keepdims": keepdims})


@primitive("mean", vjp_reads=_G_ONLY)
def _mean(xp, d, axis=None, keepdims=False):
    return xp.mean(d, axis=axis, keepdims=keepdims)


@_mean.defvjp
def _mean_vjp(xp, g, ins, out, saved, needs, axis=None, keepdims=False):
    shape = ins[0].shape
    axes = _axes(axis, len(shape))
    n = 1
    for i in axes:
        n *= shape[i]
    return (_expand(g / n, shape, axes, keepdims, xp),)


def mean(x, axis=None, keepdims=False):
    """Mean over ``axis``, as :func:`xpdl.functional.mean`.

    Parameters
    ----------
    x : Tensor
    axis : int, tuple of int or None, default None
        The axes reduced (all when None).
    keepdims : bool, default False

    Returns
    -------
    Tensor
        ``x``'s shape without the reduced axes (kept with size 1 with ``keepdims``).
    """
    if axis is not None:
        axis = _axis_attr(axis, x.data.ndim)
    return apply(_mean, x._xp, (x,), {"axis": axis, "keepdims": keepdims})


@primitive("max")
def _max(xp, d, axis=None, keepdims=False):
    return _ns.max_of(xp, d, axis=axis, keepdims=keepdims)


@_max.defvjp
def _max_vjp(xp, g, ins, out, saved, needs, axis=None, keepdims=False):
    d = ins[0]
    shape = d.shape
    axes = _axes(axis, len(shape))
    m = out if keepdims else xp.reshape(out, _kept_shape(shape, axes))
    mask = xp.astype(d == m, g.dtype)
    count = xp.sum(mask, axis=axes, keepdims=True)
    gk = g if keepdims else xp.reshape(g, _kept_shape(shape, axes))
    return (mask * (gk / count),)


def max(x, axis=None, keepdims=False):  # noqa: A001
    """Maximum over ``axis``; ties share the gradient equally (like ``torch.amax``).

    Parameters
    ----------
    x : Tensor
    axis : int, tuple of int or None, default None
        The axes reduced (all when None).
    keepdims : bool, default False

    Returns
    -------
    Tensor
        ``x``'s shape without the reduced axes (kept with size 1 with ``keepdims``).
    """
    if axis is not None:
        axis = _axis_attr(axis, x.data.ndim)
    return apply(_max, x._xp, (x,), {"axis": axis, "keepdims": keepdims})


# -- shape -----------------------------------------------------------------------------
@primitive("reshape", vjp_reads=_G_ONLY)
def _reshape(xp, d, shape):
    return xp.reshape(d, shape)


@_reshape.defvjp
def _reshape_vjp(xp, g, ins, out, saved, needs, shape):
    return (xp.reshape(g, ins[0].shape),)


def reshape(x, shape):
    """The same elements in a new shape; ``t.reshape(2, 3)`` and ``t.reshape((2, 3))``
    both work on a Tensor.

    Parameters
    ----------
    x : Tensor
    shape : tuple of int
        Of the same size as ``x``; one entry may be -1 (inferred).

    Returns
    -------
    Tensor of shape ``shape``
    """
    return apply(_reshape, x._xp, (x,), {"shape": tuple(shape)})


@primitive("permute_dims")
def _permute(xp, d, axes):
    return xp.permute_dims(d, axes)


@_permute.defvjp
def _permute_vjp(xp, g, ins, out, saved, needs, axes):
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a] = i
    return (xp.permute_dims(g, tuple(inv)),)


def permute_dims(x, axes):
    return apply(_permute, x._xp, (x,), {"axes": tuple(axes)})


def transpose(x):
    """``x.T``: reverses all axes."""
    return permute_dims(x, tuple(range(x.ndim - 1, -1, -1)))


@primitive("matrix_transpose")
def _mT(xp, d):
    return xp.matrix_transpose(d)


@_mT.defvjp
def _mT_vjp(xp, g, ins, out, saved, needs):
    return (xp.matrix_transpose(g),)


def matrix_transpose(x):
    """``x.mT``: swaps the last two axes."""
    if x.ndim < 2:
        raise ValueError("xpdl: mT needs at least 2 dimensions")
    return apply(_mT, x._xp, (x,))


def _lift_all(tensors, what):
    """A sequence of Tensors/arrays as Tensors of one namespace, and that namespace."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"xpdl: {what} needs at least one array")
    xp = next((t._xp for t in tensors if isinstance(t, Tensor)), None)
    if xp is None:  # plain arrays: all of the first one's namespace
        xp = lift(tensors[0])._xp
    return [lift(t, xp) for t in tensors], xp


@primitive("concat")
def _concat(xp, *ds, axis=0):
    return xp.concat(list(ds), axis=axis)


@_concat.defvjp
def _concat_vjp(xp, g, ins, out, saved, needs, axis=0):
    ax = axis % out.ndim
    res, start = [], 0
    for d in ins:
        n = d.shape[ax]
        idx = (slice(None),) * ax + (slice(start, start + n), Ellipsis)
        res.append(g[idx])
        start += n
    return tuple(res)


def concat(tensors, axis=0):
    tensors, xp = _lift_all(tensors, "concat")
    return apply(_concat, xp, tuple(tensors), {"axis": axis})


@primitive("stack")
def _stack(xp, *ds, axis=0):
    return xp.stack(list(ds), axis=axis)


@_stack.defvjp
def _stack_vjp(xp, g, ins, out, saved, needs, axis=0):
    ax = axis % out.ndim
    return tuple(g[(slice(None),) * ax + (i, Ellipsis)] for i in range(len(ins)))


def stack(tensors, axis=0):
    tensors, xp = _lift_all(tensors, "stack")
    return apply(_stack, xp, tuple(tensors), {"axis": axis})


def _key_data(key):
    if isinstance(key, tuple):
        return tuple(_data(k) for k in key)
    return _data(key)


def _is_int_array(k):
    return _ns.is_array(k) and not k.dtype == _ns.array_namespace(k).bool


@primitive("getitem")
def _getitem(xp, d, key):
    if _is_int_array(key) and key.ndim == 1:
        # ``x[idx]``: the standard's take (its indexing allows integer arrays only beside
        # other integer indices, so array_api_strict refuses ``d[idx, ...]``)
        return xp.take(d, key, axis=0)
    return d[key]


@_getitem.defvjp
def _getitem_vjp(xp, g, ins, out, saved, needs, key):
    d = ins[0]
    parts = key if isinstance(key, tuple) else (key,)
    if any(_is_int_array(k) for k in parts):
        idx = parts[0]
        rest_ok = all(k is Ellipsis or (isinstance(k, slice) and k == slice(None))
                      for k in parts[1:])
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
    if any(k is None for k in parts):  # new axes (of size 1): not allowed when assigning
        key = tuple(k for k in parts if k is not None)
        g = xp.reshape(g, z[key].shape)
    if _ns.is_jax(xp):
        return (z.at[key].add(g),)
    z[key] = g  # basic or boolean indexing selects each element once
    return (z,)


def _index_key(x, key):
    """``key`` with Tensors as their arrays, Python lists of indices as arrays of ``x``'s
    namespace (a list is an integer or boolean array index on NumPy and torch, and its
    gradient must add up repeated indices as an array's does), and a trailing ``...``
    where fewer axes are indexed than ``x`` has (NumPy's and torch's rule; the standard
    asks for it explicitly, and array_api_strict refuses ``x[0]`` of a matrix without)."""
    key = _key_data(key)
    parts = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, list) for k in parts):
        parts = tuple(x._xp.asarray(k, device=_ns.device_of(x.data)) if isinstance(k, list)
                      else k for k in parts)
        key = parts if isinstance(key, tuple) else parts[0]
    if _ns.is_array(key):
        return key, parts  # a sole array: a mask, or x[idx] (a take along the first axis)
    if not any(k is Ellipsis for k in parts):
        used = builtins.sum(0 if k is None else (k.ndim if _ns.is_array(k) else 1)
                            for k in parts)
        if used < x.data.ndim:
            parts = parts + (Ellipsis,)
            key = parts
    return key, parts


def getitem(x, key):
    key, parts = _index_key(x, key)
    if any(_ns.is_array(k) for k in parts) and _mode.recorder is not None:
        # an index array is data, not part of the program's structure
        _mode.recorder.opaque("indexing with an array inside a compiled step")
    return apply(_getitem, x._xp, (x,), {"key": key})


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
    T.reshape.__doc__ = reshape.__doc__
    T.T = property(transpose)
    T.mT = property(matrix_transpose)
    T.exp = exp
    T.log = log
    T.sqrt = sqrt
    T.abs = abs
    T.tanh = tanh
    T.__abs__ = abs


_install()
