"""cyconv.testing for users' own layers: strategies straight into @given, a
finite-difference step on the input's scale with advice when it is the
wrong one, and random layers held still during a gradient check."""

import numpy as np
import pytest
from hypothesis import given, settings

from cyconv import Dense, Layer, Parameter, Sequential, functional
from cyconv.testing import (
    arrays,
    check_layer_gradients,
    conv2d_cases,
    pool2d_cases,
    relative_step,
)


@settings(max_examples=20)
@given(conv2d_cases(dtype=np.float32), pool2d_cases(ties=True), arrays((3, 4)))
def test_strategies_go_straight_into_given(conv_case, pool_case, array):
    config, x, weight, bias = conv_case
    assert x.dtype == weight.dtype == bias.dtype == np.float32
    assert functional.conv2d(x, weight, bias, **config.kwargs).shape == config.output_shape
    config, x = pool_case
    assert functional.max_pool2d(x, **config.kwargs).shape == config.output_shape
    assert np.all(x == np.round(x))   # ties: small integers
    assert array.shape == (3, 4) and array.dtype == np.float64


class Sine(Layer):
    """sin(frequency * x), a layer whose curvature sets the step it needs."""

    def __init__(self, frequency, wrong=False):
        super().__init__()
        self.frequency, self.wrong = frequency, wrong

    def forward(self, input):
        self.input = np.asarray(input, dtype=np.float64)
        return np.sin(self.frequency * self.input)

    def backward(self, output_gradient, learning_rate=None):
        factor = 1.01 if self.wrong else 1.0
        return factor * self.frequency * np.cos(self.frequency * self.input) * output_gradient


def test_the_default_step_follows_the_inputs_scale():
    x = np.random.default_rng(0).uniform(-1e-3, 1e-3, (2, 3))
    assert relative_step(x) == pytest.approx(1e-3 * np.max(np.abs(x)))
    check_layer_gradients(Sine(500.0), x)   # a step of about 1e-6: fine
    with pytest.raises(AssertionError, match=r"truncation error.*Try step=") as info:
        check_layer_gradients(Sine(500.0), x, step=1e-3)   # sin turns a lot within 1e-3
    suggested = float(str(info.value).split("Try step=")[1].rstrip("."))
    check_layer_gradients(Sine(500.0), x, step=suggested)


def test_a_wrong_backward_is_called_so():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3))
    with pytest.raises(AssertionError, match="backward itself looks wrong"):
        check_layer_gradients(Sine(1.0, wrong=True), x)


class Dropout(Layer):
    """Inverted dropout drawing its mask from a Generator (or numpy's
    global state), identity in eval mode."""

    def __init__(self, rate=0.5, rng=None):
        super().__init__()
        self.rate, self.rng, self.training = rate, rng, True

    def train(self, mode=True):
        self.training = mode
        return self

    def forward(self, input):
        self.input = np.asarray(input, dtype=np.float64)
        if not self.training:
            self.mask = np.ones_like(self.input)
        else:
            draw = self.rng.random if self.rng is not None else np.random.random
            self.mask = (draw(self.input.shape) >= self.rate) / (1 - self.rate)
        return self.input * self.mask

    def backward(self, output_gradient, learning_rate=None):
        return output_gradient * self.mask


@pytest.mark.parametrize("rng", [np.random.default_rng(1), np.random.RandomState(1), None])
def test_a_random_layer_is_held_to_one_draw(rng):
    x = np.random.default_rng(0).standard_normal((4, 5))
    errors = check_layer_gradients(Dropout(rng=rng), x)
    assert errors["input"] < 1e-8
    with pytest.raises(AssertionError):
        check_layer_gradients(Dropout(rng=rng), x, freeze_randomness=False)


def test_eval_mode_for_the_check_and_the_mode_restored():
    layer = Dropout(rng=np.random.default_rng(2))
    x = np.random.default_rng(0).standard_normal((4, 5))
    check_layer_gradients(layer, x, training=False, freeze_randomness=False)
    assert layer.training is True

    class NoModes:   # forward and backward only, not a cyconv Layer
        def forward(self, input):
            return 2 * np.asarray(input)

        def backward(self, output_gradient, learning_rate=None):
            return 2 * np.asarray(output_gradient)

    check_layer_gradients(NoModes(), x)
    with pytest.raises(TypeError, match="train"):
        check_layer_gradients(NoModes(), x, training=False)


class Scale(Layer):
    """The README's "write and test your own layer" example, verbatim."""

    def __init__(self, features, dtype="float64"):
        super().__init__()
        self.features, self.dtype = features, np.dtype(dtype)
        self.weight = Parameter("weight", np.ones(features, dtype=self.dtype))

    def parameters(self):
        return [self.weight]

    def get_config(self):                    # what rebuilds it: Scale(**config)
        return {"features": self.features, "dtype": self.dtype.name}

    def forward(self, input):
        self.input = np.asarray(input, dtype=self.dtype)
        return self.input * self.weight.value

    def backward(self, output_gradient, learning_rate=None):
        grad = np.asarray(output_gradient, dtype=self.dtype)
        self.weight.grad = (grad * self.input).reshape(-1, self.features).sum(axis=0)
        grad_input = grad * self.weight.value
        self.apply_learning_rate(learning_rate)   # the tutorial's backward(grad, lr)
        return grad_input


@settings(max_examples=25)
@given(arrays((4, 3)), arrays((3,)))
def test_the_readme_layer_passes_its_gradient_check(x, weight):
    layer = Scale(3)
    layer.weight.value[...] = weight
    check_layer_gradients(layer, x)


def test_the_readme_layer_trains_saves_and_honours_a_learning_rate(tmp_path):
    model = Sequential([Dense(3, 3, dtype=np.float64, rng=0), Scale(3)])
    x = np.random.default_rng(0).standard_normal((32, 3))
    history = model.fit(x, 2 * x, loss="mse", epochs=20, verbose=False, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    model.save(tmp_path / "scaled.npz")
    again = Sequential.load(tmp_path / "scaled.npz", custom_layers={"Scale": Scale})
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    layer = Scale(3)
    layer.forward(np.ones((2, 3)))
    layer.backward(np.ones((2, 3)), learning_rate=0.5)
    np.testing.assert_array_equal(layer.weight.value, [0.0, 0.0, 0.0])   # 1 - 0.5 * 2


def test_cyconvs_own_dropout_is_held_still_or_checked_in_eval_mode():
    from cyconv import Dropout

    x = np.random.default_rng(0).standard_normal((3, 6))
    check_layer_gradients(Dropout(0.4, rng=3), x)
    check_layer_gradients(Dropout(0.4), x)                 # numpy's global random state
    check_layer_gradients(Dropout(0.4, rng=3), x, training=False, freeze_randomness=False)
    with pytest.raises(AssertionError):
        check_layer_gradients(Dropout(0.4, rng=3), x, freeze_randomness=False)
