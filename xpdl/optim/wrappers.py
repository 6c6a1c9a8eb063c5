"""PyTorch-style optimizer objects: thin wrappers over the functional transformations."""

from __future__ import annotations

import operator

from .. import _namespace as _ns
from ..autodiff.tensor import Tensor, _written, enable_grad
from . import _fused, _rules, alias

__all__ = ["Optimizer", "SGD", "GD", "Adam", "AdamW", "RMSprop", "Adagrad"]


def _named(params):
    """``[(name, Tensor)]`` from a Module, a dict, (name, Tensor) pairs or Tensors."""
    if hasattr(params, "named_parameters"):
        items = list(params.named_parameters())
    elif isinstance(params, dict):
        items = list(params.items())
    else:
        params = list(params)
        if any(isinstance(p, dict) for p in params):
            raise TypeError("xpdl.optim: parameter groups (dicts with 'params') are not "
                            "supported: make one optimizer per group; the settings of all "
                            "parameters can be changed through optimizer.param_groups[0]")
        if params and isinstance(params[0], tuple):
            items = [(str(n), p) for n, p in params]
        else:
            items = [(str(i), p) for i, p in enumerate(params)]
    if not items:
        raise ValueError("xpdl.optim: the optimizer got an empty parameter list")
    first = {}
    for n, p in items:
        if not isinstance(p, Tensor) or not p.requires_grad:
            raise TypeError(f"xpdl.optim: parameter {n!r} must be a Tensor with "
                            f"requires_grad=True")
        if id(p) in first:  # it would be updated twice a step
            raise ValueError(f"xpdl.optim: the same Tensor is given twice, as {first[id(p)]!r} "
                             f"and {n!r}; give each parameter once")
        first[id(p)] = n
    if len({n for n, _ in items}) != len(items):
        raise ValueError("xpdl.optim: two parameters have the same name: "
                         f"{sorted(n for n, _ in items)}")
    return items


def _check_grads(live):
    """``ValueError``/``TypeError`` naming a parameter whose ``.grad`` has another shape or
    is an array of another namespace (set by hand; backward never makes one)."""
    for n, p in live:
        g, d = p.grad, p.data
        if tuple(g.shape) != tuple(d.shape):
            raise ValueError(f"xpdl.optim: the gradient of {n!r} has shape {tuple(g.shape)}, "
                             f"the parameter {tuple(d.shape)}")
        if type(g) is not type(d) and (not _ns.is_array(g) or _ns.array_namespace(g) is not
                                       p.xp):
            raise TypeError(f"xpdl.optim: the gradient of {n!r} is a {type(g).__name__}, "
                            f"the parameter a {_ns.backend_name(p.xp)} array; move it first")


class Optimizer:
    """Base of the object optimizers.

    Parameters
    ----------
    params : Module, dict of str to Tensor, iterable of (name, Tensor) or of Tensors
        What to optimise; names key :meth:`state_dict` (indices for a plain list).
    transform : GradientTransformation
        The functional optimizer doing the work.
    **settings
        The settings ``transform`` was made with (the subclasses pass theirs): shown in
        ``param_groups`` and ``defaults``.

    Attributes
    ----------
    param_groups : list of one dict
        As in PyTorch: ``{"params": [Tensor, ...], "lr": ..., ...}`` with the settings of
        the optimizer classes (none for a plain ``transform``). Changing a setting there
        (``opt.param_groups[0]["lr"] = 1e-4``, a learning rate decayed by hand) takes
        effect at the next step, in :func:`xpdl.compile_step` too; the state carries over
        (state a new setting needs, such as a momentum buffer, starts at zero, as PyTorch
        starts it). One group: all parameters share the settings.
    defaults : dict
        The settings the optimizer was made with.

    Notes
    -----
    :meth:`step` updates each parameter's ``data`` in place when its namespace allows
    (not JAX). A parameter whose array the user supplied is copied once first, so user
    arrays are never written to.
    """

    # a subclass's transform factory: the transform is made again by ``_make(**settings)``
    # when param_groups change
    _make = None

    def __init__(self, params, transform, **settings):
        self._params = _named(params)
        self.transform = transform
        self._built, self.defaults = dict(settings), dict(settings)
        self.param_groups = [{"params": [p for _, p in self._params], **settings}]
        self._group = self.param_groups[0]
        self._plist = self._group["params"]
        for _, p in self._params:
            if not p._own:
                p.data = p.xp.asarray(p.data, copy=True)
                p._own = True
        self.state = transform.init({n: p.data for n, p in self._params})
        self._scratch = {}
        self.use_fused = True  # set False to force the portable chain (tests compare both)
        # name -> steps the parameter had no gradient in (only with param_counters)
        self._behind = {}

    @property
    def param_names(self):
        """The names of the optimised parameters (the keys of the state dict's entries), in
        the order they were given."""
        return [n for n, _ in self._params]

    def _sync_settings(self):
        """Make the transform again when a setting in ``param_groups`` changed (the
        transform, and with it every stepper made from it, is replaced: the flat steppers
        and jitted steps of :func:`xpdl.compile_step` check its identity)."""
        groups = self.param_groups
        g = groups[0] if isinstance(groups, list) and len(groups) == 1 else None
        if g is self._group and len(g) == len(self._built) + 1 and g.get("params") is \
                self._plist and all(g.get(k) is v for k, v in self._built.items()):
            return  # (the common case: identical objects, a few dict lookups)
        if g is None or not isinstance(g, dict):
            raise ValueError("xpdl.optim: param_groups must stay a list of one dict (one "
                             "group); make one optimizer per group")
        if g.get("params") is not self._plist or len(g["params"]) != len(
                self._params) or any(a is not b for a, (_, b) in zip(g["params"],
                                                                      self._params)):
            raise ValueError("xpdl.optim: the parameters of param_groups[0] cannot be "
                             "changed; make a new optimizer")
        if set(g) != set(self._built) | {"params"}:
            raise ValueError(f"xpdl.optim: param_groups[0] must have the keys "
                             f"{sorted(set(self._built) | {'params'})}, got {sorted(g)}")
        new = {k: g[k] for k in self._built}
        if all(new[k] is v or _same_setting(new[k], v) for k, v in self._built.items()):
            self._built, self._group = new, g
            return
        transform = self._make(**new)  # (checks the new settings: ValueError/TypeError)
        self._counters_to_host()
        fresh = transform.init({n: p.data for n, p in self._params})
        self.state = _carry_state(self.state, fresh)
        self.transform, self._built, self._group = transform, new, g

    def add_param_group(self, param_group):
        """Add parameters to the optimizer, as PyTorch's ``add_param_group`` (a layer
        unfrozen or added while fine-tuning). xpdl keeps one group, so the settings of
        ``param_groups[0]`` apply to them; settings given with the group must equal those
        (others are a ``ValueError``: make a second optimizer for them).

        The new parameters start from a fresh state, as in PyTorch: zero moments, and
        Adam's and AdamW's bias correction counts their own steps from one. Parameters
        already in the optimizer, or names taken, are a ``ValueError``; on any error
        nothing is added.

        Parameters
        ----------
        param_group : dict
            ``{"params": [Tensor, ...]}``, or a Module or a dict of named Tensors as
            ``params``.

        Returns
        -------
        None
        """
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"xpdl.optim: add_param_group takes a dict with 'params' (as "
                            f"PyTorch's), got {type(param_group).__name__}")
        self._sync_settings()
        g = self._group
        settings = {k: v for k, v in param_group.items() if k != "params"}
        unknown = sorted(set(settings) - set(self._built))
        if unknown:
            raise ValueError(f"xpdl.optim: {type(self).__name__} has no settings {unknown} "
                             f"(it has {sorted(self._built)})")
        differ = sorted(k for k, v in settings.items()
                        if not (v is g[k] or _same_setting(v, g[k])))
        if differ:
            raise ValueError(f"xpdl.optim: xpdl keeps one parameter group, whose settings "
                             f"apply to all its parameters; {differ} differ from "
                             f"param_groups[0]'s: make a second optimizer for these "
                             f"parameters")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        if not (hasattr(params, "named_parameters") or isinstance(params, dict)):
            params = list(params)
            if params and not isinstance(params[0], tuple):  # numbered after the others
                params = [(str(len(self._params) + i), p) for i, p in enumerate(params)]
        new = _named(params)
        have = {id(p): n for n, p in self._params}
        for n, p in new:
            if id(p) in have:
                raise ValueError(f"xpdl.optim: the parameter {n!r} is in the optimizer "
                                 f"already (as {have[id(p)]!r})")
        taken = sorted({n for n, _ in new} & set(self.param_names))
        if taken:
            raise ValueError(f"xpdl.optim: the names {taken} are taken by parameters of "
                             f"the optimizer; give the new ones other names")
        self._counters_to_host()
        fresh = self.transform.init({n: p.data for n, p in new})
        for _, p in new:
            if not p._own:
                p.data = p.xp.asarray(p.data, copy=True)
                p._own = True
        state = dict(self.state)  # (a new dict: steppers made for the old one are remade)
        state.update({k: v for k, v in fresh.items() if k not in state})
        self.state = state
        keys = getattr(self.transform, "param_counters", ())
        lag = max((self.state[k] for k in keys if k in self.state), default=0)
        if lag:  # (their own count: these many steps behind the optimizer's)
            self._behind.update((n, lag) for n, _ in new)
        self._params.extend(new)
        self._plist.extend(p for _, p in new)

    def zero_grad(self, set_to_none=True):
        """Drop the gradients of all parameters, as PyTorch's.

        Parameters
        ----------
        set_to_none : bool, default True
            ``grad = None``; False makes them zeros (as in PyTorch: a parameter with a zero
            gradient still takes a step, its moments decaying).

        Returns
        -------
        None
        """
        _zero_grads((p for _, p in self._params), set_to_none)

    def _counters_to_host(self):
        """Step counters that a jitted step (:func:`xpdl.compile_step` on JAX) left as 0-d
        arrays, so as not to wait for it, become Python ints again."""
        pending = self.__dict__.pop("_device_counters", None)
        for k in pending or ():
            if k in self.state and not isinstance(self.state[k], int):
                self.state[k] = int(self.state[k])

    def step(self, closure=None):
        """Apply one update from the parameters' ``.grad``. Parameters without a gradient
        are skipped; with Adam and AdamW each parameter's bias correction counts the steps
        it took part in, as torch.optim's per-parameter ``step`` does.

        Parameters
        ----------
        closure : callable, optional
            As in PyTorch: called first (with gradients recorded), it computes the loss
            and its gradients (``zero_grad``, forward, ``backward``) and returns the loss.

        Returns
        -------
        The closure's loss, or None without one.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._sync_settings()
        self._counters_to_host()
        live = [(n, p) for n, p in self._params if p.grad is not None]
        if not live:
            return loss
        _check_grads(live)
        keys = getattr(self.transform, "param_counters", ())
        if keys and (self._behind or len(live) < len(self._params)):
            self._step_behind(live, keys)
        else:
            self._update(live)
        return loss

    def _step_behind(self, live, keys):
        """:meth:`step` where some parameters missed steps: each group of parameters
        equally many steps behind is updated with the per-parameter counters ``keys`` set
        back by that many (the other counters, such as a schedule's, count this step once)
        and a parameter without a gradient falls one more step behind."""
        # a new state dict: the flat steppers made for the old one (which use one count
        # for all parameters) are made again, and take this path
        self.state = dict(self.state)
        before = {k: v for k, v in self.state.items() if isinstance(v, int)}
        groups = {}
        for n, p in live:
            groups.setdefault(self._behind.get(n, 0), []).append((n, p))
        after = None
        for lag, group in sorted(groups.items()):
            self.state.update({k: v - lag if k in keys else v for k, v in before.items()})
            self._update(group)
            if after is None:
                after = {k: self.state[k] + (lag if k in keys else 0) for k in before}
        self.state.update(after)
        for n, p in self._params:
            if p.grad is None:
                self._behind[n] = self._behind.get(n, 0) + 1

    def _update(self, live):
        grads = {n: p.grad for n, p in live}
        params = {n: p.data for n, p in live}
        xp = live[0][1].xp
        self._follow_parameters(live[0][1])
        inplace = _ns.supports_inplace(xp)
        fused = getattr(self.transform, "fused", None)
        _written([p for _, p in live])
        if fused is not None and self.use_fused and _fused.supported(xp):
            self.state = fused(params, grads, self.state, self._scratch_for(params))
            return
        updates, new = self.transform.update(grads, self.state, params, inplace=inplace)
        self.state.update(new)
        for n, p in live:
            if inplace:
                p.data += updates[n]
            else:
                p.data = p.data + updates[n]

    def flat_stepper(self, flat_params, flat_grads, keys, shapes, n_l2=0):
        r"""The optimizer's step for parameters laid out in one flat array (the layout of
        :func:`xpdl.compile_step`): the built-in optimizers update every parameter with one
        call per pass (block by block; Adam, AdamW and SGD as one compiled loop with
        Numba); a custom chain takes :meth:`step`.

        The flat state and the views of every block are resolved once: the stepper is valid
        until the optimizer's state or the arrays are replaced (``load_state_dict``, a
        portable :meth:`step`, moving the model).

        Parameters
        ----------
        flat_params, flat_grads : 1-d arrays of the same size
            The parameters named ``keys`` are, in that order, views into ``flat_params``
            where :func:`xpdl._namespace.flat_offsets` places them (one after the other;
            on torch each at a 64-byte boundary, zeros between), and their ``.grad`` views
            into ``flat_grads``.
        keys : sequence of str
            Parameter names (of :meth:`state_dict`), in flat order.
        shapes : sequence of tuple of int
            Their shapes.
        n_l2 : int, default 0
            How many leading flat elements the ``c`` of the step applies to.

        Returns
        -------
        callable
            ``step(c=0.0)``: one :meth:`step`, with :math:`c\,p` first added to the gradient
            of the first ``n_l2`` flat elements (an L2 penalty :math:`\tfrac{c}{2}\|p_{:n}\|^2`;
            ``flat_grads`` may be written).
        """
        self._sync_settings()
        self._counters_to_host()
        self._follow_parameters(self._params[0][1])
        xp = _ns.array_namespace(flat_params)
        make = getattr(self.transform, "flat_stepper", None)
        if make is not None and self.use_fused and _fused.supported(xp) and not (
                self._behind and self.transform.param_counters):  # (one count for all)
            return make(flat_params, flat_grads, keys, shapes, self.state, self._scratch, n_l2)

        def step(c=0.0):
            if c:
                if not _ns.supports_inplace(xp):
                    raise ValueError("xpdl.optim: flat steps need in-place updates")
                # the .grad views see the sum
                flat_grads[:n_l2] = _rules.add_l2(flat_grads[:n_l2], flat_params[:n_l2], c)
            self.step()

        return step

    def _follow_parameters(self, p):
        """The state's arrays onto the parameters' namespace, device and floating dtype
        when the parameters were moved (``Module.to`` after the optimizer was made), as
        PyTorch's optimizers do on ``load_state_dict``; one look at one array per step
        otherwise."""
        first = next((v for v in self.state.values() if _ns.is_array(v) and
                      _ns.array_namespace(v).isdtype(v.dtype, "real floating")), None)
        if first is None:
            return
        xp, dev = p.xp, _ns.device_of(p.data)
        if _ns.array_namespace(first) is xp and _ns.same_device(_ns.device_of(first), dev) \
                and first.dtype == p.data.dtype:
            return
        dt = _ns.dtype_name(xp, p.data.dtype)
        self.state = {k: _ns.move(v, xp=xp, device=dev,
                                  dtype=dt if _ns.array_namespace(v).isdtype(
                                      v.dtype, "real floating") else None)
                      if _ns.is_array(v) else v for k, v in self.state.items()}
        self._scratch = {}

    def _scratch_for(self, params):
        """Reusable buffers for the fused step (not part of the state): ``get(k)`` is a
        list of buffers shaped like parameter ``k`` (the step adds what it needs);
        ``get.cache`` is the dict the flat paths keep their buffers in."""

        def get(k):
            p = params[k]
            s = self._scratch.get(k)
            if s is None or s[0].shape != p.shape or s[0].dtype != p.dtype:
                xp = _ns.array_namespace(p)
                s = self._scratch[k] = [xp.empty(p.shape, dtype=p.dtype,
                                                 device=_ns.device_of(p))]
            return s

        get.cache = self._scratch
        return get

    def state_dict(self):
        """The optimizer state, as PyTorch's state dict with its ``param_groups``.

        Returns
        -------
        dict of str to array, int, float, bool or tuple
            Keys like ``"exp_avg/0.weight"`` and ``"step"`` counters; for Adam and AdamW,
            ``"behind/<name>"`` for a parameter that had no gradient in that many steps (its
            own count is that much lower, as in torch.optim); and the settings of
            ``param_groups[0]`` as ``"param_groups/<setting>"`` (``"param_groups/lr"``: a
            float, a bool or a tuple of floats), so that a learning rate changed by hand is
            restored too. A setting that is a schedule (a function) is left out: it is code,
            made again with the optimizer.
        """
        self._counters_to_host()
        out = dict(self.state)
        out.update({f"behind/{n}": k for n, k in self._behind.items()})
        g = self.param_groups[0] if isinstance(self.param_groups, list) and \
            self.param_groups and isinstance(self.param_groups[0], dict) else {}
        out.update({_SETTING + k: g[k] for k in self._built
                    if k in g and not callable(g[k])})
        return out

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output.

        Parameters
        ----------
        state : dict
            As :meth:`state_dict` returns (or :func:`xpdl.load` reads). Arrays are copied
            onto the parameters' namespace and device; ``"param_groups/<setting>"`` entries,
            where there are any, become the settings of ``param_groups[0]`` (as in PyTorch),
            checked as at construction; on any error nothing is changed.

        Returns
        -------
        None
        """
        if not isinstance(state, dict):  # (a list was read as its items, "keys differ")
            raise TypeError(f"xpdl.optim: load_state_dict takes the dict state_dict() "
                            f"returns, got {type(state).__name__}")
        settings = {k[len(_SETTING):]: v for k, v in state.items()
                    if isinstance(k, str) and k.startswith(_SETTING)}
        unknown = sorted(set(settings) - set(self._built))
        if unknown:
            raise ValueError(f"xpdl.optim: the state has settings {unknown} that "
                             f"{type(self).__name__} does not have (it has "
                             f"{sorted(self._built)})")
        state = {k: v for k, v in state.items()
                 if not (isinstance(k, str) and k.startswith(_SETTING))}
        self._sync_settings()
        g = self._group
        before = (dict(g), self.transform, self._built, self.state)
        try:
            # (first the settings: they decide the transform, and so the state's keys)
            g.update({k: _as_setting(g[k], v) for k, v in settings.items()})
            self._sync_settings()
            self._load_state(state)
        except BaseException:
            g.clear()
            g.update(before[0])
            self.transform, self._built, self.state = before[1:]
            raise

    def _load_state(self, state):
        names = set(self.param_names)
        behind = {}
        counted = bool(getattr(self.transform, "param_counters", ()))  # (else: unexpected)
        for k in [k for k in state if counted and isinstance(k, str) and
                  k.startswith("behind/")]:
            if k[len("behind/"):] not in names:
                raise ValueError(f"xpdl.optim: state {k} names no parameter of this "
                                 f"optimizer")
            behind[k[len("behind/"):]] = _count(k, state[k])
        behind_keys = {f"behind/{n}" for n in behind}
        state = {k: v for k, v in state.items() if k not in behind_keys}
        if set(state) != set(self.state):
            missing = sorted(set(self.state) - set(state))
            extra = sorted(set(state) - set(self.state))
            raise ValueError(f"xpdl.optim: state keys differ: missing {missing}, "
                             f"unexpected {extra}")
        self._counters_to_host()
        new = {}
        for k, v in state.items():
            cur = self.state[k]
            if _ns.is_array(cur):
                if not _ns.is_array(v):
                    raise ValueError(f"xpdl.optim: state {k} must be an array, got "
                                     f"{type(v).__name__}")
                if tuple(v.shape) != tuple(cur.shape):
                    raise ValueError(f"xpdl.optim: state {k} has shape {tuple(v.shape)}, "
                                     f"expected {tuple(cur.shape)}")
                xp = _ns.array_namespace(cur)
                moved = _ns.move(v, xp=xp, device=_ns.device_of(cur),
                                 dtype=_ns.dtype_name(xp, cur.dtype))
                new[k] = xp.asarray(moved, copy=True)
            else:
                new[k] = _count(k, v)
        self.state = new
        self._behind = {n: k for n, k in behind.items() if k}

    def __repr__(self):
        # PyTorch's layout: the group's settings, sorted, one a line
        g = self.param_groups[0] if isinstance(self.param_groups, list) and \
            self.param_groups and isinstance(self.param_groups[0], dict) else {}
        lines = [f"    {k}: {g[k]!r}" for k in sorted(g) if k != "params"]
        return "\n".join([f"{type(self).__name__} (", "Parameter Group 0", *lines, ")"])


_SETTING = "param_groups/"  # the prefix of the settings' keys in a state dict


def _as_setting(cur, v):
    """A setting read back from a state dict as the type the optimizer keeps: a list (JSON
    has no tuples) becomes a tuple where the setting is one (``betas``)."""
    if isinstance(cur, tuple) and isinstance(v, list):
        return tuple(v)
    return v


def _zero_grads(params, set_to_none):
    """``grad = None`` for each of ``params``, or zeros of the gradient's shape, dtype and
    device where it has one (``set_to_none=False``; a new array: a gradient may be a view
    the step reads from, or the user's)."""
    for p in params:
        if set_to_none or p.grad is None:
            p.grad = None
        else:
            g = p.grad
            p.grad = _ns.array_namespace(g).zeros(g.shape, dtype=g.dtype,
                                                  device=_ns.device_of(g))


def _carry_state(old, fresh):
    """The state of a remade transform: ``fresh`` (its ``init``) with the values of ``old``
    where they mean the same. Keys are ``"<position in the chain>/<field>[/<parameter>]"``
    and a setting can add or drop a transform before another (weight decay, momentum), so
    fields are matched without the position; the step counters (each counts the updates
    made) in their order."""
    steps = [v for k, v in old.items() if k.split("/", 1)[-1] == "step"]
    by_field = {k.split("/", 1)[-1]: v for k, v in old.items()}
    out, i = {}, 0
    for k, v in fresh.items():
        field = k.split("/", 1)[-1]
        if field == "step" and steps:
            out[k] = steps[min(i, len(steps) - 1)]
            i += 1
        else:
            out[k] = by_field.get(field, v)
    return out


def _same_setting(a, b):
    """Whether two values of a setting are the same (a schedule: the same object)."""
    if callable(a) or callable(b):
        return a is b
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # (a setting of a type that cannot be compared: made again)
        return False


def _count(k, v):
    """A step counter from a state dict: a non-negative integer (an int, a NumPy integer
    or a 0-d integer array), else ``ValueError``."""
    try:
        n = operator.index(v) if not isinstance(v, bool) else -1
    except TypeError:
        n = -1
    if n < 0:
        raise ValueError(f"xpdl.optim: state {k} must be a non-negative integer step count, "
                         f"got {v!r}")
    return n


class SGD(Optimizer):
    """Object form of :func:`xpdl.optim.sgd`: ``step()`` applies it to the parameters'
    ``.grad``.

    Parameters
    ----------
    params : Module, dict of str to Tensor, iterable of (name, Tensor) or of Tensors
        What to optimise (see :class:`Optimizer`).
    lr, momentum, nesterov, weight_decay
        As in :func:`xpdl.optim.sgd`, with the same defaults.
    """

    _make = staticmethod(alias.sgd)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, alias.sgd(lr, momentum, nesterov, weight_decay), lr=lr,
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


class GD(Optimizer):
    """Object form of :func:`xpdl.optim.gd`: ``step()`` applies it to the parameters'
    ``.grad``.

    Parameters
    ----------
    params : Module, dict of str to Tensor, iterable of (name, Tensor) or of Tensors
        What to optimise (see :class:`Optimizer`).
    lr
        As in :func:`xpdl.optim.gd`, with the same defaults.
    """

    _make = staticmethod(alias.gd)

    def __init__(self, params, lr):
        super().__init__(params, alias.gd(lr), lr=lr)


class Adam(Optimizer):
    """Object form of :func:`xpdl.optim.adam`: ``step()`` applies it to the parameters'
    ``.grad``.

    Parameters
    ----------
    params : Module, dict of str to Tensor, iterable of (name, Tensor) or of Tensors
        What to optimise (see :class:`Optimizer`).
    lr, betas, eps, weight_decay, amsgrad
        As in :func:`xpdl.optim.adam`, with the same defaults.
    """

    _make = staticmethod(alias.adam)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        super().__init__(params, alias.adam(lr, betas, eps, weight_decay, amsgrad),
                         lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad)


class AdamW(Optimizer):
    """Object form of :func:`xpdl.optim.adamw`: ``step()`` applies it to the parameters'
    ``.grad``.

    Parameters
    ----------
    params : Module, dict of str to Tensor, iterable of (name, Tensor) or of Tensors
        What to optimise (see :class:`Optimizer`).
    lr, betas, eps, weight_decay, amsgrad
        As in :func:`xpdl.optim.adamw`, with the same defaults.
    """

    _make = staticmethod(alias.adamw)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, alias.adamw(lr, betas, eps, weight_decay, amsgrad),
                         lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad)


class RMSprop(Optimizer):
    """Object form of :func:`xpdl.optim.rmsprop`: ``step()`` applies it to the parameters'
    ``.grad``.

    Parameters
    ----------
    params : Module, dict of str to Tensor, iterable of (name, Tensor) or of Tensors
        What to optimise (see :class:`Optimizer`).
    lr, alpha, eps, momentum, centered, weight_decay
        As in :func:`xpdl.optim.rmsprop`, with the same defaults.
    """

    _make = staticmethod(alias.rmsprop)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False,
                 weight_decay=0.0):
        super().__init__(params, alias.rmsprop(lr, alpha, eps, momentum, centered,
                                               weight_decay),
                         lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                         centered=centered, weight_decay=weight_decay)


class Adagrad(Optimizer):
    """Object form of :func:`xpdl.optim.adagrad`: ``step()`` applies it to the parameters'
    ``.grad``.

    Parameters
    ----------
    params : Module, dict of str to Tensor, iterable of (name, Tensor) or of Tensors
        What to optimise (see :class:`Optimizer`).
    lr, eps, weight_decay, initial_accumulator_value
        As in :func:`xpdl.optim.adagrad`, with the same defaults.
    """

    _make = staticmethod(alias.adagrad)

    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0.0,
                 initial_accumulator_value=0.0):
        super().__init__(params, alias.adagrad(lr, eps, weight_decay,
                                               initial_accumulator_value),
                         lr=lr, eps=eps, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value)
