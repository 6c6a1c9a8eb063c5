"""Record a training step once, replay it as a program: :func:`compile_step`.

**Record.** The first call of a compiled step runs it eagerly on the tape while a recorder
notes every primitive call (:mod:`xpdl.autodiff.primitive`): the forward calls, and, during
``backward()``, every VJP call, every sum back to an operand's shape and every gradient
accumulation. Each array seen gets a *slot*: the step's inputs (``X``, ``y``, weights), the
parameters, values computed by earlier calls, or constants (Python scalars, arrays made
outside primitives). The result is a flat list of calls, forward then backward.

**Verify.** A step may compute something from its inputs outside xpdl's operations (for
instance ``xp.astype(y.data, ...)``); the recording would freeze that value as a constant.
So the program is used only after a second recording, on inputs with different values,
gives the same calls and the same constants; otherwise the step keeps running eagerly (a
``RuntimeWarning`` says why). Indexing with an array, ``retain_grad``, a Tensor turned
into a Python value (``float``, ``bool``, ``int``, ``item``: a branch or scale a replay
could not follow) and closure nodes made by :func:`xpdl.autodiff.tensor.record` also keep
a step eager.

**Replay.** Later calls run the list, calling each primitive's own ``forward``/``vjp`` on
the slots: no Tensor objects, no graph, no topological sort, no closures per step. Each
plan is turned once into straight-line Python (one local variable per slot, one line per
call). Slots are dropped after their last use (planned once from the list), so memory
follows the same liveness as the tape. A draw (:func:`xpdl.autodiff.tensor.draw`:
dropout's mask) is a call of its own; a replay draws again from the generator it was
recorded with, in the recorded order: same seed, same numbers as the eager tape. On JAX a
step runs as one ``jax.jit``-compiled pure function, forward, backward and the
optimizer's update, from its first recording on (the recording's tape values are
dropped; its draws are made on the host before each call and passed in), so its numbers
do not depend on when the program was recorded: a fit resumed from a file is the long fit
bit for bit. (A primitive with ``random=True``, which draws inside its forward, keeps a
JAX step eager.)

**Plan.** Calls whose values depend on constants only are folded into constants; for
a flat layout (NumPy, CuPy, torch), the ``c * W`` gradients of L2 terms move into the
optimizer's pass, VJPs that can write gradients straight into the flat gradient buffer
do, and calls that can write into a buffer (linear's products, ReLU and their VJPs) get
buffers planned by liveness, kept from step to step (:meth:`_Program.flat_plan`,
:meth:`_Program.bind`, :meth:`_Program._plan_buffers`).

**Guards.** A program is keyed by the inputs' shapes, dtypes and device, the parameters'
shapes, dtypes and ``requires_grad``, and the model's training mode; any change records
again (a few programs are kept: the last minibatch of an epoch is usually smaller).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import linecache
import operator
import os
import weakref

from .. import _compiled
from .. import _namespace as _ns
from ..exceptions import _warn
from .tensor import Tensor, _mode, _written, enable_grad, unbroadcast

__all__ = ["compile_step", "CompiledStep"]

_MAX_PROGRAMS = 4
_PY_SCALARS = (int, float, bool, complex)


class _Recorder:
    """Collects the calls of one eager step (installed as ``_mode.recorder``)."""

    def __init__(self, xp):
        self.xp = xp
        self.slot_of = {}  # id(array or saved object) -> slot
        self.keep = []  # keeps every recorded object alive, so ids stay unique
        self.n = 0
        self.nodes = []  # (fn, arg slots, out slots, multi, signature, extra)
        self.consts = []  # (slot, value)
        self.seed = None  # the slot of backward's initial gradient (ones)
        self.random = False  # a random primitive was called (its draws are its own)
        self.drawn = []  # the values of the draws (xpdl.autodiff.tensor.draw), in order
        self.why_opaque = None
        self.param_ids = None  # ids of the optimizer's parameters (set by the step)

    def new_slot(self, obj):
        s = self.n
        self.n += 1
        self.keep.append(obj)
        self.slot_of[id(obj)] = s
        return s

    def ref(self, obj):
        """The slot of ``obj``; a new constant slot for anything not seen before."""
        # Python scalars (whose ids CPython shares) are constants every time they appear.
        py = obj is None or type(obj) in _PY_SCALARS
        s = None if py else self.slot_of.get(id(obj))
        if s is None:
            s = self.n
            self.n += 1
            self.keep.append(obj)
            if not py:
                self.slot_of[id(obj)] = s
            self.consts.append((s, obj))
        return s

    def opaque(self, why):
        if self.why_opaque is None:
            self.why_opaque = why

    def __enter__(self):  # the tape reports its calls to this recorder meanwhile
        self._prev, _mode.recorder = _mode.recorder, self
        return self

    def __exit__(self, *exc):
        _mode.recorder = self._prev

    # -- hooks called by the tape -------------------------------------------------------
    def on_forward(self, prim, inputs, attrs, out, saved):
        xp = self.xp
        args = tuple(self.ref(x.data if x.__class__ is Tensor else x) for x in inputs)
        if prim.saves:
            outs = (self.new_slot(out), self.new_slot(saved))
        else:
            outs = (self.new_slot(out),)
        self.random = self.random or prim.random
        fn = functools.partial(prim.forward, xp, **attrs)  # C-level: no Python frame
        if prim.check is not None and _ns.values_on_host(xp, [
                x.data if x.__class__ is Tensor else x for x in inputs]):
            fn = _checked(fn, prim.check, xp, attrs)
        self.nodes.append((fn, args, outs, prim.saves, ("f", prim.name),
                           {"random": prim.random, "prim": prim, "attrs": attrs,
                            "plain": prim.check is None}))

    def on_draw(self, fn, out):
        """A draw (dropout's mask): a call without arguments that a replay makes again."""
        self.nodes.append((fn, (), (self.new_slot(out),), False, ("d",),
                           {"random": True, "draw": True}))
        self.drawn.append(out)

    def on_seed(self, grad):
        self.seed = self.ref(grad)

    def on_leaf(self, t):
        """A leaf Tensor gets a gradient: a replay writes only the optimizer's parameters'
        (a frozen layer should not require grad)."""
        if self.param_ids is not None and id(t) not in self.param_ids:
            self.opaque(f"a Tensor of shape {t.shape} that requires grad but is not one of "
                        f"the optimizer's parameters gets a gradient (freeze it with "
                        f"requires_grad = False, or give it to the optimizer)")

    def on_vjp(self, prim, datas, out, saved, g, needs, attrs, grads):
        xp = self.xp
        args = (self.ref(g), self.ref(out), self.ref(saved)) + tuple(self.ref(d) for d in datas)
        outs = tuple(None if (gr is None or not nd) else self.new_slot(gr)
                     for gr, nd in zip(grads, needs))
        vjp = prim.vjp
        needs = tuple(needs)

        def fn(g, out, saved, *ins, vjp=vjp, needs=needs, attrs=attrs):
            return vjp(xp, g, ins, out, saved, needs, **attrs)

        reads = None
        if prim.vjp_reads is not None:
            pos = {"g": 0, "out": 1, "saved": 2}
            reads = tuple(pos[r] if r in pos else 3 + int(r[2:]) for r in prim.vjp_reads(needs))
        self.nodes.append((fn, args, outs, True, ("b", prim.name, needs),
                           {"reads": reads, "prim": prim, "needs": needs, "attrs": attrs,
                            "xp": xp}))

    def on_unbroadcast(self, g, shape, res):
        xp = self.xp
        shape = tuple(shape)
        self.nodes.append((lambda g: unbroadcast(g, shape, xp), (self.ref(g),),
                           (self.new_slot(res),), False, ("u", shape), {}))

    def on_add(self, a, b, res):
        self.nodes.append((operator.add, (self.ref(a), self.ref(b)), (self.new_slot(res),),
                           False, ("a",), {}))

    def on_cast(self, g, res):
        xp, dt = self.xp, res.dtype
        self.nodes.append((lambda g: xp.astype(g, dt), (self.ref(g),), (self.new_slot(res),),
                           False, ("c", str(dt)), {}))


class _Program:
    """A recorded step: calls over slots, the slots of inputs, parameters, gradients and
    the loss, constants, and for each call the slots that die after it.

    Planning (once per program): calls whose values depend on constants only are folded
    into constants (the L2 term's chain of scalings of the seed gradient); slots are freed
    after their last reader. For a flat layout (NumPy, CuPy, torch) a second plan
    (:meth:`flat_plan`) also folds each ``c * W`` gradient of a squared norm
    (``sqnorm``'s VJP with a constant ``g``) into the optimizer's pass, and lets the
    gradients land in their views of the flat gradient buffer."""

    def __init__(self, rec, input_slots, param_slots, grad_slots, loss_slot):
        self.n = rec.n
        self.seed = rec.seed
        self.consts = rec.consts
        self.input_slots = input_slots
        self.param_slots = param_slots
        self.grad_slots = grad_slots
        self.loss_slot = loss_slot
        self.random = rec.random
        self.signature = tuple(node[4] for node in rec.nodes)
        self.nodes, folded = _fold(rec)
        self.run_consts = list(rec.consts) + folded
        self._values = dict(folded)
        self.steps = self._plan(self.nodes, grad_slots)
        self.xp = rec.xp
        self._bufferable = self._find_bufferable(rec)
        self._flat_plans = {}
        self._jitted = None
        # the value checks of the calls (class indices in range, ...): a jitted replay
        # returns the values they read that it computes (not inputs or constants, which
        # the host has: reading a returned value waits for the step to finish) and runs
        # them before the update
        self.checks = tuple((node[5]["prim"].check, node[1], node[5]["attrs"])
                            for node in self.nodes
                            if node[4][0] == "f" and not node[5]["plain"])
        read = {a for _, args, _ in self.checks for a in args}
        self.check_consts = {s: v for s, v in self.run_consts if s in read}
        self.check_inputs = tuple((i, s) for i, s in enumerate(input_slots)
                                  if s is not None and s in read)
        known = set(input_slots) | set(self.check_consts)
        self.check_slots = tuple(dict.fromkeys(a for _, args, _ in self.checks
                                               for a in args if a not in known))
        # the draws (dropout's masks), in order: a compiled step (JAX) takes their values
        # as inputs, drawn on the host before each call (the recording's: those it drew)
        self.draw_fns = tuple(node[0] for node in self.nodes if node[5].get("draw"))
        self._recorded = list(rec.drawn) if _ns.is_jax(rec.xp) and not rec.random else None
        self._fed = {}
        self.fused = (0, 0)
        self._code = {}  # generated replays by plan (see run)
        self.replays = 0

    def _plan(self, nodes, grad_slots):
        """Free each slot after its last reader (the results are kept to the end)."""
        keep = set(self.param_slots) | {s for s in grad_slots if s is not None}
        keep.add(self.loss_slot)
        keep |= {s for s, _ in self.run_consts}
        keep |= {s for s in self.input_slots if s is not None}
        last = {}
        for i, node in enumerate(nodes):
            for a in node[1]:
                last[a] = i
        free = [[] for _ in nodes]
        for s, i in last.items():
            if s not in keep:
                free[i].append(s)
        return [(fn, args, outs, multi, tuple(fr))
                for (fn, args, outs, multi, *_), fr in zip(nodes, free)]

    def flat_plan(self, nat, fuse_l2=True):
        """``(steps, grad_slots, l2)`` for a replay into a flat layout: ``l2`` is None or
        ``(c, indices)``, the parameters whose gradient ``c * W`` (from a squared norm
        with a constant output gradient) the optimizer adds in its own pass instead
        (:meth:`xpdl.optim.Optimizer.flat_stepper`'s ``n_l2``; the same bits: ``g + c*W``
        either way). ``nat`` is :func:`xpdl._namespace.native_module`'s module (NumPy,
        CuPy, torch's shim) or None."""
        key = (id(nat), fuse_l2)
        plan = self._flat_plans.get(key)
        if plan is None:
            nodes, grad_slots, l2 = list(self.nodes), list(self.grad_slots), None
            if fuse_l2:
                nodes, grad_slots, l2 = self._fuse_l2(nodes, grad_slots)
            plan = self._flat_plans[key] = [self._plan(nodes, grad_slots), grad_slots, l2,
                                            nodes, None, None]
        return plan

    def _find_bufferable(self, rec):
        """``{slot: (shape, dtype, device, alone)}`` for the results of calls that can
        write into a buffer (``Primitive.forward_into``, ``vjp_into``) that a replay may
        give one: not a parameter's gradient, and sharing no memory with the loss or those
        gradients in the recording (a view that outlives the step must not see the next
        step write the buffer). ``alone``: no other recorded value (a view, a saved tuple's
        item) shares its memory, so its buffer is free again after its last reader."""
        def arrays(obj):
            items = obj if isinstance(obj, (tuple, list)) else (obj,)
            return [a for a in items if _ns.is_array(a)]

        results = arrays(rec.keep[self.loss_slot]) + [
            a for s in self.grad_slots if s is not None for a in arrays(rec.keep[s])]
        fixed = set(self.grad_slots) | {self.loss_slot}
        others = [(t, a) for t, obj in enumerate(rec.keep) for a in arrays(obj)]
        found = {}
        for _, _, outs, _, sig, extra in self.nodes:
            prim = extra.get("prim")
            if prim is None or not (prim.vjp_into if sig[0] == "b" else prim.forward_into):
                continue
            for s in outs:
                a = None if s is None or s in fixed else rec.keep[s]
                if a is None or not _ns.is_array(a) or any(
                        _ns.may_share_memory(a, r) for r in results):
                    continue
                alone = not any(t != s and _ns.may_share_memory(a, b) for t, b in others)
                found[s] = (tuple(a.shape), a.dtype, _ns.device_of(a), alone)
        return found

    def _plan_buffers(self, steps):
        """``{slot: buffer}`` for a plan's bufferable results, by liveness: a result
        alone in its memory takes a buffer of its shape and dtype that no value alive at
        its call holds (one whose slot was freed at an earlier call), else a new one; the
        buffers are kept from step to step."""
        pool, given = {}, {}
        for _, _, outs, _, free in steps:
            for s in outs:
                meta = self._bufferable.get(s)
                if meta is not None:
                    spare = pool.get((meta[0], str(meta[1]), str(meta[2])))
                    given[s] = spare.pop() if spare else self.xp.empty(
                        meta[0], dtype=meta[1], device=meta[2])
            for s in free:
                meta = self._bufferable.get(s)
                if meta is not None and meta[3]:
                    pool.setdefault((meta[0], str(meta[1]), str(meta[2])), []).append(given[s])
        return given

    def bind(self, plan, nat, gviews, kernels=None):
        """Point the plan's last writers of the parameters' gradients at ``gviews`` (the
        parameters' views of the flat gradient buffer): a gradient sum writes there with
        ``nat.add(a, b, out=view)``, a VJP that can (``Primitive.vjp_into``, e.g. linear's
        products and bias sum) writes there itself. The same values, no copy afterwards.
        Done again when the flat buffer is replaced.

        Calls that can write into a buffer (``Primitive.forward_into``, ``vjp_into``:
        linear's products, ReLU and its VJP) write their other results into the buffers of
        :meth:`_plan_buffers`, kept from step to step, with the same bits as fresh arrays:
        a replayed step then allocates little (67 KB instead of 804 KB for a 64 x
        16-256-256-3 float64 step), a CUDA graph finds fixed addresses, and no step pays
        page faults where the allocator gives memory back to the system between steps
        (a bare script of a 784-512-512-10 step's products: 10.4-11.9 ms into fresh arrays,
        6.1-7.9 ms into kept ones; inside training here both took the same time).

        ``kernels``: :func:`xpdl._compiled.relu_layer_kernels`'s pair on NumPy, to run
        each linear layer followed by ReLU in fewer passes (:meth:`_fuse_relu_layers`)."""
        if plan[4] is not None and _same_objects(plan[4], gviews):
            return
        steps, grad_slots, _, nodes = plan[:4]
        if nat is None:
            plan[4] = list(gviews)
            return
        counts = {}
        for s in grad_slots:
            counts[s] = counts.get(s, 0) + 1
        view_of = {s: gv for s, gv in zip(grad_slots, gviews)
                   if s is not None and counts[s] == 1}
        fixed = set(self.input_slots) | set(self.param_slots) | {s for s, _ in self.run_consts}
        if plan[5] is None:
            plan[5] = self._plan_buffers(steps)
        buffers = plan[5]
        new, all_targets = [], []
        for (fn, args, outs, multi, free), node in zip(steps, nodes):
            sig, extra = node[4], node[5]
            targets = tuple(view_of.get(s) if s not in fixed else None for s in outs)
            if sig[0] in "fb":
                targets = tuple(buffers.get(s) if t is None else t
                                for s, t in zip(outs, targets))
            all_targets.append(targets)
            if any(t is not None for t in targets):
                if sig[0] == "a":
                    def fn(a, b, out=targets[0], add=nat.add):
                        return add(a, b, out=out)
                elif sig[0] == "b" and extra["prim"].vjp_into:
                    fn = _vjp_into(extra, targets)
                elif sig[0] == "f" and extra["plain"]:
                    fn = functools.partial(extra["prim"].forward, self.xp, out=targets[0],
                                           **extra["attrs"])
            new.append((fn, args, outs, multi, free))
        if kernels is not None:  # (counts kept for the tests and epoch_parts)
            self.fused = self._fuse_relu_layers(new, nodes, all_targets, nat, kernels)
        plan[0] = new
        plan[4] = list(gviews)

    @staticmethod
    def _fuse_relu_layers(steps, nodes, targets, nat, kernels):
        """Rewrite, in place, each linear layer with a bias followed by ReLU whose results
        have planned buffers (2-D, C-contiguous) into compiled passes with the same bits
        (ENGINE's fusion: a pattern over the recorded calls, executed by a kernel; without
        Numba the plain steps run). Forward: the linear call keeps only its product and the
        ReLU call adds the bias as it clips (``bias_relu``): the linear's result, read by
        nothing but that ReLU (its VJP reads only its output), then holds the product alone.
        Backward: ReLU's VJP also sums its result over rows into the bias gradient, which
        the next linear VJP, its only reader, then does not compute. Returns how many
        ``(forward, backward)`` pairs of calls were fused."""
        forward, backward = kernels
        n_fwd = n_bwd = 0
        readers = {}
        for i, node in enumerate(nodes):
            args, reads = node[1], node[5].get("reads")
            for a in (args if reads is None else [args[r] for r in reads]):
                readers.setdefault(a, []).append(i)

        def plain(a):
            return a is not None and a.ndim == 2 and a.flags.c_contiguous

        for i, node in enumerate(nodes):
            sig, args, outs = node[4], node[1], node[2]
            r = readers.get(outs[0], []) if outs and outs[0] is not None else []
            if len(r) != 1:
                continue
            j = r[0]
            nxt = nodes[j]
            if sig == ("f", "linear") and len(args) == 3 and nxt[4] == ("f", "relu") and \
                    nxt[1] == (outs[0],) and plain(targets[i][0]) and plain(targets[j][0]):
                h, rb = targets[i][0], targets[j][0]
                steps[i] = (lambda X, W, b, h=h: nat.matmul(X, W.T, out=h),) + steps[i][1:]
                steps[j] = ((lambda h, b, rb=rb: (forward(h, b, rb), rb)[1]),
                            (outs[0], args[2])) + steps[j][2:]
                n_fwd += 1
            elif sig[:2] == ("b", "relu") and nxt[4][:2] == ("b", "linear") and \
                    len(nxt[1]) == 6 and nxt[1][0] == outs[0] and nxt[4][2][2] and \
                    plain(targets[i][0]) and targets[j][2] is not None and \
                    targets[j][2].flags.c_contiguous:
                d, gb = targets[i][0], targets[j][2]
                steps[i] = ((lambda g, out, saved, *ins, d=d, gb=gb:
                             (backward(g, out, d, gb), (d,))[1]),) + steps[i][1:]
                extra = dict(nxt[5], needs=nxt[4][2][:2] + (False,))
                vjp = _vjp_into(extra, targets[j][:2] + (None,))
                steps[j] = ((lambda *a, vjp=vjp, gb=gb: vjp(*a)[:2] + (gb,)),) + steps[j][1:]
                n_bwd += 1
        return n_fwd, n_bwd

    def tap_plan(self, prim):
        """Steps for per-sample clipping (:mod:`xpdl.privacy`): each VJP call of ``prim``
        (the linear layer) computes only the gradient of its first input and appends
        ``(g, inputs)`` to ``taps`` (a list, emptied by the caller before each run) instead
        of the parameters' gradients. Returns ``(steps, taps, where)``, ``where[k]`` the
        (tap index, input position) of parameter ``k``'s gradient; None when a parameter's
        gradient does not come straight from such a call (another layer type, a parameter
        used twice, an L2 term)."""
        plan = self._flat_plans.get(("taps", id(prim)))
        if plan is not None:
            return plan
        index = {s: i for i, s in enumerate(self.param_slots)}
        read = {a for node in self.nodes for a in node[1]}
        where = [None] * len(self.param_slots)
        taps = []
        nodes = []
        n_taps = 0
        for node in self.nodes:
            fn, args, outs, multi, sig, extra = node
            if sig[0] == "b" and extra["prim"] is prim:
                for pos, a in enumerate(args[3:]):
                    k = index.get(a)
                    if k is None:
                        continue
                    if pos == 0 or where[k] is not None or self.grad_slots[k] != outs[pos] \
                            or outs[pos] in read:
                        return None
                    where[k] = (n_taps, pos)
                n_taps += 1
                needs = (extra["needs"][0],) + (False,) * (len(args) - 4)
                fn = _tap(extra, needs, taps)
            nodes.append((fn, args, outs, multi, sig, extra))
        if any(w is None for w in where):
            return None
        grad_slots = [None] * len(self.param_slots)
        plan = self._flat_plans[("taps", id(prim))] = (self._plan(nodes, grad_slots), taps,
                                                        where)
        return plan

    def _fuse_l2(self, nodes, grad_slots):
        """Drop each ``sqnorm`` VJP of a parameter ``W`` with a constant ``g`` whose result
        only goes into that parameter's final gradient sum (``data + coef(g) W``), and the
        sum; the parameter's gradient becomes the data term's. Done where all such
        parameters share one ``c`` (the estimators' L2 term)."""
        index = {s: i for i, s in enumerate(self.param_slots)}
        readers = {}
        for i, node in enumerate(nodes):
            for a in node[1]:
                readers.setdefault(a, []).append(i)
        counts = {}
        for s in grad_slots:
            counts[s] = counts.get(s, 0) + 1
        found = []  # (param index, vjp node, sum node, data slot, c)
        for i, (_, args, outs, _, sig, extra) in enumerate(nodes):
            if sig[:2] != ("b", "sqnorm") or args[0] not in self._values:
                continue
            k = index.get(args[3])
            r = readers.get(outs[0], [])
            if k is None or len(r) != 1 or nodes[r[0]][4][0] != "a":
                continue
            j = r[0]
            s_sum = nodes[j][2][0]
            if grad_slots[k] != s_sum or counts[s_sum] != 1 or s_sum in readers:
                continue
            a, b = nodes[j][1]
            other = b if a == outs[0] else a
            if other == outs[0] or other in counts:
                continue
            coef = extra["prim"].vjp_coef(self._values[args[0]])
            found.append((k, i, j, other, float(coef)))
        if not found:
            return nodes, grad_slots, None
        c = found[0][4]
        found = [f for f in found if f[4] == c]
        drop = {f[1] for f in found} | {f[2] for f in found}
        grad_slots = list(grad_slots)
        for k, _, _, other, _ in found:
            grad_slots[k] = other
        return ([nd for i, nd in enumerate(nodes) if i not in drop], grad_slots,
                (c, tuple(sorted(f[0] for f in found))))

    def same_as(self, other, inputs_differ):
        """Whether ``other`` (a second recording) has the same calls and constants: True,
        False, or None when undecided (an array constant made afresh in each recording
        kept its value, but so did the inputs it may have been computed from)."""
        if self.signature != other.signature or len(self.consts) != len(other.consts):
            return False
        undecided = False
        for (s1, a), (s2, b) in zip(self.consts, other.consts):
            if s1 != s2 or not _same_value(a, b):
                return False
            if a is not b and _ns.is_array(a) and s1 != self.seed and not inputs_differ:
                undecided = True
        return None if undecided else True

    def fed(self, steps=None, nodes=None):
        """``(steps, feed)``: ``steps`` (a plan of ``nodes``; default the program's own)
        where each draw takes the next value of the iterator ``feed[0]`` (set to draws
        made beforehand) instead of drawing: what a compiled step (JAX) traces and a
        captured graph (CuPy, torch on CUDA) runs, the draws being its inputs."""
        steps = self.steps if steps is None else steps
        nodes = self.nodes if nodes is None else nodes
        got = self._fed.get(id(steps))
        if got is None or got[0] is not steps:
            feed = [iter(())]

            def take():
                return next(feed[0])

            got = self._fed[id(steps)] = (steps, [
                (take,) + st[1:] if node[5].get("draw") else st
                for st, node in zip(steps, nodes)], feed)
        return got[1], got[2]

    def draws(self):
        """The values of this step's draws, in order: the recording's own the first time
        (a recording step runs compiled too, with what the tape drew), else new ones."""
        recorded, self._recorded = self._recorded, None
        return recorded if recorded is not None else [fn() for fn in self.draw_fns]

    def run(self, inputs, params, steps=None, grad_slots=None, keep=False):
        """Replay: ``(loss, gradients)`` for ``inputs`` and parameter arrays ``params``
        (with ``keep=True``, also every slot's array: nothing is freed along the way; with
        a tuple of slots, also those slots' arrays). Each plan runs as straight-line Python
        generated from it once (:func:`_generate`)."""
        steps = self.steps if steps is None else steps
        grad_slots = tuple(self.grad_slots if grad_slots is None else grad_slots)
        key = (id(steps), grad_slots, keep)
        code = self._code.get(key)
        if code is None or code[0] is not steps:
            if len(self._code) >= 8:
                self._code.clear()
            code = self._code[key] = (steps, _generate(self, steps, grad_slots, keep))
        return code[1](inputs, params)


def _generate(prog, steps, grad_slots, keep):
    """The replay of ``steps`` as one Python function ``(inputs, params) -> (loss, grads)``:
    each slot a local variable, each call one line, ``del`` after a slot's last use (so
    memory follows the same liveness as the tape). The same calls as walking the list, in
    the same order, without indexing an environment per argument (measured: 7% of a
    64-128-128-10 step)."""
    const = {s for s, _ in prog.run_consts}
    env = {f"c{s}": v for s, v in prog.run_consts}

    def name(s):
        return f"c{s}" if s in const else f"s{s}"

    def names(slots):  # assigned to: a tuple, ``_`` for values nobody reads
        return "".join(("_" if s is None else name(s)) + ", " for s in slots)

    def reads(slots):  # a list's items
        return ", ".join("None" if s is None else name(s) for s in slots)

    lines = ["def replay(inputs, params):", f"    {names(prog.input_slots)}= inputs",
             f"    {names(prog.param_slots)}= params"]
    for i, (fn, args, outs, multi, free) in enumerate(steps):
        env[f"f{i}"] = fn
        lines.append(f"    {names(outs) if multi else name(outs[0])} = "
                     f"f{i}({', '.join(name(a) for a in args)})")
        free = () if keep is True else [s for s in free if s not in (keep or ())]
        if free:
            lines.append(f"    del {', '.join(name(s) for s in free)}")
    result = f"{name(prog.loss_slot)}, [{reads(grad_slots)}]"
    if isinstance(keep, tuple):  # the slots asked for
        result += f", [{reads(keep)}]"
    elif keep:  # every slot the replay assigned, in slot order (None for the others)
        seen = {s for step in steps for s in step[2]} | const | set(prog.input_slots) | set(
            prog.param_slots)
        result += f", [{reads(s if s in seen else None for s in range(prog.n))}]"
    lines.append(f"    return {result}")
    source = "\n".join(lines) + "\n"
    filename = f"<xpdl replay {id(steps):x}>"
    exec(compile(source, filename, "exec"), env)  # noqa: S102 - our own generated source
    # the source, for tracebacks through the replay, for as long as the function lives
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    weakref.finalize(env["replay"], linecache.cache.pop, filename, None)
    return env["replay"]


def _fold(rec):
    """The recorded calls without those whose values depend on constants only (their
    results, as recorded, become constants), and those constants ``[(slot, value)]``.
    A VJP's dependencies are its primitive's ``vjp_reads``; random calls never fold."""
    const = {s for s, _ in rec.consts}
    nodes, folded = [], []
    for node in rec.nodes:
        args, outs, extra = node[1], node[2], node[5]
        reads = extra.get("reads")
        used = args if reads is None else [args[i] for i in reads]
        if not extra.get("random") and all(a in const for a in used):
            for s in outs:
                if s is not None and s not in const:
                    const.add(s)
                    folded.append((s, rec.keep[s]))
            continue
        nodes.append(node)
    return nodes, folded


def _run_checks(prog, inputs, seen):
    """The value checks of ``prog``'s calls, on ``inputs``, the constants and the values
    of ``prog.check_slots`` (in that order) that a compiled replay returned (``seen``).
    Only what a check reads is waited for (the cross-entropy's check reads the labels'
    values, an input, and the logits' shape). On JAX's CPU the inputs and constants are
    checked as NumPy views of their memory (JAX's own min and max, dispatched eagerly,
    took 300 us a step at 64-128-128-10, whose whole step takes about 450 us); a computed
    value stays a JAX array, read (and waited for) only if a check reads its values.
    On JAX's other devices (a GPU) nothing is read, as on CuPy and torch's CUDA: the
    checks would wait for the device every step (the recorded steps, on the tape, check)."""
    if not prog.checks:
        return
    host = prog.__dict__.get("_host_checks")
    if host is None:  # (the inputs' devices are part of the program's key: decided once)
        host = _ns.is_jax(prog.xp) and all(
            getattr(_ns.device_of(v), "platform", None) == "cpu"
            for v in [inputs[i] for i, _ in prog.check_inputs] + list(
                prog.check_consts.values()) if _ns.is_array(v))
        prog._host_checks = host
        if host:
            prog.check_consts = {s: _ns.to_host(v) if _ns.is_array(v) else v
                                 for s, v in prog.check_consts.items()}
    if not host:
        return
    value = dict(prog.check_consts)
    for i, s in prog.check_inputs:
        value[s] = _ns.to_host(inputs[i]) if host else inputs[i]
    value.update(zip(prog.check_slots, seen))
    xp = _ns.host_xp() if host else prog.xp
    for check, args, attrs in prog.checks:
        check(xp, [value[a] for a in args], **attrs)


def _checked(forward, check, xp, attrs):
    """A forward call preceded by its primitive's value check (see ``Primitive.check``)."""

    def fn(*ins):
        check(xp, ins, **attrs)
        return forward(*ins)

    return fn


def _tap(extra, needs, taps):
    """A VJP call that hands its output gradient and inputs to ``taps`` and computes only
    the gradients ``needs`` asks for."""
    xp, vjp, attrs = extra["xp"], extra["prim"].vjp, extra["attrs"]

    def fn(g, out, saved, *ins):
        taps.append((g, ins))
        return vjp(xp, g, ins, out, saved, needs, **attrs)

    return fn


def _vjp_into(extra, targets):
    """A VJP call writing the gradients that have a buffer in ``targets`` there."""
    xp, vjp, needs, attrs = extra["xp"], extra["prim"].vjp, extra["needs"], extra["attrs"]

    def fn(g, out, saved, *ins):
        return vjp(xp, g, ins, out, saved, needs, outs=targets, **attrs)

    return fn


def _same_value(a, b):
    if a is b:
        return True
    if a is None or b is None:
        return False
    if isinstance(a, (int, float, bool)) or isinstance(b, (int, float, bool)):
        return type(a) is type(b) and (a == b or (a != a and b != b))
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
                and all(_same_value(x, y) for x, y in zip(a, b)))
    if not (_ns.is_array(a) and _ns.is_array(b)):
        return False
    if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
        return False
    xp = _ns.array_namespace(a)
    if xp.isdtype(a.dtype, "real floating"):
        return bool(xp.all((a == b) | (xp.isnan(a) & xp.isnan(b))))
    return bool(xp.all(a == b))


def _differ(a, b):
    """Whether two recorded input tuples hold different values (so that a constant
    computed from the inputs would differ between the two recordings)."""
    for x, y in zip(a, b):
        if x is None:
            continue
        if not _same_value(x, y):
            return True
    return False


_FLAT_BACKENDS = ("numpy", "cupy", "torch")
# Where a backend can capture a replay as one graph (CUDA graphs), it does so after this
# many plain replays of a program (with its flat layout in place).
_GRAPH_AFTER = 8


class _CupyGraphs:
    """Graph capture with CuPy: a replay recorded by stream capture (relaxed mode, so the
    memory pool may allocate while capturing) and launched on the current stream.

    CuPy (14.2 at least) refuses any cuBLAS call while a stream captures
    (``NotImplementedError: calling cuBLAS API during stream capture is currently
    unsupported``), and every linear layer's product is one; cuBLAS itself captures. So
    the capture runs inside :class:`xpdl._namespace.capturing_products`, where the
    products (:func:`xpdl._namespace.matmul_into`) call CuPy's cuBLAS handle themselves.
    :meth:`usable` asks once, with a captured 2 x 2 product launched and compared with
    CuPy's own; where that fails, CuPy programs replay without graphs."""

    _products_capturable = None

    def usable(self, like):
        if _CupyGraphs._products_capturable is None:
            import cupy

            a = cupy.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=cupy.float32)
            ok = False
            try:
                graph, out = self.capture(lambda: _ns.matmul_into(cupy, a, a.T))
                out[...] = 0
                self.launch(graph)
                ok = bool(cupy.all(out == a @ a.T))
            except Exception:  # noqa: BLE001 (a refusal, a library not found: no graphs)
                ok = False
            _CupyGraphs._products_capturable = ok
        return _CupyGraphs._products_capturable

    def capture(self, fn):
        import cupy

        stream = cupy.cuda.Stream(non_blocking=True)
        with _ns.capturing_products(), stream:  # (leaves the stream first)
            stream.begin_capture(mode=cupy.cuda.runtime.streamCaptureModeRelaxed)
            try:
                out = fn()
            finally:
                graph = stream.end_capture()
        return graph, out

    def launch(self, graph):
        import cupy

        graph.launch(stream=cupy.cuda.get_current_stream())


class _TorchGraphs:
    """Graph capture with PyTorch on CUDA tensors (``torch.cuda.CUDAGraph``, which captures
    cuBLAS): PyTorch's recipe, one run on a side stream first (cuBLAS's workspace and the
    allocator's blocks are made outside the capture), then the capture into the graph's
    own memory pool; launched with ``replay()`` on the current stream."""

    def usable(self, like):
        return getattr(getattr(like, "device", None), "type", None) == "cuda"

    def capture(self, fn):
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: unsafe CUDA calls are refused in this thread only, not when another
        # thread of the process makes them (JAX's runtime, a data loader)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = fn()
        return graph, out

    def launch(self, graph):
        graph.replay()


#: Backends whose replays are captured as graphs where ``usable(<the flat parameter
#: array>)`` (tests put a NumPy stand-in here).
_GRAPHS = {"cupy": _CupyGraphs(), "torch": _TorchGraphs()}


def _graph_backend(xp, like):
    """The entry of ``_GRAPHS`` that captures replays of arrays like ``like``, or None."""
    backend = _GRAPHS.get(_ns.backend_name(xp))
    usable = getattr(backend, "usable", None)
    return backend if usable is None or usable(like) else None


@contextlib.contextmanager
def _collector_held():
    """Python's cyclic garbage collected before a capture and the collector held off while
    it runs: a collection inside the capture would run the finalizers of whatever cycles
    it frees (another test's CUDA stream, event or graph), and their CUDA calls end the
    capture (seen once in a full GPU test run: "operation failed due to a previous error
    during capture"). Once per captured program."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Captured:
    """A program's replay captured once as a graph over fixed buffers: the batch is copied
    into static input arrays, the graph launched, and the loss and gradients read from the
    arrays the capture wrote (every slot's array is kept alive with the graph, so no other
    allocation can take its memory). Bound to one flat layout."""

    def __init__(self, backend, prog, plan, flat, xp, inputs, params, draws):
        self.backend, self.flat, self.xp = backend, flat, xp
        self.static = [None if a is None else xp.asarray(a, copy=True) for a in inputs]
        # the draws (dropout's masks) are inputs too: drawn on the host before each launch
        # and copied into these arrays, which the graph reads
        self.static_draws = [xp.asarray(d, copy=True) for d in draws]
        datas = [p.data for p in params]
        steps, feed = prog.fed(plan[0], plan[3])

        def replay():
            feed[0] = iter(self.static_draws)
            return list(prog.run(self.static, datas, steps, plan[1], keep=True))

        # [loss, gradients, every slot's array]: what the graph writes on each launch
        with _collector_held():
            self.graph, self.out = backend.capture(replay)

    def launch(self, inputs, draws):
        for s, a in zip(self.static + self.static_draws, list(inputs) + list(draws)):
            if s is not None:
                s[...] = a
        self.backend.launch(self.graph)
        # a copy: the caller may keep the loss, and the next launch rewrites the buffer
        return self.xp.asarray(self.out[0], copy=True), self.out[1]


def _agree(xp, a, b):
    """Whether a captured launch gave the plain replay's values (to rounding)."""
    tol = 1e-10 if a.dtype == xp.float64 else 1e-4
    d = xp.max(xp.abs(a - b)) if a.ndim else xp.abs(a - b)
    return bool(d <= tol * (1 + float(xp.max(xp.abs(b)) if b.ndim else xp.abs(b))))


class _Flat:
    """Parameters as views into one flat array ``P``, gradients into ``G``, in the order
    ``order`` (parameter indices; the first ``n_first``, whose L2 gradient the optimizer
    adds, take the leading ``n_l2`` elements), placed by :func:`xpdl._namespace.flat_offsets`
    (zeros between them where the backend wants aligned arrays: they stay zero)."""

    def __init__(self, xp, params, order, n_first):
        self.order = order
        self.shapes = [tuple(params[i].data.shape) for i in order]
        dtype = params[order[0]].data.dtype
        offsets, total = _ns.flat_offsets(xp, self.shapes, dtype)
        self.n_l2 = offsets[n_first] if n_first < len(order) else total
        self.P = xp.zeros(total, dtype=dtype, device=_ns.device_of(params[order[0]].data))
        self.G = xp.zeros_like(self.P)
        self.pviews, self.gviews = [None] * len(params), [None] * len(params)
        for i, shp, off in zip(order, self.shapes, offsets):
            size = params[i].size
            self.pviews[i] = xp.reshape(self.P[off:off + size], shp)
            self.gviews[i] = xp.reshape(self.G[off:off + size], shp)
            self.pviews[i][...] = params[i].data
        for p, v in zip(params, self.pviews):
            p.data = v
            p._own = True

    def bound(self, params):
        return _same_objects([p.data for p in params], self.pviews)

    def valid(self, opt, params):
        """Whether the parameters are still this layout's views, and the optimizer's
        transform and state those its stepper was made for (a rollback, ``load``,
        ``.to()``, a plain ``step()``, ``load_state_dict`` or a new ``transform`` replace
        them)."""
        return self.state is opt.state and self.transform is opt.transform and \
            self.fused is opt.use_fused and self.bound(params) and _same_objects(
            list(map(opt.state.get, self.state_keys)), self.state_values)

    def update(self, params, grads, c=0.0):
        """The parameters' gradients into their views of ``G`` (where not written there
        already) and one pass of the stepper (adding ``c * W`` to the leading ``n_l2``)."""
        for p, gv, g in zip(params, self.gviews, grads):
            if g is not gv:
                gv[...] = g
            p.grad = gv
        _written(params)
        self.stepper(c)


class CompiledStep:
    """The callable returned by :func:`compile_step`.

    Attributes
    ----------
    mode : str
        ``"eager"`` until a program is verified, ``"replay"`` after, ``"eager (reason)"``
        when the step cannot be replayed.
    recordings : int
        How many times the step has been recorded (tests and benchmarks read it).
    """

    def __init__(self, model, loss_fn, optimizer):
        if not hasattr(optimizer, "_params") or not hasattr(optimizer, "step"):
            raise TypeError("xpdl.compile_step: optimizer must be an xpdl.optim optimizer "
                            "object (e.g. xpdl.optim.Adam(model, lr))")
        if not callable(model) or not callable(loss_fn):
            raise TypeError("xpdl.compile_step: model and loss_fn must be callable")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self._programs = _Programs(_MAX_PROGRAMS)
        self._flat = None
        self.fuse_l2 = True  # False: keep the L2 gradients in the program (to compare)
        # captured graphs where the backend has them (CuPy, torch on CUDA);
        # XPDL_CUDA_GRAPHS=0 turns them off
        self.graphs = os.environ.get("XPDL_CUDA_GRAPHS", "1") != "0"
        self.recordings = 0
        self.mode = "eager"

    # -- the step ------------------------------------------------------------------------
    def __call__(self, X, y, sample_weight=None):
        """One training step on ``(X, y[, sample_weight])``: forward, loss, backward and
        the optimizer's update. Returns the loss before the update (a 0-d array)."""
        self.optimizer._sync_settings()  # (param_groups changed: a new transform)
        params = [p for _, p in self.optimizer._params]
        xp = params[0].xp
        inputs = (_data(X), _data(y), None if sample_weight is None else _data(sample_weight))
        for name, a in zip(("X", "y", "sample_weight"), inputs):
            if a is not None and not _ns.is_array(a):
                raise TypeError(f"xpdl.compile_step: {name} must be an array (or a Tensor), "
                                f"got {type(a).__name__}")
            if a is not None and _ns.array_namespace(a) is not xp:
                raise TypeError(f"xpdl.compile_step: the batch is a "
                                f"{_ns.backend_name(_ns.array_namespace(a))} array but the "
                                f"parameters are {_ns.backend_name(xp)}; move one of them")
        if sample_weight is not None and getattr(self.loss_fn, "__module__", None) == \
                "xpdl.losses":
            name = self.loss_fn.__name__  # (its third parameter is reduction)
            raise TypeError(f"xpdl.compile_step: sample_weight was given, but loss_fn="
                            f"xpdl.losses.{name} takes no weights; pass loss_fn=lambda out, "
                            f"y, w: xpdl.functional.mean(xpdl.losses.{name}(out, y, "
                            f"reduction='none') * w)")
        key = self._key(xp, inputs, params)
        entry = self._programs.get(key)
        if (entry is None or entry[0] != "ok") and not _ns.is_numpy(xp):
            self._check_devices(inputs, params)
        if key in self._programs.eager:
            return self._eager_step(inputs, params)
        if entry is not None and entry[0] == "ok":
            return self._replay(entry[1], xp, inputs, params)
        prog, loss = self._record(xp, inputs, params, key)
        if prog is not None:
            state = self._programs.settle(key, xp, inputs, prog)
            if state == "ok":
                self.mode = "replay"
                if entry is not None:  # the same calls and constants as the pending
                    # program: its compiled step (jax) serves
                    prog._jitted = entry[1]._jitted
                    if "_jitted_run" in entry[1].__dict__:
                        prog._jitted_run = entry[1]._jitted_run
            elif state == "differ":
                self._give_up(key, "the step computes values from its inputs outside "
                                   "xpdl's operations, or takes a data-dependent branch")
                prog = None
        if prog is not None and _ns.is_jax(xp) and not prog.random:
            # the step as every later one runs (the program holds for these inputs:
            # it was recorded on them)
            return self._jax_replay(prog, inputs, params)
        self._apply_update(xp, params, [p.grad for p in params])
        return loss

    @staticmethod
    def _check_devices(inputs, params):
        """A batch on another device than the parameters is a ValueError that says so
        (the backend's own error came from inside the forward: a RuntimeError on torch).
        Checked before recording and on eager steps; a replayed program's key holds the
        devices it was recorded for, so another device records (and checks) again."""
        pdev = _ns.device_of(params[0].data)
        for name, a in zip(("X", "y", "sample_weight"), inputs):
            if a is not None and not _ns.same_device(_ns.device_of(a), pdev):
                raise ValueError(f"xpdl.compile_step: {name} is on device "
                                 f"{_ns.device_of(a)!r} but the parameters are on {pdev!r}; "
                                 f"move one of them")

    def _give_up(self, key, why):
        self._programs.give_up(key, why)
        self.mode = f"eager ({why})"
        _warn(f"xpdl.compile_step: this step runs eagerly (on the tape) every time: "
              f"{why}", RuntimeWarning)

    def _key(self, xp, inputs, params):
        """What a program is valid for: namespace, training mode, each input's and
        parameter's shape and dtype (and device, off NumPy), parameters' requires_grad.
        Built from attributes only (no string conversions): it runs every step."""
        host = _ns.is_numpy(xp)
        parts = [id(xp), bool(getattr(self.model, "training", True))]
        for a in inputs:
            if a is None:
                parts.append(None)
            else:
                parts.append((a.shape, a.dtype, None if host else
                              _ns.device_key(_ns.device_of(a))))
        for p in params:
            d = p.data
            parts.append((d.shape, d.dtype, p.requires_grad,
                          None if host else _ns.device_key(_ns.device_of(d))))
        return tuple(parts)

    def _forward_backward(self, inputs, params):
        X, y, w = inputs
        for p in params:
            p.grad = None
        with enable_grad():
            out = self.model(Tensor(X))
            yt = Tensor(y) if _ns.is_array(y) else y
            if w is None:
                loss = self.loss_fn(out, yt)
            else:
                loss = self.loss_fn(out, yt, Tensor(w))
        if not isinstance(loss, Tensor) or loss.size != 1:
            raise ValueError("xpdl.compile_step: loss_fn must return a one-element Tensor")
        if loss.requires_grad:
            loss.backward()
        elif any(p.requires_grad for p in params):  # (torch's backward() refuses it too)
            raise ValueError("xpdl.compile_step: the loss does not depend on any parameter "
                             "that requires grad, so the step would train nothing; does the "
                             "model return a plain array (.data) or run under no_grad?")
        return loss

    def _eager_step(self, inputs, params):
        loss = self._forward_backward(inputs, params)
        self._apply_update(params[0].xp, params, [p.grad for p in params])
        return loss.data

    def _record(self, xp, inputs, params, key):
        rec = _Recorder(xp)
        input_slots = [None if a is None else rec.new_slot(a) for a in inputs]
        param_slots = [rec.new_slot(p.data) for p in params]
        rec.param_ids = {id(p) for p in params}
        with rec:
            loss = self._forward_backward(inputs, params)
        self.recordings += 1
        prog = None
        if rec.why_opaque is not None:
            self._give_up(key, rec.why_opaque)
        elif loss.requires_grad:
            grad_slots = [None if p.grad is None else rec.slot_of.get(id(p.grad))
                          for p in params]
            if any(g is None and p.grad is not None for g, p in zip(grad_slots, params)):
                self._give_up(key, "a gradient was formed outside the recorded calls")
            else:
                prog = _Program(rec, input_slots, param_slots, grad_slots,
                                rec.slot_of[id(loss.data)])
        return prog, loss.data

    def _replay(self, prog, xp, inputs, params):
        prog.replays += 1
        fast = prog.__dict__.get("_fast")
        if fast is not None and fast[0] is self._flat and fast[1] == self.fuse_l2 and \
                fast[0].valid(self.optimizer, params) and (fast[4] is None or (
                    self.graphs and prog.__dict__.get("_captured") is fast[4])):
            # the flat layout, plan and binding (and capture) of this program's last
            # replay still hold
            flat, _, plan, c, g = fast
            if g is None:
                loss, grads = prog.run(inputs, flat.pviews, plan[0], plan[1])
            else:
                loss, grads = g.launch(inputs, [fn() for fn in prog.draw_fns])
            flat.update(params, grads, c)
            return loss
        if _ns.is_jax(xp) and not prog.random:
            return self._jax_replay(prog, inputs, params)
        plan = flat = None
        if None not in prog.grad_slots and _ns.supports_inplace(xp) and \
                _ns.backend_name(xp) in _FLAT_BACKENDS:
            nat = _ns.native_module(xp)
            plan = prog.flat_plan(nat, self.fuse_l2)
            flat = self._flat_layout(xp, params, () if plan[2] is None else plan[2][1])
            prog.bind(plan, nat, flat.gviews, _compiled.relu_layer_kernels(flat.G)
                      if _ns.is_numpy(xp) else None)
        datas = [p.data for p in params]
        if flat is None:
            loss, grads = prog.run(inputs, datas)
        else:
            loss, grads = self._graph_replay(prog, plan, flat, xp, inputs, params)
            c = 0.0 if plan[2] is None else plan[2][0]
            g = prog.__dict__.get("_captured")
            if flat.graphs is None or not self.graphs or g is False:
                prog._fast = (flat, self.fuse_l2, plan, c, None)
            elif g is not None and g.flat is flat and not g.checks:  # checked: launched
                prog._fast = (flat, self.fuse_l2, plan, c, g)
            flat.update(params, grads, c)
            return loss
        self._apply_update(xp, params, grads)
        return loss

    def _jax_replay(self, prog, inputs, params):
        """A replay on JAX: the whole step as one ``jax.jit``-compiled function
        (:meth:`_jax_step`), or where the optimizer's update cannot be traced (a
        parameter behind in its own step count, a frozen one, a schedule branching in
        Python) the program jitted and the update eagerly. Every step of a program runs
        this way, its recordings included (their tape values are not used), so the
        numbers do not depend on when a program was recorded: a fit resumed from a file
        equals the long one bit for bit. Value checks (class indices in range, ...) run on
        the values the compiled call returns, before anything is updated. Draws
        (dropout's masks) are made on the host before the call, in the recorded order,
        and passed in: the tape's numbers."""
        draws = prog.draws()
        if None not in prog.grad_slots and not getattr(self.optimizer, "_behind", None) \
                and self.__dict__.get("_untraceable") is not self.optimizer.transform:
            out = self._jax_step(prog, inputs, params, draws)
            if out is not None:
                return out
        run = prog.__dict__.get("_jitted_run")
        if run is None:
            import jax

            steps, feed = prog.fed()

            def run(ins, ps, draws):
                feed[0] = iter(draws)
                return prog.run(ins, ps, steps, keep=prog.check_slots)

            run = prog._jitted_run = jax.jit(run)
        loss, grads, seen = run(tuple(inputs), [p.data for p in params], draws)
        _run_checks(prog, inputs, seen)
        self._apply_update(params[0].xp, params, grads)
        return loss

    def _jax_step(self, prog, inputs, params, draws):
        """The whole step as one ``jax.jit``-compiled pure function: the program's loss
        and gradients, the optimizer's transform and the new parameters (the object
        optimizer's :meth:`~xpdl.optim.Optimizer.step` computes the same, one call at a
        time). The step counters stay on the device until read (then Python ints, as
        ``step()`` leaves them)."""
        opt = self.optimizer
        names = [n for n, _ in opt._params]
        if prog._jitted is None or prog._jitted[0] is not opt.transform:
            import jax

            tx = opt.transform
            steps, feed = prog.fed()

            def pure(ins, ps, state, draws):
                feed[0] = iter(draws)
                loss, grads, seen = prog.run(ins, ps, steps, keep=prog.check_slots)
                g = dict(zip(names, grads))
                p = dict(zip(names, ps))
                updates, new = tx.update(g, state, p, inplace=False)
                return loss, [p[n] + updates[n] for n in names], {**state, **new}, grads, seen

            prog._jitted = (tx, jax.jit(pure))
        last = self.__dict__.get("_jax_wrote")
        if last is None or last[0] is not opt.state or last[1] is not params[0].data:
            # (a model moved to another dtype or device; not after this path's own step)
            opt._follow_parameters(params[0])
        old = opt.state
        check = getattr(opt.transform, "check", None)
        if check is not None:
            # A schedule's rate is checked on the host before the launch (a jitted step
            # cannot raise): with the counters as Python ints, mirrored while they stay on
            # the device (each counter of xpdl's transforms counts updates: +1 a step).
            mirror = opt.__dict__.get("_host_counters")
            if mirror is None or mirror[0] is not old:
                opt._counters_to_host()
                mirror = (old, {k: v for k, v in old.items() if isinstance(v, int)})
            check({**old, **mirror[1]})
        ints = {k for k, v in old.items() if isinstance(v, int)}
        if ints:  # as the arrays they come back as (placed on the parameters' device, as
            # outputs are), so that the function is compiled once
            xp, dev = params[0].xp, _ns.device_of(params[0].data)
            old = {k: xp.asarray(v, device=dev) if k in ints else v for k, v in old.items()}
        try:
            loss, new_params, state, grads, seen = prog._jitted[1](
                tuple(inputs), [p.data for p in params], old, draws)
        except TypeError as exc:  # jax's tracer errors are TypeErrors; nothing has changed
            self._untraceable = opt.transform
            first = str(exc).splitlines()[0] if str(exc) else ""
            _warn(f"xpdl.compile_step: the optimizer's update cannot be traced by "
                  f"jax.jit ({type(exc).__name__}: {first}); the forward and backward "
                  f"run jitted and the update eagerly. A learning-rate schedule that "
                  f"branches on the step in Python can use jnp.where instead",
                  RuntimeWarning)
            return None
        _run_checks(prog, inputs, seen)  # (raises before anything is updated)
        # The step counters stay 0-d arrays until something reads them (the optimizer's
        # state_dict(), step(), ...: Optimizer._counters_to_host): making them ints here
        # would wait for every step to finish (measured: 2x slower at 64-128-128-10).
        opt._device_counters = opt.__dict__.get("_device_counters", frozenset()) | ints
        opt.state = state
        if check is not None:
            opt._host_counters = (state, {k: v + 1 for k, v in mirror[1].items()})
        for p, a, g in zip(params, new_params, grads):
            p.data = a
            p.grad = g
        self._jax_wrote = (state, new_params[0])
        _written(params)
        return loss

    def _graph_replay(self, prog, plan, flat, xp, inputs, params):
        """The flat plan's replay, launched as a captured graph where the backend can
        (``_GRAPHS``; not for programs with a random primitive, which draws inside its
        forward; dropout's masks are drawn on the host before each launch and copied into
        the arrays the graph reads). The first two launches (the capture's batch and the
        next) are checked against plain replays of the same batches and draws; a capture
        that fails or disagrees leaves the program on plain replays (with a warning)."""
        backend = flat.graphs
        g = prog.__dict__.get("_captured")
        if backend is None or prog.random or g is False or not self.graphs or \
                prog.replays <= _GRAPH_AFTER:
            return prog.run(inputs, [p.data for p in params], plan[0], plan[1])
        draws = [fn() for fn in prog.draw_fns]
        if g is not None and g.flat is flat and not g.checks:
            return g.launch(inputs, draws)
        why = None
        try:
            if g is None or g.flat is not flat:
                g = prog._captured = _Captured(backend, prog, plan, flat, xp, inputs, params,
                                               draws)
                g.checks = 2
            loss, grads = g.launch(inputs, draws)
        except Exception as exc:  # a host synchronisation, an unsupported call, ...
            why = f"{type(exc).__name__}: {exc}"
        steps, feed = prog.fed(plan[0], plan[3])
        feed[0] = iter(draws)
        ref = prog.run(inputs, [p.data for p in params], steps, plan[1])
        if why is None and not (_agree(xp, loss, ref[0]) and all(
                a is None or _agree(xp, a, b) for a, b in zip(grads, ref[1]))):
            why = "the captured graph's results differ from the plain replay's"
        if why is not None:
            prog._captured = False
            _warn(f"xpdl.compile_step: replaying without a captured graph ({why})",
                  RuntimeWarning)
        else:
            g.checks -= 1
        return ref

    def _flat_layout(self, xp, params, first=None):
        """Parameters as views into one flat array and gradients into another, with the
        optimizer's flat stepper bound to them (NumPy, CuPy, torch); rebuilt when a
        parameter array or the optimizer state was replaced (a rollback, ``load``,
        ``.to()``), or when the parameters ``first`` (indices: those whose L2 gradient
        the stepper adds) are not the layout's leading ones (None: any layout will do).
        None where the namespace cannot update in place."""
        fl = self._flat
        opt = self.optimizer
        if fl is not None and fl.valid(opt, params) and (
                first is None or fl.first == tuple(first)):
            return fl
        if not _ns.supports_inplace(xp) or _ns.backend_name(xp) not in _FLAT_BACKENDS:
            return None
        first = tuple(first or ())
        order = first + tuple(i for i in range(len(params)) if i not in first)
        self._flat = fl = _Flat(xp, params, order, len(first))
        fl.first = first
        fl.graphs = _graph_backend(xp, fl.P)  # what captures its replays (None: nothing)
        keys = [k for k, _ in opt._params]
        fl.stepper = opt.flat_stepper(fl.P, fl.G, [keys[i] for i in order], fl.shapes,
                                      fl.n_l2)
        fl.state, fl.transform, fl.fused = opt.state, opt.transform, opt.use_fused
        # the stepper holds views of the state arrays: if another path replaces them (a
        # plain step(), load_state_dict), the layout is made again
        fl.state_keys = [k for k, v in opt.state.items() if _ns.is_array(v)]
        fl.state_values = [opt.state[k] for k in fl.state_keys]
        return fl

    def _apply_update(self, xp, params, grads):
        """Give the parameters their gradients and run the optimizer: through the flat
        layout where there is one (one pass over all parameters), else ``step()``."""
        flat = None
        if all(g is not None for g in grads) and not _ns.is_jax(xp):
            flat = self._flat_layout(xp, params)
        if flat is None:
            for p, g in zip(params, grads):
                p.grad = g
            self.optimizer.step()
            return
        flat.update(params, grads)


class _Programs(dict):
    """Recorded programs by guard key: ``("pending", program, inputs copy, extra)`` until
    a second recording on other inputs agrees, then ``("ok", program, extra)``; ``eager``
    holds the keys that stay on the tape (with the reason). At most ``limit`` programs."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.eager = {}

    def settle(self, key, xp, inputs, prog, extra=None):
        """Note a recording of ``key``: ``"ok"`` when it verifies the pending one,
        ``"pending"`` (kept to compare with the next), or ``"differ"`` (the caller gives
        up on the key)."""
        entry = self.get(key)
        same = None
        if entry is not None and entry[0] == "pending":
            same = prog.same_as(entry[1], _differ(inputs, entry[2]))
        elif len(self) >= self.limit:
            self.pop(next(iter(self)))
        if same:
            self[key] = ("ok", prog, extra)
            return "ok"
        if same is None:
            self[key] = ("pending", prog, _copies(xp, inputs), extra)
            return "pending"
        return "differ"

    def give_up(self, key, why):
        self.pop(key, None)
        self.eager[key] = why


def _data(a):
    return a.data if isinstance(a, Tensor) else a


def _same_objects(a, b):
    """Whether two lists hold the same objects (identity, compared without a Python frame
    per item: these checks run every step)."""
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _copies(xp, inputs):
    return tuple(None if a is None else xp.asarray(a, copy=True) for a in inputs)


def compile_step(model, loss_fn, optimizer):
    """A training step recorded once and replayed: forward, loss, backward and update.

    Parameters
    ----------
    model : callable
        Maps a Tensor ``X`` of shape (n_samples, ...) to outputs (an :mod:`xpdl.nn`
        module, or any function of xpdl operations on parameters the optimizer holds).
    loss_fn : callable
        ``loss_fn(output, y)`` (or ``loss_fn(output, y, sample_weight)`` when the step is
        called with weights) returning a one-element Tensor; ``y`` and the weights arrive
        as Tensors without gradient. Compute with xpdl operations (:mod:`xpdl.functional`,
        :mod:`xpdl.losses`, Tensor operators). A step that turns a Tensor into a Python
        value (``float(t)``, ``bool(t)``, ``int(t)``, ``t.item()``, so ``if t > 0:``)
        stays eager, with a warning: a replay could not follow a branch or scale taken
        from it. Values computed from raw arrays (``t.data`` with ``xp``) are not seen:
        the step stays eager when its two first recordings differ, but a branch on them
        that only a later batch takes would replay the recorded one; do not branch on
        ``.data`` inside a compiled step. Python numbers the step reads from outside (a
        loss weight annealed by epoch) are constants of the recording, as under
        ``jax.jit``: one that changes after the first two steps is not seen; make a new
        step with :func:`compile_step` when it changes.
    optimizer : xpdl.optim.Optimizer
        Holds the parameters; its :meth:`~xpdl.optim.Optimizer.step` applies the update.
        Every Tensor of the model that requires grad should be among them: one that is
        not (a layer left out but not frozen with ``requires_grad = False``) gets a
        gradient on the tape that a replay would not write, so the step stays eager with
        a warning naming it.

    Returns
    -------
    CompiledStep
        ``step(X, y, sample_weight=None) -> loss`` (0-d array, before the update).

    Notes
    -----
    The first call runs the step on the tape and records it; a later call with different
    input values records it again and, when both recordings agree, the program is replayed
    from then on (see :mod:`xpdl.autodiff.program`). A change of input shape, dtype or
    device, of the model's training mode or of a parameter's ``requires_grad`` records
    again. The replay calls the primitives' own forward and VJP functions in the recorded
    order, so on NumPy, torch (CPU) and array_api_strict it gives the eager tape's numbers
    bit for bit (on JAX, where the step runs ``jax.jit``-compiled, to rounding). On CuPy
    arrays and torch CUDA tensors the replay is captured as a CUDA graph after eight
    replays and launched from then on (``XPDL_CUDA_GRAPHS=0`` turns that off; see
    :doc:`/backends`).

    Where parameters are flat (NumPy, CuPy, torch), the gradient :math:`cW` of a squared
    norm with a constant scale (an L2 term, ``alpha * sqnorm(W)``) is added by the
    optimizer in its pass instead of by the program (the same sum); after such a step a
    weight's ``.grad`` holds its gradient without that term, as with PyTorch's
    ``weight_decay``.

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> from xpdl import nn, optim, losses
    >>> model = nn.Sequential(nn.Linear(3, 8, rng=0), nn.ReLU(), nn.Linear(8, 1, rng=0))
    >>> step = xpdl.compile_step(model, losses.mse, optim.Adam(model, lr=1e-2))
    >>> X = np.random.default_rng(0).normal(size=(32, 3))
    >>> y = X[:, :1] * 2.0
    >>> first = float(step(X, y))
    >>> for _ in range(200):
    ...     last = float(step(X, y))
    >>> last < first / 10, step.mode
    (True, 'replay')
    """
    return CompiledStep(model, loss_fn, optimizer)
