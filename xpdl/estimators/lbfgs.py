"""L-BFGS written on the Array API standard (for LogisticRegression's default solver).

Parameters are a list of arrays of any namespace; only scalars (dot products, the loss)
cross to the host, once per evaluation, as the line search needs them.
"""

from __future__ import annotations

import math
from collections import deque


def _dot(xp, a, b):
    return float(sum(xp.sum(x * y) for x, y in zip(a, b)))


def minimize_lbfgs(fun, x0, *, max_iter=100, tol=1e-4, memory=10, xp):
    """Minimise ``fun`` from ``x0`` with L-BFGS and a backtracking line search that enforces
    the Armijo condition (and keeps only curvature pairs with ``s·y > 0``).

    Parameters
    ----------
    fun : callable
        ``fun(list_of_arrays) -> (float value, list_of_gradient_arrays)``.
    x0 : list of arrays
    max_iter : int
        Maximum number of iterations (each one or more evaluations).
    tol : float
        Stop when the largest absolute gradient entry is at most ``tol``.

    Returns
    -------
    x : list of arrays
    info : dict
        ``n_iter``, ``converged``, ``value``, ``grad_max``.
    """
    x = list(x0)
    f, g = fun(x)
    S, Y, R = deque(maxlen=memory), deque(maxlen=memory), deque(maxlen=memory)
    gmax = max(float(xp.max(xp.abs(gi))) for gi in g)
    it = 0
    converged = gmax <= tol
    while not converged and it < max_iter:
        it += 1
        # Two-loop recursion: d = -H g.
        q = list(g)
        alphas = []
        for s, y, r in zip(reversed(S), reversed(Y), reversed(R)):
            a = r * _dot(xp, s, q)
            alphas.append(a)
            q = [qi - a * yi for qi, yi in zip(q, y)]
        if S:
            gamma = _dot(xp, S[-1], Y[-1]) / _dot(xp, Y[-1], Y[-1])
        else:
            gamma = 1.0 / max(math.sqrt(_dot(xp, g, g)), 1e-12)
        d = [gamma * qi for qi in q]
        for (s, y, r), a in zip(zip(S, Y, R), reversed(alphas)):
            b = r * _dot(xp, y, d)
            d = [di + (a - b) * si for di, si in zip(d, s)]
        d = [-di for di in d]
        gtd = _dot(xp, g, d)
        if not gtd < 0:  # not a descent direction: restart from steepest descent
            S.clear(), Y.clear(), R.clear()
            d = [-gi for gi in g]
            gtd = -_dot(xp, g, g)
        t = 1.0
        for _ in range(40):
            xn = [xi + t * di for xi, di in zip(x, d)]
            fn, gn = fun(xn)
            if math.isfinite(fn) and fn <= f + 1e-4 * t * gtd:
                break
            t *= 0.5
        else:
            break  # no decrease possible at machine precision
        s = [xi_n - xi for xi_n, xi in zip(xn, x)]
        y = [gi_n - gi for gi_n, gi in zip(gn, g)]
        sy = _dot(xp, s, y)
        if sy > 1e-12 * max(_dot(xp, y, y), 1e-300):
            S.append(s), Y.append(y), R.append(1.0 / sy)
        df = f - fn
        x, f, g = xn, fn, gn
        gmax = max(float(xp.max(xp.abs(gi))) for gi in g)
        converged = gmax <= tol or df <= 1e-15 * max(abs(f), 1.0) and gmax <= 10 * tol
    return x, {"n_iter": it, "converged": converged, "value": f, "grad_max": gmax}
