"""``xpdl`` command line: ``info``, ``train`` and ``bench``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

BACKENDS = ("numpy", "cupy", "torch", "jax")


class CLIError(Exception):
    """An error reported as one line and a non-zero exit."""


def _namespace(backend):
    try:
        if backend == "numpy":
            import array_api_compat.numpy as xp

            return xp, None
        if backend == "torch":
            import array_api_compat.torch as xp
            import torch

            return xp, torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if backend == "cupy":
            import array_api_compat.cupy as xp
            import cupy

            cupy.cuda.runtime.getDeviceCount()
            return xp, cupy.cuda.Device(0)
        if backend == "jax":
            import jax
            import jax.numpy as xp

            jax.config.update("jax_enable_x64", True)
            return xp, jax.devices()[0]
    except Exception as exc:  # ImportError, CUDA errors
        extra = {"cupy": "gpu", "torch": "torch", "jax": "jax"}.get(backend, backend)
        raise CLIError(f"backend {backend!r} is not available here ({exc.__class__.__name__}: "
                       f"{exc}); install it, e.g. pip install 'xpdl[{extra}]'") from None
    raise CLIError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


# -- info ------------------------------------------------------------------------------
def cmd_info(args):
    import xpdl

    print(f"xpdl {xpdl.__version__}  (Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()})")
    for mod in ("numpy", "array_api_compat", "safetensors", "tqdm",
                "scikit-learn", "array_api_strict"):
        name = "sklearn" if mod == "scikit-learn" else mod
        try:
            print(f"  {mod:18} {importlib.import_module(name).__version__}")
        except Exception:
            print(f"  {mod:18} not installed")
    from . import _compiled

    nv = _compiled.version()
    print(f"  {'numba':18} " + (f"{nv} (compiled kernels on NumPy)" if nv else
                                "not in use (pip install xpdl[fast] for compiled kernels "
                                "on NumPy)"))
    print("backends:")
    for b in BACKENDS + ("array_api_strict",):
        try:
            if b == "array_api_strict":
                import array_api_strict as s

                devs = [str(d) for d in s.__array_namespace_info__().devices()]
            else:
                xp, _ = _namespace(b)
                with warnings.catch_warnings():  # torch warns about device types it lists
                    warnings.simplefilter("ignore")
                    found = xp.__array_namespace_info__().devices()
                # the devices arrays can live on (not JAX's None, not torch's data-less meta)
                devs = [str(d) for d in found if d is not None and str(d) != "meta"]
            print(f"  {b:18} available; devices: {', '.join(devs)}")
        except Exception as exc:
            msg = str(exc).split(";")[0]
            print(f"  {b:18} not available ({msg})")
    return 0


# -- data ------------------------------------------------------------------------------
def _load_dataset(spec, label_column):
    if spec == "digits":
        from .datasets import load_digits

        X, y = load_digits(dtype=np.float64)
        return X / 16.0, y, "digits (bundled, 1797 8x8 images, scaled to [0, 1])"
    if not os.path.exists(spec):
        raise CLIError(f"dataset {spec!r} not found (use 'digits', a .csv or a .npz file)")
    if spec.endswith(".npz"):
        try:
            with np.load(spec, allow_pickle=False) as z:
                if "X" not in z or "y" not in z:
                    raise CLIError(f"{spec}: an .npz dataset needs arrays named 'X' and 'y'")
                return np.asarray(z["X"], dtype=np.float64), np.asarray(z["y"]), spec
        except (ValueError, OSError) as exc:
            raise CLIError(f"{spec}: cannot read .npz ({exc})") from None
    if spec.endswith(".csv"):
        try:
            with open(spec) as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"--dataset {spec}: cannot read it ({exc})") from None
        if not lines:
            raise CLIError(f"--dataset {spec}: the file is empty")
        first = lines[0]
        if "," not in first and (";" in first or "\t" in first):
            sep = ";" if ";" in first else "a tab"
            raise CLIError(f"--dataset {spec}: columns are separated by {sep}; xpdl reads "
                           f"comma-separated files (convert it, e.g. with pandas: "
                           f"pd.read_csv(path, sep=...).to_csv(out, index=False))")
        try:
            [float(v) for v in first.strip().split(",")]
            skip = 0
        except ValueError:
            skip = 1
        if len(lines) <= skip:
            raise CLIError(f"--dataset {spec}: only a header line, no data rows")
        width = len(first.split(","))
        for i, ln in enumerate(lines[skip:], start=skip + 1):
            cells = ln.split(",")
            if len(cells) != width:
                raise CLIError(f"--dataset {spec}: line {i} has {len(cells)} cells, line 1 "
                               f"has {width}")
            if any(c.strip() == "" for c in cells):
                raise CLIError(f"--dataset {spec}: line {i} has an empty cell (column "
                               f"{[c.strip() for c in cells].index('') + 1}); fill or drop it")
        try:
            data = np.loadtxt(spec, delimiter=",", skiprows=skip, dtype=str, ndmin=2)
        except ValueError as exc:
            raise CLIError(f"--dataset {spec}: cannot parse CSV ({exc})") from None
        col = label_column if label_column >= 0 else data.shape[1] + label_column
        if not 0 <= col < data.shape[1]:
            raise CLIError(f"{spec}: label column {label_column} is out of range for "
                           f"{data.shape[1]} columns")
        y = data[:, col]
        try:
            X = np.delete(data, col, axis=1).astype(np.float64)
        except ValueError:
            raise CLIError(f"{spec}: feature columns must be numeric") from None
        try:
            yf = y.astype(np.float64)
            y = yf.astype(np.int64) if np.all(yf == np.round(yf)) else yf
        except ValueError:
            pass  # string labels
        return X, y, spec
    raise CLIError(f"dataset {spec!r}: expected 'digits', a .csv or an .npz file")


def _check_dataset(X, y, spec):
    """One line naming what does not fit (before the split indexes past a short y)."""
    if y.ndim != 1:
        raise CLIError(f"--dataset {spec}: y must hold one label per row (1-D), got shape "
                       f"{y.shape}")
    if X.ndim == 0 or X.shape[0] != y.shape[0]:
        rows = "a 0-d X" if X.ndim == 0 else f"X has {X.shape[0]} rows"
        raise CLIError(f"--dataset {spec}: {rows} but y has {y.shape[0]} labels")
    if y.shape[0] < 2:
        raise CLIError(f"--dataset {spec}: {y.shape[0]} samples; training and testing need "
                       f"at least 2")


def _is_large(spec):
    return spec.endswith(".npy") or os.path.isdir(spec)


def _load_large(spec, label_column, chunk_rows):
    """A 2-D ``.npy`` file (or a folder of them, stacked in name order) memory-mapped and
    read in chunks of ``chunk_rows`` rows as a Dask array: ``(X, y, description)``."""
    try:
        import dask.array as da
    except ImportError:
        raise CLIError(".npy datasets are read out of core with Dask: pip install "
                       "'xpdl[dask]'") from None
    files = sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.endswith(".npy")) \
        if os.path.isdir(spec) else [spec]
    if not files:
        raise CLIError(f"{spec}: no .npy files in this folder")
    parts = []
    for f in files:
        try:
            mm = np.load(f, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CLIError(f"{f}: cannot read .npy ({exc})") from None
        if mm.ndim != 2 or mm.shape[1] < 2 or mm.dtype.kind not in "biuf":
            raise CLIError(f"{f}: expected a 2-D numeric array with the label in a column, "
                           f"got shape {mm.shape} and dtype {mm.dtype}")
        parts.append(da.from_array(mm, chunks=(chunk_rows, -1)))
    widths = {p.shape[1] for p in parts}
    if len(widths) != 1:
        raise CLIError(f"{spec}: the .npy files have different column counts {sorted(widths)}")
    A = parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)
    col = label_column if label_column >= 0 else A.shape[1] + label_column
    if not 0 <= col < A.shape[1]:
        raise CLIError(f"{spec}: label column {label_column} is out of range for "
                       f"{A.shape[1]} columns")
    keep = [c for c in range(A.shape[1]) if c != col]
    desc = f"{spec} ({A.shape[0]:,} x {A.shape[1] - 1} features, {A.numblocks[0]} chunks, " \
           f"out of core)"
    return A[:, keep], A[:, col], desc


def _cluster(args):
    """A dask.distributed Client for --workers/--scheduler (None: Dask's threads)."""
    if not args.workers and not args.scheduler:
        return None
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CLIError("--workers/--scheduler need dask.distributed: pip install "
                       "'xpdl[dask]'") from None
    if args.scheduler:
        return Client(args.scheduler)
    return Client(LocalCluster(n_workers=args.workers, threads_per_worker=1,
                               dashboard_address=None))


def _train_large(args):
    """``xpdl train`` on a dataset larger than memory (see :func:`_load_large`)."""

    from xpdl.random import Generator

    X, y, desc = _load_large(args.dataset, args.label_column, args.chunk_rows)
    regression = args.model == "linear"
    y = y.astype(np.float64 if regression else np.int64)
    nb = X.numblocks[0]
    if nb < 2:
        raise CLIError(f"{args.dataset}: one chunk of {args.chunk_rows} rows holds all of it; "
                       f"lower --chunk-rows so whole chunks can be held out for testing")
    test = sorted(int(i) for i in Generator(args.seed).permutation(nb)[:max(1, nb // 5)])
    train = [i for i in range(nb) if i not in test]

    def rows(a, idx):
        import dask.array as da

        return da.concatenate([a.blocks[i] for i in idx], axis=0)

    Xtr, ytr, Xte, yte = rows(X, train), rows(y, train), rows(X, test), rows(y, test)
    _check_outputs(args)
    model = _model(args, early_stopping=len(train) >= 2)
    client = _cluster(args)
    where = "threads" if client is None else f"cluster {client.scheduler.address}"
    print(f"xpdl train: {args.model} on {desc}; {len(train)} train / {len(test)} test chunks; "
          f"Dask ({where})")
    try:
        _fit_and_report(args, model, Xtr, ytr, Xte, yte, regression)
    finally:
        if client is not None:
            cluster = client.cluster if args.workers else None
            client.close()
            if cluster is not None:
                cluster.close()
    return 0


def _fit_and_report(args, model, Xtr, ytr, Xte, yte, regression):
    """Fit, print the time and the test score, save (and plot) the model."""
    import warnings

    import xpdl

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(Xtr, ytr)
    dt = time.perf_counter() - t0
    score = model.score(Xte, yte)
    what = "R^2" if regression else "accuracy"
    print(f"trained in {dt:.1f} s ({getattr(model, 'n_iter_', 1)} epochs); "
          f"test {what}: {score:.4f}")
    xpdl.save(model, args.out)
    print(f"saved the model to {os.path.abspath(args.out)}")
    if args.plot:
        _plot(model, args.plot)
        print(f"saved the curves to {os.path.abspath(args.plot)}")


def _model(args, early_stopping=True):
    import xpdl

    if args.model == "mlp":
        return xpdl.MLPClassifier((args.hidden,), learning_rate=args.lr, max_iter=args.epochs,
                                  batch_size=args.batch_size, early_stopping=early_stopping,
                                  n_iter_no_change=max(10, args.epochs), verbose=True,
                                  random_state=args.seed)
    if args.model == "logistic":
        model = xpdl.LogisticRegression(solver="adam", learning_rate=args.lr * 10,
                                        max_iter=args.epochs, batch_size=args.batch_size,
                                        random_state=args.seed)
        model.verbose = True
        return model
    return xpdl.LinearRegression(solver="lstsq")


# -- train -----------------------------------------------------------------------------
def _check_train_args(args):
    """Hyperparameters, checked before anything is loaded (exit code 2, flag named)."""
    for flag, value, ok in (("--epochs", args.epochs, args.epochs >= 1),
                            ("--hidden", args.hidden, args.hidden >= 1),
                            ("--batch-size", args.batch_size, args.batch_size >= 1),
                            ("--lr", args.lr, args.lr > 0 and args.lr == args.lr
                             and args.lr != float("inf")),
                            ("--chunk-rows", args.chunk_rows, args.chunk_rows >= 1)):
        if not ok:
            raise CLIError(f"{flag} must be {'positive' if flag == '--lr' else 'at least 1'}, "
                           f"got {value}")
    if args.model == "linear" and args.dataset == "digits":
        raise CLIError("--model linear fits a regression, but the digits dataset is a "
                       "classification task (10 classes): use --model mlp or --model logistic, "
                       "or give --dataset a file with a numeric target")


def _check_outputs(args):
    """Where the model (and the plot) go, checked before training: an existing file is not
    overwritten without --force, the folder must be writable, --plot needs matplotlib."""
    targets = [("--out", args.out)] + ([("--plot", args.plot)] if args.plot else [])
    for flag, path in targets:
        full = os.path.abspath(path)
        folder = os.path.dirname(full)
        if os.path.isdir(full):
            raise CLIError(f"{flag} {path}: is a folder; give a file name")
        if os.path.exists(full) and not args.force:
            raise CLIError(f"{flag} {path} exists; pass --force to overwrite it")
        if not os.path.isdir(folder):
            raise CLIError(f"{flag} {path}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise CLIError(f"{flag} {path}: the folder {folder} is not writable")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise CLIError("--plot needs matplotlib: pip install 'xpdl[plot]'")


def cmd_train(args):
    from xpdl import _namespace as ns
    from xpdl.random import Generator

    _check_train_args(args)
    if _is_large(args.dataset):
        return _train_large(args)
    if args.workers or args.scheduler:
        raise CLIError("--workers/--scheduler train on a .npy file or folder (out of core); "
                       "in-memory datasets train here")
    X, y, desc = _load_dataset(args.dataset, args.label_column)
    _check_dataset(X, y, args.dataset)
    regression = args.model == "linear"
    g = Generator(args.seed)
    train, test = g.split_indices(X.shape[0], 0.2, None if regression else y)
    xp, dev = _namespace(args.backend)
    Xtr = ns.from_host(X[train], xp, device=dev, dtype=xp.float32)
    Xte = ns.from_host(X[test], xp, device=dev, dtype=xp.float32)
    numeric = y.dtype.kind in "biuf"
    ytr, yte = y[train], y[test]
    if numeric:
        ytr = ns.from_host(ytr, xp, device=dev, dtype=xp.float32 if regression else xp.int64)
        yte = ns.from_host(yte, xp, device=dev, dtype=xp.float32 if regression else xp.int64)
    _check_outputs(args)
    model = _model(args)
    print(f"xpdl train: {args.model} on {desc}; {len(train)} train / {len(test)} test "
          f"samples; backend {args.backend}" + (f" ({dev})" if dev is not None else ""))
    _fit_and_report(args, model, Xtr, ytr, Xte, yte, regression)
    return 0


def _plot(model, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError("--plot needs matplotlib: pip install 'xpdl[plot]'") from None
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    curve = getattr(model, "loss_curve_", []) or []
    ax[0].plot(range(1, len(curve) + 1), curve)
    ax[0].set(xlabel="epoch", ylabel="training loss", title="Loss")
    val = getattr(model, "validation_scores_", None) or []
    ax[1].plot(range(1, len(val) + 1), val, color="C1")
    ax[1].set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- bench -----------------------------------------------------------------------------
def cmd_bench(args):
    from .bench import format_table, run_benchmark

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    vs = [v.strip() for v in args.vs.split(",") if v.strip()]
    unknown = sorted(set(vs) - {"torch", "sklearn"})
    if unknown:
        raise CLIError(f"--vs: unknown peer(s) {unknown}; choose from torch, sklearn")
    for peer, mod in (("torch", "torch"), ("sklearn", "sklearn")):
        if peer in vs and importlib.util.find_spec(mod) is None:
            print(f"xpdl bench: peer {peer!r} is not installed; its rows are left out",
                  file=sys.stderr)
    pause = 0.3
    if args.quick:
        args.sizes, args.batches, args.repeats, pause = "small", 5, 1, 0.0
    out = []
    for size in [] if args.sizes == "none" else args.sizes.split(","):
        size = size.strip()
        from .bench import SIZES

        if size not in SIZES:
            raise CLIError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
        res = run_benchmark(backends, vs, size=size, n_batches=args.batches,
                            repeats=args.repeats, log=lambda m: print(m, file=sys.stderr),
                            tape=args.tape, ufuncs=args.ufuncs, pause=pause)
        print(format_table(res))
        print()
        out.append(res)
    if args.dask:
        from .bench_dask import format_dask_table, run_dask_benchmark

        res = run_dask_benchmark(rows=args.dask_rows, chunk=max(1, args.dask_rows // 10),
                                 repeats=args.repeats, log=lambda m: print(m, file=sys.stderr))
        print(format_dask_table(res))
        out.append(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def build_parser():
    from xpdl import __version__

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="xpdl", description="Deep learning on the Array API "
                                "standard: NumPy, CuPy, PyTorch, JAX.", formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"xpdl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, importable backends and their devices",
                   formatter_class=fmt)
    t = sub.add_parser("train", help="train a model (default: an MLP on the bundled digits)",
                       formatter_class=fmt)
    t.add_argument("--model", choices=("mlp", "logistic", "linear"), default="mlp",
                   help="mlp: MLPClassifier; logistic: LogisticRegression; linear: "
                        "LinearRegression (a numeric target)")
    t.add_argument("--dataset", default="digits",
                   help="'digits' (bundled), a .csv/.npz file with a label column, or a 2-D "
                        ".npy file (or a folder of them) read out of core with Dask")
    t.add_argument("--chunk-rows", type=int, default=100_000,
                   help="rows per chunk for .npy datasets")
    t.add_argument("--workers", type=int, default=0,
                   help="train a .npy dataset on a local dask.distributed cluster of N "
                        "workers")
    t.add_argument("--scheduler", default=None,
                   help="train a .npy dataset on the dask.distributed cluster at ADDRESS")
    t.add_argument("--label-column", type=int, default=-1,
                   help="CSV column holding the labels (default: the last)")
    t.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="where the arrays live and the work runs")
    t.add_argument("--epochs", type=int, default=60, help="passes over the training data")
    t.add_argument("--hidden", type=int, default=100, help="hidden units of the MLP")
    t.add_argument("--lr", type=float, default=3e-3, help="learning rate (Adam)")
    t.add_argument("--batch-size", type=int, default=64, help="samples per minibatch")
    t.add_argument("--seed", type=int, default=0,
                   help="seeds the split, the initial weights and the batch order")
    t.add_argument("--out", default="model.safetensors",
                   help="where to save the trained model (safetensors + JSON metadata)")
    t.add_argument("--force", action="store_true",
                   help="overwrite --out (and --plot) if the file exists")
    t.add_argument("--plot", default=None, help="save loss/accuracy curves (matplotlib)")
    b = sub.add_parser("bench", help="side-by-side training benchmark", formatter_class=fmt)
    b.add_argument("--quick", action="store_true",
                   help="a 10-second check: small size, 5 batches, 1 round, no pauses")
    b.add_argument("--backends", default="numpy", help="comma-separated xpdl backends")
    b.add_argument("--vs", default="torch,sklearn", help="peers: torch, sklearn")
    b.add_argument("--sizes", default="medium",
                   help="small, medium, large (comma-separated), or none (with --dask)")
    b.add_argument("--batches", type=int, default=20, help="minibatches per epoch")
    b.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians)")
    b.add_argument("--json", default=None, help="also write the results as JSON")
    b.add_argument("--tape", action="store_true",
                   help="also time the same training through the autodiff tape")
    b.add_argument("--ufuncs", action="store_true",
                   help="also time NumPy without the compiled kernels (numba)")
    b.add_argument("--dask", action="store_true",
                   help="also time the fits on a Dask array on a LocalCluster, beside "
                        "dask-ml and the in-memory fit (see xpdl.bench_dask)")
    b.add_argument("--dask-rows", type=int, default=1_000_000,
                   help="rows of the Dask benchmark's X (100 features, 10 chunks)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return {"info": cmd_info, "train": cmd_train, "bench": cmd_bench}[args.command](args)
    except BrokenPipeError:  # e.g. `xpdl info | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except CLIError as exc:
        print(f"xpdl: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, FloatingPointError) as exc:
        print(f"xpdl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
