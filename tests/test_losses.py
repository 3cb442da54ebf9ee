"""Losses: values against their formulas, derivatives against finite
differences, softmax cross-entropy for huge logits, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyconv import losses
from cyconv.losses import (
    BinaryCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
    binary_cross_entropy,
    binary_cross_entropy_prime,
    get_loss,
    mse,
    mse_prime,
    softmax_cross_entropy,
    softmax_cross_entropy_prime,
)


def numeric_gradient(f, y_pred, step=1e-4):
    """4th-order central differences of the scalar f at y_pred."""
    y_pred = np.array(y_pred, dtype=np.float64)
    grad = np.empty_like(y_pred)
    for index in np.ndindex(y_pred.shape):
        values = []
        for offset in (2, 1, -1, -2):
            moved = y_pred.copy()
            moved[index] += offset * step
            values.append(f(moved))
        grad[index] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)
    return grad


shapes = st.tuples(st.integers(1, 4), st.integers(1, 5))


@settings(max_examples=30)
@given(shapes, st.integers(0, 2**32 - 1))
def test_mse_value_and_derivative(shape, seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.standard_normal(shape), rng.standard_normal(shape)
    assert mse(y_true, y_pred) == pytest.approx(np.mean((y_true - y_pred) ** 2), rel=1e-12)
    np.testing.assert_allclose(mse_prime(y_true, y_pred),
                               numeric_gradient(lambda p: mse(y_true, p), y_pred),
                               rtol=1e-7, atol=1e-9)


@settings(max_examples=30)
@given(shapes, st.integers(0, 2**32 - 1))
def test_binary_cross_entropy_value_and_derivative(shape, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.random(shape).round()
    y_pred = rng.uniform(0.05, 0.95, shape)
    expected = np.mean(-y_true * np.log(y_pred) - (1 - y_true) * np.log(1 - y_pred))
    assert binary_cross_entropy(y_true, y_pred) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(binary_cross_entropy_prime(y_true, y_pred),
                               numeric_gradient(lambda p: binary_cross_entropy(y_true, p), y_pred),
                               rtol=1e-6, atol=1e-9)


def test_binary_cross_entropy_stays_finite_at_certain_predictions():
    value = binary_cross_entropy([1.0, 0.0], [0.0, 1.0])
    assert np.isfinite(value) and value > 10
    assert np.all(np.isfinite(binary_cross_entropy_prime([1.0, 0.0], [0.0, 1.0])))
    assert binary_cross_entropy([1.0, 0.0], [1.0, 0.0]) < 1e-6


@settings(max_examples=30)
@given(shapes, st.booleans(), st.integers(0, 2**32 - 1))
def test_softmax_cross_entropy_value_and_derivative(shape, one_hot, seed):
    rng = np.random.default_rng(seed)
    n, k = shape
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    y_true = np.eye(k)[labels] if one_hot else labels
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probabilities[np.arange(n), labels]))
    assert softmax_cross_entropy(y_true, logits) == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(
        softmax_cross_entropy_prime(y_true, logits),
        numeric_gradient(lambda z: softmax_cross_entropy(y_true, z), logits),
        rtol=1e-6, atol=1e-9)


def test_softmax_cross_entropy_with_soft_targets():
    logits = np.array([[1.0, 2.0, 0.5]])
    target = np.array([[0.2, 0.5, 0.3]])
    log_p = logits - np.log(np.exp(logits).sum())
    assert softmax_cross_entropy(target, logits) == pytest.approx(-np.sum(target * log_p))
    np.testing.assert_allclose(softmax_cross_entropy_prime(target, logits),
                               numeric_gradient(lambda z: softmax_cross_entropy(target, z), logits),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [-3e4, 3e4, 0.0], [5e3, 5e3, -5e3]], dtype=dtype)
    labels = np.array([0, 0, 1])
    value = softmax_cross_entropy(labels, logits)
    # Sample 0 is certain and right (0), sample 1 wrong by 6e4, sample 2 a tie (log 2).
    assert value == pytest.approx((0 + 6e4 + np.log(2)) / 3, rel=1e-6)
    grad = softmax_cross_entropy_prime(labels, logits)
    assert grad.dtype == dtype and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0, 0, 0], [-1 / 3, 1 / 3, 0], [1 / 6, -1 / 6, 0]],
                               atol=1e-7)


def test_single_sample_softmax_cross_entropy():
    logits = np.array([2.0, 0.5, -1.0])
    batch = SoftmaxCrossEntropy()
    assert batch(1, logits) == pytest.approx(batch([1], logits[None]))
    np.testing.assert_allclose(batch.gradient(1, logits), batch.gradient([1], logits[None])[0])
    assert batch.accuracy(0, logits) == 1.0
    assert batch.accuracy(np.array([0.0, 1.0, 0.0]), logits) == 0.0


def test_gradients_keep_float32():
    y32 = np.zeros((2, 3), dtype=np.float32)
    for loss in (MeanSquaredError(), BinaryCrossEntropy()):
        assert loss.gradient(y32, y32 + 0.5).dtype == np.float32
    assert SoftmaxCrossEntropy().gradient([0, 1], y32).dtype == np.float32


def test_value_and_gradient_is_the_pair():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((4, 3)), rng.integers(0, 3, 4)
    loss = SoftmaxCrossEntropy()
    value, grad = loss.value_and_gradient(labels, logits)
    assert value == loss(labels, logits)
    np.testing.assert_array_equal(grad, loss.gradient(labels, logits))


def test_accuracy():
    scores = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert SoftmaxCrossEntropy().accuracy([0, 1, 1], scores) == pytest.approx(2 / 3)
    assert MeanSquaredError().accuracy(np.eye(2)[[0, 1, 1]], scores) == pytest.approx(2 / 3)
    assert MeanSquaredError().accuracy(np.zeros((3, 1)), np.zeros((3, 1))) is None
    assert BinaryCrossEntropy().accuracy([1, 0, 1], [0.9, 0.2, 0.3]) == pytest.approx(2 / 3)


def test_get_loss():
    assert isinstance(get_loss("mse"), MeanSquaredError)
    assert isinstance(get_loss("binary_cross_entropy"), BinaryCrossEntropy)
    loss = SoftmaxCrossEntropy()
    assert get_loss(loss) is loss
    with pytest.raises(ValueError, match="loss must be"):
        get_loss("hinge")


@pytest.mark.parametrize("call, error, words", [
    (lambda: mse([1.0, 2.0], [1.0]), ValueError, "shape of y_pred"),
    (lambda: mse([1.0], [1j]), TypeError, "real numbers"),
    (lambda: mse([], []), ValueError, "must not be empty"),
    (lambda: softmax_cross_entropy([3], [[0.0, 1.0]]), ValueError, r"in \[0, 2\)"),
    (lambda: softmax_cross_entropy([-1], [[0.0, 1.0]]), ValueError, r"in \[0, 2\)"),
    (lambda: softmax_cross_entropy([0.0], [[0.0, 1.0]]), TypeError, "integers"),
    (lambda: softmax_cross_entropy([0, 1], [[0.0, 1.0]]), ValueError, "integer labels"),
    (lambda: softmax_cross_entropy([0], np.zeros((1, 2, 2))), ValueError, r"\(N, K\)"),
    (lambda: BinaryCrossEntropy(epsilon=0.7), ValueError, "epsilon"),
])
def test_bad_loss_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_module_exports_the_tutorial_pairs():
    for name in ("mse", "binary_cross_entropy", "softmax_cross_entropy"):
        assert callable(getattr(losses, name)) and callable(getattr(losses, name + "_prime"))


@pytest.mark.parametrize("n", [1, 3, 8, 9, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_labels_as_one_hot_rows_for_any_batch(n, dtype):
    # Few labels are encoded in Python, more with numpy's indexing: both
    # must be exactly the one-hot rows, and refuse the same labels.
    rng = np.random.default_rng(n)
    k = 7
    logits = (rng.standard_normal((n, k)) * 4).astype(dtype)
    labels = rng.integers(0, k, n)
    loss = SoftmaxCrossEntropy()
    value, grad = loss.value_and_gradient(labels, logits)
    one_hot_value, one_hot_grad = loss.value_and_gradient(np.eye(k)[labels], logits)
    assert value == one_hot_value
    np.testing.assert_array_equal(grad, one_hot_grad)
    z = logits.astype(np.float64)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert value == pytest.approx(-np.mean(log_p[np.arange(n), labels]), rel=1e-5)
    for bad, low, high in ((-1, -1, None), (k, None, k)):
        wrong = labels.copy()
        wrong[n // 2] = bad
        low = wrong.min() if low is None else low
        high = wrong.max() if high is None else high
        with pytest.raises(ValueError, match=rf"in \[0, {k}\), got values from {low} to {high}"):
            loss.value_and_gradient(wrong, logits)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 40), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
       as_labels=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_softmax_cross_entropy_against_scipy_log_softmax(n, k, scale, as_labels, dtype, seed):
    # The compiled pass against scipy.special.log_softmax in float64, on
    # the logits as given (rounded to their dtype): probabilities too.
    from scipy.special import log_softmax, softmax
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * scale).astype(dtype)
    if as_labels:
        labels = rng.integers(0, k, n)
        target = np.eye(k)[labels]
        y_true = labels
    else:
        target = rng.random((n, k))
        target /= target.sum(axis=1, keepdims=True)
        y_true = target
    z = logits.astype(np.float64)
    target = target.astype(dtype).astype(np.float64)  # as the loss takes it
    expected_value = -np.sum(target * log_softmax(z, axis=1)) / n
    expected_grad = (softmax(z, axis=1) - target) / n
    value, grad = SoftmaxCrossEntropy().value_and_gradient(y_true, logits)
    assert isinstance(value, float) and grad.dtype == dtype and grad.shape == (n, k)
    assert value == pytest.approx(expected_value, rel=1e-12, abs=1e-12 * scale)
    # the gradient is rounded once to the dtype
    tolerance = 1e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(grad, expected_grad, rtol=4 * tolerance,
                               atol=tolerance / n)


def test_softmax_cross_entropy_of_impossible_classes_and_nan():
    # A class of target 0 whose logit is -inf adds nothing; a NaN logit
    # makes the loss and its row's gradient NaN, as in numpy's formula.
    logits = np.array([[0.0, -np.inf, 1.0], [2.0, 0.0, -np.inf]])
    value, grad = SoftmaxCrossEntropy().value_and_gradient([2, 0], logits)
    expected = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-2.0))) / 2
    assert value == pytest.approx(expected, rel=1e-15)
    assert grad[0, 1] == 0.0 and grad[1, 2] == 0.0 and np.all(np.isfinite(grad))
    value, grad = SoftmaxCrossEntropy().value_and_gradient([0, 0], [[np.nan, 0.0], [1.0, 0.0]])
    assert np.isnan(value) and np.all(np.isnan(grad[0])) and np.all(np.isfinite(grad[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_takes_plain_arrays_in_one_compiled_call(dtype, monkeypatch):
    """Logits and intp labels as plain arrays take one compiled call that
    checks them itself (_losses.by_labels); it gives the bits of the general
    way, which every other form of the same arguments takes (int32 labels,
    lists, strided or byte-swapped logits, one sample), and leaves labels
    out of range to its errors."""
    from cyconv._kernels import _losses

    rng = np.random.default_rng(17)
    logits = (rng.standard_normal((5, 9)) * 30).astype(dtype)
    logits[1, 2], logits[2, 4], logits[3, 0] = np.inf, -np.inf, np.nan
    labels = rng.integers(0, 9, 5)
    answers = []
    compiled = _losses.by_labels
    monkeypatch.setattr(_losses, "by_labels",
                        lambda *args: answers.append(compiled(*args)) or answers[-1])
    loss = SoftmaxCrossEntropy()
    value, grad = loss.value_and_gradient(labels, logits)
    assert answers[-1] is not None  # the compiled call ran
    strided = np.zeros((5, 18), dtype)
    strided[:, ::2] = logits
    for y_true, y_pred in ((labels.astype(np.int32), logits), (labels.tolist(), logits.tolist()),
                           (labels, strided[:, ::2]),
                           (labels, logits.astype(logits.dtype.newbyteorder())),
                           (np.eye(9)[labels].astype(dtype), logits)):
        other_value, other_grad = loss.value_and_gradient(y_true, y_pred)
        assert answers[-1] is None  # the general way ran
        assert (value == other_value) or (np.isnan(value) and np.isnan(other_value))
        assert other_grad.dtype == (dtype if np.asarray(y_pred).dtype != np.float64 else
                                    np.float64)
        np.testing.assert_array_equal(other_grad.astype(dtype), grad)
    one_value, one_grad = loss.value_and_gradient(labels[0], logits[0])
    assert answers[-1] is None and one_value == loss.value_and_gradient(labels[:1], logits[:1])[0]
    np.testing.assert_array_equal(one_grad, loss.value_and_gradient(labels[:1], logits[:1])[1][0])
    for bad in (-1, 9):
        wrong = labels.copy()
        wrong[2] = bad
        with pytest.raises(ValueError, match=r"in \[0, 9\)"):
            loss.value_and_gradient(wrong, logits)
        assert answers[-1] is None
    with pytest.raises(ValueError, match="must not be empty"):
        loss.value_and_gradient(np.empty(0, np.intp), np.empty((0, 9), dtype))
    assert answers[-1] is None

    class Smoothed(SoftmaxCrossEntropy):
        """Labels smoothed: a subclass's own targets."""

        @staticmethod
        def _target(y_true, logits, single, n, classes):
            target = np.full((n, classes), 0.1 / classes, logits.dtype)
            target[np.arange(n), np.asarray(y_true).reshape(n)] += 0.9
            return target, np.empty(0, np.intp)

    count = len(answers)
    smoothed = Smoothed().value_and_gradient(labels, logits)
    assert len(answers) == count  # the subclass never takes the compiled call
    assert smoothed[0] != value or np.isnan(value)
    assert smoothed[0] == Smoothed().value_and_gradient(labels.tolist(), logits)[0] or np.isnan(
        smoothed[0])
