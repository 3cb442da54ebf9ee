"""Dropout: the kept fraction, the scale, the same mask in backward, the
identity in eval mode, and masks reproducible from a seed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyconv import Dropout
from cyconv.testing import check_layer_gradients


@given(st.sampled_from([0.1, 0.3, 0.5, 0.9]), st.integers(0, 2**32 - 1),
       st.sampled_from([np.float32, np.float64]))
def test_kept_fraction_and_scale(rate, seed, dtype):
    x = np.random.default_rng(seed).uniform(1, 2, (40, 50)).astype(dtype)
    out = Dropout(rate, rng=seed).forward(x)
    assert out.dtype == dtype
    kept = out != 0
    # 2000 Bernoulli draws: the kept fraction is within 5 standard
    # deviations of 1 - rate (a false alarm once in millions of runs).
    spread = 5 * np.sqrt(rate * (1 - rate) / x.size)
    assert abs(kept.mean() - (1 - rate)) <= spread
    scale = dtype(1 / (1 - rate))
    np.testing.assert_array_equal(out[kept], x[kept] * scale)


def test_expected_output_is_the_input():
    x = np.full((200, 500), 3.0)
    assert abs(Dropout(0.4, rng=1).forward(x).mean() - 3.0) < 0.05


@pytest.mark.parametrize("shape", [(6,), (4, 5), (2, 3, 4, 5)])
def test_backward_uses_the_forward_mask(shape):
    rng = np.random.default_rng(2)
    layer = Dropout(0.5, rng=3)
    x = rng.uniform(1, 2, shape)
    out = layer.forward(x)
    grad = rng.standard_normal(shape)
    grad_input = layer.backward(grad)
    np.testing.assert_array_equal(grad_input, np.where(out != 0, grad * 2.0, 0.0))


def test_gradients_match_finite_differences():
    """With the mask fixed (a seed re-set before every forward), dropout is
    linear and its gradient is exact."""
    x = np.random.default_rng(4).standard_normal((3, 7))

    class Reseeded(Dropout):
        def forward(self, input):
            self._rng = np.random.default_rng(5)
            return super().forward(input)

    check_layer_gradients(Reseeded(0.3), x)


def test_reproducible_from_a_seed_and_different_across_calls():
    x = np.ones((10, 10))
    a, b = Dropout(0.5, rng=7), Dropout(0.5, rng=7)
    first = a.forward(x)
    np.testing.assert_array_equal(first, b.forward(x))
    second = a.forward(x)
    np.testing.assert_array_equal(second, b.forward(x))
    assert not np.array_equal(first, second)


def test_generator_and_global_state():
    x = np.ones((8, 8))
    generator_out = Dropout(0.5, rng=np.random.default_rng(9)).forward(x)
    np.testing.assert_array_equal(generator_out, Dropout(0.5, rng=9).forward(x))
    np.random.seed(11)
    first = Dropout(0.5).forward(x)
    np.random.seed(11)
    np.testing.assert_array_equal(first, Dropout(0.5).forward(x))


def test_rate_zero_is_the_identity_and_rate_one_zeroes_everything():
    x = np.arange(6.0).reshape(2, 3)
    layer = Dropout(0.0, rng=0)
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(np.ones((2, 3))), np.ones((2, 3)))
    layer = Dropout(1.0, rng=0)
    np.testing.assert_array_equal(layer.forward(x), np.zeros((2, 3)))
    np.testing.assert_array_equal(layer.backward(np.ones((2, 3))), np.zeros((2, 3)))


def test_eval_mode_is_the_identity_and_train_mode_returns():
    x = np.random.default_rng(6).standard_normal((5, 5))
    layer = Dropout(0.5, rng=0)
    assert layer.eval() is layer and not layer.training
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    assert layer.train() is layer and layer.training
    assert np.any(layer.forward(x) == 0)


def test_config_rebuilds():
    assert Dropout(0.25, rng=3).get_config() == {"rate": 0.25}
    assert Dropout(**Dropout(0.25).get_config()).rate == 0.25


@pytest.mark.parametrize("make, error, words", [
    (lambda: Dropout(1.5), ValueError, r"rate must be in \[0, 1\]"),
    (lambda: Dropout(-0.1), ValueError, "rate must be in"),
    (lambda: Dropout(float("nan")), ValueError, "rate must be in"),
    (lambda: Dropout("0.5"), TypeError, "rate must be a real number"),
    (lambda: Dropout(True), TypeError, "rate must be a real number"),
    (lambda: Dropout(0.5, rng="seed"), TypeError, "rng must be None, an int seed"),
    (lambda: Dropout(0.5, 0), TypeError, "positional"),
])
def test_bad_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_bad_input_and_gradient():
    layer = Dropout(0.5, rng=0)
    with pytest.raises(TypeError, match="real numbers"):
        layer.forward(np.ones(3, complex))
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="output_gradient of the output's shape"):
        layer.backward(np.ones((3, 2)))
    with pytest.raises(ValueError, match="learning_rate"):
        layer.backward(np.ones((2, 3)), learning_rate=-1.0)
