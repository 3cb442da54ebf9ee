"""Helpers for property-testing convolution and pooling code and layers,
cyconv's own or yours: hypothesis strategies for valid configurations and
random arrays, all usable directly with ``@given``, and
:func:`check_layer_gradients`, a finite-difference check of any layer's
backward pass.

Needs ``hypothesis`` (``pip install cyconv[test]``).

Examples
--------
>>> from hypothesis import given, settings
>>> from cyconv.testing import conv2d_configs, conv2d_cases
>>> @given(conv2d_configs())
... def test_output_shape(config):
...     assert config.output_shape[0] == config.x_shape[0]
>>> test_output_shape()

Whole cases, arrays included:

>>> import numpy as np
>>> from cyconv.functional import conv2d
>>> @settings(max_examples=10)
... @given(conv2d_cases(dtype=np.float32))
... def test_conv2d_shape(case):
...     config, x, weight, bias = case
...     assert conv2d(x, weight, bias, **config.kwargs).shape == config.output_shape
>>> test_conv2d_shape()
"""

import contextlib
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


def arrays(shape, dtype=np.float64, ties=False):
    """Strategy for one standard-normal array of ``shape`` (drawn from a
    seed, see :func:`random_arrays`), usable directly with ``@given``.

    Examples
    --------
    >>> import numpy as np
    >>> from hypothesis import given, settings
    >>> from cyconv.testing import arrays
    >>> @settings(max_examples=5)
    ... @given(arrays((2, 3), dtype=np.float32, ties=True))
    ... def test_shape(a):
    ...     assert a.shape == (2, 3) and a.dtype == np.float32
    >>> test_shape()
    """
    return st.integers(0, 2**32 - 1).map(
        lambda seed: _seeded_arrays(seed, [shape], dtype, ties)[0])


@st.composite
def conv2d_cases(draw, dtype=np.float64, ties=False, **config_options):
    """Strategy for ``(config, x, weight, bias)``: a :class:`Conv2dConfig`
    (``config_options`` go to :func:`conv2d_configs`) and arrays that fit
    it, usable directly with ``@given``."""
    config = draw(conv2d_configs(**config_options))
    x, weight, bias = random_arrays(draw, [config.x_shape, config.weight_shape,
                                           config.weight_shape[:1]], dtype, ties)
    return config, x, weight, bias


@st.composite
def pool2d_cases(draw, dtype=np.float64, ties=False, **config_options):
    """Strategy for ``(config, x)``: a :class:`Pool2dConfig` (``config_options``
    go to :func:`pool2d_configs`) and an input that fits it."""
    config = draw(pool2d_configs(**config_options))
    (x,) = random_arrays(draw, [config.x_shape], dtype, ties)
    return config, x


def _seeded_arrays(seed, shapes, dtype, ties):
    rng = np.random.default_rng(seed)
    if ties:
        return [rng.integers(-2, 3, size=shape).astype(dtype) for shape in shapes]
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def random_arrays(draw, shapes, dtype=np.float64, ties=False):
    """Draw a seed and return standard-normal arrays of ``shapes``.

    With ``ties`` the values come from a handful of integers, so that equal
    values (tied maxima) are common.  Drawing a seed rather than every element
    keeps large examples cheap; hypothesis still replays failures exactly.
    """
    return _seeded_arrays(draw(st.integers(0, 2**32 - 1)), shapes, dtype, ties)


def relative_step(array, relative=1e-3):
    """A finite-difference step on the scale of ``array``: ``relative``
    times its largest magnitude (times 1 for an array of zeros), so that
    inputs in the thousands or the thousandths get a step that suits them.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.testing import relative_step
    >>> relative_step(np.array([2000.0, -10.0])), relative_step(np.zeros(3))
    (2.0, 0.001)
    """
    scale = float(np.max(np.abs(array), initial=0.0))
    return relative * (scale if scale > 0 and np.isfinite(scale) else 1.0)


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


def check_layer_gradients(layer, x, *, seed=0, step=None, rtol=1e-6, atol=1e-8,
                          relative=1e-3, freeze_randomness=True, training=None):
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

    A failure says whether the mismatch looks like the finite differences'
    own error (it shrinks or grows when the step is halved, and a step to
    try is suggested) or like a wrong ``backward`` (it does not).

    Parameters
    ----------
    layer : Layer
    x : array_like
        The input to check at, a batch or one sample.  Keep it small: every
        element costs four forward passes.  Avoid points where the layer is
        not differentiable (ReLU at 0, tied maxima in max pooling).
    seed : int, default 0
        Seed of ``G``.
    step : float, optional
        A fixed finite-difference step for every array.  By default each
        array gets one on its own scale, :func:`relative_step`.
    rtol, atol : float
        Tolerances of :func:`numpy.testing.assert_allclose`.
    relative : float, default 1e-3
        The relative step when ``step`` is not given.
    freeze_randomness : bool, default True
        Hold a random layer (Dropout) to one draw: the state of every numpy
        random generator the layer holds (its own attributes, its
        children's, and numpy's global state) is put back before each
        forward pass, so that all of them, and backward, see the same mask.
    training : bool, optional
        Run the check in training (True) or eval (False) mode, through the
        layer's ``train(mode)``, restoring its mode afterwards.  Eval mode
        is the other way to hold Dropout still (as identity).

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
    with _mode(layer, training), _frozen(layer, freeze_randomness) as replay:
        return _check_layer_gradients(layer, x, seed, step, rtol, atol, relative, replay)


@contextlib.contextmanager
def _mode(layer, training):
    if training is None:
        yield
        return
    if not callable(getattr(layer, "train", None)):
        raise TypeError(f"training={training!r} needs a layer with train(mode), as "
                        f"cyconv's Layer has")
    before = getattr(layer, "training", True)
    layer.train(bool(training))
    try:
        yield
    finally:
        layer.train(before)


def _generators(layer, seen=None):
    """Every numpy random generator held by ``layer`` or its children."""
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return []
    seen.add(id(layer))
    found = []
    for value in getattr(layer, "__dict__", {}).values():
        if isinstance(value, (np.random.Generator, np.random.RandomState)):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if hasattr(item, "forward"):
                    found += _generators(item, seen)
        elif hasattr(value, "forward") and hasattr(value, "__dict__"):
            found += _generators(value, seen)
    return found


def _generator_state(generator):
    if isinstance(generator, np.random.Generator):
        return generator.bit_generator.state
    return generator.get_state()


def _set_generator_state(generator, state):
    if isinstance(generator, np.random.Generator):
        generator.bit_generator.state = state
    else:
        generator.set_state(state)


@contextlib.contextmanager
def _frozen(layer, freeze):
    """Yield ``replay()``, which puts back the random state of the start."""
    if not freeze:
        yield lambda: None
        return
    generators = _generators(layer) + [np.random.mtrand._rand]
    states = [_generator_state(g) for g in generators]

    def replay():
        for generator, state in zip(generators, states):
            _set_generator_state(generator, state)

    yield replay


def _check_layer_gradients(layer, x, seed, step, rtol, atol, relative, replay):
    x = np.array(x, dtype=np.float64)
    parameters = list(layer.parameters()) if hasattr(layer, "parameters") else []
    for parameter in parameters:
        if np.asarray(parameter.value).dtype != np.float64:
            raise TypeError(
                f"check_layer_gradients needs float64 parameters; "
                f"{getattr(parameter, 'name', 'a parameter')} is {parameter.value.dtype}")
    replay()
    weights = np.random.default_rng(seed).standard_normal(np.shape(layer.forward(x)))

    def loss():
        replay()
        return float(np.sum(np.asarray(layer.forward(x), dtype=np.float64) * weights))

    saved_flag = getattr(layer, "needs_input_gradient", True)
    before = [np.array(p.value, copy=True) for p in parameters]
    try:
        layer.needs_input_gradient = True
        replay()
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
    values = {"input": x, **{name: p.value for name, p in zip(names, parameters)}}
    errors = {}
    for name, array in values.items():
        actual = analytic[name]
        if actual is None:
            raise AssertionError(f"backward gave no gradient for {name}")
        actual = np.asarray(actual, dtype=np.float64)
        h = relative_step(array, relative) if step is None else step
        expected = central_difference(loss, array, h)
        if actual.shape != expected.shape:
            raise AssertionError(f"the gradient for {name} has shape {actual.shape}, "
                                 f"expected {expected.shape}")
        try:
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                                       err_msg=f"gradient with respect to {name}")
        except AssertionError as failure:
            advice = _step_advice(loss, array, actual, expected, h)
            raise AssertionError(f"{failure}\n{advice}") from None
        errors[name] = float(np.max(np.abs(actual - expected), initial=0.0))
    return errors


def _step_advice(loss, array, actual, expected, step):
    """Whether a mismatch is the finite differences' own error: halve the
    step and see.  Truncation error (O(step**4) here) falls ~16-fold,
    rounding error (O(1/step)) doubles; a wrong backward stays put."""
    error = float(np.max(np.abs(actual - expected)))
    halved = float(np.max(np.abs(actual - central_difference(loss, array, step / 2))))
    if halved < error / 4:
        return (f"With step {step:.3g} the largest difference is {error:.3g}; with step "
                f"{step / 2:.3g} it is {halved:.3g}: this looks like the finite "
                f"differences' truncation error (the function curves a lot on the scale "
                f"of the step), not a wrong backward. Try step={step / 8:.3g}.")
    if halved > 1.5 * error:
        return (f"With step {step:.3g} the largest difference is {error:.3g}; with step "
                f"{step / 2:.3g} it is {halved:.3g}: this looks like rounding error in "
                f"the finite differences. Try step={step * 8:.3g}, or compute in float64.")
    return (f"The largest difference is {error:.3g} with step {step:.3g} and {halved:.3g} "
            f"with step {step / 2:.3g}: it does not depend on the step, so backward "
            f"itself looks wrong.")
