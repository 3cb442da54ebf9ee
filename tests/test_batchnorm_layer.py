"""The BatchNormalization layer: gradients by finite differences in both
modes, running statistics against the float64 twin, eval mode, shapes,
configuration, and PyTorch's BatchNorm1d/2d where installed."""

import numpy as np
import pytest

import reference as ref
from cyconv import BatchNormalization
from cyconv.testing import check_layer_gradients


def _layer(num_features=3, **kwargs):
    return BatchNormalization(num_features, dtype=np.float64, **kwargs)


@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 4, 2), (3, 4, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_gradients_match_finite_differences(shape, training):
    rng = np.random.default_rng(0)
    layer = _layer()
    layer.gamma.value[...] = rng.standard_normal(3)
    layer.beta.value[...] = rng.standard_normal(3)
    layer.running_mean.value[...] = rng.standard_normal(3)
    layer.running_var.value[...] = rng.uniform(0.5, 2, 3)
    layer.train(training)
    x = rng.standard_normal(shape) * 2 + 1
    if training:
        # Each forward of the check updates the running statistics; only
        # the batch's own enter the output, so the gradient is unaffected.
        check_layer_gradients(layer, x, rtol=1e-7, atol=1e-8)
    else:
        before = [b.value.copy() for b in layer.buffers()]
        check_layer_gradients(layer, x, rtol=1e-7, atol=1e-8)
        for buffer, value in zip(layer.buffers(), before):
            np.testing.assert_array_equal(buffer.value, value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_running_statistics_over_steps_and_eval_mode(dtype):
    rng = np.random.default_rng(1)
    layer = BatchNormalization(4, momentum=0.2, eps=1e-3, dtype=dtype)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    layer.gamma.value[...] = gamma
    layer.beta.value[...] = beta
    mean, var = np.zeros(4), np.ones(4)
    for step in range(5):
        x = rng.standard_normal((6, 4, 3, 3)) * (step + 1) - step
        out = layer.forward(x)
        expected, mean, var = ref.batch_norm(x.astype(dtype), gamma.astype(dtype),
                                             beta.astype(dtype), mean, var, True, 0.2, 1e-3)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(layer.running_mean.value, mean, rtol=tolerance)
    np.testing.assert_allclose(layer.running_var.value, var, rtol=tolerance)
    layer.eval()
    x = rng.standard_normal((2, 4, 3, 3))
    scale = gamma.astype(dtype) / np.sqrt(layer.running_var.value.astype(np.float64) + 1e-3)
    shift = beta.astype(dtype) - layer.running_mean.value * scale
    np.testing.assert_allclose(layer.forward(x), x.astype(dtype) * scale[:, None, None]
                               + shift[:, None, None], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.running_mean.value, mean, rtol=tolerance)


def test_backward_follows_the_mode_of_its_forward():
    """A forward in training mode is differentiated as such even if the
    layer is switched to eval mode before backward."""
    rng = np.random.default_rng(2)
    x, grad = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    layer = _layer()
    layer.forward(x)
    layer.eval()
    trained = layer.backward(grad)
    fresh = _layer()
    fresh.forward(x)
    np.testing.assert_array_equal(trained, fresh.backward(grad))


def test_one_sample_is_a_batch_of_one():
    x = np.arange(12.0).reshape(3, 2, 2)
    layer = _layer()
    out = layer.forward(x)
    assert out.shape == (3, 2, 2)
    np.testing.assert_array_equal(out, _layer().forward(x[np.newaxis])[0])
    assert layer.backward(np.ones((3, 2, 2))).shape == (3, 2, 2)


def test_one_value_per_channel_raises_in_training_only():
    layer = _layer()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.forward(np.ones((1, 3)))
    layer.eval()
    np.testing.assert_allclose(layer.forward(np.ones((1, 3))), np.ones((1, 3)), rtol=1e-5)


def test_parameters_buffers_and_config():
    layer = BatchNormalization(5)
    assert [p.name for p in layer.parameters()] == ["gamma", "beta"]
    assert [b.name for b in layer.buffers()] == ["running_mean", "running_var"]
    assert all(p.value.dtype == np.float32 for p in layer.parameters() + layer.buffers())
    np.testing.assert_array_equal(layer.gamma.value, np.ones(5))
    np.testing.assert_array_equal(layer.running_var.value, np.ones(5))
    config = layer.get_config()
    assert config == {"num_features": 5, "momentum": 0.1, "eps": 1e-5, "dtype": "float32"}
    again = BatchNormalization(**config)
    assert again.get_config() == config


def test_learning_rate_takes_a_plain_step():
    rng = np.random.default_rng(3)
    x, grad = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    layer = _layer()
    layer.forward(x)
    layer.backward(grad, learning_rate=0.5)
    np.testing.assert_allclose(layer.gamma.value, 1 - 0.5 * layer.gamma.grad)
    np.testing.assert_allclose(layer.beta.value, -0.5 * layer.beta.grad)


@pytest.mark.parametrize("x, words", [
    (np.ones((2, 4)), r"BatchNormalization\(3\) expects 3 channels on axis 1"),
    (np.ones((4, 2, 2)), "expects 3 channels on axis 0"),
    (np.ones((2, 3, 2, 2, 2)), "expects input of shape"),
    (np.float64(1.0), "expects input of shape"),
])
def test_wrong_shapes(x, words):
    with pytest.raises(ValueError, match=words):
        _layer().forward(x)


@pytest.mark.parametrize("make, error, words", [
    (lambda: BatchNormalization(0), ValueError, "num_features must be >= 1"),
    (lambda: BatchNormalization(2.0), TypeError, "num_features must be an int"),
    (lambda: BatchNormalization(2, momentum=1.1), ValueError, r"momentum must be in \[0, 1\]"),
    (lambda: BatchNormalization(2, eps=-1.0), ValueError, "eps must be finite and >= 0"),
    (lambda: BatchNormalization(2, eps="1e-5"), TypeError, "eps must be a real number"),
    (lambda: BatchNormalization(2, dtype=np.int32), TypeError, "dtype must be float32"),
    (lambda: BatchNormalization(2, 0.1, 1e-5, np.float64), TypeError, "positional"),
])
def test_bad_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 5)])
def test_same_as_torch_over_training_steps_and_in_eval(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    ours = BatchNormalization(3, momentum=0.3, dtype=np.float64)
    theirs = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(
        3, momentum=0.3, dtype=torch.float64)
    for _ in range(3):
        x, grad = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape)
        tx = torch.tensor(x, requires_grad=True)
        tout = theirs(tx)
        tout.backward(torch.tensor(grad))
        np.testing.assert_allclose(ours.forward(x), tout.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(ours.backward(grad), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours.gamma.grad, theirs.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(ours.beta.grad, theirs.bias.grad.numpy(), rtol=1e-10)
        theirs.weight.grad = theirs.bias.grad = None
    np.testing.assert_allclose(ours.running_mean.value, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var.value, theirs.running_var.numpy(), rtol=1e-12)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(ours.forward(x), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)
