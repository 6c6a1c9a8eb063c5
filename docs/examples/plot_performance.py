"""
Performance at a glance
=======================

An MLP epoch (Adam, float32, 20 minibatches) on a 2-core CPU, as measured by
``xpdl bench`` and stored in ``docs/results/``: xpdl against PyTorch CPU and scikit-learn,
side by side in one run (2026-12-04), and xpdl running on PyTorch's arrays against
PyTorch's own training loop. Lower is faster; 1 is the peer's time.
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
results = None
for base in (here.parent / "results", Path.cwd() / "docs" / "results", Path.cwd() / "results"):
    f = base / "cpu_bench_backends_2026-12-04_g.json"
    if f.exists():
        results = json.loads(f.read_text())
        break

sizes = [f"{'-'.join(map(str, r['layers']))}\n(batch {r['batch']})" for r in results]


def row(r, runner):
    return next(row for row in r["rows"] if row["runner"] == runner)


vs_torch = [row(r, "xpdl[numpy]")["ratio_to"]["torch[cpu]"] for r in results]
vs_sk = [row(r, "xpdl[numpy]")["ratio_to"]["sklearn"] for r in results]
on_torch = [row(r, "xpdl[torch]")["ratio_to"]["torch[cpu]"] for r in results]
x = np.arange(len(sizes))
fig, ax = plt.subplots(figsize=(8, 3.6))
ax.bar(x - 0.27, vs_torch, 0.27, label="xpdl (NumPy) / PyTorch CPU")
ax.bar(x, vs_sk, 0.27, label="xpdl (NumPy) / scikit-learn")
ax.bar(x + 0.27, on_torch, 0.27, label="xpdl on torch / PyTorch CPU")
ax.axhline(1.0, color="k", lw=0.8)
ax.set_xticks(x, sizes)
ax.set_ylabel("time ratio (lower: xpdl faster)")
ax.set_ylim(0, 1.4)
ax.legend(loc="upper left", ncols=3, fontsize="small")
fig.tight_layout()
