r"""Dask arrays: the estimators on data larger than one machine's memory.

There is one implementation: every chunk goes through the estimators' own code as an
in-memory array of the chunks' namespace (NumPy, or CuPy for a GPU cluster); Dask — the
threaded scheduler, or a ``dask.distributed`` cluster when a ``Client`` is active — moves
the data. Fitted parameters are concrete arrays of the chunks' namespace, so a model fitted
on Dask is an ordinary model (``save``, ``load``, ``.to()``) that also predicts on Dask.

- **Prediction** (``predict``, ``predict_proba``, ``decision_function``): ``map_blocks`` of
  the estimator's method over X's row chunks: lazy, chunked like X, the graph holding X and a
  parameters-only copy of the estimator. ``score`` reduces the lazy predictions.
- **LinearRegression(solver="lstsq")**: one pass over X: every chunk gives its weighted
  count, means and centred Gram and cross products, combined pairwise (the parallel update
  of Chan, Golub and LeVeque) into those of the whole data; the :math:`p\times p` (ridge)
  normal equations are solved on the client. When they are ill conditioned, a second pass
  forms the R factor of the centred data by a blockwise tall-skinny QR, and the solution is
  that of the in-memory SVD path applied to R (:math:`X_c = QR` has R's singular values).
- **LogisticRegression(solver="lbfgs")**: X, the encoded labels and the weights are
  persisted once; each objective evaluation is one distributed reduction of the per-chunk
  loss sums and gradients, so the iterates are those of the in-memory L-BFGS.
- **Minibatch solvers and MLPs**: chunks are streamed to the client in an order drawn from
  the estimator's seeded generator, the next chunk fetched while the current one trains,
  rows shuffled inside a chunk; the client holds about two chunks and the model. With one
  chunk the fit is the in-memory fit. Full-batch ``"gd"`` sums the gradients over the
  chunks before its one step. Early stopping holds out whole chunks.

Checks run inside the pass that reads the data: NaN or infinity in any chunk raises the
usual ``ValueError``; X and y (or ``sample_weight``) of different lengths or chunking, X
not chunked by rows only, and Dask mixed with another namespace are clear errors.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

from .. import _namespace as _ns
from .. import functional as F
from ..autodiff.tensor import Tensor
from . import _validation as V

__all__ = ["is_dask"]


def is_dask(x) -> bool:
    """True for a Dask array (checked without importing Dask)."""
    t = type(x)
    return t.__name__ == "Array" and t.__module__.startswith("dask.array")


def _modules():
    import dask
    import dask.array as da

    return dask, da


# -- inputs -------------------------------------------------------------------------------
def check_X(est, X, *, reset):
    """Check a Dask X (2-D, rows chunked only, numeric); with ``reset`` take the estimator's
    namespace, device and dtype from its chunks."""
    if not reset:
        V.check_is_fitted(est)
    if X.ndim != 2:
        raise ValueError(f"xpdl: Expected 2D array, got {X.ndim}D array instead (shape "
                         f"{X.shape})")
    if len(X.chunks[1]) != 1:
        raise ValueError(f"xpdl: a Dask X must be chunked by rows only (one chunk across its "
                         f"{X.shape[1]} features, not {len(X.chunks[1])}); use "
                         f"X.rechunk({{1: -1}})")
    if X.shape[1] == 0:
        raise ValueError("xpdl: Found array with 0 feature(s) while a minimum of 1 is "
                         "required.")
    meta = X._meta
    xp = _ns.array_namespace(meta)
    V.check_X_dtype(xp, X.dtype)
    if reset:
        est._xp = xp
        est._device = _ns.device_of(meta)
        est._dtype = _ns.resolve_float_dtype(meta, xp, est._device, est.dtype)
        est.n_features_in_ = int(X.shape[1])
        return
    if xp is not est._xp:
        raise TypeError(f"xpdl: {type(est).__name__} was fitted on {_ns.backend_name(est._xp)} "
                        f"arrays but X's chunks are {_ns.backend_name(xp)}; move the model "
                        f"with .to(xp=...)")
    if X.shape[1] != est.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
                         f"{est.n_features_in_} features as input.")


def _known(chunks):
    return not any(isinstance(c, float) and math.isnan(c) for c in chunks)


def _training_set(est, X, y, sample_weight, *, reset):
    """``X`` checked (:func:`check_X`), ``y`` and the weights aligned with its rows."""
    check_X(est, X, reset=reset)
    X, y = _rows_like(X, y, "y")
    if y is None:
        raise ValueError(f"xpdl: {type(est).__name__} requires y to be passed")
    X, w = _rows_like(X, sample_weight, "sample_weight")
    return X, y, w


def _rows_like(X, a, name):
    """``a`` (y or sample_weight) as a Dask array with X's row chunks (or None), and X
    (with its chunk sizes computed when ``a`` is in memory and X's are unknown)."""
    dask, da = _modules()
    if a is None:
        return X, None
    if is_dask(a):
        if a.numblocks[0] != X.numblocks[0] or (_known(X.chunks[0]) and _known(a.chunks[0])
                                                and a.chunks[0] != X.chunks[0]):
            if _known(X.chunks[0]) and _known(a.chunks[0]) and a.shape[0] != X.shape[0]:
                raise ValueError(f"xpdl: X has {X.shape[0]} samples but {name} has "
                                 f"{a.shape[0]}; they must match")
            raise ValueError(f"xpdl: X and {name} are chunked differently ({X.numblocks[0]} "
                             f"and {a.numblocks[0]} row chunks); rechunk {name} like X: "
                             f"{name}.rechunk({{0: X.chunks[0]}})")
        if a.ndim == 2 and len(a.chunks[1]) != 1:
            a = a.rechunk({1: -1})
        return X, a
    if _ns.is_array(a) and not _ns.is_host_array(a):
        raise TypeError(f"xpdl: X is a Dask array but {name} is a "
                        f"{_ns.backend_name(_ns.array_namespace(a))} array; pass {name} as a "
                        f"Dask or NumPy array")
    host = _ns.host_asarray(a)
    if not _known(X.chunks[0]):  # a new collection with the sizes; the caller's is untouched
        sizes = dask.compute(*[dask.delayed(len)(b) for b in _blocks(X)], optimize_graph=False)
        X = da.Array(X.dask, X.name, (tuple(int(v) for v in sizes), X.chunks[1]), meta=X._meta)
    if host.ndim == 0 or host.shape[0] != X.shape[0]:
        raise ValueError(f"xpdl: X has {X.shape[0]} samples but {name} has "
                         f"{host.shape[0] if host.ndim else 'a scalar'}; they must match")
    chunks = (X.chunks[0],) + tuple((s,) for s in host.shape[1:])
    return X, da.from_array(host, chunks=chunks)


def _blocks(a):
    """The row blocks of a Dask array as Delayed objects (None for None)."""
    return None if a is None else list(a.to_delayed(optimize_graph=False).ravel())


def _same_rows(xb, other, name):
    if other is not None and other.shape[0] != xb.shape[0]:
        raise ValueError(f"xpdl: a chunk of X has {xb.shape[0]} samples but the matching "
                         f"chunk of {name} has {other.shape[0]}; they must match")


def _labels(est, y, classes):
    """Find the classes in one pass over y (unless given) and set ``classes_``."""
    dask, da = _modules()
    if classes is None:
        if is_dask(y):
            uniq = da.unique(y).compute(optimize_graph=False)
        else:
            uniq = _ns.host_xp().unique_values(_ns.host_asarray(y))
        uniq = _ns.host_asarray(_ns.to_host(uniq) if not _ns.is_host_array(uniq) else uniq)
        V.validate_y_classification(est, uniq, uniq.shape[0], reset=True)
    else:
        first = _ns.host_asarray(classes)
        V.validate_y_classification(est, first, first.shape[0], reset=True, classes=first)


# -- prediction ---------------------------------------------------------------------------
_TRAINING_ONLY = ("_optimizer", "_rng", "_step_cache", "_dp_cache", "_best_params",
                  "loss_curve_", "validation_scores_")


def _predictor(est):
    """A copy of the fitted estimator without its training state: what a prediction graph
    carries to the workers (the parameters, classes and settings)."""
    m = object.__new__(type(est))
    m.__dict__.update({k: v for k, v in est.__dict__.items() if k not in _TRAINING_ONLY})
    return m


def _apply(block, model, method):
    return getattr(model, method)(block)


def predict(est, method, X):
    """``est.<method>`` on a Dask X: a lazy Dask array chunked like X by rows."""
    check_X(est, X, reset=False)
    model = _predictor(est)
    xp = est._xp
    probe = getattr(model, method)(xp.zeros((1, est.n_features_in_), dtype=est._dtype,
                                            device=est._device))
    meta = probe[:0, ...]
    if probe.ndim == 1:
        return X.map_blocks(_apply, model, method, dtype=probe.dtype, drop_axis=1, meta=meta)
    return X.map_blocks(_apply, model, method, dtype=probe.dtype,
                        chunks=(X.chunks[0], (probe.shape[1],)), meta=meta)


def score(est, X, y, sample_weight):
    """Accuracy or R² of a Dask X: the lazy predictions, y and the weights computed
    together (one pass), then scored on the host."""
    dask, _ = _modules()
    pred = est.predict(X)
    ys = y if is_dask(y) else _ns.host_asarray(y)
    ws = sample_weight
    pred, ys, ws = dask.compute(pred, ys, ws, optimize_graph=False)
    pred, ys = _ns.host_asarray(pred), _ns.host_asarray(ys)
    ws = None if ws is None else _ns.host_asarray(ws).astype(float)
    if ys.shape[0] != pred.shape[0]:
        raise ValueError(f"xpdl: X has {pred.shape[0]} samples but y has {ys.shape[0]}")
    if getattr(est, "_is_classifier", False):
        hit = (pred == ys).astype(float)
        return float(hit.mean() if ws is None else (hit * ws).sum() / ws.sum())
    from ._base import r2

    hxp = _ns.host_xp()
    return r2(hxp, ys.astype(float), pred.astype(float), ws)


# -- LinearRegression: one pass of moments, a tall-skinny QR when ill conditioned -----------
def _checked(xb, dtype, name="X"):
    xb = _ns.aligned(xb)
    xp = _ns.array_namespace(xb)
    if xb.dtype != dtype:
        xb = xp.astype(xb, dtype)
    V._check_finite(xp, xb, name)
    return xb


def _moments(xb, yb, wb, dtype, centre):
    """Weighted count, means and (centred) Gram and cross products of one chunk."""
    _same_rows(xb, yb, "y")
    _same_rows(xb, wb, "sample_weight")
    xb, yb = _checked(xb, dtype), _checked(yb, dtype, "y")
    xp = _ns.array_namespace(xb)
    if yb.ndim == 1:
        yb = xp.reshape(yb, (-1, 1))
    if wb is not None:
        wb = _checked(wb, dtype, "sample_weight")
        if bool(xp.any(wb < 0)):
            raise ValueError("xpdl: sample_weight has negative values")
    if xb.shape[0] == 0:
        return None
    n = float(xb.shape[0]) if wb is None else float(xp.sum(wb))
    if n == 0:
        return None
    if centre:
        mx = (xp.sum(xb, axis=0) if wb is None else xb.T @ wb) / n
        my = (xp.sum(yb, axis=0) if wb is None else yb.T @ wb) / n
        xb, yb = xb - mx, yb - my
    else:
        mx = my = None
    wx = xb if wb is None else xb * wb[:, None]
    return n, mx, my, wx.T @ xb, wx.T @ yb


def _combine(a, b):
    """Moments of the union of two chunks (Chan, Golub and LeVeque's pairwise update)."""
    if a is None or b is None:
        return a if b is None else b
    na, mxa, mya, Ga, Ba = a
    nb, mxb, myb, Gb, Bb = b
    n = na + nb
    if mxa is None:
        return n, None, None, Ga + Gb, Ba + Bb
    dx, dy = mxb - mxa, myb - mya
    f = na * nb / n
    return (n, mxa + dx * (nb / n), mya + dy * (nb / n), Ga + Gb + f * (dx[:, None] * dx),
            Ba + Bb + f * (dx[:, None] * dy))


def _tree(dask, items, fn):
    """Pairwise reduction of Delayed objects (depth log2 of their number)."""
    items = list(items)
    while len(items) > 1:
        nxt = [dask.delayed(fn)(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def _r_factor(xb, yb, wb, dtype, mx, my):
    """R of the weighted, centred chunk [X - x̄, Y - ȳ] (reduced QR)."""
    xb, yb = _checked(xb, dtype), _checked(yb, dtype, "y")
    xp = _ns.array_namespace(xb)
    if yb.ndim == 1:
        yb = xp.reshape(yb, (-1, 1))
    if xb.shape[0] == 0:
        return None
    Z = xp.concat([xb - mx, yb - my] if mx is not None else [xb, yb], axis=1)
    if wb is not None:
        Z = Z * xp.sqrt(xp.astype(wb, dtype))[:, None]
    return _r_of(xp, Z)


def _stack_r(a, b):
    if a is None or b is None:
        return a if b is None else b
    xp = _ns.array_namespace(a)
    return _r_of(xp, xp.concat([a, b], axis=0))


def _r_of(xp, Z):
    return xp.linalg.qr(Z, mode="reduced")[1]


def _count_rows(dask, blocks):
    """The number of rows of Dask row blocks whose sizes are unknown (one small pass)."""
    return int(sum(dask.compute(*[dask.delayed(len)(b) for b in blocks],
                                 optimize_graph=False)))


def fit_lstsq(est, X, y, sample_weight):
    """LinearRegression(solver="lstsq") on a Dask X."""
    dask, da = _modules()
    X, y, w = _training_set(est, X, y, sample_weight, reset=True)
    if y.ndim not in (1, 2):
        raise ValueError(f"xpdl: y must be 1-D or 2-D, got shape {y.shape}")
    dt, centre = est._dtype, bool(est.fit_intercept)
    xs, ys, ws = _blocks(X), _blocks(y), _blocks(w)
    parts = [dask.delayed(_moments)(xb, ys[i], None if ws is None else ws[i], dt, centre)
             for i, xb in enumerate(xs)]
    total = dask.compute(_tree(dask, parts, _combine), optimize_graph=False)[0]
    if total is None:
        raise ValueError("xpdl: X has no samples (or sample_weight sums to zero)")
    n, mx, my, G, B = total
    est._singular, est._fit_rows = None, int(round(n))
    alpha = float(est.alpha)
    k = B.shape[1]
    coef = None
    if n >= 2 * X.shape[1]:
        coef = est._solve_normal(G, B, alpha)
    if coef is None:  # ill conditioned: the R factor of the centred data, second pass
        rs = [dask.delayed(_r_factor)(xb, ys[i], None if ws is None else ws[i], dt, mx, my)
              for i, xb in enumerate(xs)]
        R = dask.compute(_tree(dask, rs, _stack_r), optimize_graph=False)[0]
        p = X.shape[1]
        coef = est._solve_svd(R[:p, :p], R[:p, p:], alpha, n_rows=int(round(n)))
    intercept = (my - mx @ coef) if centre else None
    est._store_lstsq(coef.T, intercept, k, y.ndim)
    return est


# -- LogisticRegression(solver="lbfgs"): one distributed reduction per evaluation ---------
def _encode(yb, classes):
    hxp = _ns.host_xp()
    h = _ns.host_asarray(_ns.to_host(yb) if not _ns.is_host_array(yb) else yb)
    V._check_label_values(h)
    idx = hxp.clip(hxp.searchsorted(classes, h), 0, classes.shape[0] - 1)
    if not bool(hxp.all(classes[idx] == h)):
        raise ValueError("xpdl: y contains labels that are not in classes_")
    return idx.astype("int64")


def _loss_grad(model, arrays, xb, tb, wb):
    """Sum over one chunk of the (weighted) per-sample losses and its gradient in the
    parameters: the in-memory objective's data term, chunk by chunk."""
    from ..autodiff.functions import value_and_grad

    xp = model._xp
    tb = _ns.from_host(tb, xp, device=_ns.device_of(xb))

    def f(*ps):
        out = F.linear(xb, ps[0], ps[1] if len(ps) > 1 else None)
        per = model._per_sample_loss(out, tb)
        return F.sum(per if wb is None else per * Tensor(wb))

    v, g = value_and_grad(f, argnums=tuple(range(len(arrays))))(*arrays)
    return float(v), [_ns.to_host(a) for a in g]


def fit_lbfgs(est, X, y, sample_weight, objective_terms):
    """LogisticRegression(solver="lbfgs") on a Dask X. ``objective_terms(total, e_w)``
    gives the penalty weight the in-memory fit uses; the data term is summed over chunks."""
    dask, da = _modules()
    X, y, w = _training_set(est, X, y, sample_weight, reset=True)
    _labels(est, y, None)
    classes = _ns.host_asarray(_ns.to_host(est.classes_) if not _ns.is_host_array(
        est.classes_) else est.classes_)
    k = classes.shape[0]
    dt = est._dtype
    Xc = X.map_blocks(_checked, dt, dtype=dt)
    T = y.map_blocks(_encode, classes, dtype="int64")
    wc = None if w is None else w.map_blocks(_checked, dt, "sample_weight", dtype=dt)
    Xc, T, wc = dask.persist(Xc, T, wc, optimize_graph=False)  # read and checked once
    n = X.shape[0] if _known(X.chunks[0]) else _count_rows(dask, _blocks(T))
    if wc is not None:
        neg, total = dask.compute((wc < 0).any(), wc.sum(), optimize_graph=False)
        if bool(neg):
            raise ValueError("xpdl: sample_weight has negative values")
        total = float(total)
        if not (math.isfinite(total) and total > 0):
            V._bad_weights()
        wc = wc * (n / total)  # mean 1, as in memory
    else:
        total = n
    est._n_outputs = 1 if k == 2 else k
    est.module_ = est._build_layers(X.shape[1], est._n_outputs)
    est._remember_fit_params()
    params = est.module_.parameters()
    reg = objective_terms(total, 0)
    model = _predictor(est)
    xs, ts = _blocks(Xc), _blocks(T)
    wsb = _blocks(wc)
    xp = est._xp

    def fun(arrays):
        host = [_ns.to_host(a) for a in arrays]
        parts = [dask.delayed(_loss_grad)(model, host, xb, ts[i],
                                          None if wsb is None else wsb[i])
                 for i, xb in enumerate(xs)]
        res = dask.compute(*parts, optimize_graph=False)
        value = sum(r[0] for r in res) / n
        grads = [sum(r[1][j] for r in res) / n for j in range(len(arrays))]
        grads = [_ns.from_host(g, xp, device=est._device, dtype=dt) for g in grads]
        W = arrays[0]
        value += float(xp.sum(W * W)) * reg
        grads[0] = grads[0] + (2 * reg) * W
        return value, grads

    from .lbfgs import minimize_lbfgs

    xs_opt, info = minimize_lbfgs(fun, [p.data for p in params], max_iter=est.max_iter,
                                  tol=est.tol, xp=xp)
    return est._store_lbfgs(params, xs_opt, info)


# -- streamed training: the minibatch solvers and the MLPs ---------------------------------
class Streamed:
    """Training data in a Dask array's row chunks, fetched one at a time (the next while the
    current trains) in an order drawn from the estimator's generator."""

    def __init__(self, est, X, y, w, n, weight_scale, order=None):
        self.est = est
        self.xs, self.ys, self.ws = _blocks(X), _blocks(y), _blocks(w)
        self.n = n
        self.scale = weight_scale
        self.order = list(range(len(self.xs))) if order is None else order

    def arrays(self):
        raise ValueError("xpdl: DP-SGD samples from the whole data set each step; it needs the "
                         "data in memory, not a Dask array")

    def _fetch(self, i):
        dask, _ = _modules()
        return dask.compute(self.xs[i], self.ys[i], None if self.ws is None else self.ws[i],
                            optimize_graph=False)

    def _ready(self, xb, yb, wb):
        est = self.est
        xb, yb = _ns.aligned(xb), _ns.aligned(yb)
        wb = None if wb is None else _ns.aligned(wb)
        _same_rows(xb, yb, "y")
        _same_rows(xb, wb, "sample_weight")
        xb = V.validate_X(est, xb, reset=False)
        T, _ = est._targets(yb, xb.shape[0], reset=False)
        if wb is not None:
            wb = V.validate_sample_weight(est, wb, xb.shape[0], normalize=False,
                                          rescale=False) * self.scale
        return xb, T, wb

    def head(self, m):
        X, T, w = self._ready(*self._fetch(self.order[0]))
        m = min(m, X.shape[0])
        return X[:m, ...], T[:m, ...], None if w is None else w[:m]

    def chunks(self, est):
        order = self.order
        if len(order) > 1:
            perm = est._rng.permutation(len(order))
            order = [order[int(i)] for i in perm]
        with ThreadPoolExecutor(max_workers=1) as pool:
            nxt = pool.submit(self._fetch, order[0])
            for j in range(len(order)):
                cur = nxt.result()
                if j + 1 < len(order):
                    nxt = pool.submit(self._fetch, order[j + 1])
                yield self._ready(*cur)

    def split(self, fraction, seed):
        """(training chunks, validation score function): ``fraction`` of the chunks, drawn
        with a generator seeded by ``random_state``, are held out."""
        from ..random import Generator

        nb = len(self.order)
        n_val = max(1, int(round(fraction * nb)))
        if nb < 2 or n_val >= nb:
            raise ValueError(f"xpdl: early_stopping on a Dask array holds out whole chunks: it "
                             f"needs at least 2 chunks (X has {nb})")
        perm = [int(i) for i in Generator(seed).permutation(nb)]
        val_idx, train_idx = sorted(perm[:n_val]), sorted(perm[n_val:])
        val = Streamed(self.est, None, None, None, 0, self.scale, order=val_idx)
        val.xs, val.ys, val.ws = self.xs, self.ys, self.ws
        train = Streamed(self.est, None, None, None, 0, self.scale, order=train_idx)
        train.xs, train.ys, train.ws = self.xs, self.ys, self.ws
        train.n = self._count(train_idx)
        return train, val.score

    def _count(self, idx):
        dask, _ = _modules()
        return _count_rows(dask, [self.ys[i] for i in idx])

    def score(self):
        """Validation score over the held-out chunks, streamed: accuracy, or R² from
        summed residuals and totals."""
        est = self.est
        xp = est._xp
        hits = count = 0.0
        res = sy = syy = None
        for i in self.order:
            X, T, _ = self._ready(*self._fetch(i))
            out = est._forward(X)
            if est._is_classifier:
                hits += float(xp.sum(xp.astype(est._indices(out) == T, est._dtype)))
            else:
                r = _ns.to_host(xp.sum((T - out) ** 2, axis=0))
                s1, s2 = _ns.to_host(xp.sum(T, axis=0)), _ns.to_host(xp.sum(T * T, axis=0))
                res = r if res is None else res + r
                sy = s1 if sy is None else sy + s1
                syy = s2 if syy is None else syy + s2
            count += X.shape[0]
        if est._is_classifier:
            return hits / count
        tot = syy - sy * sy / count
        scores = [1.0 - a / b if b > 0 else (1.0 if a == 0 else 0.0) for a, b in zip(res, tot)]
        return float(sum(scores) / len(scores))


def stream_source(est, X, y, sample_weight, *, reset, classes):
    """Check a Dask training set and wrap it for streaming; returns ``(Streamed, n_out)``."""
    dask, da = _modules()
    X, y, w = _training_set(est, X, y, sample_weight, reset=reset)
    if est._is_classifier:
        if reset or classes is not None:
            _labels(est, y, classes)
        k = est.classes_.shape[0]
        n_out = 1 if k == 2 else k
    else:
        if y.ndim not in (1, 2):
            raise ValueError(f"xpdl: y must be 1-D or 2-D, got shape {y.shape}")
        ndim = est._target_ndim(y)  # (a column y warns at every call, as scikit-learn's)
        if reset:
            est._y_ndim = ndim
        n_out = 1 if y.ndim == 1 else y.shape[1]
    dp = est._dp_on()
    if dp:
        raise ValueError("xpdl: DP-SGD samples from the whole data set each step; it needs "
                         "the data in memory, not a Dask array")
    n = X.shape[0] if _known(X.chunks[0]) else _count_rows(dask, _blocks(y))
    scale = 1.0
    if w is not None:  # the weights rescaled to mean 1 over all samples, as in memory
        # (checked here in one pass, as in memory: NaN or negative weights were reported
        # as "sums to zero" by the total)
        nan, inf, neg, total = dask.compute(da.isnan(w).any(), da.isinf(w).any(),
                                            (w < 0).any(), w.sum(), optimize_graph=False)
        if bool(nan) or bool(inf):
            raise ValueError(f"xpdl: Input sample_weight contains "
                             f"{'NaN' if bool(nan) else 'infinity'}.")
        if bool(neg):
            raise ValueError("xpdl: sample_weight has negative values")
        total = float(total)
        if not (math.isfinite(total) and total > 0):
            V._bad_weights()
        scale = n / total
    return Streamed(est, X, y, w, int(n), scale), n_out
