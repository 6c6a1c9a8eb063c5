r"""Differential privacy: DP-SGD's clipped gradients and an RDP accountant.

DP-SGD (Abadi et al., 2016) replaces a minibatch gradient by

.. math:: \tilde g = \frac{1}{B}\Big(\sum_{i\in\text{batch}} g_i
          \min\big(1, \tfrac{C}{\|g_i\|}\big) + \mathcal N(0, \sigma^2 C^2 I)\Big),

with per-sample gradients :math:`g_i`, clipping norm :math:`C` (``dp_max_grad_norm``),
noise multiplier :math:`\sigma` (``dp_noise_multiplier``) and :math:`B` the *expected*
batch size. For a linear layer :math:`z_i = W a_i + b` the per-sample gradient of
:math:`W` is the outer product :math:`\delta_i a_i^\top` with :math:`\delta_i =
\partial \ell_i/\partial z_i`, so :math:`\|g_i^W\|^2 = \|\delta_i\|^2\|a_i\|^2` and
:math:`\|g_i^b\|^2 = \|\delta_i\|^2`: :func:`clipped_gradients` gets every norm from the
activations and output gradients of one backward pass and forms the clipped sums as
:math:`(c \odot \Delta)^\top A` without materialising any per-sample weight gradient.

Sampling: the estimators draw each batch by Poisson sampling (every sample joins with
probability :math:`q = B/n`, from the seeded generator), which is exactly what the
accountant below assumes; an epoch is :math:`\lceil n/B\rceil` such steps.

Sample weights: with DP-SGD a sample of weight :math:`w_i` contributes its weighted
gradient clipped as a whole, :math:`\min(1, C/\|w_i g_i\|)\,w_i g_i`, so no sample moves
a step by more than :math:`C` (before noise) however heavy it is, and the accountant's
bound holds unchanged. The weights are used as given, not rescaled to mean 1 as without DP:
rescaling by their total would let one sample change every other sample's contribution.
A weight above 1 can therefore add at most what clipping allows; a weight below 1 shrinks
the sample's pull.

:func:`epsilon` is the Rényi-DP accountant of the Poisson-subsampled Gaussian mechanism
(Mironov, Talwar and Zhang, 2019): RDP of each order is computed exactly for integer orders
and by the convergent series for fractional ones, composed over the steps, and converted to
:math:`(\varepsilon, \delta)` with the conversion of Balle et al. (2020), as Opacus does.
The fractional-order series is summed in O(1) a term with an Euler-van Wijngaarden
acceleration of its alternating tail, so :func:`epsilon` takes about 10 ms for any sampling
rate (it took seconds for rates of 0.1-0.5); its values agree with the plain series to
1e-9 and with a 30-digit numerical integration of the definition to 1e-10 (tested).
"""

from __future__ import annotations

import math

from . import _namespace as _ns
from .autodiff.tensor import Tensor

__all__ = ["epsilon", "rdp", "clipped_gradients", "DEFAULT_ORDERS"]

DEFAULT_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) +
                       [64, 80, 96, 128, 160, 192, 256])


def _log_add(a, b):
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(min(a, b) - m))


def _log_erfc(x):
    if x < 20:
        return math.log(math.erfc(x))
    # Asymptotic expansion of erfc for large x (erfc underflows).
    r = 1.0 / (x * x)
    return (-x * x - math.log(x) - 0.5 * math.log(math.pi)
            + math.log1p(-0.5 * r + 0.75 * r * r - 1.875 * r ** 3))


def _log_binom(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_a_int(q, sigma, alpha):
    # A_alpha = sum_i C(alpha, i) (1-q)^(alpha-i) q^i exp((i^2 - i) / (2 sigma^2))
    log_a = -math.inf
    for i in range(int(alpha) + 1):
        t = (_log_binom(alpha, i) + i * math.log(q) + (alpha - i) * math.log1p(-q)
             + (i * i - i) / (2 * sigma ** 2))
        log_a = _log_add(log_a, t)
    return log_a


def _log_a_frac(q, sigma, alpha):
    r"""log A_alpha for fractional alpha: the two series of Mironov, Talwar and Zhang
    (2019, Sec. 3.3), summed as one, :math:`A = \sum_i C(\alpha, i)\,(s_{0,i} + s_{1,i})`.

    The generalised binomial coefficient is carried from term to term in log space with its
    sign, :math:`C(\alpha, i+1) = C(\alpha, i)(\alpha - i)/(i + 1)`, so each term costs
    O(1). Past :math:`i > \alpha` the signs alternate and the terms fall off only like a
    power of :math:`i` (for large sampling rates, thousands of terms before they drop below
    :math:`e^{-30}`), so the partial sums are also averaged repeatedly (the Euler-van
    Wijngaarden transform of an alternating series) and the sum stops once that converges to
    float64 precision: tens of terms instead of thousands, the same value.
    """
    z0 = sigma ** 2 * math.log(1 / q - 1) + 0.5
    log_q, log_1q = math.log(q), math.log1p(-q)
    inv2s2 = 1 / (2 * sigma ** 2)
    scale = math.sqrt(2) * sigma
    log_half = math.log(0.5)
    log_coef, sign = 0.0, 1.0
    top = None  # the partial sums are kept as multiples of exp(top)
    partial = []
    depth = 12
    estimate = None
    i = 0
    while True:
        j = alpha - i
        log_s0 = (log_coef + i * log_q + j * log_1q + (i * i - i) * inv2s2 + log_half
                  + _log_erfc((i - z0) / scale))
        log_s1 = (log_coef + j * log_q + i * log_1q + (j * j - j) * inv2s2 + log_half
                  + _log_erfc((z0 - j) / scale))
        log_s = max(log_s0, log_s1)
        if top is None or log_s > top:  # rescale so the largest term so far is ~1
            if top is not None:
                partial = [p * math.exp(top - log_s) for p in partial]
            top = log_s
        term = sign * (math.exp(log_s0 - top) + math.exp(log_s1 - top))
        partial.append((partial[-1] if partial else 0.0) + term)
        i += 1
        if log_s < -30 or i > 10_000:  # negligible terms: the plain sum has converged
            total = partial[-1]
            break
        if i > alpha + depth + 2 and i % 4 == 0:
            level = partial[-depth - 1:]
            for _ in range(depth):
                level = [0.5 * (a + b) for a, b in zip(level, level[1:])]
            if estimate is not None and abs(level[0] - estimate) <= 1e-15 * abs(level[0]):
                total = level[0]
                break
            estimate = level[0]
        factor = (alpha - (i - 1)) / i
        if factor == 0:
            total = partial[-1]
            break
        if factor < 0:
            sign = -sign
        log_coef += math.log(abs(factor))
    return top + math.log(total)


def rdp(noise_multiplier, sample_rate, steps, orders=DEFAULT_ORDERS):
    """Rényi-DP of ``steps`` compositions of the Poisson-subsampled Gaussian mechanism, one
    value per order (a list of floats)."""
    q, sigma = float(sample_rate), float(noise_multiplier)
    out = []
    for a in orders:
        if q == 0:
            out.append(0.0)
        elif sigma == 0:
            out.append(math.inf)
        elif q == 1.0:
            out.append(steps * a / (2 * sigma ** 2))
        else:
            log_a = _log_a_int(q, sigma, a) if float(a).is_integer() else \
                _log_a_frac(q, sigma, a)
            out.append(steps * log_a / (a - 1))
    return out


def epsilon(noise_multiplier, sample_rate, steps, delta, orders=DEFAULT_ORDERS):
    r"""Privacy spent, :math:`\varepsilon`, by DP-SGD at a given :math:`\delta`.

    Parameters
    ----------
    noise_multiplier : float
        :math:`\sigma`, the noise standard deviation relative to the clipping norm.
    sample_rate : float
        :math:`q`, the Poisson sampling probability (expected batch size / n).
    steps : int
        Number of noisy steps.
    delta : float
        Target :math:`\delta`.

    Returns
    -------
    float
        The smallest :math:`\varepsilon` over the RDP orders (``inf`` without noise).

    Examples
    --------
    >>> from xpdl.privacy import epsilon
    >>> round(epsilon(1.1, 256 / 60000, 14062, 1e-5), 2)
    2.6
    """
    if not 0 <= sample_rate <= 1:
        raise ValueError(f"xpdl.privacy: sample_rate must be in [0, 1], got {sample_rate}")
    if not 0 < delta < 1:
        raise ValueError(f"xpdl.privacy: delta must be in (0, 1), got {delta}")
    if noise_multiplier < 0 or steps < 0:
        raise ValueError("xpdl.privacy: noise_multiplier and steps must be non-negative")
    if steps == 0 or sample_rate == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    best = math.inf
    for a, r in zip(orders, rdp(noise_multiplier, sample_rate, steps, orders)):
        if a <= 1 or not math.isfinite(r):
            continue
        eps = r - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
        best = min(best, eps)
    return max(best, 0.0)


def clipped_gradients(module, X, per_sample_loss, max_grad_norm, *, weights=None):
    r"""Sum over the samples of each sample's gradient clipped to ``max_grad_norm``.

    Parameters
    ----------
    module : xpdl.nn.Sequential
        Linear layers and parameter-free layers (activations, dropout).
    X : array of shape (n, in_features)
    per_sample_loss : callable
        ``per_sample_loss(output_tensor) -> Tensor of shape (n,)``: the loss of each sample
        (not averaged).
    max_grad_norm : float
        :math:`C`.
    weights : array of shape (n,), optional
        Non-negative sample weights :math:`w_i`. Each sample's *weighted* gradient
        :math:`w_i g_i` is what gets clipped, so every sample's contribution has norm at
        most :math:`C` whatever its weight (the bound DP-SGD's guarantee rests on).

    Returns
    -------
    grads : dict
        ``{parameter name: array}``, :math:`\sum_i \min(1, C/\|w_i g_i\|)\, w_i g_i`
        (:math:`w_i = 1` without weights).
    norms : array of shape (n,)
        The norms :math:`\|w_i g_i\|` of the contributions before clipping.

    Notes
    -----
    One forward and one backward pass; the parameters are detached during it so no
    unclipped weight gradient is computed, and the output gradient of every linear layer is
    kept (``retain_grad``) to form the norms and the clipped sums.
    """
    from .nn import Linear

    xp, dev = _ns.get_namespace_and_device(X)
    params = module.parameters()
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad = False
    try:
        x = Tensor(X, requires_grad=True)
        taps = []  # (prefix, layer, input array, output tensor)
        for name, layer in module._modules.items():
            if isinstance(layer, Linear):
                a = x.data
                x = layer(x)
                x.retain_grad()
                taps.append((name, layer, a, x))
            else:
                x = layer(x)
        losses = per_sample_loss(x)
        losses.sum().backward()
    finally:
        for p, r in zip(params, saved):
            p.requires_grad = r
    sq = None
    for _, layer, a, z in taps:
        d2 = xp.sum(z.grad * z.grad, axis=1)
        part = d2 * (xp.sum(a * a, axis=1) + (1.0 if layer.bias is not None else 0.0))
        sq = part if sq is None else sq + part
    norms = xp.sqrt(sq)
    # A weighted sample contributes w_i g_i, clipped as a whole: w_i g_i min(1, C/(w_i|g_i|))
    # = g_i min(w_i, C/|g_i|), so no contribution exceeds C whatever its weight (and the
    # product w_i |g_i| is never formed, so huge weights cannot overflow).
    limit = max_grad_norm / (norms + 1e-6)
    one = _ns.lit(xp, 1.0, limit)
    clip = xp.minimum(limit, one) if weights is None else xp.minimum(limit, weights)
    if weights is not None:
        norms = norms * weights
    grads = {}
    for name, layer, a, z in taps:
        D = z.grad * xp.expand_dims(clip, axis=1)
        grads[f"{name}.weight"] = D.T @ a
        if layer.bias is not None:
            grads[f"{name}.bias"] = xp.sum(D, axis=0)
    return grads, norms
