"""xpdl's exceptions."""

from __future__ import annotations

__all__ = ["NotFittedError", "DivergenceError"]


try:  # be scikit-learn's NotFittedError where it is installed, so its tools recognise ours
    from sklearn.exceptions import NotFittedError as _Base
except ImportError:  # pragma: no cover
    class _Base(ValueError, AttributeError):
        pass


class NotFittedError(_Base):
    """An estimator was used before ``fit`` (a ``ValueError`` and an ``AttributeError``, like
    scikit-learn's)."""


class DivergenceError(FloatingPointError):
    """Training diverged: an epoch's loss was not finite, or, while finite, more than 1,000
    times the untrained model's loss on the training data.

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
        if untrained_loss and loss == loss and abs(loss) != float("inf"):
            what = (f"the loss grew to {loss:.4g}, {loss / untrained_loss:.2g} times the untrained "
                    f"model's {untrained_loss:.4g}")
        else:
            what = f"the loss is {loss}"
        super().__init__(f"xpdl: training diverged at epoch {epoch}: {what}. Lower the "
                         f"learning rate{lr}; the estimator is back at its parameters from "
                         f"before the diverging epochs")
