"""Multilayer perceptrons with scikit-learn's interface."""

from __future__ import annotations

import numbers

from .. import functional as F
from .. import losses as L
from . import _validation as V
from ._base import ClassifierMixin, NetworkEstimator, RegressorMixin

_DOC_PARAMS = """
    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (100,)
        Widths of the hidden layers.
    activation : {"relu", "tanh", "sigmoid"}, default "relu"
        Hidden activation; ReLU layers get He initialisation, the others Glorot.
    optimizer : {"adam", "sgd", "gd", "adamw", "rmsprop", "adagrad"}, default "adam"
        Update rule (PyTorch's equations, see :mod:`xpdl.optim`). ``"gd"`` is gradient
        descent: one step per epoch on all samples (``batch_size`` is not used), as the
        linear models' ``solver="gd"``; ``"sgd"`` the same rule on minibatches.
    learning_rate : float, default 1e-3
    batch_size : int, "auto" or None, default 200
        Minibatch size (capped at n_samples); ``None`` is full batch. Batches are reshuffled
        every epoch from the seeded generator.
    max_iter : int, default 200
        Number of epochs (per ``fit`` call).
    alpha : float, default 1e-4
        L2 penalty :math:`\\tfrac{\\alpha}{2 n_b}\\sum \\|W\\|^2` on the weights (not the
        biases), as in scikit-learn.
    dropout : float, default 0.0
        Dropout probability after each hidden activation.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified for classifiers), stop when
        the validation score has not improved by ``tol`` for ``n_iter_no_change`` epochs, and
        restore the best weights.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 10
    tol : float, default 1e-4
        Without early stopping, training stops when the loss has not decreased by ``tol``
        for ``n_iter_no_change`` epochs.
    warm_start : bool, default False
        ``fit`` continues from the fitted state.
    random_state : int or None
        Seeds initial weights, shuffling, dropout masks and the validation split.
    verbose : bool, default False
        Show a progress bar with the loss per epoch.
    dtype : dtype, "float32", "float64" or None
        None keeps a floating input's dtype and makes other inputs float32.
    dp_noise_multiplier, dp_max_grad_norm, dp_delta : DP-SGD settings (``None`` is off); see
        :mod:`xpdl.privacy`. With DP, ``fit`` runs exactly ``max_iter`` epochs (no stop on
        ``tol``) and ``early_stopping`` is refused.

    Attributes
    ----------
    module_ : xpdl.nn.Sequential
        The network from inputs to raw outputs (logits for classifiers).
    coefs_ : list of arrays of shape (n_in, n_out)
    intercepts_ : list of arrays of shape (n_out,)
    loss_curve_ : list of float
        Training loss per epoch (with the L2 term).
    loss_ : float
        The last of ``loss_curve_``.
    n_layers_ : int
        ``len(hidden_layer_sizes) + 2``.
    n_outputs_ : int
        Output units (1 for two classes or one target).
    out_activation_ : str
        ``"logistic"``, ``"softmax"`` or ``"identity"``.
    validation_scores_ : list of float or None
    best_loss_ : float or None
    n_iter_ : int
        Epochs run in total.
    t_ : int
        Training samples seen by the solver over all fits, as scikit-learn's (a
        minibatch solver's epoch adds the training rows; a DP-SGD step adds its Poisson
        batch's size). Files of format 2 did not record it: it counts from their load on.
    n_features_in_ : int
    epsilon_ : float
        Privacy spent by every DP-SGD step the parameters went through, at ``dp_delta``
        (composed over warm and incremental fits whose settings changed; infinite once the
        model has been trained on data without DP). Absent if never trained with DP.
"""


class _MLP(NetworkEstimator):
    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam",
                 learning_rate=1e-3, batch_size=200, max_iter=200, alpha=1e-4, dropout=0.0,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 tol=1e-4, warm_start=False, random_state=None, verbose=False, dtype=None,
                 dp_noise_multiplier=None, dp_max_grad_norm=1.0, dp_delta=1e-5):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.alpha = alpha
        self.dropout = dropout
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.dtype = dtype
        self.dp_noise_multiplier = dp_noise_multiplier
        self.dp_max_grad_norm = dp_max_grad_norm
        self.dp_delta = dp_delta

    def _check_common_params(self):
        super()._check_common_params()
        if self.activation not in ("relu", "tanh", "sigmoid"):
            raise ValueError(f"xpdl: activation must be 'relu', 'tanh' or 'sigmoid', got "
                             f"{self.activation!r}")
        self._layer_sizes(0, 0)

    _architecture = ("hidden_layer_sizes", "activation", "dropout")

    def _layer_sizes(self, n_in, n_out):
        """``(n_in, *hidden_layer_sizes, n_out)``, or ``ValueError`` for sizes that are not
        positive ints (checked by fit and by load, before anything is allocated)."""
        sizes = self.hidden_layer_sizes
        if len(getattr(sizes, "shape", ())) == 1 and hasattr(sizes, "tolist"):
            sizes = sizes.tolist()  # a 1-d array (scikit-learn takes array-likes)
        if isinstance(sizes, str) or not isinstance(sizes, (numbers.Integral, tuple, list)):
            raise ValueError(f"xpdl: hidden_layer_sizes must be a tuple of positive ints, got "
                             f"{sizes!r}")
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        if any(not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 1
               for s in sizes):
            raise ValueError(f"xpdl: hidden_layer_sizes must be positive ints, got "
                             f"{self.hidden_layer_sizes!r}")
        return (n_in, *(int(s) for s in sizes), n_out)

    def _build_layers(self, n_in, n_out):
        return self._make_layers(self._layer_sizes(n_in, n_out), self.activation, self.dropout)

    @property
    def coefs_(self):
        V.check_is_fitted(self)
        return [m.weight.data.T for m in self.module_ if hasattr(m, "weight")]

    @property
    def intercepts_(self):
        V.check_is_fitted(self)
        return [m.bias.data for m in self.module_ if hasattr(m, "weight")]

    @property
    def loss_(self):
        """The last epoch's training loss, with the L2 term (``loss_curve_[-1]``)."""
        V.check_is_fitted(self)
        return self.loss_curve_[-1] if self.loss_curve_ else None

    @property
    def n_layers_(self):
        """Layers counted as scikit-learn does: input, hidden and output."""
        return len(self.coefs_) + 1

    @property
    def n_outputs_(self):
        """Output units: 1 for two classes and for one target, else one per class or
        target."""
        return int(self.coefs_[-1].shape[1])

    @property
    def out_activation_(self):
        """``"logistic"`` (two classes), ``"softmax"`` (more) or ``"identity"``
        (regression), as scikit-learn names the output function."""
        if not self._is_classifier:
            V.check_is_fitted(self)
            return "identity"
        return "logistic" if self.n_outputs_ == 1 else "softmax"


class MLPClassifier(ClassifierMixin, _MLP):
    __doc__ = ("Multilayer perceptron classifier (softmax cross-entropy; one logistic output "
               "for two classes).\n" + _DOC_PARAMS + """
    classes_ : array of shape (n_classes,)

    Examples
    --------
    >>> from xpdl import MLPClassifier
    >>> from xpdl.datasets import make_classification
    >>> X, y = make_classification(200, 5, random_state=0)
    >>> clf = MLPClassifier((16,), max_iter=300, learning_rate=1e-2, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """)

    _is_classifier = True


class MLPRegressor(RegressorMixin, _MLP):
    __doc__ = ("Multilayer perceptron regressor (loss: half the mean squared error, identity "
               "output).\n" + _DOC_PARAMS)

    _is_classifier = False

    def _target_ndim(self, y):
        # a column y is one target, as in scikit-learn's MLPRegressor (it warns, and
        # predicts shape (n_samples,)); LinearRegression keeps the column, as its does
        if y.ndim == 2 and y.shape[1] == 1:
            V.warn_column_y()
            return 1
        return y.ndim

    def _per_sample_loss(self, out, T, reduction="none"):
        if reduction == "mean":  # mean over samples and outputs, one fused node
            return L.mse(out, T) * 0.5
        return F.mean(L.mse(out, T, reduction="none"), axis=1) * 0.5
