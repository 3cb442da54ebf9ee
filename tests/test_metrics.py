"""cyconv.metrics against straightforward loops."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from cyconv.metrics import confusion_matrix, per_class_accuracy, top_k_accuracy


def confusion_loop(labels, predictions, k):
    matrix = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(labels, predictions):
        matrix[t, p] += 1
    return matrix


@given(st.integers(1, 6), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_confusion_matrix_counts_pairs(k, n, seed):
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, k, n), rng.integers(0, k, n)
    matrix = confusion_matrix(labels, predictions, num_classes=k)
    np.testing.assert_array_equal(matrix, confusion_loop(labels, predictions, k))
    per_class = per_class_accuracy(labels, predictions, num_classes=k)
    for c in range(k):
        chosen = labels == c
        if chosen.any():
            assert per_class[c] == pytest.approx(np.mean(predictions[chosen] == c))
        else:
            assert np.isnan(per_class[c])


def test_confusion_matrix_size_defaults_to_the_largest_class():
    assert confusion_matrix([0, 3], [1, 1]).shape == (4, 4)


@given(st.integers(1, 7), st.integers(1, 30), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_top_k_accuracy_against_a_ranking_loop(k_classes, n, k, seed):
    rng = np.random.default_rng(seed)
    # Few distinct values, so that ties are common.
    scores = rng.integers(0, 4, (n, k_classes)).astype(float)
    labels = rng.integers(0, k_classes, n)
    hits = 0
    for row, label in zip(scores, labels):
        better = sum(1 for value in row if value > row[label])
        hits += better < k
    assert top_k_accuracy(labels, scores, k=k) == pytest.approx(hits / n)


def test_top_1_is_the_argmax_accuracy_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 10))
    labels = rng.integers(0, 10, 50)
    assert top_k_accuracy(labels, scores, k=1) == np.mean(np.argmax(scores, axis=1) == labels)
    assert top_k_accuracy(labels, scores, k=10) == 1.0


@pytest.mark.parametrize("call, error, words", [
    (lambda: confusion_matrix([0, 1], [0]), ValueError, "same number"),
    (lambda: confusion_matrix([0, 5], [0, 1], num_classes=3), ValueError, "[0, 3)"),
    (lambda: confusion_matrix([-1], [0]), ValueError, "labels must be in"),
    (lambda: confusion_matrix([0.5], [0]), TypeError, "integer class labels"),
    (lambda: confusion_matrix([[0]], [0]), ValueError, "1-D"),
    (lambda: confusion_matrix([0], [0], num_classes=0), ValueError, "num_classes"),
    (lambda: top_k_accuracy([0], [[1.0, 2.0]], k=0), ValueError, "k must be"),
    (lambda: top_k_accuracy([2], [[1.0, 2.0]]), ValueError, "[0, 2)"),
    (lambda: top_k_accuracy([0], [1.0, 2.0]), ValueError, "(N, K)"),
])
def test_bad_arguments_are_named(call, error, words):
    with pytest.raises(error, match=None) as info:
        call()
    assert words in str(info.value)
