"""Half precision (#16.6): float16 inputs computed in float32 as scikit-learn accepts them;
float16/bfloat16 parameters through nn, optim and compile_step where the backend has them;
files that round-trip both bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import xpdl
from xpdl import _namespace as ns
from xpdl import losses, nn, optim

pytestmark = pytest.mark.filterwarnings("ignore:xpdl.*max_iter")


def _half(backend, name):
    dt = getattr(backend.xp, name, None)
    if dt is None:
        pytest.skip(f"{backend.name} has no {name}")
    return dt


@pytest.mark.parametrize("Est", [xpdl.LinearRegression, xpdl.LogisticRegression,
                                 xpdl.MLPClassifier])
def test_float16_inputs_are_computed_in_float32(backend, Est):
    f16 = _half(backend, "float16")
    g = np.random.default_rng(0)
    X = g.normal(size=(60, 4)).astype(np.float16)
    y = (X[:, 0] > 0).astype(np.int64) if Est is not xpdl.LinearRegression else \
        X.astype(np.float64) @ np.array([1.0, -2.0, 0.5, 3.0])
    yb = backend.asarray(y, dtype=backend.xp.int64 if y.dtype.kind == "i" else None)
    kw = dict(max_iter=5, random_state=0) if Est is xpdl.MLPClassifier else {}
    half = Est(**kw).fit(backend.asarray(X, dtype=f16), yb)
    assert ns.dtype_name(backend.xp, half._dtype) == "float32"
    ref = Est(**kw).fit(backend.asarray(X.astype(np.float32), dtype=backend.xp.float32), yb)
    Xq = backend.asarray(X, dtype=f16)
    np.testing.assert_allclose(backend.to_numpy(half.predict(Xq)).astype(float),
                               backend.to_numpy(ref.predict(Xq)).astype(float),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_half_precision_parameters_train(backend, name, opt, tmp_path):
    """A Sequential in half precision trained through compile_step: the first step's loss
    equals the float32 model's (same initial values, rounded) to half precision, training
    lowers the loss, and save/load gives back the same bits."""
    dt = _half(backend, name)
    g = np.random.default_rng(1)
    Xh = g.normal(size=(64, 3))
    yh = (Xh[:, 0] + Xh[:, 1] > 0).astype(np.int64)

    def build(dtype):
        gen = xpdl.random.Generator(0)
        kw = dict(rng=gen, xp=backend.xp, device=backend.device, dtype=dtype)
        return nn.Sequential(nn.Linear(3, 8, **kw), nn.Tanh(), nn.Linear(8, 2, **kw))

    model, ref = build(name), build("float32")
    make = (lambda m: optim.SGD(m, lr=0.1)) if opt == "sgd" else \
        (lambda m: optim.Adam(m, lr=1e-2, eps=1e-3))  # 1e-8 is 0 in float16, as in torch
    step = xpdl.compile_step(model, losses.cross_entropy, make(model))
    X = ns.from_host(Xh, backend.xp, device=backend.device, dtype=dt)
    y = backend.asarray(yh, dtype=backend.xp.int64)
    first = float(step(X, y))
    want = float(losses.cross_entropy(ref(backend.asarray(Xh, dtype=backend.xp.float32)),
                                      y).data)
    assert first == pytest.approx(want, rel=2e-2)
    for _ in range(40):
        last = float(step(X, y))
    assert last < 0.8 * first
    assert str(model[0].weight.dtype).endswith(name)
    path = tmp_path / "m.safetensors"
    xpdl.save(model, path)
    back = xpdl.load(path, xp=backend.xp, device=backend.device)
    for a, b in zip(model.parameters(), back.parameters()):
        assert str(b.dtype).endswith(name)
        np.testing.assert_array_equal(ns.to_host(a.data).astype(np.float32),
                                      ns.to_host(b.data).astype(np.float32))


def test_bfloat16_host_arrays_round_trip(tmp_path):
    """bfloat16 on the host is ml_dtypes' (JAX installs it): stored as BF16 and read back
    bit for bit."""
    ml = pytest.importorskip("ml_dtypes")
    from xpdl.io import _decode, _encode

    a = np.array([1.0, -2.5, 3.1415, 1e-3, 65504.0], dtype=np.float32).astype(ml.bfloat16)
    arrays, _ = _decode(_encode({"w": a}, {"format": "xpdl", "format_version": 2}), "x")
    assert arrays["w"].dtype == a.dtype
    np.testing.assert_array_equal(arrays["w"].view(np.uint16), a.view(np.uint16))
