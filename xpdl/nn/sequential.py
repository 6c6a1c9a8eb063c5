"""A chain of modules."""

from __future__ import annotations

from .module import Module


class Sequential(Module):
    """Apply ``layers`` in order; parameters are named ``"<index>.<name>"``."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"xpdl: Sequential takes Modules, got {type(layer).__name__}")
            setattr(self, str(i), layer)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x
