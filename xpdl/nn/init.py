"""Initialisation of parameters in place, as ``torch.nn.init``: the same names, arguments
and formulas (fans, gains, bounds), with the draws from xpdl's seeded host generator
(``rng=``, an int or :class:`xpdl.random.Generator`), so one seed gives the same values on
every backend (not PyTorch's values: its generator is another).

Each function writes new values into the Tensor's ``.data`` (same namespace, device and
dtype) and returns the Tensor, for ``model.apply(init)``::

    def init(m):
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", rng=g)
            nn.init.zeros_(m.bias)
"""

from __future__ import annotations

import math
import numbers

from .. import _namespace as _ns
from ..autodiff.tensor import Tensor, _written
from ..random import as_generator

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    r"""The gain PyTorch recommends for ``nonlinearity``: 1 for linear layers and sigmoid,
    :math:`5/3` for tanh, :math:`\sqrt 2` for ReLU, :math:`\sqrt{2/(1+a^2)}` for leaky
    ReLU of slope ``param`` (default 0.01), :math:`3/4` for SELU.

    Parameters
    ----------
    nonlinearity : str
    param : float, optional
        Leaky ReLU's negative slope.

    Returns
    -------
    float
    """
    if nonlinearity in _LINEAR:
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, bool) or not isinstance(param, numbers.Real):
            raise ValueError(f"xpdl.nn.init: negative_slope {param!r} is not a valid number")
        else:
            slope = param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"xpdl.nn.init: unsupported nonlinearity {nonlinearity!r}")


def _target(tensor, what):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"xpdl.nn.init.{what}: expected an xpdl Tensor (a parameter), got "
                        f"{type(tensor).__name__}")
    if not tensor.xp.isdtype(tensor.data.dtype, "real floating"):
        raise TypeError(f"xpdl.nn.init.{what}: the Tensor must be floating, got "
                        f"{tensor.data.dtype}")
    return tensor


def _fill(tensor, new):
    tensor.data = new
    _written([tensor])
    return tensor


def _draw(tensor, what, rng, kind, a, b):
    t = _target(tensor, what)
    g = as_generator(rng)
    d = t.data
    kw = dict(xp=t.xp, device=_ns.device_of(d), dtype=d.dtype)
    if kind == "uniform":
        return _fill(t, g.uniform(tuple(d.shape), low=a, high=b, **kw))
    return _fill(t, g.normal(tuple(d.shape), loc=a, scale=b, **kw))


def _fans(tensor, what):
    shape = tuple(tensor.shape)
    if len(shape) < 2:
        raise ValueError(f"xpdl.nn.init.{what}: fan in and fan out need a Tensor of at least "
                         f"2 axes, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def uniform_(tensor, a=0.0, b=1.0, *, rng=None):
    """Fill ``tensor`` with draws from :math:`U[a, b)`; returns it."""
    if not a <= b:
        raise ValueError(f"xpdl.nn.init.uniform_: needs a <= b, got a={a}, b={b}")
    return _draw(tensor, "uniform_", rng, "uniform", a, b)


def normal_(tensor, mean=0.0, std=1.0, *, rng=None):
    """Fill ``tensor`` with draws from :math:`N(\\mathrm{mean}, \\mathrm{std}^2)`; returns
    it."""
    return _draw(tensor, "normal_", rng, "normal", mean, std)


def constant_(tensor, val):
    """Fill ``tensor`` with ``val``; returns it."""
    t = _target(tensor, "constant_")
    d = t.data
    return _fill(t, t.xp.full(tuple(d.shape), val, dtype=d.dtype, device=_ns.device_of(d)))


def zeros_(tensor):
    """Fill ``tensor`` with 0; returns it."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill ``tensor`` with 1; returns it."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0, *, rng=None):
    r"""Glorot uniform: :math:`U(\pm a)` with :math:`a = \text{gain}\sqrt{6/(n_{in} +
    n_{out})}` (``Linear(init="glorot")``'s, for ``gain=1``); ``tensor`` of at least 2 axes,
    shape ``(n_out, n_in, ...)``."""
    fan_in, fan_out = _fans(tensor, "xavier_uniform_")
    a = math.sqrt(3.0) * (gain * math.sqrt(2.0 / float(fan_in + fan_out)))
    return _draw(tensor, "xavier_uniform_", rng, "uniform", -a, a)


def xavier_normal_(tensor, gain=1.0, *, rng=None):
    r"""Glorot normal: :math:`N(0, \sigma^2)` with :math:`\sigma = \text{gain}\sqrt{2/(n_{in}
    + n_{out})}`."""
    fan_in, fan_out = _fans(tensor, "xavier_normal_")
    return _draw(tensor, "xavier_normal_", rng, "normal", 0.0,
                 gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def _kaiming_std(tensor, a, mode, nonlinearity, what):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"xpdl.nn.init.{what}: mode must be 'fan_in' or 'fan_out', got "
                         f"{mode!r}")
    fan_in, fan_out = _fans(tensor, what)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", *, rng=None):
    r"""He uniform: :math:`U(\pm\sqrt3\,\sigma)` with :math:`\sigma = \text{gain}/
    \sqrt{\text{fan}}` (``gain`` from :func:`calculate_gain` of ``nonlinearity`` and ``a``,
    the leaky ReLU slope; ``fan`` the input or output fan by ``mode``). With
    ``nonlinearity="relu"``, ``Linear(init="he")``'s range."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    return _draw(tensor, "kaiming_uniform_", rng, "uniform", -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", *, rng=None):
    r"""He normal: :math:`N(0, \sigma^2)`, :math:`\sigma` as in :func:`kaiming_uniform_`."""
    return _draw(tensor, "kaiming_normal_", rng, "normal", 0.0,
                 _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_"))
