"""Fused in-place optimizer steps: the native fast path in front of the portable chain.

The object optimizers (and so the estimators) own their parameters and state buffers, so
they may update them in place. The update of one element is defined once, in
:mod:`xpdl.optim._rules`; this module executes it. Traced once per configuration (which of
weight decay, an L2 term, momentum, Nesterov) into a fixed list of elementwise operations,
the update runs as NumPy or torch calls with ``out=`` into the state arrays and one or two
scratch buffers planned by liveness (no allocation per step), or as the generated source
of one CuPy ``ElementwiseKernel`` (one launch instead of about twelve). On NumPy, Numba
compiles the same functions where it is installed (:mod:`xpdl._compiled`); torch runs
PyTorch's own fused Adam kernel where it has one. Every other namespace (JAX,
array_api_strict, ...) takes the portable path, :mod:`xpdl.optim.transforms`, which calls
the same functions on whole arrays.
"""

from __future__ import annotations

import math

from .. import _compiled
from .. import _namespace as _ns
from . import _rules


class _Rule:
    """A function of :mod:`._rules` and its signature: array arguments (``g`` only read),
    scalar arguments, flags, then the functions it takes (``sqrt``, ``maximum``), the
    arrays it returns."""

    def __init__(self, fn, arrays, scalars, flags, outputs, funcs=()):
        self.fn, self.arrays, self.scalars, self.flags = fn, arrays, scalars, flags
        self.outputs, self.funcs = outputs, funcs


ADAM = _Rule(_rules.adam, ("p", "g", "m", "v", "vmax"),
             ("c", "dec", "wd", "b1", "c1", "b2", "c2", "eps_s", "step_s"),
             ("l2", "decoupled", "coupled", "amsgrad"), ("p", "m", "v", "vmax"),
             ("sqrt", "maximum"))
SGD = _Rule(_rules.sgd, ("p", "g", "b"), ("c", "wd", "lr", "mu"),
            ("l2", "coupled", "with_momentum", "nesterov"), ("p", "b"))
RMSPROP = _Rule(_rules.rmsprop, ("p", "g", "s", "ga", "b"),
                ("c", "wd", "alpha", "c_alpha", "eps", "lr", "mu"),
                ("l2", "coupled", "centered", "with_momentum"), ("p", "s", "ga", "b"),
                ("sqrt",))
ADAGRAD = _Rule(_rules.adagrad, ("p", "g", "s"), ("c", "wd", "eps", "lr"), ("l2", "coupled"),
                ("p", "s"), ("sqrt",))
_READ_ONLY = ("g",)  # the gradient is the caller's: never written
_SYMBOL = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/"}
_FUNCS = ("add", "subtract", "multiply", "divide", "sqrt", "maximum")
_DUNDER = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "truediv"}


class _Val:
    """A traced value: arithmetic on it records an operation."""

    __slots__ = ("tr", "i")

    def __init__(self, tr, i):
        self.tr, self.i = tr, i


for _op, _name in _DUNDER.items():  # __add__ / __radd__ ... record (name, a, b)
    setattr(_Val, f"__{_name}__", lambda a, b, _op=_op: a.tr.emit(_op, a, b))
    setattr(_Val, f"__r{_name}__", lambda a, b, _op=_op: a.tr.emit(_op, b, a))


class Trace:
    """A rule traced for one setting of its flags: ``ops`` is the list of ``(name, a, b)``
    (value ``len(names) + k`` is op ``k``'s result; ``b`` is None for ``sqrt``);
    ``outputs`` maps an array argument to the value it ends with."""

    def __init__(self, rule, flags):
        self.rule = rule
        self.names = rule.arrays + rule.scalars
        self.scalar = [False] * len(rule.arrays) + [True] * len(rule.scalars)
        self.ops = []
        args = [_Val(self, i) for i in range(len(self.names))] + list(flags)
        args += [(lambda x: self.emit("sqrt", x, None)) if f == "sqrt" else
                 (lambda a, b, f=f: self.emit(f, a, b)) for f in rule.funcs]
        out = rule.fn(*args)
        self.outputs = {n: o.i for n, o in zip(rule.outputs, out)
                        if o.i != rule.arrays.index(n)}  # (an array returned unchanged)

    def emit(self, name, a, b):
        for x in (a, b):
            if not (isinstance(x, _Val) or (x is None and name == "sqrt")):
                raise TypeError(f"xpdl: an optimizer rule used the literal {x!r}; constants "
                                f"are arguments, rounded to the arrays' dtype alike everywhere")
        if all(self.scalar[x.i] for x in (a, b) if x is not None):
            raise TypeError("xpdl: an optimizer rule combined two constants elementwise; "
                            "compute that once per step instead")
        if b is not None and self.scalar[a.i]:
            if name not in ("add", "multiply", "maximum"):
                raise TypeError(f"xpdl: an optimizer rule's {name} takes its array first")
            a, b = b, a  # (commutative: the same bits; torch takes a scalar second only)
        self.ops.append((name, a.i, None if b is None else b.i))
        self.scalar.append(False)
        return _Val(self, len(self.scalar) - 1)

    def _ref(self, i, where):
        return self.names[i] if self.scalar[i] else where[i]

    def plan(self):
        """The ops with a buffer for every result: an output's own array when the value
        there is dead, else the buffer of an operand that dies at this op, else a free
        scratch buffer ``s0, s1, ...``. Returns ``(lines, n_scratch)``, ``lines`` as
        ``(name, out, a, b)`` buffer or scalar names."""
        n_in = len(self.names)
        last = {}
        for k, (_, a, b) in enumerate(self.ops):
            last[a] = k
            if b is not None:
                last[b] = k
        for i in self.outputs.values():
            last[i] = len(self.ops)  # live to the end
        dest = {i: n for n, i in self.outputs.items()}
        where = {i: n for i, n in enumerate(self.rule.arrays)}
        holder = {n: i for i, n in where.items()}
        scratch, lines = [], []
        for k, (name, a, b) in enumerate(self.ops):
            r = n_in + k
            cands = ([dest[r]] if r in dest else []) + [
                where[x] for x in (a, b) if x is not None and not self.scalar[x]] + scratch
            buf = next((c for c in cands if c not in _READ_ONLY
                        and last.get(holder[c], -1) <= k), None)
            if buf is None:
                buf = f"s{len(scratch)}"
                scratch.append(buf)
            lines.append((name, buf, self._ref(a, where),
                          None if b is None else self._ref(b, where)))
            where[r], holder[buf] = buf, r
        for n, i in self.outputs.items():
            if where[i] != n:  # (our rules never need a copy: the plan is checked here)
                raise RuntimeError(f"xpdl: the traced update leaves {n} in {where[i]}")
        return lines, len(scratch)

    def python_source(self):
        """A function ``run(<arrays>, S, <scalars>)`` of ufunc calls writing ``out=``
        (``S``: the scratch buffers), and the number of scratch buffers it needs."""
        lines, n_s = self.plan()
        src = [f"def run({', '.join(self.rule.arrays)}, S, {', '.join(self.rule.scalars)}):"]
        src += [f"    s{j} = S[{j}]" for j in range(n_s)]
        for name, out, a, b in lines:
            args = a if b is None else f"{a}, {b}"
            src.append(f"    {name}({args}, out={out})")
        return "\n".join(src), n_s

    def l2_prefix(self):
        """Whether this trace begins with the L2 term, ``g + p * c`` (:func:`add_l2`, the
        ``l2`` flag on), as its first two operations: then :meth:`kernel_spec` can apply
        it to the leading ``n_l2`` elements only."""
        idx = self.names.index
        return len(self.ops) > 1 and self.ops[0] == ("multiply", idx("p"), idx("c")) and \
            self.ops[1] == ("add", idx("g"), len(self.names))

    def kernel_spec(self, l2_prefix=False):
        """The CuPy ``ElementwiseKernel`` of this update: ``(in_params, out_params,
        body)``, every value in the arrays' type ``T``; scalars are cast to ``T``.

        ``l2_prefix`` (a trace with :meth:`l2_prefix`): the kernel takes one more
        argument, ``int64 n_l2``, and adds the L2 term to the elements ``i < n_l2``
        only; the others compute the update without it, the same operations on the same
        values as the trace without the ``l2`` flag (one launch over the flat
        parameters instead of two)."""
        n_in = len(self.names)
        if l2_prefix and not self.l2_prefix():
            raise ValueError("xpdl: this update does not begin with the L2 term")

        def ref(i):
            return self.names[i] if i < n_in else f"t{i - n_in}"

        body = []
        for k, (name, a, b) in enumerate(self.ops):
            if b is None:
                e = f"sqrt({ref(a)})"
            elif name == "maximum":  # NumPy's and torch's: a NaN on either side wins
                e = f"({ref(a)} > {ref(b)} || {ref(a)} != {ref(a)}) ? {ref(a)} : {ref(b)}"
            else:
                e = f"{ref(a)} {_SYMBOL[name]} {ref(b)}"
            if l2_prefix and k == 1:  # g + p * c before n_l2, g itself after
                e = f"(i < n_l2) ? ({e}) : {ref(a)}"
            body.append(f"T t{k} = {e};")
        body += [f"{n} = {ref(i)};" for n, i in self.outputs.items()]
        read = {x for _, a, b in self.ops for x in (a, b)}
        outs = [n for n in self.rule.arrays if n in self.outputs]
        ins = [n for i, n in enumerate(self.rule.arrays) if n not in self.outputs and i in read]
        ins += self.rule.scalars
        return (", ".join([f"T {n}" for n in ins] + ["int64 n_l2"] * l2_prefix),
                ", ".join(f"T {n}" for n in outs), "\n".join(body))


_TRACES: dict = {}
_RUNNERS: dict = {}


def trace(rule, flags):
    """The :class:`Trace` of ``rule`` for ``flags`` (a tuple of bools), made once."""
    key = (rule.fn, flags)
    t = _TRACES.get(key)
    if t is None:
        t = _TRACES[key] = Trace(rule, flags)
    return t


def _functions(xp):
    if _ns.is_torch(xp):
        import torch

        return {"add": torch.add, "subtract": torch.sub, "multiply": torch.mul,
                "divide": torch.div, "sqrt": torch.sqrt, "maximum": torch.maximum}
    return {n: getattr(xp, n) for n in _FUNCS}


def runner(xp, rule, flags):
    """``(run, n_scratch)``: the traced update as a function of ufunc calls on ``xp``
    (NumPy or torch) with ``out=``; ``run(<arrays>, scratch, <scalars>)``."""
    key = (id(xp), rule.fn, flags)
    got = _RUNNERS.get(key)
    if got is None:
        src, n_s = trace(rule, flags).python_source()
        ns = _functions(xp)
        exec(compile(src, f"<xpdl {rule.fn.__name__} update {flags}>", "exec"), ns)
        got = _RUNNERS[key] = (ns["run"], n_s)
    return got


def _kind(xp):
    name = _ns.backend_name(xp)
    return name if name in ("numpy", "cupy", "torch") else None


def supported(xp) -> bool:
    return _kind(xp) is not None


_KERNELS: dict = {}


def _cupy_kernel(rule, flags, l2_prefix=False):
    """The traced update as one CuPy ``ElementwiseKernel``, compiled once per flags (and
    ``l2_prefix``: see :meth:`Trace.kernel_spec`)."""
    key = (rule.fn, flags, l2_prefix)
    k = _KERNELS.get(key)
    if k is None:
        import cupy

        name = f"xpdl_{rule.fn.__name__}_" + "".join(str(int(f)) for f in flags) + \
            "_prefix" * l2_prefix
        # --fmad=false: NVRTC would otherwise contract ``a * b + c`` into one fused
        # multiply-add (one rounding instead of two), and the kernel would round
        # differently from the same rule run as separate operations (measured on an
        # H200: the L2-folded momentum 1 ulp off the portable step)
        k = _KERNELS[key] = cupy.ElementwiseKernel(
            *trace(rule, flags).kernel_spec(l2_prefix), name, options=("--fmad=false",))
    return k


def apply_rule(xp, rule, flags, arrays, scratch, scalars, n_l2=None):
    """One traced update in place: CuPy's kernel, else ufunc calls with ``out=``.
    ``scratch``: one array shaped like ``arrays[0]`` or a list of them, grown here when
    the update needs more. ``n_l2`` (CuPy, with the ``l2`` flag on): the L2 term for the
    leading ``n_l2`` elements only, in the same launch."""
    if _kind(xp) == "cupy":
        t = trace(rule, flags)
        ins = [a for n, a in zip(rule.arrays, arrays) if n in _READ_ONLY]
        outs = [a for n, a in zip(rule.arrays, arrays) if n in t.outputs]
        if n_l2 is None:
            _cupy_kernel(rule, flags)(*ins, *scalars, *outs)
        else:
            _cupy_kernel(rule, flags, True)(*ins, *scalars, n_l2, *outs)
        return
    run, n_s = runner(xp, rule, flags)
    run(*arrays, _enough(xp, scratch, n_s, arrays[0]), *scalars)


def _enough(xp, scratch, n, like):
    """``scratch`` as a list of at least ``n`` arrays like ``like`` (a list grows)."""
    if not isinstance(scratch, list):
        scratch = [scratch]
    while len(scratch) < n:
        scratch.append(xp.empty_like(like))
    return scratch


def adam_scalars(*, c=0.0, lr, b1, b2, eps, t, wd_l2=0.0, wd_decoupled=0.0):
    """The scalar arguments of :func:`._rules.adam` for step ``t`` (Python floats)."""
    bc1 = 1 - b1 ** t
    sbc2 = math.sqrt(1 - b2 ** t)
    return (c, 1 - lr * wd_decoupled, wd_l2, b1, 1 - b1, b2, 1 - b2, eps * sbc2,
            lr / bc1 * sbc2)


def sgd_scalars(*, c=0.0, lr, momentum, wd=0.0, nesterov=False):
    """The scalar arguments of :func:`._rules.sgd` (``nesterov`` is a flag)."""
    return (c, wd, lr, momentum)


def adam_step(xp, p, g, m, v, scratch, *, lr, b1, b2, eps, t, wd_l2, wd_decoupled,
              vmax=None):
    """One Adam/AdamW step on ``p``, ``m``, ``v`` (and AMSGrad's maximum ``vmax`` where
    given) in place (``t`` is the new step count); on NumPy by the compiled kernel where
    it is usable, else ufuncs."""
    kind = _kind(xp)
    if kind == "torch" and _torch_fused_adam(
            [p], [g], [m], [v], None if vmax is None else [vmax], lr=lr, b1=b1, b2=b2,
            eps=eps, t=t, wd_l2=wd_l2, wd_decoupled=wd_decoupled):
        return
    kw = dict(lr=lr, b1=b1, b2=b2, eps=eps, t=t, wd_l2=wd_l2, wd_decoupled=wd_decoupled)
    if kind == "numpy" and _compiled.usable(p, g, m, v, vmax):
        # one compiled pass, the same numbers as the ufuncs
        _compiled.adam_flat(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                            vmax=None if vmax is None else vmax.reshape(-1), **kw)
        return
    apply_rule(xp, ADAM, (False, bool(wd_decoupled), bool(wd_l2), vmax is not None),
               (p, g, m, v, vmax), scratch, adam_scalars(**kw))


_TORCH_FUSED_FAILED = set()  # (device type, dtype) where torch's fused Adam raised


def _torch_fused_adam(ps, gs, ms, vs, vmaxs, *, lr, b1, b2, eps, t, wd_l2, wd_decoupled):
    """PyTorch's own one-pass Adam kernel (``torch.optim.Adam(fused=True)``; 3x faster
    than the traced calls over 670k float32 on the CPU, equal to float32 rounding) over
    the lists of tensors ``ps``, ``gs``, ``ms``, ``vs`` (and ``vmaxs`` or None), one call:
    True when it ran; False where this torch has none for the device, dtype or decays.

    The kernel's bits depend on where an element sits in its tensor (its vector loop
    and its tail round differently), so the callers hand it each parameter as its own
    tensor: a flat layout's views give the bits of the per-parameter step()."""
    if wd_l2 and wd_decoupled:
        return False
    import torch

    fused = getattr(torch, "_fused_adamw_" if wd_decoupled else "_fused_adam_", None)
    p = ps[0]
    where = (p.device.type, p.dtype)
    # it reads its arguments as contiguous (a transposed gradient came out wrong)
    if fused is None or where in _TORCH_FUSED_FAILED or not all(
            a.is_contiguous() for arrays in (ps, ms, vs, vmaxs or ()) for a in arrays):
        return False
    try:
        fused(list(ps), [g.contiguous() for g in gs], list(ms), list(vs), list(vmaxs or ()),
              [torch.full((), float(t), device=p.device)] * len(ps), lr=lr, beta1=b1,
              beta2=b2, weight_decay=wd_l2 or wd_decoupled, eps=eps,
              amsgrad=vmaxs is not None, maximize=False)
        return True
    except (RuntimeError, NotImplementedError, TypeError):
        # older torch: no kernel for this device or dtype (it fails before writing)
        _TORCH_FUSED_FAILED.add(where)
        return False


def sgd_step(xp, p, g, b, scratch, *, lr, momentum, nesterov, wd):
    """One SGD step (momentum buffer ``b`` may be None) on ``p`` in place, as
    :func:`adam_step`."""
    if _kind(xp) == "numpy" and _compiled.usable(p, g, b):
        _compiled.sgd_flat(p.reshape(-1), g.reshape(-1), None if b is None else b.reshape(-1),
                           lr=lr, momentum=momentum, nesterov=nesterov, wd=wd)
        return
    apply_rule(xp, SGD, (False, bool(wd), b is not None, bool(nesterov)), (p, g, b), scratch,
               sgd_scalars(lr=lr, momentum=momentum, wd=wd))


def flat_views(xp, cache, tag, state, names, shapes):
    """One contiguous buffer holding the state arrays ``names``, which become views into
    it (the state dict keeps its per-parameter keys), laid out as the flat parameters
    (:func:`xpdl._namespace.flat_offsets`). Built on first use and again whenever an entry
    was replaced (``load_state_dict``, ``.to()``, the portable path)."""
    entry = cache.get(tag)
    if entry is not None:
        flat, views = entry
        if len(views) == len(names) and all(state[n] is w for n, w in zip(names, views)):
            return flat
    first = state[names[0]]
    offsets, total = _ns.flat_offsets(xp, shapes, first.dtype)
    flat = xp.zeros(total, dtype=first.dtype, device=_ns.device_of(first))
    views = []
    for n, shp, off in zip(names, shapes, offsets):
        w = xp.reshape(flat[off:off + math.prod(shp)], shp)
        w[...] = state[n]
        state[n] = w
        views.append(w)
    cache[tag] = (flat, views)
    return flat


# Flat NumPy steps run block by block: each block of this many elements goes through all
# the passes of the update while its parameter, gradient, moment and scratch slices (5 x
# 256 KiB in float32) sit in the core's L2 cache, instead of streaming the whole arrays
# through memory a dozen times. Measured inside training (the arrays are cold there):
# Adam over 6.3M parameters 11.3 -> 8.9 ms, over 670k 0.93 -> 0.79 ms per step. A second
# thread did not pay inside training: OpenBLAS's worker threads busy-wait on the other
# core between matrix products.
_BLOCK = 1 << 16


def _blocks(xp, total, n_l2):
    """``(slice, in_l2)`` pairs covering ``range(total)``, cut at ``n_l2`` (the elements
    with the L2 term before it): blocks of ``_BLOCK`` on NumPy, one slice a side elsewhere
    (CuPy runs one fused kernel, torch one chain of operations)."""
    out = []
    for lo, hi, l2 in ((0, min(n_l2, total), True), (min(n_l2, total), total, False)):
        step = _BLOCK if _ns.is_numpy(xp) else max(hi - lo, 1)
        out += [(slice(i, min(i + step, hi)), l2) for i in range(lo, hi, step)]
    return out


def rule_stepper(xp, rule, flags, arrays, S, n_l2):
    """``run(scalars, c)``: the traced update over flat ``arrays`` block by block, the
    blocks before ``n_l2`` with the L2 term when ``c``; the views are made once."""
    if _ns.is_cupy(xp) and trace(rule, (True, *flags)).l2_prefix():
        n_l2 = min(n_l2, arrays[0].shape[0])

        def run_one(scalars, c):  # one kernel launch (each costs ~25 us of host time)
            if c and n_l2:
                apply_rule(xp, rule, (True, *flags), arrays, [], scalars, n_l2=n_l2)
            else:
                apply_rule(xp, rule, (False, *flags), arrays, [], scalars)

        return run_one
    n_s = max(runner(xp, rule, (True, *flags))[1], runner(xp, rule, (False, *flags))[1]) \
        if not _ns.is_cupy(xp) else 0
    scratch = _enough(xp, S, n_s, arrays[0])
    blocks = [(tuple(None if a is None else a[sl] for a in arrays),
               [s[sl] for s in scratch], l2) for sl, l2 in _blocks(xp, arrays[0].shape[0], n_l2)]

    def run(scalars, c):
        for views, s, l2 in blocks:
            apply_rule(xp, rule, (bool(c) and l2, *flags), views, s, scalars)

    return run


def adam_stepper(xp, P, G, M, V, S, n_l2=0, X=None, shapes=None, **kw):
    r"""A function ``run(lr, t, c=0.0)`` doing one Adam step (:func:`adam_step` with the
    constants ``kw``) on flat parameter, gradient and moment arrays (and AMSGrad's
    maximum ``X``, or None), block by block; on torch parameter by parameter (``shapes``,
    their shapes in flat order, laid out by :func:`xpdl._namespace.flat_offsets`), as one
    call of torch's fused kernel.

    With ``c``, :math:`c\,p` is first added to the gradient of the leading ``n_l2``
    elements (the flat array's weights, an L2 penalty); ``G`` is only read. The views are
    made once: the stepper is valid while the arrays are.
    """
    if _ns.is_numpy(xp) and _compiled.usable(P, G, M, V, X):
        def run_compiled(lr, t, c=0.0):
            _compiled.adam_flat(P, G, M, V, vmax=X, n_l2=n_l2, c=c, lr=lr, t=t, **kw)

        return run_compiled
    if _kind(xp) == "torch":
        # torch's fused kernel over each parameter's views (see _torch_fused_adam); where
        # it does not run, the traced calls over the same views
        shapes = [(P.shape[0],)] if shapes is None else shapes
        offsets, _ = _ns.flat_offsets(xp, shapes, P.dtype)
        parts = [(slice(off, off + math.prod(s)), off < n_l2) for s, off in zip(shapes, offsets)]
        views = [[None if A is None else A[sl] for sl, _ in parts] for A in (P, G, M, V, X)]
        scratch = {}

        def run_torch(lr, t, c=0.0):
            ps, gs, ms, vs, xs = views
            if c:
                gs = [_rules.add_l2(g, p, c) if l2 else g
                      for g, p, (_, l2) in zip(gs, ps, parts)]
            if not _torch_fused_adam(ps, gs, ms, vs, None if X is None else xs, lr=lr,
                                     b1=kw["b1"], b2=kw["b2"], eps=kw["eps"], t=t,
                                     wd_l2=kw.get("wd_l2", 0.0),
                                     wd_decoupled=kw.get("wd_decoupled", 0.0)):
                for i, (p, g, m, v, x) in enumerate(zip(ps, gs, ms, vs, xs)):
                    adam_step(xp, p, g, m, v, scratch.setdefault(i, []), lr=lr, t=t,
                              vmax=x, **kw)

        return run_torch
    run = rule_stepper(xp, ADAM, (bool(kw.get("wd_decoupled")), bool(kw.get("wd_l2")),
                                  X is not None), (P, G, M, V, X), S, n_l2)
    return lambda lr, t, c=0.0: run(adam_scalars(c=c, lr=lr, t=t, **kw), c)


def sgd_stepper(xp, P, G, B, S, n_l2=0, **kw):
    """As :func:`adam_stepper` for :func:`sgd_step` (``B`` the momentum buffer or None);
    ``run(lr, c=0.0)``."""
    if _ns.is_numpy(xp) and _compiled.usable(P, G, B):
        def run_compiled(lr, c=0.0):
            _compiled.sgd_flat(P, G, B, n_l2=n_l2, c=c, lr=lr, **kw)

        return run_compiled
    run = rule_stepper(xp, SGD, (bool(kw.get("wd")), B is not None,
                                 bool(kw.get("nesterov"))), (P, G, B), S, n_l2)
    return lambda lr, c=0.0: run(sgd_scalars(c=c, lr=lr, **kw), c)


def flat_scratch(xp, cache, like):
    s = cache.get("flat_s")
    if s is None or s[0].shape != like.shape or s[0].dtype != like.dtype:
        s = cache["flat_s"] = [xp.empty_like(like)]
    return s
