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
    """Training produced a non-finite loss. The estimator keeps its last finite parameters.

    Attributes
    ----------
    epoch : int
        The epoch (1-based) whose loss was not finite.
    loss : float
    """

    def __init__(self, epoch, loss, learning_rate=None):
        self.epoch = epoch
        self.loss = loss
        lr = "" if learning_rate is None else f" (now {learning_rate})"
        super().__init__(f"xpdl: training diverged at epoch {epoch}: the loss is {loss}. "
                         f"Lower the learning rate{lr}; the estimator keeps the parameters of "
                         f"the last finite epoch")
