"""The MLP estimators' training step with its backward pass written out once.

For the networks the estimators build (``Linear``, activation, ..., ``Linear``; no dropout)
and their three losses, a minibatch step is always the same sequence of matrix products and
elementwise passes. The tape records and replays that sequence generically, one node and a
few fresh arrays per operation; here it is written out with the VJPs derived in the docs'
math page (linear, ReLU/tanh/sigmoid, softmax cross-entropy, logistic loss, squared error):

* On NumPy and CuPy every intermediate lives in a buffer allocated on the first step and
  reused through ``out=``; the parameters are views into one flat array and their
  gradients views into another, so the L2 term and the optimizer touch all parameters with
  one call per pass (see :meth:`xpdl.optim.Optimizer.step_flat`). Nothing is allocated per
  step except a few (n,)-sized loss terms.
* On every other namespace (torch, JAX, array_api_strict) the same equations run with
  standard operators, and the gradients go to the optimizer as usual.

Tests check the step against the tape (float64, every backend) and whole fits against
PyTorch. Dropout, DP-SGD and hand-made modules train through the tape.
"""

from __future__ import annotations

import math

from .. import _compiled
from .. import _namespace as _ns
from ..nn import Linear, ReLU, Sigmoid, Tanh

_ACTS = {ReLU: "relu", Tanh: "tanh", Sigmoid: "sigmoid"}


def layer_plan(module):
    """``[(Linear, activation name or None)]`` when ``module`` is Linear (activation Linear)*
    with biases, activations among ReLU/Tanh/Sigmoid; ``None`` otherwise."""
    layers = list(module)
    plan, i = [], 0
    while i < len(layers):
        lin = layers[i]
        if type(lin) is not Linear or lin.bias is None:
            return None
        act = None
        if i + 1 < len(layers):
            act = _ACTS.get(type(layers[i + 1]))
            if act is None:
                return None
            i += 2
        else:
            i += 1
        plan.append((lin, act))
    if not plan or plan[-1][1] is not None:
        return None
    return plan


def _sigmoid(xp, d):
    e = xp.exp(-xp.abs(d))  # exp of a non-positive number only: no overflow
    return xp.where(d >= 0, 1 / (1 + e), e / (1 + e))


class _Flat:
    """Parameters (weights first, then biases) as views into one flat array ``P``; their
    gradients as views into ``G`` with the same layout."""

    def __init__(self, xp, tensors, n_weights):
        self.tensors = tensors
        self.shapes = [tuple(t.data.shape) for t in tensors]
        self.P = xp.concat([xp.reshape(t.data, (-1,)) for t in tensors])
        self.G = xp.zeros_like(self.P)
        self.pviews, self.gviews, off = [], [], 0
        for shp in self.shapes:
            size = math.prod(shp)
            self.pviews.append(xp.reshape(self.P[off:off + size], shp))
            self.gviews.append(xp.reshape(self.G[off:off + size], shp))
            if len(self.pviews) == n_weights:
                self.n_w = off + size  # P[:n_w] holds every weight (the L2 term's domain)
            off += size
        for t, v in zip(tensors, self.pviews):
            t.data = v
            t._own = True

    def bound(self):
        return all(t.data is v for t, v in zip(self.tensors, self.pviews))


class FusedStep:
    """One training step (forward, loss, backward, L2, optimizer) for a plain MLP.

    Parameters
    ----------
    plan : list of (Linear, str or None)
        From :func:`layer_plan`.
    head : {"softmax", "logistic", "squared"}
        Softmax cross-entropy on integer classes, logistic loss on one logit (two classes),
        or half the mean squared error over samples and outputs.
    optimizer : xpdl.optim.Optimizer
        Holds the same parameters; keys are found by identity.
    xp : namespace
    """

    def __init__(self, plan, head, optimizer, xp):
        self.plan = plan
        self.head = head
        self.opt = optimizer
        self.xp = xp
        self.nat = _ns.native_module(xp)
        self._buf = {}
        self._flat = None
        self._stepper = self._stepper_state = None
        self._lk = None  # compiled layer kernels (NumPy, Numba), set per epoch
        self._rows = {}
        nat = self.nat
        # On the host, reading a value costs nothing, so data-dependent branches are fine
        # (on a GPU each would be a synchronisation).
        self._host = _ns.is_numpy(xp)
        if nat is not None and self._host:
            # the ufunc method skips np.sum's Python layer (a microsecond per call, which is
            # what a small network's step is made of)
            self._add_reduce = nat.add.reduce
        elif nat is not None:
            self._add_reduce = nat.sum
        names = {id(p): k for k, p in optimizer._params}
        tensors = [lin.weight for lin, _ in plan] + [lin.bias for lin, _ in plan]
        self._tensors = tensors
        self._keys = [names.get(id(t)) for t in tensors]
        if None in self._keys:
            raise ValueError("xpdl: the optimizer does not hold every parameter of the MLP")

    # -- binding -----------------------------------------------------------------------
    def begin_epoch(self):
        """Check the parameters are still the flat buffer's views (rebinding them when they
        were replaced: early-stopping restores, divergence, loading) and resolve the
        optimizer's flat step once; the training loop calls it at every epoch start."""
        if self.nat is None:
            return
        fl = self._flat
        if fl is None or not fl.bound():
            fl = self._flat = _Flat(self.xp, self._tensors, len(self.plan))
        self._stepper = self.opt.flat_stepper(fl.P, fl.G, self._keys, fl.shapes, fl.n_w)
        self._stepper_state = self.opt.state
        # compiled ReLU-layer passes on NumPy when Numba is installed (the same bits)
        self._lk = _compiled.layer_kernels(fl.P) if self._host else None
        for t, g in zip(self._tensors, fl.gviews):
            t.grad = g

    def _bind(self):
        fl = self._flat
        if fl is None or self._stepper_state is not self.opt.state or not fl.bound():
            self.begin_epoch()
            fl = self._flat
        return fl

    # -- the step --------------------------------------------------------------------
    def __call__(self, Xb, Tb, wb, alpha, l2n):
        """Train on one minibatch; returns the loss (with the L2 term) before the update,
        a 0-d array."""
        if self.nat is not None:
            return self._native(Xb, Tb, wb, alpha, l2n)
        return self._portable(Xb, Tb, wb, alpha, l2n)

    def _layer_buffers(self, n, fl):
        """Per layer, for a batch of ``n``: (output, ReLU mask, input gradient, scratch)."""
        bufs = self._buf.get(n)
        if bufs is None:
            xp, dt, dev = self.xp, fl.P.dtype, _ns.device_of(fl.P)
            bufs = []
            for lin, act in self.plan:
                shp = (n, lin.out_features)
                bufs.append((xp.empty(shp, dtype=dt, device=dev),
                             xp.empty(shp, dtype=xp.bool, device=dev) if act == "relu" else None,
                             xp.empty(shp, dtype=dt, device=dev),
                             xp.empty(shp, dtype=dt, device=dev) if act in ("tanh", "sigmoid")
                             else None))
            self._buf[n] = bufs
        return bufs

    def _native(self, Xb, Tb, wb, alpha, l2n):
        nat, xp = self.nat, self.xp
        fl = self._bind()
        n = Xb.shape[0]
        plan = self.plan
        L = len(plan)
        bufs = self._layer_buffers(n, fl)
        lk = self._lk
        acts = [Xb]
        a = Xb
        for (lin, act), (h, m, _, _) in zip(plan, bufs):
            nat.matmul(a, lin.weight.data.T, out=h)
            if act == "relu" and lk is not None:
                lk.bias_relu(h, lin.bias.data, m)  # the three passes below, in one
                acts.append(h)
                a = h
                continue
            h += lin.bias.data
            if act == "relu":
                # mask then multiply: two cheap passes where maximum(h, 0) is one slow one
                nat.greater(h, 0, out=m)
                h *= m
            elif act == "tanh":
                nat.tanh(h, out=h)
            elif act == "sigmoid":
                h[...] = _sigmoid(xp, h)
            acts.append(h)
            a = h
        value, dz = self._head(a, Tb, wb, n, native=True)
        gviews = fl.gviews
        add_reduce = self._add_reduce
        summed = False  # whether dz's column sums (the bias gradient) are already taken
        for i in range(L - 1, -1, -1):
            nat.matmul(dz.T, acts[i], out=gviews[i])
            if not summed:
                add_reduce(dz, axis=0, out=gviews[L + i])
            summed = False
            if i == 0:
                break
            h = acts[i]
            _, m, d, t = bufs[i - 1]
            nat.matmul(dz, plan[i][0].weight.data, out=d)
            act = plan[i - 1][1]
            if act == "relu" and lk is not None:
                lk.mask_colsum(d, m, gviews[L + i - 1])  # d *= m and its column sums
                summed = True
            elif act == "relu":
                d *= m
            elif act == "tanh":  # 1 - tanh^2
                nat.multiply(h, h, out=t)
                nat.subtract(1, t, out=t)
                d *= t
            elif act == "sigmoid":  # s (1 - s)
                nat.subtract(1, h, out=t)
                t *= h
                d *= t
            dz = d
        if self._tensors[0].grad is not gviews[0]:  # e.g. after zero_grad()
            for t, g in zip(self._tensors, gviews):
                t.grad = g
        if alpha:
            # the L2 gradient and value are taken inside the optimizer's blocked pass
            c = alpha / l2n
            return value + self._stepper(c) * (0.5 * c)
        self._stepper()
        return value

    def take(self, A, idx, key):
        """Rows ``idx`` of ``A`` into a reused buffer (native) or a new array."""
        if self.nat is None:
            return self.xp.take(A, idx, axis=0)
        shp = (idx.shape[0],) + tuple(A.shape[1:])
        b = self._buf.get(key)
        if b is None or tuple(b.shape) != shp or b.dtype != A.dtype:
            b = self._buf[key] = self.xp.empty(shp, dtype=A.dtype, device=_ns.device_of(A))
        return A.take(idx, axis=0, out=b)  # the method: no Python wrapper

    def _portable(self, Xb, Tb, wb, alpha, l2n):
        xp = self.xp
        acts, a = [Xb], Xb
        for lin, act in self.plan:
            h = a @ lin.weight.data.T + lin.bias.data
            if act == "relu":
                h = _ns.mask_multiply(xp, h, h > 0)
            elif act == "tanh":
                h = xp.tanh(h)
            elif act == "sigmoid":
                h = _sigmoid(xp, h)
            acts.append(h)
            a = h
        value, dz = self._head(a, Tb, wb, Xb.shape[0], native=False)
        L = len(self.plan)
        for i in range(L - 1, -1, -1):
            lin = self.plan[i][0]
            lin.weight.grad = dz.T @ acts[i]
            lin.bias.grad = xp.sum(dz, axis=0)
            if i == 0:
                break
            h = acts[i]
            d = dz @ lin.weight.data
            act = self.plan[i - 1][1]
            if act == "relu":
                d = _ns.mask_multiply(xp, d, h > 0)
            elif act == "tanh":
                d = d * (1 - h * h)
            elif act == "sigmoid":
                d = d * (h * (1 - h))
            dz = d
        if alpha:
            c = alpha / l2n
            for lin, _ in self.plan:
                W = lin.weight
                flat = xp.reshape(W.data, (-1,))
                value = value + xp.vecdot(flat, flat) * (0.5 * c)
                W.grad = W.grad + c * W.data
        self.opt.step()
        return value

    # -- losses: value and gradient with respect to the network's output ---------------
    def _head(self, z, T, w, n, native):
        xp = self.xp
        if self.head == "softmax":
            return self._softmax(z, T, w, n, native)
        if self.head == "logistic":
            x = z[:, 0]
            t = xp.astype(T, x.dtype)
            e = xp.exp(-xp.abs(x))
            per = xp.maximum(x, 0.0) - x * t + xp.log1p(e)
            g = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)) - t
            value = xp.mean(per if w is None else per * w)
            g = g * (1.0 / n) if w is None else g * (w / n)
            return value, xp.reshape(g, (n, 1))
        # squared: half the mean over samples and outputs
        k = z.shape[1]
        diff = z - T
        if w is None:
            return xp.mean(diff * diff) * 0.5, diff * (1.0 / (n * k))
        per = xp.mean(diff * diff, axis=1) * 0.5
        return xp.mean(per * w), diff * xp.reshape(w * (1.0 / (n * k)), (n, 1))

    def _softmax(self, z, T, w, n, native):
        xp = self.xp
        if native:
            nat = self.nat
            k = z.shape[1]
            e = self._buf.get(("e", n))
            if e is None:
                e = self._buf[("e", n)] = xp.empty(z.shape, dtype=z.dtype,
                                                   device=_ns.device_of(z))
            if self._host:
                # NumPy: shift by the overall maximum (one reduction instead of one per
                # row, which costs several times more on narrow rows); shift again by each
                # row's maximum in the rare case a row underflowed entirely. A NaN fails
                # the test too, and then propagates to the loss, where it is caught.
                z -= z.max()
                nat.exp(z, out=e)
                se = self._add_reduce(e, axis=1, keepdims=True)
                if not se.min() > 1e-30:
                    z -= z.max(axis=1, keepdims=True)
                    nat.exp(z, out=e)
                    se = self._add_reduce(e, axis=1, keepdims=True)
            else:
                z -= xp.max(z, axis=1, keepdims=True)  # z is our own buffer
                nat.exp(z, out=e)
                se = self._add_reduce(e, axis=1, keepdims=True)
            off = self._rows.get((n, k))
            if off is None:
                off = self._rows[(n, k)] = nat.arange(n) * k
            flat = off + T  # positions of the targets in the flattened (n, k) arrays
            zt = nat.reshape(z, (-1,)).take(flat)
            per = nat.log(se[:, 0])
            per -= zt
            e /= se
            ef = nat.reshape(e, (-1,))
            ef[flat] -= 1
            if w is None:
                e *= 1.0 / n
                return self._add_reduce(per, axis=0) * (1.0 / n), e
            e *= xp.reshape(w * (1.0 / n), (n, 1))
            per *= w
            return self._add_reduce(per, axis=0) * (1.0 / n), e
        zs = z - xp.max(z, axis=1, keepdims=True)  # rows shifted by their maximum
        e = xp.exp(zs)
        se = xp.sum(e, axis=1, keepdims=True)
        tt = xp.astype(xp.expand_dims(T, axis=1) == xp.arange(z.shape[1],
                                                              device=_ns.device_of(z)),
                       z.dtype)
        per = xp.log(se[:, 0]) - xp.sum(tt * zs, axis=1)
        g = e / se - tt
        if w is None:
            return xp.mean(per), g * (1.0 / n)
        return xp.mean(per * w), g * xp.reshape(w * (1.0 / n), (n, 1))
