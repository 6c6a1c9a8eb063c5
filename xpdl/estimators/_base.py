"""What every estimator shares: parameters, placement, scoring and the training loop.

An estimator is a composition of xpdl's pieces, not a second implementation: a
:class:`~xpdl.nn.Sequential` module, a loss from :mod:`xpdl.losses`, an optimizer from
:mod:`xpdl.optim` and the loop below (seeded reshuffling, minibatches, L2, early stopping,
divergence detection, warm start, progress bar).
"""

from __future__ import annotations

import inspect
import math

from .. import _namespace as _ns
from .. import functional as F
from .. import losses as L
from ..autodiff import ops as _ops
from ..autodiff.program import compile_step
from ..autodiff.tensor import Tensor, no_grad
from ..exceptions import DivergenceError
from ..nn import Dropout, Linear, ReLU, Sequential, Sigmoid, Tanh
from ..optim import Optimizer, adagrad, adam, adamw, gd, rmsprop, sgd
from ..random import Generator
from . import _dask
from . import _validation as V

try:  # scikit-learn is optional: with it, estimators are full scikit-learn citizens.
    from sklearn.base import BaseEstimator as _SKBase
    from sklearn.base import ClassifierMixin as _SKClassifier
    from sklearn.base import RegressorMixin as _SKRegressor

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    HAVE_SKLEARN = False

    class _SKBase:
        """Minimal ``get_params``/``set_params`` when scikit-learn is not installed."""

        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values()
                          if p.name != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep=True):
            return {k: getattr(self, k) for k in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for k, v in params.items():
                if k not in valid:
                    raise ValueError(f"Invalid parameter {k!r} for {type(self).__name__}")
                setattr(self, k, v)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class _SKClassifier:
        _estimator_type = "classifier"

    class _SKRegressor:
        _estimator_type = "regressor"


_OPTIMIZERS = {"adam": adam, "sgd": sgd, "gd": gd, "adamw": adamw, "rmsprop": rmsprop,
               "adagrad": adagrad}
_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


class _available_if:
    """Method descriptor that exists only when ``check(instance)`` is true (so ``hasattr``
    tells whether e.g. ``partial_fit`` applies to the chosen solver)."""

    def __init__(self, check):
        self.check = check

    def __call__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__
        return self

    def __get__(self, obj, owner=None):
        if obj is None:
            return self.fn
        if not self.check(obj):
            raise AttributeError(f"{type(obj).__name__} has no partial_fit with solver "
                                 f"{obj._optimizer_name()!r}")
        return self.fn.__get__(obj, owner)


class BaseModel(_SKBase):
    """Placement, fitted-state checks and scoring shared by all estimators."""

    def __sklearn_is_fitted__(self):
        return "module_" in self.__dict__

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        if not getattr(self, "_is_classifier", True):
            tags.target_tags.multi_output = True
        return tags

    # Namespaces are modules and optimizers hold closures: neither pickles. Keep the
    # optimizer's state (arrays and ints) and rebuild both on load.
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_xp", None)
        state.pop("_step_cache", None)
        state.pop("_dp_cache", None)
        opt = state.pop("_optimizer", None)
        if opt is not None:
            state["_optimizer_state"] = opt.state_dict()
        return state

    def __setstate__(self, state):
        opt_state = state.pop("_optimizer_state", None)
        self.__dict__.update(state)
        if "module_" in state:
            self._xp = self.module_.parameters()[0].xp
            if opt_state is not None:
                self._optimizer = self._make_optimizer()
                self._optimizer.load_state_dict(opt_state)
        elif "_dtype" in state:  # validated but not fitted: namespace unknown, refit resets
            self.__dict__.pop("_dtype")

    # -- placement --------------------------------------------------------------------
    def to(self, *, xp=None, device=None):
        """Move a fitted estimator (parameters, optimizer state, array attributes) to
        namespace ``xp`` and/or ``device``.

        Parameters
        ----------
        xp : array namespace, optional
            The target namespace (the current one when None).
        device : optional
            A device of the target namespace (its default device when None).

        Returns
        -------
        self
            float64 parameters moved to a device without float64 become float32 (as in
            :func:`xpdl.load`).
        """
        V.check_is_fitted(self)
        # float64 onto a device without it becomes float32, as in xpdl.load
        xp = _ns.check_xp(xp)
        target_xp = self._xp if xp is None else xp
        f64 = _ns.dtype_name(self._xp, self._dtype) == "float64"
        dtype = "float32" if f64 and not _ns.supports_float64(target_xp, device) else None
        self.module_.to(xp=xp, device=device, dtype=dtype)
        new_xp = self.module_.parameters()[0].xp
        new_dev = self.module_.parameters()[0].device

        def move(v):
            floating = dtype is not None and _ns.array_namespace(v).isdtype(v.dtype,
                                                                            "real floating")
            return _ns.move(v, xp=new_xp, device=new_dev, dtype=dtype if floating else None)

        for k, v in list(vars(self).items()):
            numeric = _ns.is_array(v) and not (_ns.is_host_array(v) and v.dtype.kind not in
                                               "biuf")  # string labels stay on the host
            if k.endswith("_") and not k.startswith("_") and numeric and k != "module_":
                setattr(self, k, move(v))
        opt = self.__dict__.get("_optimizer")
        if opt is not None:
            opt._counters_to_host()
            opt.state = {k: (move(v) if _ns.is_array(v) else v) for k, v in opt.state.items()}
        self._xp, self._device = new_xp, new_dev
        self._dtype = self.module_.parameters()[0].dtype
        return self

    # Hyperparameters that shape ``module_``: a warm refit may not change them.
    _architecture = ()

    def _remember_fit_params(self):
        """Record the hyperparameters the fitted model is trained with: :func:`xpdl.save`
        writes these, not whatever ``set_params`` changed since."""
        self._fit_params = {k: tuple(v) if isinstance(v, list) else v
                            for k, v in self.get_params(deep=False).items()}

    def _changed_since_fit(self):
        """``{name: (fitted value, current value)}`` for hyperparameters set since the last
        fit."""
        old = self.__dict__.get("_fit_params")
        if old is None:
            return {}
        out = {}
        for k, v in self.get_params(deep=False).items():
            v = tuple(v) if isinstance(v, list) else v
            try:
                same = bool(old.get(k) == v)
            except Exception:  # e.g. arrays compared elementwise
                same = old.get(k) is v
            if not same:
                out[k] = (old.get(k), v)
        return out

    def _forward(self, X):
        """Raw outputs of ``module_`` for validated ``X`` (eval mode, no tape)."""
        self.module_.eval()
        with no_grad():
            out = self.module_(X)
        return out.data if isinstance(out, Tensor) else out


class ClassifierMixin(_SKClassifier):
    """Accuracy score and label mapping for classifiers."""

    def _labels_from_indices(self, idx):
        cls = self.classes_
        if _ns.is_host_array(cls) and cls.dtype.kind not in "biuf":
            if not _ns.has_values(idx):
                raise TypeError(
                    f"xpdl: {type(self).__name__}.predict() on a traced input (jax.jit) "
                    f"cannot return labels of dtype {cls.dtype}: they live on the host. "
                    f"Jit predict_proba or decision_function and look the argmax up in "
                    f"classes_ outside, or fit on numeric labels")
            return cls[_ns.to_host(idx)]  # string labels stay on the host
        return self._xp.take(cls, idx)

    @_available_if(lambda est: est._has_partial_fit())
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``(X, y)``, continuing from the current state (fits from scratch
        on the first call).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Of the namespace and device the model was fitted on (or moved to with
            :meth:`to`); a pandas DataFrame, or a Dask array (the result is then lazy).
        y : array of shape (n_samples,)
            Labels (any type; string labels stay on the host).
        classes : array of shape (n_classes,), optional
            Every label, in any order: needed on the first call when a batch may miss some;
            on later calls it must name the same classes.
        sample_weight : array of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _targets(self, y, n, reset, classes=None):
        idx = V.validate_y_classification(self, y, n, reset=reset, classes=classes)
        k = self.classes_.shape[0]
        return idx, (1 if k == 2 else k)

    def _per_sample_loss(self, out, T, reduction="none"):
        """Per-sample losses (or their mean with ``reduction="mean"``, one fused node)."""
        if out.shape[1] == 1:  # integer targets: the loss casts them to the logits' dtype
            return L.binary_cross_entropy_with_logits(out[:, 0], T, reduction=reduction)
        return L.cross_entropy(out, T, reduction=reduction)

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Of the namespace and device the model was fitted on (or moved to with
            :meth:`to`); a pandas DataFrame, or a Dask array (the result is then lazy).

        Returns
        -------
        array of shape (n_samples, n_classes)
            Rows sum to 1; columns in the order of ``classes_``.
        """
        if _dask.is_dask(X):
            return _dask.predict(self, "predict_proba", X)
        z = self._forward(V.validate_X(self, X, reset=False))
        if self._n_outputs == 1:
            p = F.sigmoid(z[:, 0])
            return self._xp.stack([1 - p, p], axis=1)
        return F.softmax(z, axis=1)

    def _predict_indices(self, X):
        return self._indices(self._forward(V.validate_X(self, X, reset=False)))

    def _indices(self, z):
        """Class indices from the network's outputs ``z`` (n_samples, n_outputs)."""
        xp = self._xp
        if self._n_outputs == 1:
            return xp.astype(z[:, 0] > 0, _ns.index_dtype(xp, self._device))
        return xp.argmax(z, axis=1)

    def _val_score(self, X, T):
        xp = self._xp
        return float(xp.mean(xp.astype(self._predict_indices(X) == T, self._dtype)))

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Of the namespace and device the model was fitted on (or moved to with
            :meth:`to`); a pandas DataFrame, or a Dask array (the result is then lazy).

        Returns
        -------
        array of shape (n_samples,)
            Of the training namespace for numeric labels given in it, a NumPy array for host
            labels (strings); a lazy Dask array for a Dask ``X``.
        """
        if _dask.is_dask(X):
            return _dask.predict(self, "predict", X)
        return self._labels_from_indices(self._predict_indices(X))

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Of the namespace and device the model was fitted on (or moved to with
            :meth:`to`); a pandas DataFrame, or a Dask array (the result is then lazy).

        Returns
        -------
        array of shape (n_samples, n_classes)
        """
        V.check_is_fitted(self)
        if _dask.is_dask(X):
            return _dask.predict(self, "predict_log_proba", X)
        return self._xp.log(self.predict_proba(X))

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of :meth:`predict` on ``(X, y)``; a label not seen in training
        counts as a miss, as in scikit-learn.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        y : array of shape (n_samples,)
        sample_weight : array of shape (n_samples,), optional
            Weights of the samples in the mean.

        Returns
        -------
        float
        """
        if _dask.is_dask(X):
            return _dask.score(self, X, y, sample_weight)
        X = V.validate_X(self, X, reset=False)
        yi = V.validate_y_classification(self, y, X.shape[0], reset=False,
                                         unseen_as_miss=True)
        xp = self._xp
        # X is checked once: checking the array again would see no feature names
        hit = xp.astype(self._indices(self._forward(X)) == yi, self._dtype)
        w = V.validate_sample_weight(self, sample_weight, X.shape[0])
        return float(xp.mean(hit if w is None else hit * w))


class RegressorMixin(_SKRegressor):
    """Targets, predictions and the R² score for regressors."""

    def _target_ndim(self, y):
        """The dimensions of ``y`` predictions take (fitted on ``y``)."""
        return y.ndim

    def _targets(self, y, n, reset, classes=None):
        y = V.validate_y_regression(self, y, n)
        ndim = self._target_ndim(y)  # (a column y warns at every call, as scikit-learn's)
        if reset:
            self._y_ndim = ndim
        T = y if y.ndim == 2 else self._xp.reshape(y, (-1, 1))
        return T, T.shape[1]

    def predict(self, X):
        """Predictions.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Of the namespace and device the model was fitted on (or moved to with
            :meth:`to`); a pandas DataFrame, or a Dask array (the result is then lazy).

        Returns
        -------
        array of shape (n_samples,) or (n_samples, n_targets)
            As ``y`` was: an MLP fitted on a ``y`` of shape (n_samples, 1) predicts
            (n_samples,), as scikit-learn's MLPRegressor.
        """
        if _dask.is_dask(X):
            return _dask.predict(self, "predict", X)
        out = self._forward(V.validate_X(self, X, reset=False))
        return self._xp.reshape(out, (-1,)) if self._y_ndim == 1 else out

    def _val_score(self, X, T):
        return r2(self._xp, T, self._forward(X))

    def score(self, X, y, sample_weight=None):
        r"""Coefficient of determination :math:`R^2 = 1 - \sum (y-\hat y)^2 / \sum (y -
        \bar y)^2` (averaged uniformly over outputs).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        y : array of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array of shape (n_samples,), optional
            Weights of the samples in both sums.

        Returns
        -------
        float
        """
        if _dask.is_dask(X):
            return _dask.score(self, X, y, sample_weight)
        X = V.validate_X(self, X, reset=False)
        y = V.validate_y_regression(self, y, X.shape[0])
        w = V.validate_sample_weight(self, sample_weight, X.shape[0])
        return r2(self._xp, y, self._forward(X), w)


def r2(xp, y, pred, w=None):
    if y.ndim == 1:
        y = xp.reshape(y, (-1, 1))
        pred = xp.reshape(pred, (-1, 1))
    ww = 1.0 if w is None else xp.reshape(w, (-1, 1))
    mean = xp.sum(ww * y, axis=0) / (y.shape[0] if w is None else xp.sum(w))
    ss_res = xp.sum(ww * (y - pred) ** 2, axis=0)
    ss_tot = xp.sum(ww * (y - mean) ** 2, axis=0)
    res = _ns.to_host(ss_res).astype(float)
    tot = _ns.to_host(ss_tot).astype(float)
    scores = [1.0 - r / t if t > 0 else (1.0 if r == 0 else 0.0) for r, t in zip(res, tot)]
    return float(sum(scores) / len(scores))


class _Quiet:
    """What the loop needs of a tqdm bar, for ``verbose=False`` (no bar object per call)."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def set_postfix(self, postfix):
        pass

    def close(self):
        pass


class InMemory:
    """Training data held in memory: one chunk, the whole set."""

    def __init__(self, X, T, w):
        self.X, self.T, self.w = X, T, w
        self.n = X.shape[0]

    def arrays(self):
        return self.X, self.T, self.w

    def head(self, m):
        """The first ``m`` samples (for the untrained model's loss)."""
        m = min(m, self.n)
        return (self.X[:m, ...], self.T[:m, ...], None if self.w is None else self.w[:m])

    def chunks(self, est):
        yield self.X, self.T, self.w


class _Rollback:
    """The training state to go back to when an epoch diverges.

    An epoch's loss is measured along the way from the parameters it starts with, so the
    state at the start of an epoch whose loss stayed within ``_good_factor`` times the
    reference (the untrained model's loss) is known to be sound. That is kept (the last such
    epoch's start, or this fit call's start); on divergence, parameters, optimizer state,
    step counters, random generator, early-stopping bookkeeping and ``loss_curve_`` go back
    to it.
    """

    _SCALARS = ("t_", "_steps", "_dp_steps", "best_loss_", "best_validation_score_", "_no_improve",
                "n_iter_")
    _good_factor = 10.0

    def __init__(self, est):
        self.est = est
        self.good = self.cur = None

    def _capture(self):
        est = self.est
        xp = est._xp
        return {
            "params": [xp.asarray(p.data, copy=True) for p in est.module_.parameters()],
            "optim": {k: (xp.asarray(v, copy=True) if _ns.is_array(v) else v)
                      for k, v in est._optimizer.state_dict().items()},
            "rng": est._rng.get_state(),
            **{k: est.__dict__.get(k) for k in self._SCALARS},
        }

    def epoch_start(self):
        self.cur = self._capture()
        if self.good is None:
            self.good = self.cur

    def epoch_end(self, loss):
        if loss <= self._good_factor * max(self.est._loss_ref, 1e-8):
            self.good = self.cur

    def restore(self):
        est, snap = self.est, self.good
        for p, a in zip(est.module_.parameters(), snap["params"]):
            p.data = a
            p.grad = None
        est._optimizer.load_state_dict(snap["optim"])
        est._rng.set_state(snap["rng"])
        for k in self._SCALARS:
            setattr(est, k, snap[k])
        del est.loss_curve_[est.n_iter_:]
        if est.validation_scores_ is not None:
            del est.validation_scores_[est.n_iter_:]


class NetworkEstimator(BaseModel):
    """The training loop shared by the MLPs and the iterative solvers of the linear models.

    Subclasses define ``_build_layers``, ``_targets`` and ``_data_loss`` and may override
    ``_val_score``; hyperparameters are read from the attributes named in ``__init__``.
    """

    _l2_denominator = "batch"  # scikit-learn's MLP divides the L2 term by the batch size

    # -- hooks ------------------------------------------------------------------------
    def _optimizer_name(self):
        return self.optimizer

    def _batch_size(self, n):
        bs = self.batch_size
        if bs is None or self._optimizer_name() == "gd":  # gradient descent: all samples
            return n
        if bs == "auto":
            return min(200, n)
        return min(int(bs), n)

    def _make_layers(self, sizes, activation, dropout, init_last="glorot"):
        act = _ACTIVATIONS[activation]
        init = "he" if activation == "relu" else "glorot"
        layers = []
        kw = dict(rng=self._rng, xp=self._xp, device=self._device, dtype=self._dtype)
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            layers.append(Linear(sizes[i], sizes[i + 1], init=init_last if last else init, **kw))
            if not last:
                layers.append(act())
                if dropout:
                    layers.append(Dropout(dropout, rng=self._rng))
        return Sequential(*layers)

    def _check_common_params(self):
        V.validate_params(self)
        if self._optimizer_name() not in _OPTIMIZERS:
            raise ValueError(f"xpdl: optimizer must be one of {sorted(_OPTIMIZERS)}, got "
                             f"{self._optimizer_name()!r}")

    def _dp_on(self):
        return getattr(self, "dp_noise_multiplier", None) is not None

    def _make_optimizer(self):
        name = self._optimizer_name()
        return Optimizer(self.module_, _OPTIMIZERS[name](float(self.learning_rate)))

    # -- fitting ----------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Fit on ``(X, y)``.

        With ``warm_start=True`` and a fitted model, training continues from the current
        parameters, optimizer state and random generator for ``max_iter`` more epochs.

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
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        self._check_common_params()
        if self._dp_on() and self._early_stopping_on(incremental):
            raise ValueError("xpdl: early_stopping cannot be used with DP-SGD: it picks the "
                             "epoch by a score on held-out samples of X computed without "
                             "noise, which epsilon_ does not cover; train a fixed max_iter")
        fresh = not self.__sklearn_is_fitted__() or not (self.warm_start or incremental)
        if _dask.is_dask(X):  # streamed chunk by chunk (see ._dask)
            self._weight_mean = 1.0  # Dask weights are used as given
            data, n_out = _dask.stream_source(self, X, y, sample_weight, reset=fresh,
                                              classes=classes)
        else:
            X = V.validate_X(self, X, reset=fresh)
            n = X.shape[0]
            T, n_out = self._targets(y, n, reset=fresh, classes=classes)
            # DP-SGD uses the weights as given (see xpdl.privacy: a rescaling by their total
            # would let one sample change every other sample's clipped contribution).
            dp = self._dp_on()
            if dp:
                w, self._weight_mean = V.validate_sample_weight(
                    self, sample_weight, n, normalize=False, rescale=False), 1.0
            else:
                w, self._weight_mean = V.validate_sample_weight(self, sample_weight, n,
                                                                return_mean=True)
            data = InMemory(X, T, w)
        if fresh:
            self._rng = Generator(self.random_state)
            self.module_ = self._build_layers(self.n_features_in_, n_out)
            self._n_outputs = n_out
            for k in self._TRAINING_STATE:
                self.__dict__.pop(k, None)
        else:
            if n_out != self._n_outputs:
                raise ValueError(f"xpdl: y has {n_out} outputs/classes but the fitted model "
                                 f"has {self._n_outputs}; refit without warm_start")
            self._continue_with_changed_params()
        self._training_state(self._early_stopping_on(incremental))
        self._remember_fit_params()
        val = None
        if self._early_stopping_on(incremental):
            if isinstance(data, InMemory):
                X, T, w, Xv, Tv = self._split(*data.arrays())
                data = InMemory(X, T, w)

                def val():
                    return self._val_score(Xv, Tv)
            else:
                data, val = data.split(self.validation_fraction, self.random_state)
        epochs = 1 if incremental else self.max_iter
        with _ns.quiet_fp(self._xp):
            self._train(data, epochs, val, incremental)
        return self

    # What training keeps between calls besides the parameters (made by _training_state).
    _TRAINING_STATE = ("_optimizer", "loss_curve_", "n_iter_", "t_", "_steps", "_dp_steps",
                       "_dp_history", "epsilon_", "_loss_ref",
                       "_no_improve", "validation_scores_", "best_loss_",
                       "best_validation_score_", "_best_params")

    def _training_state(self, early_stopping):
        """Complete the training state for a fit in this mode, whatever came before: a
        fresh fit, a closed-form fit continued by an iterative solver, a loaded file, or a
        switch of ``early_stopping`` between warm fits (the bookkeeping of the new mode
        starts afresh; the parameters and the optimizer's state carry on)."""
        d = self.__dict__
        if "_optimizer" not in d:
            self._optimizer = self._make_optimizer()
        if "_rng" not in d:
            self._rng = Generator(self.random_state)
        for k, v in (("loss_curve_", []), ("n_iter_", 0), ("t_", 0), ("_steps", 0),
                     ("_dp_steps", 0),
                     ("_loss_ref", None), ("_no_improve", 0), ("_best_params", None),
                     ("best_validation_score_", -math.inf)):
            if d.get(k) is None:
                d[k] = v
        if early_stopping:
            if d.get("validation_scores_") is None:  # switched on: a new validation record
                self.validation_scores_ = []
                self.best_validation_score_ = -math.inf
                self._no_improve = 0
                self._best_params = None
            self.best_loss_ = None
        else:
            if d.get("best_loss_") is None:  # switched off (or partial_fit after it)
                self.best_loss_ = min(self.loss_curve_, default=math.inf)
                self._no_improve = 0
            d.setdefault("validation_scores_", None)

    def _continue_with_changed_params(self):
        """Before a warm or incremental fit: refuse a changed architecture, and give a
        changed optimizer or learning rate a new optimizer (keeping its state when only the
        learning rate changed)."""
        changed = self._changed_since_fit()
        for k in self._architecture:
            if k in changed:
                old, new = changed[k]
                raise ValueError(f"xpdl: {k} changed from {old!r} to {new!r} since the model "
                                 f"was fitted; a warm start keeps the fitted network, so refit "
                                 f"from scratch (warm_start=False) to change it")
        if changed.get("dtype", (None, None))[1] is not None:  # None: keep the model's
            old, new = changed["dtype"]
            try:
                same = _ns.dtype_name(self._xp, new) == _ns.dtype_name(self._xp, self._dtype)
            except TypeError:
                same = False
            if not same:
                raise ValueError(f"xpdl: dtype changed from {old!r} to {new!r} since the model "
                                 f"was fitted (its parameters are "
                                 f"{_ns.dtype_name(self._xp, self._dtype)}); a warm start "
                                 f"keeps the fitted network, so refit from scratch "
                                 f"(warm_start=False) to change it")
        old = self.__dict__.get("_optimizer")
        if old is not None and ("learning_rate" in changed or
                                {"optimizer", "solver"} & set(changed)):
            self._optimizer = self._make_optimizer()
            if not {"optimizer", "solver"} & set(changed):
                # (the moments and counts; the settings are the new hyperparameters')
                self._optimizer.load_state_dict({
                    k: v for k, v in old.state_dict().items()
                    if not k.startswith("param_groups/")})

    def _early_stopping_on(self, incremental):
        return bool(getattr(self, "early_stopping", False)) and not incremental

    def _split(self, X, T, w):
        """Hold out ``validation_fraction`` (stratified for classifiers), drawn from a
        generator seeded by ``random_state`` so that warm restarts see the same split."""
        xp, dev = self._xp, self._device
        n = X.shape[0]
        frac = self.validation_fraction
        if not 0.0 < frac < 1.0:
            raise ValueError(f"xpdl: validation_fraction must be in (0, 1), got {frac}")
        g = Generator(self.random_state)
        labels = _ns.to_host(T) if self._is_classifier else None
        train, val = g.split_indices(n, frac, labels)
        if train.shape[0] == 0:
            raise ValueError("xpdl: too few samples for early_stopping's validation split")
        train_idx = _ns.from_host(train, xp, device=dev, dtype=_ns.index_dtype(xp, dev))
        val_idx = _ns.from_host(val, xp, device=dev, dtype=_ns.index_dtype(xp, dev))

        def take(a, idx):
            return None if a is None else xp.take(a, idx, axis=0)

        return (take(X, train_idx), take(T, train_idx), take(w, train_idx),
                take(X, val_idx), take(T, val_idx))

    def _l2_loss(self, nb):
        r"""The L2 term :math:`\tfrac{\alpha}{2 n_b}\sum\|W\|^2` over the weights (not the
        biases), as a Tensor on the tape (its gradient is :math:`\alpha W / n_b`); ``nb`` a
        number or a 0-d Tensor (a batch's total weight)."""
        total = None
        for k, W in self.module_.named_parameters():
            if k.endswith("weight"):
                s = _ops.sqnorm(W)
                total = s if total is None else total + s
        if isinstance(nb, Tensor):
            return total * (0.5 * float(self.alpha)) / nb
        return total * (0.5 * float(self.alpha) / nb)

    def _train(self, data, epochs, val, incremental):
        """Train ``epochs`` epochs over ``data`` (an :class:`InMemory` set, or chunks streamed
        from a Dask array by :mod:`._dask`); ``val`` is None or a function returning the
        validation score. Epoch bookkeeping: loss curve, divergence, early stopping."""
        from tqdm.auto import tqdm

        xp = self._xp
        n = data.n
        bs = self._batch_size(n)
        module = self.module_
        params = module.parameters()
        module.train()
        verbose = getattr(self, "verbose", False)
        bar = tqdm(range(epochs), desc=type(self).__name__, unit="epoch", leave=False) \
            if verbose else _Quiet(epochs)
        converged = False
        dp = self._dp_on()
        steps_before = self._steps
        if self.__dict__.get("_loss_ref") is None:
            self._loss_ref = self._initial_loss(*data.head(4096))
        rollback = _Rollback(self)
        for _ in bar:
            rollback.epoch_start()
            if dp:
                epoch_loss = self._dp_epoch(*data.arrays(), bs)
            else:
                if bs >= n and not isinstance(data, InMemory):
                    acc = self._accumulated_step(data, n)
                else:
                    step = self._compiled_step(n)
                    acc = 0.0
                    for X, T, w in data.chunks(self):
                        acc = acc + self._minibatches(X, T, w, bs, step)
                epoch_loss = float(acc) / n
            if self._diverged(epoch_loss):
                epoch = self.n_iter_ + 1
                # rolled back, but the noisy steps were taken
                taken = self._steps - steps_before
                rollback.restore()
                self._account_privacy(dp, min(bs / n, 1.0), taken, steps_before)
                raise DivergenceError(epoch, epoch_loss, self.learning_rate,
                                      untrained_loss=self._loss_ref)
            rollback.epoch_end(epoch_loss)
            self.n_iter_ += 1
            self.loss_curve_.append(epoch_loss)
            postfix = {"loss": f"{epoch_loss:.4g}"}
            if val is not None:
                score = val()
                self.validation_scores_.append(score)
                postfix["val"] = f"{score:.4f}"
                module.train()
                if score > self.best_validation_score_:
                    self._best_params = [xp.asarray(p.data, copy=True) for p in params]
                if score < self.best_validation_score_ + self.tol:
                    self._no_improve += 1
                else:
                    self._no_improve = 0
                self.best_validation_score_ = max(self.best_validation_score_, score)
                self.best_loss_ = None
            else:
                if epoch_loss > self.best_loss_ - self.tol:
                    self._no_improve += 1
                else:
                    self._no_improve = 0
                self.best_loss_ = min(self.best_loss_, epoch_loss)
            bar.set_postfix(postfix)
            # DP-SGD runs its fixed number of epochs: stopping on the losses (computed
            # without noise) would make the number of noisy steps depend on the data
            if not incremental and not dp and self._no_improve > self._patience():
                converged = True
                break
        bar.close()
        if val is not None and getattr(self, "_best_params", None) is not None:
            for p, b in zip(params, self._best_params):
                # a copy: later steps update parameters in place, and must not change the
                # best weights a warm fit may come back to
                p.data = xp.asarray(b, copy=True)
        module.eval()
        self._account_privacy(dp, min(bs / n, 1.0), self._steps - steps_before,
                              steps_before)
        if not incremental and not converged and not dp and self._warn_on_max_iter:
            V.warn_convergence(self, self.max_iter)

    def _account_privacy(self, dp, q, steps, steps_before):
        """Add this call's ``steps`` (taken from step ``steps_before`` on) to the privacy
        history and set ``epsilon_`` from all of it (:func:`xpdl.privacy.epsilon_of`):
        noisy steps as ``(sigma, q, steps)``; steps without DP on a model that has had DP
        steps, or DP steps on a model trained without DP before, as noiseless ones
        (``epsilon_`` infinite). Models never trained with DP keep no history and no
        ``epsilon_``."""
        from ..privacy import epsilon_of

        hist = self.__dict__.get("_dp_history") or []
        if dp and not hist and steps_before > 0:  # seen without noise before
            hist.append([0.0, 1.0, steps_before])
        if dp or hist:
            sigma = float(self.dp_noise_multiplier) if dp else 0.0
            q = q if dp else 1.0
            if hist and hist[-1][:2] == [sigma, q]:
                hist[-1][2] += steps
            elif steps:
                hist.append([sigma, q, steps])
            self._dp_history = hist
            self.epsilon_ = epsilon_of(hist, float(self.dp_delta))

    def _accumulated_step(self, data, n):
        """One full-batch step over chunked data: the chunks' gradients are summed (the
        tape accumulates them), then one update, as on the whole array at once. Returns the
        summed loss times n, like :meth:`_minibatches`."""
        opt = self._optimizer
        opt.zero_grad()
        acc = 0.0
        for X, T, w in data.chunks(self):
            per = self._per_sample_loss(self.module_(X), T)
            loss = F.sum(per if w is None else per * Tensor(w)) * (1.0 / n)
            loss.backward()
            acc = acc + loss.data * n
        if self.alpha:
            l2 = self._l2_loss(n)
            l2.backward()  # adds alpha W / n to the summed gradients
            acc = acc + l2.data * n
        opt.step()
        self._steps += 1
        self.t_ += n
        return acc

    def _minibatches(self, X, T, w, bs, step):
        """One pass over in-memory ``(X, T, w)`` in minibatches of ``bs`` (rows in an order
        drawn from the seeded generator when there is more than one batch), each trained by
        ``step`` (from :meth:`_compiled_step`); returns the sum of batch loss times batch
        size (a Python float).

        The batches' losses stay on the device until the pass ends and come to the host
        in one copy: on CuPy, JAX and torch on CUDA each arithmetic call on a 0-d array is
        a launch or dispatch (two per batch were 1 ms of a 4.7 ms CuPy epoch at
        64-128-128-10). They are summed in Python floats, IEEE float64: the float64
        totals are the device's own, float32 ones now carry no float32 rounding."""
        from ..datasets import _batches

        n = X.shape[0]
        losses, sizes = [], []
        for Xb, Tb, wb in _batches((X, T, w), self._xp, self._device, n, bs,
                                   self._rng if bs < n else None, False):
            losses.append(step(Xb, Tb, wb))
            sizes.append(Xb.shape[0])
            self._steps += 1
            self.t_ += Xb.shape[0]
        acc = 0.0
        for value, size in zip(_ns.to_host(self._xp.stack(losses)).tolist(), sizes):
            acc = acc + value * size
        return acc

    # Set False (on an instance) to run every step eagerly on the tape instead of replaying
    # the recorded program: the tests and ``xpdl bench`` compare the two.
    _compiled_training = True

    def _compiled_step(self, n_total):
        """The training step (data loss + L2, backward, update) as a
        :func:`xpdl.compile_step` program, kept while the module, optimizer and the
        constants it was recorded with stay the same. ``n_total`` is the epoch's sample
        count (the L2 term's denominator when ``_l2_denominator`` is ``"n"``)."""
        alpha = float(self.alpha)
        per_batch = self._l2_denominator == "batch"
        # the given weights' mean: a batch's total given weight is sum(w_batch) times it
        wmean = float(self.__dict__.get("_weight_mean", 1.0))
        consts = (alpha, None if per_batch else n_total, wmean)
        cached = self.__dict__.get("_step_cache")
        if cached is not None and cached[0] is self.module_ and cached[1] is self._optimizer \
                and cached[2] == consts:
            step = cached[3]
        else:
            def loss_fn(out, T, w=None):
                loss = self._data_loss(out, T, w)
                if alpha:
                    if not per_batch:
                        # the weights came scaled to mean 1: the penalty against the given
                        # weights' total is alpha / (2 n mean) (scikit-learn's objectives
                        # depend on the weights' scale; it was alpha / (2 n))
                        denom = n_total * wmean if wmean > 0 else n_total
                    elif w is None or wmean != wmean:
                        denom = out.shape[0] * wmean
                    else:  # scikit-learn's: the batch's total given weight
                        denom = F.sum(w) * wmean
                    loss = loss + self._l2_loss(denom)
                return loss

            step = compile_step(self.module_, loss_fn, self._optimizer)
            self._step_cache = (self.module_, self._optimizer, consts, step)
        if not self._compiled_training:
            params = [p for _, p in self._optimizer._params]
            return lambda X, T, w: step._eager_step((X, T, w), params)
        return step

    _warn_on_max_iter = True

    # A loss this many times the untrained model's counts as divergence even while finite
    # (Adam at learning_rate=1e3 sits at 1e6-1e9 times it instead of overflowing).
    _divergence_factor = 1e3

    def _initial_loss(self, X, T, w):
        """The untrained model's data loss on (the first 4,096 of) the training samples:
        the scale divergence is judged against (eval mode, so no random draws are used)."""
        self.module_.eval()
        with no_grad():
            value = float(self._data_loss(self.module_(X), T, w).data)
        self.module_.train()
        return value if math.isfinite(value) else math.inf

    def _diverged(self, loss):
        if not math.isfinite(loss):
            return True
        ref = max(self._loss_ref, 1e-8)
        return loss > self._divergence_factor * ref

    def _dp_step(self):
        """The DP-SGD clipped-gradient step for the current module, a
        :class:`xpdl.privacy.ClippedStep` (recorded once per padded batch size, replayed)."""
        from ..privacy import ClippedStep

        cached = self.__dict__.get("_dp_cache")
        if cached is None or cached[0] is not self.module_:
            step = ClippedStep(self.module_, lambda out, T: self._per_sample_loss(out, T))
            self._dp_cache = cached = (self.module_, step)
        return cached[1]

    def _dp_epoch(self, X, T, w, bs):
        """One DP-SGD epoch: ceil(n/B) steps, each on a Poisson sample of rate B/n, with
        per-sample clipping and Gaussian noise (see :mod:`xpdl.privacy`). Returns the
        (weighted) mean loss of the samples seen over the epoch (for ``loss_curve_``)."""
        xp, dev = self._xp, self._device
        n = X.shape[0]
        module, opt = self.module_, self._optimizer
        named = module.named_parameters()
        C, sigma = float(self.dp_max_grad_norm), float(self.dp_noise_multiplier)
        # The reported loss is the weighted mean over the samples seen, with the weights
        # divided by their largest first (so that weights of 1e308 cannot overflow it).
        w_top = 1.0 if w is None else float(xp.max(w))
        total = n if w is None else float(xp.sum(w / w_top))
        clipped = self._dp_step()
        # Poisson batches vary in size; each is padded with zero-weight rows (which clip
        # to nothing) up to a multiple of q, so that a handful of recorded programs serve.
        q = max(8, -(-bs // 8))
        acc = 0.0
        for _ in range(-(-n // bs)):
            idx = self._rng.poisson_indices(n, bs / n, xp=xp, device=dev)
            nb = idx.shape[0]
            opt.zero_grad()
            if nb:
                Xb, Tb = xp.take(X, idx, axis=0), xp.take(T, idx, axis=0)
                wb = xp.ones(nb, dtype=X.dtype, device=dev) if w is None else \
                    xp.take(w, idx, axis=0)
                pad = -(-nb // q) * q - nb
                if pad:
                    Xb = xp.concat([Xb, xp.zeros((pad,) + tuple(X.shape[1:]), dtype=X.dtype,
                                                 device=dev)])
                    Tb = xp.concat([Tb, xp.zeros((pad,) + tuple(T.shape[1:]), dtype=T.dtype,
                                                 device=dev)])
                    wb = xp.concat([wb, xp.zeros(pad, dtype=wb.dtype, device=dev)])
                sums, _, per = clipped(Xb, Tb, C, weights=wb)
                per = per[:nb]
                acc = acc + xp.sum(per if w is None else per * (wb[:nb] / w_top))
            for name, p in named:
                g = sums[name] if nb else xp.zeros(p.shape, dtype=p.dtype, device=dev)
                if sigma:
                    g = g + self._rng.normal(p.shape, scale=sigma * C, xp=xp, device=dev,
                                             dtype=p.dtype)
                p.grad = g / bs  # normalised by the expected batch size
            if self.alpha:
                self._l2_loss(bs).backward()  # adds alpha W / B to the noisy gradients
            opt.step()
            self._steps += 1
            self.t_ += nb
            self._dp_steps += 1
        return float(acc) / total

    def _patience(self):
        return self.n_iter_no_change

    def _has_partial_fit(self):
        return self._optimizer_name() in _OPTIMIZERS

    @_available_if(_has_partial_fit)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``, continuing from the current state (fits from scratch
        on the first call).

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
        return self._fit(X, y, sample_weight, incremental=True)

    def _data_loss(self, out, T, w):
        if w is None:
            return self._per_sample_loss(out, T, reduction="mean")
        return self._weighted_mean(self._per_sample_loss(out, T), w)

    def _weighted_mean(self, per_sample, w):
        if w is None:
            return F.mean(per_sample)
        return F.mean(per_sample * Tensor(w))
