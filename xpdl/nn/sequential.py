"""Containers of modules: a chain (:class:`Sequential`) and an indexed list
(:class:`ModuleList`)."""

from __future__ import annotations

from .module import Module


class _Indexed(Module):
    """Sub-modules registered under ``"0"``, ``"1"``, ...: indexing, ``len``, iteration,
    ``append``, ``extend`` and ``insert``, as PyTorch's containers."""

    def __init__(self, layers):
        super().__init__()
        self.extend(layers)

    def _check(self, layer):
        if not isinstance(layer, Module):
            raise TypeError(f"xpdl: {type(self).__name__} takes Modules, got "
                            f"{type(layer).__name__}")
        return layer

    def _renumber(self, layers):
        for name in list(self._modules):
            delattr(self, name)
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def _index(self, i):
        n = len(self)
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise TypeError(f"xpdl: {type(self).__name__} indices must be integers or "
                            f"slices, got {type(i).__name__}")
        i = i.__index__()
        if not -n <= i < n:
            raise IndexError(f"xpdl: index {i} is out of range for {n} modules")
        return i % n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._of(list(self._modules.values())[i])
        return list(self._modules.values())[self._index(i)]

    def __setitem__(self, i, layer):
        setattr(self, str(self._index(i)), self._check(layer))

    def __delitem__(self, i):
        layers = list(self._modules.values())
        del layers[i if isinstance(i, slice) else self._index(i)]
        self._renumber(layers)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def append(self, layer):
        """Add ``layer`` at the end (named by its index).

        Parameters
        ----------
        layer : Module

        Returns
        -------
        self
        """
        setattr(self, str(len(self)), self._check(layer))
        return self

    def extend(self, layers):
        """Add each of ``layers`` at the end.

        Parameters
        ----------
        layers : iterable of Module

        Returns
        -------
        self
        """
        for layer in list(layers):
            self.append(layer)
        return self

    def insert(self, index, layer):
        """Put ``layer`` before position ``index`` (the later ones move up by one and are
        renamed by their new index).

        Parameters
        ----------
        index : int
        layer : Module

        Returns
        -------
        None
        """
        layers = list(self._modules.values())
        layers.insert(index, self._check(layer))
        self._renumber(layers)


class Sequential(_Indexed):
    """Apply ``layers`` in order; parameters are named ``"<index>.<name>"``.

    Parameters
    ----------
    *layers : Module
        Each takes the previous one's output (the first takes the input).

    ``model[i]`` is the i-th layer, ``len(model)`` their number, iterating yields them;
    ``model[a:b]`` is a Sequential of those same layer objects, numbered from 0 (PyTorch
    keeps the original numbers; here parameter names always count from 0, so a slice saves
    and loads like any Sequential): ``model[:-1]`` is the network without its last layer,
    sharing its parameters. ``append``, ``extend``, ``insert``, ``model[i] = layer`` and
    ``del model[i]`` change the chain (the layers after it are numbered again).

    Examples
    --------
    >>> from xpdl import nn
    >>> model = nn.Sequential(nn.Linear(4, 8, rng=0), nn.ReLU(), nn.Linear(8, 3, rng=0))
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *layers):
        super().__init__(layers)

    @staticmethod
    def _of(layers):
        return Sequential(*layers)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x


class ModuleList(_Indexed):
    """A list of modules whose parameters are registered (named ``"<index>.<name>"``), for
    a model that holds a varying number of layers and calls them in its own ``forward``,
    as PyTorch's ``ModuleList`` (a plain Python list registers nothing: its layers would
    not be trained or saved).

    Parameters
    ----------
    modules : iterable of Module, optional

    Examples
    --------
    >>> from xpdl import nn
    >>> class Net(nn.Module):
    ...     def __init__(self, widths):
    ...         super().__init__()
    ...         self.layers = nn.ModuleList(nn.Linear(a, b, rng=0)
    ...                                     for a, b in zip(widths, widths[1:]))
    ...     def forward(self, x):
    ...         for layer in self.layers:
    ...             x = layer(x)
    ...         return x
    >>> [name for name, _ in Net([4, 8, 3]).named_parameters()]
    ['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias']
    """

    def __init__(self, modules=()):
        super().__init__(modules)

    @staticmethod
    def _of(layers):
        return ModuleList(layers)

    def __iadd__(self, layers):
        return self.extend(layers)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("xpdl: a ModuleList is not called; call its modules in "
                                  "your forward()")
