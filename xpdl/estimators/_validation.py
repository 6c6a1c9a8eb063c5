"""Input validation at the estimators' public entry points.

Every check names the problem (NaN, shape, feature count, namespace, device, one class)
in a ``ValueError`` or ``TypeError``; nothing here writes to the caller's arrays.
"""

from __future__ import annotations

import math
import numbers

from .. import _namespace as _ns
from ..exceptions import NotFittedError, _warn


def check_is_fitted(est):
    if "module_" not in est.__dict__:
        raise NotFittedError(f"This {type(est).__name__} instance is not fitted yet. Call "
                             f"'fit' with appropriate arguments before using this estimator.")


class NamespaceMismatchError(TypeError, ValueError):
    """Arrays of another namespace than the fitted model's: a ``TypeError`` (the kind of
    input is wrong) and a ``ValueError`` (what scikit-learn's array API checks expect)."""


_PUBLIC_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function",
                   "score", "transform", "partial_fit", "fit")


def _calling_method(est):
    """The public method of ``est`` the current check runs under (for error messages)."""
    import sys

    f = sys._getframe(2)
    found = "predict"
    while f is not None:
        if f.f_code.co_name in _PUBLIC_METHODS and f.f_locals.get("self") is est:
            found = f.f_code.co_name
        f = f.f_back
    return found


def _feature_names(X):
    """Column names of a DataFrame as a NumPy object array when they are all strings; None
    for arrays and for frames with default (integer) column names."""
    cols = getattr(X, "columns", None)
    if cols is None or _ns.is_array(X):
        return None
    cols = list(cols)
    kinds = {type(c).__name__ for c in cols}
    strings = [isinstance(c, str) for c in cols]
    if all(strings) and cols:
        return _ns.host_object_array(cols)
    if any(strings):
        raise TypeError(f"xpdl: feature names are only supported if all input features have "
                        f"string names, but your input has {sorted(kinds)} as feature name / "
                        f"column name types; convert them all to str")
    return None


def _check_feature_names(est, names, reset):
    """scikit-learn's contract for ``feature_names_in_``: set at fit from a DataFrame's
    string column names; at predict, the same names in the same order (else ValueError),
    with a warning when only one side has names."""
    name = type(est).__name__
    if reset:
        if names is not None:
            est.feature_names_in_ = names
        else:
            est.__dict__.pop("feature_names_in_", None)
        return
    fitted = est.__dict__.get("feature_names_in_")
    if fitted is None and names is None:
        return
    if fitted is None:
        _warn(f"X has feature names, but {name} was fitted without feature names",
              UserWarning)
        return
    if names is None:
        _warn(f"X does not have valid feature names, but {name} was fitted with "
              f"feature names", UserWarning)
        return
    if len(names) == len(fitted) and all(a == b for a, b in zip(names, fitted)):
        return
    msg = "The feature names should match those that were passed during fit.\n"
    unseen = [n for n in names if n not in set(fitted)]
    missing = [n for n in fitted if n not in set(names)]
    if not unseen and not missing:
        msg += "Feature names must be in the same order as they were in fit.\n"
    if unseen:
        msg += "Feature names unseen at fit time:\n" + "".join(f"- {n}\n" for n in unseen)
    if missing:
        msg += ("Feature names seen at fit time, yet now missing:\n" +
                "".join(f"- {n}\n" for n in missing))
    raise ValueError(msg)


def _check_finite(xp, a, name):
    # One pass on the common (finite) path; the second only to say which problem it is.
    # Traced and lazy arrays (jax.jit, ndonnx graph inputs) have no values to check.
    if not _ns.has_values(a):
        return
    if xp.isdtype(a.dtype, "real floating") and not bool(xp.all(xp.isfinite(a))):
        if bool(xp.any(xp.isnan(a))):
            raise ValueError(f"xpdl: Input {name} contains NaN.")
        raise ValueError(f"xpdl: Input {name} contains infinity.")


def check_X_dtype(xp, dtype):
    """scikit-learn's errors for complex and non-numeric ``X``."""
    if xp.isdtype(dtype, "complex floating"):
        raise ValueError("xpdl: Complex data not supported.")
    if not (xp.isdtype(dtype, "numeric") or xp.isdtype(dtype, "bool")):
        raise TypeError(f"xpdl: X must be numeric, got dtype {dtype}")


def validate_X(est, X, *, reset):
    """Checked ``X`` as an array of the estimator's namespace, device and float dtype.

    With ``reset`` (fit) the namespace, device, dtype and ``n_features_in_`` are taken from
    ``X``; otherwise ``X`` must agree with what the estimator was fitted on.
    """
    if not reset:
        check_is_fitted(est)
    names = _feature_names(X)
    _check_feature_names(est, names, reset)
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
    check_X_dtype(xp, X.dtype)
    if reset:
        est._xp = xp
        est._device = dev
        est._dtype = _ns.resolve_float_dtype(X, xp, dev, est.dtype)
        est.n_features_in_ = int(p)
    else:
        if xp is not est._xp:
            raise NamespaceMismatchError(
                f"xpdl: {type(est).__name__}.{_calling_method(est)}() must use the same "
                f"namespace as fit: the model was fitted on {_ns.backend_name(est._xp)} "
                f"arrays but got {_ns.backend_name(xp)}; convert X or move the model with "
                f".to(xp=...)")
        if dev is not None and not _ns.same_device(dev, est._device):  # None: traced
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


def validate_y_classification(est, y, n, *, reset, classes=None, unseen_as_miss=False):
    """Encoded class indices (the namespace's index dtype: int64, int32 on JAX without
    x64), on the estimator's device.

    With ``reset``, ``classes_`` is set: an array of the training namespace for numeric
    labels given in that namespace, else a NumPy array (strings and other host labels).
    A label not in ``classes_`` is an error, or with ``unseen_as_miss`` the index -1, which
    no prediction equals (``score`` counts it wrong, as scikit-learn's does).
    """
    if y is None:
        raise ValueError(f"xpdl: {type(est).__name__} requires y to be passed, but the target "
                         f"y is None")
    xp = est._xp
    hxp = _ns.host_xp()
    if classes is not None:
        classes = _check_classes(est, classes, reset)
    on_device = _ns.is_array(y) and not _ns.is_host_array(y) and \
        _ns.array_namespace(y) is xp and (xp.isdtype(y.dtype, "numeric") or
                                          xp.isdtype(y.dtype, "bool"))
    if on_device:
        if xp.isdtype(y.dtype, "complex floating"):
            raise ValueError("xpdl: complex labels are not supported (y)")
        if not _ns.same_device(_ns.device_of(y), est._device):
            y = _ns.move(y, device=est._device)
        host = None
    else:
        host = _ns.host_asarray(y)
        if host.dtype.kind == "O":
            kinds = {type(v) for v in host.ravel()}
            if len(kinds) > 1:
                raise ValueError(f"xpdl: y mixes label types {sorted(k.__name__ for k in kinds)}")
        _check_label_values(host)
        y = host
    if y.ndim == 2 and y.shape[1] == 1:
        warn_column_y()
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
        uniq = xp.unique_values(y) if classes is None else \
            _ns.from_host(classes, xp, device=est._device)
    else:
        if y.dtype.kind == "f":
            if bool(hxp.any(hxp.isnan(y))):
                raise ValueError("xpdl: Input y contains NaN.")
            if not bool(hxp.all(y == hxp.round(y))):
                raise ValueError("xpdl: Unknown label type: continuous. A classifier needs "
                                 "discrete classes, not a regression target with continuous "
                                 "values.")
        uniq = hxp.unique_values(y) if classes is None else classes
        if uniq.dtype.kind in "biuf":  # numeric labels live in the model's namespace
            uniq = _ns.from_host(uniq, xp, device=est._device)
    if reset:
        if uniq.shape[0] < 2:
            c = _ns.host_asarray(uniq)[0]
            c = c.item() if hasattr(c, "item") else c  # 0 or 'a', not np.int64(0)
            raise ValueError(f"xpdl: y has only one class ({c!r}); a classifier needs "
                             f"samples of at least two classes")
        est.classes_ = uniq
    cls = est.classes_
    if host is None:
        if _ns.is_array(cls) and not _ns.is_host_array(cls):
            cls_d = cls
        else:
            cls_d = _ns.from_host(cls, xp, device=est._device)
        keys, probe = cls_d, xp.astype(y, cls_d.dtype)
        ix = _ns.index_dtype(xp, est._device)
        if xp.isdtype(cls_d.dtype, "bool"):  # searchsorted is for real numbers only
            keys, probe = xp.astype(keys, ix), xp.astype(probe, ix)
        idx = xp.searchsorted(keys, probe)
        idx = xp.astype(xp.clip(idx, 0, cls_d.shape[0] - 1), ix)
        known = xp.take(cls_d, idx) == xp.astype(y, cls_d.dtype)
        if unseen_as_miss:
            return xp.where(known, idx, xp.asarray(-1, dtype=ix, device=est._device))
        if not bool(xp.all(known)):
            raise ValueError("xpdl: y contains labels that are not in classes_")
        return idx
    cls_h = _ns.host_asarray(cls)
    if cls_h.dtype.kind in "biuf" and y.dtype.kind not in "biuf":
        raise ValueError(f"xpdl: y has labels of dtype {y.dtype} but classes_ are numeric")
    idx = hxp.clip(hxp.searchsorted(cls_h, y), 0, cls_h.shape[0] - 1)
    if unseen_as_miss:
        idx = hxp.where(cls_h[idx] == y, idx, -1)
    elif not bool(hxp.all(cls_h[idx] == y)):
        bad = sorted(set(y[cls_h[idx] != y].tolist()))[:5]
        raise ValueError(f"xpdl: y contains labels {bad} that are not in classes_")
    return _ns.from_host(idx, xp, device=est._device, dtype=_ns.index_dtype(xp, est._device))


def _check_classes(est, classes, reset):
    """``classes`` of ``partial_fit`` as a sorted host array of unique labels: at least two,
    real and finite, and on later calls the classes the model already has."""
    c = _ns.host_asarray(classes)
    if c.ndim != 1:
        raise ValueError(f"xpdl: classes must be a 1-D list of labels, got shape {c.shape}")
    _check_label_values(c, "classes")
    c = _ns.host_xp().unique_values(c)
    if c.shape[0] < 2:
        raise ValueError(f"xpdl: classes must name at least two classes, got {c.tolist()!r}")
    if not reset:
        have = _ns.host_asarray(est.classes_)
        if have.shape != c.shape or not bool((have == c).all()):
            raise ValueError(f"xpdl: classes={c.tolist()!r} is not the same as on the first "
                             f"call to partial_fit (classes_={have.tolist()!r})")
    return c


def _check_label_values(y, name="y"):
    """Refuse complex, NaN and infinite labels (host arrays, any dtype)."""
    if y.dtype.kind == "c":
        raise ValueError(f"xpdl: complex labels are not supported ({name})")
    if y.dtype.kind == "f":
        if bool(_ns.host_xp().any(_ns.host_xp().isnan(y))):
            raise ValueError(f"xpdl: Input {name} contains NaN.")
        if not bool(_ns.host_xp().all(_ns.host_xp().isfinite(y))):
            raise ValueError(f"xpdl: Input {name} contains infinity.")
    if y.dtype.kind == "O":
        for v in y.ravel():
            if isinstance(v, complex):
                raise ValueError(f"xpdl: complex labels are not supported ({name})")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"xpdl: Input {name} contains NaN or infinity.")


def validate_sample_weight(est, sample_weight, n, normalize=True, return_scale=False,
                           rescale=True, return_mean=False):
    """Weights of shape (n,), finite and non-negative; ``None`` stays ``None``.

    Weights whose largest value lies outside :math:`[2^{-64}, 2^{64}]` are first divided by
    a power of two (exactly) to bring it to about 1, so that sums over them neither overflow
    (weights of 1e308) nor underflow (1e-320). With ``normalize`` they are then rescaled to
    mean 1 (all-ones weights change nothing). With ``return_scale``, ``(w, e)`` comes back
    with the given weights equal to ``w * 2**e`` (``normalize`` off), for objectives that
    depend on the weights' scale (a penalty term weighs against their sum). DP-SGD passes
    ``rescale=False``: a rescaling by the largest weight would let one sample change every
    other sample's contribution. With ``return_mean`` (and ``normalize``), ``(w, m)`` comes
    back with ``m`` the given weights' mean (a float, ``inf`` or 0 past the float range):
    the MLPs' L2 term is divided by a batch's total given weight, as in scikit-learn.
    """
    if sample_weight is None:
        if return_mean:
            return None, 1.0
        return (None, 0) if return_scale else None
    xp = est._xp
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        if not (math.isfinite(sample_weight) and sample_weight > 0):
            _bad_weights()
        if normalize:
            return (None, float(sample_weight)) if return_mean else None
        sample_weight = xp.full((n,), float(sample_weight), dtype=est._dtype,
                                device=est._device)
    w = _follow_X(est, sample_weight, "sample_weight")
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"xpdl: sample_weight must have shape ({n},), got {tuple(w.shape)}")
    if not xp.isdtype(w.dtype, "real floating"):
        if not (xp.isdtype(w.dtype, "integral") or xp.isdtype(w.dtype, "bool")):
            raise ValueError(f"xpdl: sample_weight must be real numbers, got {w.dtype}")
        w = xp.astype(w, est._dtype)
    _check_finite(xp, w, "sample_weight")
    if bool(xp.any(w < 0)):
        raise ValueError("xpdl: sample_weight has negative values")
    top = float(xp.max(w))
    if top <= 0:
        _bad_weights()
    e = 0
    if rescale and not 2.0 ** -64 <= top <= 2.0 ** 64:
        e = math.frexp(top)[1]
        half = -e // 2  # two exact power-of-two factors, each representable
        w = (w * 2.0 ** half) * 2.0 ** (-e - half)
    w = xp.astype(w, est._dtype)
    if normalize:
        total = float(xp.sum(w))
        w = w * (n / total)
        if return_mean:
            return w, scaled(total / n, e, math.inf)
    return (w, e) if return_scale else w


def scaled(value, e, limit):
    """``value * 2**e`` as a float; ``inf`` past ``limit`` (a penalty weight that large
    already outweighs any data term: callers take the limit case)."""
    try:
        out = math.ldexp(value, e)
    except OverflowError:
        return math.inf
    return out if out <= limit else math.inf


def _bad_weights():
    raise ValueError("xpdl: sample_weight sums to zero; at least one sample needs weight")


def warn_column_y():
    """scikit-learn's DataConversionWarning for a y of shape (n_samples, 1)."""
    try:
        from sklearn.exceptions import DataConversionWarning as _W
    except ImportError:  # pragma: no cover
        _W = UserWarning
    _warn("A column-vector y was passed when a 1d array was expected. Please change the "
          "shape of y to (n_samples, ), for example using ravel().", _W)


def warn_convergence(est, n_iter):
    try:
        from sklearn.exceptions import ConvergenceWarning as _W
    except ImportError:  # pragma: no cover
        _W = UserWarning
    _warn(f"xpdl: {type(est).__name__} reached max_iter={n_iter} before converging; "
          f"consider more iterations or a higher learning rate", _W)


# -- hyperparameters ----------------------------------------------------------------------
def _real(lo=None, hi=None, lo_open=False, hi_open=False, none=False, inf=False):
    """A rule: a finite real number (not a bool) in the given bounds (or None; or +inf
    with ``inf``)."""
    lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
    hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
    what = "a finite number" + (f" {lo_s}" if lo_s else "") + \
        (f" and {hi_s}" if lo_s and hi_s else f" {hi_s}" if hi_s else "") + \
        (" or None" if none else "") + (" or inf" if inf else "")

    def check(v):
        if v is None:
            return none
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return False
        v = float(v)
        if not math.isfinite(v):
            return inf and v == math.inf
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))

    return check, what


def _int(lo=1):
    def check(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo

    return check, f"an int >= {lo}"


def _bool():
    def check(v):
        return isinstance(v, bool) or type(v).__name__ in ("bool", "bool_")  # NumPy bools too

    return check, "True or False"


def _seed():
    def check(v):
        from ..random import Generator

        return v is None or isinstance(v, Generator) or \
            (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0)

    return check, "None, an int >= 0 or an xpdl.random.Generator"


def _batch():
    def check(v):
        if v is None or isinstance(v, str):
            return v is None or v == "auto"
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1

    return check, "a positive int, 'auto' or None"


_PARAM_RULES = {
    "learning_rate": _real(0, lo_open=True),
    "alpha": _real(0),
    "C": _real(0, lo_open=True, inf=True),  # np.inf: no penalty (scikit-learn's spelling)
    "tol": _real(0),
    "max_iter": _int(1),
    "n_iter_no_change": _int(1),
    "validation_fraction": _real(0, 1, lo_open=True, hi_open=True),
    "dropout": _real(0, 1, hi_open=True),
    "dp_noise_multiplier": _real(0, none=True),
    "dp_max_grad_norm": _real(0, lo_open=True),
    "dp_delta": _real(0, 1, lo_open=True, hi_open=True),
    "fit_intercept": _bool(),
    "warm_start": _bool(),
    "early_stopping": _bool(),
    "verbose": _bool(),
    "random_state": _seed(),
    "batch_size": _batch(),
}


def validate_params(est):
    """``ValueError`` naming the first hyperparameter of ``est`` whose value is out of its
    domain (NaN and infinities, wrong types, strings or None where a number is needed)."""
    for name in type(est)._get_param_names():
        rule = _PARAM_RULES.get(name)
        if rule is None:
            continue
        check, what = rule
        value = getattr(est, name)
        if not check(value):
            raise ValueError(f"xpdl: {name} must be {what}, got {value!r}")
