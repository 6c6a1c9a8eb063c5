"""
Training curves and the same model on two backends
==================================================

An MLP on the bundled digits, trained on NumPy and on ``array_api_strict`` (the Array API
standard's reference implementation, standing in for any other backend) from the same
seed: the loss curves lie on top of each other, because every random draw comes from one
seeded host generator and the arithmetic is the same standard code.
"""

import matplotlib.pyplot as plt
import numpy as np

import xpdl
from xpdl.datasets import load_digits

X, y = load_digits()
X = (X / 16).astype(np.float64)
kw = dict(hidden_layer_sizes=(32,), learning_rate=1e-2, max_iter=30, random_state=0,
          n_iter_no_change=10**6, early_stopping=True)
runs = {"NumPy": xpdl.MLPClassifier(**kw).fit(X, y)}
try:
    import array_api_strict as xps

    runs["array_api_strict"] = xpdl.MLPClassifier(**kw).fit(xps.asarray(X), xps.asarray(y))
except ImportError:
    pass

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
for (name, m), style in zip(runs.items(), ["-", "--"]):
    ax1.plot(m.loss_curve_, style, label=name)
    ax2.plot(m.validation_scores_, style, label=name)
ax1.set(xlabel="epoch", ylabel="training loss", yscale="log")
ax2.set(xlabel="epoch", ylabel="validation accuracy")
ax1.legend()
fig.tight_layout()
if len(runs) == 2:
    a, b = runs.values()
    print("largest loss difference between the backends:",
          float(np.max(np.abs(np.subtract(a.loss_curve_, b.loss_curve_)))))
