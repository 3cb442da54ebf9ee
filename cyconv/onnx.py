"""Export a :class:`cyconv.Sequential` to ONNX, for onnxruntime or any
other ONNX runtime.

Needs the optional ``onnx`` package (``pip install "cyconv[onnx]"``),
imported only when a model is exported.

Every built-in layer becomes standard ONNX operators (opset 17, or 19 for
a convolution with ``padding_mode="circular"``, whose ``Pad`` mode "wrap"
came with opset 19):

==========================  =================================================
cyconv                      ONNX
==========================  =================================================
Convolution                 Conv (``Pad`` before it for a padding_mode other
                            than "zeros")
MaxPooling, AveragePooling  MaxPool, AveragePool (ceil_mode,
                            count_include_pad)
Dense                       Gemm
Flatten, Reshape            Flatten, Reshape
ReLU, LeakyReLU             Relu, LeakyRelu
Sigmoid, Tanh, Softmax      Sigmoid, Tanh, Softmax (last axis)
BatchNormalization          BatchNormalization (running statistics)
Dropout                     Identity
GlobalAveragePooling        GlobalAveragePool, Flatten
Residual                    its layers, then Add
Sequential (nested)         its layers
==========================  =================================================

The graph computes what :meth:`~cyconv.Sequential.predict` computes: the
model in eval mode (BatchNormalization normalises with its running
statistics, Dropout passes its input through).  Its input is ``"input"``,
of shape ``(N, *sample_shape)`` with a free batch axis ``N``; its output is
``"output"``.

The graph is float32 whatever the model's dtype: a float64 model's weights
are rounded to float32 (onnxruntime has no double convolution or pooling
on the CPU), so its outputs agree with ``predict`` to float32 rounding.
"""

import contextlib
import os

import numpy as np

from ._conv import _padding_amounts
from ._pad import CONV_PADDING_MODES
from ._pool import pool_geometry
from .nn.layer import as_shape

__all__ = ["export", "to_model"]

OPSET = 17
# Pad's mode "wrap" (circular padding) is new in opset 19.
OPSET_WRAP = 19

INSTALL_HINT = 'pip install "cyconv[onnx]"'


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            f"exporting to ONNX needs the onnx package: {INSTALL_HINT}") from None
    return onnx


class _Graph:
    """The nodes and weights of the graph being built, with unique names,
    and the shape of one sample at the input of every layer."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes = []
        self.initializers = []
        self.opset = OPSET
        self.input_shapes = {}  # id(layer) -> the shape of one sample it takes
        self._names = set()

    def _unique(self, name):
        candidate, count = name, 1
        while candidate in self._names:
            count += 1
            candidate = f"{name}_{count}"
        self._names.add(candidate)
        return candidate

    def constant(self, name, array, dtype=np.float32):
        name = self._unique(name)
        self.initializers.append(
            self.onnx.numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(self, op, inputs, name, **attributes):
        output = self._unique(name)
        self.nodes.append(self.onnx.helper.make_node(
            op, list(inputs), [output], name=output, **attributes))
        return output


def _pairs_to_pads(top, bottom, left, right):
    """ONNX's pads for the two spatial axes: all begins, then all ends."""
    return [int(top), int(left), int(bottom), int(right)]


def _convolution(graph, layer, x, name):
    if layer.padding_mode == "zeros":
        pads = _pairs_to_pads(*_padding_amounts(
            layer.padding, layer.kernel_size, layer.stride, layer.dilation))
    else:
        top, bottom, left, right = layer._border
        if layer.padding_mode == "circular":
            graph.opset = max(graph.opset, OPSET_WRAP)
        amounts = graph.constant(f"{name}.pads", [0, 0, top, left, 0, 0, bottom, right],
                                 np.int64)
        x = graph.node("Pad", [x, amounts], f"{name}.padded",
                       mode=CONV_PADDING_MODES[layer.padding_mode])
        pads = [0, 0, 0, 0]
    inputs = [x, graph.constant(f"{name}.weight", layer.weight.value)]
    if layer.bias is not None:
        inputs.append(graph.constant(f"{name}.bias", layer.bias.value))
    return graph.node("Conv", inputs, name, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), dilations=list(layer.dilation),
                      pads=pads, group=layer.groups)


def _pool_geometry(graph, layer):
    """The pooling's padding, and the extra padding at the bottom and right
    that makes ONNX's floor-mode output size cyconv's: a ceil_mode layer
    becomes a floor-mode pool over a larger border.  ONNX's own ceil_mode
    keeps a last window that starts in the padding, which PyTorch's rule
    (and cyconv's) drops.  The extra is always smaller than the kernel less
    the padding, since the last window starts inside input or padding."""
    shape = graph.input_shapes[id(layer)]
    geometry = pool_geometry((1,) + shape, layer.kernel_size, layer.stride, layer.padding,
                             layer.ceil_mode)
    extra = [max(0, (out - 1) * stride + kernel - (size + 2 * pad))
             for out, stride, kernel, size, pad in zip(
                 (geometry.out_height, geometry.out_width), layer.stride, layer.kernel_size,
                 shape[-2:], layer.padding)]
    return layer.padding, extra


def _pool_node(op, graph, layer, x, name, pads, **extra_attributes):
    return graph.node(op, [x], name, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=pads, **extra_attributes)


def _max_pooling(graph, layer, x, name):
    (ph, pw), (eh, ew) = _pool_geometry(graph, layer)
    # MaxPool's pads never win a maximum, as cyconv's -inf border.
    return _pool_node("MaxPool", graph, layer, x, name, _pairs_to_pads(ph, ph + eh, pw, pw + ew))


def _average_pooling(graph, layer, x, name):
    (ph, pw), (eh, ew) = _pool_geometry(graph, layer)
    if not layer.count_include_pad:
        return _pool_node("AveragePool", graph, layer, x, name,
                          _pairs_to_pads(ph, ph + eh, pw, pw + ew), count_include_pad=0)
    if eh == ew == 0:
        return _pool_node("AveragePool", graph, layer, x, name,
                          _pairs_to_pads(ph, ph, pw, pw), count_include_pad=1)
    # cyconv (as PyTorch) counts the zero border in a window's average but
    # not the extra beyond it that ceil_mode reaches: the zeros become data,
    # and the extra is padding that is not counted.
    amounts = graph.constant(f"{name}.pads", [0, 0, ph, pw, 0, 0, ph, pw], np.int64)
    padded = graph.node("Pad", [x, amounts], f"{name}.padded", mode="constant")
    return _pool_node("AveragePool", graph, layer, padded, name,
                      _pairs_to_pads(0, eh, 0, ew), count_include_pad=0)


def _dense(graph, layer, x, name):
    inputs = [x, graph.constant(f"{name}.weight", layer.weight.value)]
    if layer.bias is not None:
        inputs.append(graph.constant(f"{name}.bias", layer.bias.value))
    # Gemm computes x @ weight.T + bias: cyconv's (out, in) layout as it is.
    return graph.node("Gemm", inputs, name, transB=1)


def _flatten(graph, layer, x, name):
    return graph.node("Flatten", [x], name, axis=1)


def _reshape(graph, layer, x, name):
    # 0 copies the batch size from the input, whatever it is at run time.
    shape = graph.constant(f"{name}.shape", (0,) + layer.output_shape, np.int64)
    return graph.node("Reshape", [x, shape], name)


def _elementwise(op):
    def export(graph, layer, x, name):
        return graph.node(op, [x], name)
    return export


def _softmax(graph, layer, x, name):
    return graph.node("Softmax", [x], name, axis=-1)


def _leaky_relu(graph, layer, x, name):
    return graph.node("LeakyRelu", [x], name, alpha=float(layer.get_config()["negative_slope"]))


def _dropout(graph, layer, x, name):
    return graph.node("Identity", [x], name)


def _global_average_pooling(graph, layer, x, name):
    pooled = graph.node("GlobalAveragePool", [x], f"{name}.pooled")
    return graph.node("Flatten", [pooled], name, axis=1)


def _named_arrays(layer):
    """A layer's parameters and buffers by name."""
    arrays = {p.name: p.value for p in layer.parameters()}
    buffers = getattr(layer, "buffers", None)
    if callable(buffers):
        arrays.update((b.name, b.value) for b in buffers())
    return arrays


def _batch_normalization(graph, layer, x, name):
    arrays = _named_arrays(layer)
    inputs = [x] + [graph.constant(f"{name}.{key}", arrays[key])
                    for key in ("gamma", "beta", "running_mean", "running_var")]
    return graph.node("BatchNormalization", inputs, name,
                      epsilon=float(layer.get_config()["eps"]))


def _sequential(graph, layer, x, name):
    return _layers(graph, layer.layers, x, name)


def _residual(graph, layer, x, name):
    body = _layers(graph, layer.layers, x, name)
    return graph.node("Add", [x, body], name)


_EXPORTERS = {
    "Convolution": _convolution,
    "MaxPooling": _max_pooling,
    "AveragePooling": _average_pooling,
    "Dense": _dense,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "ReLU": _elementwise("Relu"),
    "Sigmoid": _elementwise("Sigmoid"),
    "Tanh": _elementwise("Tanh"),
    "Softmax": _softmax,
    "LeakyReLU": _leaky_relu,
    "Dropout": _dropout,
    "GlobalAveragePooling": _global_average_pooling,
    "BatchNormalization": _batch_normalization,
    "Residual": _residual,
    "Sequential": _sequential,
}


def _exporter(layer, where):
    """The exporter of one of cyconv's own layer classes; a user's layer,
    or a subclass of cyconv's whose forward may differ, has none."""
    import cyconv

    name = type(layer).__name__
    if name in _EXPORTERS and getattr(cyconv, name, None) is type(layer):
        return _EXPORTERS[name]
    raise ValueError(
        f"cannot export {where} ({name}) to ONNX: only cyconv's built-in layers have an "
        f"ONNX equivalent ({', '.join(sorted(n for n in _EXPORTERS if hasattr(cyconv, n)))})")


def _layers(graph, layers, x, parent):
    """Export ``layers`` one after another: the top-level ones are named
    "layer0", "layer1", ...; a Residual's, "layer2.0", "layer2.1", ..."""
    for index, layer in enumerate(layers):
        name = f"{parent}.{index}" if parent else f"layer{index}"
        x = _exporter(layer, name.replace("layer", "layer ", 1))(graph, layer, x, name)
    return x


def _sample_shape(model, input_shape):
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    first = model
    while input_shape is None and getattr(first, "layers", None):
        first = first.layers[0]  # a container's first layer, and so on down
        input_shape = getattr(first, "input_shape", None)
    if input_shape is None:
        raise ValueError(
            f"the shape of the model's input is unknown: its first layer "
            f"({type(first).__name__}) does not declare one; pass "
            f"input_shape=(C, H, W) (one sample, no batch axis)")
    return as_shape(input_shape, "input_shape")


def _preorder(layers):
    """Every layer, a container's own layers right after it."""
    for layer in layers:
        yield layer
        yield from _preorder(getattr(layer, "layers", ()))


@contextlib.contextmanager
def _eval_mode(model):
    """The model in eval mode, then every layer back in the mode it was in."""
    layers = [model, *_preorder(model.layers)]
    modes = [getattr(layer, "training", None) for layer in layers]
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        # Containers first: their train() sets their layers' mode, which
        # the layers' own entries, later in the list, then correct.
        for layer, mode in zip(layers, modes):
            if mode is not None:
                layer.train(mode)


def _sample_shapes(model, sample_shape):
    """The shape of one sample at the input of every layer (by id), and at
    the model's output, from an eval-mode forward pass of zeros."""
    shapes = {}

    def run(layers, x):
        for layer in layers:
            shapes[id(layer)] = x.shape[1:]
            run(getattr(layer, "layers", ()), x)
            x = layer.forward(x)
        return x

    x = np.zeros((1,) + sample_shape, dtype=model.dtype or np.float32)
    with _eval_mode(model):
        try:
            output = run(model.layers, x)
        except ValueError as exc:
            raise ValueError(f"the model does not take input of shape {sample_shape}: "
                             f"{exc}") from None
    return shapes, output.shape[1:]


def to_model(model, input_shape=None):
    """Return ``model`` as an ``onnx.ModelProto``, checked by
    ``onnx.checker.check_model(full_check=True)``.

    Parameters
    ----------
    model : cyconv.Sequential
    input_shape : tuple of ints, optional
        The shape of one sample, without the batch axis.  Needed only when
        the model's first layer does not declare it (a pooling layer, say).

    Raises
    ------
    ImportError
        Without the ``onnx`` package.
    ValueError
        For a layer with no ONNX equivalent (a user's own), named with its
        position, or an input shape the model does not take.

    Examples
    --------
    >>> from cyconv import Sequential, Convolution, ReLU, Flatten, Dense
    >>> from cyconv.onnx import to_model
    >>> model = Sequential([Convolution((1, 8, 8), 3, 4, rng=0), ReLU(), Flatten(),
    ...                     Dense(4 * 6 * 6, 10, rng=0)])
    >>> proto = to_model(model)
    >>> [node.op_type for node in proto.graph.node]
    ['Conv', 'Relu', 'Flatten', 'Gemm']
    """
    onnx = _import_onnx()
    from . import __version__

    sample_shape = _sample_shape(model, input_shape)
    graph = _Graph(onnx)
    graph.input_shapes, output_shape = _sample_shapes(model, sample_shape)
    graph._names.add("input")
    # Eval-mode semantics are the exporters' (running statistics, Dropout
    # as Identity), whatever mode the layers are in.
    _layers(graph, model.layers, "input", None)
    # Every exporter ends with the node that computes its result, which
    # nothing else reads: the last one computes the model's output.
    graph.nodes[-1].output[0] = "output"

    def value_info(name, shape):
        return onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, ["N", *map(int, shape)])

    onnx_graph = onnx.helper.make_graph(
        graph.nodes, "cyconv.Sequential", [value_info("input", sample_shape)],
        [value_info("output", output_shape)], initializer=graph.initializers)
    proto = onnx.helper.make_model(
        onnx_graph, opset_imports=[onnx.helper.make_opsetid("", graph.opset)],
        producer_name="cyconv", producer_version=__version__)
    # The IR version this onnx writes by default may be newer than a runtime
    # reads; the opset's own is enough.
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, input_shape=None):
    """Write ``model`` to ``path`` as an ONNX file (see :func:`to_model`).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import onnxruntime
    >>> from cyconv import Sequential, Dense, ReLU
    >>> model = Sequential([Dense(3, 2, rng=0), ReLU()])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    >>> model.to_onnx(path)
    >>> session = onnxruntime.InferenceSession(path)
    >>> x = np.ones((5, 3), dtype=np.float32)
    >>> np.allclose(session.run(None, {"input": x})[0], model.predict(x))
    True
    """
    proto = to_model(model, input_shape)
    path = os.fspath(path)
    with open(path, "wb") as stream:
        stream.write(proto.SerializeToString())
