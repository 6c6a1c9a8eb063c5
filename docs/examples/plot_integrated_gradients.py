"""
Integrated gradients on the digits
==================================

Which pixels make an MLP say "3"? Integrated gradients attribute the logit to the input
pixels (their sum equals the logit's change from a blank image: completeness).
"""

import matplotlib.pyplot as plt
import numpy as np

import xpdl
from xpdl.datasets import load_digits
from xpdl.explain import integrated_gradients

X, y = load_digits(dtype=np.float64)
X = X / 16
clf = xpdl.MLPClassifier((32,), max_iter=30, learning_rate=1e-2, random_state=0,
                         n_iter_no_change=5).fit(X, y)
threes = X[y == 3][:4]
attr = integrated_gradients(clf, threes, target=3, n_steps=100)

fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
lim = np.abs(attr).max()
for i in range(4):
    axes[0, i].imshow(threes[i].reshape(8, 8), cmap="gray_r")
    axes[1, i].imshow(attr[i].reshape(8, 8), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0, i].set_axis_off()
    axes[1, i].set_axis_off()
axes[0, 0].set_title("input", loc="left")
axes[1, 0].set_title("attribution to '3'", loc="left")
fig.tight_layout()
