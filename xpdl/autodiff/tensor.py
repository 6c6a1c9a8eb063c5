"""``Tensor``, the tape and the backward pass.

A :class:`Tensor` wraps an array of any supported namespace. An operation on tensors that
require gradients records a node: the :class:`~xpdl.autodiff.primitive.Primitive` applied
(its forward and vector-Jacobian product are defined once, in
:mod:`xpdl.autodiff.ops` and :mod:`xpdl.functional`), the parent tensors, the attributes
and what the forward saved for the backward pass. Because a node is data rather than a
closure, a step can be recorded into a replayable program (:mod:`xpdl.autodiff.program`).

:meth:`Tensor.backward` walks the nodes in reverse topological order, found iteratively so
that deep graphs do not hit Python's recursion limit, sums each gradient back to its
operand's shape in one place (:func:`unbroadcast`), so no VJP has to know about
broadcasting, and then frees the graph it walked (unless ``retain_graph=True``), so a loss
tensor kept after its step holds no activations.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from operator import attrgetter

from .. import _namespace as _ns

__all__ = ["Tensor", "no_grad", "enable_grad", "is_grad_enabled"]


class _GradMode(threading.local):
    enabled = True
    recorder = None  # an xpdl.autodiff.program recorder while a step is being recorded


_mode = _GradMode()


def is_grad_enabled() -> bool:
    """Whether operations are being recorded for backpropagation.

    Returns
    -------
    bool
        False inside :func:`no_grad` (and not inside a nested :func:`enable_grad`).
    """
    return _mode.enabled


@contextmanager
def no_grad():
    """Context manager inside which no operation is recorded.

    Returns
    -------
    context manager
        Results computed inside do not require grad; the previous mode comes back on
        exit (also on an exception). The mode is per thread, as PyTorch's.

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> w = xpdl.Tensor(np.ones(3), requires_grad=True)
    >>> with xpdl.no_grad():
    ...     y = (w * 2).sum()
    >>> y.requires_grad
    False
    """
    prev = _mode.enabled
    _mode.enabled = False
    try:
        yield
    finally:
        _mode.enabled = prev


@contextmanager
def enable_grad():
    """Context manager that turns recording back on (e.g. inside :func:`no_grad`).

    Returns
    -------
    context manager
        The previous mode comes back on exit.
    """
    prev = _mode.enabled
    _mode.enabled = True
    try:
        yield
    finally:
        _mode.enabled = prev


def _to_python(how):
    """A Tensor's value becomes a Python value: while a step is being recorded, what the
    step does with it (a branch, a scale) would be frozen into the program, so the step
    stays eager (as ``torch.jit.trace`` warns in the same place)."""
    rec = _mode.recorder
    if rec is not None:
        rec.opaque(f"it turns a Tensor into a Python value ({how}), which a replay could not "
                   f"follow")


class Tensor:
    """An array that can record the operations applied to it for reverse-mode autodiff.

    Parameters
    ----------
    data : array or Tensor
        An array of any supported namespace (NumPy, CuPy, torch, JAX, array_api_strict).
        It is not copied and never written to.
    requires_grad : bool, default False
        Whether gradients with respect to this tensor are computed by :meth:`backward`.
        Only floating-point tensors can require gradients.

    Attributes
    ----------
    data : array
        The wrapped array.
    grad : array or None
        Accumulated gradient, same shape, namespace and device as ``data``; ``None`` until a
        backward pass reaches this tensor. Gradients add up until set back to ``None``.

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> x = xpdl.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad
    array([2., 4., 6.])
    """

    __slots__ = ("data", "grad", "requires_grad", "_xp", "_parents", "_prim", "_attrs",
                 "_saved", "_seq", "_mark", "_g", "_own", "_retain", "_wseq", "__weakref__")
    # Let NumPy/CuPy/torch arrays on the left of an operator defer to us.
    __array_priority__ = 1000.0
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        if not _ns.is_array(data):
            raise TypeError(
                f"xpdl.Tensor wraps an array of a supported namespace (NumPy, CuPy, torch, "
                f"JAX, array_api_strict), got {type(data).__name__}; use xp.asarray first")
        xp = _ns.array_namespace(data)
        if requires_grad and not xp.isdtype(data.dtype, "real floating"):
            raise TypeError(f"xpdl: only floating-point tensors can require gradients, "
                            f"got dtype {data.dtype}")
        _fill(self, data, xp)
        self.requires_grad = bool(requires_grad)

    # -- properties -------------------------------------------------------------------
    @property
    def shape(self):
        """The array's shape, a tuple of ints."""
        return tuple(self.data.shape)

    @property
    def dtype(self):
        """The array's dtype (of its namespace)."""
        return self.data.dtype

    @property
    def device(self):
        """The array's device (of its namespace)."""
        return _ns.device_of(self.data)

    @property
    def ndim(self):
        """Number of axes."""
        return self.data.ndim

    @property
    def size(self):
        """Number of elements."""
        n = 1
        for s in self.data.shape:
            n *= s
        return n

    @property
    def xp(self):
        """The array namespace of :attr:`data`."""
        return self._xp

    @property
    def is_leaf(self):
        """True unless the Tensor is the result of a recorded operation (user-made and
        parameter Tensors are leaves; only leaves get ``.grad``)."""
        return self._prim is None

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("xpdl: len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        # explicit: Python's fallback (indexing 0, 1, ... until IndexError) never stops on
        # JAX, whose out-of-range indices clamp
        if self.data.ndim == 0:
            raise TypeError("xpdl: iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __array__(self, dtype=None, copy=None):
        # NumPy's conversion (np.asarray(t), np.concatenate([t, u]), ...): the values,
        # as the array itself converts (NumPy built an object array of 0-d Tensors
        # before). A Tensor that requires grad refuses, as torch's does: its values would
        # leave the graph without a word.
        if self.requires_grad:
            raise TypeError("xpdl: converting a Tensor that requires grad to a NumPy array "
                            "would drop it from the graph; use t.detach().data (or t.data)")
        return _ns.numpy_values(self.data, dtype, copy)

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{extra})"

    __hash__ = object.__hash__

    # Truth and number conversions follow the array (ambiguous for several elements), so
    # ``t == u`` in an ``if`` or ``x in [tensors]`` never silently counts as True.
    def __bool__(self):
        _to_python("bool()")
        return bool(self.data)

    def __float__(self):
        _to_python("float()")
        return float(self.data)

    def __int__(self):
        _to_python("int()")
        return int(self.data)

    # Pickling keeps the data, the gradient and the flags; the namespace (a module) is
    # found again from the data, and the tape is not kept.
    def __getstate__(self):
        return {"data": self.data, "grad": self.grad, "requires_grad": self.requires_grad,
                "own": self._own}

    def __setstate__(self, state):
        _fill(self, state["data"], _ns.array_namespace(state["data"]))
        self.grad = state["grad"]
        self.requires_grad = state["requires_grad"]
        self._own = state["own"]

    def retain_grad(self) -> Tensor:
        """Keep this (non-leaf) tensor's gradient in ``.grad`` after :meth:`backward`.

        Returns
        -------
        self
        """
        if not self.requires_grad:
            raise ValueError("xpdl: retain_grad() on a tensor that does not require grad")
        self._retain = True
        return self

    def requires_grad_(self, requires_grad=True) -> Tensor:
        """Set :attr:`requires_grad` in place, as PyTorch's: on a leaf only (a result's
        flag follows its inputs), and True only for floating point.

        Parameters
        ----------
        requires_grad : bool, default True

        Returns
        -------
        self
        """
        if not self.is_leaf:
            raise ValueError("xpdl: requires_grad_() changes leaf tensors only; this one is "
                             "the result of an operation (detach() it first)")
        if requires_grad and not self._xp.isdtype(self.data.dtype, "real floating"):
            raise TypeError(f"xpdl: only floating-point tensors can require gradients, "
                            f"got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self) -> Tensor:
        """A tensor sharing :attr:`data` with no history and no gradient.

        Returns
        -------
        Tensor
            Of this tensor's shape, with ``requires_grad=False``.
        """
        return _wrap(self.data, self._xp)

    def item(self):
        """The value of a one-element tensor as a Python number.

        Returns
        -------
        float, int or bool
            As the dtype is floating, integral or boolean.
        """
        if self.size != 1:
            raise ValueError(f"xpdl: item() needs a tensor with one element, shape is {self.shape}")
        _to_python("item()")
        d = self._xp.reshape(self.data, ())
        if self._xp.isdtype(d.dtype, "bool"):
            return bool(d)
        if self._xp.isdtype(d.dtype, "integral"):
            return int(d)
        return float(d)

    # -- backward ---------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False, inputs=None) -> None:
        """Accumulate the gradient of this tensor into ``.grad`` of every leaf it depends on
        (or of the leaves ``inputs`` only).

        Parameters
        ----------
        grad : array or Tensor, optional
            Gradient with respect to this tensor, of its shape. Not needed for a tensor with
            one element (taken as 1).
        retain_graph : bool, default False
            Keep the graph (and the activations it saved) for another backward pass.
            By default the graph is freed as in PyTorch: a second ``backward`` through it
            raises ``RuntimeError``.
        inputs : sequence of Tensor, optional
            Leaf tensors that require grad: only their ``.grad`` is written, and only the
            gradients leading to them are computed (PyTorch's ``backward(inputs=...)``;
            other leaves, say a model's parameters, are left as they were).

        Returns
        -------
        None
        """
        if inputs is not None:
            inputs = _backward_inputs(inputs)
        if not self.requires_grad:
            raise ValueError("xpdl: backward() on a tensor that does not require grad "
                             "(no input had requires_grad=True, or it was built under no_grad)")
        xp = self._xp
        if grad is None:
            if self.size != 1:
                raise ValueError(f"xpdl: backward() without grad needs a one-element output; "
                                 f"shape is {self.shape}; pass grad=")
            grad = xp.ones(self.data.shape, dtype=self.data.dtype, device=self.device)
        else:
            if isinstance(grad, Tensor):
                grad = grad.data
            if not _ns.is_array(grad):
                raise TypeError(f"xpdl: backward's grad must be an array (or a Tensor), got "
                                f"{type(grad).__name__}")
            if _ns.array_namespace(grad) is not xp:
                raise TypeError(f"xpdl: backward's grad is a "
                                f"{_ns.backend_name(_ns.array_namespace(grad))} array, the "
                                f"output a {_ns.backend_name(xp)} one; move it first")
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"xpdl: grad has shape {tuple(grad.shape)}, "
                                 f"expected {self.shape}")
            if _ns.device_of(grad) != self.device:
                raise ValueError(f"xpdl: backward's grad is on device {_ns.device_of(grad)}, "
                                 f"the output on {self.device}; move it first")
        _run_backward(self, grad, retain_graph, inputs)


def _fill(t, data, xp):
    """Set every slot of a new tensor: no history, no gradient."""
    t.data = data
    t.grad = None
    t.requires_grad = False
    t._xp = xp
    t._parents = ()
    t._prim = None
    t._attrs = None
    t._saved = None
    t._seq = _next_seq()
    t._mark = None
    t._g = None
    t._own = False  # True when xpdl allocated data (it may then be updated in place)
    t._retain = False
    t._wseq = 0  # when xpdl last changed ``data`` (an optimizer step): see _written


def _wrap(data, xp) -> Tensor:
    """Fast constructor for internal results: no checks, no history."""
    t = object.__new__(Tensor)
    _fill(t, data, xp)
    return t


def apply(prim, xp, inputs, attrs=None) -> Tensor:
    """Run primitive ``prim`` on ``inputs`` (Tensors and Python scalars) and wrap the result.

    A node (primitive, parents, attributes, saved values) is recorded when recording is on
    and an input requires a gradient; an active program recorder (see
    :mod:`xpdl.autodiff.program`) is told about every call either way.
    """
    attrs = _NO_ATTRS if attrs is None else attrs
    datas = [x.data if x.__class__ is Tensor else x for x in inputs]
    res = prim.forward(xp, *datas, **attrs)
    if prim.saves:
        out, saved = res
    else:
        out, saved = res, None
    t = object.__new__(Tensor)
    _fill(t, out, xp)
    if _mode.enabled:
        for p in inputs:
            if p.__class__ is Tensor and p.requires_grad:
                t.requires_grad = True
                t._parents = inputs
                t._prim = prim
                t._attrs = attrs
                t._saved = saved
                break
    rec = _mode.recorder
    if rec is not None:
        rec.on_forward(prim, inputs, attrs, out, saved)
    return t


def draw(fn):
    """``fn()``: random values drawn on the host and placed on the device (dropout's
    mask), told to an active program recorder as a *draw*: a replay calls ``fn`` again,
    in the recorded order, so one seed gives the same numbers as the tape (on JAX the
    draws are made before the compiled step, which takes them as inputs).

    Parameters
    ----------
    fn : callable ``() -> array``
        Draws from a host generator (:mod:`xpdl.random`) and moves the result to the
        device; each call continues the generator's stream.

    Returns
    -------
    array
        ``fn()``'s result.
    """
    out = fn()
    rec = _mode.recorder
    if rec is not None:
        rec.on_draw(fn, out)
    return out


def record(data, xp, parents, backward) -> Tensor:
    """Wrap ``data`` as the result of an operation on ``parents`` whose VJP is the closure
    ``backward(g)`` (one gradient or ``None`` per parent; a parent that is not a Tensor gets
    ``None``). For custom operations: such a node runs on the tape but cannot be replayed,
    so a :func:`xpdl.compile_step` step containing one runs eagerly. Define a
    :class:`~xpdl.autodiff.primitive.Primitive` to have it replayed.
    """
    from .primitive import closure_primitive

    t = object.__new__(Tensor)
    _fill(t, data, xp)
    rec = _mode.recorder
    if rec is not None:
        rec.opaque("a closure recorded with xpdl.autodiff.tensor.record")
    if _mode.enabled:
        for p in parents:
            if p.__class__ is Tensor and p.requires_grad:
                t.requires_grad = True
                t._parents = tuple(parents)
                t._prim = closure_primitive
                t._attrs = {"backward": backward}
                break
    return t


_NO_ATTRS: dict = {}


def unbroadcast(g, shape, xp):
    """Sum gradient ``g`` over the axes along which an operand of ``shape`` was broadcast."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead > 0:
        g = xp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    if tuple(g.shape) != shape:  # e.g. a 0-d operand broadcast from shape ()
        g = xp.reshape(g, shape)
    return g


# Creation order is a topological order: a tensor's parents always exist before it.
_next_seq = itertools.count().__next__
_by_seq = attrgetter("_seq")


def _written(tensors):
    """Mark ``tensors`` (parameters) as changed now, on the creation clock: a graph
    recorded before reads their new values at ``backward`` (the VJPs read the parents'
    ``data`` then), so its ``backward`` refuses instead of computing wrong gradients, as
    PyTorch's version counters make it refuse."""
    s = _next_seq()
    for t in tensors:
        t._wseq = s


def _toposort(root):
    """Tensors reachable from ``root`` through recorded nodes, parents before children.

    Iterative (no recursion limit), marks visited nodes with a per-call token instead of a
    set of ids, and orders by creation sequence, which respects every dependency.
    """
    token = object()
    root._mark = token
    nodes = [root]
    stack = [root]
    while stack:
        for p in stack.pop()._parents:
            if p.__class__ is Tensor and p.requires_grad and p._mark is not token:
                p._mark = token
                nodes.append(p)
                stack.append(p)
    nodes.sort(key=_by_seq)
    return nodes


def _backward_inputs(inputs):
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    try:
        inputs = tuple(inputs)
    except TypeError:
        raise TypeError(f"xpdl: backward's inputs must be a sequence of Tensors, got "
                        f"{type(inputs).__name__}") from None
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"xpdl: backward's inputs must be Tensors, got "
                            f"{type(t).__name__}")
        if not (t.requires_grad and t.is_leaf):
            raise ValueError("xpdl: backward's inputs must be leaf tensors that require grad")
    if not inputs:
        raise ValueError("xpdl: backward's inputs is empty")
    return inputs


def _run_backward(root, grad, retain_graph=False, inputs=None):
    xp = root._xp
    nodes = _toposort(root)
    wanted = None
    if inputs is not None:  # the nodes on a path to one of ``inputs`` (parents first)
        wanted = {id(t) for t in inputs}
        for node in nodes:
            if node._prim is not None and any(id(p) in wanted for p in node._parents):
                wanted.add(id(node))
    rec = _mode.recorder
    if rec is not None:
        rec.on_seed(grad)
    root._g = grad
    try:
        for node in reversed(nodes):
            g = node._g
            if g is None:
                continue
            node._g = None
            if node._retain:
                node.grad = g if node.grad is None else node.grad + g
                if rec is not None:
                    rec.opaque("retain_grad() inside a compiled step")
            prim = node._prim
            if prim is None:
                if wanted is not None and id(node) not in wanted:
                    continue
                if rec is not None:
                    rec.on_leaf(node)
                if g.dtype != node.data.dtype:
                    g2 = xp.astype(g, node.data.dtype)
                    if rec is not None:
                        rec.on_cast(g, g2)
                    g = g2
                # Out of place: the first gradient may alias an array the caller owns.
                if not node._retain:
                    if node.grad is None:
                        node.grad = g
                    else:
                        new = node.grad + g
                        if rec is not None:
                            rec.on_add(node.grad, g, new)
                        node.grad = new
                continue
            parents = node._parents
            datas = [p.data if p.__class__ is Tensor else p for p in parents]
            for p in parents:
                if p.__class__ is Tensor and p._wseq > node._seq:
                    raise RuntimeError(
                        f"xpdl: a parameter this gradient needs (shape {p.shape}) was "
                        f"updated after the forward pass that used it (an optimizer step, "
                        f"load_state_dict or .to() between the forward and this backward); "
                        f"its gradient would be computed from the new values. Run the "
                        f"forward again after the update")
            needs = [p.__class__ is Tensor and p.requires_grad for p in parents]
            if wanted is not None:
                needs = [n and id(p) in wanted for n, p in zip(needs, parents)]
            grads = prim.vjp(xp, g, datas, node.data, node._saved, needs, **node._attrs)
            if rec is not None:
                rec.on_vjp(prim, datas, node.data, node._saved, g, needs, node._attrs, grads)
            for p, pg, need in zip(parents, grads, needs):
                if pg is None or not need:
                    continue
                pshape = p.data.shape
                if pg.shape != pshape:
                    pg2 = unbroadcast(pg, pshape, xp)
                    if rec is not None:
                        rec.on_unbroadcast(pg, pshape, pg2)
                    pg = pg2
                prev = p._g
                if prev is None:
                    p._g = pg
                else:
                    p._g = prev + pg
                    if rec is not None:
                        rec.on_add(prev, pg, p._g)
    finally:
        for node in nodes:  # an exception mid-way must not leave stale partial gradients
            node._g = None
        if not retain_graph:
            for node in nodes:
                if node._prim is not None:
                    node._parents = ()
                    node._saved = None
                    node._attrs = _NO_ATTRS
                    node._prim = _freed()


def _freed():
    from .primitive import freed_primitive

    return freed_primitive
