"""Compiled one-pass optimizer steps (and a replayed program's linear + ReLU passes, see
:func:`relu_layer_kernels`) for NumPy arrays, when Numba is installed.

NumPy runs an Adam step as about twelve passes over the parameters, one ufunc each; every
pass reads and writes the arrays again. A compiled loop does the whole update in one pass,
each element loaded once. Measured inside training on a 2-core machine (one process, the
two interleaved): an MLP epoch takes 1.13x (64-128-128-10), 1.23x (784-512-512-10) as
long without it (``docs/performance.rst``).

The loops are Numba's compilation of the update rules of :mod:`xpdl.optim._rules`, the
functions the ufunc path traces: the same operations in the same order and in the arrays'
dtype (the constants rounded to it as NumPy rounds Python floats, no fused multiply-add,
no reassociation), so both give the same bits; the tests check that with
``assert_array_equal``.

Optional: ``pip install xpdl[fast]`` (Numba). Without Numba, or with the environment
variable ``XPDL_NUMBA=0``, or for arrays below :data:`MIN_SIZE` elements (where the
ufuncs cost little and a first compilation would cost more than it saves), the NumPy path
runs. Compiled functions are cached on disk by Numba, so the compilation (about a second)
happens once per machine.
"""

from __future__ import annotations

import contextlib
import os

from .exceptions import _warn

__all__ = ["available", "usable", "disabled", "version", "adam_flat", "sgd_flat", "adam_consts",
           "sgd_consts", "relu_layer_kernels", "MIN_SIZE"]

#: Arrays with fewer elements keep the ufunc path.
MIN_SIZE = 1 << 13

_KERNELS: dict = {}
_READY: dict = {}  # dtype name -> compiled (True) or failed to compile (False)
_MISSING = False
_OFF = 0


def available() -> bool:
    """Whether the compiled kernels can run: Numba importable, ``XPDL_NUMBA`` not ``"0"``
    and not inside :func:`disabled`."""
    global _MISSING
    if _OFF or _MISSING or os.environ.get("XPDL_NUMBA", "1") == "0":
        return False
    if _KERNELS:
        return True
    try:
        _build()
    except ImportError:  # no Numba, or one that does not support this NumPy
        _MISSING = True
        return False
    return True


@contextlib.contextmanager
def disabled():
    """Within this block the optimizers take the NumPy ufunc path (``xpdl bench
    --ufuncs`` times both; the tests compare them). Flat steppers keep the path they were
    made with, inside or outside the block."""
    global _OFF
    _OFF += 1
    try:
        yield
    finally:
        _OFF -= 1


def version():
    """Numba's version when the kernels are available, else None."""
    if not available():
        return None
    import numba

    return numba.__version__


def usable(*arrays) -> bool:
    """Whether the kernels take these NumPy arrays: available, one floating dtype (float32
    or float64), C-contiguous, writable, at least :data:`MIN_SIZE` elements."""
    a0 = arrays[0]
    if a0.size < MIN_SIZE or a0.dtype.name not in ("float32", "float64"):
        return False
    for a in arrays:
        if a is None:
            continue
        if a.dtype != a0.dtype or not a.flags.c_contiguous or not a.flags.writeable:
            return False
    return available() and _ready(a0)


def _ready(a):
    """Compile (or load from Numba's cache) every kernel for ``a``'s dtype, on empty views
    of ``a``, before any real array is touched; a failure (no writable cache location,
    an LLVM error, ...) warns once and leaves that dtype on the ufunc path."""
    name = a.dtype.name
    ok = _READY.get(name)
    if ok is None:
        e = a.reshape(-1)[:0]  # contiguous, writable, empty: nothing runs
        f = a.dtype.type
        try:
            consts = adam_consts(f, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, t=1)
            _KERNELS["adam"](e, e, e, e, 0, *consts)
            _KERNELS["amsgrad"](e, e, e, e, e, 0, *consts)
            _KERNELS["sgd"](e, e, e, 0, *sgd_consts(f, lr=0.1, momentum=0.9))
            _KERNELS["sgd_plain"](e, e, 0, *sgd_consts(f, lr=0.1, momentum=0.0)[:4])
            e2 = e.reshape(0, 0)
            _KERNELS["bias_relu"](e2, e, e2, f(0))
            _KERNELS["relu_vjp_colsum"](e2, e2, e2, e, f(1), f(0))
            ok = True
        except Exception as exc:  # pragma: no cover - depends on the installation
            _warn(f"xpdl: the compiled optimizer steps could not be built for {name} "
                  f"({type(exc).__name__}: {exc}); using NumPy ufuncs", RuntimeWarning)
            ok = False
        _READY[name] = ok
    return ok


def _build():
    from . import _numba_kernels as k

    _KERNELS.update(adam=k.adam_kernel, amsgrad=k.amsgrad_kernel, sgd=k.sgd_kernel,
                    sgd_plain=k.sgd_plain_kernel,
                    bias_relu=k.bias_relu, relu_vjp_colsum=k.relu_vjp_colsum)


def relu_layer_kernels(a):
    """``(forward, backward)`` for a linear layer followed by ReLU in ``a``'s dtype when
    the kernels take ``a`` (:func:`usable`; a replay passes its flat parameter array),
    else None. ``forward(h, b, r)``: ``r[...] = maximum(h + b, 0)``; ``backward(g, r, d,
    gb)``: ``d[...] = g * (r > 0)`` and ``gb[...] = sum(d, axis=0)``; each one pass over
    C-contiguous 2-D ``h``, ``r``, ``g``, ``d`` (``b``, ``gb`` 1-D), the same bits as the
    ufuncs (see :mod:`xpdl._numba_kernels`)."""
    if not usable(a):
        return None
    f = a.dtype.type
    one, zero = f(1), f(0)
    fwd, bwd = _KERNELS["bias_relu"], _KERNELS["relu_vjp_colsum"]
    return (lambda h, b, r: fwd(h, b, r, zero)), (lambda g, r, d, gb: bwd(g, r, d, gb, one,
                                                                                zero))


def _scalars():
    """``xpdl.optim._fused``'s ``(adam_scalars, sgd_scalars)``, imported once (that module
    imports this one; an import statement in a function costs a microsecond per call,
    and these run every step)."""
    global _SCALARS
    if _SCALARS is None:
        from .optim._fused import adam_scalars, sgd_scalars

        _SCALARS = adam_scalars, sgd_scalars
    return _SCALARS


_SCALARS = None


def adam_consts(f, **kw):
    """The scalar arguments of the Adam kernel after ``n_l2`` in dtype ``f`` (a NumPy
    scalar type): :func:`xpdl.optim._fused.adam_scalars` (``kw``) rounded as NumPy rounds
    Python floats, with the coupled decay's flag."""
    c, dec, wd, b1, c1, b2, c2, eps_s, step_s = _scalars()[0](**kw)
    return (f(c), f(dec), bool(wd), f(wd), f(b1), f(c1), f(b2), f(c2), f(eps_s), f(step_s))


def sgd_consts(f, *, nesterov=False, **kw):
    """As :func:`adam_consts` for SGD (the first four for the kernel without momentum)."""
    c, wd, lr, mu = _scalars()[1](**kw)
    return (f(c), bool(wd), f(wd), f(lr), f(mu), bool(nesterov))


def adam_flat(p, g, m, v, *, vmax=None, n_l2=0, c=0.0, **kw):
    """One Adam/AdamW step over 1-d arrays in place (``kw``: ``lr, b1, b2, eps, t`` and
    optionally ``wd_l2, wd_decoupled``; AMSGrad with its maximum ``vmax``), with ``c * p``
    added to the gradient of the first ``n_l2`` elements: :func:`xpdl.optim._rules.adam`,
    the same numbers as the ufunc path. ``g`` is only read."""
    consts = adam_consts(p.dtype.type, c=c, **kw)
    if vmax is None:
        _KERNELS["adam"](p, g, m, v, n_l2 if c else 0, *consts)
    else:
        _KERNELS["amsgrad"](p, g, m, v, vmax, n_l2 if c else 0, *consts)


def sgd_flat(p, g, b, *, n_l2=0, c=0.0, **kw):
    """One SGD step over 1-d arrays in place (``b`` the momentum buffer or None; ``kw``:
    ``lr, momentum, nesterov, wd``): :func:`xpdl.optim._rules.sgd`."""
    consts = sgd_consts(p.dtype.type, c=c, **kw)
    n_l2 = n_l2 if c else 0
    if b is None:
        _KERNELS["sgd_plain"](p, g, n_l2, *consts[:4])
    else:
        _KERNELS["sgd"](p, g, b, n_l2, *consts)
