"""Function transforms: ``grad``, ``value_and_grad`` and ``check_grad``."""

from __future__ import annotations

import functools
import math
import numbers
import threading

from .. import _namespace as _ns
from . import ops as _ops  # noqa: F401  (installs the operators on Tensor)
from .tensor import Tensor, enable_grad, no_grad


class _Depth(threading.local):
    n = 0  # value_and_grad calls running their function, in this thread


_depth = _Depth()


def _argnums_tuple(argnums, nargs):
    single = not isinstance(argnums, (tuple, list))
    nums = (argnums,) if single else tuple(argnums)
    if not nums:
        raise ValueError("xpdl: argnums must name at least one argument")
    for i in nums:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"xpdl: argnums must be an int or a tuple of ints, got "
                            f"{argnums!r}")
        if not -nargs <= i < nargs:
            raise ValueError(f"xpdl: argnums {argnums!r} is out of range for {nargs} arguments")
    out = tuple(int(i) % nargs for i in nums)
    if len(set(out)) != len(out):  # (the first copy's gradient came back as zeros)
        raise ValueError(f"xpdl: argnums {argnums!r} names an argument twice")
    return single, out


def value_and_grad(fun, argnums=0):
    """Turn ``fun`` into a function returning ``(value, gradient)``.

    Parameters
    ----------
    fun : callable
        Takes arrays (those named by ``argnums`` arrive wrapped as :class:`Tensor` with
        ``requires_grad=True``) and returns a one-element Tensor.
    argnums : int or tuple of int, default 0
        Which positional arguments to differentiate with respect to.

    Returns
    -------
    callable
        ``f(*args, **kwargs) -> (value, grads)``: ``value`` is the output array (shape
        ``()`` or ``(1,)``), ``grads`` an array (``argnums`` an int) or a tuple of arrays
        with the namespace, device, dtype and shape of the corresponding inputs.

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> f = xpdl.value_and_grad(lambda w: (w * w).sum())
    >>> v, g = f(np.array([1.0, -2.0]))
    >>> float(v), g
    (5.0, array([ 2., -4.]))
    """

    if not callable(fun):
        raise TypeError(f"xpdl: value_and_grad/grad need a callable, got {type(fun).__name__}")

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        single, nums = _argnums_tuple(argnums, len(args))
        if _depth.n and any(isinstance(args[i], Tensor) and args[i].requires_grad
                            for i in nums):
            # inside another grad's function, this argument is on that grad's tape: taking
            # its value here would cut the outer derivative off (silently zero)
            raise NotImplementedError(
                "xpdl: grad inside the function of another grad (a higher-order derivative) "
                "is not supported: xpdl's VJPs run on raw arrays, so the inner gradient "
                "would be a constant to the outer one. Differentiate once, or pass "
                "x.detach() to take the inner gradient at x's value as a constant")
        datas = [args[i].data if isinstance(args[i], Tensor) else args[i] for i in nums]
        _ns.get_namespace_and_device(*datas)
        call = list(args)
        leaves = []
        for i, d in zip(nums, datas):
            if not _ns.is_array(d):
                raise TypeError(f"xpdl: argument {i} must be an array to differentiate it, "
                                f"got {type(d).__name__}")
            t = Tensor(d, requires_grad=True)
            call[i] = t
            leaves.append(t)
        _depth.n += 1
        try:
            with enable_grad():
                out = fun(*call, **kwargs)
        finally:
            _depth.n -= 1
        if _ns.is_array(out):  # a plain array does not depend on the inputs
            out = Tensor(out)
        if not isinstance(out, Tensor):
            raise TypeError(f"xpdl: the function must return a Tensor, got {type(out).__name__}")
        if out.size != 1:
            raise ValueError(f"xpdl: the function must return one value, got shape {out.shape}")
        if out.requires_grad:  # (other leaves, say a model's parameters, keep their .grad)
            out.backward(inputs=leaves)
        grads = []
        for t in leaves:
            g = t.grad
            if g is None:  # output does not depend on this input
                g = t._xp.zeros(t.data.shape, dtype=t.data.dtype, device=t.device)
            grads.append(g)
        return out.data, (grads[0] if single else tuple(grads))

    return wrapped


def grad(fun, argnums=0):
    """Turn ``fun`` into a function returning its gradient (see :func:`value_and_grad`).

    Parameters
    ----------
    fun : callable
        Takes arrays (those named by ``argnums`` arrive wrapped as :class:`Tensor` with
        ``requires_grad=True``) and returns a one-element Tensor.
    argnums : int or tuple of int, default 0
        Which positional arguments to differentiate with respect to.

    Returns
    -------
    callable
        ``f(*args, **kwargs) -> grads``: an array (``argnums`` an int) or a tuple of
        arrays, each with the namespace, device, dtype and shape of its input.

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> xpdl.grad(lambda w: (w ** 3).sum())(np.array([1.0, 2.0]))
    array([ 3., 12.])
    """
    vg = value_and_grad(fun, argnums)

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    return wrapped


def check_grad(fun, *arrays, eps=None, rtol=None, raise_exception=False):
    r"""Compare the autodiff gradient of ``fun`` with central finite differences.

    Parameters
    ----------
    fun : callable
        Takes one Tensor per array in ``arrays`` and returns a one-element Tensor.
    *arrays : arrays
        Where to check; every argument is differentiated. Use float64 where the device has
        it: float32 differences carry errors near ``1e-4``.
    eps : float, optional
        Step of :math:`(f(x+\epsilon e_i) - f(x-\epsilon e_i)) / 2\epsilon`; ``1e-6`` for
        float64, ``1e-3`` for float32.
    rtol : float, optional
        Tolerance used when ``raise_exception`` is True; ``1e-6`` for float64, ``2e-2``
        for float32.
    raise_exception : bool, default False
        Raise :class:`AssertionError` when the error exceeds ``rtol``.

    Returns
    -------
    float
        The largest relative error over the arguments,
        :math:`\max_k \|g_k - \hat g_k\|_\infty / \max(\|g_k\|_\infty, \|\hat g_k\|_\infty)`,
        with :math:`g` the autodiff and :math:`\hat g` the finite-difference gradient
        (0 when both are zero).

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> err = xpdl.check_grad(lambda x: (x.exp() * x).sum(), np.array([0.5, -1.0, 2.0]))
    >>> err < 1e-6
    True
    """
    if not arrays:
        raise ValueError("xpdl: check_grad needs at least one array")
    xp, dev = _ns.get_namespace_and_device(*arrays)
    for a in arrays:
        if not xp.isdtype(a.dtype, "real floating"):
            raise TypeError(f"xpdl: check_grad needs floating arrays, got {a.dtype}")
    is64 = any(_ns.dtype_name(xp, a.dtype) == "float64" for a in arrays)
    eps = eps if eps is not None else (1e-6 if is64 else 1e-3)
    rtol = rtol if rtol is not None else (1e-6 if is64 else 2e-2)
    for name, v in (("eps", eps), ("rtol", rtol)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"xpdl: check_grad's {name} must be a number, got {v!r}")
        if not 0 < v < math.inf:  # (NaN too: its errors were inf, its steps nothing)
            raise ValueError(f"xpdl: check_grad's {name} must be positive and finite, "
                             f"got {v!r}")

    auto = grad(fun, argnums=tuple(range(len(arrays))))(*arrays)

    def f(*xs):
        with no_grad():
            out = fun(*[Tensor(x) for x in xs])
        return float(xp.reshape(out.data, ()))

    worst = 0.0
    for k, x in enumerate(arrays):
        n = 1
        for s in x.shape:
            n *= s
        idx = xp.arange(n, device=dev)
        num = []
        for j in range(n):
            e = xp.reshape(xp.astype(idx == j, x.dtype), x.shape) * eps
            plus = list(arrays)
            minus = list(arrays)
            plus[k] = x + e
            minus[k] = x - e
            num.append((f(*plus) - f(*minus)) / (2 * eps))
        fd = xp.reshape(xp.asarray(num, dtype=x.dtype, device=dev), x.shape)
        ad = auto[k]
        scale = max(float(xp.max(xp.abs(fd))) if n else 0.0,
                    float(xp.max(xp.abs(ad))) if n else 0.0)
        if scale == 0.0:
            continue
        err = float(xp.max(xp.abs(ad - fd))) / scale
        if err != err:  # NaN
            err = float("inf")
        worst = max(worst, err)
    if raise_exception and worst > rtol:
        raise AssertionError(f"xpdl.check_grad: relative error {worst:.3g} exceeds rtol={rtol}")
    return worst
