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
