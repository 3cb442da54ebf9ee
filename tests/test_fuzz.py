"""Random, often invalid, calls of every public function.

Each example starts from a valid call and garbles up to three of its
arguments: shapes, dtypes, memory layouts, NaN and infinities, and
hyper-parameters of every wrong type and size.  The test decides on its own,
from the documented contract, whether the call is valid:

* valid: the result must have the documented shape and dtype and match the
  float64 reference of tests/reference.py within rounding;
* invalid: the call must raise one of the documented errors for the faults
  present (TypeError or ValueError), with a message naming the argument.

Either way the inputs must come back unchanged.

Examples per function: 60 under the default "ci" profile, 2000 under
HYPOTHESIS_PROFILE=thorough, or CYCONV_FUZZ_EXAMPLES=n.  tools/fuzz_long.sh
runs a long session.
"""

import contextlib
import itertools
import numbers
import operator
import os
import sys
from dataclasses import dataclass, field, replace
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import cyconv
import reference as ref
from cyconv import _conv
from cyconv import functional as F
from cyconv.testing import conv2d_configs, pool2d_configs

_PROFILE_EXAMPLES = {"ci": 60, "thorough": 2000}
EXAMPLES = int(os.environ.get("CYCONV_FUZZ_EXAMPLES", 0)) or _PROFILE_EXAMPLES.get(
    os.environ.get("HYPOTHESIS_PROFILE", "ci"), 60)
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

LARGEST = 2**40
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


# -- verdicts ------------------------------------------------------------------

class Fault(Exception):
    """An argument outside the contract: the error it must raise and a word
    the message must contain."""

    def __init__(self, error, word):
        super().__init__(f"{error.__name__} about {word!r}")
        self.error, self.word = error, word


@dataclass
class Verdict:
    faults: list = field(default_factory=list)

    def add(self, error, word):
        self.faults.append(Fault(error, word))

    def expect(self, check, *args):
        """Run a check that raises Fault, recording the fault; return its
        value, or None after a fault."""
        try:
            return check(*args)
        except Fault as fault:
            self.faults.append(fault)
            return None


# -- what the contract accepts, written out independently ------------------------

def real_array(value, name):
    """The array cyconv computes with, or a Fault."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            raise Fault(ValueError, name) from None
    kind, size = array.dtype.kind, array.dtype.itemsize
    if not (kind in "biu" or (kind == "f" and size in (4, 8))):
        raise Fault(TypeError, name)
    return array


def computed_dtype(arrays):
    """float32 when every array is float32, else float64."""
    if all(a.dtype.kind == "f" and a.dtype.itemsize == 4 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def integer(value):
    """An int is whatever operator.index takes, bools aside; else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def an_int(value, name, minimum, largest=None):
    number = integer(value)
    if number is None:
        raise Fault(TypeError, name)
    if number < minimum or (largest is not None and number > largest):
        raise Fault(ValueError, name)
    return number


def items_of(value, name, most):
    """The items of a sequence argument, at most ``most`` (one more is a
    fault); a string is not one.  An endless iterator (the only kind the
    strategies draw) loses the items looked at, but stays endless."""
    if isinstance(value, (str, bytes)):
        raise Fault(TypeError, name)
    try:
        items = list(itertools.islice(iter(value), most + 1))
    except TypeError:
        raise Fault(TypeError, name) from None
    if len(items) > most:
        raise Fault(ValueError, name)
    return items


def a_pair(value, name, minimum, largest=LARGEST):
    """An int, a pair of ints or one int in a sequence, as in PyTorch."""
    if integer(value) is not None:
        number = an_int(value, name, minimum, largest)
        return number, number
    items = items_of(value, name, 2)
    if not items:
        raise Fault(ValueError, name)
    pair = tuple(an_int(item, name, minimum, largest) for item in items)
    return pair * 2 if len(pair) == 1 else pair


def a_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise Fault(TypeError, name)
    return bool(value)


# -- drawing arguments ---------------------------------------------------------------

# How an array argument reaches the function: mostly plain float arrays, so
# that many calls are valid, but every other form too.
ARRAY_FORMS = (["float64"] * 10 + ["float32"] * 6
               + ["int32", "uint8", "bool", "big-endian", "fortran", "strided", "reversed",
                  "read-only", "unaligned", "zero-strides", "list",
                  "float16", "complex", "object", "str", "longdouble"])

BAD_INTS = st.one_of(
    st.integers(-3, 6),
    st.sampled_from([0, -1, 2**40, 2**40 + 1, 2**63, -(2**63), 10**30]),
    st.floats(-3, 6),
    st.sampled_from([float("nan"), float("inf")]),
    st.sampled_from([True, False, None, "2", b"1", 1j, np.float64(2), np.int8(2),
                     np.uint64(3), np.array(2), np.array([1, 2])]),
    st.lists(st.integers(-1, 4), min_size=0, max_size=3).map(tuple),
    st.tuples(st.integers(1, 3), st.floats(0, 3)),
    # Endless iterables: refused after three items, never listed whole.
    st.builds(itertools.count, st.integers(1, 3)),
    st.builds(itertools.repeat, st.integers(1, 3)),
)
BAD_DIVISORS = st.one_of(
    st.none(), st.integers(-4, 4),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 1.5, 2.0, True, "2",
                     np.int8(3), (2,)]),
)
BAD_FLAGS = st.sampled_from([0, 1, None, "yes", np.array([True]), 1.0])


@st.composite
def an_array(draw, shape, name, specials=True):
    """An array-like of ``shape`` in some drawn form; occasionally NaN and
    infinities where float values are allowed."""
    form = draw(st.sampled_from(ARRAY_FORMS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.standard_normal(shape)
    if specials and draw(st.integers(0, 4)) == 0 and values.size:
        for special in (np.nan, np.inf, -np.inf):
            values[rng.random(shape) < 0.15] = special
        event("NaN or infinities in an input")
    if form in ("int32", "uint8"):
        small = np.round(np.nan_to_num(values, posinf=9, neginf=-9) * 3)
        return (np.abs(small) if form == "uint8" else small).astype(form)
    if form == "bool":
        return values > 0
    if form == "float32":
        return values.astype(np.float32)
    if form == "big-endian":
        return values.astype(">f4" if draw(st.booleans()) else ">f8")
    if form == "fortran":
        return np.asfortranarray(values)
    if form == "strided":
        return np.repeat(values, 2, axis=-1)[..., ::2] if values.ndim else values
    if form == "reversed":
        return np.flip(np.flip(values).copy())
    if form == "read-only":
        values.flags.writeable = False
        return values
    if form == "unaligned":
        raw = np.zeros(values.nbytes + 1, dtype=np.uint8)
        view = raw[1:].view(np.float64).reshape(values.shape)
        view[...] = values
        return view
    if form == "zero-strides":
        return np.broadcast_to(values[:1], values.shape) if values.ndim and values.size else values
    if form == "list":
        return values.tolist()
    if form == "float16":
        return values.astype(np.float16)
    if form == "complex":
        return values.astype(np.complex128)
    if form == "object":
        return values.astype(object)
    if form == "str":
        return values.astype("U3")
    if form == "longdouble":
        return values.astype(np.longdouble)
    return values


@st.composite
def garbled_shape(draw, shape):
    """``shape`` with an axis resized, removed or added."""
    shape = list(shape)
    how = draw(st.sampled_from(["resize", "resize", "zero", "drop", "add"]))
    if how == "drop" and shape:
        del shape[draw(st.integers(0, len(shape) - 1))]
    elif how == "add":
        shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(1, 3)))
    elif shape:
        shape[draw(st.integers(0, len(shape) - 1))] = (
            0 if how == "zero" else draw(st.integers(1, 7)))
    return tuple(shape)


def garble(draw, params, shapes, extra=None):
    """Garble up to three of ``params`` (hyper-parameters) and ``shapes``
    (array shapes by name) in place."""
    choices = sorted(params) + sorted(shapes) + sorted(extra or {})
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(choices))
        if name in shapes:
            shapes[name] = draw(garbled_shape(shapes[name]))
        elif extra and name in extra:
            params[name] = draw(extra[name])
        else:
            params[name] = draw(BAD_INTS)


def garbled_call(draw, params, shapes, extra=None):
    """:func:`garble`, then the call's keyword arguments: ``params`` and an
    array drawn for each of ``shapes``."""
    garble(draw, params, shapes, extra)
    kwargs = dict(params)
    for name, shape in shapes.items():
        kwargs[name] = draw(an_array(shape, name))
    return kwargs


# -- checking a call ------------------------------------------------------------------

def _snapshot(kwargs):
    return {k: np.array(v, copy=True) for k, v in kwargs.items()
            if isinstance(v, np.ndarray)}


def check_call(function, kwargs, judge):
    """Call ``function(**kwargs)`` and hold it to ``judge(**kwargs)``: a
    list of faults, or (expected, magnitude) to compare with."""
    threads = kwargs.pop("_threads")
    with np.errstate(all="ignore"):  # NaN and infinities are expected here
        verdict = judge(**kwargs)
    before = _snapshot(kwargs)
    cyconv.set_num_threads(threads)
    try:
        result = function(**kwargs)
    except (TypeError, ValueError) as exc:
        if not isinstance(verdict, list) or not verdict:
            raise AssertionError(f"a valid call raised {type(exc).__name__}: {exc}") from exc
        allowed = {fault.error for fault in verdict}
        assert type(exc) in allowed or any(issubclass(type(exc), e) for e in allowed), (
            f"raised {type(exc).__name__}: {exc}; the faults were {verdict}")
        words = [fault.word for fault in verdict if isinstance(exc, fault.error)]
        assert any(word in str(exc) for word in words), (
            f"message {str(exc)!r} names none of {words}")
        event(f"refused: {type(exc).__name__}")
    else:
        assert not isinstance(verdict, list), (
            f"an invalid call returned {type(result).__name__}; the faults were {verdict}")
        event("valid: compared with the reference")
        expected, magnitude, dtype = verdict
        with np.errstate(all="ignore"):
            _compare(result, expected, magnitude, dtype)
    finally:
        cyconv.set_num_threads(None)
    for name, copy in before.items():
        assert _unchanged(kwargs[name], copy), f"{name} was modified"


def _unchanged(array, copy):
    if array.dtype != copy.dtype or array.shape != copy.shape:
        return False
    if array.dtype.kind == "O":
        return all(a is b or a == b or (a != a and b != b)
                   for a, b in zip(array.flat, copy.flat))
    if array.dtype.kind in "fc":
        return np.array_equal(array, copy, equal_nan=True)
    return np.array_equal(array, copy)


def _compare(actual, expected, magnitude, dtype):
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e, m in zip(actual, expected, magnitude):
            _compare(a, e, m, dtype)
        return
    if expected is None:
        assert actual is None
        return
    assert isinstance(actual, np.ndarray) and type(actual) is np.ndarray
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.dtype.kind in "iu":  # indices: exact
        assert actual.dtype == np.int64
        np.testing.assert_array_equal(actual, expected)
        return
    assert actual.dtype == dtype, (actual.dtype, dtype)
    actual = actual.astype(np.float64)
    special = ~np.isfinite(expected) | ~np.isfinite(magnitude)
    finite = ~special
    # NaN where the reference has NaN, the same infinity where it has one.
    np.testing.assert_array_equal(np.isnan(actual[special]), np.isnan(expected[special]))
    inf = np.isinf(expected)
    np.testing.assert_array_equal(actual[inf], expected[inf])
    bound = RTOL[dtype] * (magnitude[finite] + 1)
    excess = np.abs(actual[finite] - expected[finite]) - bound
    assert excess.size == 0 or excess.max() <= 0, f"off by {excess.max()} beyond rounding"


def _abs(array):
    return None if array is None else np.abs(np.asarray(array, np.float64))


# -- conv2d ---------------------------------------------------------------------------

def judge_conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
               grad_output=None, compute_grad_input=True, backward=False):
    # Every fault that can be seen is recorded, not only the first: cyconv
    # may report any of them first.
    v = Verdict()
    x = v.expect(real_array, x, "x")
    weight = v.expect(real_array, weight, "weight")
    arrays = [x, weight]
    if bias is not None:
        bias = v.expect(real_array, bias, "bias")
        arrays.append(bias)
    if backward:
        grad_output = v.expect(real_array, grad_output, "grad_output")
        arrays.append(grad_output)
        v.expect(a_flag, compute_grad_input, "compute_grad_input")
    stride = v.expect(a_pair, stride, "stride", 1)
    dilation = v.expect(a_pair, dilation, "dilation", 1)
    groups = v.expect(an_int, groups, "groups", 1)
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            v.add(ValueError, "padding")
            padding = None
    else:
        padding = v.expect(a_pair, padding, "padding", 0)
    # Only the batch axis of (N, C, H, W) may be empty, as in PyTorch.
    x_ok = x is not None and x.ndim in (3, 4) and 0 not in x.shape[x.ndim - 3:]
    if x is not None and not x_ok:
        v.add(ValueError, "x")
    w_ok = weight is not None and weight.ndim == 4 and weight.size > 0
    if weight is not None and not w_ok:
        v.add(ValueError, "weight")
    if not (x_ok and w_ok):
        return v.faults
    batched = x.ndim == 4
    x4 = x if batched else x[np.newaxis]
    n, channels, height, width = x4.shape
    filters, group_channels, kh, kw = weight.shape
    if bias is not None and bias.shape != (filters,):
        v.add(ValueError, "bias")
    if groups is not None:
        if channels % groups or filters % groups:
            v.add(ValueError, "groups")
        elif group_channels != channels // groups:
            v.add(ValueError, "weight")
    if None in (stride, dilation, padding):
        return v.faults
    if padding == "same":
        if stride != (1, 1):
            v.add(ValueError, "same")
        th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
        sides = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        if max(sides) > LARGEST:  # bounded as explicit padding is
            v.add(ValueError, "padding")
            return v.faults
    elif padding == "valid":
        sides = (0, 0, 0, 0)
    else:
        sides = (padding[0], padding[0], padding[1], padding[1])
    if (dilation[0] * (kh - 1) + 1 > height + sides[0] + sides[1]
            or dilation[1] * (kw - 1) + 1 > width + sides[2] + sides[3]):
        v.add(ValueError, "larger than the padded input")
        return v.faults
    hout = ref.conv_output_size(height, sides[0], sides[1], kh, stride[0], dilation[0])
    wout = ref.conv_output_size(width, sides[2], sides[3], kw, stride[1], dilation[1])
    if n * filters * hout * wout * 8 > sys.maxsize:
        v.add(ValueError, "too large")
    elif hout * wout >= 2**31:
        v.add(ValueError, "2**31")
    if v.faults:
        return v.faults
    hyper = dict(stride=stride, sides=sides, dilation=dilation, groups=groups)
    dtype = computed_dtype(arrays)
    if not backward:
        out = ref.conv2d(x4, weight, bias, **hyper)
        magnitude = ref.conv2d(_abs(x4), _abs(weight), _abs(bias), **hyper)
        return (out, magnitude, dtype) if batched else (out[0], magnitude[0], dtype)
    out_shape = (n, filters, hout, wout)
    if grad_output.shape != (out_shape if batched else out_shape[1:]):
        return [Fault(ValueError, "grad_output")]
    g4 = grad_output if batched else grad_output[np.newaxis]
    gx, gw, gb = ref.conv2d_backward(g4, x4, weight, **hyper)
    mx, mw, mb = ref.conv2d_backward(_abs(g4), _abs(x4), _abs(weight), **hyper)
    if not compute_grad_input:
        gx = mx = None
    elif not batched:
        gx, mx = gx[0], mx[0]
    return (gx, gw, gb), (mx, mw, mb), dtype


@st.composite
def conv_calls(draw, backward=False):
    config = draw(conv2d_configs(max_batch=2, max_group_channels=2, max_groups=2,
                                 max_kernel=3, max_stride=2, max_dilation=2, max_padding=2,
                                 max_extra_size=4))
    x_shape = config.x_shape if draw(st.integers(0, 3)) else config.x_shape[1:]
    shapes = {"x": x_shape, "weight": config.weight_shape}
    params = dict(stride=config.stride, padding=config.padding, dilation=config.dilation,
                  groups=config.groups)
    if backward:
        out = config.output_shape
        shapes["grad_output"] = out if len(x_shape) == 4 else out[1:]
        params["compute_grad_input"] = draw(st.booleans())
        extra = {"compute_grad_input": BAD_FLAGS,
                 "padding": st.one_of(BAD_INTS, st.sampled_from(["same", "valid", "full"]))}
    else:
        if draw(st.booleans()):
            shapes["bias"] = (config.weight_shape[0],)
        extra = {"padding": st.one_of(BAD_INTS, st.sampled_from(["same", "valid", "full"]))}
    kwargs = garbled_call(draw, params, shapes, extra)
    if not backward and draw(st.integers(0, 9)) == 0:
        kwargs["bias"] = draw(st.sampled_from([[1.0, 2.0], "b", 1.0]))
    kwargs["_threads"] = draw(st.integers(1, 3))
    kwargs["_shifted"] = draw(st.booleans())
    return kwargs


@contextlib.contextmanager
def formulation(shifted):
    """With ``shifted``, stride-1 calls take the shifted products, which
    serve only wide layers by default, whatever their channels."""
    if not shifted:
        yield
        return
    event("shifted products allowed")
    with mock.patch.object(_conv, "SHIFTED_MIN_CHANNELS", 1), \
            mock.patch.object(_conv, "SHIFTED_WEIGHT_MAX_CHANNELS", 2**62):
        yield


@FUZZ
@given(conv_calls())
def test_fuzz_conv2d(kwargs):
    with formulation(kwargs.pop("_shifted")):
        check_call(F.conv2d, kwargs, judge_conv)


@FUZZ
@given(conv_calls(backward=True))
def test_fuzz_conv2d_backward(kwargs):
    with formulation(kwargs.pop("_shifted")):
        check_call(F.conv2d_backward, kwargs,
                   lambda **kw: judge_conv(backward=True, **kw))


# -- pooling ----------------------------------------------------------------------------

def judge_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False, kind="max",
               grad_output=None, indices=None, return_indices=False,
               count_include_pad=True, dilation=1, divisor_override=None, backward=False):
    v = Verdict()
    x = v.expect(real_array, x, "x")
    arrays = [x]
    if backward:
        grad_output = v.expect(real_array, grad_output, "grad_output")
        arrays.append(grad_output)
    kernel = v.expect(a_pair, kernel_size, "kernel_size", 1)
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        stride = kernel  # PyTorch's default, also spelt ()
    else:
        stride = v.expect(a_pair, stride, "stride", 1)
    padding = v.expect(a_pair, padding, "padding", 0)
    dilation = v.expect(a_pair, dilation, "dilation", 1)
    v.expect(a_flag, ceil_mode, "ceil_mode")
    if kind == "max" and not backward:
        v.expect(a_flag, return_indices, "return_indices")
    if kind == "avg":
        v.expect(a_flag, count_include_pad, "count_include_pad")
        divisor = v.expect(a_divisor, divisor_override)
    # Only the batch axis of (N, C, H, W) may be empty, as in PyTorch.
    x_ok = x is not None and x.ndim in (3, 4) and 0 not in x.shape[x.ndim - 3:]
    if x is not None and not x_ok:
        v.add(ValueError, "x")
    if None in (kernel, stride, padding, dilation):
        return v.faults
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        v.add(ValueError, "padding")
    elif x_ok:
        for word in _pool_geometry_faults(x.shape[-2:], kernel, stride, padding, dilation,
                                          bool(ceil_mode)):
            v.add(ValueError, word)
    if v.faults:
        return v.faults
    height, width = x.shape[-2:]
    hyper = dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=bool(ceil_mode))
    out_shape = x.shape[:-2] + tuple(
        ref.pool_output_size(size, k, s, p, bool(ceil_mode), d)
        for size, k, s, p, d in zip((height, width), kernel, stride, padding, dilation))
    if backward and grad_output.shape != out_shape:
        return [Fault(ValueError, "grad_output")]
    if indices is not None:
        indices = v.expect(_indices_array, indices, out_shape, height * width)
        if v.faults:
            return v.faults
    dtype = computed_dtype(arrays)
    xf = x.astype(np.float64)
    if kind == "max" and not backward:
        out, where = ref.max_pool2d(xf, **hyper, dilation=dilation)
        if return_indices:
            return (out, where), (np.abs(out), None), dtype
        return out, np.abs(out), dtype
    if kind == "max":
        if indices is None:
            _, indices = ref.max_pool2d(xf, **hyper, dilation=dilation)
        return (ref.max_pool2d_backward_indices(grad_output, indices, x.shape),
                ref.max_pool2d_backward_indices(_abs(grad_output), indices, x.shape), dtype)
    pad_rule = dict(count_include_pad=count_include_pad, divisor_override=divisor, **hyper)
    # The magnitude (what rounding errors scale with) of a sum divided by a
    # negative divisor_override is that of the sum divided by its size.
    positive = dict(pad_rule, divisor_override=None if divisor is None else abs(divisor))
    if not backward:
        return ref.avg_pool2d(xf, **pad_rule), ref.avg_pool2d(_abs(xf), **positive), dtype
    return (ref.avg_pool2d_backward(grad_output, x.shape, **pad_rule),
            ref.avg_pool2d_backward(_abs(grad_output), x.shape, **positive), dtype)


def a_divisor(value):
    """divisor_override: None, or a nonzero int of int64's range."""
    if value is None:
        return None
    number = integer(value)
    if number is None:
        raise Fault(TypeError, "divisor_override")
    if number == 0 or not -(2**63) <= number < 2**63:
        raise Fault(ValueError, "divisor_override")
    return number


def _pool_geometry_faults(sizes, kernel, stride, padding, dilation, ceil_mode):
    """What PyTorch's rule refuses along each axis, in words cyconv's
    message has: no window fits, or (dilated) a window reads nothing but
    padding.  Either axis may be reported first."""
    faults = []
    for size, k, s, p, d in zip(sizes, kernel, stride, padding, dilation):
        out = ref.pool_output_size(size, k, s, p, ceil_mode, d)
        if out < 1:
            faults.append("larger than the padded input")
        elif any(all(not 0 <= o * s - p + i * d < size for i in range(k)) for o in range(out)):
            faults.append("holds only padding")
    return faults


def _indices_array(indices, out_shape, plane):
    array = np.asarray(indices)
    if array.dtype.kind not in "iu":
        raise Fault(TypeError, "indices")
    if array.shape != out_shape:
        raise Fault(ValueError, "indices")
    if array.size and (array.min() < 0 or array.max() >= plane):
        raise Fault(ValueError, "indices")
    return array


@st.composite
def pool_calls(draw, kind, backward=False):
    config = draw(pool2d_configs(max_batch=2, max_channels=2, max_kernel=3, max_stride=3,
                                 max_extra_size=4))
    x_shape = config.x_shape if draw(st.integers(0, 3)) else config.x_shape[1:]
    shapes = {"x": x_shape}
    params = dict(kernel_size=config.kernel_size, padding=config.padding,
                  ceil_mode=config.ceil_mode)
    if draw(st.booleans()):
        params["stride"] = config.stride
    else:
        params["stride"] = None
        config = replace(config, stride=config.kernel_size)
    extra = {"ceil_mode": BAD_FLAGS}
    if kind == "avg":
        params["count_include_pad"] = draw(st.booleans())
        extra["count_include_pad"] = BAD_FLAGS
        if draw(st.booleans()):
            params["divisor_override"] = draw(st.integers(-3, 5).filter(bool))
            extra["divisor_override"] = BAD_DIVISORS
    out_shape = config.output_shape
    if kind == "max" and draw(st.booleans()):
        # Dilation changes the output shape, by the reference's rule; where
        # no window fits, any grad_output shape is as wrong as another.
        dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        params["dilation"] = dilation
        sizes = tuple(max(1, ref.pool_output_size(size, k, s, p, config.ceil_mode, d))
                      for size, k, s, p, d in zip(config.x_shape[-2:], config.kernel_size,
                                                  config.stride, config.padding, dilation))
        out_shape = config.x_shape[:-2] + sizes
    if len(x_shape) == 3:
        out_shape = out_shape[1:]
    if draw(st.integers(0, 7)) == 0:  # an empty batch, as PyTorch allows
        shapes["x"] = (0,) + tuple(shapes["x"][1:]) if len(x_shape) == 4 else shapes["x"]
        out_shape = (0,) + tuple(out_shape[1:]) if len(x_shape) == 4 else out_shape
    with_indices = kind == "max" and backward and draw(st.booleans())
    if backward:
        shapes["grad_output"] = out_shape
    elif kind == "max":
        params["return_indices"] = draw(st.booleans())
        extra["return_indices"] = BAD_FLAGS
    kwargs = garbled_call(draw, params, shapes, extra)
    if with_indices:
        kwargs["indices"] = draw(indices_for(kwargs, out_shape))
    kwargs["_threads"] = draw(st.integers(1, 3))
    return kwargs


@st.composite
def indices_for(draw, kwargs, out_shape):
    """The indices max_pool2d returns for these arguments when it can, else
    (and sometimes anyway) made-up ones, in or out of range."""
    how = draw(st.sampled_from(["forward", "forward", "forward", "random", "float", "shape"]))
    if how == "forward":
        try:
            args = {k: v for k, v in kwargs.items() if k != "grad_output"}
            return F.max_pool2d(return_indices=True, **args)[1]
        except (TypeError, ValueError):
            how = "random"
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    plane = int(np.prod(out_shape[-2:])) * 4 + 1
    if how == "float":
        return rng.integers(0, plane, out_shape).astype(np.float64)
    if how == "shape":
        return rng.integers(0, plane, draw(garbled_shape(out_shape)))
    dtype = draw(st.sampled_from([np.int64, np.int32, np.uint16]))
    return rng.integers(-2, plane, out_shape).astype(dtype)


@FUZZ
@given(pool_calls("max"))
def test_fuzz_max_pool2d(kwargs):
    check_call(F.max_pool2d, kwargs, lambda **kw: judge_pool(kind="max", **kw))


@FUZZ
@given(pool_calls("max", backward=True))
def test_fuzz_max_pool2d_backward(kwargs):
    check_call(F.max_pool2d_backward, kwargs,
               lambda **kw: judge_pool(kind="max", backward=True, **kw))


@FUZZ
@given(pool_calls("avg"))
def test_fuzz_avg_pool2d(kwargs):
    check_call(F.avg_pool2d, kwargs, lambda **kw: judge_pool(kind="avg", **kw))


@FUZZ
@given(pool_calls("avg", backward=True))
def test_fuzz_avg_pool2d_backward(kwargs):
    check_call(F.avg_pool2d_backward, kwargs,
               lambda **kw: judge_pool(kind="avg", backward=True, **kw))


# -- padding ------------------------------------------------------------------------------

PAD_MODES = ("constant", "reflect", "symmetric", "edge", "wrap")


def pad_sides(padding):
    if integer(padding) is not None:
        amount = an_int(padding, "padding", 0)
        return amount, amount, amount, amount
    items = items_of(padding, "padding", 4)
    if len(items) not in (2, 4):
        raise Fault(ValueError, "padding")
    amounts = [an_int(item, "padding", 0) for item in items]
    if len(amounts) == 2:
        return amounts[0], amounts[0], amounts[1], amounts[1]
    return tuple(amounts)


def mode_limits(mode, size, before, after):
    if before == 0 and after == 0:
        return
    largest = max(before, after)
    if (mode == "reflect" and largest >= size) or (
            mode in ("symmetric", "wrap") and largest > size) or (mode == "edge" and size == 0):
        raise Fault(ValueError, f"mode={mode!r}")


def judge_pad(padding, mode="constant", value=0.0, x=None, grad=None):
    v = Verdict()
    backward = grad is not None
    name = "grad" if backward else "x"
    array = v.expect(real_array, grad if backward else x, name)
    sides = v.expect(pad_sides, padding)
    mode_ok = isinstance(mode, str) and mode in PAD_MODES
    if not mode_ok:
        v.add(ValueError, "mode")
    if not backward:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            v.add(TypeError, "value")
        elif mode_ok and mode != "constant" and value != 0:
            v.add(ValueError, "value")
    if array is not None and array.ndim < 2:
        v.add(ValueError, name)
        return v.faults
    if array is None or sides is None:
        return v.faults
    height, width = array.shape[-2:]
    if backward:
        height, width = height - sides[0] - sides[1], width - sides[2] - sides[3]
        if height < 0 or width < 0:
            v.add(ValueError, "smaller than the padding")
            return v.faults
    if mode_ok:
        v.expect(mode_limits, mode, height, sides[0], sides[1])
        v.expect(mode_limits, mode, width, sides[2], sides[3])
    if not backward:
        out_shape = array.shape[:-2] + (height + sides[0] + sides[1], width + sides[2] + sides[3])
        if np.prod(out_shape, dtype=object) * 8 > sys.maxsize:
            v.add(ValueError, "too large")
    if v.faults:
        return v.faults
    dtype = computed_dtype([array])
    if backward:
        grad_in = ref.pad2d_backward(array, sides, mode)
        return grad_in, ref.pad2d_backward(_abs(array), sides, mode), dtype
    out = ref.pad2d(array, sides, mode, float(value))
    if dtype == np.float32:
        with np.errstate(over="ignore"):
            out = out.astype(np.float32).astype(np.float64)  # the value, rounded
    return out, np.abs(out), dtype


@st.composite
def pad_calls(draw, backward=False):
    shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2))) + (
        draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    mode = draw(st.sampled_from(PAD_MODES))
    height, width = shape[-2:]
    most = {"reflect": (height - 1, width - 1), "symmetric": (height, width),
            "wrap": (height, width)}.get(mode, (4, 4))
    sides = [draw(st.integers(0, most[0])), draw(st.integers(0, most[0])),
             draw(st.integers(0, most[1])), draw(st.integers(0, most[1]))]
    form = draw(st.sampled_from(["four", "pair", "int"]))
    if form == "pair":
        sides = [sides[0], sides[0], sides[2], sides[2]]
        padding = (sides[0], sides[2])
    elif form == "int":
        amount = min(sides[0], sides[2])
        sides, padding = [amount] * 4, amount
    else:
        padding = tuple(sides)
    params = {"padding": padding, "mode": mode}
    extra = {"padding": st.one_of(BAD_INTS, st.lists(st.integers(-1, 6), max_size=5)),
             "mode": st.sampled_from(list(PAD_MODES) + ["zeros", None, "", 1])}
    if backward:
        shapes = {"grad": shape[:-2] + (height + sides[0] + sides[1],
                                        width + sides[2] + sides[3])}
    else:
        shapes = {"x": shape}
        params["value"] = 0.0 if mode != "constant" else draw(
            st.sampled_from([0.0, -1.5, 2, np.nan, np.inf]))
        extra["value"] = st.sampled_from([1.0, "1", None, True, 1j, np.float32(0.5), [0.0]])
    kwargs = garbled_call(draw, params, shapes, extra)
    kwargs["_threads"] = draw(st.integers(1, 3))
    return kwargs


@FUZZ
@given(pad_calls())
def test_fuzz_pad2d(kwargs):
    check_call(F.pad2d, kwargs, judge_pad)


@FUZZ
@given(pad_calls(backward=True))
def test_fuzz_pad2d_backward(kwargs):
    check_call(F.pad2d_backward, kwargs, judge_pad)


# -- correlate2d and convolve2d ---------------------------------------------------------------

BOUNDARIES = ("fill", "pad", "wrap", "circular", "symm", "symmetric")


def judge_signal(in1, in2, mode="full", boundary="fill", fillvalue=0, convolve=False):
    v = Verdict()
    a = v.expect(real_array, in1, "in1")
    b = v.expect(real_array, in2, "in2")
    for array, name in ((a, "in1"), (b, "in2")):
        if array is not None and (array.ndim != 2 or array.size == 0):
            v.add(ValueError, name)
    if not isinstance(mode, str) or mode not in ("full", "valid", "same"):
        v.add(ValueError, "mode")
    if not isinstance(boundary, str) or boundary not in BOUNDARIES:
        v.add(ValueError, "boundary")
    elif boundary in ("fill", "pad"):
        fill = np.asarray(fillvalue) if not isinstance(fillvalue, np.ndarray) else fillvalue
        if fill.dtype.kind not in "biuf":
            v.add(TypeError, "fillvalue")
        elif fill.size != 1:
            v.add(ValueError, "fillvalue")
    if v.faults:
        return v.faults
    if mode == "valid":
        covers = all(p >= q for p, q in zip(a.shape, b.shape))
        covered = all(q >= p for p, q in zip(a.shape, b.shape))
        if not (covers or covered):
            return [Fault(ValueError, "valid")]
    dtype = computed_dtype([a, b])
    fill = float(np.asarray(fillvalue).reshape(())) if boundary in ("fill", "pad") else 0.0
    if dtype == np.float32:
        fill = float(np.float32(fill))
    twin = ref.convolve2d if convolve else ref.correlate2d
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    out = twin(a64, b64, mode=mode, boundary=boundary, fillvalue=fill)
    magnitude = twin(np.abs(a64), np.abs(b64), mode=mode, boundary=boundary,
                     fillvalue=abs(fill))
    return out, magnitude, dtype


@st.composite
def signal_calls(draw):
    shapes = {"in1": (draw(st.integers(1, 6)), draw(st.integers(1, 6))),
              "in2": (draw(st.integers(1, 4)), draw(st.integers(1, 4)))}
    params = {"mode": draw(st.sampled_from(["full", "valid", "same"])),
              "boundary": draw(st.sampled_from(BOUNDARIES)),
              "fillvalue": draw(st.sampled_from([0, 1.5, -2, np.float32(0.25)]))}
    extra = {"mode": st.sampled_from(["FULL", "", None, 1, "valid", "same"]),
             "boundary": st.sampled_from(["reflect", "fill", "wrap", None, 0]),
             "fillvalue": st.sampled_from([np.nan, np.inf, "1", None, 1j, [1, 2], [[3]],
                                           np.array([]), True])}
    kwargs = garbled_call(draw, params, shapes, extra)
    kwargs["_threads"] = draw(st.integers(1, 3))
    return kwargs


@FUZZ
@given(signal_calls())
def test_fuzz_correlate2d(kwargs):
    check_call(cyconv.correlate2d, kwargs, judge_signal)


@FUZZ
@given(signal_calls())
def test_fuzz_convolve2d(kwargs):
    check_call(cyconv.convolve2d, kwargs, lambda **kw: judge_signal(convolve=True, **kw))
