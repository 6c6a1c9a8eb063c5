"""Linear regression: closed form (SVD) with optional ridge, or gradient descent."""

from __future__ import annotations

import math

from .. import _namespace as _ns
from .. import functional as F
from .. import losses as L
from ..nn import Linear, Sequential
from . import _dask
from . import _validation as V
from ._base import NetworkEstimator, RegressorMixin


def _exponent(xp, A):
    """e with max|A| in [2^(e-1), 2^e), or 0 when max|A| is within [2^-64, 2^64] (no
    rescaling needed; then nothing is copied)."""
    top = float(xp.max(xp.abs(A)))
    if top == 0 or 2.0 ** -64 <= top <= 2.0 ** 64:
        return 0
    return math.frexp(top)[1]


def _times_pow2(A, e):
    """``A * 2**e`` exactly (two factors, each a representable power of two)."""
    half = e // 2
    return (A * 2.0 ** half) * 2.0 ** (e - half)


class _LinearModelMixin:
    """``coef_``/``intercept_`` in scikit-learn's shapes, read from ``module_``."""

    def _linear(self):
        V.check_is_fitted(self)
        return self.module_[0]

    @property
    def coef_(self):
        W = self._linear().weight.data
        return self._xp.reshape(W, (-1,)) if self._single_output() else W

    @property
    def intercept_(self):
        lin = self._linear()
        xp = self._xp
        if lin.bias is None:
            b = xp.zeros((lin.out_features,), dtype=self._dtype, device=self._device)
        else:
            b = lin.bias.data
        return xp.reshape(b, ()) if self._single_output() else b

    _architecture = ("fit_intercept",)

    def _layer_sizes(self, n_in, n_out):
        return (n_in, n_out)

    def _zero_linear(self, n_in, n_out, bias):
        xp = self._xp
        lin = Linear(n_in, n_out, bias=bias, rng=0, xp=xp, device=self._device,
                     dtype=self._dtype)
        lin.weight.data = xp.zeros((n_out, n_in), dtype=self._dtype, device=self._device)
        return Sequential(lin)


class LinearRegression(RegressorMixin, _LinearModelMixin, NetworkEstimator):
    r"""Least-squares linear regression, optionally ridge-penalised.

    Minimises :math:`\|y - Xw - b\|^2 + \alpha\|w\|^2` (scikit-learn's ``Ridge`` objective;
    the intercept is not penalised), weighted by ``sample_weight``.

    Parameters
    ----------
    solver : {"lstsq", "gd", "sgd", "adam"}, default "lstsq"
        ``"lstsq"``: closed form through the standard's ``linalg.svd`` on centred data (the
        minimum-norm solution when ``X`` is rank deficient; never the normal equations'
        inverse). ``"gd"``: full-batch gradient descent from zero,
        :math:`\theta \leftarrow \theta - \eta\,\tfrac{1}{m}X^\top(X\theta - y)` (the
        gradient of half the mean squared error), plus :math:`\tfrac{\alpha}{m}w` for ridge.
        ``"sgd"``/``"adam"``: the same objective on minibatches of ``batch_size``.
    fit_intercept : bool, default True
    alpha : float, default 0.0
    learning_rate : float, default 0.01
        Step size of the iterative solvers.
    max_iter : int, default 1000
        Iterations (epochs) of the iterative solvers.
    tol : float, default 1e-6
        The iterative solvers stop when the loss has not decreased by ``tol`` for 5 epochs.
        ``"lstsq"`` treats singular values of the centred ``X`` at or below ``tol`` times
        the largest as zero (scikit-learn 1.9's ``lstsq(X, y, cond=tol)``; never below
        LAPACK's ``eps * max(n_samples, n_features)``), giving the minimum-norm solution
        over the rest.
    batch_size : int or None
        Minibatch size for "sgd"/"adam" (None: min(200, n_samples)); "gd" uses all samples.
    random_state : int or None
        Seeds the minibatch order.

    Attributes
    ----------
    coef_ : array of shape (n_features,) or (n_targets, n_features)
    intercept_ : array of shape () or (n_targets,)
    module_ : xpdl.nn.Sequential
        One :class:`~xpdl.nn.Linear` layer holding ``coef_`` and ``intercept_``.
    loss_curve_ : list of float
        Per-epoch loss of the iterative solvers (empty for "lstsq").
    n_iter_ : int
    rank_ : int
        ``solver="lstsq"`` without ridge (``alpha=0``), as scikit-learn's
        ``LinearRegression``: the rank of the centred (and weighted) ``X``, counting the
        singular values above ``tol`` times the largest.
    singular_ : array of shape (min(n_samples, n_features),)
        Its singular values, largest first (same conditions).

    Examples
    --------
    >>> import numpy as np
    >>> from xpdl import LinearRegression
    >>> X = np.array([[0.0], [1.0], [2.0]]); y = np.array([1.0, 3.0, 5.0])
    >>> m = LinearRegression().fit(X, y)
    >>> round(float(m.coef_[0]), 6), round(float(m.intercept_), 6)
    (2.0, 1.0)
    """

    warm_start = False
    verbose = False
    dtype = None
    early_stopping = False
    _is_classifier = False
    _l2_denominator = "n"
    _warn_on_max_iter = False

    def __init__(self, *, solver="lstsq", fit_intercept=True, alpha=0.0, learning_rate=0.01,
                 max_iter=1000, tol=1e-6, batch_size=None, random_state=None):
        self.solver = solver
        self.fit_intercept = fit_intercept
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.random_state = random_state

    def _single_output(self):
        return self._y_ndim == 1

    def _optimizer_name(self):
        return self.solver

    def _patience(self):
        return 5

    def _batch_size(self, n):
        return min(200, n) if self.batch_size is None and self.solver != "gd" else \
            super()._batch_size(n)

    def fit(self, X, y, sample_weight=None):
        """Fit on ``(X, y)``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            NumPy, CuPy, torch, JAX or array_api_strict (the model lives in that namespace,
            on that device), a pandas DataFrame, or a Dask array (trained out of core).
        y : array of shape (n_samples,) or (n_samples, n_targets)
            Follows ``X`` (moved to its namespace and device).
        sample_weight : array of shape (n_samples,), optional
            Non-negative weights of the samples in the loss.

        Returns
        -------
        self
        """
        if self.solver not in ("lstsq", "gd", "sgd", "adam"):
            raise ValueError(f"xpdl: solver must be 'lstsq', 'gd', 'sgd' or 'adam', got "
                             f"{self.solver!r}")
        V.validate_params(self)
        if self.solver != "lstsq":
            return self._fit(X, y, sample_weight, incremental=False)
        if _dask.is_dask(X):
            return _dask.fit_lstsq(self, X, y, sample_weight)
        X = V.validate_X(self, X, reset=True)
        n = X.shape[0]
        Y, k = self._targets(y, n, reset=True)
        w, e_w = V.validate_sample_weight(self, sample_weight, n, normalize=False,
                                          return_scale=True)
        self._singular, self._fit_rows = None, n
        coef, intercept = self._solve_lstsq(X, Y, w, e_w)
        return self._store_lstsq(coef, intercept, k)

    def _store_lstsq(self, coef, intercept, k, y_ndim=None):
        """The fitted state of a closed-form fit: coef (k, p), intercept (k,) or None."""
        self.module_ = self._zero_linear(coef.shape[1], k, self.fit_intercept)
        self._remember_fit_params()
        self.module_[0].weight.data = coef
        if self.fit_intercept:
            self.module_[0].bias.data = intercept
        if y_ndim is not None:
            self._y_ndim = y_ndim
        self._n_outputs = k
        s = self.__dict__.pop("_singular", None)
        for a in ("singular_", "rank_"):
            self.__dict__.pop(a, None)
        if s is not None and not self.alpha:  # scikit-learn's LinearRegression has them
            self.singular_ = s
            self.rank_ = int(float(self._xp.sum(self._xp.astype(s > self._cut(s), s.dtype))))
        self.loss_curve_ = []
        self.n_iter_ = 1
        return self

    def _solve_lstsq(self, X, Y, w, e_w=0):
        r"""Coefficients (k, p) and intercept (k,) of the weighted ridge problem.

        Data whose largest magnitude lies outside :math:`[2^{-64}, 2^{64}]` (X scaled by
        1e200, say) is first divided by powers of two, X and Y each, exactly: the products
        below then cannot overflow or underflow, and the solution is scaled back. The ridge
        penalty follows each rescaling (:math:`\alpha\,2^{2e_y - 2e_x - e_w}` for X, Y and
        the weights divided by :math:`2^{e_x}, 2^{e_y}, 2^{e_w}`), so the problem solved is
        the same.
        """
        xp = self._xp
        e_x, e_y = _exponent(xp, X), _exponent(xp, Y)
        if e_x:
            X = _times_pow2(X, -e_x)
        if e_y:
            Y = _times_pow2(Y, -e_y)
        alpha = float(self.alpha)
        if alpha and (e_x or e_y or e_w):
            limit = math.sqrt(float(xp.finfo(X.dtype).max))
            alpha = V.scaled(alpha, 2 * e_y - 2 * e_x - e_w, limit)
        if alpha == math.inf:
            # The penalty outweighs the data by more than the float range:
            # (G + a I)^-1 B = B / a to within n / a. In the original units
            # coef = Xc^T W Yc / alpha = B' 2^(e_x + e_y + e_w) / alpha.
            B, ym = self._solve_scaled(X, Y, w, 0.0, only_moments=True)
            coef = _times_pow2(B / float(self.alpha), e_x + e_y + e_w)
            return coef, (None if ym is None else _times_pow2(ym, e_y))
        coef, intercept = self._solve_scaled(X, Y, w, alpha)
        if self._singular is not None and (e_x or e_w):  # X and sqrt(w) were scaled
            self._singular = _times_pow2(self._singular, e_x) * 2.0 ** (e_w / 2)
        if e_x or e_y:
            coef = _times_pow2(coef, e_y - e_x)
            if intercept is not None:
                intercept = _times_pow2(intercept, e_y)
        return coef, intercept

    def _solve_scaled(self, X, Y, w, alpha, only_moments=False):
        xp = self._xp
        xm = ym = None
        if self.fit_intercept:
            if w is None:
                xm = xp.mean(X, axis=0)
                ym = xp.mean(Y, axis=0)
            else:
                sw = xp.sum(w)
                xm = xp.sum(X * w[:, None], axis=0) / sw
                ym = xp.sum(Y * w[:, None], axis=0) / sw
        coef = None
        if only_moments:  # B = Xc^T W Yc alone; the intercept then is the mean of Y
            Xc, Yc = (X - xm, Y - ym) if self.fit_intercept else (X, Y)
            B = Xc.T @ (Yc if w is None else Yc * w[:, None])
            return B.T, ym
        if w is None:
            coef = self._solve_gram_uncentred(X, Y, xm, ym, alpha)
        if coef is None:
            Xc, Yc = (X - xm, Y - ym) if self.fit_intercept else (X, Y)
            if w is not None:
                r = xp.sqrt(w)[:, None]
                Xc, Yc = Xc * r, Yc * r
            coef = self._solve_gram(Xc, Yc, alpha)
            if coef is None:
                coef = self._solve_svd(Xc, Yc, alpha)
        intercept = (ym - xm @ coef) if self.fit_intercept else None
        return coef.T, intercept

    def _solve_gram_uncentred(self, X, Y, xm, ym, alpha):
        """The Gram fast path without materialising centred data:
        ``X_c^T X_c = X^T X - n x̄ x̄^T``. Used only when every column's mean is small
        against its spread (|x̄| < 10 σ), so the subtraction loses under two digits."""
        xp = self._xp
        n, p = X.shape
        if n < 2 * p:
            return None
        G = X.T @ X
        B = X.T @ Y
        if self.fit_intercept:
            G = G - n * (xm[:, None] * xm[None, :])
            B = B - n * (xm[:, None] * ym[None, :])
            var = xp.linalg.diagonal(G) / n
            if not bool(xp.all(xm * xm < 100.0 * var)):
                return None
        return self._solve_normal(G, B, alpha)

    def _solve_normal(self, G, B, alpha):
        xp = self._xp
        p = G.shape[0]
        if alpha:
            G = G + alpha * xp.eye(p, dtype=G.dtype, device=self._device)
        ev = xp.linalg.eigvalsh(G)
        lo, hi = float(ev[0]), float(ev[-1])
        limit = 1e6 if _ns.dtype_name(xp, G.dtype) == "float64" else 1e3
        tol = float(self.tol)
        # (without ridge, also the SVD where a singular value is within the rank cut-off)
        if not (lo > 0 and hi / lo < limit and (alpha or lo > tol * tol * hi)):
            self._lstsq_path = "svd"
            return None
        self._lstsq_path = "gram"
        # the data's singular values, from the eigenvalues of its (ridge) Gram matrix
        self._singular = xp.sqrt(_ns.maximum_zero(xp, xp.flip(ev) - alpha))
        return xp.linalg.solve(G, B)

    def _cut(self, s, n_rows=None):
        """The rank cut-off: singular values at or below it count as zero (scikit-learn
        1.9's ``lstsq(X, y, cond=tol)``, never below LAPACK's ``eps * max(n, p)``)."""
        n = self._fit_rows if n_rows is None else n_rows
        eps = float(self._xp.finfo(s.dtype).eps)
        return float(self._xp.max(s)) * max(float(self.tol), eps * max(n, s.shape[0]))

    def _solve_gram(self, Xc, Yc, alpha):
        """Fast path: solve the (ridge) normal equations when they are well conditioned.

        The Gram matrix costs one pass of matrix products over X (versus an SVD of X); its
        condition number is the square of X's, so it is used only when
        cond(X^T X + alpha I) < 1e6 (float64; 1e3 in float32), where the normal equations
        lose at most ~1e-10 (1e-4) relative accuracy. Otherwise returns None for the SVD.
        """
        n, p = Xc.shape
        if n < 2 * p:
            return None
        return self._solve_normal(Xc.T @ Xc, Xc.T @ Yc, alpha)

    def _solve_svd(self, Xc, Yc, alpha, n_rows=None):
        """Minimum-norm (ridge) solution through the SVD of ``Xc``, or of an R factor of it
        (then ``n_rows`` is the data's row count, for the rank cut-off)."""
        xp = self._xp
        self._lstsq_path = "svd"
        U, s, Vt = xp.linalg.svd(Xc, full_matrices=False)
        self._singular = s
        if n_rows is not None:
            self._fit_rows = n_rows
        if alpha:
            d = s / (s * s + alpha)
        else:
            cut = self._cut(s)
            safe = xp.where(s > cut, s, _ns.lit(xp, 1.0, s))
            d = xp.where(s > cut, 1.0 / safe, _ns.lit(xp, 0.0, s))
        return (Vt.T * d) @ (U.T @ Yc)  # (p, k)

    # -- iterative solvers ------------------------------------------------------------
    def _build_layers(self, n_in, n_out):
        return self._zero_linear(n_in, n_out, self.fit_intercept)

    def _per_sample_loss(self, out, T, reduction="none"):
        if reduction == "mean":  # sum over targets, mean over samples
            return L.mse(out, T, reduction="sum") * (0.5 / out.shape[0])
        return F.sum(L.mse(out, T, reduction="none"), axis=1) * 0.5
