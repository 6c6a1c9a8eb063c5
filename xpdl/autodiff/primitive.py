"""Primitives: each differentiable operation defined once, as data.

A :class:`Primitive` is a named pair of functions on plain arrays of namespace ``xp``:

``forward(xp, *inputs, **attrs)``
    The result (with ``saves=True``: ``(result, saved)``, where ``saved`` is whatever the
    VJP needs beyond the inputs and the output, e.g. a dropout mask or ``dloss/dlogits``).
``vjp(xp, g, inputs, out, saved, needs, **attrs)``
    One gradient per input (``None`` where ``needs[i]`` is False or the input is a Python
    scalar) given the output's gradient ``g``; it may return gradients of the broadcast
    shape (the tape sums them back, :func:`~xpdl.autodiff.tensor.unbroadcast`).

The eager tape (:mod:`xpdl.autodiff.tensor`) calls them; a recorded program
(:mod:`xpdl.autodiff.program`) calls the very same functions again on new batches. There is
no second derivation anywhere: a faster path is a different execution of these.
"""

from __future__ import annotations

__all__ = ["Primitive", "primitive", "call"]


class Primitive:
    """A differentiable operation: a forward and its vector-Jacobian product.

    Parameters
    ----------
    name : str
    forward : callable ``(xp, *inputs, **attrs) -> out`` or ``-> (out, saved)``
    vjp : callable ``(xp, g, inputs, out, saved, needs, **attrs) -> tuple``
    saves : bool, default False
        Whether ``forward`` returns ``(out, saved)``.
    random : bool, default False
        Whether ``forward`` draws from a generator (replayed programs draw again, in the
        recorded order, so the same seed gives the same numbers). Such a step replays
        eagerly on JAX and is not captured in a CUDA graph; drawing the random values
        before the call with :func:`xpdl.autodiff.tensor.draw` and passing them in as an
        input (as dropout does) keeps both.
    vjp_reads : callable ``needs -> tuple of str``, optional
        Which values the VJP's result depends on, among ``"g"``, ``"out"``, ``"saved"``
        and ``"in0"``, ``"in1"``, ...; shapes do not count (a program's shapes are fixed).
        Default: all of them. A recorded program folds a VJP call whose values are all
        constants (the L2 term's chain of scalings, for instance) into a constant.
    forward_into : bool, default False
        Whether ``forward`` takes ``out=`` (an array or None) and writes its result there,
        with the same bits (``saves=False`` only): a replayed program gives such calls
        buffers planned by liveness, kept from step to step (NumPy, CuPy, torch).
    vjp_into : bool, default False
        Whether ``vjp`` takes ``outs=`` (a tuple, one array or None per input) and writes
        the gradients there, with the same bits: a replayed program lets a parameter's
        gradient land in its flat gradient buffer without a copy, and other gradients in
        planned buffers (NumPy, CuPy, torch).
    check : callable ``(xp, inputs, **attrs) -> None``, optional
        Raises ``ValueError`` for input *values* the operation is not defined on (class
        indices out of range, say), skipping arrays without values (``jax.jit`` tracers).
        The public function calls it before each eager call; a recorded program calls it
        before each replay of the node where its inputs live in host memory (NumPy,
        torch on the CPU, array_api_strict's default device, JAX until the step runs
        under ``jax.jit``),
        so a bad batch fails the same way on the first step and the hundredth. Skipped on
        GPUs, where reading a value would synchronise every step (torch reports there
        asynchronously), and inside ``jax.jit``, which reads no values.

    Examples
    --------
    >>> import numpy as np, xpdl
    >>> from xpdl.autodiff.primitive import Primitive, call
    >>> cube = Primitive("cube", lambda xp, x: x * x * x,
    ...                  lambda xp, g, ins, out, saved, needs: (3 * g * ins[0] ** 2,))
    >>> x = xpdl.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    >>> call(cube, x).sum().backward()
    >>> x.grad
    array([ 3., 12.])
    """

    def __init__(self, name, forward, vjp, *, saves=False, random=False, vjp_reads=None,
                 forward_into=False, vjp_into=False, check=None):
        self.name = name
        self.forward = forward
        self.vjp = vjp
        self.saves = saves
        self.random = random
        self.vjp_reads = vjp_reads
        self.forward_into = forward_into and not saves
        self.vjp_into = vjp_into
        self.check = check

    def __repr__(self):
        return f"Primitive({self.name!r})"


def primitive(name, **options):
    """Decorator form: ``@primitive("name")`` on the forward, then ``@p.defvjp`` on the
    VJP (used by :mod:`xpdl.autodiff.ops` to keep each VJP next to its forward);
    ``options`` are :class:`Primitive`'s keywords."""

    def wrap(forward):
        p = Primitive(name, forward, None, **options)

        def defvjp(vjp):
            p.vjp = vjp
            return p

        p.defvjp = defvjp  # type: ignore[attr-defined]
        return p

    return wrap


def call(prim, *inputs, **attrs):
    """Apply ``prim`` to Tensors/arrays ``inputs`` (a Tensor comes back)."""
    from .ops import lift
    from .tensor import Tensor, apply

    xp = next((x._xp for x in inputs if isinstance(x, Tensor)), None)
    ins = []
    for x in inputs:
        if isinstance(x, (int, float, bool)) and not isinstance(x, Tensor):
            ins.append(x)
        else:
            t = lift(x, xp)
            xp = t._xp
            ins.append(t)
    if xp is None:
        raise TypeError("xpdl: a primitive needs at least one array input")
    return apply(prim, xp, tuple(ins), attrs)


def _closure_vjp(xp, g, inputs, out, saved, needs, backward):
    return backward(g)


#: Nodes made by :func:`xpdl.autodiff.tensor.record` (a custom closure; not replayable).
closure_primitive = Primitive("closure", None, _closure_vjp)


def _freed_vjp(*args, **kwargs):
    raise RuntimeError("xpdl: trying to backward through the graph a second time (its "
                       "saved values were freed by the first backward); pass "
                       "retain_graph=True to the first backward() to keep them")


#: What a node becomes once a backward pass freed it.
freed_primitive = Primitive("freed", None, _freed_vjp)
