"""Saving and loading: one safetensors file, no pickle, nothing executed on load.

The file holds the arrays (contiguous, on the host) and, in the safetensors metadata under
the key ``"xpdl"``, a JSON document: format name and version, what was saved (estimator,
module, optimizer state or a dict of arrays), the class and hyperparameters, fitted
attributes, the optimizer's step counters and the random generator's state, plus a
SHA-256 over the metadata and the arrays so that a flipped bit anywhere in the file is
detected. Files are
written by the ``safetensors`` library; reading goes through xpdl's own checks first.

``load`` checks the header before anything is allocated (its length against the file
size, every tensor's byte range against the data block) and raises ``ValueError`` saying
what is wrong for empty, truncated, corrupted, foreign or newer files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import struct
import tempfile

import numpy as np

from . import _namespace as _ns

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT = "xpdl"
FORMAT_VERSION = 3
_MAX_HEADER = 64 * 1024 * 1024
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
           "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _with_bfloat16():
    """Add BF16 (ml_dtypes' bfloat16, installed with JAX) to the known dtypes; imported only
    when a file or an array needs it (ml_dtypes takes a second to import)."""
    if "BF16" not in _DTYPES:
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - depends on the installation
            return
        _DTYPES["BF16"] = ml_dtypes.bfloat16
        _CODES[np.dtype(ml_dtypes.bfloat16)] = "BF16"


# -- the container -----------------------------------------------------------------------
def _digest(arrays, meta_text=None):
    """SHA-256 over the metadata exactly as stored (its JSON text) and every array's name,
    dtype, shape and little-endian C-order bytes, in name order: independent of how the
    file lays the data block out, and changed by a flipped bit anywhere."""
    h = hashlib.sha256()
    if meta_text is not None:
        h.update(meta_text.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    for name in sorted(arrays):
        a = np.asarray(arrays[name], order="C")  # (ascontiguousarray makes 0-d 1-d)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def _encode(arrays, meta):
    """safetensors bytes (written by the safetensors library) for ``{name: host array}``
    with ``meta`` as JSON metadata."""
    from safetensors.numpy import save

    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}
    for name, a in arrays.items():
        if a.dtype not in _CODES and a.dtype.name == "bfloat16":
            _with_bfloat16()
        if a.dtype not in _CODES:
            raise TypeError(f"xpdl.save: cannot store dtype {a.dtype} ({name})")
    text = json.dumps(meta, allow_nan=True)
    return save(arrays, metadata={"xpdl": text, "xpdl_sha256": _digest(arrays, text)})


def _decode(buf, path):
    """``(arrays, meta)`` from file bytes, or ``ValueError`` naming the problem."""
    where = f"xpdl.load({str(path)!r})"
    if len(buf) == 0:
        raise ValueError(f"{where}: the file is empty")
    if len(buf) < 8:
        raise ValueError(f"{where}: the file is truncated ({len(buf)} bytes, no header)")
    (n,) = struct.unpack("<Q", buf[:8])
    if n == 0 or n > _MAX_HEADER:
        raise ValueError(f"{where}: not a safetensors file (header length {n})")
    if 8 + n > len(buf):
        raise ValueError(f"{where}: the file is truncated or lies about its header length "
                         f"({n} bytes claimed, {len(buf) - 8} present)")
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{where}: corrupted header ({exc.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: corrupted header (not a JSON object)")
    meta_raw = header.pop("__metadata__", None)
    if not isinstance(meta_raw, dict) or not isinstance(meta_raw.get("xpdl"), str):
        raise ValueError(f"{where}: a safetensors file but not one written by xpdl.save "
                         f"(no xpdl metadata)")
    try:
        meta = json.loads(meta_raw["xpdl"])
    except (json.JSONDecodeError, RecursionError):
        raise ValueError(f"{where}: corrupted xpdl metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{where}: not an xpdl file (format {meta.get('format')!r})"
                         if isinstance(meta, dict) else f"{where}: corrupted xpdl metadata")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{where}: corrupted xpdl metadata (format_version)")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where}: written by a newer xpdl (format version {version}; this "
                         f"xpdl reads up to {FORMAT_VERSION}); upgrade xpdl")
    data = buf[8 + n:]
    arrays = {}
    for name, info in header.items():
        try:
            if info.get("dtype") == "BF16":
                _with_bfloat16()
            dt = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in info["shape"])
            lo, hi = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: corrupted entry for {name!r}") from None
        count = 1
        for s in shape:
            if s < 0:
                raise ValueError(f"{where}: corrupted shape for {name!r}")
            count *= s
        if not 0 <= lo <= hi <= len(data) or hi - lo != count * dt.itemsize:
            raise ValueError(f"{where}: the file is truncated or corrupted ({name!r} points "
                             f"outside the data block)")
        arrays[name] = np.frombuffer(data, dtype=dt, count=count, offset=lo).reshape(
            shape).astype(dt.newbyteorder("="))
    # Format 1 summed the arrays only, inside the metadata; from format 2 on the sum sits
    # beside it and covers the metadata's exact text too.
    if version >= 2:
        ok = _digest(arrays, meta_raw["xpdl"]) == meta_raw.get("xpdl_sha256")
    else:
        ok = _digest(arrays) == meta.get("sha256")
    if not ok:
        raise ValueError(f"{where}: the file is corrupted or truncated (checksum mismatch "
                         f"over the metadata and arrays)")
    return arrays, meta


def _umask():
    """The process umask, read without changing it where the system shows it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly process-wide)
    os.umask(mask)
    return mask


def _write_atomic(path, payload, who="xpdl.save"):
    """Write ``payload`` to ``path`` through a temporary file renamed over it.

    A symlink is followed: the file it points to is replaced and the link kept. An existing
    file keeps its permission bits; a new one gets ``0o666 & ~umask``, as ``open`` gives.
    An existing file without write permission (for anyone: root included) is refused with
    ``PermissionError`` and left as it is.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{who}: path must be a str or os.PathLike, got "
                        f"{type(path).__name__}")
    path = os.fspath(path)
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):  # (else the error names the temporary file)
        raise FileNotFoundError(errno.ENOENT, f"{who}: the folder does not exist", folder)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    else:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"{who}: the path is a directory", path)
        if not st.st_mode & 0o222 or not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, f"{who}: the file is read-only; make it "
                                  "writable or remove it to save there", path)
        mode = stat.S_IMODE(st.st_mode)
    fd, tmp = tempfile.mkstemp(prefix=".xpdl-", suffix=".tmp", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read(path):
    if not isinstance(path, (str, bytes, os.PathLike)):  # an int would be read as a file
        # descriptor
        raise TypeError(f"xpdl.load: path must be a str or os.PathLike, got "
                        f"{type(path).__name__}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise ValueError(f"xpdl.load: {str(path)!r} is a directory") from None


# -- what is saved ------------------------------------------------------------------------
def _host(a):
    return np.asarray(_ns.to_host(a))


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.ndim == 1:  # hidden_layer_sizes given as an array
        return [_jsonable(x) for x in v.tolist()]
    text = str(v)  # a float dtype of some namespace (np.float32, torch.float64, ...)
    for name in ("float64", "float32"):
        if name in text:
            return name
    raise TypeError(f"xpdl.save: cannot store parameter value {v!r}")


_LAYERS = ("Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
           "Identity", "Dropout", "Softplus", "Flatten")


def _module_spec(m):
    from . import nn

    name = type(m).__name__
    if isinstance(m, nn.Sequential):
        return {"type": "Sequential", "layers": [_module_spec(c) for c in m]}
    if name not in _LAYERS or type(m).__module__.split(".")[0] != "xpdl":
        raise TypeError(f"xpdl.save: cannot describe module {name}; save its state_dict() "
                        f"instead and rebuild it in code")
    spec = {"type": name}
    if name == "Linear":
        spec.update(in_features=m.in_features, out_features=m.out_features,
                    bias=m.bias is not None, init=m.init)
    elif name == "LeakyReLU":
        spec["negative_slope"] = m.negative_slope
    elif name in ("Softmax", "LogSoftmax"):
        spec["axis"] = m.axis
    elif name == "Softplus":
        spec.update(beta=m.beta, threshold=m.threshold)
    elif name == "Flatten":
        spec.update(start_dim=m.start_dim, end_dim=m.end_dim)
    elif name == "Dropout":
        spec["p"] = m.p
        spec["rng_state"] = m.rng.get_state()
    return spec


_MAX_LAYERS = 10_000


def _size(v, what):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{what} must be a non-negative int, got {v!r}")
    return v


def _spec_shapes(spec, prefix, out, count):
    """The parameter shapes a module spec describes, as ``{name: shape}``: pure integer
    arithmetic, nothing allocated (checked against the stored arrays before building)."""
    count[0] += 1
    if count[0] > _MAX_LAYERS or not isinstance(spec, dict):
        raise ValueError("corrupted module spec")
    t = spec.get("type")
    if t == "Sequential":
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise ValueError("corrupted module spec (layers)")
        for i, sub in enumerate(layers):
            _spec_shapes(sub, f"{prefix}{i}.", out, count)
    elif t == "Linear":
        n_in = _size(spec.get("in_features"), "in_features")
        n_out = _size(spec.get("out_features"), "out_features")
        out[f"{prefix}weight"] = (n_out, n_in)
        if spec.get("bias"):
            out[f"{prefix}bias"] = (n_out,)


def _check_shapes(path, expected, stored):
    """``ValueError`` unless the stored arrays are exactly the parameters the metadata
    describes: sizes from a file are believed only once its arrays prove them."""
    got = {k: tuple(v.shape) for k, v in stored.items()}
    if got != expected:
        diff = sorted(set(got.items()) ^ set(expected.items()))[:4]
        raise ValueError(f"xpdl.load({str(path)!r}): the metadata describes parameters that "
                         f"the file does not store (first differences: {diff})")


def _build_module(spec, xp, device, dtype):
    from . import nn

    t = spec.get("type")
    if t == "Sequential":
        return nn.Sequential(*[_build_module(s, xp, device, dtype) for s in spec["layers"]])
    if t == "Linear":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"], rng=0,
                         xp=xp, device=device, dtype=dtype, init=spec["init"])
    if t == "LeakyReLU":
        return nn.LeakyReLU(spec["negative_slope"])
    if t in ("Softmax", "LogSoftmax"):
        return getattr(nn, t)(spec["axis"])
    if t == "Softplus":
        return nn.Softplus(spec["beta"], spec["threshold"])
    if t == "Flatten":
        return nn.Flatten(spec["start_dim"], spec["end_dim"])
    if t == "Dropout":
        d = nn.Dropout(spec["p"])
        d.rng.set_state(spec["rng_state"])
        return d
    if t in ("ReLU", "Sigmoid", "Tanh", "Identity"):
        return getattr(nn, t)()
    raise ValueError(f"xpdl.load: unknown module type {t!r}")


_FITTED_TYPES = {"n_features_in_": int, "n_iter_": int, "t_": int, "_steps": int,
                 "_no_improve": int,
                 "rank_": int,
                 "_n_outputs": int, "_y_ndim": int, "_dp_steps": int, "loss_curve_": list,
                 "_dp_history": list,
                 "validation_scores_": (list, type(None)),
                 "best_loss_": (float, int, type(None)),
                 "best_validation_score_": (float, int, type(None)),
                 "epsilon_": (float, int), "_loss_ref": (float, int, type(None))}


def _estimator_payload(est):
    from .estimators._validation import check_is_fitted

    check_is_fitted(est)
    # The settings the model was fitted with (set_params since then does not change what
    # the fitted model is).
    fitted_with = est.__dict__.get("_fit_params") or est.get_params(deep=False)
    params = {k: _jsonable(v) for k, v in fitted_with.items() if k != "class_weight"}
    if "class_weight" in fitted_with:  # a dict's labels may be numbers: [[label, w], ...]
        cw = fitted_with["class_weight"]
        params["class_weight"] = [[_jsonable(k), _jsonable(v)] for k, v in cw.items()] \
            if isinstance(cw, dict) else _jsonable(cw)
    fitted = {k: _jsonable(getattr(est, k)) for k in _FITTED_TYPES if k in est.__dict__}
    arrays = {f"module/{k}": _host(v) for k, v in est.module_.state_dict().items()}
    best = est.__dict__.get("_best_params")
    if best is not None:  # early stopping's best weights so far (a warm fit may go back)
        names = [k for k, _ in est.module_.named_parameters()]
        arrays.update({f"best/{k}": _host(v) for k, v in zip(names, best)})
    meta = {"kind": "estimator", "class": type(est).__name__, "params": params,
            "fitted": fitted, "dtype": _ns.dtype_name(est._xp, est._dtype),
            "backend": _ns.backend_name(est._xp)}
    if "singular_" in est.__dict__:
        arrays["singular_"] = _host(est.singular_)
    if "classes_" in est.__dict__:
        cls = est.classes_
        if _ns.is_host_array(cls) and cls.dtype.kind in "OUS":
            meta["classes"] = [str(c) for c in cls.tolist()]
            meta["classes_kind"] = cls.dtype.kind
        else:
            arrays["classes_"] = _host(cls)
    if "feature_names_in_" in est.__dict__:
        meta["feature_names_in"] = [str(c) for c in est.feature_names_in_.tolist()]
    if "_rng" in est.__dict__:
        meta["rng_state"] = est._rng.get_state()
    opt = est.__dict__.get("_optimizer")
    if opt is not None:
        # (its settings are the estimator's hyperparameters, in the file already)
        st = {k: v for k, v in opt.state_dict().items() if not k.startswith("param_groups/")}
        meta["optimizer_ints"] = {k: v for k, v in st.items() if isinstance(v, int)}
        arrays.update({f"optim/{k}": _host(v) for k, v in st.items()
                       if not isinstance(v, int)})
    return arrays, meta


def _optimizer_state(opt):
    """An optimizer's state dict as ``(arrays and ints, settings)``: its
    ``"param_groups/..."`` settings apart, as JSON values (numbers, bools, lists)."""
    from .optim.wrappers import _SETTING

    st, settings = {}, {}
    for k, v in opt.state_dict().items():
        if not k.startswith(_SETTING):
            st[k] = v
            continue
        try:
            settings[k] = _json_setting(v)
        except (TypeError, ValueError):
            raise TypeError(f"xpdl.save: the optimizer setting {k[len(_SETTING):]!r} "
                            f"({v!r}) is not a number, a bool or a tuple of numbers; set it "
                            f"to one, or save state_dict() without it") from None
    return st, settings


def _json_setting(v):
    if isinstance(v, (bool, int, float)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_json_setting(x) for x in v]
    if _ns.is_array(v) and v.ndim == 0:  # (a 0-d array or a NumPy scalar: its value)
        return _json_setting(_host(v).item())
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v).__name__)


def _settings_back(settings, path):
    """The optimizer settings of a file's metadata, checked to be JSON numbers."""
    def ok(v):
        return v is None or isinstance(v, (bool, int, float)) or (
            isinstance(v, list) and all(ok(x) for x in v))

    if not isinstance(settings, dict) or not all(
            isinstance(k, str) and k.startswith("param_groups/") and ok(v)
            for k, v in settings.items()):
        raise ValueError(f"xpdl.load({str(path)!r}): the optimizer settings must be "
                         f"numbers, bools or lists of numbers")
    return settings


def save(obj, path):
    """Save an estimator, a module, an optimizer's state or a dict of arrays to ``path``.

    Parameters
    ----------
    obj : fitted estimator, xpdl.nn.Module, xpdl.optim.Optimizer, or dict of str to array
    path : str or os.PathLike
        Written atomically: a temporary file in the same folder is renamed over ``path``,
        so a failure leaves any previous file intact.

    Returns
    -------
    None

    Examples
    --------
    >>> import numpy as np, os, tempfile, xpdl
    >>> m = xpdl.LinearRegression().fit(np.array([[0.0], [1.0]]), np.array([1.0, 3.0]))
    >>> p = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> xpdl.save(m, p)
    >>> round(float(xpdl.load(p).coef_[0]), 6)
    2.0
    """
    from .estimators._base import BaseModel
    from .nn import Module
    from .optim import Optimizer

    if isinstance(obj, BaseModel):
        arrays, meta = _estimator_payload(obj)
    elif isinstance(obj, Module):
        arrays = {f"module/{k}": _host(v) for k, v in obj.state_dict().items()}
        p0 = obj.parameters()
        meta = {"kind": "module", "spec": _module_spec(obj), "training": obj.training,
                "dtype": _ns.dtype_name(p0[0].xp, p0[0].dtype) if p0 else "float32"}
    elif isinstance(obj, Optimizer):
        st, settings = _optimizer_state(obj)
        arrays = {k: _host(v) for k, v in st.items() if not isinstance(v, int)}
        meta = {"kind": "optimizer_state", "class": type(obj).__name__,
                "ints": {k: v for k, v in st.items() if isinstance(v, int)},
                "settings": settings}
    elif isinstance(obj, dict):
        arrays, ints = {}, {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError("xpdl.save: dict keys must be strings")
            if k == "__metadata__":  # safetensors' own header entry: the file would not load
                raise ValueError("xpdl.save: '__metadata__' is reserved by the safetensors "
                                 "format; use another name")
            if isinstance(v, int):
                ints[k] = v
            elif _ns.is_array(v):
                arrays[k] = _host(v)
            else:
                raise TypeError(f"xpdl.save: value of {k!r} is neither an array nor an int")
        meta = {"kind": "arrays", "ints": ints}
    else:
        raise TypeError(f"xpdl.save: cannot save {type(obj).__name__}")
    meta.update(format=FORMAT, format_version=FORMAT_VERSION)
    _write_atomic(path, _encode(arrays, meta))


def _float_dtype(xp, device, name):
    """The saved float dtype, or float32 on a device without float64."""
    if name == "float64" and not _ns.supports_float64(xp, device):
        name = "float32"
    return _ns.dtype_from_name(xp, name)


def _target(xp, device):
    xp = _ns.check_xp(xp)
    if xp is None:
        import array_api_compat.numpy as xp
    _ns.check_device(xp, device)  # (before the file is read)
    return xp, device


def load(path, *, xp=None, device=None):
    """Load what :func:`save` wrote, placing arrays in namespace ``xp`` on ``device``
    (NumPy on the host by default).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`; nothing in it is executed, and every size it
        claims is checked against the arrays it stores before anything is allocated.
    xp : array namespace, optional
        Where the arrays go (``numpy``, ``torch``, ``cupy``, ``jax.numpy``,
        ``array_api_strict``, or their array-api-compat wrappers); NumPy by default.
    device : optional
        A device of ``xp`` (its default device when None).

    Returns
    -------
    estimator, Module, dict
        A fitted estimator or a module as saved; optimizer state and array dicts come back
        as ``{name: array | int}`` (pass optimizer state to ``Optimizer.load_state_dict``).

    Raises
    ------
    ValueError
        Empty, truncated, corrupted, foreign or newer-version files, with what is wrong.

    Notes
    -----
    float64 arrays loaded onto a device without float64 become float32.
    """
    arrays, meta = _decode(_read(path), path)
    xp, device = _target(xp, device)
    kind = meta.get("kind")
    try:
        if kind == "estimator":
            return _load_estimator(arrays, meta, xp, device, path)
        if kind == "module":
            shapes = {}
            _spec_shapes(meta["spec"], "", shapes, [0])
            _check_shapes(path, shapes, {k[len("module/"):]: v for k, v in arrays.items()})
            dtype = _float_dtype(xp, device, meta["dtype"])
            m = _build_module(meta["spec"], xp, device, dtype)
            m.load_state_dict({k[len("module/"):]: v for k, v in arrays.items()})
            return m.train(meta.get("training", True))
        if kind in ("optimizer_state", "arrays"):
            out = {k: _ns.from_host(v, xp, device=device, dtype=_float_dtype(
                xp, device, v.dtype.name) if v.dtype.kind == "f" else None)
                for k, v in arrays.items()}
            out.update(meta.get("ints", {}))
            out.update(_settings_back(meta.get("settings", {}), path))
            return out
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"xpdl.load({str(path)!r}): inconsistent xpdl metadata "
                         f"({exc.__class__.__name__}: {exc})") from None
    raise ValueError(f"xpdl.load({str(path)!r}): unknown content kind {kind!r}")


def _dp_history(fitted, params, where):
    """The privacy history ``[[sigma, q, steps], ...]`` of a loaded estimator, checked.
    Files written before it was kept (DP steps counted, one epsilon_) get an upper bound:
    their noisy steps at the noise they were fitted with and a sampling rate of 1, and any
    other steps as noiseless."""
    hist = fitted.get("_dp_history")
    if hist is None:
        dp_steps, steps = fitted.get("_dp_steps", 0), fitted.get("_steps", 0)
        sigma = params.get("dp_noise_multiplier")
        hist = []
        if dp_steps:
            if steps > dp_steps:
                hist.append([0.0, 1.0, steps - dp_steps])
            hist.append([float(sigma or 0.0), 1.0, dp_steps])
        return hist
    for e in hist:
        if not (isinstance(e, list) and len(e) == 3 and
                all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in e) and
                0 <= e[0] < math.inf and 0 <= e[1] <= 1 and isinstance(e[2], int)
                and e[2] >= 0):
            raise ValueError(f"{where}: corrupted privacy history entry {e!r}")
    return [list(e) for e in hist]


def _load_estimator(arrays, meta, xp, device, path):
    from . import estimators
    from .estimators._base import ClassifierMixin, RegressorMixin
    from .random import Generator

    where = f"xpdl.load({str(path)!r})"
    cls = getattr(estimators, meta["class"], None)
    if cls is None or meta["class"] not in estimators.__all__:
        raise ValueError(f"xpdl.load: unknown estimator class {meta['class']!r}")
    params = dict(meta["params"])
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise ValueError(f"{where}: unknown hyperparameters {unknown} for {cls.__name__}")
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    cw = params.get("class_weight")
    if isinstance(cw, list):  # saved as [[label, weight], ...]
        if not all(isinstance(p, list) and len(p) == 2 and
                   isinstance(p[0], (str, int, float, bool)) and
                   isinstance(p[1], (int, float)) and not isinstance(p[1], bool) for p in cw):
            raise ValueError(f"{where}: class_weight must be [label, weight] pairs")
        params["class_weight"] = {label: w for label, w in cw}
    est = cls(**params)
    fitted = meta["fitted"]
    for k, v in fitted.items():  # only the attributes an estimator defines, of their types
        if k not in _FITTED_TYPES or isinstance(v, bool) or \
                not isinstance(v, _FITTED_TYPES[k]):
            raise ValueError(f"{where}: unexpected fitted attribute {k}={v!r}")
    if meta["format_version"] < 3 and "t_" in fitted:
        # format 2 counted optimizer steps in ``t_``; it now counts samples (as
        # scikit-learn's), which such a file does not know: counted from the load on
        fitted["_steps"] = fitted.pop("t_")
    fitted["_dp_history"] = _dp_history(fitted, params, where)
    if not fitted["_dp_history"]:
        del fitted["_dp_history"]
    n_in = fitted.get("n_features_in_")
    n_out = fitted.get("_n_outputs")
    if n_out is None:  # files written before _n_outputs was saved
        n_out = arrays.get("module/0.weight", np.empty((0, 0))).shape[0]
    # Every size the metadata claims is checked against the stored arrays before a single
    # parameter is allocated: a tiny file claiming a huge model is refused here.
    try:
        sizes = est._layer_sizes(_size(n_in, "n_features_in_"), _size(n_out, "_n_outputs"))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    stored = sorted((int(k[len("module/"):-len(".weight")]), tuple(v.shape))
                    for k, v in arrays.items()
                    if k.startswith("module/") and k.endswith(".weight") and
                    k[len("module/"):-len(".weight")].isdigit())
    claimed = [(int(b), int(a)) for a, b in zip(sizes[:-1], sizes[1:])]
    if [shape for _, shape in stored] != claimed:
        raise ValueError(f"{where}: the metadata describes layers {claimed} but the file "
                         f"stores weights {[shape for _, shape in stored]}")
    if "classes" not in meta and "classes_" not in arrays and \
            isinstance(est, ClassifierMixin):
        raise ValueError(f"{where}: a classifier without its classes")
    if isinstance(est, RegressorMixin) and not (
            fitted.get("_y_ndim") == 2 or (fitted.get("_y_ndim") == 1 and n_out == 1)):
        raise ValueError(f"{where}: corrupted target shape (_y_ndim="
                         f"{fitted.get('_y_ndim')!r} with {n_out} outputs)")
    if "classes" in meta or "classes_" in arrays:
        k = len(meta["classes"]) if "classes" in meta else arrays["classes_"].shape[0]
        if k < 2 or n_out != (1 if k == 2 else k):
            raise ValueError(f"{where}: {k} classes do not fit a model with {n_out} outputs")
    est._xp = xp
    est._dtype = _float_dtype(xp, device, meta["dtype"])
    est._device = _ns.device_of(xp.zeros((), dtype=est._dtype, device=device))
    for k, v in fitted.items():
        setattr(est, k, v)
    est._n_outputs = n_out
    if "classes" in meta:
        est.classes_ = np.asarray(meta["classes"]).astype(meta.get("classes_kind", "U"))
    elif "classes_" in arrays:
        est.classes_ = _ns.from_host(arrays["classes_"], xp, device=device)
    if "singular_" in arrays or "rank_" in fitted:
        sv = arrays.get("singular_")
        if sv is None or sv.ndim != 1 or sv.shape[0] > n_in or sv.dtype.kind != "f" or \
                not bool(np.all(sv >= 0)) or not 0 <= fitted.get("rank_", -1) <= sv.shape[0]:
            raise ValueError(f"{where}: singular_ must be at most {n_in} non-negative "
                             f"numbers and rank_ at most as many")
        est.singular_ = _ns.from_host(sv, xp, device=device, dtype=est._dtype)
    if "feature_names_in" in meta:
        fn = meta["feature_names_in"]
        if not isinstance(fn, list) or len(fn) != n_in or \
                not all(isinstance(c, str) for c in fn):
            raise ValueError(f"{where}: feature_names_in must be {n_in} strings")
        est.feature_names_in_ = np.asarray(fn, dtype=object)
    est._rng = Generator(0)
    est.module_ = est._build_layers(n_in, n_out)
    est.module_.load_state_dict({k[len("module/"):]: v for k, v in arrays.items()
                                 if k.startswith("module/")})
    est.module_.eval()
    best = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
    if best:
        named = est.module_.named_parameters()
        if {k: tuple(v.shape) for k, v in best.items()} != {k: p.shape for k, p in named}:
            raise ValueError(f"{where}: the stored best weights do not fit the model")
        est._best_params = [_ns.from_host(best[k], xp, device=device, dtype=p.dtype)
                            for k, p in named]
    est._remember_fit_params()
    if "rng_state" in meta:
        est._rng.set_state(meta["rng_state"])
    if "optimizer_ints" in meta:
        est._optimizer = est._make_optimizer()
        st = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
        st.update(meta["optimizer_ints"])
        est._optimizer.load_state_dict(st)
    return est
