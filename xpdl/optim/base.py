"""Optax-style gradient transformations on flat ``{name: array}`` dicts.

A transformation is a pair ``init(params) -> state`` and
``update(grads, state, params=None) -> (updates, state)``. ``params``, ``grads``, ``updates``
and ``state`` are flat dicts keyed by parameter name; a state also holds plain ``int`` step
counters, so it saves to safetensors + JSON as it is. ``apply_updates`` adds the updates.

``update`` is pure by default. With ``inplace=True`` (passed by the object wrappers, which
own their state) a transformation may update its state buffers in place where the
namespace allows it (never for JAX); the built-in ones return new arrays (the object
optimizers' in-place steps are the fused executions of the same update rules, see
``xpdl/optim/_rules.py``). Incoming gradients and updates are never written to.
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
        (:func:`apply_updates`). With ``inplace=True`` the state's buffers may be
        updated in place where the namespace allows it (never for JAX).
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
    # State counters that torch.optim keeps per parameter (Adam's bias-correction step):
    # the object optimizers count, for each parameter, the steps it had no gradient in,
    # and update it with these counters that many steps behind.
    param_counters = ()


def identity() -> GradientTransformation:
    """Pass gradients through unchanged.

    Returns
    -------
    GradientTransformation
        Its ``update`` returns the gradients (the same arrays) and an empty state.
    """
    return GradientTransformation(lambda params: {},
                                  lambda grads, state, params=None, *, inplace=False:
                                  (grads, state))


def chain(*transforms) -> GradientTransformation:
    """Apply ``transforms`` in sequence; the state keys of the i-th are prefixed ``"i/"``.

    Parameters
    ----------
    *transforms : GradientTransformation
        Each one's ``update`` receives the previous one's updates as its gradients.

    Returns
    -------
    GradientTransformation
        Its state is the union of the transforms' states, keys prefixed ``"i/"``.

    Examples
    --------
    >>> from xpdl import optim
    >>> tx = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
    """
    transforms = tuple(transforms)
    for t in transforms:
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(f"xpdl.optim.chain: takes gradient transformations (init and "
                            f"update), got {type(t).__name__}")

    def init(params):
        _check_params(params)
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
        _check_grads(grads, state, params)
        if inplace and checks:  # refuse before the first transform writes its buffers
            check(state)
        # entries of parameters without a gradient this step are carried over as they are
        # (they were dropped, and the next full update failed with a KeyError)
        new_state = dict(state)
        for i, t in enumerate(transforms):
            pfx = f"{i}/"
            n = len(pfx)
            sub = {k[n:]: v for k, v in state.items() if k.startswith(pfx)}
            try:
                grads, sub = t.update(grads, sub, params, inplace=inplace)
            except KeyError as exc:
                raise ValueError(f"xpdl.optim: the state has no entry {exc}: the gradients "
                                 f"name a parameter init() was not given, or the state comes "
                                 f"from another transformation") from None
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
        Each update of its parameter's shape (a schedule's ``-lr * direction``, as
        :class:`GradientTransformation`'s ``update`` returns).

    Returns
    -------
    dict of str to array
        New arrays: ``params`` is not modified.
    """
    _check_params(params, "apply_updates: params")
    if not isinstance(updates, dict):
        raise TypeError(f"xpdl.optim.apply_updates: updates must be a dict of arrays, got "
                        f"{type(updates).__name__}")
    _same_shapes(updates, params, "apply_updates: updates")
    return {k: (p + updates[k] if k in updates else p) for k, p in params.items()}


def _check_params(params, what="init: params"):
    """A flat ``{name: floating array}`` dict, else an error naming what is wrong."""
    if not isinstance(params, dict):
        raise TypeError(f"xpdl.optim.{what} must be a dict of arrays keyed by name, got "
                        f"{type(params).__name__}")
    for k, v in params.items():
        if not _ns.is_array(v):
            raise TypeError(f"xpdl.optim.{what}[{k!r}] must be an array, got "
                            f"{type(v).__name__}")
        if not _ns.array_namespace(v).isdtype(v.dtype, "real floating"):
            raise TypeError(f"xpdl.optim.{what}[{k!r}] must be a floating array (it is "
                            f"optimised), got {v.dtype}")


def _same_shapes(tree, params, what):
    """Every key of ``tree`` a parameter's, with that parameter's shape."""
    extra = sorted(set(tree) - set(params))
    if extra:
        raise ValueError(f"xpdl.optim.{what} name parameters that params do not: {extra}")
    for k, v in tree.items():
        if tuple(getattr(v, "shape", ())) != tuple(params[k].shape):
            raise ValueError(f"xpdl.optim.{what}[{k!r}] has shape "
                             f"{tuple(getattr(v, 'shape', ()))}, the parameter "
                             f"{tuple(params[k].shape)}")


def _check_grads(grads, state, params):
    if not isinstance(grads, dict):
        raise TypeError(f"xpdl.optim: update() takes grads as a dict of arrays keyed by name, "
                        f"got {type(grads).__name__}")
    if not isinstance(state, dict):
        raise TypeError(f"xpdl.optim: update() takes the state init() returned (a dict), "
                        f"got {type(state).__name__}")
    for k, v in grads.items():
        if not _ns.is_array(v):  # (None was "has shape (), the parameter (2,)")
            raise TypeError(f"xpdl.optim.update: grads[{k!r}] must be an array, got "
                            f"{type(v).__name__}; leave a parameter out of grads to skip it")
    if params is not None:
        _same_shapes(grads, params, "update: grads")
