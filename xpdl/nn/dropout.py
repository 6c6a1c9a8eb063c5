"""Dropout layer."""

from __future__ import annotations

from .. import functional as F
from ..random import as_generator
from .module import Module


class Dropout(Module):
    """Inverted dropout: in training mode zero each element with probability ``p`` and
    scale the rest by ``1/(1-p)``; the identity in eval mode.

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    rng : int or xpdl.random.Generator, optional
        Source of the masks (host-drawn, the same on every backend for one seed).
    """

    def __init__(self, p=0.5, *, rng=None):
        super().__init__()
        self.p = F._drop_p(p)
        self.rng = as_generator(rng)

    def forward(self, x):
        return F.dropout(x, self.p, rng=self.rng, training=self.training)

    def extra_repr(self):
        return f"p={self.p}"
