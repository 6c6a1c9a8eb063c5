"""A chain of modules."""

from __future__ import annotations

from .module import Module


class Sequential(Module):
    """Apply ``layers`` in order; parameters are named ``"<index>.<name>"``.

    Parameters
    ----------
    *layers : Module
        Each takes the previous one's output (the first takes the input).

    ``model[i]`` is the i-th layer, ``len(model)`` their number, iterating yields them;
    ``model[a:b]`` is a Sequential of those same layer objects, numbered from 0 (PyTorch
    keeps the original numbers; here parameter names always count from 0, so a slice saves
    and loads like any Sequential): ``model[:-1]`` is the network without its last layer,
    sharing its parameters.

    Examples
    --------
    >>> from xpdl import nn
    >>> model = nn.Sequential(nn.Linear(4, 8, rng=0), nn.ReLU(), nn.Linear(8, 3, rng=0))
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"xpdl: Sequential takes Modules, got {type(layer).__name__}")
            setattr(self, str(i), layer)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x
