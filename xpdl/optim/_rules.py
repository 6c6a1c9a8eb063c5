r"""Each optimizer's update of one element, written once.

The functions below take a parameter, its gradient and the optimizer's state either as
whole arrays or as single numbers, and constants precomputed per step. They use only
``+ - * /`` between their arguments and the ``sqrt`` and ``maximum`` they are given, and no
literal numbers (a constant is an argument, so every execution rounds it to the arrays'
dtype the same way). Every fast path is an execution of these definitions, never a rewrite:

- :mod:`xpdl.optim.transforms` calls the pieces on arrays (the portable chain, JAX);
- :mod:`xpdl.optim._fused` traces the whole update once per configuration into a list of
  elementwise operations and runs it as NumPy or torch ufunc calls with ``out=`` into
  planned buffers, or as the source of one CuPy ``ElementwiseKernel``;
- :mod:`xpdl._numba_kernels` compiles the same functions per element with Numba.

The flags (``l2``, ``decoupled``, ...) are plain booleans: fixed when traced, run-time
values under Numba. The operations keep PyTorch's order (``torch.optim``), with Adam's
bias corrections moved into the constants: :math:`\eta\,\hat m/(\sqrt{\hat v}+\epsilon)
= s\,m/(\sqrt v + \epsilon')` with :math:`s = \eta\sqrt{1-\beta_2^t}/(1-\beta_1^t)`
and :math:`\epsilon' = \epsilon\sqrt{1-\beta_2^t}`.
"""

from __future__ import annotations


def add_l2(g, p, c):
    r"""The gradient of an L2 penalty :math:`\tfrac c2\|p\|^2` added: ``g + p * c`` (the
    estimators' ``alpha`` and the optimizers' coupled ``weight_decay``)."""
    return g + p * c


def adam_moments(g, m, v, b1, c1, b2, c2):
    """Adam's moments: ``m * b1 + g * c1`` and ``v * b2 + (g * g) * c2`` (``c1 = 1 - b1``,
    ``c2 = 1 - b2``)."""
    return m * b1 + g * c1, v * b2 + (g * g) * c2


def adam_direction(m, v, eps_s, step_s, sqrt):
    """Adam's bias-corrected step: ``(m / (sqrt(v) + eps_s)) * step_s``."""
    return (m / (sqrt(v) + eps_s)) * step_s


def adam(p, g, m, v, vmax, c, dec, wd, b1, c1, b2, c2, eps_s, step_s, l2, decoupled,
         coupled, amsgrad, sqrt, maximum):
    """One Adam/AdamW update, returning the new ``(p, m, v, vmax)``.

    ``l2``: the estimators' penalty, ``g + p * c``; ``decoupled``: AdamW's ``p * dec``
    (``dec = 1 - lr * weight_decay``) before the step; ``coupled``: Adam's
    ``weight_decay`` added to the gradient, ``g + p * wd``; ``amsgrad``: the direction
    divides by the largest second moment so far, ``vmax = maximum(vmax, v)``
    (``vmax`` is returned unchanged without it).
    """
    if l2:
        g = add_l2(g, p, c)
    if decoupled:
        p = p * dec
    if coupled:
        g = add_l2(g, p, wd)
    m, v = adam_moments(g, m, v, b1, c1, b2, c2)
    if amsgrad:
        vmax = maximum(vmax, v)
        return p - adam_direction(m, vmax, eps_s, step_s, sqrt), m, v, vmax
    return p - adam_direction(m, v, eps_s, step_s, sqrt), m, v, vmax


def momentum(g, b, mu, nesterov):
    """The momentum buffer ``b * mu + g`` and the direction (``b``, or with Nesterov
    ``b * mu + g`` of the new ``b``); returns ``(direction, b)``."""
    b = b * mu + g
    return (b * mu + g if nesterov else b), b


def sgd(p, g, b, c, wd, lr, mu, l2, coupled, with_momentum, nesterov):
    """One SGD update, returning the new ``(p, b)`` (``b`` unchanged without momentum);
    ``l2`` and ``coupled`` as in :func:`adam`."""
    if l2:
        g = add_l2(g, p, c)
    if coupled:
        g = add_l2(g, p, wd)
    if with_momentum:
        g, b = momentum(g, b, mu, nesterov)
    return p - g * lr, b


def rms_direction(g, s, ga, alpha, c_alpha, eps, centered, sqrt):
    """RMSprop's direction and averages: ``s * alpha + (g * g) * c_alpha`` (``c_alpha = 1 -
    alpha``), centered also ``ga * alpha + g * c_alpha``; the direction ``g / (sqrt(s) +
    eps)``, centered ``g / (sqrt(s - ga * ga) + eps)``. Returns ``(direction, s, ga)``."""
    s = s * alpha + (g * g) * c_alpha
    if centered:
        ga = ga * alpha + g * c_alpha
        return g / (sqrt(s - ga * ga) + eps), s, ga
    return g / (sqrt(s) + eps), s, ga


def rmsprop(p, g, s, ga, b, c, wd, alpha, c_alpha, eps, lr, mu, l2, coupled, centered,
            with_momentum, sqrt):
    """One RMSprop update (``torch.optim.RMSprop``), returning the new ``(p, s, ga, b)``;
    with momentum the direction goes through the buffer ``b``."""
    if l2:
        g = add_l2(g, p, c)
    if coupled:
        g = add_l2(g, p, wd)
    d, s, ga = rms_direction(g, s, ga, alpha, c_alpha, eps, centered, sqrt)
    if with_momentum:
        d, b = momentum(d, b, mu, False)
    return p - d * lr, s, ga, b


def adagrad_direction(g, s, eps, sqrt):
    """Adagrad's sum ``s + g * g`` and direction ``g / (sqrt(s) + eps)``; returns
    ``(direction, s)``."""
    s = s + g * g
    return g / (sqrt(s) + eps), s


def adagrad(p, g, s, c, wd, eps, lr, l2, coupled, sqrt):
    """One Adagrad update (``torch.optim.Adagrad`` without learning-rate decay), returning
    the new ``(p, s)``."""
    if l2:
        g = add_l2(g, p, c)
    if coupled:
        g = add_l2(g, p, wd)
    d, s = adagrad_direction(g, s, eps, sqrt)
    return p - d * lr, s
