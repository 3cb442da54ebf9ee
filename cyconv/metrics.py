"""Classification metrics beyond accuracy: the confusion matrix, top-k
accuracy and the accuracy of each class.

Labels are integers in ``[0, num_classes)``; scores are ``(N, K)`` arrays
(logits or probabilities: only their order matters).
"""

import numbers

import numpy as np

from ._validation import as_array

__all__ = ["confusion_matrix", "top_k_accuracy", "per_class_accuracy"]


def _labels(values, name):
    array = as_array(values, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        if array.dtype.kind != "f" or not np.all(np.isfinite(array)) \
                or not np.all(array == np.round(array)):
            raise TypeError(f"{name} must hold integer class labels, got dtype {array.dtype}")
    return array.astype(np.int64)


def _num_classes(num_classes, *arrays):
    if num_classes is None:
        return int(max((array.max() + 1 for array in arrays if array.size), default=0))
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    return int(num_classes)


def _check_range(array, name, num_classes):
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{name} must be in [0, {num_classes}), got values from "
                         f"{array.min()} to {array.max()}")


def confusion_matrix(labels, predictions, num_classes=None):
    """Counts of (true class, predicted class) pairs.

    Parameters
    ----------
    labels, predictions : array_like of int, shape (N,)
        True and predicted classes.
    num_classes : int, optional
        The matrix's size; by default one more than the largest class seen.

    Returns
    -------
    ndarray of int64, shape (num_classes, num_classes)
        ``matrix[i, j]`` counts the samples of class ``i`` predicted as ``j``
        (rows: truth, columns: prediction, as in scikit-learn).

    Examples
    --------
    >>> from cyconv.metrics import confusion_matrix
    >>> confusion_matrix([0, 1, 1], [0, 1, 0])
    array([[1, 0],
           [1, 1]])
    >>> confusion_matrix([0], [0], num_classes=3).shape
    (3, 3)
    """
    labels = _labels(labels, "labels")
    predictions = _labels(predictions, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions must hold the same number of samples, got "
                         f"{len(labels)} and {len(predictions)}")
    num_classes = _num_classes(num_classes, labels, predictions)
    _check_range(labels, "labels", num_classes)
    _check_range(predictions, "predictions", num_classes)
    # bincount over the flat index is one pass and exact (np.add.at is slow).
    flat = labels * num_classes + predictions
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _scores(scores, labels):
    array = as_array(scores, "scores")
    if array.ndim != 2:
        raise ValueError(f"scores must have shape (N, K), got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"scores must hold real numbers, got dtype {array.dtype}")
    if len(array) != len(labels):
        raise ValueError(f"scores and labels must hold the same number of samples, got "
                         f"{len(array)} and {len(labels)}")
    if len(labels) == 0:
        raise ValueError("scores must hold at least one sample")
    _check_range(labels, "labels", array.shape[1])
    return array


def top_k_accuracy(labels, scores, k=5):
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Ties at the k-th score count in the sample's favour, as in Keras's
    ``top_k_categorical_accuracy``.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
    scores : array_like, shape (N, K)
    k : int, default 5
        Clipped to ``K``.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.metrics import top_k_accuracy
    >>> scores = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]])
    >>> top_k_accuracy([2, 2], scores, k=1)
    0.0
    >>> top_k_accuracy([2, 2], scores, k=2)
    0.5
    """
    labels = _labels(labels, "labels")
    scores = _scores(scores, labels)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    true_scores = scores[np.arange(len(labels)), labels]
    # Rank = how many classes score strictly higher than the true one.
    higher = np.sum(scores > true_scores[:, np.newaxis], axis=1)
    return float(np.mean(higher < k))


def per_class_accuracy(labels, predictions, num_classes=None):
    """The accuracy on each true class (recall), NaN for a class absent
    from ``labels``.

    Examples
    --------
    >>> from cyconv.metrics import per_class_accuracy
    >>> per_class_accuracy([0, 0, 1, 1], [0, 1, 1, 1])
    array([0.5, 1. ])
    >>> per_class_accuracy([0], [0], num_classes=2)
    array([ 1., nan])
    """
    matrix = confusion_matrix(labels, predictions, num_classes)
    counts = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.diag(matrix) / np.maximum(counts, 1), np.nan)
