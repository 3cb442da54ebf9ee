"""LeakyReLU against its definition in PyTorch, finite differences and
torch.nn.functional.leaky_relu where installed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyconv import LeakyReLU
from cyconv.testing import check_layer_gradients


def reference(x, slope):
    """torch.nn.LeakyReLU's documented formula: max(0, x) + slope * min(0, x)."""
    x = np.asarray(x, np.float64)
    return np.maximum(0, x) + slope * np.minimum(0, x)


@given(st.integers(0, 2**32 - 1), st.sampled_from([0.01, 0.2, 0.0, -0.5, 1.5]),
       st.sampled_from([np.float32, np.float64]),
       st.sampled_from([(7,), (3, 4), (2, 3, 4, 5)]))
def test_forward_and_backward_match_the_definition(seed, slope, dtype, shape):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    layer = LeakyReLU(slope)
    out = layer.forward(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, reference(x, slope), rtol=1e-6 if dtype == np.float32 else 0)
    grad_input = layer.backward(grad)
    assert grad_input.dtype == dtype
    expected = np.where(x > 0, grad.astype(np.float64), slope * grad.astype(np.float64))
    np.testing.assert_allclose(grad_input, expected, rtol=1e-6 if dtype == np.float32 else 0)


def test_default_slope_and_config():
    layer = LeakyReLU()
    assert layer.negative_slope == 0.01
    assert layer.get_config() == {"negative_slope": 0.01}
    assert LeakyReLU(**LeakyReLU(0.3).get_config()).negative_slope == 0.3


def test_gradients_match_finite_differences():
    x = np.random.default_rng(0).standard_normal((3, 5))
    x[np.abs(x) < 0.01] = 0.5  # away from the kink
    check_layer_gradients(LeakyReLU(0.2), x)


def test_gradient_at_zero_is_the_slope_and_nan_propagates():
    layer = LeakyReLU(0.1)
    out = layer.forward(np.array([0.0, np.nan, -np.inf, np.inf]))
    np.testing.assert_array_equal(out, [0.0, np.nan, -np.inf, np.inf])
    np.testing.assert_allclose(layer.backward(np.ones(4)), [0.1, 0.1, 0.1, 1.0])


def test_integer_input_computes_in_float64():
    assert LeakyReLU().forward(np.array([-100, 3])).dtype == np.float64


@pytest.mark.parametrize("slope, error, words", [
    ("0.1", TypeError, "negative_slope must be a real number"),
    (True, TypeError, "negative_slope must be a real number"),
    (None, TypeError, "negative_slope must be a real number"),
    (float("nan"), ValueError, "negative_slope must be finite"),
    (float("inf"), ValueError, "negative_slope must be finite"),
])
def test_bad_slopes(slope, error, words):
    with pytest.raises(error, match=words):
        LeakyReLU(slope)


def test_bad_gradient_shape_and_input():
    layer = LeakyReLU()
    layer.forward(np.ones(3))
    with pytest.raises(ValueError, match="output_gradient of the output's shape"):
        layer.backward(np.ones(4))
    with pytest.raises(TypeError, match="real numbers"):
        layer.forward(np.ones(3, complex))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_as_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6)).astype(dtype)
    grad = rng.standard_normal((4, 6)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    tout = torch.nn.functional.leaky_relu(tx, 0.05)
    tout.backward(torch.tensor(grad))
    layer = LeakyReLU(0.05)
    np.testing.assert_array_equal(layer.forward(x), tout.detach().numpy())
    np.testing.assert_array_equal(layer.backward(grad), tx.grad.numpy())
