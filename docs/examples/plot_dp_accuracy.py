"""
Differential privacy: accuracy against epsilon
==============================================

DP-SGD on the digits: each sample's gradient is clipped to norm 1 and Gaussian noise is
added. More noise buys a smaller privacy loss epsilon (at delta = 1e-5, from the RDP
accountant) and costs accuracy on held-out data.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np

import xpdl
from xpdl.datasets import load_digits

X, y = load_digits()
X = X / 16
g = np.random.default_rng(0)
idx = g.permutation(len(y))
tr, te = idx[:1400], idx[1400:]
points = []
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # max_iter reached: few epochs on purpose
    for sigma in (0.6, 0.8, 1.2, 2.0, 4.0):
        clf = xpdl.MLPClassifier((64,), batch_size=64, max_iter=10, learning_rate=1e-2,
                                 dp_noise_multiplier=sigma, dp_max_grad_norm=1.0,
                                 random_state=0).fit(X[tr], y[tr])
        points.append((clf.epsilon_, clf.score(X[te], y[te]), sigma))
    plain = xpdl.MLPClassifier((64,), batch_size=64, max_iter=10, learning_rate=1e-2,
                               random_state=0).fit(X[tr], y[tr]).score(X[te], y[te])

eps, acc, sig = map(np.array, zip(*points))
fig, ax = plt.subplots(figsize=(6, 3.6))
ax.plot(eps, acc, "o-", label="DP-SGD")
for e, a, s in points:
    ax.annotate(f"σ={s}", (e, a), textcoords="offset points", xytext=(4, -12), fontsize=8)
ax.axhline(plain, color="k", ls="--", lw=1, label="without DP")
ax.set(xscale="log", xlabel=r"$\varepsilon$ ($\delta=10^{-5}$)", ylabel="test accuracy")
ax.legend()
fig.tight_layout()
