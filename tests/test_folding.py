"""fold_batch_norm: a model with its BatchNormalization layers folded into
the Convolution or Dense layer before them computes what the model
computes in eval mode.  References: the float64 convolution of
tests/reference.py with the normalisation's formula written out, and the
unfolded model in float64."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from cyconv import (
    BatchNormalization,
    Convolution,
    Dense,
    Flatten,
    MaxPooling,
    ReLU,
    Residual,
    Sequential,
    fold_batch_norm,
)
from cyconv.nn.containers import _walk as _all_layers
from cyconv.testing import conv2d_configs
from test_conv import same_padding


def _trained_statistics(model, seed):
    """Give every BatchNormalization statistics and parameters unlike the
    defaults, as training leaves them."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if type(layer) is BatchNormalization:
            c = layer.num_features
            layer.gamma.value[:] = rng.uniform(0.5, 2.0, c)
            layer.beta.value[:] = rng.uniform(-1.0, 1.0, c)
            layer.running_mean.value[:] = rng.uniform(-1.0, 1.0, c)
            layer.running_var.value[:] = rng.uniform(0.2, 3.0, c)
    return model


def _network(dtype, bias=True):
    return Sequential([
        Convolution((2, 10, 10), 3, 4, padding=1, bias=bias, dtype=dtype, rng=0),
        BatchNormalization(dtype=dtype), ReLU(), MaxPooling(2),
        Residual([Convolution(kernel_size=3, depth=4, padding=1, dtype=dtype, rng=1),
                  BatchNormalization(dtype=dtype)]),
        Flatten(), Dense(output_size=6, bias=bias, dtype=dtype, rng=2),
        BatchNormalization(dtype=dtype), ReLU(), Dense(output_size=3, dtype=dtype, rng=3),
    ], input_shape=(2, 10, 10))


def _eval_reference(conv, norm, x, sides=(1, 1, 1, 1)):
    """conv (padding ``sides``) followed by norm in eval mode, in float64,
    from the formulas."""
    bias = None if conv.bias is None else conv.bias.value
    y = reference.conv2d(x, conv.weight.value, bias, conv.stride, sides, conv.dilation,
                         conv.groups)
    shape = (1, -1, 1, 1)
    mean = norm.running_mean.value.astype(np.float64).reshape(shape)
    var = norm.running_var.value.astype(np.float64).reshape(shape)
    gamma = norm.gamma.value.astype(np.float64).reshape(shape)
    beta = norm.beta.value.astype(np.float64).reshape(shape)
    return (y - mean) / np.sqrt(var + norm.eps) * gamma + beta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_folded_pair_against_formula(dtype, bias):
    model = _trained_statistics(Sequential([
        Convolution((3, 7, 8), 3, 5, padding=1, bias=bias, dtype=dtype, rng=0),
        BatchNormalization(eps=1e-3, dtype=dtype)]), seed=1)
    x = np.random.default_rng(2).standard_normal((4, 3, 7, 8)).astype(dtype)
    expected = _eval_reference(model.layers[0], model.layers[1], x)
    folded = fold_batch_norm(model)
    assert [type(layer) for layer in folded.layers] == [Convolution]
    assert folded.layers[0].bias is not None
    tol = 1e-5 if dtype == np.float32 else 1e-12
    got = folded.predict(x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol * np.abs(expected).max())


@settings(max_examples=40, deadline=None)
@given(config=conv2d_configs(max_batch=2), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_fold_any_convolution(config, bias, seed):
    """Strides, dilations, groups (each filter its own scale), "same"
    padding: the folded layer gives the formula applied to the float64
    reference convolution (scipy.signal's correlate2d, tests/test_conv.py)."""
    n, c, h, w = config.x_shape
    f, _, kh, kw = config.weight_shape
    conv = Convolution((c, h, w), (kh, kw), f, bias=bias, dtype=np.float64, rng=seed,
                       **config.kwargs)
    model = _trained_statistics(Sequential([conv, BatchNormalization(dtype=np.float64)]), seed)
    x = np.random.default_rng(seed).standard_normal(config.x_shape)
    expected = _eval_reference(conv, model.layers[1], x, same_padding(config))
    got = fold_batch_norm(model).predict(x)
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=1e-12 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folded_network_computes_the_eval_model(dtype):
    model = _trained_statistics(_network(dtype), seed=3)
    x = np.random.default_rng(4).standard_normal((5, 2, 10, 10)).astype(dtype)
    expected = model.eval().predict(x).astype(np.float64)
    folded = fold_batch_norm(model.train())
    names = [type(layer).__name__ for layer in folded.layers]
    assert names == ["Convolution", "ReLU", "MaxPooling", "Residual", "Flatten", "Dense",
                     "ReLU", "Dense"]
    assert [type(layer) for layer in folded.layers[3].layers] == [Convolution]
    assert not any(layer.training for layer in _all_layers(folded))
    assert model.training  # the model itself is left as it was
    got = folded.predict(x)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol * np.abs(expected).max())


def test_model_is_not_changed():
    model = _trained_statistics(_network(np.float64), seed=5)
    before = copy.deepcopy([p.value for p in model.parameters()])
    count = len(model.layers)
    folded = fold_batch_norm(model)
    assert len(model.layers) == count
    for old, new in zip(before, model.parameters()):
        np.testing.assert_array_equal(old, new.value)
    shared = {id(p.value) for p in model.parameters()} & {id(p.value) for p in folded.parameters()}
    assert not shared
    # and the fold changed the weights it folded into
    assert not np.array_equal(folded.layers[0].weight.value, model.layers[0].weight.value)


def test_layers_without_a_preceding_conv_or_dense_stay():
    model = _trained_statistics(Sequential([
        BatchNormalization(dtype=np.float64), Convolution((2, 6, 6), 3, 3, dtype=np.float64,
                                                          rng=0),
        ReLU(), BatchNormalization(dtype=np.float64)], input_shape=(2, 6, 6)), seed=6)
    folded = fold_batch_norm(model)
    assert [type(layer) for layer in folded.layers] == [type(layer) for layer in model.layers]
    x = np.random.default_rng(7).standard_normal((2, 2, 6, 6))
    np.testing.assert_array_equal(folded.predict(x), model.eval().predict(x))


def test_folded_model_trains_saves_and_loads(tmp_path):
    model = _trained_statistics(_network(np.float32, bias=False), seed=8)
    folded = fold_batch_norm(model)
    x = np.random.default_rng(9).standard_normal((8, 2, 10, 10)).astype(np.float32)
    path = tmp_path / "folded.npz"
    folded.save(path)
    loaded = Sequential.load(path)
    np.testing.assert_array_equal(loaded.predict(x), folded.predict(x))
    history = folded.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, optimizer="sgd",
                         verbose=False, seed=0)
    assert np.isfinite(history["loss"][-1])


def test_first_layer_keeps_no_input_gradient():
    model = _network(np.float32)
    assert model.layers[0].needs_input_gradient is False
    assert fold_batch_norm(model).layers[0].needs_input_gradient is False


def test_refuses_what_it_cannot_fold():
    with pytest.raises(TypeError, match="fold_batch_norm takes a model"):
        fold_batch_norm(Convolution((1, 5, 5), 3, 2))
    unbuilt = Sequential([Dense(output_size=3), BatchNormalization()])
    with pytest.raises(ValueError, match="not built yet"):
        fold_batch_norm(unbuilt)
    model = Sequential([Dense(4, 3), BatchNormalization(eps=0.0)])
    model.layers[1].running_var.value[1] = 0.0
    with pytest.raises(ValueError, match="running_var \\+ eps must be positive"):
        fold_batch_norm(model)
    model.layers[1].running_var.value[1] = np.nan
    with pytest.raises(ValueError, match="running_var \\+ eps must be positive"):
        fold_batch_norm(model)
