"""Traceable inference (#16.4): predict on traced and symbolic arrays (jax.jit, ndonnx) and
xpdl.export_onnx, checked against onnxruntime (an independent ONNX executor)."""

from __future__ import annotations

import numpy as np
import pytest

import xpdl
from xpdl import nn

pytestmark = pytest.mark.filterwarnings("ignore:xpdl.*max_iter")


def _data(n=80, p=5, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, p)).astype(np.float32)
    y3 = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.3)
    return X, y3


CASES = {
    "mlpc_multiclass": (lambda: xpdl.MLPClassifier((8,), max_iter=5, random_state=0), "y3"),
    "mlpc_binary_strings": (lambda: xpdl.MLPClassifier((8,), max_iter=5, random_state=0),
                            "strings"),
    "logistic_binary": (lambda: xpdl.LogisticRegression(), "y2"),
    "logistic_multiclass": (lambda: xpdl.LogisticRegression(), "y3"),
    "linear_two_targets": (lambda: xpdl.LinearRegression(alpha=0.1), "Y"),
    "mlpr": (lambda: xpdl.MLPRegressor((8, 4), activation="tanh", max_iter=5,
                                       random_state=0), "y"),
}


def _targets(kind, X, y3, backend=None):
    y = {"y3": y3, "y2": (y3 > 0).astype(np.int64),
         "strings": np.array(["cat", "dog"])[(y3 > 0).astype(int)],
         "Y": np.stack([X @ np.arange(1.0, 6.0), X[:, 0] - X[:, 1]], axis=1),
         "y": np.sin(X[:, 0]) + X[:, 1]}[kind]
    if backend is None or kind == "strings":
        return y
    return backend.asarray(y, dtype=backend.xp.int64 if y.dtype.kind == "i" else
                           backend.xp.float32)


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_onnx_matches_onnxruntime(backend, case, tmp_path):
    """Fitted on any backend in float32, exported, run by onnxruntime: labels equal and
    probabilities/predictions within 1e-6 of xpdl's own (float32)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("ndonnx")
    make, kind = CASES[case]
    X, y3 = _data()
    Xb = backend.asarray(X, dtype=backend.xp.float32)
    est = make().fit(Xb, _targets(kind, X, y3, backend))
    path = tmp_path / "m.onnx"
    xpdl.export_onnx(est, path, ("N", X.shape[1]))
    sess = ort.InferenceSession(str(path))
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {"X": X})))
    if hasattr(est, "predict_proba"):
        assert names == ["label", "probabilities"]
        np.testing.assert_array_equal(got["label"], backend.to_numpy(est.predict(Xb)))
        np.testing.assert_allclose(got["probabilities"], backend.to_numpy(est.predict_proba(Xb)),
                                   atol=1e-6, rtol=0)
    else:
        assert names == ["prediction"]
        np.testing.assert_allclose(got["prediction"], backend.to_numpy(est.predict(Xb)),
                                   atol=1e-6, rtol=1e-6)
    # the exported model was a copy: the original still predicts on its own backend
    assert xpdl._namespace.array_namespace(est.module_.parameters()[0].data) is backend.xp


def test_export_onnx_of_a_hand_built_module(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("ndonnx")
    g = xpdl.random.Generator(0)
    model = nn.Sequential(nn.Linear(5, 16, rng=g), nn.Tanh(), nn.Dropout(0.5, rng=g),
                          nn.Linear(16, 8, rng=g), nn.ReLU(), nn.Linear(8, 3, rng=g),
                          nn.Sigmoid())
    model.train()  # export evaluates (dropout off) without changing the model's mode
    X, _ = _data()
    xpdl.export_onnx(model, tmp_path / "m.onnx", ("N", 5))
    (out,) = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"X": X})
    assert model.training
    model.eval()
    np.testing.assert_allclose(out, model(X).data, atol=1e-6)


def test_predict_on_symbolic_arrays_does_not_read_values():
    """An ndonnx graph input has no values: the NaN check skips it instead of failing."""
    ndx = pytest.importorskip("ndonnx")
    X, y3 = _data()
    est = xpdl.MLPClassifier((4,), max_iter=3, random_state=0).fit(X, y3)
    from xpdl.export import _light_copy

    c = _light_copy(est)
    c.to(xp=ndx)
    x = ndx.argument(shape=("N", 5), dtype=ndx.float32)
    proba = c.predict_proba(x)
    assert isinstance(proba, ndx.Array)
    with pytest.raises(ValueError, match="contains NaN"):  # concrete arrays are still checked
        est.predict(np.full((2, 5), np.nan, dtype=np.float32))


def test_saving_a_model_moved_to_ndonnx_works(tmp_path):
    ndx = pytest.importorskip("ndonnx")
    X, y3 = _data()
    est = xpdl.LogisticRegression().fit(X, y3)
    from xpdl.export import _light_copy

    c = _light_copy(est)
    c.to(xp=ndx)
    xpdl.save(c, tmp_path / "m.safetensors")
    back = xpdl.load(tmp_path / "m.safetensors")
    np.testing.assert_allclose(back.predict_proba(X), est.predict_proba(X), rtol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_inference_under_jax_jit(case):
    """predict, predict_proba and decision_function of a model on JAX run inside jax.jit
    (the input checks do not read the traced values) and equal the eager results."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    make, kind = CASES[case]
    X, y3 = _data()
    Xj = jnp.asarray(X)
    y = _targets(kind, X, y3)
    if kind == "strings":  # labels live on the host: a clear error, not JAX's tracer one
        est = make().fit(Xj, y)
        with pytest.raises(TypeError, match="traced input.*predict_proba"):
            jax.jit(est.predict)(Xj)
        np.testing.assert_array_equal(
            est.classes_[np.argmax(np.asarray(jax.jit(est.predict_proba)(Xj)), axis=1)],
            est.predict(Xj))
        return
    est = make().fit(Xj, jnp.asarray(y))
    for method in ("predict", "predict_proba", "decision_function"):
        f = getattr(est, method, None)
        if f is None:
            continue
        np.testing.assert_allclose(np.asarray(jax.jit(f)(Xj)), np.asarray(f(Xj)), rtol=1e-5,
                                   atol=1e-6)
    g = xpdl.random.Generator(0)
    model = nn.Sequential(nn.Linear(5, 7, rng=g, xp=jnp), nn.ReLU(), nn.Linear(7, 2, rng=g,
                                                                                 xp=jnp))
    model.eval()
    np.testing.assert_allclose(np.asarray(jax.jit(lambda a: model(a).data)(Xj)),
                               np.asarray(model(Xj).data), rtol=1e-5, atol=1e-6)


def test_export_onnx_names_bad_arguments_and_writes_atomically(backend, tmp_path):
    # an unfitted estimator was AttributeError 'parameters'; a callable the same; "3" as
    # input_shape became a 1-D shape; (-1, 3) wrote a model onnxruntime failed to run; a
    # missing folder surfaced from onnx.save
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("ndonnx")
    X, y3 = _data()
    Xb = backend.asarray(X, dtype=backend.xp.float32)
    est = xpdl.LogisticRegression().fit(Xb, backend.asarray(y3, dtype=backend.xp.int64))
    path = tmp_path / "m.onnx"
    with pytest.raises(xpdl.NotFittedError):
        xpdl.export_onnx(xpdl.LogisticRegression(), path, ("N", 5))
    with pytest.raises(TypeError, match="model must be a fitted xpdl estimator or an xpdl.nn"):
        xpdl.export_onnx(lambda x: x, path, ("N", 5))
    with pytest.raises(TypeError, match="input_shape must be a tuple"):
        xpdl.export_onnx(est, path, "5")
    for bad in ((-1, 5), ("N", 0)):
        with pytest.raises(ValueError, match="sizes in input_shape must be >= 1"):
            xpdl.export_onnx(est, path, bad)
    with pytest.raises(TypeError, match="each size in input_shape must be an int"):
        xpdl.export_onnx(est, path, ("N", 5.0))
    with pytest.raises(FileNotFoundError, match="export_onnx: the folder does not exist"):
        xpdl.export_onnx(est, tmp_path / "nope" / "m.onnx", ("N", 5))
    with pytest.raises(TypeError, match="path must be a str"):
        xpdl.export_onnx(est, 3, ("N", 5))
    assert not path.exists()  # nothing written by the refused calls
    path.write_bytes(b"an older model")
    xpdl.export_onnx(est, str(path), (None, np.int64(5)))  # None and NumPy ints are sizes too
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left
    sess = ort.InferenceSession(str(path))
    np.testing.assert_allclose(sess.run(None, {"X": X})[1],
                               backend.to_numpy(est.predict_proba(Xb)), atol=1e-6, rtol=0)


def test_export_onnx_of_flatten_and_softplus_layers(tmp_path):
    """Images flattened by nn.Flatten (the batch axis symbolic: its length unknown while
    tracing) and nn.Softplus export, equal to the module under onnxruntime; two unknown
    lengths in one flattened shape are a ValueError naming the shape."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("ndonnx")
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4, rng=0), nn.Softplus(2.0, 1.0),
                          nn.Linear(4, 2, rng=1))
    X = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    xpdl.export_onnx(model, tmp_path / "m.onnx", ("N", 2, 3))
    (out,) = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"X": X})
    np.testing.assert_allclose(out, model(X).data, atol=1e-6)
    with pytest.raises(ValueError, match="more than one axis of unknown length"):
        xpdl.export_onnx(nn.Sequential(nn.Flatten(1, 2), nn.Linear(6, 1, rng=0)),
                         tmp_path / "n.onnx", ("N", "M", 3))
    # one unknown length in the merged axes is fine: (N, M, 3) -> (N * M, 3)
    xpdl.export_onnx(nn.Sequential(nn.Flatten(0, 1), nn.Linear(3, 1, rng=0)),
                     tmp_path / "k.onnx", ("N", "M", 3))
