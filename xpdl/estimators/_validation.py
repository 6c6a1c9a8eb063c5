"""Input validation at the estimators' public entry points.

Every check names the problem (NaN, shape, feature count, namespace, device, one class)
in a ``ValueError`` or ``TypeError``; nothing here writes to the caller's arrays.
"""

from __future__ import annotations

import warnings

from .. import _namespace as _ns
from ..exceptions import NotFittedError


def check_is_fitted(est):
    if "module_" not in est.__dict__:
        raise NotFittedError(f"This {type(est).__name__} instance is not fitted yet. Call "
                             f"'fit' with appropriate arguments before using this estimator.")


def _check_finite(xp, a, name):
    # One pass on the common (finite) path; the second only to say which problem it is.
    if xp.isdtype(a.dtype, "real floating") and not bool(xp.all(xp.isfinite(a))):
        if bool(xp.any(xp.isnan(a))):
            raise ValueError(f"xpdl: Input {name} contains NaN.")
        raise ValueError(f"xpdl: Input {name} contains infinity.")


def validate_X(est, X, *, reset):
    """Checked ``X`` as an array of the estimator's namespace, device and float dtype.

    With ``reset`` (fit) the namespace, device, dtype and ``n_features_in_`` are taken from
    ``X``; otherwise ``X`` must agree with what the estimator was fitted on.
    """
    if not reset:
        check_is_fitted(est)
    X = _ns.as_input_array(X, "X")
    xp, dev = _ns.get_namespace_and_device(X)
    if X.ndim != 2:
        raise ValueError(f"xpdl: Expected 2D array, got {X.ndim}D array instead (shape "
                         f"{tuple(X.shape)}). Reshape your data: X.reshape(-1, 1) for a single "
                         f"feature or X.reshape(1, -1) for a single sample.")
    n, p = X.shape
    if n == 0:
        raise ValueError(f"xpdl: Found array with 0 sample(s) (shape={tuple(X.shape)}) while a "
                         f"minimum of 1 is required.")
    if p == 0:
        raise ValueError(f"xpdl: Found array with 0 feature(s) (shape={tuple(X.shape)}) while "
                         f"a minimum of 1 is required.")
    if xp.isdtype(X.dtype, "complex floating"):
        raise ValueError("xpdl: Complex data not supported.")
    if not (xp.isdtype(X.dtype, "numeric") or xp.isdtype(X.dtype, "bool")):
        raise TypeError(f"xpdl: X must be numeric, got dtype {X.dtype}")
    if reset:
        est._xp = xp
        est._device = dev
        est._dtype = _ns.resolve_float_dtype(X, xp, dev, est.dtype)
        est.n_features_in_ = int(p)
    else:
        if xp is not est._xp:
            raise TypeError(
                f"xpdl: {type(est).__name__} was fitted on {_ns.backend_name(est._xp)} arrays "
                f"but got {_ns.backend_name(xp)}; convert X or move the model with "
                f".to(xp=...)")
        if not _ns.same_device(dev, est._device):
            raise ValueError(f"xpdl: {type(est).__name__} lives on device {est._device!r} but X "
                             f"is on {dev!r}; move X or the model (.to(device=...))")
        if p != est.n_features_in_:
            raise ValueError(f"X has {p} features, but {type(est).__name__} is expecting "
                             f"{est.n_features_in_} features as input.")
    if X.dtype != est._dtype:
        X = xp.astype(X, est._dtype)
    _check_finite(xp, X, "X")
    return X


def _follow_X(est, a, name):
    """``a`` (y or sample_weight) moved to the namespace and device of the training data."""
    a = _ns.as_input_array(a, name)
    src = _ns.array_namespace(a)
    if src is not est._xp or not _ns.same_device(_ns.device_of(a), est._device):
        # Floats take the model's dtype on the way (the target device may lack float64).
        dtype = est._dtype if src.isdtype(a.dtype, "real floating") else None
        a = _ns.move(a, xp=est._xp, device=est._device, dtype=dtype)
    return a


def _check_length(a, n, name):
    if a.shape[0] != n:
        raise ValueError(f"xpdl: X has {n} samples but {name} has {a.shape[0]}; they must "
                         f"match")


def validate_y_regression(est, y, n):
    """Float targets of shape (n,) or (n, k) in the estimator's namespace/device/dtype."""
    if y is None:
        raise ValueError(f"xpdl: {type(est).__name__} requires y to be passed, but the target "
                         f"y is None")
    y = _follow_X(est, y, "y")
    xp = est._xp
    if y.ndim not in (1, 2):
        raise ValueError(f"xpdl: y must be 1-D or 2-D, got shape {tuple(y.shape)}")
    _check_length(y, n, "y")
    if not (xp.isdtype(y.dtype, "numeric") or xp.isdtype(y.dtype, "bool")) or \
            xp.isdtype(y.dtype, "complex floating"):
        raise ValueError(f"xpdl: y must be real numbers, got dtype {y.dtype}")
    if y.dtype != est._dtype:
        y = xp.astype(y, est._dtype)
    _check_finite(xp, y, "y")
    return y


def validate_y_classification(est, y, n, *, reset, classes=None):
    """Encoded class indices (int64, on the estimator's device).

    With ``reset``, ``classes_`` is set: an array of the training namespace for numeric
    labels given in that namespace, else a NumPy array (strings and other host labels).
    """
    if y is None:
        raise ValueError(f"xpdl: {type(est).__name__} requires y to be passed, but the target "
                         f"y is None")
    xp = est._xp
    hxp = _ns.host_xp()
    on_device = _ns.is_array(y) and not _ns.is_host_array(y) and \
        _ns.array_namespace(y) is xp and (xp.isdtype(y.dtype, "numeric") or
                                          xp.isdtype(y.dtype, "bool"))
    if on_device:
        if not _ns.same_device(_ns.device_of(y), est._device):
            y = _ns.move(y, device=est._device)
        host = None
    else:
        host = _ns.host_asarray(y)
        if host.dtype.kind == "O":
            kinds = {type(v) for v in host.ravel()}
            if len(kinds) > 1:
                raise ValueError(f"xpdl: y mixes label types {sorted(k.__name__ for k in kinds)}")
        y = host
    if y.ndim == 2 and y.shape[1] == 1:
        from warnings import warn

        try:
            from sklearn.exceptions import DataConversionWarning as _W
        except ImportError:  # pragma: no cover
            _W = UserWarning
        warn("A column-vector y was passed when a 1d array was expected. Please change the "
             "shape of y to (n_samples, ), for example using ravel().", _W, stacklevel=3)
        y = xp.reshape(y, (-1,)) if host is None else y.ravel()
    if y.ndim != 1:
        raise ValueError(f"xpdl: y must be 1-D class labels, got shape {tuple(y.shape)} "
                         f"(multi-label targets are not supported)")
    _check_length(y, n, "y")
    if host is None:
        if xp.isdtype(y.dtype, "real floating"):
            _check_finite(xp, y, "y")
            if not bool(xp.all(y == xp.round(y))):
                raise ValueError("xpdl: Unknown label type: continuous. A classifier needs "
                                 "discrete classes, not a regression target with continuous "
                                 "values.")
        uniq = xp.unique_values(y) if classes is None else classes
    else:
        if y.dtype.kind == "f":
            if bool(hxp.any(hxp.isnan(y))):
                raise ValueError("xpdl: Input y contains NaN.")
            if not bool(hxp.all(y == hxp.round(y))):
                raise ValueError("xpdl: Unknown label type: continuous. A classifier needs "
                                 "discrete classes, not a regression target with continuous "
                                 "values.")
        uniq = hxp.unique_values(y) if classes is None else _ns.host_asarray(classes)
        if uniq.dtype.kind in "biuf":  # numeric labels live in the model's namespace
            uniq = _ns.from_host(uniq, xp, device=est._device)
    if reset:
        if classes is None and uniq.shape[0] < 2:
            c = _ns.host_asarray(uniq)[0]
            raise ValueError(f"xpdl: y has only one class ({c!r}); a classifier needs "
                             f"samples of at least two classes")
        est.classes_ = uniq
    cls = est.classes_
    if host is None:
        if _ns.is_array(cls) and not _ns.is_host_array(cls):
            cls_d = cls
        else:
            cls_d = _ns.from_host(cls, xp, device=est._device)
        idx = xp.searchsorted(cls_d, xp.astype(y, cls_d.dtype))
        idx = xp.clip(idx, 0, cls_d.shape[0] - 1)
        if not bool(xp.all(xp.take(cls_d, idx) == xp.astype(y, cls_d.dtype))):
            raise ValueError("xpdl: y contains labels that are not in classes_")
        return xp.astype(idx, xp.int64)
    cls_h = _ns.host_asarray(cls)
    if cls_h.dtype.kind in "biuf" and y.dtype.kind not in "biuf":
        raise ValueError(f"xpdl: y has labels of dtype {y.dtype} but classes_ are numeric")
    idx = hxp.clip(hxp.searchsorted(cls_h, y), 0, cls_h.shape[0] - 1)
    if not bool(hxp.all(cls_h[idx] == y)):
        bad = sorted(set(y[cls_h[idx] != y].tolist()))[:5]
        raise ValueError(f"xpdl: y contains labels {bad} that are not in classes_")
    return _ns.from_host(idx, xp, device=est._device, dtype=xp.int64)


def validate_sample_weight(est, sample_weight, n, normalize=True):
    """Weights of shape (n,), finite and non-negative, rescaled to mean 1 (so that all-ones
    weights change nothing) when ``normalize``; ``None`` stays ``None``."""
    if sample_weight is None:
        return None
    xp = est._xp
    if isinstance(sample_weight, (int, float)):
        return None if sample_weight > 0 else _bad_weights()
    w = _follow_X(est, sample_weight, "sample_weight")
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"xpdl: sample_weight must have shape ({n},), got {tuple(w.shape)}")
    w = xp.astype(w, est._dtype)
    _check_finite(xp, w, "sample_weight")
    if bool(xp.any(w < 0)):
        raise ValueError("xpdl: sample_weight has negative values")
    total = float(xp.sum(w))
    if total <= 0:
        _bad_weights()
    return w * (n / total) if normalize else w


def _bad_weights():
    raise ValueError("xpdl: sample_weight sums to zero; at least one sample needs weight")


def warn_convergence(est, n_iter):
    try:
        from sklearn.exceptions import ConvergenceWarning as _W
    except ImportError:  # pragma: no cover
        _W = UserWarning
    warnings.warn(f"xpdl: {type(est).__name__} reached max_iter={n_iter} before converging; "
                  f"consider more iterations or a higher learning rate", _W, stacklevel=3)
