"""The bad-input cases of the training side: layers, Sequential, datasets
and the command line.  test_bad_inputs.py runs them with the others, each
in its worker process.

Each generator yields ``(case id, call, expectation)`` with the expectation
classes of test_bad_inputs: an error of the documented type and message, or
the documented result.
"""

import contextlib
import gzip
import io
import itertools
import os
import tempfile

import numpy as np
from scipy.special import expit

import cyconv
import reference as ref
from cyconv import datasets
from cyconv.cli import main as cli_main


def _values(*shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def _softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _conv_reference(layer, x):
    return ref.conv2d(x.astype(np.float32), layer.kernels, layer.biases, stride=(1, 1),
                      sides=(1, 1, 1, 1), dilation=(1, 1), groups=1)


def _dense_reference(layer, x):
    return x.astype(np.float32) @ layer.weights.T.astype(np.float64) + layer.biases


def _with_input_gradient(model):
    model.needs_input_gradient = True
    return model


# name -> (make a fresh layer, a valid batch, float64 reference of forward,
#          dtype of the output for float64 input, tolerance)
LAYERS = {
    "Convolution": (lambda: cyconv.Convolution((2, 6, 5), 3, 4, padding=1, rng=0),
                    _values(3, 2, 6, 5, seed=20), _conv_reference, np.float32, 2e-5),
    "MaxPooling": (lambda: cyconv.MaxPooling(2), _values(3, 2, 6, 5, seed=21),
                   lambda layer, x: ref.max_pool2d(x, (2, 2), (2, 2), (0, 0), False)[0],
                   np.float64, 0),
    "AveragePooling": (lambda: cyconv.AveragePooling(3, stride=2, padding=1),
                       _values(3, 2, 6, 5, seed=22),
                       lambda layer, x: ref.avg_pool2d(x, (3, 3), (2, 2), (1, 1), False, True),
                       np.float64, 1e-12),
    "Dense": (lambda: cyconv.Dense(5, 3, rng=0), _values(4, 5, seed=23),
              lambda layer, x: _dense_reference(layer, x), np.float32, 2e-5),
    "Reshape": (lambda: cyconv.Reshape((2, 3), (6,)), _values(4, 2, 3, seed=24),
                lambda layer, x: x.reshape(len(x), 6), np.float64, 0),
    "Flatten": (lambda: cyconv.Flatten(), _values(4, 2, 3, seed=25),
                lambda layer, x: x.reshape(len(x), -1), np.float64, 0),
    "ReLU": (cyconv.ReLU, _values(4, 5, seed=26), lambda layer, x: np.maximum(x, 0),
             np.float64, 0),
    "Sigmoid": (cyconv.Sigmoid, _values(4, 5, seed=27), lambda layer, x: expit(x),
                np.float64, 1e-15),
    "Tanh": (cyconv.Tanh, _values(4, 5, seed=28), lambda layer, x: np.tanh(x),
             np.float64, 1e-15),
    "Softmax": (cyconv.Softmax, _values(4, 5, seed=29), lambda layer, x: _softmax(x),
                np.float64, 1e-15),
    # Containers are layers too; a model's first layer skips its input
    # gradient unless asked, and these cases want one.
    "Sequential": (lambda: _with_input_gradient(cyconv.Sequential(
                       [cyconv.Dense(5, 3, rng=0), cyconv.ReLU()])),
                   _values(4, 5, seed=31),
                   lambda model, x: np.maximum(_dense_reference(model.layers[0], x), 0),
                   np.float32, 2e-5),
    "Residual": (lambda: cyconv.Residual([cyconv.Dense(5, 5, rng=0), cyconv.Tanh()]),
                 _values(4, 5, seed=32),
                 lambda block, x: x.astype(np.float32) + np.tanh(
                     _dense_reference(block.layers[0], x)),
                 np.float32, 2e-5),
    "LeakyReLU": (lambda: cyconv.LeakyReLU(0.2), _values(4, 5, seed=31),
                  lambda layer, x: np.maximum(x, 0) + 0.2 * np.minimum(x, 0), np.float64, 1e-15),
    "Dropout": (lambda: cyconv.Dropout(0.5, rng=0), _values(4, 5, seed=32),
                lambda layer, x: x * (np.random.default_rng(0).random(x.shape) >= 0.5) * 2.0,
                np.float64, 0),
    "BatchNormalization": (lambda: cyconv.BatchNormalization(2), _values(3, 2, 6, 5, seed=34),
                           lambda layer, x: ref.batch_norm(
                               x.astype(np.float32), np.ones(2), np.zeros(2), None, None, True,
                               0.1, 1e-5)[0], np.float32, 2e-5),
    "GlobalAveragePooling": (cyconv.GlobalAveragePooling, _values(3, 2, 6, 5, seed=33),
                             lambda layer, x: x.mean(axis=(2, 3)), np.float64, 1e-14),
}

# Layers that take any shape (the activations) accept what others refuse.
ANY_SHAPE = {"ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Dropout"}


def _forward(make, value):
    return make().forward(value)


def _backward(make, x, grad=None, learning_rate=None, transform=None):
    layer = make()
    out = layer.forward(x)
    if grad is None:
        grad = np.ones_like(out)
    if transform is not None:
        grad = transform(grad)
    return layer.backward(grad, learning_rate)


def _unaligned(array):
    raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
    view = raw[1:].view(array.dtype).reshape(array.shape)
    view[...] = array
    return view


LAYOUTS = {
    "fortran-ordered": np.asfortranarray,
    "non-contiguous": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
    "negative-strides": lambda a: np.flip(np.flip(a).copy()),
    "unaligned": _unaligned,
    "big-endian": lambda a: a.astype(">f8"),
    "zero-strides": lambda a: np.broadcast_to(a[:1], a.shape),
}

BAD_DTYPES = {"complex128": np.complex128, "float16": np.float16, "object": object,
              "str": "U3", "datetime64": "M8[s]"}


def layer_cases(Raises, Gives):
    for name, (make, x, reference, dtype, rtol) in LAYERS.items():
        label = f"{name}-forward"
        yield (f"{label}-None", lambda m=make: _forward(m, None),
               Raises(TypeError, "input must hold real numbers"))
        yield (f"{label}-string", lambda m=make: _forward(m, "abc"),
               Raises(TypeError, "input must hold real numbers"))
        yield (f"{label}-ragged-list", lambda m=make: _forward(m, [[1.0, 2.0], [3.0]]),
               Raises(ValueError, "input must be an array-like of numbers"))
        for dtype_name, bad in BAD_DTYPES.items():
            try:
                value = x.astype(bad)
            except (TypeError, ValueError):
                value = np.zeros(x.shape, dtype=bad)
            yield (f"{label}-dtype-{dtype_name}", lambda m=make, v=value: _forward(m, v),
                   Raises(TypeError, "input must hold real numbers"))
        if name not in ANY_SHAPE:
            words = "Flatten expects a batch" if name == "Flatten" else "expects input of shape"
            yield (f"{label}-scalar", lambda m=make: _forward(m, 2.0), Raises(ValueError, words))
        if name not in ANY_SHAPE | {"Flatten"}:  # Flatten takes any batch
            yield (f"{label}-ndim-too-many", lambda m=make, v=x[np.newaxis]: _forward(m, v),
                   Raises(ValueError, "expects input of shape"))
        if name in ("Convolution", "Dense", "Reshape"):  # the others take any size
            wrong = np.ones(x.shape[:-1] + (x.shape[-1] + 1,))
            yield (f"{label}-wrong-sample-shape", lambda m=make, v=wrong: _forward(m, v),
                   Raises(ValueError, "expects input of shape"))
        yield (f"{label}-nested-list", lambda m=make, v=x.tolist(): _forward(m, v),
               Gives(lambda m=make, v=x: _forward(m, v)))
        for kind, integer in (("int64", np.round(x * 3).astype(np.int64)), ("bool", x > 0)):
            yield (f"{label}-{kind}", lambda m=make, v=integer: _forward(m, v),
                   Gives(lambda m=make, v=integer: _forward(m, v.astype(np.float64))))
        for layout, transform in LAYOUTS.items():
            variant = transform(x)
            yield (f"{label}-{layout}", lambda m=make, v=variant: _forward(m, v),
                   Gives(lambda m=make, v=variant: _forward(
                       m, np.ascontiguousarray(v, dtype=np.float64))))
        for kind in ("nan", "inf", "all-nan"):
            special = x.copy()
            if kind == "nan":
                special.flat[0] = np.nan
            elif kind == "inf":
                special.flat[1], special.flat[-1] = np.inf, -np.inf
            else:
                special[...] = np.nan
            yield (f"{label}-values-{kind}", lambda m=make, v=special: _forward(m, v),
                   Gives(lambda m=make, v=special, r=reference, d=dtype: r(m(), v).astype(d),
                         rtol=rtol or None))
        # Backward.
        label = f"{name}-backward"
        yield (f"{label}-before-forward", lambda m=make, v=x: m().backward(np.ones(3)),
               Raises(RuntimeError, "backward called before forward"))
        yield (f"{label}-wrong-gradient-shape",
               lambda m=make, v=x: _backward(m, v, transform=lambda g: g[:1]),
               Raises(ValueError, "expects output_gradient of the output's shape"))
        yield (f"{label}-gradient-None",
               lambda m=make, v=x: _backward(m, v, transform=lambda g: None),
               Raises(TypeError, "output_gradient must hold real numbers"))
        yield (f"{label}-gradient-complex",
               lambda m=make, v=x: _backward(m, v, transform=lambda g: g.astype(complex)),
               Raises(TypeError, "output_gradient must hold real numbers"))
        yield (f"{label}-gradient-list",
               lambda m=make, v=x: _backward(m, v, transform=lambda g: g.tolist()),
               Gives(lambda m=make, v=x: _backward(m, v)))
        yield (f"{label}-gradient-fortran",
               lambda m=make, v=x: _backward(m, v, transform=np.asfortranarray),
               Gives(lambda m=make, v=x: _backward(m, v)))
        for rate, error, words in ((-0.1, ValueError, "learning_rate must be finite and >= 0"),
                                   (np.nan, ValueError, "learning_rate must be finite"),
                                   (np.inf, ValueError, "learning_rate must be finite"),
                                   ("0.1", TypeError, "learning_rate must be a real number"),
                                   (True, TypeError, "learning_rate must be a real number")):
            yield (f"{label}-learning-rate-{rate}",
                   lambda m=make, v=x, r=rate: _backward(m, v, learning_rate=r),
                   Raises(error, words))
        yield (f"{label}-gradient-nan",
               lambda m=make, v=x: bool(np.isnan(_backward(
                   m, v, transform=lambda g: np.full_like(g, np.nan))).any()),
               Gives(lambda: True))


def constructor_cases(Raises, Gives):
    conv = cyconv.Convolution
    cases = {
        "Convolution-input_shape-two-entries": (lambda: conv((6, 6), 3, 4),
                                                Raises(ValueError, "input_shape must have 3")),
        "Convolution-input_shape-zero": (lambda: conv((1, 0, 6), 3, 4),
                                         Raises(ValueError, "input_shape must hold positive")),
        "Convolution-input_shape-float": (lambda: conv((1, 6.0, 6), 3, 4),
                                          Raises(TypeError, "input_shape must be a tuple of ints")),
        "Convolution-input_shape-str": (lambda: conv("abc", 3, 4),
                                        Raises(TypeError, "input_shape must be a tuple")),
        "Convolution-input_shape-endless": (lambda: conv(itertools.count(1), 3, 4),
                                            Raises(ValueError, "input_shape must have at most")),
        "Convolution-kernel_size-missing": (lambda: conv(depth=4),
                                            Raises(TypeError, "needs kernel_size and depth")),
        "Convolution-depth-missing": (lambda: conv((1, 4, 4), 3),
                                      Raises(TypeError, "needs kernel_size and depth")),
        "Convolution-unbuilt-forward": (
            lambda: conv(kernel_size=3, depth=2).forward(np.ones((1, 1, 4, 4))),
            Raises(RuntimeError, "not built yet")),
        "Convolution-build-two-axes": (lambda: conv(kernel_size=3, depth=2).build((4, 4)),
                                       Raises(ValueError, r"samples of shape \(C, H, W\)")),
        "Convolution-build-another-shape": (lambda: conv((1, 4, 4), 3, 2).build((2, 4, 4)),
                                            Raises(ValueError, r"\(1, 4, 4\), got \(2, 4, 4\)")),
        "Convolution-rng-str-lazy": (lambda: conv(kernel_size=3, depth=2, rng="seed"),
                                     Raises(TypeError, "rng must be None, an int seed")),
        "Convolution-kernel-larger-than-input": (lambda: conv((1, 4, 4), 5, 2),
                                                 Raises(ValueError, "larger than the padded")),
        "Convolution-kernel_size-zero": (lambda: conv((1, 4, 4), 0, 2),
                                         Raises(ValueError, "kernel_size must be >= 1")),
        "Convolution-depth-zero": (lambda: conv((1, 4, 4), 3, 0),
                                   Raises(ValueError, "depth must be >= 1")),
        "Convolution-depth-float": (lambda: conv((1, 4, 4), 3, 2.0),
                                    Raises(TypeError, "depth must be an int")),
        "Convolution-groups-not-dividing": (lambda: conv((3, 4, 4), 3, 2, groups=2),
                                            Raises(ValueError, "must divide")),
        "Convolution-stride-zero": (lambda: conv((1, 4, 4), 3, 2, stride=0),
                                    Raises(ValueError, "stride must be >= 1")),
        "Convolution-padding-unknown": (lambda: conv((1, 4, 4), 3, 2, padding="full"),
                                        Raises(ValueError, "'valid' or 'same'")),
        "Convolution-padding_mode-unknown": (
            lambda: conv((1, 4, 4), 3, 2, padding=1, padding_mode="mirror"),
            Raises(ValueError, "padding_mode must be one of")),
        "Convolution-reflect-padding-beyond-input": (
            lambda: conv((1, 2, 2), 1, 1, padding=2, padding_mode="reflect"),
            Raises(ValueError, "needs padding smaller than the input")),
        "Convolution-bias-int": (lambda: conv((1, 4, 4), 3, 2, bias=1),
                                 Raises(TypeError, "bias must be True or False")),
        "Convolution-dtype-int": (lambda: conv((1, 4, 4), 3, 2, dtype="int32"),
                                  Raises(TypeError, "dtype must be float32 or float64")),
        "Convolution-dtype-float16": (lambda: conv((1, 4, 4), 3, 2, dtype=np.float16),
                                      Raises(TypeError, "dtype must be float32 or float64")),
        "Convolution-rng-str": (lambda: conv((1, 4, 4), 3, 2, rng="seed"),
                                Raises(TypeError, "rng must be None, an int seed")),
        "Convolution-output-too-large": (lambda: conv((1, 2**40, 2**40), 3, 1),
                                         Raises(ValueError, "too large for an array")),
        "Convolution-depth-beyond-blas": (lambda: conv((1, 5, 5), 3, 2**40),
                                          Raises(ValueError, r"fewer than 2\*\*31 filters")),
        "Dense-output_size-missing": (lambda: cyconv.Dense(3),
                                      Raises(TypeError, "needs output_size")),
        "Dense-unbuilt-forward": (lambda: cyconv.Dense(output_size=2).forward(np.ones((1, 3))),
                                  Raises(RuntimeError, "not built yet")),
        "Dense-build-image": (lambda: cyconv.Dense(output_size=2).build((1, 4, 4)),
                              Raises(ValueError, "put a Flatten before it")),
        "Dense-input_size-zero": (lambda: cyconv.Dense(0, 3),
                                  Raises(ValueError, "input_size must be >= 1")),
        "Dense-output_size-negative": (lambda: cyconv.Dense(3, -1),
                                       Raises(ValueError, "output_size must be >= 1")),
        "Dense-input_size-float": (lambda: cyconv.Dense(3.0, 2),
                                   Raises(TypeError, "input_size must be an int")),
        "Dense-bias-str": (lambda: cyconv.Dense(3, 2, bias="yes"),
                           Raises(TypeError, "bias must be True or False")),
        "Dense-dtype-complex": (lambda: cyconv.Dense(3, 2, dtype=complex),
                                Raises(TypeError, "dtype must be float32 or float64")),
        "Dense-weights-too-large-for-an-array": (
            lambda: cyconv.Dense(2**32, 2**32),
            Raises(ValueError, "Dense's weights would have shape .* too large")),
        "Dense-weights-too-large-for-memory": (lambda: cyconv.Dense(10**6, 10**6),
                                               Raises(MemoryError, "")),
        "MaxPooling-kernel_size-zero": (lambda: cyconv.MaxPooling(0),
                                        Raises(ValueError, "kernel_size must be >= 1")),
        "MaxPooling-stride-negative": (lambda: cyconv.MaxPooling(2, stride=-1),
                                       Raises(ValueError, "stride must be >= 1")),
        "MaxPooling-ceil_mode-str": (lambda: cyconv.MaxPooling(2, ceil_mode="yes"),
                                     Raises(TypeError, "ceil_mode must be True or False")),
        "MaxPooling-padding-over-half-kernel": (
            lambda: cyconv.MaxPooling(2, padding=2).forward(np.ones((1, 1, 6, 6))),
            Raises(ValueError, "at most half the kernel")),
        "MaxPooling-kernel-larger-than-input": (
            lambda: cyconv.MaxPooling(8).forward(np.ones((1, 1, 6, 6))),
            Raises(ValueError, "larger than the padded input")),
        "AveragePooling-count_include_pad-None": (
            lambda: cyconv.AveragePooling(2, count_include_pad=None),
            Raises(TypeError, "count_include_pad must be True or False")),
        "Reshape-sizes-differ": (lambda: cyconv.Reshape((2, 3), (5,)),
                                 Raises(ValueError, "cannot reshape")),
        "Reshape-zero": (lambda: cyconv.Reshape((0, 3), (0,)),
                         Raises(ValueError, "must hold positive sizes")),
        "Flatten-input_shape-negative": (lambda: cyconv.Flatten((-1, 3)),
                                         Raises(ValueError, "must hold positive sizes")),
        "Layer-train-mode-str": (lambda: cyconv.ReLU().train("eval"),
                                 Raises(TypeError, "mode must be True or False")),
        "Layer-apply_learning_rate-nan": (lambda: cyconv.Dense(2, 2).apply_learning_rate(np.nan),
                                          Raises(ValueError, "learning_rate must be finite")),
        "Residual-no-layers": (lambda: cyconv.Residual([]),
                               Raises(ValueError, "Residual needs at least one layer")),
        "Residual-not-a-list": (lambda: cyconv.Residual(cyconv.ReLU()),
                                Raises(TypeError, "Residual takes a list of layers")),
        "Residual-endless-layers": (lambda: cyconv.Residual(iter(cyconv.ReLU, None)),
                                    Raises(ValueError, "at most 100000 layers")),
        "Residual-shape-changes": (lambda: cyconv.Residual([cyconv.Convolution((1, 4, 4), 3, 1)]),
                                   Raises(ValueError, "same shape out as in")),
        "Residual-too-deep": (lambda: _nested(cyconv.Residual, 70),
                              Raises(ValueError, "at most 64 levels")),
        "LeakyReLU-negative_slope-str": (lambda: cyconv.LeakyReLU("0.1"),
                                         Raises(TypeError, "negative_slope must be a real")),
        "LeakyReLU-negative_slope-nan": (lambda: cyconv.LeakyReLU(np.nan),
                                         Raises(ValueError, "negative_slope must be finite")),
        "Dropout-rate-above-one": (lambda: cyconv.Dropout(1.5),
                                   Raises(ValueError, r"rate must be in \[0, 1\]")),
        "Dropout-rate-negative": (lambda: cyconv.Dropout(-0.5),
                                  Raises(ValueError, r"rate must be in \[0, 1\]")),
        "Dropout-rate-None": (lambda: cyconv.Dropout(None),
                              Raises(TypeError, "rate must be a real number")),
        "Dropout-rng-float": (lambda: cyconv.Dropout(0.5, rng=1.5),
                              Raises(TypeError, "rng must be None, an int seed")),
        "Dropout-rng-positional": (lambda: cyconv.Dropout(0.5, 0),
                                   Raises(TypeError, "positional")),
        "BatchNormalization-num_features-zero": (
            lambda: cyconv.BatchNormalization(0), Raises(ValueError, "num_features must be >= 1")),
        "BatchNormalization-num_features-float": (
            lambda: cyconv.BatchNormalization(2.0),
            Raises(TypeError, "num_features must be an int")),
        "BatchNormalization-momentum-above-one": (
            lambda: cyconv.BatchNormalization(2, momentum=1.5),
            Raises(ValueError, r"momentum must be in \[0, 1\]")),
        "BatchNormalization-momentum-str": (
            lambda: cyconv.BatchNormalization(2, momentum="0.1"),
            Raises(TypeError, "momentum must be a real number")),
        "BatchNormalization-eps-negative": (
            lambda: cyconv.BatchNormalization(2, eps=-1.0),
            Raises(ValueError, "eps must be finite and >= 0")),
        "BatchNormalization-eps-nan": (lambda: cyconv.BatchNormalization(2, eps=np.nan),
                                       Raises(ValueError, "eps must be finite")),
        "BatchNormalization-dtype-int": (
            lambda: cyconv.BatchNormalization(2, dtype=np.int64),
            Raises(TypeError, "dtype must be float32 or float64")),
        "BatchNormalization-wrong-channels": (
            lambda: cyconv.BatchNormalization(2).forward(np.ones((3, 4, 5, 5))),
            Raises(ValueError, r"BatchNormalization\(2\) expects 2 channels on axis 1")),
        "BatchNormalization-one-value-per-channel": (
            lambda: cyconv.BatchNormalization(2).forward(np.ones((1, 2))),
            Raises(ValueError, "more than 1 value per channel")),
        "BatchNormalization-unbuilt-forward": (
            lambda: cyconv.BatchNormalization().forward(np.ones((3, 2))),
            Raises(RuntimeError, "not built yet")),
        "BatchNormalization-build-wrong-channels": (
            lambda: cyconv.BatchNormalization(2).build((3, 4, 4)),
            Raises(ValueError, "expects samples with 2 channels")),
        "BatchNormalization-build-image-rows": (
            lambda: cyconv.BatchNormalization().build((4, 4)),
            Raises(ValueError, r"expects samples of shape \(C, H, W\) or \(C,\)")),
        "GlobalAveragePooling-build-flat": (
            lambda: cyconv.GlobalAveragePooling().build((4,)),
            Raises(ValueError, r"expects samples of shape \(C, H, W\)")),
        "GlobalAveragePooling-empty-plane": (
            lambda: cyconv.GlobalAveragePooling().forward(np.ones((2, 3, 0, 4))),
            Raises(ValueError, "empty axis")),
    }
    for label, (call, expectation) in cases.items():
        yield label, call, expectation


def _nested(container, depth):
    layer = cyconv.ReLU()
    for _ in range(depth):
        layer = container([layer])
    return layer


def _model():
    return cyconv.Sequential([cyconv.Dense(3, 4, rng=0), cyconv.ReLU(),
                              cyconv.Dense(4, 2, rng=1)])


X3 = _values(6, 3, seed=30)
Y2 = np.array([0, 1, 1, 0, 1, 0])


def _fit(**changes):
    kwargs = dict(x=X3, y=Y2, epochs=1, batch_size=2, verbose=False, seed=0)
    kwargs.update(changes)
    return _model().fit(**kwargs)


def _in_temporary_directory(action):
    with tempfile.TemporaryDirectory() as folder:
        return action(folder)


def _save_to(target):
    def action(folder):
        _model().save(target(folder))
    return action


def _load_file(content):
    def action(folder):
        path = os.path.join(folder, "model.npz")
        with open(path, "wb") as stream:
            stream.write(content(folder) if callable(content) else content)
        return cyconv.Sequential.load(path)
    return action


def _fifo(folder):
    path = os.path.join(folder, "fifo")
    os.mkfifo(path)
    return path


def _twice():
    relu = cyconv.ReLU()
    return cyconv.Sequential([relu, cyconv.Tanh(), relu])


def _saved_bytes(folder):
    path = os.path.join(folder, "good.npz")
    _model().save(path)
    with open(path, "rb") as stream:
        return stream.read()


def model_cases(Raises, Gives):
    cases = {
        "fit-x-None": (lambda: _fit(x=None), Raises(TypeError, "x must hold real numbers")),
        "fit-x-complex": (lambda: _fit(x=X3.astype(complex)),
                          Raises(TypeError, "x must hold real numbers")),
        "fit-x-ragged": (lambda: _fit(x=[[1.0], [2.0, 3.0]]),
                         Raises(ValueError, "x must be an array-like of numbers")),
        "fit-x-scalar": (lambda: _fit(x=1.0), Raises(ValueError, "not scalars")),
        "fit-x-wrong-features": (lambda: _fit(x=np.ones((6, 4))),
                                 Raises(ValueError, "Dense expects input of shape")),
        "fit-x-empty": (lambda: _fit(x=np.ones((0, 3)), y=np.zeros(0, int)),
                        Raises(ValueError, "at least one sample")),
        "fit-y-length": (lambda: _fit(y=Y2[:4]), Raises(ValueError, "same number of samples")),
        "fit-y-float-labels": (lambda: _fit(y=Y2 + 0.5),
                               Raises(TypeError, "class labels must be integers")),
        "fit-y-label-out-of-range": (lambda: _fit(y=Y2 * 5),
                                     Raises(ValueError, r"class labels must be in \[0, 2\)")),
        "fit-epochs-zero": (lambda: _fit(epochs=0), Raises(ValueError, "epochs must be >= 1")),
        "fit-epochs-float": (lambda: _fit(epochs=1.5), Raises(TypeError, "epochs must be an int")),
        "fit-batch_size-zero": (lambda: _fit(batch_size=0),
                                Raises(ValueError, "batch_size must be >= 1")),
        "fit-loss-unknown": (lambda: _fit(loss="hinge"), Raises(ValueError, "hinge")),
        "fit-optimizer-unknown": (lambda: _fit(optimizer="adagrad"),
                                  Raises(ValueError, "adagrad")),
        "fit-verbose-3": (lambda: _fit(verbose=3), Raises(ValueError, "verbose must be")),
        "fit-validation-not-a-pair": (lambda: _fit(validation_data=X3),
                                      Raises(ValueError, "validation_data must be a pair")),
        "fit-augment-not-callable": (lambda: _fit(augment=3),
                                     Raises(TypeError, "augment must be callable")),
        "fit-x-nan-propagates": (
            lambda: bool(np.isnan(_fit(x=np.full((6, 3), np.nan))["loss"][0])),
            Gives(lambda: True)),
        "predict-x-complex": (lambda: _model().predict(X3.astype(complex)),
                              Raises(TypeError, "x must hold real numbers")),
        "predict-x-wrong-features": (lambda: _model().predict(np.ones((2, 5))),
                                     Raises(ValueError, "Dense expects input of shape")),
        "predict-batch_size-zero": (lambda: _model().predict(X3, batch_size=0),
                                    Raises(ValueError, "batch_size must be >= 1")),
        "predict-fortran-ordered": (lambda: _model().predict(np.asfortranarray(X3)),
                                    Gives(lambda: _model().predict(X3))),
        "evaluate-y-length": (lambda: _model().evaluate(X3, Y2[:2]),
                              Raises(ValueError, "same number of samples")),
        "save-to-a-directory": (lambda: _in_temporary_directory(_save_to(lambda f: f)),
                                Raises(IsADirectoryError, "Is a directory")),
        "save-to-a-fifo": (
            lambda: _in_temporary_directory(_save_to(_fifo)),
            Raises(ValueError, "not a regular file")),
        "save-to-a-device": (lambda: _model().save(os.devnull),
                             Raises(ValueError, "not a regular file")),
        "save-to-an-empty-path": (lambda: _model().save(""),
                                  Raises(ValueError, "empty path")),
        "save-a-layer-named-like-a-builtin": (
            lambda: _in_temporary_directory(lambda f: cyconv.Sequential(
                [type("Dense", (cyconv.Layer,), {})()]).save(os.path.join(f, "m.npz"))),
            Raises(TypeError, "has the name of one of cyconv's layers")),
        "load-a-fifo": (lambda: _in_temporary_directory(
            lambda f: cyconv.Sequential.load(_fifo(f))),
            Raises(ValueError, "not a regular file")),
        "load-custom_layers-a-list": (
            lambda: cyconv.Sequential.load("m.npz", custom_layers=[cyconv.ReLU]),
            Raises(TypeError, "custom_layers must be a dict")),
        "load-custom_layers-a-string": (
            lambda: cyconv.Sequential.load("m.npz", custom_layers={"Evil": "os.system"}),
            Raises(TypeError, r"custom_layers\['Evil'\] must be a subclass of cyconv.Layer")),
        "new-input_shape-zero": (lambda: cyconv.Sequential([cyconv.ReLU()], input_shape=(0,)),
                                 Raises(ValueError, "input_shape must hold positive sizes")),
        "new-input_shape-does-not-fit": (
            lambda: cyconv.Sequential([cyconv.Dense(3, 2)], input_shape=(4,)),
            Raises(ValueError, r"layer 0 \(Dense\) of Sequential")),
        "new-a-duck-typed-layer": (
            lambda: cyconv.Sequential([type("Duck", (), {"forward": id, "backward": id})()]),
            Raises(TypeError, "is not a cyconv.Layer")),
        "new-too-deep": (lambda: _nested(cyconv.Sequential, 65),
                         Raises(ValueError, "at most 64 levels")),
        "new-a-layer-twice": (lambda: _twice(),
                              Raises(ValueError, "can appear only once")),
        "summary-counts": (lambda: _model().summary().splitlines()[-1].split(),
                           Gives(lambda: ["Total", str(3 * 4 + 4 + 4 * 2 + 2)])),
        "save-to-a-missing-directory": (
            lambda: _in_temporary_directory(_save_to(lambda f: os.path.join(f, "no", "m.npz"))),
            Raises(FileNotFoundError, "No such file or directory")),
        "load-missing-file": (
            lambda: _in_temporary_directory(
                lambda f: cyconv.Sequential.load(os.path.join(f, "absent.npz"))),
            Raises(FileNotFoundError, "absent.npz")),
        "load-a-directory": (lambda: _in_temporary_directory(cyconv.Sequential.load),
                             Raises(IsADirectoryError, "Is a directory")),
        "load-empty-file": (lambda: _in_temporary_directory(_load_file(b"")),
                            Raises(ValueError, "not a readable cyconv model file")),
        "load-text-file": (lambda: _in_temporary_directory(_load_file(b"weights: 1 2 3\n")),
                           Raises(ValueError, "not a readable cyconv model file")),
        "load-truncated-file": (
            lambda: _in_temporary_directory(_load_file(lambda f: _saved_bytes(f)[:-40])),
            Raises(ValueError, "not a readable cyconv model file")),
    }
    for label, (call, expectation) in cases.items():
        yield f"Sequential-{label}", call, expectation


def _write(folder, name, content):
    path = os.path.join(folder, name)
    with open(path, "wb") as stream:
        stream.write(content)
    return path


def dataset_cases(Raises, Gives):
    in_folder = _in_temporary_directory
    cases = {
        "read_idx-missing": (lambda: in_folder(
            lambda f: datasets.read_idx(os.path.join(f, "absent"))),
            Raises(FileNotFoundError, "absent")),
        "read_idx-directory": (lambda: in_folder(datasets.read_idx),
                               Raises(IsADirectoryError, "Is a directory")),
        "read_idx-empty": (lambda: in_folder(lambda f: datasets.read_idx(_write(f, "e", b""))),
                           Raises(ValueError, "not an IDX file")),
        "read_idx-wrong-magic": (
            lambda: in_folder(lambda f: datasets.read_idx(_write(f, "m", b"\x01\x02\x08\x01"))),
            Raises(ValueError, "not an IDX file")),
        "read_idx-huge-declared-shape": (
            lambda: in_folder(lambda f: datasets.read_idx(
                _write(f, "h", b"\x00\x00\x08\x02\xff\xff\xff\xff\xff\xff\xff\xff" + b"\x00" * 8))),
            Raises(ValueError, r"declares 18446744065119617025 bytes of data, more than max_bytes")),
        "read_idx-declared-shape-beyond-the-file": (
            lambda: in_folder(lambda f: datasets.read_idx(
                _write(f, "b", b"\x00\x00\x08\x01\x40\x00\x00\x00" + b"\x00" * 8))),
            Raises(ValueError, r"truncated: the header's shape \(1073741824,\) needs")),
        "read_idx-gzip-declaring-beyond-2**63-bytes": (
            lambda: in_folder(lambda f: datasets.read_idx(_write(f, "z", gzip.compress(
                b"\x00\x00\x0e\x03" + b"\xff" * 12 + b"\x00" * 8)))),
            Raises(ValueError, "more than max_bytes")),
        "read_idx-gzip-declaring-more-than-it-inflates-to": (
            lambda: in_folder(lambda f: datasets.read_idx(_write(f, "y", gzip.compress(
                b"\x00\x00\x08\x01\x10\x00\x00\x00" + b"\x00" * 8)))),
            Raises(ValueError, r"more than a \d+-byte gzip file can inflate to")),
        "read_idx-dev-zero": (lambda: datasets.read_idx("/dev/zero"),
                              Raises(ValueError, r"not an IDX file \(magic number 0x00000000\)")),
        "read_idx-max_bytes-float": (
            lambda: datasets.read_idx("/dev/zero", max_bytes=1e9),
            Raises(TypeError, "max_bytes must be an int")),
        "write_idx-axis-beyond-32-bits": (lambda: in_folder(
            lambda f: datasets.write_idx(os.path.join(f, "x"),
                                         np.broadcast_to(np.uint8(0), (2**32,)))),
            Raises(ValueError, r"shorter than 2\*\*32")),
        "load_mnist-float-labels": (lambda: in_folder(lambda f: (
            datasets.write_idx(os.path.join(f, "t10k-images-idx3-ubyte"),
                               np.zeros((2, 28, 28), np.uint8)),
            datasets.write_idx(os.path.join(f, "t10k-labels-idx1-ubyte"),
                               np.array([2.7, np.nan])),
            datasets.load_mnist(f, "test"))),
            Raises(ValueError, r"labels must be integers \(digits 0 to 9\)")),
        "RandomShift-beyond-the-image": (
            lambda: datasets.RandomShift(2**40)(np.ones((2, 1, 3, 3)),
                                                np.random.default_rng(0)).shape,
            Gives(lambda: (2, 1, 3, 3))),
        "read_idx-corrupt-gzip": (
            lambda: in_folder(lambda f: datasets.read_idx(_write(f, "g", b"\x1f\x8b" + b"\x00" * 9))),
            Raises(ValueError, "corrupt or truncated gzip")),
        "write_idx-float16": (lambda: in_folder(
            lambda f: datasets.write_idx(os.path.join(f, "x"), np.ones(3, np.float16))),
            Raises(TypeError, "IDX cannot hold dtype float16")),
        "write_idx-object": (lambda: in_folder(
            lambda f: datasets.write_idx(os.path.join(f, "x"), np.ones(3, object))),
            Raises(TypeError, "IDX cannot hold dtype object")),
        "write_idx-scalar": (lambda: in_folder(
            lambda f: datasets.write_idx(os.path.join(f, "x"), np.array(3, np.uint8))),
            Raises(ValueError, "IDX needs 1 to 255 dimensions")),
        "load_mnist-missing-directory": (lambda: in_folder(
            lambda f: datasets.load_mnist(os.path.join(f, "nowhere"))),
            Raises(FileNotFoundError, "no such directory")),
        "load_mnist-unknown-split": (lambda: in_folder(
            lambda f: datasets.load_mnist(f, split="validation")),
            Raises(ValueError, "split must be 'train' or 'test'")),
        "stratified_split-test_size-zero": (
            lambda: datasets.stratified_split(np.arange(10) % 2, 0),
            Raises(ValueError, "test_size must leave both sets non-empty")),
        "stratified_split-labels-2d": (
            lambda: datasets.stratified_split(np.ones((2, 2), int), 0.5),
            Raises(ValueError, r"labels must have shape \(N,\)")),
        "prepare_images-complex": (
            lambda: datasets.prepare_images(np.ones((2, 4, 4), complex)),
            Raises(TypeError, "images must hold integers or float32/float64")),
        "prepare_images-1d": (lambda: datasets.prepare_images(np.ones(5)),
                              Raises(ValueError, r"images must have shape \(N, H, W\)")),
        "RandomShift-negative": (lambda: datasets.RandomShift(-1),
                                 Raises(ValueError, "max_shift must be >= 0")),
    }
    for label, (call, expectation) in cases.items():
        yield f"datasets-{label}", call, expectation


def _cli(*argv):
    """main(argv) as (exit status, the last line it wrote to stderr,
    whether a traceback appeared)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli_main(list(argv))
    text = err.getvalue()
    return status, text.strip().splitlines()[-1] if text.strip() else "", "Traceback" in text


def cli_cases(Raises, Gives):
    cases = {
        "train-epochs-zero": (("train", "--epochs", "0"), 2, "--epochs"),
        "train-epochs-not-an-integer": (("train", "--epochs", "1e3"), 2, "--epochs"),
        "train-batch-size-text": (("train", "--batch-size", "big"), 2, "--batch-size"),
        "train-learning-rate-negative": (("train", "--learning-rate", "-1"), 2,
                                         "--learning-rate"),
        "train-learning-rate-inf": (("train", "--learning-rate", "inf"), 2, "--learning-rate"),
        "train-threads-beyond-the-limit": (("train", "--threads", "100000", "--epochs", "1",
                                            "--limit", "10", "--quiet", "-o", os.devnull), 1,
                                           "num_threads must be at most 1024"),
        "unknown-command": (("fly",), 2, "invalid choice"),
        "evaluate-missing-model": (("evaluate", "/nonexistent/model.npz"), 1,
                                   "no such file or directory"),
        "predict-missing-images": (("predict", "/nonexistent/model.npz", "/nonexistent/x.npy"),
                                   1, "no such file or directory"),
    }
    for label, (argv, status, words) in cases.items():
        def call(argv=argv, status=status, words=words):
            code, line, traceback = _cli(*argv)
            return (code, traceback, words in line)
        yield f"cli-{label}", call, Gives(lambda status=status: (status, False, True))
