"""Files under attack: sizes claimed by metadata, flipped bits, settings changed after fit,
attributes the estimator does not define, and the file system's permissions and links."""

from __future__ import annotations

import json
import os
import stat
import struct
import tracemalloc

import numpy as np
import pytest

import xpdl
from xpdl import io, nn

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "m.safetensors")


def _data():
    return xpdl.datasets.make_classification(60, 4, n_classes=3, random_state=0,
                                             dtype=np.float64)


def _parts(path):
    """(arrays, meta) of a file as written, for forging variants of it."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["xpdl"])
    arrays = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        dt = io._DTYPES[info["dtype"]]
        arrays[name] = np.frombuffer(raw[8 + n + lo:8 + n + hi], dtype=dt).reshape(
            info["shape"])
    return arrays, meta


def _forge(path, arrays, meta):
    """A well-formed file with a valid checksum (an attacker can recompute it)."""
    with open(path, "wb") as f:
        f.write(io._encode(arrays, meta))


def _load_fast_and_small(path):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            xpdl.load(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20, peak


@pytest.mark.parametrize("lie", ["hidden", "features", "outputs", "classes", "state"])
def test_tiny_file_claiming_a_huge_estimator_is_refused_before_allocating(path, lie):
    X, y = _data()
    xpdl.save(xpdl.MLPClassifier((5,), max_iter=2, random_state=0).fit(X, y), path)
    arrays, meta = _parts(path)
    if lie == "hidden":
        meta["params"]["hidden_layer_sizes"] = [5, 10 ** 9]
    elif lie == "features":
        meta["fitted"]["n_features_in_"] = 10 ** 10
    elif lie == "outputs":
        meta["fitted"]["_n_outputs"] = 10 ** 10
    elif lie == "classes":
        arrays["classes_"] = np.arange(7)
    else:  # optimizer state of another shape than the parameters it belongs to
        key = next(k for k in arrays if k.startswith("optim/") and k.endswith("0.weight"))
        arrays[key] = np.zeros((1, 1))
    _forge(path, arrays, meta)
    _load_fast_and_small(path)


def test_tiny_file_claiming_a_huge_module_is_refused_before_allocating(path):
    net = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=0))
    xpdl.save(net, path)
    arrays, meta = _parts(path)
    meta["spec"]["layers"][2]["in_features"] = 10 ** 6
    meta["spec"]["layers"][2]["out_features"] = 10 ** 6
    _forge(path, arrays, meta)
    _load_fast_and_small(path)
    meta["spec"]["layers"] = [{"type": "ReLU"}] * 20_000  # a flood of empty layers
    _forge(path, arrays, meta)
    _load_fast_and_small(path)


def test_every_flipped_bit_is_a_value_error(path):
    X, y = _data()
    m = xpdl.LinearRegression().fit(X[:, :1], y * 1.0)
    xpdl.save(m, path)
    good = open(path, "rb").read()
    failures = []
    for pos in range(len(good)):
        for bit in range(8):
            b = bytearray(good)
            b[pos] ^= 1 << bit
            with open(path, "wb") as f:
                f.write(b)
            try:
                xpdl.load(path)
            except ValueError:
                continue
            except Exception as exc:  # any other type is a failure too
                failures.append((pos, bit, type(exc).__name__))
                continue
            failures.append((pos, bit, "loaded"))
    assert failures == []


def test_metadata_edits_fail_the_checksum(path):
    X, y = _data()
    xpdl.save(xpdl.MLPClassifier((5,), max_iter=2, random_state=0).fit(X, y), path)
    raw = open(path, "rb").read()
    forged = raw.replace(b'\\"relu\\"', b'\\"tanh\\"')
    assert forged != raw
    with open(path, "wb") as f:
        f.write(forged)
    with pytest.raises(ValueError, match="checksum"):
        xpdl.load(path)


def test_files_describe_the_fitted_model_not_later_set_params(path, backend):
    X, y = _data()
    Xb = backend.asarray(X)
    yb = backend.asarray(y, dtype=backend.xp.int64)
    m = xpdl.MLPClassifier((5,), max_iter=3, random_state=0).fit(Xb, yb)
    ref = backend.to_numpy(m.predict_proba(Xb))
    m.set_params(activation="tanh", hidden_layer_sizes=(7, 7), dropout=0.5, alpha=3.0)
    xpdl.save(m, path)
    back = xpdl.load(path, xp=backend.xp, device=backend.device)
    assert back.activation == "relu" and tuple(back.hidden_layer_sizes) == (5,)
    assert back.dropout == 0.0 and back.alpha == 1e-4
    np.testing.assert_allclose(backend.to_numpy(back.predict_proba(Xb)), ref,
                               rtol=1e-6 if backend.is64 else 1e-4)


def test_load_sets_only_attributes_the_estimator_defines(path):
    X, y = _data()
    xpdl.save(xpdl.MLPClassifier((5,), max_iter=2, random_state=0).fit(X, y), path)
    arrays, meta = _parts(path)
    for bad in ({"predict": 1}, {"__class__": "x"}, {"n_iter_": "3"}, {"n_iter_": True},
                {"loss_curve_": {"a": 1}}):
        m2 = dict(meta, fitted=dict(meta["fitted"], **bad))
        _forge(path, arrays, m2)
        with pytest.raises(ValueError, match="fitted attribute"):
            xpdl.load(path)
    _forge(path, arrays, dict(meta, params=dict(meta["params"], fit=1)))
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        xpdl.load(path)


def _edit(meta, where, value):
    """``meta`` with the entry at the key path ``where`` set to ``value`` (removed when
    ``value`` is ``KeyError``)."""
    meta = json.loads(json.dumps(meta))
    cur = meta
    for k in where[:-1]:
        cur = cur[k]
    if value is KeyError:
        del cur[where[-1]]
    else:
        cur[where[-1]] = value
    return meta


@pytest.mark.parametrize("kind", ["classifier", "regressor", "module"])
def test_forged_values_out_of_range_are_value_errors(path, kind):
    """Values of the right JSON type but out of range (found by fuzzing the metadata of
    valid files with recomputed checksums) were OverflowError, or loaded into a model that
    failed on predict with AttributeError; each is a ValueError naming the problem now."""
    X, y = _data()
    if kind == "module":
        obj = nn.Sequential(nn.Linear(4, 3, rng=0), nn.Dropout(0.1), nn.ReLU())
        rng = ("spec", "layers", 1, "rng_state")
        cases = [(("training",), "yes", "metadata")]  # (was loaded as True)
    else:
        est = xpdl.MLPClassifier((5,), max_iter=2, random_state=0, dropout=0.1) \
            if kind == "classifier" else xpdl.MLPRegressor((5,), max_iter=2, random_state=0)
        obj = est.fit(X, y if kind == "classifier" else y * 1.0)
        rng = ("rng_state",)
        cases = [(("params", "hidden_layer_sizes", 0), float("inf"), "hidden_layer_sizes"),
                 (("params", "hidden_layer_sizes", 0), 0, "hidden_layer_sizes"),
                 (("optimizer_ints", "0/step"), float("inf"), "step count"),
                 (("optimizer_ints", "0/step"), -1, "step count"),
                 (("optimizer_ints", "0/step"), 2.5, "step count")]
        cases.append((None, None, "without its classes") if kind == "classifier"
                     else (("fitted", "_y_ndim"), KeyError, "target shape"))
    cases += [(rng + ("state", "state"), -1, "generator state"),
              (rng + ("state", "inc"), 2 ** 130, "generator state"),
              (rng + ("uinteger",), -(10 ** 9), "generator state"),
              (rng + ("has_uint32",), 10 ** 12, "generator state")]
    xpdl.save(obj, path)
    arrays, meta = _parts(path)
    for where, value, match in cases:
        if where is None:  # the labels, stored as an array (numeric) or in the metadata
            _forge(path, {k: v for k, v in arrays.items() if k != "classes_"},
                   {k: v for k, v in meta.items() if k != "classes"})
        else:
            _forge(path, arrays, _edit(meta, where, value))
        with pytest.raises(ValueError, match=match):
            xpdl.load(path)
    _forge(path, arrays, meta)  # the unedited file still loads
    assert type(xpdl.load(path)) is type(obj)


def _paths(o, pre=()):
    """Every key path into a JSON value (lists: their first four items)."""
    if pre:
        yield pre
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _paths(v, pre + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o[:4]):
            yield from _paths(v, pre + (i,))


_FUZZ_VALUES = [None, True, 0, 1, -1, 3, 10 ** 12, 2 ** 64, -10 ** 9, 0.5, float("nan"),
                float("inf"), "", "x", "relu", [], [1], [10 ** 9], [[1, 2, 3]], {},
                {"type": "Linear"}, ["a", "a"], KeyError]


@pytest.mark.parametrize("kind", ["classifier", "regressor", "module"])
def test_fuzzed_metadata_loads_or_raises_value_error(path, kind):
    """Any single edit of a valid file's metadata (any key path, a value of any JSON type
    or a removed key; the checksum recomputed, as an attacker can) either loads into a
    model that predicts, or raises ValueError: never another exception, at load or at
    the first predict. The first run of this harness found the cases of
    test_forged_values_out_of_range_are_value_errors."""
    X, y = _data()
    if kind == "module":
        obj = nn.Sequential(nn.Linear(4, 3, rng=0), nn.Dropout(0.1), nn.ReLU())
    elif kind == "classifier":
        obj = xpdl.MLPClassifier((5,), max_iter=2, random_state=0, dropout=0.1,
                                 early_stopping=True).fit(X, y)
    else:
        obj = xpdl.MLPRegressor((5,), max_iter=2, random_state=0).fit(X, y * 1.0)
    xpdl.save(obj, path)
    arrays, meta = _parts(path)
    paths = list(_paths(meta))
    r = np.random.default_rng(0)
    for _ in range(150):
        where = paths[r.integers(len(paths))]
        value = _FUZZ_VALUES[r.integers(len(_FUZZ_VALUES))]
        if value is KeyError and isinstance(where[-1], int):
            continue
        _forge(path, arrays, _edit(meta, where, value))
        try:
            back = xpdl.load(path)
            back.predict(X) if kind != "module" else back(X)
        except ValueError:
            pass


def test_optimizer_counters_must_be_non_negative_integers(backend):
    """load_state_dict refuses a step count that is a float, negative, a bool or not a
    number (it turned 2.5 into 2 and raised OverflowError on inf), and an array entry that
    is not an array; the optimizer is unchanged then. 0-d integer arrays are counts."""
    xp = backend.xp
    w = xpdl.Tensor(xp.asarray([1.0, 2.0], device=backend.device), requires_grad=True)
    opt = xpdl.optim.Adam([w], lr=0.1)
    (w * w).sum().backward()
    opt.step()
    good = opt.state_dict()
    key = next(k for k, v in good.items() if isinstance(v, int))
    arr = next(k for k, v in good.items() if not isinstance(v, int))
    for bad in (2.5, -1, float("inf"), True, "3", None):
        with pytest.raises(ValueError, match="step count"):
            opt.load_state_dict(dict(good, **{key: bad}))
    with pytest.raises(ValueError, match="must be an array"):
        opt.load_state_dict(dict(good, **{arr: 1.0}))
    assert opt.state_dict()[key] == 1
    opt.load_state_dict(dict(good, **{key: np.asarray(4)}))
    assert opt.state_dict()[key] == 4


def _model():
    X, y = _data()
    return xpdl.LinearRegression().fit(X, y * 1.0)


def test_new_files_follow_the_umask_and_old_ones_keep_their_mode(tmp_path):
    p = str(tmp_path / "a.safetensors")
    old = os.umask(0o027)
    try:
        xpdl.save(_model(), p)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    os.chmod(p, 0o604)
    xpdl.save(_model(), p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o604


def test_saving_through_a_symlink_replaces_its_target(tmp_path):
    target = tmp_path / "real.safetensors"
    link = tmp_path / "link.safetensors"
    target.write_bytes(b"old")
    link.symlink_to(target)
    xpdl.save(_model(), str(link))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert xpdl.load(str(target)).n_features_in_ == 4
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to(tmp_path / "new.safetensors")
    xpdl.save(_model(), str(dangling))
    assert dangling.is_symlink() and (tmp_path / "new.safetensors").is_file()


def test_saving_over_a_read_only_file_is_refused_and_keeps_it(tmp_path):
    p = tmp_path / "ro.safetensors"
    p.write_bytes(b"keep me")
    os.chmod(p, 0o444)
    with pytest.raises(PermissionError, match="read-only"):
        xpdl.save(_model(), str(p))
    assert p.read_bytes() == b"keep me"
    assert [f for f in os.listdir(tmp_path) if f.startswith(".xpdl-")] == []
