"""
Linear regression, done right
=============================

The article this project grew from teaches linear regression with gradient descent on
100 samples of ``y = 3 X [0.5, 0.8] + 0.5 noise`` -- and its code lets a ``(100, 1)``
prediction broadcast against a ``(100,)`` target, silently fitting a ``(100, 100)`` error.
xpdl's losses refuse mismatched shapes; here is the fit it meant, by gradient descent and
in closed form, with the loss curve.
"""

import matplotlib.pyplot as plt
import numpy as np

import xpdl

g = np.random.default_rng(42)
X = g.normal(size=(100, 2))
y = 3 * X @ np.array([0.5, 0.8]) + 0.5 * g.normal(size=100)

gd = xpdl.LinearRegression(solver="gd", fit_intercept=False, learning_rate=0.1,
                           max_iter=1500, tol=0.0).fit(X, y)
exact = xpdl.LinearRegression(fit_intercept=False).fit(X, y)
print("gradient descent:", np.round(gd.coef_, 4), " closed form:", np.round(exact.coef_, 4))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
pred = X @ exact.coef_
ax1.scatter(pred, y, s=12, alpha=0.7)
lim = [min(pred.min(), y.min()), max(pred.max(), y.max())]
ax1.plot(lim, lim, "k--", lw=1)
ax1.set(xlabel=r"fitted $X\theta$", ylabel="y", title="fit (closed form)")
ax2.semilogy(gd.loss_curve_)
ax2.set(xlabel="iteration", ylabel="half mean squared error", title="gradient descent")
fig.tight_layout()
