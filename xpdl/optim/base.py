"""Optax-style gradient transformations on flat ``{name: array}`` dicts.

A transformation is a pair ``init(params) -> state`` and
``update(grads, state, params=None) -> (updates, state)``. ``params``, ``grads``, ``updates``
and ``state`` are flat dicts keyed by parameter name; a state also holds plain ``int`` step
counters, so it saves to safetensors + JSON as it is. ``apply_updates`` adds the updates.

``update`` is pure by default. With ``inplace=True`` (used by the object wrappers, which
own their state) the state buffers are updated in place where the namespace allows it
(never for JAX); incoming gradients and updates are never written to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .. import _namespace as _ns

__all__ = ["GradientTransformation", "FusedTransformation", "chain", "identity",
           "apply_updates"]


class GradientTransformation(NamedTuple):
    """A functional optimizer (Optax's interface): a pair of pure functions.

    Attributes
    ----------
    init : callable
        ``init(params) -> state``: ``params`` a flat ``{name: array}`` dict, ``state`` a
        flat dict of arrays and integer step counters.
    update : callable
        ``update(grads, state, params=None, *, inplace=False) -> (updates, state)``:
        ``updates`` has the keys and shapes of ``grads``, to add to the parameters
        (:func:`apply_updates`). With ``inplace=True`` the state's buffers are updated
        in place where the namespace allows it (never for JAX).
    check : callable or None
        ``check(state)``: raises what ``update`` would raise for this state before it
        changes anything (a schedule's learning rate out of range), so that an in-place
        :func:`chain` can refuse a step before any of its buffers are written.
    """

    init: Callable
    update: Callable
    check: Callable | None = None


class FusedTransformation(GradientTransformation):
    """A transformation that also knows how to apply itself in place in one fused step.

    ``fused(params, grads, state, scratch) -> state`` updates the parameter arrays in
    ``params`` and the state buffers in place (see :mod:`xpdl.optim._fused`); it is used by
    the object optimizers when they own the buffers and the namespace has a fast path.
    """

    fused = None
    # ``flat_stepper(P, G, keys, shapes, state, cache, n_l2=0) -> step``: when the
    # parameters ``keys`` are views, in that order, into one flat array ``P`` and their
    # gradients into ``G``, ``step(c=0.0)`` applies one update to all of them (the state
    # buffers become views into flat arrays too); with ``c``, ``c * P[:n_l2]`` is added to
    # ``G[:n_l2]`` first.
    flat_stepper = None


def _namespace_of(tree):
    for v in tree.values():
        if _ns.is_array(v):
            return _ns.array_namespace(v)
    return None


def can_inplace(tree, inplace):
    """Whether buffers of ``tree`` may be updated in place."""
    if not inplace:
        return False
    xp = _namespace_of(tree)
    return xp is not None and _ns.supports_inplace(xp)


def identity() -> GradientTransformation:
    """Pass gradients through unchanged."""
    return GradientTransformation(lambda params: {},
                                  lambda grads, state, params=None, *, inplace=False:
                                  (grads, state))


def chain(*transforms) -> GradientTransformation:
    """Apply ``transforms`` in sequence; the state keys of the i-th are prefixed ``"i/"``.

    Examples
    --------
    >>> from xpdl import optim
    >>> tx = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
    """
    transforms = tuple(transforms)

    def init(params):
        state = {}
        for i, t in enumerate(transforms):
            for k, v in t.init(params).items():
                state[f"{i}/{k}"] = v
        return state

    checks = [(f"{i}/", t.check) for i, t in enumerate(transforms)
              if getattr(t, "check", None) is not None]

    def check(state):
        for pfx, c in checks:
            n = len(pfx)
            c({k[n:]: v for k, v in state.items() if k.startswith(pfx)})

    def update(grads, state, params=None, *, inplace=False):
        if inplace and checks:  # refuse before the first transform writes its buffers
            check(state)
        new_state = {}
        for i, t in enumerate(transforms):
            pfx = f"{i}/"
            n = len(pfx)
            sub = {k[n:]: v for k, v in state.items() if k.startswith(pfx)}
            grads, sub = t.update(grads, sub, params, inplace=inplace)
            for k, v in sub.items():
                new_state[pfx + k] = v
        return grads, new_state

    return GradientTransformation(init, update, check if checks else None)


def apply_updates(params, updates):
    """``{name: params[name] + updates[name]}`` (new arrays; names without an update are
    kept as they are).

    Parameters
    ----------
    params, updates : dict of str to array
    """
    return {k: (p + updates[k] if k in updates else p) for k, p in params.items()}
