"""GlobalAveragePooling against the plane means, finite differences and
torch.nn.functional.adaptive_avg_pool2d where installed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyconv import GlobalAveragePooling
from cyconv.testing import check_layer_gradients


@given(st.integers(0, 2**32 - 1), st.sampled_from([np.float32, np.float64]),
       st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
       st.booleans())
def test_forward_is_the_plane_mean_and_backward_spreads_it(seed, dtype, shape, batched):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 10 + 3).astype(dtype)
    grad = rng.standard_normal(shape[:2]).astype(dtype)
    if not batched:
        x, grad = x[0], grad[0]
    layer = GlobalAveragePooling()
    out = layer.forward(x)
    assert out.dtype == dtype and out.shape == x.shape[:-2]
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, x.astype(np.float64).mean(axis=(-2, -1)), rtol=rtol,
                               atol=rtol * np.abs(x).max())
    grad_input = layer.backward(grad)
    assert grad_input.dtype == dtype and grad_input.shape == x.shape
    plane = x.shape[-1] * x.shape[-2]
    expected = np.broadcast_to(grad.astype(np.float64)[..., None, None] / plane, x.shape)
    np.testing.assert_allclose(grad_input, expected, rtol=rtol)


def test_gradients_match_finite_differences():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    check_layer_gradients(GlobalAveragePooling(), x)


def test_config_is_empty_and_rebuilds():
    assert GlobalAveragePooling().get_config() == {}


@pytest.mark.parametrize("x, error, words", [
    (np.ones((2, 3)), ValueError, r"\(N, C, H, W\) or \(C, H, W\)"),
    (np.ones((1, 2, 3, 4, 5)), ValueError, r"\(N, C, H, W\) or \(C, H, W\)"),
    (np.ones((2, 3, 0, 4)), ValueError, "empty axis"),
    (np.ones((2, 3, 4, 4), complex), TypeError, "real numbers"),
])
def test_bad_inputs(x, error, words):
    with pytest.raises(error, match=words):
        GlobalAveragePooling().forward(x)


def test_bad_gradient_shape():
    layer = GlobalAveragePooling()
    layer.forward(np.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"output_gradient of the output's shape \(2, 3\)"):
        layer.backward(np.ones((2, 3, 1, 1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_as_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    grad = rng.standard_normal((3, 4)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    tout = torch.nn.functional.adaptive_avg_pool2d(tx, 1).flatten(1)
    tout.backward(torch.tensor(grad))
    layer = GlobalAveragePooling()
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(layer.forward(x), tout.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.backward(grad), tx.grad.numpy(), rtol=rtol)
