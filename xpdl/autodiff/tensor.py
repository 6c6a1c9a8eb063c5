"""``Tensor``, the tape and the backward pass.

A :class:`Tensor` wraps an array of any supported namespace. Operations on tensors that
require gradients record a node: the parent tensors and a closure that maps the output's
gradient to one gradient per parent (the vector-Jacobian products, written next to each
forward in :mod:`xpdl.autodiff.ops`). :meth:`Tensor.backward` walks the nodes in reverse
topological order, found iteratively so that deep graphs do not hit Python's recursion
limit, and sums each gradient back to its operand's shape in one place
(:func:`unbroadcast`), so no VJP has to know about broadcasting.
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


_mode = _GradMode()


def is_grad_enabled() -> bool:
    """Whether operations are being recorded for backpropagation."""
    return _mode.enabled


@contextmanager
def no_grad():
    """Context manager inside which no operation is recorded.

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
    """Context manager that turns recording back on (e.g. inside :func:`no_grad`)."""
    prev = _mode.enabled
    _mode.enabled = True
    try:
        yield
    finally:
        _mode.enabled = prev


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

    __slots__ = ("data", "grad", "requires_grad", "_xp", "_parents", "_backward", "_seq",
                 "_mark", "_g", "_own", "_retain", "__weakref__")
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
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return _ns.device_of(self.data)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
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
        return self._backward is None

    def __len__(self):
        return self.data.shape[0]

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{extra})"

    __hash__ = object.__hash__

    # Truth and number conversions follow the array (ambiguous for several elements), so
    # ``t == u`` in an ``if`` or ``x in [tensors]`` never silently counts as True.
    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.data)

    def __int__(self):
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
        """Keep this (non-leaf) tensor's gradient in ``.grad`` after :meth:`backward`."""
        if not self.requires_grad:
            raise ValueError("xpdl: retain_grad() on a tensor that does not require grad")
        self._retain = True
        return self

    def detach(self) -> Tensor:
        """A tensor sharing :attr:`data` with no history and no gradient."""
        return _wrap(self.data, self._xp)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"xpdl: item() needs a tensor with one element, shape is {self.shape}")
        d = self._xp.reshape(self.data, ())
        if self._xp.isdtype(d.dtype, "bool"):
            return bool(d)
        if self._xp.isdtype(d.dtype, "integral"):
            return int(d)
        return float(d)

    # -- backward ---------------------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Accumulate the gradient of this tensor into ``.grad`` of every leaf it depends on.

        Parameters
        ----------
        grad : array or Tensor, optional
            Gradient with respect to this tensor, of its shape. Not needed for a tensor with
            one element (taken as 1).
        """
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
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"xpdl: grad has shape {tuple(grad.shape)}, "
                                 f"expected {self.shape}")
        _run_backward(self, grad)


def _fill(t, data, xp):
    """Set every slot of a new tensor: no history, no gradient."""
    t.data = data
    t.grad = None
    t.requires_grad = False
    t._xp = xp
    t._parents = ()
    t._backward = None
    t._seq = _next_seq()
    t._mark = None
    t._g = None
    t._own = False  # True when xpdl allocated data (it may then be updated in place)
    t._retain = False


def _wrap(data, xp) -> Tensor:
    """Fast constructor for internal results: no checks, no history."""
    t = object.__new__(Tensor)
    _fill(t, data, xp)
    return t


def record(data, xp, parents, backward) -> Tensor:
    """Wrap ``data`` as the result of an operation on ``parents``.

    ``backward(g)`` must return one gradient (or ``None``) per parent; a parent that is not a
    Tensor (a Python scalar) gets ``None``. Nothing is recorded under :func:`no_grad` or when
    no parent requires a gradient.
    """
    t = object.__new__(Tensor)
    _fill(t, data, xp)
    if _mode.enabled:
        for p in parents:
            if p.__class__ is Tensor and p.requires_grad:
                t.requires_grad = True
                t._parents = parents
                t._backward = backward
                return t
    return t


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


def _run_backward(root, grad):
    xp = root._xp
    nodes = _toposort(root)
    root._g = grad
    try:
        for node in reversed(nodes):
            g = node._g
            if g is None:
                continue
            node._g = None
            if node._retain:
                node.grad = g if node.grad is None else node.grad + g
            if node._backward is None:
                if g.dtype != node.data.dtype:
                    g = xp.astype(g, node.data.dtype)
                # Out of place: the first gradient may alias an array the caller owns.
                if not node._retain:
                    node.grad = g if node.grad is None else node.grad + g
                continue
            for p, pg in zip(node._parents, node._backward(g)):
                if pg is None or p.__class__ is not Tensor or not p.requires_grad:
                    continue
                pshape = p.data.shape
                if pg.shape != pshape:
                    pg = unbroadcast(pg, pshape, xp)
                prev = p._g
                p._g = pg if prev is None else prev + pg
    finally:
        for node in nodes:  # an exception mid-way must not leave stale partial gradients
            node._g = None
