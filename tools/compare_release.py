"""Whole fits against an earlier commit of xpdl (#15.3: a fit's probabilities match the
previous release's to 1e-8 in float64).

    python tools/compare_release.py [REV]     # default: the last commit before the engine

Checks REV out into a temporary git worktree, fits the same float64 models on the bundled
digits in that tree and in this one (each in its own interpreter), and prints the largest
difference of ``predict_proba`` (``predict`` for the regressor) per model. Exits 1 when
one exceeds 1e-8 (or the fits fail in this tree), 2 when the old tree cannot run its fits
in this environment. Needs git and the repository's history.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BEFORE_ENGINE = "3e5d517~1"  # the commit before "Autodiff nodes are data (#15.1/5)"
TOL = 1e-8

# (name, estimator, parameters): every optimizer, activation, dropout, early stopping, L2,
# DP-SGD, logistic and MLP regression
FITS = [
    ("mlp adam relu", "MLPClassifier", dict(hidden_layer_sizes=(32,), max_iter=15)),
    ("mlp sgd tanh 2 layers", "MLPClassifier",
     dict(hidden_layer_sizes=(16, 16), activation="tanh", optimizer="sgd", max_iter=15)),
    ("mlp sigmoid dropout early stopping", "MLPClassifier",
     dict(hidden_layer_sizes=(24,), activation="sigmoid", dropout=0.2, early_stopping=True,
          max_iter=15)),
    ("mlp rmsprop alpha=1e-2 batch 64", "MLPClassifier",
     dict(hidden_layer_sizes=(20,), optimizer="rmsprop", alpha=1e-2, batch_size=64,
          max_iter=10)),
    ("mlp adagrad", "MLPClassifier",
     dict(hidden_layer_sizes=(20,), optimizer="adagrad", max_iter=10)),
    ("mlp dp-sgd", "MLPClassifier",
     dict(hidden_layer_sizes=(20,), dp_noise_multiplier=1.0, max_iter=5)),
    ("logistic regression", "LogisticRegression", dict(max_iter=30)),
    ("mlp regressor", "MLPRegressor", dict(hidden_layer_sizes=(16,), max_iter=15)),
]


def _fit(tree, out):
    """In a child interpreter: the fits with ``tree``'s xpdl, written to ``out`` as JSON."""
    sys.path.insert(0, tree)
    import warnings

    import numpy as np

    import xpdl.estimators as est
    from xpdl.datasets import load_digits

    assert Path(est.__file__).resolve().is_relative_to(Path(tree).resolve()), est.__file__
    X, y = load_digits()
    X, y = np.asarray(X, dtype=np.float64)[:600] / 16, np.asarray(y)[:600]
    res = {}
    for seed, (name, cls, kw) in enumerate(FITS):
        m = getattr(est, cls)(random_state=seed, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (convergence warnings of these short fits)
            if cls == "MLPRegressor":
                res[name] = np.asarray(m.fit(X, y.astype(np.float64)).predict(X)).tolist()
            else:
                res[name] = np.asarray(m.fit(X, y).predict_proba(X)).tolist()
    Path(out).write_text(json.dumps(res))


def main():
    import numpy as np

    rev = sys.argv[1] if len(sys.argv) > 1 else BEFORE_ENGINE
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "-q", "--detach", str(old),
                        rev], check=True)
        try:
            got = {}
            for label, tree in (("old", old), ("new", here)):
                out = Path(tmp) / f"{label}.json"
                run = subprocess.run([sys.executable, __file__, "--fit", str(tree), str(out)],
                                     capture_output=True, text=True)
                if run.returncode:
                    print(f"the fits failed in the {label} tree:\n{run.stderr[-2000:]}")
                    # 2: the old release does not run in this environment (nothing compared)
                    return 2 if label == "old" else 1
                got[label] = json.loads(out.read_text())
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force",
                            str(old)], check=False)
    worst = 0.0
    print(f"{'fit':<40} max |new - {rev}|")
    for name, _, _ in FITS:
        d = float(np.max(np.abs(np.asarray(got["new"][name]) - np.asarray(got["old"][name]))))
        worst = max(worst, d)
        print(f"{name:<40} {d:.3g}")
    print(f"largest difference {worst:.3g} (tolerance {TOL:g})")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fit":
        _fit(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
