"""The compiled one-pass optimizer loops of :mod:`xpdl._compiled` (imported only when Numba
is installed and the kernels are wanted).

Module-level functions: Numba's on-disk cache keys a function by its module and source,
and a closure over other compiled functions misses it in every new process (measured:
2.4-5 s of compilation per run when these lived inside a builder function).
"""

from __future__ import annotations

import math

import numba

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


# Every loop starts at 0 and runs over a view: LLVM vectorizes ``range(n)`` but not
# ``range(start, n)`` here (measured: 0.13 against 1.2 ms over 670k float32).
@_jit
def adam_body(p, g, m, v, l2, c, dec, use_wd, wd, b1, c1, b2, c2, eps_s, step_s):
    # The operations of xpdl.optim._fused (the L2 part, adam_step, _adam_direction):
    #   g + p*c;  p *= dec;  g = g + wd*p;  m = m*b1 + g*c1;  v = v*b2 + (g*g)*c2;
    #   p -= (m / (sqrt(v) + eps_s)) * step_s
    for i in range(p.size):
        gi = g[i]
        if l2:
            gi = gi + p[i] * c
        pi = p[i] * dec
        if use_wd:
            gi = gi + wd * pi
        mi = m[i] * b1 + gi * c1
        vi = v[i] * b2 + (gi * gi) * c2
        m[i] = mi
        v[i] = vi
        p[i] = pi - (mi / (math.sqrt(vi) + eps_s)) * step_s


@_jit
def adam_kernel(P, G, M, V, lo, hi, l2_end, c, dec, use_wd, wd, b1, c1, b2, c2, eps_s,
                step_s):
    # elements [lo, hi) of the flat arrays; the L2 term over those below l2_end
    p, g, m, v = P[lo:hi], G[lo:hi], M[lo:hi], V[lo:hi]
    n_l2 = min(max(l2_end - lo, 0), hi - lo)
    adam_body(p[:n_l2], g[:n_l2], m[:n_l2], v[:n_l2], True, c, dec, use_wd, wd, b1, c1, b2,
              c2, eps_s, step_s)
    adam_body(p[n_l2:], g[n_l2:], m[n_l2:], v[n_l2:], False, c, dec, use_wd, wd, b1, c1,
              b2, c2, eps_s, step_s)


@_jit
def sgd_body(p, g, b, l2, c, use_wd, wd, lr, mu, nesterov):
    # xpdl.optim._fused.sgd_step with momentum:
    #   g + p*c;  g = g + wd*p;  b = b*mu + g;  p -= (b*mu + g if nesterov else b) * lr
    for i in range(p.size):
        gi = g[i]
        if l2:
            gi = gi + p[i] * c
        if use_wd:
            gi = gi + wd * p[i]
        bi = b[i] * mu + gi
        b[i] = bi
        if nesterov:
            p[i] = p[i] - (bi * mu + gi) * lr
        else:
            p[i] = p[i] - bi * lr


@_jit
def sgd_kernel(P, G, B, lo, hi, l2_end, c, use_wd, wd, lr, mu, nesterov):
    p, g, b = P[lo:hi], G[lo:hi], B[lo:hi]
    n_l2 = min(max(l2_end - lo, 0), hi - lo)
    sgd_body(p[:n_l2], g[:n_l2], b[:n_l2], True, c, use_wd, wd, lr, mu, nesterov)
    sgd_body(p[n_l2:], g[n_l2:], b[n_l2:], False, c, use_wd, wd, lr, mu, nesterov)


@_jit
def sgd_plain_body(p, g, l2, c, use_wd, wd, lr):
    for i in range(p.size):
        gi = g[i]
        if l2:
            gi = gi + p[i] * c
        if use_wd:
            gi = gi + wd * p[i]
        p[i] = p[i] - gi * lr


@_jit
def sgd_plain_kernel(P, G, lo, hi, l2_end, c, use_wd, wd, lr):
    p, g = P[lo:hi], G[lo:hi]
    n_l2 = min(max(l2_end - lo, 0), hi - lo)
    sgd_plain_body(p[:n_l2], g[:n_l2], True, c, use_wd, wd, lr)
    sgd_plain_body(p[n_l2:], g[n_l2:], False, c, use_wd, wd, lr)
