"""The compiled one-pass optimizer loops of :mod:`xpdl._compiled` (imported only when Numba
is installed and the kernels are wanted): Numba compiles the update rules of
:mod:`xpdl.optim._rules` per element, the same functions the other paths run.

Module-level functions: Numba's on-disk cache keys a function by its module and source,
and a closure over other compiled functions misses it in every new process (measured:
2.4-5 s of compilation per run when these lived inside a builder function). The cache
does not see a change to ``_rules`` alone; the tests compare these loops with the ufunc
path bit for bit, so a stale cache fails them.
"""

from __future__ import annotations

import math
import types

import numba

from .optim import _rules

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_inline = numba.njit(inline="always", error_model="numpy")

# Every function of _rules, compiled, calling the others compiled: each one's globals are
# this namespace (Numba reads a callee from the caller's globals when it compiles).
_RULES = {"__name__": _rules.__name__}
for _name, _f in list(vars(_rules).items()):
    if isinstance(_f, types.FunctionType) and _f.__module__ == _rules.__name__:
        _RULES[_name] = _inline(types.FunctionType(_f.__code__, _RULES, _name))
_adam, _sgd = _RULES["adam"], _RULES["sgd"]


@_inline
def _sqrt(x):
    return math.sqrt(x)


@_inline
def _maximum(a, b):
    return a if a > b or a != a else b  # (np.maximum's: a NaN on either side wins)


# Every loop starts at 0 and runs over a view: LLVM vectorizes ``range(n)`` but not
# ``range(start, n)`` here (measured: 0.13 against 1.2 ms over 670k float32). The flags of
# the rules are run-time values here; AdamW's factor ``dec`` is 1 without it (p * 1 is p).
# Without AMSGrad the rule's maximum is a dummy number, returned unchanged and dropped.
@_jit
def adam_body(p, g, m, v, l2, c, dec, coupled, wd, b1, c1, b2, c2, eps_s, step_s):
    for i in range(p.size):
        p[i], m[i], v[i], _ = _adam(p[i], g[i], m[i], v[i], c, c, dec, wd, b1, c1, b2, c2,
                                    eps_s, step_s, l2, True, coupled, False, _sqrt, _maximum)


@_jit
def adam_kernel(P, G, M, V, n_l2, c, dec, coupled, wd, b1, c1, b2, c2, eps_s, step_s):
    # the L2 term over the elements below n_l2
    adam_body(P[:n_l2], G[:n_l2], M[:n_l2], V[:n_l2], True, c, dec, coupled, wd, b1, c1, b2,
              c2, eps_s, step_s)
    adam_body(P[n_l2:], G[n_l2:], M[n_l2:], V[n_l2:], False, c, dec, coupled, wd, b1, c1,
              b2, c2, eps_s, step_s)


@_jit
def amsgrad_body(p, g, m, v, x, l2, c, dec, coupled, wd, b1, c1, b2, c2, eps_s, step_s):
    for i in range(p.size):
        p[i], m[i], v[i], x[i] = _adam(p[i], g[i], m[i], v[i], x[i], c, dec, wd, b1, c1, b2,
                                       c2, eps_s, step_s, l2, True, coupled, True, _sqrt,
                                       _maximum)


@_jit
def amsgrad_kernel(P, G, M, V, X, n_l2, c, dec, coupled, wd, b1, c1, b2, c2, eps_s, step_s):
    amsgrad_body(P[:n_l2], G[:n_l2], M[:n_l2], V[:n_l2], X[:n_l2], True, c, dec, coupled, wd,
                 b1, c1, b2, c2, eps_s, step_s)
    amsgrad_body(P[n_l2:], G[n_l2:], M[n_l2:], V[n_l2:], X[n_l2:], False, c, dec, coupled,
                 wd, b1, c1, b2, c2, eps_s, step_s)


@_jit
def sgd_body(p, g, b, l2, c, coupled, wd, lr, mu, nesterov):
    for i in range(p.size):
        p[i], b[i] = _sgd(p[i], g[i], b[i], c, wd, lr, mu, l2, coupled, True, nesterov)


@_jit
def sgd_kernel(P, G, B, n_l2, c, coupled, wd, lr, mu, nesterov):
    sgd_body(P[:n_l2], G[:n_l2], B[:n_l2], True, c, coupled, wd, lr, mu, nesterov)
    sgd_body(P[n_l2:], G[n_l2:], B[n_l2:], False, c, coupled, wd, lr, mu, nesterov)


@_jit
def sgd_plain_body(p, g, l2, c, coupled, wd, lr):
    for i in range(p.size):  # (no momentum: the rule's buffer is a dummy number)
        p[i] = _sgd(p[i], g[i], lr, c, wd, lr, lr, l2, coupled, False, False)[0]


@_jit
def sgd_plain_kernel(P, G, n_l2, c, coupled, wd, lr):
    sgd_plain_body(P[:n_l2], G[:n_l2], True, c, coupled, wd, lr)
    sgd_plain_body(P[n_l2:], G[n_l2:], False, c, coupled, wd, lr)


# A linear layer followed by ReLU, as a replayed program's plan runs them on NumPy
# (:meth:`xpdl.autodiff.program._Program.bind`), each in one pass with the ufuncs' bits:
# forward ``r = maximum(h + b, 0)`` after the matrix product ``h`` (NaN stays NaN; -0.0
# gives +0.0, as NumPy's vectorized maximum), backward ``d = g * (r > 0)`` (the mask
# cast to the dtype: NaN * 0 stays NaN, -x * 0 is -0.0) with the bias gradient
# ``add.reduce(d, axis=0)``, which NumPy forms by adding the rows in order.
@_jit
def bias_relu(h, b, r, zero):
    n, k = h.shape
    for i in range(n):
        hi = h[i]
        ri = r[i]
        for j in range(k):
            x = hi[j] + b[j]
            ri[j] = x if x > zero or x != x else zero


@_jit
def relu_vjp_colsum(g, r, d, gb, one, zero):
    n, k = g.shape
    if n == 0:
        for j in range(k):
            gb[j] = zero
        return
    g0, r0, d0 = g[0], r[0], d[0]
    for j in range(k):
        x = g0[j] * (one if r0[j] > zero else zero)
        d0[j] = x
        gb[j] = x
    for i in range(1, n):
        gi, ri, di = g[i], r[i], d[i]
        for j in range(k):
            x = gi[j] * (one if ri[j] > zero else zero)
            di[j] = x
            gb[j] = gb[j] + x
