"""Logistic regression, binary (sigmoid) and multinomial (softmax)."""

from __future__ import annotations

import math
import numbers

from .. import _namespace as _ns
from .. import functional as F
from ..autodiff.functions import value_and_grad
from ..autodiff.tensor import no_grad
from . import _dask
from . import _validation as V
from ._base import ClassifierMixin, NetworkEstimator
from .lbfgs import minimize_lbfgs
from .linear import _LinearModelMixin


class LogisticRegression(ClassifierMixin, _LinearModelMixin, NetworkEstimator):
    r"""Logistic regression with scikit-learn's objective

    .. math:: \min_{W,b}\; C\sum_i s_i\,\ell_i(W, b) + \tfrac12\|W\|^2,

    with :math:`\ell_i` the log-loss of a sigmoid (two classes) or a softmax (more), and
    sample weights :math:`s_i`; the intercept is not penalised.

    Parameters
    ----------
    solver : {"lbfgs", "gd", "sgd", "adam"}, default "lbfgs"
        ``"lbfgs"``: L-BFGS written on the Array API standard (the same objective divided by
        :math:`C\sum_i s_i`); the others minimise that objective with
        :mod:`xpdl.optim` (``learning_rate``, epochs ``max_iter``, ``batch_size``).
    C : float, default 1.0
        Inverse regularisation strength; ``np.inf`` fits without a penalty (scikit-learn's
        spelling since its ``penalty=None`` was deprecated).
    fit_intercept : bool, default True
    learning_rate : float, default 0.1
    max_iter : int, default 100
    tol : float, default 1e-4
        "lbfgs" stops when the largest gradient entry is at most ``tol``.
    batch_size : int or None
    random_state : int or None
    class_weight : None, "balanced" or dict of label to float
        Each sample's weight is multiplied by its class's (scikit-learn's): ``"balanced"``
        gives class :math:`j` the weight :math:`n / (k\,n_j)` (:math:`n_j` samples of it,
        :math:`k` classes; with ``sample_weight``, :math:`n` and :math:`n_j` are sums of
        weights); a dict gives its labels' weights, 1 for the others. Not with Dask arrays
        (pass the products as ``sample_weight``).

    Attributes
    ----------
    classes_ : array of shape (n_classes,)
        Sorted labels (any type; strings live on the host as a NumPy array).
    coef_ : array of shape (1, n_features) or (n_classes, n_features)
    intercept_ : array of shape (1,) or (n_classes,)
    module_ : xpdl.nn.Sequential
        One Linear layer from inputs to logits.
    n_iter_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from xpdl import LogisticRegression
    >>> X = np.array([[-2.0], [-1.0], [1.0], [2.0]]); y = np.array(["no", "no", "yes", "yes"])
    >>> LogisticRegression().fit(X, y).predict(np.array([[3.0]]))
    array(['yes'], dtype='<U3')
    """

    warm_start = False
    verbose = False
    dtype = None
    early_stopping = False
    _is_classifier = True
    _l2_denominator = "n"
    _warn_on_max_iter = False

    def __init__(self, *, solver="lbfgs", C=1.0, fit_intercept=True, learning_rate=0.1,
                 max_iter=100, tol=1e-4, batch_size=None, random_state=None,
                 class_weight=None):
        self.solver = solver
        self.C = C
        self.class_weight = class_weight
        self.fit_intercept = fit_intercept
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.random_state = random_state

    @property
    def alpha(self):
        """The L2 weight ``1 / C`` (read-only; set ``C``)."""
        return 1.0 / float(self.C)

    def _single_output(self):
        return False

    def _optimizer_name(self):
        return self.solver

    def _patience(self):
        return 5

    def _batch_size(self, n):
        return min(200, n) if self.batch_size is None and self.solver != "gd" else \
            super()._batch_size(n)

    def _build_layers(self, n_in, n_out):
        return self._zero_linear(n_in, n_out, self.fit_intercept)

    def fit(self, X, y, sample_weight=None):
        """Fit on ``X`` and labels ``y``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            NumPy, CuPy, torch, JAX or array_api_strict (the model lives in that namespace,
            on that device), a pandas DataFrame, or a Dask array (trained out of core).
        y : array of shape (n_samples,)
            Labels of any type (at least two classes); numeric labels follow ``X`` (moved
            to its namespace and device).
        sample_weight : array of shape (n_samples,), optional
            Non-negative weights of the samples in the loss.

        Returns
        -------
        self
        """
        if self.solver not in ("lbfgs", "gd", "sgd", "adam"):
            raise ValueError(f"xpdl: solver must be 'lbfgs', 'gd', 'sgd' or 'adam', got "
                             f"{self.solver!r}")
        V.validate_params(self)
        sample_weight = self._class_weighted(X, y, sample_weight)
        if self.solver != "lbfgs":
            return self._fit(X, y, sample_weight, incremental=False)
        if _dask.is_dask(X):
            return _dask.fit_lbfgs(self, X, y, sample_weight, self._penalty_weight)
        X = V.validate_X(self, X, reset=True)
        n = X.shape[0]
        T, k = self._targets(y, n, reset=True)
        # Weights come divided by 2**e_w when extreme (1e308, 1e-320): the sums below stay
        # finite, and the penalty's weight against the data term, 1 / (C sum(w)), is
        # formed with the exponent apart (limited where it would overflow).
        w, e_w = V.validate_sample_weight(self, sample_weight, n, normalize=False,
                                          return_scale=True)
        total = n if w is None else float(self._xp.sum(w))
        if w is not None:
            w = w * (n / total)  # mean 1: the weighted mean below is sum(w l) / sum(w)
        self.module_ = self._build_layers(X.shape[1], k)
        self._n_outputs = k
        self._remember_fit_params()
        params = self.module_.parameters()
        reg = self._penalty_weight(total, e_w)
        # A penalty past the float range (weights of 1e-320) pins W at 0, its limit; then
        # only the intercept is fitted.
        free = params if reg != math.inf else params[1:]

        def objective(*arrays):
            W = arrays[0] if len(arrays) == len(params) else params[0].data
            b = arrays[-1] if self.fit_intercept else None
            out = F.linear(X, W, b)
            if reg == math.inf:
                return self._data_loss(out, T, w)
            return self._data_loss(out, T, w) + F.sum(W * W) * reg

        vg = value_and_grad(objective, argnums=tuple(range(len(free))))

        def fun(xs):
            v, g = vg(*xs)
            return float(v), list(g)

        if free:
            xs, info = minimize_lbfgs(fun, [p.data for p in free], max_iter=self.max_iter,
                                      tol=self.tol, xp=self._xp)
        else:
            with no_grad():
                value = float(self._data_loss(F.linear(X, params[0].data), T, w).data)
            xs, info = [], {"n_iter": 0, "value": value, "converged": True}
        return self._store_lbfgs(free, xs, info)

    def _class_weighted(self, X, y, sample_weight):
        """``sample_weight`` times the weight of each sample's class (``class_weight``),
        as scikit-learn multiplies them before fitting; unchanged without class weights."""
        cw = self.class_weight
        if cw is None:
            return sample_weight
        if not (isinstance(cw, dict) or isinstance(cw, str) and cw == "balanced"):
            raise ValueError(f"xpdl: class_weight must be None, 'balanced' or a dict of "
                             f"label to weight, got {cw!r}")
        if any(_dask.is_dask(a) for a in (X, y, sample_weight)):
            raise ValueError("xpdl: class_weight is not supported with Dask arrays; pass "
                             "each sample's class weight (times its weight) as sample_weight")
        n = V.validate_X(self, X, reset=True).shape[0]
        idx = V.validate_y_classification(self, y, n, reset=True)
        xp = self._xp
        labels = _ns.to_host(self.classes_).tolist()
        if isinstance(cw, dict):
            unknown = [k for k in cw if k not in labels]
            if unknown:
                raise ValueError(f"xpdl: class_weight names labels {unknown} that are not "
                                 f"classes of y ({labels})")
            weights = [cw.get(c, 1.0) for c in labels]
            for c, v in zip(labels, weights):
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or \
                        not 0 <= float(v) < math.inf:
                    raise ValueError(f"xpdl: class_weight of {c!r} must be a finite "
                                     f"non-negative number, got {v!r}")
            weights = [float(v) for v in weights]
        w = V.validate_sample_weight(self, sample_weight, n, normalize=False, rescale=False)
        if not isinstance(cw, dict):  # "balanced": by the classes' (weighted) sizes
            k = len(labels)
            ws = xp.ones(idx.shape, dtype=self._dtype, device=self._device) if w is None \
                else w
            zero = _ns.lit(xp, 0.0, ws)
            sizes = [float(xp.sum(xp.where(idx == j, ws, zero))) for j in range(k)]
            total = sum(sizes)
            for c, size in zip(labels, sizes):
                if not size > 0:
                    raise ValueError(f"xpdl: class_weight='balanced' needs weight in every "
                                     f"class; the samples of class {c!r} weigh 0")
            weights = [total / (k * size) for size in sizes]
        table = xp.asarray(weights, dtype=self._dtype, device=self._device)
        per = xp.take(table, idx)
        return per if w is None else w * per

    def _store_lbfgs(self, params, xs, info):
        """The fitted state after L-BFGS (in memory or on Dask)."""
        for p, a in zip(params, xs):
            p.data = a
        self.n_iter_ = info["n_iter"]
        self.loss_curve_ = [info["value"]]
        if not info["converged"]:
            V.warn_convergence(self, self.max_iter)
        return self

    def _penalty_weight(self, total, e_w):
        """The weight of ||W||^2 against the weighted mean loss: 1 / (2 C sum(w)), with the
        weights' power-of-two exponent apart; ``inf`` past the float range."""
        limit = math.sqrt(float(self._xp.finfo(self._dtype).max))
        return V.scaled(0.5 / (float(self.C) * total), -e_w, limit)

    def decision_function(self, X):
        """Logits (raw scores before the sigmoid or softmax).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        array of shape (n_samples,) for two classes, (n_samples, n_classes) otherwise
        """
        if _dask.is_dask(X):
            return _dask.predict(self, "decision_function", X)
        z = self._forward(V.validate_X(self, X, reset=False))
        return z[:, 0] if self._n_outputs == 1 else z
