"""Helpers for property-testing convolution and pooling code and layers,
cyconv's own or yours: hypothesis strategies for valid configurations,
random arrays, and :func:`check_layer_gradients`, a finite-difference check
of any layer's backward pass.

Needs ``hypothesis`` (``pip install cyconv[test]``).

Examples
--------
>>> from hypothesis import given
>>> from cyconv.testing import conv2d_configs
>>> @given(conv2d_configs())
... def test_output_shape(config):
...     assert config.output_shape[0] == config.x_shape[0]
>>> test_output_shape()
"""

from dataclasses import dataclass

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "cyconv.testing needs hypothesis: pip install 'cyconv[test]'"
    ) from exc


@dataclass(frozen=True)
class Conv2dConfig:
    """A valid set of arguments for ``cyconv.functional.conv2d``."""

    x_shape: tuple
    weight_shape: tuple
    stride: tuple
    padding: object  # (ph, pw) or "same"
    dilation: tuple
    groups: int

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding,
                    dilation=self.dilation, groups=self.groups)

    @property
    def output_shape(self):
        n, _, h, w = self.x_shape
        f, _, kh, kw = self.weight_shape
        if self.padding == "same":
            return (n, f, h, w)
        ph, pw = self.padding
        hout = (h + 2 * ph - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wout = (w + 2 * pw - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return (n, f, hout, wout)


@st.composite
def conv2d_configs(draw, max_batch=3, max_group_channels=3, max_groups=3,
                   max_kernel=4, max_stride=3, max_dilation=2, max_padding=2,
                   max_extra_size=8):
    """Strategy for :class:`Conv2dConfig`: any batch, channels, groups,
    non-square kernels, stride, dilation and padding whose output is not
    empty, including 1-pixel inputs and outputs."""
    groups = draw(st.integers(1, max_groups))
    channels = groups * draw(st.integers(1, max_group_channels))
    filters = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    dilation = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    if draw(st.integers(0, 4)) == 0:
        stride, padding = (1, 1), "same"
        pads = ((dilation[0] * (kh - 1)) // 2, (dilation[1] * (kw - 1)) // 2)
    else:
        stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
        padding = (draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding)))
        pads = padding
    sizes = []
    for k, d, p in zip((kh, kw), dilation, pads):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)
        sizes.append(draw(st.integers(smallest, smallest + max_extra_size)))
    n = draw(st.integers(1, max_batch))
    return Conv2dConfig(
        x_shape=(n, channels, sizes[0], sizes[1]),
        weight_shape=(filters, channels // groups, kh, kw),
        stride=stride, padding=padding, dilation=dilation, groups=groups,
    )


@dataclass(frozen=True)
class Pool2dConfig:
    """A valid set of arguments for ``cyconv.functional.max_pool2d`` /
    ``avg_pool2d``, with PyTorch's rules: padding at most half the kernel,
    and with ``ceil_mode`` no window that starts in the right or bottom
    padding."""

    x_shape: tuple
    kernel_size: tuple
    stride: tuple
    padding: tuple
    ceil_mode: bool

    @property
    def kwargs(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride,
                    padding=self.padding, ceil_mode=self.ceil_mode)

    @property
    def output_shape(self):
        sizes = []
        for size, k, s, p in zip(self.x_shape[-2:], self.kernel_size, self.stride, self.padding):
            span = size + 2 * p - k
            out = (-(-span // s) if self.ceil_mode else span // s) + 1
            if self.ceil_mode and (out - 1) * s >= size + p:
                out -= 1
            sizes.append(out)
        return tuple(self.x_shape[:-2]) + tuple(sizes)


@st.composite
def pool2d_configs(draw, max_batch=3, max_channels=3, max_kernel=4, max_stride=4,
                   max_extra_size=8):
    """Strategy for :class:`Pool2dConfig`, overlapping windows (stride <
    kernel) and gaps (stride > kernel) included."""
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    sizes = []
    for k, p in zip(kernel, padding):
        smallest = max(1, k - 2 * p)
        sizes.append(draw(st.integers(smallest, smallest + max_extra_size)))
    shape = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)), *sizes)
    return Pool2dConfig(x_shape=shape, kernel_size=kernel, stride=stride,
                        padding=padding, ceil_mode=draw(st.booleans()))


def random_arrays(draw, shapes, dtype=np.float64, ties=False):
    """Draw a seed and return standard-normal arrays of ``shapes``.

    With ``ties`` the values come from a handful of integers, so that equal
    values (tied maxima) are common.  Drawing a seed rather than every element
    keeps large examples cheap; hypothesis still replays failures exactly.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if ties:
        return [rng.integers(-2, 3, size=shape).astype(dtype) for shape in shapes]
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def central_difference(loss, array, step=1e-3):
    """4th-order central differences of the scalar ``loss()`` with respect
    to every element of ``array``, which is perturbed in place and restored.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.testing import central_difference
    >>> a = np.array([1.0, 2.0])
    >>> np.round(central_difference(lambda: float(np.sum(a ** 3)), a), 6)
    array([ 3., 12.])
    """
    grad = np.empty(array.shape, dtype=np.float64)
    for index in np.ndindex(array.shape):
        saved = array[index]
        values = []
        for offset in (2, 1, -1, -2):
            array[index] = saved + offset * step
            values.append(loss())
        array[index] = saved
        grad[index] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)
    return grad


def check_layer_gradients(layer, x, *, seed=0, step=1e-3, rtol=1e-6, atol=1e-8):
    """Check a layer's ``backward`` against finite differences of ``forward``.

    The scalar ``L = sum(forward(x) * G)``, for a fixed random ``G`` shaped
    like the output, is differentiated numerically by 4th-order central
    differences (error ``O(step**4)``) with respect to every element of the
    input and of every parameter, and compared with what
    ``backward(G)`` returns and stores in each ``parameter.grad``.

    Works for any object with ``forward(input)``, ``backward(output_gradient,
    learning_rate=None)`` and ``parameters()`` (a list of objects whose
    ``value`` array the layer computes with), such as a subclass of
    :class:`cyconv.Layer`.  Build the layer in float64
    (``dtype=np.float64``): float32 rounding would swamp the differences.

    Also checks that ``backward`` without a learning rate leaves the
    parameters unchanged, and that the input gradient has the input's shape.

    Parameters
    ----------
    layer : Layer
    x : array_like
        The input to check at, a batch or one sample.  Keep it small: every
        element costs four forward passes.  Avoid points where the layer is
        not differentiable (ReLU at 0, tied maxima in max pooling).
    seed : int, default 0
        Seed of ``G``.
    step : float, default 1e-3
    rtol, atol : float
        Tolerances of :func:`numpy.testing.assert_allclose`.

    Returns
    -------
    dict
        The largest absolute error for ``"input"`` and for each parameter
        (by ``name``, or its position where names repeat).

    Raises
    ------
    AssertionError
        Naming the gradient that disagrees.
    TypeError
        If the layer's parameters are not float64.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Dense
    >>> from cyconv.testing import check_layer_gradients
    >>> layer = Dense(4, 3, dtype=np.float64, rng=0)
    >>> errors = check_layer_gradients(layer, np.random.default_rng(1).random((2, 4)))
    >>> sorted(errors)
    ['bias', 'input', 'weight']

    A property test of your own layer, over many inputs:

    >>> from hypothesis import given, settings, strategies as st
    >>> @settings(max_examples=10)
    ... @given(st.integers(1, 3), st.integers(0, 2**32 - 1))
    ... def test_dense_gradients(batch, seed):
    ...     x = np.random.default_rng(seed).standard_normal((batch, 4))
    ...     check_layer_gradients(Dense(4, 3, dtype=np.float64, rng=seed), x)
    >>> test_dense_gradients()
    """
    x = np.array(x, dtype=np.float64)
    parameters = list(layer.parameters()) if hasattr(layer, "parameters") else []
    for parameter in parameters:
        if np.asarray(parameter.value).dtype != np.float64:
            raise TypeError(
                f"check_layer_gradients needs float64 parameters; "
                f"{getattr(parameter, 'name', 'a parameter')} is {parameter.value.dtype}")
    weights = np.random.default_rng(seed).standard_normal(np.shape(layer.forward(x)))

    def loss():
        return float(np.sum(np.asarray(layer.forward(x), dtype=np.float64) * weights))

    saved_flag = getattr(layer, "needs_input_gradient", True)
    before = [np.array(p.value, copy=True) for p in parameters]
    try:
        layer.needs_input_gradient = True
        layer.forward(x)
        grad_input = layer.backward(weights.copy())
    finally:
        layer.needs_input_gradient = saved_flag
    for parameter, value in zip(parameters, before):
        if not np.array_equal(parameter.value, value, equal_nan=True):
            raise AssertionError(f"backward without a learning rate changed parameter "
                                 f"{getattr(parameter, 'name', '?')}")
    analytic = {"input": grad_input}
    names = [getattr(p, "name", str(i)) for i, p in enumerate(parameters)]
    if len(set(names)) != len(names):
        names = [f"{i}:{name}" for i, name in enumerate(names)]
    for name, parameter in zip(names, parameters):
        analytic[name] = np.array(parameter.grad, copy=True) if parameter.grad is not None else None
    numeric = {"input": central_difference(loss, x, step)}
    for name, parameter in zip(names, parameters):
        numeric[name] = central_difference(loss, parameter.value, step)
    errors = {}
    for name, expected in numeric.items():
        actual = analytic[name]
        if actual is None:
            raise AssertionError(f"backward gave no gradient for {name}")
        actual = np.asarray(actual, dtype=np.float64)
        if actual.shape != expected.shape:
            raise AssertionError(f"the gradient for {name} has shape {actual.shape}, "
                                 f"expected {expected.shape}")
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                                   err_msg=f"gradient with respect to {name}")
        errors[name] = float(np.max(np.abs(actual - expected), initial=0.0))
    return errors
