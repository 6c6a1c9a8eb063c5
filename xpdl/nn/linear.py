"""Fully connected layer."""

from __future__ import annotations

import math
import numbers

from .. import _namespace as _ns
from .. import functional as F
from ..random import as_generator
from .module import Module, parameter

_INITS = ("glorot", "he")


def _default_xp(xp):
    xp = _ns.check_xp(xp)
    if xp is None:
        import array_api_compat.numpy as np_xp

        return np_xp
    return xp


class Linear(Module):
    r"""Affine layer :math:`y = x W^\top + b` with ``weight`` of shape (out, in).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    rng : int or xpdl.random.Generator, optional
        Seed or generator for the initial weights (drawn on the host, the same everywhere).
    xp : namespace, optional
        Where the parameters live (NumPy by default).
    device : device, optional
    dtype : dtype or {"float32", "float64"}, optional
        float32 by default.
    init : {"glorot", "he"}, default "glorot"
        Glorot/Xavier uniform :math:`U(\pm\sqrt{6/(n_{in}+n_{out})})` keeps the variance of
        activations and gradients for tanh/sigmoid nets; He uniform
        :math:`U(\pm\sqrt{6/n_{in}})` compensates ReLU zeroing half its inputs. The bias
        starts at zero. (An xpdl extension of the API contract: estimators pick "he" for
        ReLU networks.)

    Notes
    -----
    Input of shape (..., in_features), output of shape (..., out_features).
    """

    def __init__(self, in_features, out_features, bias=True, *, rng=None, xp=None,
                 device=None, dtype=None, init="glorot"):
        super().__init__()
        if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool)
                   for n in (in_features, out_features)):
            raise TypeError(f"xpdl: Linear sizes must be ints, got ({in_features!r}, "
                            f"{out_features!r})")
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError(f"xpdl: Linear needs positive sizes, got ({in_features}, "
                             f"{out_features})")
        if init not in _INITS:
            raise ValueError(f"xpdl: init must be one of {_INITS}, got {init!r}")
        xp = _default_xp(xp)
        dtype = xp.float32 if dtype is None else _ns.dtype_from_name(xp, dtype)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.init = init
        fan = self.in_features if init == "he" else self.in_features + self.out_features
        bound = math.sqrt(6.0 / fan)
        g = as_generator(rng)
        self.weight = parameter(g.uniform((self.out_features, self.in_features), low=-bound,
                                          high=bound, xp=xp, device=device, dtype=dtype))
        if bias:
            self.bias = parameter(xp.zeros((self.out_features,), dtype=dtype, device=device))
        else:
            object.__setattr__(self, "bias", None)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
