r"""Interpretation: saliency, integrated gradients and permutation importance, on device.

``model`` may be a fitted xpdl estimator (its ``module_`` is used: logits for classifiers),
an :class:`xpdl.nn.Module`, or any callable mapping a :class:`~xpdl.Tensor` of shape
(n, n_features) to a Tensor of shape (n,) or (n, n_outputs) built from xpdl operations.

``target`` picks the output explained: an int (one output for all samples), an integer
array of shape (n,) (one per sample), or ``None`` — the predicted class (the largest
output) for multi-output models, the single output otherwise. A model with a single output
(a one-target regressor, a Module with one output) has only output 0; a binary classifier's
single output is the log-odds of ``classes_[1]``, its target 1, and target 0 explains the
log-odds of ``classes_[0]``, the negative.
"""

from __future__ import annotations

import math
import numbers
import warnings

from . import _namespace as _ns
from .autodiff.tensor import Tensor, enable_grad, no_grad
from .random import Generator, _seed_of

__all__ = ["saliency", "integrated_gradients", "permutation_importance"]


def _callable(model):
    mod = getattr(model, "module_", None)
    if mod is not None:
        return mod.eval()
    if hasattr(model, "fit") and hasattr(model, "get_params"):  # an estimator, not fitted
        from .estimators._validation import check_is_fitted

        check_is_fitted(model)
    if hasattr(model, "eval") and hasattr(model, "parameters"):
        return model.eval()
    if callable(model):
        return model
    raise TypeError(f"xpdl.explain: model must be a fitted estimator, a Module or a callable, "
                    f"got {type(model).__name__}")


def _check_finite(xp, a, name):
    from .estimators._validation import _check_finite  # (loads scikit-learn: not at import)

    _check_finite(xp, a, name)


def _check_names(model, X):
    """An estimator's ``feature_names_in_`` against a DataFrame's columns, as its predict
    checks them (reordered columns would attribute each score to another feature)."""
    if hasattr(model, "get_params") and hasattr(model, "n_features_in_"):
        from .estimators._validation import _check_feature_names, _feature_names

        _check_feature_names(model, _feature_names(X), reset=False)


def _check_X(X, model):
    _check_names(model, X)
    X = _ns.as_input_array(X, "X")
    xp, dev = _ns.get_namespace_and_device(X)
    if X.ndim != 2:
        raise ValueError(f"xpdl.explain: X must be 2-D (n_samples, n_features), got shape "
                         f"{tuple(X.shape)}")
    _check_finite(xp, X, "X")
    p = getattr(model, "n_features_in_", None)
    if p is not None and X.shape[1] != p:
        raise ValueError(f"X has {X.shape[1]} features, but {type(model).__name__} is expecting "
                         f"{p} features as input.")
    est_xp = getattr(model, "_xp", None)
    if est_xp is not None and est_xp is not xp:
        raise TypeError(f"xpdl.explain: the model lives in {_ns.backend_name(est_xp)} but X is "
                        f"{_ns.backend_name(xp)}")
    mdev = getattr(model, "_device", None)
    if mdev is None and hasattr(model, "parameters"):  # a Module (estimators: _device)
        ps = [p for p in model.parameters() if _ns.array_namespace(p.data) is xp]
        mdev = _ns.device_of(ps[0].data) if ps else None
    if mdev is not None and dev is not None and not _ns.same_device(mdev, dev):
        raise ValueError(f"xpdl.explain: the model lives on device {mdev!r} but X is on "
                         f"{dev!r}; move X or the model (.to(device=...))")
    dtype = getattr(model, "_dtype", None)
    if dtype is not None and X.dtype != dtype:
        X = xp.astype(X, dtype)
    elif not xp.isdtype(X.dtype, "real floating"):
        X = xp.astype(X, xp.float32)
    return X, xp, dev


def _binary(model):
    """Whether ``model`` is a binary classifier (one output, two classes)."""
    return getattr(model, "_is_classifier", False) and getattr(model, "_n_outputs", 0) == 1


def _select(out, target, xp, dev, binary=False):
    """(n,) Tensor of the explained output per sample, and the target indices used."""
    k = 1 if out.ndim == 1 else out.shape[1]
    n = out.shape[0]
    if binary:  # one output, two classes: target 0 is the negated log-odds
        k = 2
    if target is None:
        idx = None
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        if not 0 <= target < k:
            raise ValueError(f"xpdl.explain: target {target} out of range for {k} output"
                             f"{'s' if k > 1 else ' (index 0)'}")
        idx = xp.full((n,), int(target), dtype=_ns.index_dtype(xp, dev), device=dev)
    else:
        t = target if _ns.is_array(target) else _ns.host_asarray(target)
        if tuple(t.shape) != (n,) or not _ns.array_namespace(t).isdtype(t.dtype, "integral"):
            raise ValueError(f"xpdl.explain: target must be an int or integers of shape "
                             f"({n},), got {t.dtype} of shape {tuple(t.shape)}")
        idx = xp.astype(_ns.move(t, xp=xp, device=dev), _ns.index_dtype(xp, dev))
        bad = xp.any((idx < 0) | (idx >= k))
        if _ns.has_values(bad) and bool(bad):  # (not under jax.jit, where it is traced)
            raise ValueError(f"xpdl.explain: target values must be in [0, {k})")
    if k == 1 or binary:
        z = out if out.ndim == 1 else out[:, 0]
        if idx is None or not binary:
            return z, None
        return z * Tensor(xp.astype(idx, z.dtype) * 2 - 1), idx
    data = out.data
    if idx is None:
        idx = xp.argmax(data, axis=1)
    onehot = xp.astype(xp.expand_dims(idx, axis=1) == xp.arange(k, device=dev), data.dtype)
    return (out * Tensor(onehot)).sum(axis=1), idx


def _grad_of_outputs(f, X, target, xp, dev, binary=False):
    """Gradient of the selected outputs w.r.t. X (each sample's own output), and them."""
    with enable_grad():
        x = Tensor(X, requires_grad=True)
        sel, idx = _select(f(x), target, xp, dev, binary)
        sel.sum().backward(inputs=[x])  # the model's parameters' .grad stay as they were
    return x.grad, sel.data, idx


def saliency(model, X, target=None, abs=True):  # noqa: A002
    r"""Gradient of the explained output with respect to each input feature,
    :math:`\partial f_t(x)/\partial x` (Simonyan et al., 2014).

    Parameters
    ----------
    model : estimator, Module or callable
    X : array of shape (n_samples, n_features)
    target : int, array of shape (n_samples,) or None
    abs : bool, default True
        Return the magnitude of the gradient.

    Returns
    -------
    array of shape (n_samples, n_features), in ``X``'s namespace and on its device.
    """
    f = _callable(model)
    X, xp, dev = _check_X(X, model)
    g, _, _ = _grad_of_outputs(f, X, target, xp, dev, _binary(model))
    return xp.abs(g) if abs else g


def integrated_gradients(model, X, target=None, baseline=None, n_steps=50,
                         return_delta=False):
    r"""Integrated gradients (Sundararajan et al., 2017):

    .. math:: \mathrm{IG}_j(x) = (x_j - b_j)\int_0^1
              \frac{\partial f_t(b + \alpha(x-b))}{\partial x_j}\,d\alpha,

    the integral taken with the trapezoidal rule on ``n_steps`` intervals (error
    :math:`O(1/n^2)`). Completeness: :math:`\sum_j \mathrm{IG}_j = f_t(x) - f_t(b)`.

    Parameters
    ----------
    model : estimator, Module or callable
    X : array of shape (n_samples, n_features)
    target : int, array of shape (n_samples,) or None
        None explains the class predicted at ``x`` (kept fixed along the path).
    baseline : float, array of shape (n_features,) or (n_samples, n_features), optional
        Zeros by default; a number is that value for every feature.
    n_steps : int, default 50
    return_delta : bool, default False
        Also return the completeness error :math:`\sum_j \mathrm{IG}_j - (f_t(x) - f_t(b))`
        per sample.

    Returns
    -------
    attributions : array of shape (n_samples, n_features)
    delta : array of shape (n_samples,), if ``return_delta``
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"xpdl.explain: n_steps must be an int >= 1, got {n_steps!r}")
    f = _callable(model)
    X, xp, dev = _check_X(X, model)
    n, p = X.shape
    if baseline is None:
        B = xp.zeros(X.shape, dtype=X.dtype, device=dev)
    elif isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        # one value for every feature (as Captum takes a scalar baseline)
        if not math.isfinite(baseline):
            raise ValueError(f"xpdl.explain: baseline must be finite, got {baseline!r}")
        B = xp.full(X.shape, float(baseline), dtype=X.dtype, device=dev)
    else:
        B = xp.astype(_ns.move(baseline, xp=xp, device=dev), X.dtype)
        if tuple(B.shape) not in ((p,), (n, p)):
            raise ValueError(f"xpdl.explain: baseline must have shape ({p},) or ({n}, {p}), "
                             f"got {tuple(B.shape)}")
        _check_finite(xp, B, "baseline")
        B = xp.broadcast_to(B, X.shape)
    with no_grad():
        out_x = f(Tensor(X))
        _, idx = _select(out_x, target, xp, dev, _binary(model))
    tgt = target if idx is None else idx
    steps = int(n_steps)
    alphas = xp.linspace(0.0, 1.0, steps + 1, dtype=X.dtype, device=dev)
    # All path points at once: shape ((steps + 1) * n, p), step-major.
    path = xp.reshape(xp.reshape(alphas, (-1, 1, 1)) * (X - B) + B, (-1, p))
    rep = None if tgt is None or isinstance(tgt, int) else xp.tile(tgt, (steps + 1,))
    g, vals, _ = _grad_of_outputs(f, path, rep if rep is not None else tgt, xp, dev,
                                  _binary(model))
    g = xp.reshape(g, (steps + 1, n, p))
    # Trapezoid weights: 1/2 at both ends, 1 inside, divided by the number of intervals.
    w = xp.ones((steps + 1,), dtype=X.dtype, device=dev)
    w = xp.where((xp.arange(steps + 1, device=dev) == 0) |
                 (xp.arange(steps + 1, device=dev) == steps), _ns.lit(xp, 0.5, w), w)
    avg = xp.sum(g * xp.reshape(w, (-1, 1, 1)), axis=0) / steps
    attr = (X - B) * avg
    if not return_delta:
        return attr
    vals = xp.reshape(vals, (steps + 1, n))
    delta = xp.sum(attr, axis=1) - (vals[-1, ...] - vals[0, ...])
    return attr, delta


def permutation_importance(estimator, X, y, *, n_repeats=5, random_state=None,
                           sample_weight=None):
    """Drop of ``estimator.score`` when one feature's column is shuffled (scikit-learn's
    semantics), computed on ``X``'s device.

    Parameters
    ----------
    estimator : fitted estimator with ``score(X, y)``
    X : array of shape (n_samples, n_features)
    y : array of shape (n_samples,) or (n_samples, n_outputs)
    n_repeats : int, default 5
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None
        Seeds the shuffles (host generator, the same on every backend); a NumPy generator
        gives the seed (one draw; as in scikit-learn, the instance advances).
    sample_weight : array of shape (n_samples,), optional
        Passed to ``estimator.score``.

    Returns
    -------
    dict
        ``importances_mean`` (n_features,), ``importances_std`` (n_features,) and
        ``importances`` (n_features, n_repeats): arrays of ``X``'s namespace on its device.
    """
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, numbers.Integral) or n_repeats < 1:
        raise ValueError(f"xpdl.explain: n_repeats must be an int >= 1, got {n_repeats!r}")
    _check_names(estimator, X)
    with warnings.catch_warnings():  # the (checked) columns are scored as arrays from here
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return _permutation_importance(estimator, X, y, n_repeats, random_state,
                                       sample_weight)


def _permutation_importance(estimator, X, y, n_repeats, random_state, sample_weight):
    X = _ns.as_input_array(X, "X")
    xp, dev = _ns.get_namespace_and_device(X)
    if X.ndim != 2:
        raise ValueError("xpdl.explain: X must be 2-D")
    n, p = X.shape
    g = Generator(_seed_of(random_state))
    base = estimator.score(X, y, sample_weight=sample_weight)
    cols = xp.arange(p, device=dev)
    rows = []
    for j in range(p):
        mask = xp.reshape(cols == j, (1, p))
        drops = []
        for _ in range(int(n_repeats)):
            perm = g.permutation(n, xp=xp, device=dev)
            Xp = xp.where(mask, xp.take(X, perm, axis=0), X)
            drops.append(base - estimator.score(Xp, y, sample_weight=sample_weight))
        rows.append(drops)
    imp = _ns.from_host(rows, xp, device=dev, dtype=getattr(estimator, "_dtype", None) or
                        xp.float32)
    return {"importances_mean": xp.mean(imp, axis=1), "importances_std": xp.std(imp, axis=1),
            "importances": imp}
