"""Fused in-place optimizer steps: the native fast path in front of the portable chain.

The object optimizers (and so the estimators) own their parameters and state buffers, so
they may update them in place. For NumPy and CuPy this module applies a whole Adam or SGD
step with ``out=`` ufuncs and one scratch buffer per parameter (NumPy: no allocation per
step) or one fused elementwise kernel per parameter (CuPy: one launch instead of about
twelve); for torch, PyTorch's own fused Adam kernel where it has one, else the tensors'
in-place methods. The equations are the ones of
:mod:`xpdl.optim.transforms` (PyTorch's), and the tests check both paths against
``torch.optim``. Every other namespace (JAX, array_api_strict, ...) takes the portable
path.
"""

from __future__ import annotations

import math

from .. import _compiled
from .. import _namespace as _ns

_KERNELS = {}


def _kind(xp):
    name = _ns.backend_name(xp)
    return name if name in ("numpy", "cupy", "torch") else None


def supported(xp) -> bool:
    return _kind(xp) is not None


def _cupy_kernel(name):
    k = _KERNELS.get(name)
    if k is not None:
        return k
    import cupy

    if name == "adam":
        k = cupy.ElementwiseKernel(
            "T g, T b1, T b2, T eps, T step, T sbc2, T wd, T dec", "T p, T m, T v",
            """
            T gg = g + wd * p;
            m = b1 * m + (1 - b1) * gg;
            v = b2 * v + (1 - b2) * gg * gg;
            p = p * dec - step * (m / (sqrt(v) / sbc2 + eps));
            """, "xpdl_adam_step")
    else:
        k = cupy.ElementwiseKernel(
            "T g, T lr, T mu, T wd, int32 nesterov", "T p, T b",
            """
            T gg = g + wd * p;
            b = mu * b + gg;
            p = p - lr * (nesterov ? gg + mu * b : b);
            """, "xpdl_sgd_step")
    _KERNELS[name] = k
    return k


def adam_step(xp, p, g, m, v, scratch, *, lr, b1, b2, eps, t, wd_l2, wd_decoupled,
              compiled=True):
    """One Adam/AdamW step on ``p``, ``m``, ``v`` in place (``t`` is the new step count);
    on NumPy by the compiled kernel where it is usable and ``compiled``, else ufuncs."""
    bc1 = 1 - b1 ** t
    sbc2 = math.sqrt(1 - b2 ** t)
    step = lr / bc1
    kind = _kind(xp)
    if kind == "cupy":
        _cupy_kernel("adam")(g, b1, b2, eps, step, sbc2, wd_l2, 1 - lr * wd_decoupled, p, m, v)
        return
    if kind == "torch":
        fused = _torch_fused_adam(wd_l2, wd_decoupled)
        where = (p.device.type, p.dtype)
        if fused is not None and where not in _TORCH_FUSED_FAILED and p.is_contiguous() \
                and m.is_contiguous() and v.is_contiguous():
            # PyTorch's own one-pass kernel (torch.optim.Adam(fused=True)): 3x faster than
            # the chain below over 670k float32 on the CPU; equal to float32 rounding. It
            # reads its arguments as contiguous (a transposed gradient came out wrong).
            import torch

            try:
                fused([p], [g.contiguous()], [m], [v], [],
                      [torch.full((), float(t), device=p.device)],
                      lr=lr, beta1=b1, beta2=b2, weight_decay=wd_l2 or wd_decoupled,
                      eps=eps, amsgrad=False, maximize=False)
                return
            except (RuntimeError, NotImplementedError, TypeError):
                # older torch: no kernel for this device or dtype (it fails before writing)
                _TORCH_FUSED_FAILED.add(where)
        if wd_decoupled:
            p.mul_(1 - lr * wd_decoupled)
        if wd_l2:
            g = g.add(p, alpha=wd_l2)
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = v.sqrt().div_(sbc2).add_(eps)
        p.addcdiv_(m, denom, value=-step)
        return
    if kind == "numpy" and compiled and _compiled.usable(p, g, m, v):
        # one compiled pass, the same numbers as the ufuncs below
        _compiled.adam_flat(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                            lr=lr, b1=b1, b2=b2, eps=eps, t=t, wd_l2=wd_l2,
                            wd_decoupled=wd_decoupled)
        return
    if wd_decoupled:
        p *= 1 - lr * wd_decoupled
    if wd_l2:
        g = g + wd_l2 * p
    _adam_direction(xp, g, m, v, scratch, b1=b1, b2=b2, eps=eps, step=step, sbc2=sbc2)
    p -= scratch


_TORCH_FUSED_FAILED = set()  # (device type, dtype) where torch's fused Adam raised


def _torch_fused_adam(wd_l2, wd_decoupled):
    """``torch._fused_adam_`` (L2 weight decay) or ``torch._fused_adamw_`` (decoupled), or
    None where this torch has neither or both decays are asked for."""
    if wd_l2 and wd_decoupled:
        return None
    import torch

    return getattr(torch, "_fused_adamw_" if wd_decoupled else "_fused_adam_", None)


def _adam_direction(xp, g, m, v, s, *, b1, b2, eps, step, sbc2):
    """Update ``m``, ``v`` in place and write the Adam step (to subtract) into ``s``:
    NumPy/CuPy ufuncs with ``out=``, no allocation."""
    m *= b1
    xp.multiply(g, 1 - b1, out=s)
    m += s
    v *= b2
    xp.multiply(g, g, out=s)
    s *= 1 - b2
    v += s
    # step * m / (sqrt(v)/sbc2 + eps) with sbc2 moved into the constants: one pass fewer
    xp.sqrt(v, out=s)
    s += eps * sbc2
    xp.divide(m, s, out=s)
    s *= step * sbc2


def flat_views(xp, cache, tag, state, names, shapes):
    """One contiguous buffer holding the state arrays ``names``, which become views into
    it (the state dict keeps its per-parameter keys). Built on first use and again whenever
    an entry was replaced (``load_state_dict``, ``.to()``, the portable path)."""
    entry = cache.get(tag)
    if entry is not None:
        flat, views = entry
        if len(views) == len(names) and all(state[n] is w for n, w in zip(names, views)):
            return flat
    flat = xp.concat([xp.reshape(state[n], (-1,)) for n in names])
    views, off = [], 0
    for n, shp in zip(names, shapes):
        size = 1
        for d in shp:
            size *= d
        w = xp.reshape(flat[off:off + size], shp)
        state[n] = w
        views.append(w)
        off += size
    cache[tag] = (flat, views)
    return flat


def sgd_step(xp, p, g, b, scratch, *, lr, momentum, nesterov, wd, compiled=True):
    """One SGD step (momentum buffer ``b`` may be None) on ``p`` in place (``compiled``:
    as :func:`adam_step`)."""
    kind = _kind(xp)
    if kind == "cupy" and b is not None:
        _cupy_kernel("sgd")(g, lr, momentum, wd, int(bool(nesterov)), p, b)
        return
    if kind == "torch":
        if wd:
            g = g.add(p, alpha=wd)
        if b is not None:
            b.mul_(momentum).add_(g)
            g = g.add(b, alpha=momentum) if nesterov else b
        p.add_(g, alpha=-lr)
        return
    if kind == "numpy" and compiled and _compiled.usable(p, g, b):
        _compiled.sgd_flat(p.reshape(-1), g.reshape(-1), None if b is None else b.reshape(-1),
                           lr=lr, momentum=momentum, nesterov=nesterov, wd=wd)
        return
    s = scratch
    if wd:
        g = g + wd * p
    if b is not None:
        b *= momentum
        b += g
        if nesterov:
            xp.multiply(b, momentum, out=s)
            s += g
            g = s
        else:
            g = b
    xp.multiply(g, lr, out=s)
    p -= s


# Flat NumPy steps run block by block: each block of this many elements goes through all
# the passes of the update while its parameter, gradient, moment and scratch slices (5 x
# 256 KiB in float32) sit in the core's L2 cache, instead of streaming the whole arrays
# through memory a dozen times. Measured inside training (the arrays are cold there):
# Adam over 6.3M parameters 11.3 -> 8.9 ms, over 670k 0.93 -> 0.79 ms per step. A second
# thread did not pay inside training: OpenBLAS's worker threads busy-wait on the other
# core between matrix products.
_BLOCK = 1 << 16


def _blocks(xp, total):
    """Slices covering ``range(total)``: blocks of ``_BLOCK`` on NumPy, one slice elsewhere
    (CuPy runs one fused kernel, torch one chain of in-place operations)."""
    if not _ns.is_numpy(xp) or total <= _BLOCK:
        return (slice(0, total),)
    return tuple(slice(i, min(i + _BLOCK, total)) for i in range(0, total, _BLOCK))


def _block_views(xp, arrays, n_l2):
    """Per block: the views of ``arrays`` (P, G, ..., S first two and last: parameters,
    gradients, scratch) and, where the block overlaps ``[0, n_l2)``, the views of P, G, S
    over that overlap (the L2 term's part); made once, used every step."""
    out = []
    P, G, S = arrays[0], arrays[1], arrays[-1]
    for sl in _blocks(xp, P.shape[0]):
        hi = min(sl.stop, n_l2)
        l2 = (P[sl.start:hi], G[sl.start:hi], S[sl.start:hi]) if hi > sl.start else None
        out.append((tuple(a[sl] for a in arrays), l2))
    return out


def _l2_part(xp, l2v, c):
    """``g += c * p`` over one block's L2 views."""
    p, g, s = l2v
    if _kind(xp) == "torch":
        g.add_(p, alpha=c)  # one pass
    else:
        xp.multiply(p, c, out=s)
        g += s


def adam_stepper(xp, P, G, M, V, S, n_l2=0, **kw):
    r"""A function ``run(lr, t, c=0.0)`` doing one Adam step (:func:`adam_step` with the
    constants ``kw``) on flat parameter, gradient and moment arrays, block by block.

    With ``c``, :math:`c\,p` is first added to the gradient of the leading ``n_l2``
    elements (the flat array's weights, an L2 penalty); ``G`` may be written to then (the
    ufunc path adds the term in place, the compiled one only reads it). The views are made
    once: the stepper is valid while the arrays are.
    """
    if _ns.is_numpy(xp) and _compiled.usable(P, G, M, V):
        def run_compiled(lr, t, c=0.0):
            _compiled.adam_flat(P, G, M, V, n_l2=n_l2, c=c, lr=lr, t=t, **kw)

        return run_compiled
    blocks = _block_views(xp, (P, G, M, V, S), n_l2)

    def run(lr, t, c=0.0):
        for (p, g, m, v, s), l2v in blocks:
            if c and l2v is not None:
                _l2_part(xp, l2v, c)
            adam_step(xp, p, g, m, v, s, lr=lr, t=t, compiled=False, **kw)

    return run


def sgd_stepper(xp, P, G, B, S, n_l2=0, **kw):
    """As :func:`adam_stepper` for :func:`sgd_step` (``B`` the momentum buffer or None);
    ``run(lr, c=0.0)``."""
    arrays = (P, G, S) if B is None else (P, G, B, S)
    if _ns.is_numpy(xp) and _compiled.usable(P, G, B):
        def run_compiled(lr, c=0.0):
            _compiled.sgd_flat(P, G, B, n_l2=n_l2, c=c, lr=lr, **kw)

        return run_compiled
    blocks = _block_views(xp, arrays, n_l2)

    def run(lr, c=0.0):
        for views, l2v in blocks:
            if c and l2v is not None:
                _l2_part(xp, l2v, c)
            if B is None:
                sgd_step(xp, views[0], views[1], None, views[2], lr=lr, compiled=False, **kw)
            else:
                sgd_step(xp, *views, lr=lr, compiled=False, **kw)

    return run


def flat_scratch(xp, cache, like):
    s = cache.get("flat_s")
    if s is None or s.shape != like.shape or s.dtype != like.dtype:
        s = cache["flat_s"] = xp.empty_like(like)
    return s
