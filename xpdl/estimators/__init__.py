"""scikit-learn-compatible estimators that fit on any Array API backend."""

from .linear import LinearRegression
from .logistic import LogisticRegression
from .mlp import MLPClassifier, MLPRegressor

__all__ = ["LinearRegression", "LogisticRegression", "MLPClassifier", "MLPRegressor"]
