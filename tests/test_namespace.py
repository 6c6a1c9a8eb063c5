"""The backend layer and the seeded generator."""

from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from xpdl import _namespace as ns
from xpdl.random import Generator, as_generator


def test_namespace_and_device_of_inputs(backend):
    a = backend.asarray(np.ones((2, 3)))
    b = backend.asarray(np.zeros(3))
    xp, dev = ns.get_namespace_and_device(a, b, None, 1.5)
    assert xp is backend.xp
    assert dev == backend.device


def test_device_of_and_its_cache_key(backend):
    """device_of reads the device attribute where array_api_compat's device() would
    return it, and answers as device() for every backend (JAX and Dask included); the
    cache key of an unhashable device (CuPy's) is its type and number, so two devices'
    keys differ and one device's are equal."""
    import array_api_compat

    x = backend.asarray(np.ones((2, 3)))
    for _ in range(2):  # (the second call: the type's cached answer)
        assert ns.device_of(x) == array_api_compat.device(x) == backend.device
    hash(ns.device_key(ns.device_of(x)))
    others = [np.ones(2)]
    for name in ("jax.numpy", "dask.array"):
        try:
            mod = __import__(name, fromlist=["ones"])
        except ImportError:
            continue
        others.append(mod.ones(2))
    for o in others:
        assert ns.device_of(o) == array_api_compat.device(o)

    class Dev:  # unhashable, numbered, like cupy.cuda.Device
        __hash__ = None

        def __init__(self, i):
            self.id = i

        def __eq__(self, other):
            return isinstance(other, Dev) and other.id == self.id

    keys = [ns.device_key(Dev(i)) for i in (0, 1, 0)]
    assert keys[0] == keys[2] != keys[1] and len({*keys}) == 2


def test_round_trip_through_host(backend):
    h = np.arange(6.0).reshape(2, 3)
    x = backend.asarray(h)
    assert x.device == backend.device
    back = ns.to_host(x)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, h)


def test_move_changes_dtype_and_namespace(backend):
    x = backend.asarray(np.arange(4.0))
    y = ns.move(x, dtype="float32")
    assert y.dtype == backend.xp.float32
    z = ns.move(x, xp=np)
    assert isinstance(z, np.ndarray)
    np.testing.assert_array_equal(z, np.arange(4.0))


def test_resolve_float_dtype(backend):
    xp = backend.xp
    ints = backend.asarray(np.array([1, 2]), dtype=xp.int64)
    assert ns.resolve_float_dtype(ints, xp, backend.device) == xp.float32
    f = backend.asarray(np.array([1.0]))
    assert ns.resolve_float_dtype(f, xp, backend.device) == f.dtype
    assert ns.resolve_float_dtype(f, xp, backend.device, "float32") == xp.float32
    if not backend.has_float64:
        with pytest.raises(ValueError, match="no float64"):
            ns.resolve_float_dtype(f, xp, backend.device, "float64")
    with pytest.raises(ValueError, match="float32"):
        ns.resolve_float_dtype(f, xp, backend.device, "int8")


def test_mixed_namespaces_are_a_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different namespaces"):
        ns.array_namespace(np.ones(2), torch.ones(2))


def test_mixed_devices_are_a_value_error():
    strict = pytest.importorskip("array_api_strict")
    a = strict.asarray([1.0], device=strict.Device("device1"))
    b = strict.asarray([1.0], device=strict.Device("CPU_DEVICE"))
    with pytest.raises(ValueError, match="different devices"):
        ns.get_namespace_and_device(a, b)


def test_non_arrays_are_a_type_error():
    with pytest.raises(TypeError, match="expected an array"):
        ns.array_namespace([1, 2], None)


def test_same_seed_same_numbers_on_every_backend(backend):
    ref = Generator(42)
    a_ref = ref.normal((3, 4))
    u_ref = ref.uniform((5,), low=-1, high=2)
    p_ref = ref.permutation(10)
    g = Generator(42)
    a = g.normal((3, 4), xp=backend.xp, device=backend.device, dtype=backend.float_dtype)
    u = g.uniform((5,), low=-1, high=2, xp=backend.xp, device=backend.device,
                  dtype=backend.float_dtype)
    p = g.permutation(10, xp=backend.xp, device=backend.device)
    assert a.device == backend.device and a.dtype == backend.float_dtype
    # float32 draws are the host float64 draws rounded once, identically everywhere.
    exp_dtype = np.float64 if backend.has_float64 else np.float32
    np.testing.assert_array_equal(backend.to_numpy(a), a_ref.astype(exp_dtype))
    np.testing.assert_array_equal(backend.to_numpy(u), u_ref.astype(exp_dtype))
    np.testing.assert_array_equal(backend.to_numpy(p), p_ref)


def test_default_draw_dtype_is_float32(backend):
    a = Generator(0).normal((2,), xp=backend.xp, device=backend.device)
    assert a.dtype == backend.xp.float32


def test_generator_state_round_trip():
    import json

    g = Generator(3)
    g.normal((5,))
    state = json.loads(json.dumps(g.get_state()))
    x = g.normal((4,))
    h = Generator(0)
    h.set_state(state)
    np.testing.assert_array_equal(h.normal((4,)), x)
    with pytest.raises(ValueError, match="PCG64"):
        h.set_state({"bit_generator": "MT19937"})


def test_as_generator():
    g = Generator(1)
    assert as_generator(g) is g
    assert isinstance(as_generator(5), Generator)
    assert isinstance(as_generator(None), Generator)
    with pytest.raises(TypeError, match="rng"):
        as_generator(np.random.default_rng(0))
    with pytest.raises(ValueError, match="seed"):
        Generator(-1)


@pytest.mark.parametrize("call,match", [
    # each was taken: p=2 and rate=2 as certainty, NaN as never, -1 as an empty
    # permutation, True as one, a fraction of 1.5 as an empty training set
    (lambda g: g.bernoulli(2.0, (3,)), "bernoulli: p must be a probability"),
    (lambda g: g.bernoulli(float("nan"), (3,)), "bernoulli: p must be a probability"),
    (lambda g: g.poisson_indices(10, 2.0), "rate must be a probability"),
    (lambda g: g.poisson_indices(10, float("nan")), "rate must be a probability"),
    (lambda g: g.poisson_indices(-1, 0.5), "poisson_indices: n must be"),
    (lambda g: g.permutation(-1), "permutation: n must be a non-negative int"),
    (lambda g: g.permutation(2.5), "permutation: n must be a non-negative int"),
    (lambda g: g.permutation(True), "permutation: n must be a non-negative int"),
    (lambda g: g.split_indices(10, 1.5), r"fraction must be in \(0, 1\)"),
    (lambda g: g.split_indices(10, float("nan")), r"fraction must be in \(0, 1\)"),
    # NaN parameters gave NaN draws, an integer dtype truncated them
    (lambda g: g.normal((3,), scale=float("nan")), "loc and scale must be finite"),
    (lambda g: g.uniform((3,), high=float("inf")), "low and high must be finite"),
    (lambda g: g.normal((3,), dtype=np.int32), "dtype must be a floating dtype"),
    (lambda g: g.uniform((3,), dtype="int64"), "dtype must be a floating dtype"),
])
def test_generator_draws_name_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(Generator(0))


def test_generator_draws_at_their_edges(backend):
    g = Generator(0)
    kw = dict(xp=backend.xp, device=backend.device)
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        g.normal((3,), dtype=backend.xp.int32, **kw)
    assert g.normal((3,), dtype=backend.float_dtype, **kw).dtype == backend.float_dtype
    assert backend.to_numpy(g.bernoulli(0.0, (4,), **kw)).tolist() == [0.0] * 4
    assert backend.to_numpy(g.bernoulli(1.0, (4,), **kw)).tolist() == [1.0] * 4
    assert backend.to_numpy(g.poisson_indices(5, 1.0, **kw)).tolist() == [0, 1, 2, 3, 4]
    assert tuple(g.permutation(0, **kw).shape) == (0,)
    assert sorted(backend.to_numpy(g.permutation(np.int64(4), **kw)).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("axis,keepdims", [(None, False), (None, True), (0, False), (1, True),
                                           ((0, 2), False), (-1, True)])
def test_sum_of_and_max_of_are_the_namespace_reductions(backend, rng, axis, keepdims):
    # NumPy takes the ufunc reduction without np.sum's Python layers: the same bits as
    # np.sum / np.max; every other namespace its own xp.sum / xp.max
    h = rng.standard_normal((3, 4, 5))
    x = backend.asarray(h)
    for got, ref in ((ns.sum_of(backend.xp, x, axis=axis, keepdims=keepdims),
                      np.sum(h, axis=axis, keepdims=keepdims)),
                     (ns.max_of(backend.xp, x, axis=axis, keepdims=keepdims),
                      np.max(h, axis=axis, keepdims=keepdims))):
        got = backend.to_numpy(got)
        assert got.shape == np.shape(ref)
        if backend.name == "numpy":
            np.testing.assert_array_equal(got, ref)
        else:
            np.testing.assert_allclose(got, ref, rtol=backend.rtol, atol=backend.rtol)
    g = backend.asarray(h[:, :, 0])
    out = ns.sum0_into(backend.xp, g)
    np.testing.assert_allclose(backend.to_numpy(out), h[:, :, 0].sum(axis=0),
                               rtol=backend.rtol)


# -- products inside a CUDA graph capture on CuPy (cuBLAS called by xpdl) ----------------
class _HostArray:
    """A NumPy array dressed as a CuPy one (``.data.ptr``) for :class:`_ColumnMajorBlas`."""

    def __init__(self, h):
        self.h = h
        self.data = type("Ptr", (), {"ptr": h.ctypes.data})()
        for name in ("flags", "strides", "itemsize", "shape", "ndim", "dtype"):
            setattr(self, name, getattr(h, name))

    @property
    def T(self):
        return _HostArray(self.h.T)


class _ColumnMajorBlas:
    """BLAS's column-major ``gemm`` over host memory, reading operands from the pointers,
    leading dimensions and transposes it is given, as cuBLAS reads device memory."""

    @staticmethod
    def _matrix(ptr, rows, cols, ld, dtype):
        size = np.dtype(dtype).itemsize
        buf = np.frombuffer((ctypes.c_char * ((ld * (cols - 1) + rows) * size)).from_address(
            ptr), dtype=dtype)
        return np.lib.stride_tricks.as_strided(buf, (rows, cols), (size, ld * size),
                                               writeable=True)

    def _gemm(self, dtype, opa, opb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        a = self._matrix(A, k, m, lda, dtype).T if opa else self._matrix(A, m, k, lda, dtype)
        b = self._matrix(B, n, k, ldb, dtype).T if opb else self._matrix(B, k, n, ldb, dtype)
        c = self._matrix(C, m, n, ldc, dtype)
        assert beta._obj.value == 0.0
        c[...] = alpha._obj.value * (a @ b)
        return 0

    def sgemm(self, h, opa, opb, m, n, k, alpha, A, ta, lda, B, tb, ldb, beta, C, tc, ldc):
        assert ta == tb == tc and ta in (0, 2)  # CUDA_R_32F, CUDA_R_16F
        return self._gemm(np.float32 if ta == 0 else np.float16, opa, opb, m, n, k, alpha, A,
                          lda, B, ldb, beta, C, ldc)

    def dgemm(self, h, opa, opb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        return self._gemm(np.float64, opa, opb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)


def _assert_product(got, a, b):
    """``got`` is ``a @ b`` to the rounding of the operands' dtype: against the float64
    product on the host, within ``4 k eps`` times ``|a| @ |b|`` (a product read with the
    wrong layout is off by the values themselves)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    bound = 4 * a.shape[1] * np.finfo(a.dtype).eps * (np.abs(a64) @ np.abs(b64))
    assert got.dtype == a.dtype and got.shape == (a.shape[0], b.shape[1])
    assert np.all(np.abs(got.astype(np.float64) - a64 @ b64) <= bound), (got, a64 @ b64)


def _layouts(rng, dtype):
    """(a, b) pairs of 2-d arrays of every layout a replayed program multiplies: C- and
    F-contiguous (a transposed weight, ``g.T``), single rows and columns (``sumsq``)."""
    shapes = [((5, 3), (3, 4)), ((1, 6), (6, 1)), ((6, 1), (1, 3)), ((4, 7), (7, 2))]
    for (m, k), (_, n) in shapes:
        for fa in (False, True):
            for fb in (False, True):
                a = rng.standard_normal((k, m) if fa else (m, k)).astype(dtype)
                b = rng.standard_normal((n, k) if fb else (k, n)).astype(dtype)
                yield (a.T if fa else a), (b.T if fb else b)


def test_captured_products_call_cublas_with_the_operands_layouts(backend, rng, monkeypatch):
    """While a CuPy capture runs, 2-d products call cuBLAS through CuPy's handle (CuPy
    refuses to): the operands' layouts become cuBLAS's transposes and leading dimensions.
    On a GPU the products are captured in a graph and launched; on NumPy a column-major
    BLAS over host memory stands in for cuBLAS. Both against float64 products on the host
    (CuPy's own float16 product of a row and a column sums in float16: 1.5% off on the
    H200, where cuBLAS's float32 sums were within rounding)."""
    if backend.kind == "cupy":
        import cupy

        from xpdl.autodiff.program import _CupyGraphs

        graphs = _CupyGraphs()
        assert graphs.usable(None)
        for dtype in (np.float16, np.float32, np.float64):
            for a, b in _layouts(rng, dtype):
                # (the same layouts on the device: a transposed view where NumPy's is)
                A = cupy.asarray(a.T).T if not a.flags.c_contiguous else cupy.asarray(a)
                B = cupy.asarray(b.T).T if not b.flags.c_contiguous else cupy.asarray(b)
                out = cupy.zeros((a.shape[0], b.shape[1]), dtype=dtype)
                graph, got = graphs.capture(lambda A=A, B=B: (
                    ns.matmul_into(cupy, A, B), ns.matmul_into(cupy, A, B, out)))
                out[...] = 0
                graphs.launch(graph)
                for r in got:
                    _assert_product(cupy.asnumpy(r), a, b)
        return
    if backend.kind != "numpy":
        pytest.skip("CuPy's captured products (NumPy stands in on the CPU)")
    stream = types.SimpleNamespace(ptr=7)  # (the current stream)
    fake_cupy = types.SimpleNamespace(
        float16=np.float16, float32=np.float32, float64=np.float64,
        empty=lambda shape, dtype: _HostArray(np.empty(shape, dtype)),
        cuda=types.SimpleNamespace(get_current_stream=lambda: stream))
    gemm = object.__new__(ns._CublasInCapture)
    blas = _ColumnMajorBlas()
    streams = []  # each cublasSetStream call's (handle, stream)
    gemm.cupy, gemm.ct, gemm.handle = fake_cupy, ctypes, lambda: 3
    gemm.set_stream = lambda h, s: streams.append((h, s)) or 0
    gemm.sgemm, gemm.dgemm = blas.sgemm, blas.dgemm
    n = 0
    for dtype in (np.float16, np.float32, np.float64):
        for a, b in _layouts(rng, dtype):
            out = np.full((a.shape[0], b.shape[1]), np.nan, dtype=dtype)
            for got in (gemm(_HostArray(a), _HostArray(b)).h,
                        gemm(_HostArray(a), _HostArray(b), _HostArray(out)).h):
                _assert_product(got, a, b)
                n += 1
    assert n == 96
    assert set(streams) == {(3, 7)}  # the current device's handle, on the current stream
    # the context routes CuPy products here and gives the handle back to the stream
    # current when it ends (the capture's own stream may be freed)
    monkeypatch.setattr(ns.capturing_products, "_gemm", gemm)
    monkeypatch.setattr(ns, "is_cupy", lambda xp: xp is fake_cupy)
    a, b = next(_layouts(rng, np.float64))
    with ns.capturing_products():
        stream.ptr = 9
        _assert_product(ns.matmul_into(fake_cupy, _HostArray(a), _HostArray(b)).h, a, b)
        stream.ptr = 7
    assert streams[-2:] == [(3, 9), (3, 7)] and ns._CAPTURE_GEMM is None
    with pytest.raises(NotImplementedError, match="strided operand"):
        gemm(_HostArray(np.ones((4, 6))[:, ::2]), _HostArray(np.ones((3, 2))))
    with pytest.raises(NotImplementedError, match="2-d float"):
        gemm(_HostArray(np.ones((2, 2), np.int64)), _HostArray(np.ones((2, 2), np.int64)))
