"""Layers: gradients against finite differences (cyconv.testing's checker),
the tutorial's API and results on single samples, batches, dtypes, errors."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import signal

import cyconv
from cyconv import (
    AveragePooling,
    Convolution,
    Dense,
    Flatten,
    Layer,
    MaxPooling,
    ReLU,
    Reshape,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)
from cyconv import _conv, _relu
from cyconv.functional import conv2d, conv2d_backward
from cyconv.testing import check_layer_gradients, conv2d_configs, pool2d_configs

F64 = dict(dtype=np.float64)


def distinct_values(shape, seed):
    """Values at least 0.05 apart, so that a finite-difference step of 1e-3
    never changes which element of a pooling window is the maximum."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.05
            - 0.025 * np.prod(shape))


# -- gradients ---------------------------------------------------------------

@settings(max_examples=20)
@given(conv2d_configs(max_batch=2, max_group_channels=2, max_groups=2, max_kernel=3,
                      max_extra_size=3), st.booleans(), st.integers(0, 2**32 - 1))
def test_convolution_gradients(config, bias, seed):
    n, c, h, w = config.x_shape
    f, _, kh, kw = config.weight_shape
    layer = Convolution((c, h, w), (kh, kw), f, bias=bias, rng=seed, **config.kwargs, **F64)
    x = np.random.default_rng(seed).standard_normal(config.x_shape)
    errors = check_layer_gradients(layer, x)
    assert set(errors) == ({"input", "weight", "bias"} if bias else {"input", "weight"})


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_convolution_padding_mode_gradients(padding_mode, padding):
    layer = Convolution((2, 5, 6), (3, 2), 3, padding=padding, padding_mode=padding_mode,
                        rng=1, **F64)
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 6))
    check_layer_gradients(layer, x)


@pytest.mark.parametrize("padding_mode, numpy_mode",
                         [("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")])
def test_convolution_padding_modes_match_numpy_pad(padding_mode, numpy_mode):
    layer = Convolution((2, 6, 5), 3, 4, padding=(1, 2), padding_mode=padding_mode, rng=0, **F64)
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 5))
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)), mode=numpy_mode)
    expected = cyconv.functional.conv2d(padded, layer.kernels, layer.biases)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=15)
@given(pool2d_configs(max_batch=2, max_channels=2, max_kernel=3, max_stride=3,
                      max_extra_size=4), st.integers(0, 2**32 - 1))
def test_max_pooling_gradients(config, seed):
    layer = MaxPooling(**config.kwargs)
    check_layer_gradients(layer, distinct_values(config.x_shape, seed))


@settings(max_examples=15)
@given(pool2d_configs(max_batch=2, max_channels=2, max_kernel=3, max_stride=3,
                      max_extra_size=4), st.booleans(), st.integers(0, 2**32 - 1))
def test_average_pooling_gradients(config, count_include_pad, seed):
    layer = AveragePooling(**config.kwargs, count_include_pad=count_include_pad)
    check_layer_gradients(layer, np.random.default_rng(seed).standard_normal(config.x_shape))


@pytest.mark.parametrize("shape", [(3, 5), (5,), (5, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradients_in_every_layout(shape, bias):
    layer = Dense(5, 4, bias=bias, rng=0, **F64)
    check_layer_gradients(layer, np.random.default_rng(1).standard_normal(shape))


def away_from_zero(shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    return x + np.sign(x) * 0.05


@pytest.mark.parametrize("layer_type", [ReLU, Sigmoid, Tanh, Softmax])
@pytest.mark.parametrize("shape", [(3, 4), (4,), (2, 3, 2, 2), (4, 1)])
def test_activation_gradients(layer_type, shape):
    check_layer_gradients(layer_type(), away_from_zero(shape, 3))


def test_reshape_and_flatten_gradients():
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    check_layer_gradients(Reshape((3, 2, 2), (12, 1)), x)
    check_layer_gradients(Reshape((3, 2, 2), (12, 1)), x[0])
    check_layer_gradients(Flatten(), x)
    check_layer_gradients(Flatten((3, 2, 2)), x[0])


def test_sequential_gradients_through_a_whole_network():
    rng = np.random.default_rng(0)
    network = Sequential([
        Convolution((1, 6, 6), 3, 2, padding=1, rng=rng, **F64), Tanh(),
        AveragePooling(2), Flatten(), Dense(18, 3, rng=rng, **F64), Sigmoid(),
    ])
    layer = _AsLayer(network)
    check_layer_gradients(layer, rng.standard_normal((2, 1, 6, 6)))


class _AsLayer(Layer):
    """A Sequential seen as one layer, input gradient included."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input):
        return self.model.forward(input)

    def backward(self, output_gradient, learning_rate=None):
        self.model.layers[0].needs_input_gradient = self.needs_input_gradient
        return self.model.backward(output_gradient, learning_rate)

    def parameters(self):
        return self.model.parameters()


def test_gradient_checker_catches_a_wrong_backward():
    class WrongSigmoid(Sigmoid):
        def _input_gradient(self, grad):
            return grad * self.output  # forgot the (1 - s) factor

    with pytest.raises(AssertionError, match="input"):
        check_layer_gradients(WrongSigmoid(), away_from_zero((2, 3), 0))

    class WrongBias(Dense):
        def backward(self, output_gradient, learning_rate=None):
            grad = super().backward(output_gradient, learning_rate)
            self.bias.grad = self.bias.grad * 2
            return grad

    with pytest.raises(AssertionError, match="bias"):
        check_layer_gradients(WrongBias(3, 2, rng=0, **F64), np.ones((2, 3)))


def test_gradient_checker_refuses_float32_layers_and_updating_backward():
    with pytest.raises(TypeError, match="float64"):
        check_layer_gradients(Dense(3, 2, rng=0), np.ones((1, 3)))

    class AlwaysUpdates(Dense):
        def backward(self, output_gradient, learning_rate=None):
            return super().backward(output_gradient, 0.1)

    with pytest.raises(AssertionError, match="changed parameter"):
        check_layer_gradients(AlwaysUpdates(3, 2, rng=0, **F64), np.ones((1, 3)))


# -- the tutorial's API -------------------------------------------------------

class TutorialConvolution:
    """The tutorial's layer with per-channel biases: loops over
    scipy.signal.correlate2d and convolve2d, one sample."""

    def __init__(self, kernels, biases, padding):
        self.kernels, self.biases, self.padding = kernels.copy(), biases.copy(), padding

    def forward(self, x):
        p = self.padding
        self.padded = np.pad(x, ((0, 0), (p, p), (p, p)))
        depth, channels = self.kernels.shape[:2]
        out = []
        for i in range(depth):
            out.append(sum(signal.correlate2d(self.padded[j], self.kernels[i, j], "valid")
                           for j in range(channels)) + self.biases[i])
        return np.array(out)

    def backward(self, grad, learning_rate):
        depth, channels = self.kernels.shape[:2]
        p = self.padding
        kernels_grad = np.zeros_like(self.kernels)
        input_grad = np.zeros_like(self.padded)
        for i in range(depth):
            for j in range(channels):
                kernels_grad[i, j] = signal.correlate2d(self.padded[j], grad[i], "valid")
                input_grad[j] += signal.convolve2d(grad[i], self.kernels[i, j], "full")
        self.kernels -= learning_rate * kernels_grad
        self.biases -= learning_rate * grad.sum(axis=(1, 2))
        h, w = input_grad.shape[1:]
        return input_grad[:, p:h - p, p:w - p]


@pytest.mark.parametrize("padding", [0, 1])
def test_tutorial_convolution_on_one_sample(padding):
    layer = Convolution((2, 9, 8), 3, 5, padding, **F64)
    assert layer.output_shape == (5, 7 + 2 * padding, 6 + 2 * padding)
    assert layer.kernels_shape == (5, 2, 3, 3)
    rng = np.random.default_rng(0)
    layer.bias.value[...] = rng.standard_normal(5)
    tutorial = TutorialConvolution(layer.kernels, layer.biases, padding)
    x = rng.standard_normal((2, 9, 8))
    out = layer.forward(x)
    np.testing.assert_allclose(out, tutorial.forward(x), rtol=1e-12, atol=1e-12)
    grad = rng.standard_normal(out.shape)
    np.testing.assert_allclose(layer.backward(grad, 0.1), tutorial.backward(grad, 0.1),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.kernels, tutorial.kernels, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.biases, tutorial.biases, rtol=1e-12, atol=1e-12)


def tutorial_max_pooling(x, stride):
    """The tutorial's MaxPooling.forward, verbatim in substance."""
    depth, height, width = x.shape
    out = np.zeros((depth, height // stride, width // stride))
    for d in range(depth):
        for i in range(height // stride):
            for j in range(width // stride):
                out[d, i, j] = np.max(x[d, i * stride:(i + 1) * stride,
                                        j * stride:(j + 1) * stride])
    return out


@pytest.mark.parametrize("stride", [2, 3])
def test_tutorial_max_pooling_on_one_sample(stride):
    x = distinct_values((3, 8, 7), 0)
    pool = MaxPooling(stride=stride)
    out = pool.forward(x)
    np.testing.assert_array_equal(out, tutorial_max_pooling(x, stride))
    grad = pool.backward(np.ones_like(out), 0.1)
    # Distinct values: the tutorial's mask (region == max) has one element.
    assert grad.shape == x.shape and grad.sum() == out.size
    for d, i, j in zip(*np.nonzero(grad)):
        window = x[d, i // stride * stride:(i // stride + 1) * stride,
                   j // stride * stride:(j // stride + 1) * stride]
        assert x[d, i, j] == window.max()


def test_tutorial_training_loop_on_single_samples():
    """The tutorial's MNIST example, shrunk: single samples, column vectors,
    sigmoid outputs, binary cross-entropy, backward with a learning rate."""
    from cyconv.losses import binary_cross_entropy, binary_cross_entropy_prime

    np.random.seed(0)
    network = [
        Convolution((1, 8, 8), 3, 2), Sigmoid(),
        Reshape((2, 6, 6), (2 * 6 * 6, 1)),
        Dense(2 * 6 * 6, 8), Sigmoid(),
        Dense(8, 2), Sigmoid(),
    ]
    rng = np.random.default_rng(1)
    x_train = rng.random((20, 1, 8, 8))
    labels = rng.integers(0, 2, 20)
    x_train[labels == 1, 0, :4] += 1.0   # class 1: a bright top half
    y_train = np.eye(2)[labels].reshape(20, 2, 1)

    def predict(x):
        output = x
        for layer in network:
            output = layer.forward(output)
        return output

    def error():
        return np.mean([binary_cross_entropy(y, predict(x)) for x, y in zip(x_train, y_train)])

    before = error()
    for _ in range(30):
        for x, y in zip(x_train, y_train):
            output = predict(x)
            assert output.shape == (2, 1)
            grad = binary_cross_entropy_prime(y, output)
            for layer in reversed(network):
                grad = layer.backward(grad, 0.5)
            assert grad.shape == (1, 8, 8)
    assert error() < 0.1 * before
    assert all(np.argmax(predict(x)) == label for x, label in zip(x_train, labels))


def test_global_seed_makes_initialisation_reproducible():
    np.random.seed(7)
    a = Convolution((1, 5, 5), 3, 2)
    np.random.seed(7)
    b = Convolution((1, 5, 5), 3, 2)
    np.testing.assert_array_equal(a.kernels, b.kernels)


def test_he_initialisation_scale_and_zero_biases():
    layer = Convolution((16, 8, 8), 3, 64, rng=0)
    fan_in = 16 * 3 * 3
    assert abs(layer.kernels.std() - np.sqrt(2 / fan_in)) < 0.05 * np.sqrt(2 / fan_in)
    assert layer.biases.shape == (64,) and not layer.biases.any()
    dense = Dense(400, 300, rng=0)
    assert abs(dense.weights.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)


# -- batches, single samples, dtypes, learning rates -----------------------------

LAYERS_AND_SAMPLES = [
    (lambda: Convolution((2, 7, 6), 3, 4, padding=1, stride=2, rng=0), (2, 7, 6)),
    (lambda: Convolution((2, 7, 6), 3, 4, padding="same", padding_mode="reflect", rng=0),
     (2, 7, 6)),
    (lambda: MaxPooling(2), (2, 7, 6)),
    (lambda: AveragePooling(3, stride=2, padding=1), (2, 7, 6)),
    (lambda: Dense(6, 3, rng=0), (6,)),
    (lambda: Reshape((2, 7, 6), (84,)), (2, 7, 6)),
    (lambda: Flatten((2, 7, 6)), (2, 7, 6)),
    (lambda: ReLU(), (2, 7, 6)),
    (lambda: Softmax(), (6,)),
]


@pytest.mark.parametrize("make, sample_shape", LAYERS_AND_SAMPLES)
def test_one_sample_gives_the_batch_result(make, sample_shape):
    layer = make()
    x = np.random.default_rng(0).standard_normal((3,) + sample_shape).astype(np.float32)
    batch_out = layer.forward(x)
    grad = np.random.default_rng(1).standard_normal(batch_out.shape).astype(np.float32)
    batch_grad = layer.backward(grad)
    for i in range(3):
        out = layer.forward(x[i])
        assert out.shape == batch_out.shape[1:]
        np.testing.assert_allclose(out, batch_out[i], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(layer.backward(grad[i]), batch_grad[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda d: Convolution((1, 5, 5), 3, 2, dtype=d, rng=0),
                                  lambda d: Dense(4, 3, dtype=d, rng=0)])
def test_float32_by_default_and_float64_on_request(make):
    default = make(np.float32)
    assert all(p.value.dtype == np.float32 for p in default.parameters())
    wide = make(np.float64)
    assert all(p.value.dtype == np.float64 for p in wide.parameters())
    shape = (2, 1, 5, 5) if isinstance(default, Convolution) else (2, 4)
    x = np.random.default_rng(0).random(shape)   # float64 data
    assert default.forward(x).dtype == np.float32
    assert wide.forward(x.astype(np.float32)).dtype == np.float64
    assert default.forward((x * 255).astype(np.uint8)).dtype == np.float32


def test_backward_with_and_without_learning_rate():
    layer = Dense(3, 2, rng=0, **F64)
    x = np.array([[1.0, 2.0, 3.0]])
    weights, bias = layer.weights.copy(), layer.biases.copy()
    layer.forward(x)
    layer.backward(np.array([[1.0, -1.0]]))
    np.testing.assert_array_equal(layer.weights, weights)   # only stored
    np.testing.assert_array_equal(layer.weight.grad, [[1, 2, 3], [-1, -2, -3]])
    layer.forward(x)
    layer.backward(np.array([[1.0, -1.0]]), learning_rate=0.5)
    np.testing.assert_allclose(layer.weights, weights - 0.5 * layer.weight.grad)
    np.testing.assert_allclose(layer.biases, bias - 0.5 * np.array([1.0, -1.0]))


def test_first_layer_of_a_sequential_skips_its_input_gradient(monkeypatch):
    # Spied where every backward call ends, checked or not (the layers skip
    # conv2d_backward's checks for shapes they have already checked).
    calls = []
    original = _conv.conv2d_backward_checked

    def spy(grad_output, x, weight, geometry, compute_grad_input):
        calls.append(compute_grad_input)
        return original(grad_output, x, weight, geometry, compute_grad_input)

    monkeypatch.setattr(_conv, "conv2d_backward_checked", spy)
    model = Sequential([Convolution((1, 6, 6), 3, 2, rng=0), ReLU(),
                        Convolution((2, 4, 4), 3, 2, rng=0), Flatten(), Dense(8, 2, rng=0)])
    for _ in range(2):  # the second step takes the layers' already-checked path
        out = model.forward(np.ones((2, 1, 6, 6)))
        assert model.backward(np.ones_like(out)) is None
    assert calls == [True, False] * 2   # backward runs last layer first
    assert model.layers[0].weight.grad is not None


def test_parameters_lists_trainable_arrays():
    assert [p.name for p in Convolution((1, 4, 4), 3, 2).parameters()] == ["weight", "bias"]
    assert [p.name for p in Convolution((1, 4, 4), 3, 2, bias=False).parameters()] == ["weight"]
    assert [p.name for p in Dense(2, 2).parameters()] == ["weight", "bias"]
    for layer in (MaxPooling(), AveragePooling(), ReLU(), Flatten(), Reshape((4,), (2, 2))):
        assert layer.parameters() == []


def test_max_pooling_window_follows_the_stride_like_the_tutorial():
    assert MaxPooling(stride=3).kernel_size == (3, 3)
    assert MaxPooling().kernel_size == (2, 2) and MaxPooling().stride == (2, 2)
    assert MaxPooling(3, stride=1).stride == (1, 1)


# -- errors ------------------------------------------------------------------

@pytest.mark.parametrize("make, error, words", [
    (lambda: Convolution((1, 28), 3, 5), ValueError, "input_shape must have 3"),
    (lambda: Convolution((1, 2, 2), 3, 5), ValueError, "larger than the padded input"),
    (lambda: Convolution((3, 8, 8), 3, 4, groups=2), ValueError, "must divide"),
    (lambda: Convolution((1, 8, 8), 3, 0), ValueError, "depth must be >= 1"),
    (lambda: Convolution((1, 8, 8), 3, 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: Convolution((1, 8, 8), 3, 2, padding_mode="mirror"), ValueError, "padding_mode"),
    (lambda: Convolution((1, 3, 3), 3, 2, padding=3, padding_mode="reflect"), ValueError,
     "smaller than the input"),
    (lambda: Convolution((1, 8, 8), 3, 2, dtype=np.float16), TypeError, "float32 or float64"),
    (lambda: Convolution((1, 8, 8), 3.5, 2), TypeError, "kernel_size must be an int"),
    (lambda: Dense(0, 3), ValueError, "input_size must be >= 1"),
    (lambda: Dense(3, 3, dtype=int), TypeError, "float32 or float64"),
    (lambda: Reshape((2, 3), (5,)), ValueError, "cannot reshape"),
    (lambda: MaxPooling(0), ValueError, "kernel_size must be >= 1"),
    (lambda: AveragePooling(2, count_include_pad="no"), TypeError, "count_include_pad"),
])
def test_bad_layer_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize("layer, x, words", [
    (Convolution((1, 8, 8), 3, 2), np.ones((2, 1, 9, 8)), r"\(N, 1, 8, 8\) or \(1, 8, 8\)"),
    (Convolution((1, 8, 8), 3, 2), np.ones((8, 8)), r"\(N, 1, 8, 8\)"),
    (Dense(4, 2), np.ones((2, 5)), r"\(N, 4\), \(4,\) or \(4, 1\)"),
    (Reshape((2, 2), (4,)), np.ones((3, 3)), r"Reshape expects"),
    (Flatten(), np.ones(3), "at least 2 dimensions"),
    (MaxPooling(), np.ones((4, 4)), r"\(N, C, H, W\) or \(C, H, W\)"),
])
def test_wrong_input_shapes_are_reported(layer, x, words):
    with pytest.raises(ValueError, match=words):
        layer.forward(x)


@pytest.mark.parametrize("layer", [Convolution((1, 5, 5), 3, 2), Dense(3, 2), ReLU(),
                                   MaxPooling()])
def test_non_real_inputs_raise_type_error(layer):
    with pytest.raises(TypeError, match="real numbers"):
        layer.forward(np.ones((1, 1, 5, 5), dtype=np.complex128))


@pytest.mark.parametrize("layer, x", [(Convolution((1, 5, 5), 3, 2), np.ones((1, 1, 5, 5))),
                                      (Dense(3, 2), np.ones((2, 3))),
                                      (Sigmoid(), np.ones((2, 3))),
                                      (AveragePooling(), np.ones((1, 1, 4, 4)))])
def test_gradient_of_the_wrong_shape_and_backward_before_forward(layer, x):
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones(3))
    out = layer.forward(x)
    with pytest.raises(ValueError, match="output_gradient of the output's shape"):
        layer.backward(np.ones(out.shape + (1,)))


@pytest.mark.parametrize("rate, error", [(-1.0, ValueError), (float("nan"), ValueError),
                                         ("0.1", TypeError), (True, TypeError)])
def test_bad_learning_rates(rate, error):
    layer = Dense(3, 2)
    layer.forward(np.ones((1, 3)))
    with pytest.raises(error, match="learning_rate"):
        layer.backward(np.ones((1, 2)), learning_rate=rate)


@pytest.mark.parametrize("make, shape", [
    (lambda: MaxPooling(2), (1, 1, 4, 4)), (lambda: AveragePooling(2), (1, 1, 4, 4)),
    (lambda: Reshape((4,), (2, 2)), (3, 4)), (lambda: Flatten(), (3, 2, 2)),
    (ReLU, (3, 4)), (Sigmoid, (3, 4)), (Tanh, (3, 4)), (Softmax, (3, 4)),
])
def test_layers_without_parameters_refuse_a_bad_learning_rate_too(make, shape):
    layer = make()
    out = layer.forward(np.ones(shape))
    for rate, error in ((-1.0, ValueError), (np.nan, ValueError), ("0.1", TypeError),
                        (True, TypeError)):
        with pytest.raises(error, match="learning_rate must be"):
            layer.backward(np.ones_like(out), rate)
    assert layer.backward(np.ones_like(out), 0.5).shape == shape


@pytest.mark.parametrize("make, shape, out_shape", [
    (lambda: Flatten(), (0, 2, 3), (0, 6)), (lambda: Flatten(), (3, 0, 2), (3, 0)),
    (Softmax, (0, 4), (0, 4)), (Softmax, (3, 0), (3, 0)),
    (lambda: Dense(4, 2), (0, 4), (0, 2)), (ReLU, (0, 4), (0, 4)),
])
def test_empty_batches_pass_through_layers_that_take_them(make, shape, out_shape):
    """Flatten and Softmax failed inside numpy (cannot infer -1, no maximum
    of nothing) where Dense, Reshape and the other activations give an empty
    output."""
    layer = make()
    out = layer.forward(np.zeros(shape))
    assert out.shape == out_shape
    assert layer.backward(np.zeros(out_shape)).shape == shape


def test_weights_too_large_to_be_an_array_are_refused_before_drawing_them():
    with pytest.raises(ValueError, match=r"Dense's weights would have shape \(4294967296, "
                                         r"4294967296\), too large for an array"):
        Dense(2**32, 2**32)


@given(st.sampled_from([np.float32, np.float64]), st.integers(1, 3), st.data())
def test_relu_gradient_is_numpys_bit_for_bit(dtype, threads, data):
    """ReLU's compiled gradient against numpy's ``grad * (x > 0)``, bit for
    bit: NaN, infinities, zeros of both signs, any shape and memory layout,
    split among threads even when small."""
    shape = tuple(data.draw(st.lists(st.integers(0, 9), min_size=1, max_size=4)))
    values = st.one_of(st.floats(width=np.dtype(dtype).itemsize * 8),
                       st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf]))
    x, grad = (data.draw(arrays(dtype, shape, elements=values)) for _ in range(2))
    if data.draw(st.booleans()):
        x, grad = np.asfortranarray(x), grad[..., ::-1].copy()[..., ::-1]
    layer = cyconv.ReLU()
    layer.forward(x)
    try:
        cyconv.set_num_threads(threads)
        with mock.patch.object(_relu, "MIN_ELEMENTS_PER_THREAD", 1):
            actual = layer.backward(grad)
    finally:
        cyconv.set_num_threads(None)
    with np.errstate(invalid="ignore"):
        expected = np.ascontiguousarray(grad * (x > 0))
    assert actual.dtype == dtype and actual.shape == shape
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))


def test_convolution_rechecks_whatever_changed_since_its_last_call():
    """The layer skips conv2d's checks only for the shapes, dtypes and
    layouts it checked last time: anything else is checked again, with the
    same results and errors as the functional call."""
    layer = Convolution((2, 6, 6), 3, 3, padding=1, rng=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    first = layer.forward(x)
    np.testing.assert_array_equal(first, conv2d(x, layer.weight.value, layer.bias.value, padding=1))
    np.testing.assert_array_equal(layer.forward(x), first)
    np.testing.assert_array_equal(layer.forward(x[:1]), first[:1])  # a new batch size
    layer.weight.value = np.asfortranarray(layer.weight.value)  # a new layout
    np.testing.assert_array_equal(layer.forward(x), first)
    layer.weight.value = layer.weight.value.astype(np.float64)  # a new dtype, as before
    assert layer.forward(x).dtype == conv2d(x, layer.weight.value, layer.bias.value).dtype
    layer.weight.value = np.ones((3, 5, 3, 3), np.float32)  # a wrong shape: conv2d's error
    with pytest.raises(ValueError, match="weight must have shape"):
        layer.forward(x)
    layer.weight.value = np.ones((3, 2, 3, 3), np.float32)
    out = layer.forward(x)
    grad_input = layer.backward(np.ones_like(out))
    expected = conv2d_backward(np.ones_like(out), x, layer.weight.value, padding=1)
    np.testing.assert_array_equal(grad_input, expected[0])
    np.testing.assert_array_equal(layer.weight.grad, expected[1])
    with pytest.raises(ValueError, match="output_gradient"):
        layer.backward(np.ones((4, 3, 5, 5), np.float32))
