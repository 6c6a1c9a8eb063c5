"""The Dask rows of ``xpdl bench --dask``: fits on a Dask array side by side with dask-ml.

On a ``LocalCluster`` of single-threaded workers, with X (``rows`` x ``features`` float64,
chunked by ``chunk`` rows) persisted on the workers first, each round times, one after the
other:

- ``bound``: ``X.T @ X`` and ``X.T @ y`` computed together (the least a one-pass linear
  regression can do);
- ``xpdl lstsq``: ``LinearRegression().fit``; ``dask-ml linear``: dask-ml's default
  ``LinearRegression``; ``numpy lstsq``: the same fit on the NumPy array in memory;
- ``xpdl lbfgs`` / ``dask-ml lbfgs``: logistic regression with L-BFGS on labels ``y > 0``;
- ``xpdl mlp epoch``: one epoch of ``MLPClassifier((64,))`` streamed from the chunks,
  ``numpy mlp epoch`` the same epoch in memory, ``dask-ml Incremental`` one pass of
  scikit-learn's ``MLPClassifier((64,))`` through ``dask_ml.wrappers.Incremental``.

Ratios are medians over rounds of the per-round ratios; the accuracy of each fit is kept
(the largest coefficient difference to the NumPy fit, and the training accuracy).
"""

from __future__ import annotations

import importlib.util
import statistics
import time
import warnings

from . import _namespace as _ns
from .random import Generator

__all__ = ["run_dask_benchmark", "format_dask_table"]


def run_dask_benchmark(rows=1_000_000, features=100, chunk=100_000, workers=2, repeats=3,
                       log=print, peers=True):
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    from .estimators import LinearRegression, LogisticRegression, MLPClassifier

    hxp = _ns.host_xp()  # data made on the host, as a user's NumPy arrays would be
    g = Generator(0)
    Xh = g.normal((rows, features), dtype="float64")
    yh = Xh @ g.normal((features,), dtype="float64") + 0.1 * g.normal((rows,), dtype="float64")
    yc = hxp.astype(yh > 0, hxp.int64)
    have_dml = peers and importlib.util.find_spec("dask_ml") is not None
    times, notes = {}, {}
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as lc, \
            Client(lc):
        X = da.from_array(Xh, chunks=(chunk, features)).persist()
        y = da.from_array(yh, chunks=chunk).persist()
        ycd = da.from_array(yc, chunks=chunk).persist()
        ref = LinearRegression().fit(Xh, yh)

        def bound():
            dask.compute(X.T @ X, X.T @ y)

        def xpdl_lstsq():
            m = LinearRegression().fit(X, y)
            diff = float(hxp.max(hxp.abs(m.coef_ - ref.coef_)))
            notes["xpdl lstsq"] = f"max |coef - numpy| {diff:.1e}"

        def numpy_lstsq():
            LinearRegression().fit(Xh, yh)

        def xpdl_lbfgs():
            m = LogisticRegression().fit(X, ycd)
            notes["xpdl lbfgs"] = f"accuracy {m.score(X, ycd):.4f}, {m.n_iter_} iterations"

        mlp = MLPClassifier((64,), batch_size=200, random_state=0)
        mlp_mem = MLPClassifier((64,), batch_size=200, random_state=0)

        def xpdl_mlp():
            mlp.partial_fit(X, ycd, classes=[0, 1])

        def numpy_mlp():
            mlp_mem.partial_fit(Xh, yc, classes=[0, 1])

        jobs = [("bound", bound), ("xpdl lstsq", xpdl_lstsq), ("numpy lstsq", numpy_lstsq),
                ("xpdl lbfgs", xpdl_lbfgs), ("xpdl mlp epoch", xpdl_mlp),
                ("numpy mlp epoch", numpy_mlp)]
        if have_dml:
            import dask_ml.linear_model as dml
            from dask_ml.wrappers import Incremental
            from sklearn.neural_network import MLPClassifier as SkMLP

            def dml_linear():
                m = dml.LinearRegression().fit(X, y)
                notes["dask-ml linear"] = \
                    f"max |coef - numpy| {float(hxp.max(hxp.abs(m.coef_ - ref.coef_))):.1e}"

            def dml_lbfgs():
                m = dml.LogisticRegression(solver="lbfgs").fit(X, ycd)
                notes["dask-ml lbfgs"] = f"accuracy {float((m.predict(X) == ycd).mean()):.4f}"

            inc = Incremental(SkMLP((64,), batch_size=200, random_state=0))

            def dml_incremental():
                inc.partial_fit(X, ycd, classes=[0, 1])

            jobs += [("dask-ml linear", dml_linear), ("dask-ml lbfgs", dml_lbfgs),
                     ("dask-ml Incremental", dml_incremental)]
        for name, _ in jobs:
            times[name] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for r in range(repeats):
                for name, f in jobs:
                    t0 = time.perf_counter()
                    f()
                    times[name].append(time.perf_counter() - t0)
                log(f"round {r + 1}/{repeats}: " +
                    ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    def paired(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    pairs = {"xpdl lstsq": ["bound", "numpy lstsq", "dask-ml linear"],
             "xpdl lbfgs": ["dask-ml lbfgs"],
             "xpdl mlp epoch": ["numpy mlp epoch", "dask-ml Incremental"]}
    out = []
    for name in times:
        row = {"runner": name, "seconds": statistics.median(times[name]),
               "times": times[name], "note": notes.get(name, ""),
               "ratio_to": {p: paired(name, p) for p in pairs.get(name, []) if p in times}}
        out.append(row)
    return {"rows_data": rows, "features": features, "chunk": chunk, "workers": workers,
            "repeats": repeats, "rows": out}


def format_dask_table(res):
    head = (f"Dask: X {res['rows_data']:,} x {res['features']} float64 in "
            f"{res['chunk']:,}-row chunks, persisted on {res['workers']} single-threaded "
            f"workers; medians of {res['repeats']} rounds (ratios: median per-round ratio)")
    lines = [head]
    for r in res["rows"]:
        ratios = ", ".join(f"{v:.2f}x {k}" for k, v in r["ratio_to"].items())
        lines.append(f"  {r['runner']:>20}  {r['seconds']:8.3f} s  {ratios:<48} {r['note']}")
    return "\n".join(lines)
