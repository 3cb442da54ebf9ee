"""Loss functions and their derivatives with respect to the prediction.

Each loss comes as a pair of functions with the tutorial's names
(``mse``/``mse_prime``, ...) and as a class with ``__call__`` (the loss),
``gradient`` and a fused ``value_and_gradient``, which
:meth:`cyconv.Sequential.fit` uses.  Every loss is a mean, so its size does
not depend on the batch size.
"""

import numpy as np

from .._kernels import _losses
from .._validation import as_array, float_dtype

__all__ = [
    "Loss",
    "MeanSquaredError",
    "BinaryCrossEntropy",
    "SoftmaxCrossEntropy",
    "mse",
    "mse_prime",
    "binary_cross_entropy",
    "binary_cross_entropy_prime",
    "softmax_cross_entropy",
    "softmax_cross_entropy_prime",
    "get_loss",
]


def _prediction(y_pred):
    array = as_array(y_pred, "y_pred")
    array = np.asarray(array, dtype=float_dtype(array, "y_pred"))
    if array.size == 0:
        raise ValueError("y_pred must not be empty")
    return array


def _same_shape_target(y_true, y_pred):
    target = as_array(y_true, "y_true")
    float_dtype(target, "y_true")
    if target.shape != y_pred.shape:
        raise ValueError(f"y_true must have the shape of y_pred, {y_pred.shape}, "
                         f"got {target.shape}")
    return np.asarray(target, dtype=y_pred.dtype)


class Loss:
    """Base class of the losses: a scalar of ``(y_true, y_pred)`` and its
    gradient with respect to ``y_pred``.

    Subclasses implement :meth:`value_and_gradient`; ``accuracy`` says how
    predictions become classes, or returns None where that has no meaning.
    """

    name = None

    def __call__(self, y_true, y_pred):
        """Return the loss as a Python float."""
        return self.value_and_gradient(y_true, y_pred)[0]

    def gradient(self, y_true, y_pred):
        """Return d loss / d y_pred, shaped like ``y_pred``."""
        return self.value_and_gradient(y_true, y_pred)[1]

    def value_and_gradient(self, y_true, y_pred):
        raise NotImplementedError

    def accuracy(self, y_true, y_pred):
        """Fraction of samples classified correctly, or None for a regression."""
        return None

    def __repr__(self):
        return f"{type(self).__name__}()"


def _argmax_accuracy(y_true, y_pred):
    """Accuracy of (N, K) scores against labels (N,) or one-hot rows (N, K)."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_pred.ndim == 3 and y_pred.shape[2] == 1:
        # The tutorial's column vectors (N, K, 1), scored as rows (N, K).
        y_pred = y_pred[:, :, 0]
    if y_pred.ndim != 2 or y_pred.shape[1] < 2:
        return None
    labels = y_true if y_true.ndim == 1 else np.argmax(y_true.reshape(len(y_true), -1), axis=1)
    return float(np.mean(np.argmax(y_pred, axis=1) == labels))


class MeanSquaredError(Loss):
    """``mean((y_pred - y_true) ** 2)`` over every element.

    Examples
    --------
    >>> from cyconv.losses import MeanSquaredError
    >>> loss = MeanSquaredError()
    >>> loss([1.0, 2.0], [1.0, 4.0])
    2.0
    >>> loss.gradient([1.0, 2.0], [1.0, 4.0])
    array([0., 2.])
    """

    name = "mse"

    def value_and_gradient(self, y_true, y_pred):
        y_pred = _prediction(y_pred)
        error = y_pred - _same_shape_target(y_true, y_pred)
        return float(np.mean(error * error)), error * (2 / error.size)

    def accuracy(self, y_true, y_pred):
        return _argmax_accuracy(y_true, y_pred)


class BinaryCrossEntropy(Loss):
    """Mean binary cross-entropy of probabilities ``y_pred`` in (0, 1)
    against targets ``y_true`` in [0, 1].

    Parameters
    ----------
    epsilon : float, default 1e-7
        Predictions are clipped to ``[epsilon, 1 - epsilon]`` so that a
        confident wrong answer costs a large finite loss instead of inf; the
        gradient is taken at the clipped value.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.losses import BinaryCrossEntropy
    >>> loss = BinaryCrossEntropy()
    >>> round(loss([1.0, 0.0], [0.5, 0.5]), 4)   # log(2)
    0.6931
    >>> loss.gradient([1.0, 0.0], [0.5, 0.5])
    array([-1.,  1.])
    """

    name = "binary_cross_entropy"

    def __init__(self, epsilon=1e-7):
        if not 0 < epsilon < 0.5:
            raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon!r}")
        self.epsilon = float(epsilon)

    def value_and_gradient(self, y_true, y_pred):
        y_pred = _prediction(y_pred)
        target = _same_shape_target(y_true, y_pred)
        p = np.clip(y_pred, self.epsilon, 1 - self.epsilon)
        value = np.mean(-target * np.log(p) - (1 - target) * np.log1p(-p))
        gradient = ((1 - target) / (1 - p) - target / p) / p.size
        return float(value), gradient.astype(y_pred.dtype, copy=False)

    def accuracy(self, y_true, y_pred):
        y_true = np.asarray(y_true)
        y_pred = np.asarray(y_pred)
        if y_pred.ndim in (2, 3) and y_pred.shape[1] > 1 and y_pred.shape[2:] in ((), (1,)):
            return _argmax_accuracy(y_true, y_pred)
        return float(np.mean((y_pred > 0.5) == (y_true > 0.5)))


# Batches of at most this many labels are checked in Python rather than
# with numpy's calls (see SoftmaxCrossEntropy._target).
_FEW_LABELS = 8
# The kernel's stand-ins for no probabilities (labels given) and no labels.
_NO_TARGET = {np.dtype(dtype).char: np.empty((0, 0), dtype) for dtype in (np.float32, np.float64)}
_NO_LABELS = np.empty(0, np.intp)
for _array in (*_NO_TARGET.values(), _NO_LABELS):
    _array.flags.writeable = False
del _array


def _refuse_labels(labels, classes):
    raise ValueError(f"class labels must be in [0, {classes}), got values from "
                     f"{labels.min()} to {labels.max()}")


class SoftmaxCrossEntropy(Loss):
    """Cross-entropy of ``softmax(logits)`` against class labels, fused.

    ``y_pred`` holds unnormalised scores (logits), ``(N, K)`` or ``(K,)``;
    ``y_true`` holds integer labels ``(N,)`` (or one int) or class
    probabilities shaped like the logits (one-hot rows).  The loss is the
    mean over samples of ``logsumexp(z) - z[label]``, computed in double
    precision (whatever the logits' dtype) after shifting each row by its
    maximum, so that logits of any size give finite, accurate values; its
    gradient is ``(softmax(z) - one_hot) / N``, in the logits' dtype.  A
    class with target 0 adds nothing to the loss, even where its logit is
    -inf.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.losses import SoftmaxCrossEntropy
    >>> loss = SoftmaxCrossEntropy()
    >>> logits = np.array([[0.0, 0.0], [1000.0, 0.0]])
    >>> round(loss([0, 0], logits), 4)   # (log(2) + 0) / 2
    0.3466
    >>> loss.gradient([0, 0], logits)
    array([[-0.25,  0.25],
           [ 0.  ,  0.  ]])
    >>> loss.gradient(np.array([[1.0, 0.0], [1.0, 0.0]]), logits)
    array([[-0.25,  0.25],
           [ 0.  ,  0.  ]])
    """

    name = "softmax_cross_entropy"

    def value_and_gradient(self, y_true, y_pred):
        # A training step's call, a batch of logits and its labels as plain
        # arrays, in one compiled call that checks them itself; anything
        # else (and a subclass, whose _target may differ) the checks and
        # conversions below.
        if type(self) is SoftmaxCrossEntropy:
            done = _losses.by_labels(y_pred, y_true)
            if done is not None:
                return done
        logits = _prediction(y_pred)
        single = logits.ndim == 1
        z = logits[np.newaxis] if single else logits
        if z.ndim != 2:
            raise ValueError(f"logits must have shape (N, K) or (K,), got {logits.shape}")
        n, classes = z.shape
        target, labels = self._target(y_true, logits, single, n, classes)
        z = np.ascontiguousarray(z)
        gradient = np.empty(z.shape, z.dtype)
        # One pass per row in compiled code (_kernels/_losses.pyx): numpy's
        # ten expressions cost more than the arithmetic of a small batch.
        value = _losses.softmax_cross_entropy(z, target, labels, gradient, np.empty(classes))
        return value, gradient[0] if single else gradient

    @staticmethod
    def _target(y_true, logits, single, n, classes):
        """``(probabilities, labels)``: the targets as (N, K) probabilities in
        the logits' dtype and no labels, or as labels (N,) checked to lie in
        [0, K) and no probabilities (empty arrays stand for none)."""
        target = as_array(y_true, "y_true")
        float_dtype(target, "y_true")
        if target.shape == logits.shape:
            probabilities = np.ascontiguousarray(target, dtype=logits.dtype)
            return (probabilities[np.newaxis] if single else probabilities), _NO_LABELS
        label_shape = () if single else (n,)
        if target.shape == label_shape:
            if target.dtype.kind not in "iu":
                raise TypeError(f"class labels must be integers, got dtype {target.dtype}")
            labels = target.reshape(n)
            if n <= _FEW_LABELS:
                # numpy's reductions cost microseconds each, more than a few
                # labels take in Python.
                values = labels.tolist()
                if min(values) < 0 or max(values) >= classes:
                    _refuse_labels(labels, classes)
            elif labels.min() < 0 or labels.max() >= classes:
                _refuse_labels(labels, classes)
            return _NO_TARGET[logits.dtype.char], np.ascontiguousarray(labels, dtype=np.intp)
        raise ValueError(
            f"y_true must be integer labels of shape {label_shape} or "
            f"probabilities of the logits' shape {logits.shape}, got shape {target.shape}")

    def accuracy(self, y_true, y_pred):
        y_pred, y_true = np.asarray(y_pred), np.asarray(y_true)
        if y_pred.ndim == 1:
            # One sample: a label (scalar) or a row of probabilities.
            y_pred = y_pred[np.newaxis]
            y_true = y_true.reshape(1) if y_true.ndim == 0 else y_true[np.newaxis]
        return _argmax_accuracy(y_true, y_pred)


_MSE = MeanSquaredError()
_BCE = BinaryCrossEntropy()
_SOFTMAX_CE = SoftmaxCrossEntropy()


def mse(y_true, y_pred):
    """Mean squared error, ``mean((y_pred - y_true) ** 2)``.

    Examples
    --------
    >>> from cyconv.losses import mse, mse_prime
    >>> mse([0.0, 0.0], [1.0, 3.0])
    5.0
    >>> mse_prime([0.0, 0.0], [1.0, 3.0])
    array([1., 3.])
    """
    return _MSE(y_true, y_pred)


def mse_prime(y_true, y_pred):
    """Gradient of :func:`mse` with respect to ``y_pred``."""
    return _MSE.gradient(y_true, y_pred)


def binary_cross_entropy(y_true, y_pred):
    """Mean binary cross-entropy of probabilities (see :class:`BinaryCrossEntropy`).

    Examples
    --------
    >>> from cyconv.losses import binary_cross_entropy, binary_cross_entropy_prime
    >>> round(binary_cross_entropy([1.0], [0.9]), 4)
    0.1054
    >>> binary_cross_entropy_prime([1.0], [0.5])
    array([-2.])
    """
    return _BCE(y_true, y_pred)


def binary_cross_entropy_prime(y_true, y_pred):
    """Gradient of :func:`binary_cross_entropy` with respect to ``y_pred``."""
    return _BCE.gradient(y_true, y_pred)


def softmax_cross_entropy(y_true, logits):
    """Mean cross-entropy of ``softmax(logits)`` (see :class:`SoftmaxCrossEntropy`).

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.losses import softmax_cross_entropy, softmax_cross_entropy_prime
    >>> softmax_cross_entropy([0], np.array([[1e4, 0.0]]))
    0.0
    >>> softmax_cross_entropy_prime([1], np.array([[0.0, 0.0]]))
    array([[ 0.5, -0.5]])
    """
    return _SOFTMAX_CE(y_true, logits)


def softmax_cross_entropy_prime(y_true, logits):
    """Gradient of :func:`softmax_cross_entropy` with respect to the logits."""
    return _SOFTMAX_CE.gradient(y_true, logits)


_BY_NAME = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "binary_cross_entropy": BinaryCrossEntropy,
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "cross_entropy": SoftmaxCrossEntropy,
}


def get_loss(loss):
    """Return a :class:`Loss` for a name or an instance.

    Examples
    --------
    >>> from cyconv.losses import get_loss
    >>> get_loss("softmax_cross_entropy")
    SoftmaxCrossEntropy()
    """
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in _BY_NAME:
        return _BY_NAME[loss]()
    names = ", ".join(repr(name) for name in _BY_NAME)
    raise ValueError(f"loss must be a cyconv.losses.Loss or one of {names}, got {loss!r}")
