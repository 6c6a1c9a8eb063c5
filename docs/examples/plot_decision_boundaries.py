"""
Decision boundaries: logistic regression and an MLP
===================================================

Two interleaved half-moons: a linear model draws a straight boundary, a small MLP bends
it. Both are xpdl estimators with scikit-learn's interface.
"""

import matplotlib.pyplot as plt
import numpy as np

import xpdl

g = np.random.default_rng(0)
t = g.uniform(0, np.pi, 200)
X = np.concatenate([np.stack([np.cos(t), np.sin(t)], 1),
                    np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)]) + 0.12 * g.normal(size=(400, 2))
y = np.repeat([0, 1], 200)

models = {"LogisticRegression": xpdl.LogisticRegression().fit(X, y),
          "MLPClassifier (32, 32)": xpdl.MLPClassifier((32, 32), learning_rate=1e-2,
                                                       max_iter=300, random_state=0).fit(X, y)}
xx, yy = np.meshgrid(np.linspace(-1.5, 2.5, 200), np.linspace(-1, 1.5, 150))
grid = np.stack([xx.ravel(), yy.ravel()], 1)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
for ax, (name, m) in zip(axes, models.items()):
    p = m.predict_proba(grid)[:, 1].reshape(xx.shape)
    ax.contourf(xx, yy, p, levels=20, cmap="RdBu_r", alpha=0.6)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", s=8, edgecolor="k", linewidth=0.2)
    ax.set_title(f"{name}: accuracy {m.score(X, y):.2f}")
fig.tight_layout()
