"""xpdl's exceptions."""

from __future__ import annotations

import math
import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

__all__ = ["NotFittedError", "DivergenceError"]  # noqa: F822 (NotFittedError: module __getattr__)


def _not_fitted_error():
    """Made on first use, so that ``import xpdl`` does not import scikit-learn: where it is
    installed the class subclasses scikit-learn's NotFittedError (its tools recognise ours);
    elsewhere it is a ``ValueError`` and an ``AttributeError``, like scikit-learn's."""
    try:
        from sklearn.exceptions import NotFittedError as base
    except ImportError:  # pragma: no cover - exercised only without scikit-learn
        bases = (ValueError, AttributeError)
    else:
        bases = (base,)
    return type("NotFittedError", bases, {
        "__doc__": "An estimator was used before ``fit`` (a ``ValueError`` and an "
                   "``AttributeError``; scikit-learn's ``NotFittedError`` where it is "
                   "installed).",
        "__module__": __name__})


def __getattr__(name):
    if name == "NotFittedError":
        cls = globals()["NotFittedError"] = _not_fitted_error()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DivergenceError(FloatingPointError):
    """Training diverged: an epoch's loss was not finite, or, while finite, more than 1,000
    times the untrained model's loss on the training data. The message suggests a lower
    learning rate, or, when the untrained model's loss is already not finite (inputs or
    targets too large for the dtype), scaling the data.

    The estimator goes back to the start of the last epoch whose loss was within 10 times
    the untrained model's (parameters, optimizer state, step counters, random generator;
    ``n_iter_ == len(loss_curve_)``), so a warm continuation at a lower learning rate trains
    from there.

    Attributes
    ----------
    epoch : int
        The epoch (1-based) whose loss diverged.
    loss : float
    """

    def __init__(self, epoch, loss, learning_rate=None, untrained_loss=None):
        self.epoch = epoch
        self.loss = loss
        lr = "" if learning_rate is None else f" (now {learning_rate})"
        fix = f"Lower the learning rate{lr}"
        if untrained_loss is not None and not math.isfinite(untrained_loss):
            # the data overflow before any update: no learning rate helps
            what = (f"the loss is {loss}, and the untrained model's loss on the training data "
                    f"is already {untrained_loss}")
            fix = ("The inputs or targets are too large for the model's floating dtype: "
                   "scale them (say with scikit-learn's StandardScaler)")
        elif untrained_loss and math.isfinite(loss):
            what = (f"the loss grew to {loss:.4g}, {loss / untrained_loss:.2g} times the untrained "
                    f"model's {untrained_loss:.4g}")
        else:
            what = f"the loss is {loss}"
        super().__init__(f"xpdl: training diverged at epoch {epoch}: {what}. {fix}; the "
                         f"estimator is back at its parameters from before the diverging "
                         f"epochs")


def _warn(message, category):
    """``warnings.warn`` pointing at the first caller outside xpdl (the user's ``fit``
    line, or scikit-learn's when it drives the estimator), however deep inside xpdl the
    warning arises, as pandas' ``find_stack_level`` does."""
    frame, level = sys._getframe(0), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
