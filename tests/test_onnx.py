"""ONNX export: onnxruntime, an independent implementation of every operator,
computes what ``predict`` computes, for each layer kind and whole networks."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyconv import (
    AveragePooling,
    BatchNormalization,
    Convolution,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling,
    Layer,
    LeakyReLU,
    MaxPooling,
    ReLU,
    Reshape,
    Residual,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    fold_batch_norm,
)
from cyconv.cli import build_lenet, main
from cyconv.testing import conv2d_configs, pool2d_configs

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from cyconv.onnx import to_model  # noqa: E402  (needs onnx)


def run_onnx(source, x):
    """Run an ONNX model (a ModelProto or a file) in onnxruntime on one thread."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if isinstance(source, onnx.ModelProto):
        source = source.SerializeToString()
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.asarray(x, dtype=np.float32)})[0]


def assert_float32_close(actual, expected):
    """Equal up to float32 rounding: a few units in the last place of the
    largest magnitude in play, which a wrong layout or formula misses by far."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=4e-6 * scale)


def assert_exports(model, x, input_shape=None):
    """onnxruntime's output equals predict's at batch 1 and at batch N."""
    proto = to_model(model, input_shape)
    for batch in (x[:1], x):
        assert_float32_close(run_onnx(proto, batch), model.predict(batch))
    return proto


def random_input(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def randomize(model, seed=1):
    """Non-zero biases too, so that a bias left out of the graph shows."""
    rng = np.random.default_rng(seed)
    for parameter in model.parameters():
        parameter.value[...] = rng.standard_normal(parameter.value.shape)
    return model


# -- one layer kind at a time ------------------------------------------------

@settings(max_examples=25)
@given(config=conv2d_configs(max_batch=3), bias=st.booleans())
def test_convolution_stride_padding_dilation_groups(config, bias):
    n, c, h, w = config.x_shape
    f, _, kh, kw = config.weight_shape
    layer = Convolution((c, h, w), (kh, kw), f, bias=bias, rng=0, **config.kwargs)
    model = randomize(Sequential([layer]))
    assert_exports(model, random_input(config.x_shape))


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [(1, 2), "same", 0])
def test_convolution_padding_modes(padding_mode, padding):
    layer = Convolution((2, 6, 7), (3, 4), 3, padding=padding, padding_mode=padding_mode, rng=0)
    proto = assert_exports(randomize(Sequential([layer])), random_input((4, 2, 6, 7)))
    expected_opset = 19 if padding_mode == "circular" else 17
    assert proto.opset_import[0].version == expected_opset


@settings(max_examples=40)
@given(config=pool2d_configs())
def test_max_pooling(config):
    x = random_input(config.x_shape)
    assert_exports(Sequential([MaxPooling(**config.kwargs)]), x, config.x_shape[1:])


@settings(max_examples=40)
@given(config=pool2d_configs(), count_include_pad=st.booleans())
def test_average_pooling(config, count_include_pad):
    x = random_input(config.x_shape)
    layer = AveragePooling(**config.kwargs, count_include_pad=count_include_pad)
    assert_exports(Sequential([layer]), x, config.x_shape[1:])


@pytest.mark.parametrize("bias", [True, False])
def test_dense(bias):
    model = randomize(Sequential([Dense(7, 5, bias=bias, rng=0)]))
    assert_exports(model, random_input((6, 7)))


@pytest.mark.parametrize("activation", [ReLU, Sigmoid, Tanh, Softmax])
def test_activations(activation):
    x = 4 * random_input((5, 3, 4, 6))
    assert_exports(Sequential([activation()]), x, x.shape[1:])


def test_softmax_after_dense_normalises_each_sample():
    model = randomize(Sequential([Dense(4, 6, rng=0), Softmax()]))
    proto = assert_exports(model, random_input((9, 4)))
    np.testing.assert_allclose(run_onnx(proto, random_input((3, 4))).sum(axis=1), 1, rtol=1e-6)


def test_flatten_and_reshape():
    x = random_input((3, 2, 3, 4))
    model = Sequential([Flatten(), Reshape((24,), (4, 3, 2)), Reshape((4, 3, 2), (2, 12))])
    proto = assert_exports(model, x, (2, 3, 4))
    assert [node.op_type for node in proto.graph.node] == [
        "Flatten", "Reshape", "Reshape"]


# -- whole networks ------------------------------------------------------------

def test_lenet_trained_a_little():
    rng = np.random.default_rng(0)
    model = build_lenet(np.float32, rng)
    x = rng.random((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    model.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=False)
    assert_exports(model, x[:20])


def test_tutorial_network():
    # The tutorial's classifier, with a batch axis: conv, sigmoid, reshape,
    # dense, sigmoid, dense, sigmoid.
    model = Sequential([
        Convolution((1, 28, 28), 3, 5, rng=0), Sigmoid(), Reshape((5, 26, 26), (5 * 26 * 26,)),
        Dense(5 * 26 * 26, 100, rng=0), Sigmoid(), Dense(100, 2, rng=0), Sigmoid(),
    ])
    assert_exports(model, np.random.default_rng(0).random((5, 1, 28, 28)))


def test_a_deeper_network_of_every_layer_kind():
    model = randomize(Sequential([
        Convolution((3, 17, 15), 3, 6, padding="same", padding_mode="reflect", rng=0),
        Tanh(),
        AveragePooling(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        Convolution((6, 9, 8), (2, 3), 4, stride=(1, 2), dilation=(2, 1), groups=2, rng=0),
        ReLU(),
        MaxPooling(2, ceil_mode=True),
        Flatten(),
        Dense(4 * 4 * 2, 8, rng=0),
        Sigmoid(),
        Dense(8, 3, rng=0),
        Softmax(),
    ]), seed=3)
    for parameter in model.parameters():
        parameter.value *= 0.3  # keeps the sigmoid and softmax away from saturation
    assert_exports(model, random_input((7, 3, 17, 15)))


def test_a_nested_sequential():
    inner = Sequential([Dense(5, 4, rng=0), Tanh(), Dense(4, 4, rng=1)])
    model = randomize(Sequential([inner, ReLU(), Dense(4, 2, rng=2)]))
    proto = assert_exports(model, random_input((6, 5)))
    assert [node.name for node in proto.graph.node][:3] == ["layer0.0", "layer0.1", "layer0.2"]


def test_residual_blocks_add_their_input():
    model = randomize(Sequential([
        Convolution(kernel_size=3, depth=4, padding=1, rng=0),
        Residual([Convolution(kernel_size=3, depth=4, padding=1, rng=1), ReLU(),
                  Residual([Convolution(kernel_size=1, depth=4, rng=2)])]),
        Flatten(), Dense(output_size=3, rng=3),
    ], input_shape=(2, 5, 6)), seed=2)
    proto = assert_exports(model, random_input((4, 2, 5, 6)))
    assert [node.op_type for node in proto.graph.node] == [
        "Conv", "Conv", "Relu", "Conv", "Add", "Add", "Flatten", "Gemm"]


def test_export_leaves_every_layer_in_its_mode():
    model = Sequential([Dense(3, 3, rng=0), Residual([Dense(3, 3, rng=1)])])
    to_model(model)
    assert model.training and model.layers[1].layers[0].training
    model.layers[1].eval()
    to_model(model)
    assert model.training and model.layers[0].training
    assert not model.layers[1].training and not model.layers[1].layers[0].training


def test_float64_model_runs_as_float32():
    model = randomize(Sequential([
        Convolution((2, 8, 8), 3, 4, padding=1, dtype=np.float64, rng=0), ReLU(),
        MaxPooling(2), Flatten(), Dense(64, 3, dtype=np.float64, rng=0),
    ]))
    x = random_input((5, 2, 8, 8), dtype=np.float64)
    proto = assert_exports(model, x)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in proto.graph.initializer)


def test_the_graph_has_a_free_batch_axis_and_passes_the_full_check():
    model = Sequential([Convolution((1, 5, 5), 3, 2, rng=0), Flatten()])
    proto = to_model(model)
    shape = proto.graph.input[0].type.tensor_type.shape.dim
    assert shape[0].dim_param == "N" and [d.dim_value for d in shape[1:]] == [1, 5, 5]
    onnx.checker.check_model(proto, full_check=True)
    for batch in (1, 2, 33):
        assert run_onnx(proto, np.zeros((batch, 1, 5, 5))).shape == (batch, 18)


# -- the layers of the training library's second wave ----------------------------

def test_batch_normalization_uses_the_running_statistics():
    for shape, layers in (((3, 5, 4), [BatchNormalization(eps=1e-3)]),
                          ((6,), [BatchNormalization()])):
        model = Sequential(layers, input_shape=shape)
        rng = np.random.default_rng(0)
        bn = model.layers[0]
        bn.gamma.value[...] = rng.standard_normal(bn.gamma.value.shape)
        bn.beta.value[...] = rng.standard_normal(bn.beta.value.shape)
        bn.running_mean.value[...] = rng.standard_normal(bn.running_mean.value.shape)
        bn.running_var.value[...] = rng.random(bn.running_var.value.shape) + 0.1
        x = random_input((5,) + shape)
        before = bn.running_mean.value.copy()
        assert_exports(model, x)
        np.testing.assert_array_equal(bn.running_mean.value, before)   # export changes nothing
        assert model.training


@pytest.mark.parametrize("negative_slope", [0.01, 0.2, 0.0])
def test_leaky_relu(negative_slope):
    x = 3 * random_input((4, 2, 3, 3))
    assert_exports(Sequential([LeakyReLU(negative_slope)]), x, x.shape[1:])


def test_dropout_is_the_identity():
    model = randomize(Sequential([Dense(5, 4, rng=0), Dropout(0.5, rng=0)]))
    proto = assert_exports(model, random_input((6, 5)))
    assert [node.op_type for node in proto.graph.node] == ["Gemm", "Identity"]


def test_global_average_pooling():
    x = random_input((3, 4, 5, 7))
    proto = assert_exports(Sequential([GlobalAveragePooling()]), x, x.shape[1:])
    assert run_onnx(proto, x).shape == (3, 4)


def test_a_trained_batch_norm_residual_network():
    rng = np.random.default_rng(0)
    model = Sequential([
        Convolution(kernel_size=3, depth=8, padding=1, rng=rng), BatchNormalization(), ReLU(),
        Residual([Convolution(kernel_size=3, depth=8, padding=1, rng=rng), BatchNormalization(),
                  LeakyReLU(0.1), Dropout(0.2, rng=rng),
                  Convolution(kernel_size=3, depth=8, padding=1, rng=rng), BatchNormalization()]),
        ReLU(), MaxPooling(2), GlobalAveragePooling(), Dense(output_size=3, rng=rng),
    ], input_shape=(2, 8, 8))
    x = rng.standard_normal((96, 2, 8, 8)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 1, :4].mean(axis=(1, 2)) > 0)
    history = model.fit(x, y, epochs=3, batch_size=16, seed=0, verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    for layer in (model.layers[1], model.layers[3].layers[1]):
        assert not np.allclose(layer.running_var.value, 1)   # trained statistics
    proto = assert_exports(model, x[:17])
    # Folded for inference: fewer nodes, and onnxruntime still agrees with
    # the folded model, which agrees with the model to rounding.
    folded = fold_batch_norm(model)
    folded_proto = assert_exports(folded, x[:17])
    assert len(folded_proto.graph.node) < len(proto.graph.node)
    assert not any(node.op_type == "BatchNormalization" for node in folded_proto.graph.node)
    assert_float32_close(folded.predict(x[:17]), model.predict(x[:17]))


# -- files and the command line -------------------------------------------------

def test_to_onnx_writes_a_file_onnxruntime_runs(tmp_path):
    model = randomize(Sequential([Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=0)]))
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    onnx.checker.check_model(str(path), full_check=True)
    x = random_input((6, 3))
    assert_float32_close(run_onnx(str(path), x), model.predict(x))


def test_cli_export(tmp_path, capsys):
    model = build_lenet(np.float32, np.random.default_rng(5))
    saved, exported = tmp_path / "model.npz", tmp_path / "model.onnx"
    model.save(saved)
    assert main(["export", str(saved), str(exported)]) == 0
    assert "model.onnx" in capsys.readouterr().out
    x = np.random.default_rng(0).random((4, 1, 28, 28))
    assert_float32_close(run_onnx(str(exported), x), model.predict(x))


def test_cli_export_of_a_missing_model_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.npz"), str(tmp_path / "m.onnx")]) == 1
    assert capsys.readouterr().err.startswith("cyconv: error: no such file")


# -- what cannot be exported -----------------------------------------------------

class Double(Layer):
    def forward(self, input):
        return 2 * np.asarray(input)

    def backward(self, output_gradient, learning_rate=None):
        return 2 * np.asarray(output_gradient)


class MyConvolution(Convolution):
    """A subclass may compute something else: it is not exported as its base."""


def test_a_users_layer_is_named():
    model = Sequential([Dense(3, 3, rng=0), Double()])
    with pytest.raises(ValueError, match=r"layer 1 \(Double\).*built-in"):
        to_model(model)
    subclassed = Sequential([MyConvolution((1, 4, 4), 3, 1, rng=0)])
    with pytest.raises(ValueError, match=r"layer 0 \(MyConvolution\)"):
        to_model(subclassed)


def test_an_unknown_input_shape_asks_for_one():
    with pytest.raises(ValueError, match="input_shape="):
        to_model(Sequential([ReLU()]))
    with pytest.raises(ValueError, match=r"does not take input of shape \(3, 5, 5\)"):
        to_model(Sequential([Convolution((2, 5, 5), 3, 1, rng=0)]), input_shape=(3, 5, 5))


def test_without_onnx_the_error_says_what_to_install(hide_package, tmp_path):
    hide_package("onnx")
    with pytest.raises(ImportError, match=r'pip install "cyconv\[onnx\]"'):
        Sequential([Dense(2, 2, rng=0)]).to_onnx(tmp_path / "m.onnx")


def test_importing_cyconv_does_not_import_onnx():
    code = "import sys, cyconv; print('onnx' in sys.modules)"
    # Run outside the source tree, so that the installed cyconv is imported.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=os.path.dirname(__file__))
    assert result.stdout.strip() == "False"
