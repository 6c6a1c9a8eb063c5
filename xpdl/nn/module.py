"""``Module``: parameters, sub-modules, state dicts, train/eval and moving between backends."""

from __future__ import annotations

import math
from typing import NamedTuple

from .. import _namespace as _ns
from ..autodiff.tensor import Tensor, _written


def parameter(data) -> Tensor:
    """A leaf Tensor that requires grad and whose buffer belongs to xpdl (optimizers may
    update it in place).

    Parameters
    ----------
    data : array of a floating dtype, any shape
        Taken as the parameter's buffer (not copied): pass an array nobody else holds.

    Returns
    -------
    Tensor
    """
    t = Tensor(data, requires_grad=True)
    t._own = True
    return t


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` did not match (PyTorch's ``_IncompatibleKeys``)."""

    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of layers and models.

    Assigning a Tensor that requires grad or another Module to an attribute registers it;
    :meth:`named_parameters` lists parameters with dotted names (``"0.weight"``).
    Subclasses implement ``forward``; call the module itself.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("xpdl: call Module.__init__() before assigning attributes")
        # (a name assigned again keeps its place, as in PyTorch: replacing a model's head
        # or a Sequential's layer i leaves the order of layers and parameters as it was)
        if isinstance(value, Tensor) and value.requires_grad:
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def add_module(self, name, module):
        """Register ``module`` under ``name``, as ``setattr`` does; for names made at run
        time, as in PyTorch.

        Parameters
        ----------
        name : str
            Non-empty, without ``"."``.
        module : Module or None
            None reserves the name.

        Returns
        -------
        None
        """
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"xpdl: a module name must be a non-empty string without "
                             f"'.', got {name!r}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"xpdl: add_module takes a Module, got {type(module).__name__}")
        setattr(self, name, module)

    def register_parameter(self, name, param):
        """Register ``param`` under ``name``, as PyTorch's ``register_parameter``.

        Parameters
        ----------
        name : str
            Non-empty, without ``"."``.
        param : Tensor with ``requires_grad=True``, or None

        Returns
        -------
        None
        """
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"xpdl: a parameter name must be a non-empty string without "
                             f"'.', got {name!r}")
        if param is not None and not (isinstance(param, Tensor) and param.requires_grad):
            raise TypeError(f"xpdl: register_parameter takes a Tensor with "
                            f"requires_grad=True (see xpdl.nn.parameter), got "
                            f"{type(param).__name__}")
        setattr(self, name, param)

    def __delattr__(self, name):
        # (as torch's: a deleted parameter or sub-module is no longer listed, trained or
        # saved; it stayed in named_parameters() and state_dict())
        object.__delattr__(self, name)
        self._parameters.pop(name, None)
        self._modules.pop(name, None)

    def __call__(self, *args, **kwargs):
        """Run :meth:`forward`: ``model(x)``.

        Parameters
        ----------
        *args, **kwargs
            What the module's ``forward`` takes (for the built-in layers one Tensor or
            array ``x``; shapes in each class's docstring).

        Returns
        -------
        Tensor or array
            A Tensor when an input is one (recorded on the tape), else an array.
        """
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        """The computation, on Tensors or arrays (a subclass defines it; call the module
        itself, ``model(x)``, rather than ``forward``).

        Parameters
        ----------
        *args, **kwargs
            The inputs.

        Returns
        -------
        Tensor or array
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    # -- traversal --------------------------------------------------------------------
    def named_parameters(self, prefix="", recurse=True):
        """The parameters with their dotted names, this module's first, then its
        children's.

        A parameter registered twice (tied weights) is listed once, under its first name
        (as PyTorch's), so an optimizer updates it once per step.

        Parameters
        ----------
        prefix : str, default ""
            Put before every name.
        recurse : bool, default True
            False: this module's own parameters only, as PyTorch's.

        Returns
        -------
        list of (str, Tensor)
        """
        out, seen = [], set()
        self._collect(prefix, out, seen, recurse)
        return out

    def _collect(self, prefix, out, seen, recurse=True):
        for n, p in self._parameters.items():
            if id(p) not in seen:
                seen.add(id(p))
                out.append((prefix + n, p))
        for name, m in self._modules.items() if recurse else ():
            m._collect(prefix + name + ".", out, seen)

    def parameters(self, recurse=True):
        """The parameter Tensors, in the order of :meth:`named_parameters`.

        Parameters
        ----------
        recurse : bool, default True
            False: this module's own parameters only.

        Returns
        -------
        list of Tensor
        """
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def children(self):
        """The direct sub-modules, in the order they were assigned (each once).

        Returns
        -------
        list of Module
        """
        return [m for _, m in self.named_children()]

    def named_children(self):
        """The direct sub-modules with their names, in the order they were assigned (a
        module registered under two names is listed once, as PyTorch's).

        Returns
        -------
        list of (str, Module)
        """
        out, seen = [], set()
        for name, m in self._modules.items():
            if id(m) not in seen:
                seen.add(id(m))
                out.append((name, m))
        return out

    def apply(self, fn):
        """Call ``fn`` on every sub-module, depth first, then on this module, as PyTorch's
        ``Module.apply`` (custom initialisation: ``model.apply(init)``).

        Parameters
        ----------
        fn : callable
            ``fn(module)``; its return value is ignored.

        Returns
        -------
        self
        """
        for m in self._modules.values():
            m.apply(fn)
        fn(self)
        return self

    def named_modules(self, prefix=""):
        """This module and every sub-module with their dotted names, depth first; a module
        registered twice is listed once, under its first name, as PyTorch's.

        Parameters
        ----------
        prefix : str, default ""
            This module's name (the sub-modules' names start with it).

        Returns
        -------
        list of (str, Module)
        """
        out, seen = [], set()
        self._walk(prefix, out, seen)
        return out

    def _walk(self, prefix, out, seen):
        if id(self) in seen:
            return
        seen.add(id(self))
        out.append((prefix, self))
        for name, m in self._modules.items():
            m._walk(f"{prefix}.{name}" if prefix else name, out, seen)

    def modules(self):
        """This module and all sub-modules, depth first (each once).

        Returns
        -------
        list of Module
        """
        return [m for _, m in self.named_modules()]

    # -- state ------------------------------------------------------------------------
    def state_dict(self):
        """The parameters' arrays by dotted name.

        Returns
        -------
        dict of str to array
            The arrays themselves, not copies (:func:`xpdl.save` writes them).
        """
        return {n: p.data for n, p in self.named_parameters()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into the parameters.

        Arrays are converted to each parameter's namespace, device and dtype and copied, so
        the module never aliases the caller's arrays.

        Parameters
        ----------
        state : dict of str to array
            Keyed as :meth:`state_dict`; each array of its parameter's shape.
        strict : bool, default True
            Whether missing or unexpected keys are an error.

        Returns
        -------
        IncompatibleKeys
            As PyTorch's: a named tuple ``(missing_keys, unexpected_keys)``, lists of
            names (empty when ``strict``).

        Raises
        ------
        ValueError
            Missing or unexpected keys (when ``strict``), or a shape mismatch; every entry is
            checked before any parameter changes.
        """
        named = dict(self.named_parameters())
        missing = [k for k in named if k not in state]
        unexpected = [k for k in state if k not in named]
        if strict and (missing or unexpected):
            raise ValueError(f"xpdl: load_state_dict: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        todo = [(k, p, state[k]) for k, p in named.items() if k in state]
        for k, p, a in todo:  # every shape first: a bad entry leaves the module as it was
            if not _ns.is_array(a):
                raise TypeError(f"xpdl: load_state_dict: {k} must be an array, got "
                                f"{type(a).__name__}")
            if tuple(a.shape) != p.shape:
                raise ValueError(f"xpdl: load_state_dict: {k} has shape {tuple(a.shape)}, "
                                 f"the parameter has {p.shape}")
        new = [_ns.move(a, xp=p.xp, device=p.device, dtype=_ns.dtype_name(p.xp, p.dtype))
               for _, p, a in todo]
        for (_, p, _), a in zip(todo, new):
            p.data = p.xp.asarray(a, copy=True)
            p.grad = None
        _written([p for _, p, _ in todo])
        return IncompatibleKeys(missing, unexpected)

    # -- modes and placement ----------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (dropout active) on this module and its children.

        Parameters
        ----------
        mode : bool, default True
            False is evaluation mode (:meth:`eval`).

        Returns
        -------
        self
        """
        if not isinstance(mode, bool):  # (torch's rule: train("no") would mean True)
            raise TypeError(f"xpdl: Module.train(mode): mode must be True or False, got "
                             f"{mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Set evaluation mode (dropout off) on this module and its children.

        Returns
        -------
        self
        """
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` of every parameter (False freezes the module: its
        parameters get no gradient and the optimizers skip them, as in PyTorch).

        Parameters
        ----------
        requires_grad : bool, default True

        Returns
        -------
        self
        """
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Drop the accumulated gradients of all parameters, as PyTorch's
        ``Module.zero_grad``.

        Parameters
        ----------
        set_to_none : bool, default True
            ``grad = None``; False makes them zeros.

        Returns
        -------
        None
        """
        from ..optim.wrappers import _zero_grads

        _zero_grads(self.parameters(), set_to_none)

    def to(self, *, xp=None, device=None, dtype=None):
        """Move every parameter to namespace ``xp``, ``device`` and/or ``dtype``, in place
        on the module. Gradients are dropped. Every parameter is moved before any is
        replaced, so a move that fails leaves the module as it was.

        Parameters
        ----------
        xp : array namespace, optional
        device : optional
            A device of the target namespace.
        dtype : floating dtype or {"float32", "float64"}, optional
            Floating (parameters are differentiated).

        Returns
        -------
        self
        """
        params = self.parameters()
        moved = [_ns.move(p.data, xp=xp, device=device, dtype=dtype) for p in params]
        for a in moved:
            ns = _ns.array_namespace(a)
            if not ns.isdtype(a.dtype, "real floating"):
                raise TypeError(f"xpdl: Module.to needs a floating dtype (parameters are "
                                f"differentiated), got {a.dtype}")
        for p, new in zip(params, moved):
            p._own = p._own or new is not p.data  # a moved array is a fresh buffer of ours
            p.data = new
            p._xp = _ns.array_namespace(new)
            p.grad = None
        _written(self.parameters())
        return self

    def extra_repr(self):
        """The settings shown inside the module's ``repr`` (a subclass adds its own)."""
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    r"""Scale the gradients of ``parameters`` together so that their norm is at most
    ``max_norm``, as ``torch.nn.utils.clip_grad_norm_``: each ``.grad`` becomes
    :math:`g \min(1, c / (\|g\|_p + 10^{-6}))` (for the 2-norm, the rule of
    :func:`xpdl.optim.clip_by_global_norm`, which does the same inside an optimizer).

    Parameters
    ----------
    parameters : Module, Tensor or iterable of Tensors
        Those without a gradient are left out.
    max_norm : float
        Positive.
    norm_type : float or "inf", default 2.0
        :math:`p > 0` of the norm :math:`(\sum |g|^p)^{1/p}` over all the gradients'
        elements taken together; ``inf`` (or ``"inf"``) for their largest magnitude.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` (torch's error) instead of scaling when the norm is NaN or
        infinite; checking reads the norm on the host.
    foreach : None or bool
        Accepted for PyTorch's signature; xpdl always scales each gradient by one factor.

    Returns
    -------
    array of shape ()
        The gradients' norm before clipping (0 where none has a gradient), on their
        namespace and device (the float 0.0 for no parameters).
    """
    from ..optim.transforms import _clip_by_norm, _plain

    if isinstance(max_norm, (bool, str, bytes)) or not isinstance(
            _plain(max_norm), (int, float)):
        raise TypeError(f"xpdl.nn.clip_grad_norm_: max_norm must be a number, got "
                        f"{max_norm!r}")
    max_norm = _plain(max_norm)
    if not max_norm > 0:  # (NaN too)
        raise ValueError(f"xpdl.nn.clip_grad_norm_: max_norm must be a positive number, got "
                         f"{max_norm!r}")
    p_norm = _plain(norm_type)
    if isinstance(p_norm, str) and p_norm.lower() == "inf":
        p_norm = math.inf
    if isinstance(p_norm, bool) or not isinstance(p_norm, (int, float)):
        raise TypeError(f"xpdl.nn.clip_grad_norm_: norm_type must be a number or 'inf', got "
                        f"{norm_type!r}")
    if not p_norm > 0:
        raise ValueError(f"xpdl.nn.clip_grad_norm_: norm_type must be positive or inf, got "
                         f"{norm_type!r}")
    if not isinstance(error_if_nonfinite, bool):
        raise TypeError(f"xpdl.nn.clip_grad_norm_: error_if_nonfinite must be True or False, "
                        f"got {error_if_nonfinite!r}")
    if isinstance(parameters, Module):
        parameters = parameters.parameters()
    elif isinstance(parameters, Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    live = [p for p in parameters if p.grad is not None]
    if not live:  # (a 0-d zero where there is a parameter to say where; else 0.0)
        if not parameters:
            return 0.0
        p = parameters[0]
        return p.xp.zeros((), dtype=p.data.dtype, device=_ns.device_of(p.data))
    def finite(norm):
        if not math.isfinite(float(norm)):
            raise RuntimeError(f"xpdl.nn.clip_grad_norm_: the total norm of order {p_norm} "
                               f"of the gradients is non-finite ({float(norm)}), so it cannot "
                               f"be clipped; set error_if_nonfinite=False to scale the "
                               f"gradients by it anyway")

    clipped, norm = _clip_by_norm({i: p.grad for i, p in enumerate(live)}, max_norm,
                                  float(p_norm), finite if error_if_nonfinite else None)
    for i, p in enumerate(live):
        p.grad = clipped[i]
    return norm
