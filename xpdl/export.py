"""ONNX export: run a model's forward on ndonnx arrays and save the graph it builds.

xpdl's models are written on the Array API standard, and ndonnx is an Array API namespace
whose arrays *record ONNX operations* instead of computing. So exporting needs no converter
and no second definition of any layer: a copy of the model is moved to ndonnx
(``.to(xp=ndonnx)``, the parameters becoming ONNX constants), its own ``predict`` /
``predict_proba`` / forward runs on a symbolic input, and ndonnx writes the resulting
graph. Input checks that would read values (NaN, infinity) skip symbolic arrays.
"""

from __future__ import annotations

import copy
import numbers
import os

import numpy as np

from . import _namespace as _ns

__all__ = ["export_onnx"]


def _ndonnx():
    try:
        import ndonnx
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("xpdl.export_onnx needs ndonnx: pip install 'xpdl[onnx]'") from exc
    return ndonnx


def _dtype_name(model):
    if hasattr(model, "_dtype"):
        return _ns.dtype_name(model._xp, model._dtype)
    p = model.parameters()[0]
    return _ns.dtype_name(p.xp, p.dtype)


def export_onnx(model, path, input_shape, *, input_name="X"):
    """Write ``model`` as an ONNX file by running its forward on ndonnx arrays.

    Parameters
    ----------
    model : fitted estimator or xpdl.nn.Module
        Not modified (a copy is moved to ndonnx).
    path : str or os.PathLike
        Where to write the ``.onnx`` file.
    input_shape : tuple
        Shape of the input, ``(n_samples, n_features)`` for estimators; use a string
        (e.g. ``("N", 64)``) for a dimension left free.
    input_name : str, default "X"

    Returns
    -------
    onnx.ModelProto
        The model written. Its outputs: ``label`` and ``probabilities`` (classifiers, shape
        (n,) and (n, n_classes)), ``prediction`` (regressors: (n,) or (n, n_outputs)),
        ``output`` (modules).

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> X = np.random.default_rng(0).normal(size=(50, 3)).astype("float32")
    >>> reg = xpdl.LinearRegression().fit(X, X @ np.array([1.0, 2.0, 3.0], "float32"))
    >>> proto = xpdl.export_onnx(reg, "/tmp/reg.onnx", ("N", 3))  # doctest: +SKIP
    """
    ndx = _ndonnx()
    from .nn import Module

    if not isinstance(model, Module):
        if not (hasattr(model, "fit") and hasattr(model, "predict")):
            raise TypeError(f"xpdl.export_onnx: model must be a fitted xpdl estimator or an "
                            f"xpdl.nn.Module, got {type(model).__name__}")
        from .estimators._validation import check_is_fitted

        check_is_fitted(model)
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"xpdl.export_onnx: path must be a str or os.PathLike, got "
                        f"{type(path).__name__}")
    shape = _input_shape(input_shape)
    dtype = getattr(ndx, _dtype_name(model))
    x = ndx.argument(shape=shape, dtype=dtype)
    if isinstance(model, Module):
        m = copy.deepcopy(model).to(xp=ndx)
        m.eval()
        out = m(x)
        outputs = {"output": out.data if hasattr(out, "data") and not _ns.is_array(out)
                   else out}
    else:
        m = _light_copy(model)
        m.to(xp=ndx)
        cls = m.__dict__.get("classes_")
        if cls is not None and _ns.is_host_array(cls) and cls.dtype.kind not in "biuf":
            m.classes_ = ndx.asarray(np.asarray(cls).astype(str))  # string labels: utf8
        if getattr(m, "_is_classifier", False):
            outputs = {"label": m.predict(x), "probabilities": m.predict_proba(x)}
        else:
            outputs = {"prediction": m.predict(x)}
    proto = ndx.build({input_name: x}, outputs)
    from .io import _write_atomic

    # as xpdl.save: a temporary file renamed over the path (never a half-written model)
    _write_atomic(path, proto.SerializeToString(), "xpdl.export_onnx")
    return proto


def _input_shape(input_shape):
    """``input_shape`` as a tuple of sizes (ints >= 1) and free dimensions (strings or
    None), else an error naming it (a string was read as a 1-D shape of its characters,
    and a size of -1 wrote a model that failed in onnxruntime)."""
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"xpdl.export_onnx: input_shape must be a tuple such as ('N', 64), "
                        f"got {input_shape!r}")
    shape = tuple(input_shape)
    for d in shape:
        if d is None or (isinstance(d, str) and d):
            continue
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"xpdl.export_onnx: each size in input_shape must be an int or a "
                            f"name (a free dimension), got {d!r} in {input_shape!r}")
        if d < 1:
            raise ValueError(f"xpdl.export_onnx: sizes in input_shape must be >= 1 (a "
                             f"string names a free dimension), got {d} in {input_shape!r}")
    return tuple(d if d is None or isinstance(d, str) else int(d) for d in shape)


def _light_copy(est):
    """The estimator with its own copy of the network and without training state (the
    optimizer, the compiled step and the generator are not needed to predict)."""
    new = copy.copy(est)
    new.__dict__ = {k: v for k, v in est.__dict__.items()
                    if k not in ("_optimizer", "_step_cache", "_dp_cache", "_rng",
                                  "_best_params")}
    new.module_ = copy.deepcopy(est.module_)
    return new
