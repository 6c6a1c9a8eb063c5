"""The one place that knows about backends.

Everything else in xpdl asks this module for the namespace, device and dtype of
its inputs and never imports a backend itself. NumPy appears here only to move
data to and from the host at the edges (random draws, file IO, datasets).
"""

from __future__ import annotations

import importlib
import sys
import types

import array_api_compat
import numpy as np

__all__ = [
    "array_namespace",
    "get_namespace_and_device",
    "device_of",
    "device_key",
    "same_device",
    "is_array",
    "backend_name",
    "is_jax",
    "is_numpy",
    "is_torch",
    "is_cupy",
    "is_strict",
    "supports_inplace",
    "may_share_memory",
    "supports_float64",
    "default_float_dtype",
    "resolve_float_dtype",
    "dtype_name",
    "dtype_from_name",
    "is_floating",
    "to_host",
    "from_host",
    "move",
    "as_input_array",
    "host_xp",
    "host_asarray",
    "aligned",
    "is_host_array",
    "quiet_fp",
    "mask_multiply",
    "sumsq",
    "index_dtype",
    "native_module",
]

_FLOAT_NAMES = ("float32", "float64")
_PY_SCALARS = (bool, int, float, complex)
_DTYPE_NAMES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "complex64", "complex128", "float16", "bfloat16",
)
_HALF = ("float16", "bfloat16")


# The namespace of an array depends only on its type: cache it, since array_namespace is on
# the hot path of every operation that receives a plain array.
_TYPE_NS: dict = {}


def is_array(x) -> bool:
    """True for an array of a supported namespace (not for Python scalars)."""
    if type(x) in _TYPE_NS:
        return True
    return array_api_compat.is_array_api_obj(x) and type(x) not in _PY_SCALARS


def _arrays(args):
    return [a for a in args if a is not None and is_array(a)]


def array_namespace(*arrays):
    """The Array API namespace of ``arrays`` (``None`` and Python scalars are ignored).

    Raises
    ------
    TypeError
        If the arrays come from different namespaces (for example NumPy and torch),
        or if no argument is an array.
    """
    if len(arrays) == 1:
        xp = _TYPE_NS.get(type(arrays[0]))
        if xp is not None:
            return xp
    arrs = _arrays(arrays)
    if not arrs:
        names = ", ".join(type(a).__name__ for a in arrays) or "nothing"
        raise TypeError(f"xpdl: expected an array (NumPy, CuPy, torch, JAX, array_api_strict); "
                        f"got {names}")
    try:
        xp = array_api_compat.array_namespace(*arrs)
    except TypeError as exc:
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in arrs})
        raise TypeError(
            "xpdl: arrays from different namespaces were mixed in one call "
            f"({', '.join(kinds)}); convert them to one namespace first "
            "(e.g. with xpdl's model.to(xp=...) or the backend's asarray)") from exc
    if len(arrs) == 1:
        _TYPE_NS[type(arrs[0])] = xp
    return xp


# array type -> "cpu" (NumPy), True (the ``device`` attribute is the device: CuPy, torch,
# array_api_strict, ...) or False (array_api_compat's device() decides: Dask, JAX, sparse)
_DEVICE_HOW: dict = {}
# device type -> whether its instances hash (CuPy's Device does not)
_HASHES: dict = {}


def device_of(x):
    """The device of array ``x`` (array_api_compat's ``device``; its answer is the
    ``device`` attribute for all but NumPy, Dask, JAX and sparse arrays, and the step's
    guards ask for it on every call: that is read directly)."""
    t = type(x)
    how = _DEVICE_HOW.get(t)
    if how is None:
        c = array_api_compat
        how = _DEVICE_HOW[t] = "cpu" if c.is_numpy_array(x) else not (
            c.is_dask_array(x) or c.is_jax_array(x) or c.is_pydata_sparse_array(x))
    if how is True:
        return x.device
    return how or array_api_compat.device(x)


def device_key(d):
    """A hashable stand-in for device ``d`` in a cache key: the device itself where it
    hashes, else its type and number (CuPy's ``Device`` is unhashable), or its type and
    text without a number."""
    t = type(d)
    hashes = _HASHES.get(t)
    if hashes is None:
        try:
            hash(d)
            hashes = True
        except TypeError:
            hashes = False
        _HASHES[t] = hashes
    if hashes:
        return d
    i = getattr(d, "id", None)
    return (t.__name__, i) if isinstance(i, int) else (t.__name__, i, str(d))


def same_device(a, b) -> bool:
    # Devices are compared with ==, never hashed: CuPy devices are unhashable.
    if a == b:
        return True
    # torch: device("cuda") means the current CUDA device, the same as device("cuda", i).
    ta, tb = getattr(a, "type", None), getattr(b, "type", None)
    if ta is not None and ta == tb and type(a).__module__.startswith("torch"):
        ia, ib = a.index, b.index
        if ia is None or ib is None:
            import torch

            cur = torch.cuda.current_device() if ta == "cuda" else 0
            return (cur if ia is None else ia) == (cur if ib is None else ib)
    return False


def get_namespace_and_device(*arrays):
    """Namespace and device shared by ``arrays``.

    Raises
    ------
    TypeError
        Mixed namespaces.
    ValueError
        Arrays on different devices.
    """
    xp = array_namespace(*arrays)
    arrs = _arrays(arrays)
    dev = device_of(arrs[0])
    for a in arrs[1:]:
        d = device_of(a)
        if not same_device(d, dev):
            raise ValueError(f"xpdl: arrays on different devices were mixed in one call "
                             f"({dev!r} and {d!r}); move them to one device first")
    return xp, dev


_BACKEND: dict = {}


def backend_name(xp) -> str:
    """Short name of a namespace: 'numpy', 'cupy', 'torch', 'jax', 'array_api_strict'
    (memoised: it is asked on every optimizer step)."""
    name = _BACKEND.get(id(xp))
    if name is None:
        name = _BACKEND[id(xp)] = _backend_name(xp)
    return name


def _backend_name(xp) -> str:
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_jax_namespace(xp):
        return "jax"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", repr(xp))


def is_numpy(xp) -> bool:
    return backend_name(xp) == "numpy"


def is_cupy(xp) -> bool:
    return backend_name(xp) == "cupy"


def is_torch(xp) -> bool:
    return backend_name(xp) == "torch"


def is_jax(xp) -> bool:
    return backend_name(xp) == "jax"


def is_strict(xp) -> bool:
    return backend_name(xp) == "array_api_strict"


_INPLACE: dict = {}
_BOOL_MUL: dict = {}


def host_object_array(items):
    """A 1-D NumPy object array of ``items`` (feature names)."""
    return np.asarray(list(items), dtype=object)


def has_values(x) -> bool:
    """Whether the values of array ``x`` can be read now: False for arrays traced by
    ``jax.jit``, Dask arrays and ndonnx arrays without a propagated value (an ONNX graph's
    input). Input checks that read values (NaN, negative weights) skip such arrays rather
    than force a computation or fail."""
    mod = type(x).__module__
    if mod.startswith("numpy") or mod.startswith("torch") or mod.startswith("cupy"):
        return True
    if mod.startswith("jax"):
        try:
            import jax

            return not isinstance(x, jax.core.Tracer)
        except (ImportError, AttributeError):  # pragma: no cover
            return True
    if mod.startswith("dask"):
        return False
    if mod.startswith("ndonnx"):
        try:
            x.unwrap_numpy()
        except ValueError:
            return False
        return True
    return True


def values_on_host(xp, arrays) -> bool:
    """Whether reading the values of ``arrays`` (of namespace ``xp``) costs no device
    synchronisation: NumPy, JAX, torch tensors on the CPU and array_api_strict's default
    device; not CuPy, torch on CUDA, or array_api_strict's other devices, which stand in
    for accelerators in the tests (a replayed program checks values only where this
    holds)."""
    if is_cupy(xp):
        return False
    if is_torch(xp):
        return all(getattr(a, "device", None) is None or a.device.type == "cpu"
                   for a in arrays if is_array(a))
    if is_strict(xp):
        host = xp.Device("CPU_DEVICE")
        return all(a.device == host for a in arrays if is_array(a))
    return True


def lit(xp, value, like):
    """``value`` (a Python scalar) as an argument of an ``xp`` function next to array
    ``like``: as it is where the namespace takes Python scalars in functions (the 2024.12
    standard: NumPy, CuPy, torch, JAX, array_api_strict at 2024.12), else a 0-d array of
    ``like``'s dtype and device (array_api_strict at 2023.12)."""
    if not isinstance(value, (int, float, bool)) or not is_strict(xp) or \
            getattr(xp, "__array_api_version__", "2024.12") >= "2024.12":
        return value
    dt = like.dtype
    if isinstance(value, float) and not xp.isdtype(dt, ("real floating", "complex floating")):
        dt = default_float_dtype(xp, device_of(like))
    return xp.asarray(value, dtype=dt, device=device_of(like))


def maximum_zero(xp, d, out=None):
    """``xp.maximum(d, 0)`` in ``d``'s dtype (NaN stays NaN), written into ``out`` when
    given (an array of :func:`native_module`'s module). On NumPy against a zero-filled
    array of ``d``'s shape, written over it: NumPy's loop for two arrays is vectorized and
    its loop for a scalar operand is not (measured over 256 x 512 float32: 24 us against
    67 us; the same values). ``np.zeros``, not ``zeros_like`` (a Python function that
    fills with a broadcast 0: 191 against 141 us over 512 x 2048)."""
    if _ufunc_reduce(xp):
        if out is None:
            out = np.zeros(d.shape, d.dtype)
            return np.maximum(d, out, out=out)
        return np.maximum(d, _zeros(d.shape, d.dtype), out=out)
    zero = lit(xp, 0.0 if xp.isdtype(d.dtype, "real floating") else 0, d)
    if out is None and not is_torch(xp):
        return xp.maximum(d, zero)
    # (torch: ``clamp_min`` takes the scalar as it is; array-api-compat's ``maximum`` makes
    # a tensor of it, a host-to-device copy that a CUDA graph's capture refuses)
    return native_module(xp).maximum(d, zero, out=out)


_ZEROS: dict = {}


def _zeros(shape, dtype):
    """A read-only NumPy zero array of ``shape`` and ``dtype``, kept (a few shapes) for
    ReLU into a planned buffer: against it NumPy's vectorized loop runs without filling a
    fresh zero array first (measured over 256 x 512 float32: 20.5 us against 24-29 us)."""
    key = (shape, dtype.str)
    z = _ZEROS.get(key)
    if z is None:
        if len(_ZEROS) >= 16:
            _ZEROS.clear()
        z = _ZEROS[key] = np.zeros(shape, dtype)
        z.flags.writeable = False
    return z


def mask_multiply(xp, g, mask, out=None):
    """``g * mask`` for a boolean ``mask``, written into ``out`` when given (as
    :func:`maximum_zero`): NumPy, CuPy and torch multiply by booleans directly (one pass);
    the standard needs the mask cast to ``g``'s dtype first. On NumPy the cast first too,
    then an in-place product: its mixed bool-float loop casts through a buffer (measured
    over 512 x 2048 float32: 588 against 417 us; the same bits)."""
    if _ufunc_reduce(xp) and mask.shape == g.shape:
        if out is None:
            out = mask.astype(g.dtype)
        else:
            np.copyto(out, mask)
        return np.multiply(out, g, out=out)
    if out is not None:
        return native_module(xp).multiply(g, mask, out=out)
    ok = _BOOL_MUL.get(id(xp))
    if ok is None:
        ok = _BOOL_MUL[id(xp)] = is_numpy(xp) or is_cupy(xp) or is_torch(xp)
    return g * mask if ok else g * xp.astype(mask, g.dtype)


_NATIVE: dict = {}


class _TorchOut:
    """torch's ``matmul``, ``sum``, ``add``, ``multiply`` and ``maximum`` (with a scalar)
    under NumPy's names and keywords, writing into ``out=`` (what :func:`matmul_into`,
    :func:`sum0_into`, :func:`maximum_zero`, :func:`mask_multiply` and a replayed
    program's gradient sums call)."""

    def __init__(self, torch):
        self.torch = torch

    def matmul(self, a, b, out):
        return self.torch.matmul(a, b, out=out)

    def sum(self, a, axis, out):
        return self.torch.sum(a, dim=axis, out=out)

    def add(self, a, b, out):
        return self.torch.add(a, b, out=out)

    def multiply(self, a, b, out):
        return self.torch.mul(a, b, out=out)

    def maximum(self, a, b, out):  # (b a Python scalar: relu's 0)
        return self.torch.clamp_min(a, b, out=out)


def native_module(xp):
    """The module behind ``xp`` whose functions take ``out=`` (NumPy, CuPy, or for torch
    a shim with NumPy's names), or ``None``: a replayed program writes gradients into the
    flat gradient buffer through it."""
    key = id(xp)
    if key not in _NATIVE:
        mod = None
        if is_numpy(xp):
            mod = np
        elif is_cupy(xp):
            import cupy

            mod = cupy
        elif is_torch(xp):
            import torch

            mod = _TorchOut(torch)
        _NATIVE[key] = mod
    return _NATIVE[key]


def sumsq(xp, x):
    """``sum(x * x)`` over all elements of ``x`` as a 0-d array, by the fastest dot product
    each backend has: ``v @ v`` of ``x`` flattened to ``v`` (one BLAS call on NumPy and
    torch), on CuPy the ``(1, n) @ (n, 1)`` product that array-api-compat's ``vecdot``
    makes (CuPy's BLAS dot returns through the host: a synchronisation), without that
    function's moves, broadcast and ``conj`` around it (an identity on real arrays, but one
    more kernel): on an H200, 44-45 us a call against 57-59 us, the same bits. Measured
    over 400k float32: torch's ``vecdot`` through array-api-compat and a ``(1, n) @ (n,
    1)`` product take 2.6 ms, ``v @ v`` 12 us. On NumPy the array's own ``reshape``
    flattens (array-api-compat's ``reshape`` costs about 1.5 us more a call)."""
    if _ufunc_reduce(xp):
        v = x.reshape(-1)
        return v @ v
    v = xp.reshape(x, (-1,))
    if is_cupy(xp):
        return matmul_into(xp, v[None, :], v[:, None])[0, 0]
    return v @ v


_UFUNC_REDUCE: dict = {}


def _ufunc_reduce(xp):
    ok = _UFUNC_REDUCE.get(id(xp))
    if ok is None:
        ok = _UFUNC_REDUCE[id(xp)] = is_numpy(xp)
    return ok


def sum_of(xp, a, axis=None, keepdims=False):
    """``xp.sum(a, axis=axis, keepdims=keepdims)``. On NumPy it calls ``np.add.reduce``,
    which is what ``np.sum`` calls after its Python layers (about 2.5 us a call: 5% of a
    64-128-128-10 training step for its seven sums and maxima), so the numbers are the same."""
    if _ufunc_reduce(xp):
        return np.add.reduce(a, axis=axis, keepdims=keepdims)
    return xp.sum(a, axis=axis, keepdims=keepdims)


def astype(xp, a, dtype):
    """``xp.astype(a, dtype)``; the array's own ``astype`` on NumPy (as :func:`sum_of`:
    array-api-compat's wrapper costs about 2 us more a call), the same array."""
    if _ufunc_reduce(xp):
        return a.astype(dtype)
    return xp.astype(a, dtype)


def arange(xp, n, like):
    """``xp.arange(n)`` on ``like``'s device; ``np.arange`` on NumPy (as :func:`astype`)."""
    if _ufunc_reduce(xp):
        return np.arange(n)
    return xp.arange(n, device=device_of(like))


def max_of(xp, a, axis=None, keepdims=False):
    """``xp.max(a, axis=axis, keepdims=keepdims)``; ``np.maximum.reduce`` on NumPy (as
    :func:`sum_of`)."""
    if _ufunc_reduce(xp):
        return np.maximum.reduce(a, axis=axis, keepdims=keepdims)
    return xp.max(a, axis=axis, keepdims=keepdims)


def min_of(xp, a, axis=None, keepdims=False):
    """``xp.min(a, axis=axis, keepdims=keepdims)``; ``np.minimum.reduce`` on NumPy (as
    :func:`sum_of`)."""
    if _ufunc_reduce(xp):
        return np.minimum.reduce(a, axis=axis, keepdims=keepdims)
    return xp.min(a, axis=axis, keepdims=keepdims)


def flat_offsets(xp, shapes, dtype):
    """``(offsets, total)``: where arrays of ``shapes`` start in one flat array of
    ``dtype`` that holds them in order (the flat parameters, gradients and optimizer state
    of :func:`xpdl.compile_step`), and its length. On torch and CuPy each starts on a
    256-byte boundary, as a fresh array does, with zeros between: MKL's products round by
    their output's alignment (``matmul(a, b, out=v)`` into a view 8 bytes off gave other
    bits than ``a @ b``), so a gradient written into its view keeps the eager step's
    bits (NumPy's OpenBLAS gave the same bits at every offset)."""
    align = 1
    if is_torch(xp) or is_cupy(xp):
        align = max(1, 256 // getattr(dtype, "itemsize", 8))
    offsets, off = [], 0
    for shp in shapes:
        off = -(-off // align) * align
        offsets.append(off)
        size = 1
        for d in shp:
            size *= d
        off += size
    return offsets, off


def matmul_into(xp, a, b, out=None):
    """``a @ b``, written into ``out`` when given (an array of :func:`native_module`'s
    module, which then exists): the same BLAS call either way. While a CuPy stream
    captures a CUDA graph (:func:`capturing_products`), 2-d CuPy products call cuBLAS
    themselves (:class:`_CublasInCapture`)."""
    if _CAPTURE_GEMM is not None and is_cupy(xp):
        return _CAPTURE_GEMM(a, b, out)
    return a @ b if out is None else native_module(xp).matmul(a, b, out=out)


_CAPTURE_GEMM = None


class _CublasInCapture:
    """CuPy's own cuBLAS handle, called through ``ctypes``, for the products of a CUDA
    graph capture. CuPy (14.2 at least) refuses any cuBLAS call while a stream captures
    (its ``cublas.setStream`` raises ``NotImplementedError: calling cuBLAS API during
    stream capture is currently unsupported``), though cuBLAS itself supports capture
    (host-pointer ``alpha`` and ``beta`` are read when captured). This calls the library
    CuPy loaded, on CuPy's handle, the functions CuPy's 2-d products call
    (``cublasSgemmEx`` for float32, and for float16 with float32 sums; ``cublasDgemm_v2``
    for float64), with the operands' layouts passed as cuBLAS transposes (C- or
    F-contiguous; anything else raises, and the capture falls back). Row-major
    ``C = A @ B`` is column-major ``C^T = B^T A^T``."""

    def __init__(self):
        import ctypes

        import cupy

        self.cupy, self.ct = cupy, ctypes
        # the current device's handle, asked at each call (one per device, cached by CuPy)
        self.handle = cupy.cuda.device.get_cublas_handle
        self.handle()  # (loads libcublas)
        path = None
        with open("/proc/self/maps") as maps:
            for line in maps:
                name = line.rsplit(None, 1)[-1]
                if "/libcublas.so" in name:
                    path = name
                    break
        if path is None:
            raise OSError("xpdl: CuPy's libcublas is not loaded in this process")
        lib = ctypes.CDLL(path)
        i, p = ctypes.c_int, ctypes.c_void_p
        self.set_stream = lib.cublasSetStream_v2
        self.set_stream.argtypes, self.set_stream.restype = [p, p], i
        self.sgemm = lib.cublasSgemmEx
        self.sgemm.argtypes = [p, i, i, i, i, i, p, p, i, i, p, i, i, p, p, i, i]
        self.sgemm.restype = i
        self.dgemm = lib.cublasDgemm_v2
        self.dgemm.argtypes = [p, i, i, i, i, i, p, p, i, p, i, p, p, i]
        self.dgemm.restype = i

    @staticmethod
    def _operand(a):
        """``(op, ld)`` of a 2-d operand for the column-major call: a C-contiguous array
        is its own transpose there (no op), an F-contiguous one needs ``T``."""
        rows, cols = a.shape
        if a.flags.c_contiguous:
            return 0, max(a.strides[0] // a.itemsize, cols, 1)
        if a.flags.f_contiguous:
            return 1, max(a.strides[1] // a.itemsize, rows, 1)
        raise NotImplementedError("xpdl: a strided operand in a captured product")

    def __call__(self, a, b, out=None):
        cupy, ct = self.cupy, self.ct
        if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or \
                a.dtype not in (cupy.float16, cupy.float32, cupy.float64):
            raise NotImplementedError("xpdl: only 2-d float products are captured")
        M, K = a.shape
        N = b.shape[1]
        if out is None:
            out = cupy.empty((M, N), dtype=a.dtype)
        if not out.flags.c_contiguous or out.dtype != a.dtype or out.shape != (M, N):
            raise NotImplementedError("xpdl: a captured product writes C-contiguous arrays")
        opb, ldb = self._operand(b)
        opa, lda = self._operand(a)
        handle = self.handle()
        if self.set_stream(handle, cupy.cuda.get_current_stream().ptr):
            raise RuntimeError("xpdl: cublasSetStream failed")
        if a.dtype != cupy.float64:  # (float32 sums for float16 too, as CuPy's products)
            t = 2 if a.dtype == cupy.float16 else 0  # CUDA_R_16F, CUDA_R_32F
            one, zero = ct.c_float(1.0), ct.c_float(0.0)
            status = self.sgemm(handle, opb, opa, N, M, K, ct.byref(one), b.data.ptr,
                                t, ldb, a.data.ptr, t, lda, ct.byref(zero), out.data.ptr,
                                t, max(N, 1))
        else:
            one, zero = ct.c_double(1.0), ct.c_double(0.0)
            status = self.dgemm(handle, opb, opa, N, M, K, ct.byref(one), b.data.ptr,
                                ldb, a.data.ptr, lda, ct.byref(zero), out.data.ptr,
                                max(N, 1))
        if status:
            raise RuntimeError(f"xpdl: cuBLAS gemm failed in a capture (status {status})")
        return out


class capturing_products:
    """Context: while it is entered, :func:`matmul_into` (and :func:`sumsq`) on CuPy
    arrays call cuBLAS through :class:`_CublasInCapture` (for a CUDA graph capture)."""

    _gemm = None

    def __enter__(self):
        global _CAPTURE_GEMM
        if capturing_products._gemm is None:
            capturing_products._gemm = _CublasInCapture()
        _CAPTURE_GEMM = capturing_products._gemm
        return self

    def __exit__(self, *exc):
        global _CAPTURE_GEMM
        _CAPTURE_GEMM = None
        gemm = capturing_products._gemm
        # (the handle back on the current stream: the capture's stream may be freed; CuPy
        # sets the stream before each of its own calls anyway)
        gemm.set_stream(gemm.handle(), gemm.cupy.cuda.get_current_stream().ptr)
        return False


def sum0_into(xp, a, out=None):
    """``xp.sum(a, axis=0)``, written into ``out`` when given (as :func:`matmul_into`)."""
    if _ufunc_reduce(xp):  # (see sum_of)
        return np.add.reduce(a, axis=0, out=out)
    return xp.sum(a, axis=0) if out is None else native_module(xp).sum(a, axis=0, out=out)


def may_share_memory(a, b) -> bool:
    """Whether arrays ``a`` and ``b`` (NumPy, CuPy or torch) may be views of the same
    memory (False for other arrays: a replayed program writes into planned buffers only on
    those three)."""
    if hasattr(a, "untyped_storage"):
        return hasattr(b, "untyped_storage") and \
            a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    mod = sys.modules.get(type(a).__module__.partition(".")[0])
    share = getattr(mod, "may_share_memory", None)
    return bool(share(a, b)) if share is not None and type(a) is type(b) else False


def supports_inplace(xp) -> bool:
    """Whether arrays of ``xp`` may be written in place (JAX arrays are immutable)."""
    ok = _INPLACE.get(id(xp))
    if ok is None:
        ok = _INPLACE[id(xp)] = not is_jax(xp)
    return ok


def supports_float64(xp, device=None) -> bool:
    """Whether ``device`` of namespace ``xp`` has float64."""
    try:
        info = xp.__array_namespace_info__()
        return "float64" in info.dtypes(device=device, kind="real floating")
    except Exception:  # pragma: no cover - namespaces without the inspection API
        return hasattr(xp, "float64")


def index_dtype(xp, device=None):
    """The namespace's default integer dtype for indices (int64; int32 on JAX without
    ``jax_enable_x64``, where asking for int64 warns and truncates)."""
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]
    except Exception:  # pragma: no cover - namespaces without the inspection API
        return xp.int64


def default_float_dtype(xp, device=None):
    """xpdl's default float dtype: float32 (API.md, principle 5)."""
    return xp.float32


def dtype_name(xp, dtype) -> str:
    """The standard name (``'float32'``...) of a dtype of ``xp``."""
    if isinstance(dtype, str):
        return dtype
    for name in _DTYPE_NAMES:
        cand = getattr(xp, name, None)
        if cand is not None and cand == dtype:
            return name
    raise TypeError(f"xpdl: unknown dtype {dtype!r}")


def dtype_from_name(xp, name):
    """The dtype object of ``xp`` called ``name`` (or ``name`` itself if it is a dtype)."""
    if not isinstance(name, str):
        return name
    if name not in _DTYPE_NAMES or not hasattr(xp, name):
        raise TypeError(f"xpdl: unknown dtype name {name!r}")
    return getattr(xp, name)


def is_floating(xp, dtype) -> bool:
    return xp.isdtype(dtype, "real floating")


def resolve_float_dtype(x, xp, device=None, dtype=None):
    """The float dtype to compute in for input ``x``.

    ``dtype`` wins when given (a dtype of ``xp`` or ``"float32"``/``"float64"``). Otherwise a
    floating input keeps its dtype and any other input (integer, bool) becomes float32.
    float64 on a device without it is a ``ValueError``.
    """
    if dtype is not None:
        if isinstance(dtype, str) and dtype not in _FLOAT_NAMES:
            raise ValueError(f"xpdl: dtype must be 'float32' or 'float64', got {dtype!r}")
        dt = dtype_from_name(xp, dtype)
        if not xp.isdtype(dt, "real floating"):
            raise ValueError(f"xpdl: dtype must be a real floating dtype, got {dtype!r}")
        if dtype_name(xp, dt) == "float64" and not supports_float64(xp, device):
            raise ValueError(f"xpdl: float64 was asked for but device {device!r} has no float64")
        return dt
    if x is not None and xp.isdtype(x.dtype, "real floating"):
        try:
            half = dtype_name(xp, x.dtype) in _HALF
        except TypeError:
            half = True
        # half-precision inputs are computed in float32, as scikit-learn accepts them
        return default_float_dtype(xp, device) if half else x.dtype
    return default_float_dtype(xp, device)


def _numpy_dtype(xp, dtype):
    if dtype is None:
        return None
    name = dtype_name(xp, dtype)
    if name == "bfloat16":
        return _bfloat16()
    return np.dtype(name)


def _bfloat16():
    """NumPy's bfloat16 (from ml_dtypes, which JAX installs), or a TypeError."""
    try:
        import ml_dtypes
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise TypeError("xpdl: bfloat16 arrays on the host need ml_dtypes "
                        "(pip install ml_dtypes)") from exc
    return np.dtype(ml_dtypes.bfloat16)


def to_host(x) -> np.ndarray:
    """Copy array ``x`` (any namespace, any device) to a NumPy array on the host."""
    if isinstance(x, np.ndarray):
        return x
    xp = array_namespace(x)
    if is_cupy(xp):
        return x.get()
    if is_torch(xp):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            return x.float().numpy().astype(_bfloat16())  # exact: bfloat16 fits in float32
        return x.numpy()
    if is_strict(xp):
        x = x.to_device(xp.Device("CPU_DEVICE"))
        return np.asarray(x)
    if type(x).__module__.startswith("ndonnx"):
        try:
            return np.asarray(x.unwrap_numpy())  # a constant of the graph
        except ValueError as exc:
            raise ValueError("xpdl: this ndonnx array is symbolic (an input of an ONNX "
                             "graph, or computed from one): it has no values to read") from exc
    return np.asarray(x)


def from_host(a, xp, device=None, dtype=None):
    """Move host data ``a`` (NumPy array or nested sequence) to ``xp`` on ``device``.

    Casting happens on the host so the same input gives the same bits everywhere.
    """
    xp = check_xp(xp)
    check_device(xp, device)
    a = np.asarray(a)
    if dtype is not None and dtype_name(xp, dtype) == "bfloat16" and not is_jax(xp):
        # torch takes no ml_dtypes arrays: round on the host, hand over the float32 values
        # (exactly representable), cast there
        b = a.astype(_bfloat16(), copy=False).astype(np.float32)
        return xp.astype(from_host(b, xp, device=device), dtype_from_name(xp, "bfloat16"))
    if dtype is not None:
        a = a.astype(_numpy_dtype(xp, dtype), copy=False)
    if is_cupy(xp):
        import cupy

        if device is None:
            return cupy.asarray(a)
        with device:
            return cupy.asarray(a)
    if is_torch(xp) and not a.flags.writeable:
        a = a.copy()  # torch warns on read-only buffers
    return xp.asarray(a, device=device)


_DEVICES_OK: set = set()


def check_device(xp, device):
    """``ValueError`` naming ``device`` when ``xp`` cannot place arrays there (torch's
    ``"cuda"`` without CUDA was a RuntimeError, or an AssertionError from its lazy
    initialisation); checked once per namespace and device, before anything is moved."""
    if device is None:
        return
    key = (id(xp), repr(device))
    if key in _DEVICES_OK:
        return
    try:
        if is_cupy(xp):
            with device:
                xp.zeros((0,))
        else:
            xp.zeros((0,), device=device)
    except Exception as exc:  # each backend has its own error for an unusable device
        raise ValueError(f"xpdl: device {device!r} is not available to "
                         f"{backend_name(xp)} here ({type(exc).__name__}: {exc})") from None
    _DEVICES_OK.add(key)


# Backends whose own module lacks parts of the standard (``torch.isdtype``, ...): given as
# ``xp``, their array-api-compat wrapper is used (the namespace their arrays report)
_WRAPPED = {"torch": "array_api_compat.torch", "cupy": "array_api_compat.cupy",
            "dask.array": "array_api_compat.dask.array"}


def check_xp(xp, what="xp"):
    """``xp`` when it is None or an array namespace (a module, or an object with
    ``asarray``; ``torch``, ``cupy`` and ``dask.array`` themselves become their
    array-api-compat wrappers), else a TypeError naming it: a string such as ``"torch"``
    is the usual slip, and failed later as an AttributeError from deep inside."""
    wrapper = _WRAPPED.get(getattr(xp, "__name__", None))
    if wrapper is not None and isinstance(xp, types.ModuleType):
        return importlib.import_module(wrapper)
    if xp is None or callable(getattr(xp, "asarray", None)):
        return xp
    hint = " (pass the module itself, not its name)" if isinstance(xp, str) else ""
    raise TypeError(f"xpdl: {what} must be an array namespace such as numpy, "
                    f"array_api_compat.torch or array_api_strict, got {xp!r}{hint}")


def move(x, *, xp=None, device=None, dtype=None):
    """Return ``x`` in namespace ``xp`` on ``device`` with ``dtype`` (each optional).

    Within one namespace the backend moves the data itself; across namespaces it goes
    through the host. ``dtype`` may be a dtype of the target namespace or its name.
    """
    src = array_namespace(x)
    xp = src if xp is None else check_xp(xp)
    check_device(xp, device)
    if dtype is not None:  # a name, or a dtype of the target namespace
        dtype = dtype_from_name(xp, dtype if isinstance(dtype, str) else dtype_name(xp, dtype))
    if xp is src:
        out = x
        if dtype is not None and out.dtype != dtype:  # first: the target may lack the old dtype
            out = xp.astype(out, dtype)
        if device is not None and not same_device(device_of(x), device):
            out = array_api_compat.to_device(out, device)
        return out
    host = to_host(x)
    return from_host(host, xp, device=device, dtype=dtype)


def as_input_array(x, name="X"):
    """``x`` itself if it is an array of a supported namespace, else a NumPy array made from
    it (lists, pandas objects, memmaps). Sparse matrices and other non-array inputs raise
    ``TypeError``; object or string data raise ``ValueError`` naming ``name``."""
    if is_array(x):
        if isinstance(x, np.ndarray) and type(x) is not np.ndarray:
            x = np.asarray(x)  # memmap, matrix subclasses
        if isinstance(x, np.ndarray) and x.dtype.kind in "OUSV":
            return _numeric_or_raise(x, name)
        return x
    if hasattr(x, "toarray") or type(x).__module__.startswith("scipy.sparse"):
        raise TypeError(f"xpdl: {name} is a sparse matrix; xpdl needs dense arrays "
                        f"(use X.toarray())")
    if x is None:
        raise ValueError(f"xpdl: {name} is None; this estimator requires {name} to be passed")
    if hasattr(x, "to_numpy") and hasattr(x, "dtypes"):
        a = _from_pandas(x)
        if a is not None:
            return a
    try:
        a = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"xpdl: {name} of type {type(x).__name__} cannot be converted to an "
                        f"array") from exc
    if a.dtype.kind in "OUSV":
        return _numeric_or_raise(a, name)
    return a


def _from_pandas(df):
    """A pandas DataFrame with extension dtypes (nullable ``Int64``, ``Float64``,
    ``boolean``) as a float64 array with ``pd.NA`` as NaN (so that the NaN check names it);
    None for plain NumPy-backed frames (``np.asarray`` keeps their dtype)."""
    dtypes = list(df.dtypes) if hasattr(df.dtypes, "__iter__") else [df.dtypes]
    if all(isinstance(d, np.dtype) for d in dtypes):
        return None
    try:
        common = np.result_type(*[d if isinstance(d, np.dtype) else d.numpy_dtype
                                  for d in dtypes])
        if common.kind in "biuf" and not bool(np.asarray(df.isna()).any()):
            return df.to_numpy(dtype=common)  # Int64 without NA: integers, as an int array
        return df.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError, AttributeError):
        return None  # strings and the like: the generic path names the problem


def _numeric_or_raise(a, name):
    try:
        return a.astype(np.float64)
    except TypeError:
        raise  # e.g. "float() argument must be a string or a real number, not 'dict'"
    except ValueError as exc:
        raise ValueError(f"xpdl: {name} has non-numeric values (dtype {a.dtype}); "
                         f"xpdl needs numbers") from exc


def host_xp():
    """The namespace of host (NumPy) arrays, for data that only lives on the host
    (string labels)."""
    import array_api_compat.numpy as hxp

    return hxp


def numpy_values(x, dtype=None, copy=None):
    """``np.asarray(x, dtype=dtype)`` by NumPy's own conversion rules for ``x``'s
    namespace (CuPy and array_api_strict's non-CPU devices refuse an implicit copy to the
    host); ``copy`` as NumPy 2 passes it to ``__array__``."""
    if copy:
        return np.array(x, dtype=dtype, copy=True)
    a = np.asarray(x, dtype=dtype)
    if copy is False and a is not x and not isinstance(x, np.ndarray):
        raise ValueError("xpdl: these values cannot be seen by NumPy without a copy")
    return a


def host_asarray(x):
    """``x`` as a NumPy array on the host (labels of any type, lists)."""
    return np.asarray(to_host(x) if is_array(x) and not isinstance(x, np.ndarray) else x)


def aligned(x):
    """``x``, copied when it is a NumPy array whose data is not aligned or not C-contiguous
    (arrays deserialised by ``dask.distributed`` can be views at odd offsets of a message
    buffer, on which every NumPy operation runs several times slower)."""
    if isinstance(x, np.ndarray) and not (x.flags.aligned and x.flags.c_contiguous):
        return np.require(x, requirements=["A", "C"])
    return x


def is_host_array(x) -> bool:
    return isinstance(x, np.ndarray)


def quiet_fp(xp):
    """Context silencing NumPy's overflow/invalid warnings (training checks the loss for
    non-finite values itself and raises ``DivergenceError``), on NumPy and on
    array_api_strict (NumPy underneath); a no-op elsewhere."""
    if is_numpy(xp) or backend_name(xp) == "array_api_strict":
        return np.errstate(over="ignore", invalid="ignore", divide="ignore")
    import contextlib

    return contextlib.nullcontext()
