"""Every public function against every class of bad input.

Each case is one call and what the contract says it must give: an error of
the documented type whose message names what was expected, or the
documented result (NaN and infinities propagate; any memory layout, list or
integer input gives what the equivalent C-contiguous float array gives).

cyconv's kernels run with bounds checks off, so a case that validation
fails to catch may crash the interpreter rather than raise.  Every case
therefore runs in a separate worker process: a crash, a hang or an
"unraisable" exception from a kernel fails that case, and the next case
gets a fresh worker.  CYCONV_TEST_IN_PROCESS=1 runs the cases in the test
process instead, for a debugger.
"""

import itertools
import multiprocessing
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import bad_inputs_training as training
import cyconv
import reference as ref
from cyconv import _conv
from cyconv import functional as F

CASE_TIMEOUT = 300  # seconds; bounds-checked and sanitized builds are slow
# Extra address space a worker may take beyond what it holds at rest: more
# than any valid case here needs, far less than a runaway allocation.
WORKER_HEADROOM = 4 << 30


# -- what a case must give ---------------------------------------------------

@dataclass(frozen=True)
class Raises:
    error: type
    pattern: str

    def check(self, call):
        try:
            result = call()
        except self.error as exc:
            assert re.search(self.pattern, str(exc)), (
                f"{type(exc).__name__} message {str(exc)!r} does not match {self.pattern!r}")
            return
        except Exception as exc:
            raise AssertionError(
                f"raised {type(exc).__name__}: {exc}; expected {self.error.__name__} "
                f"matching {self.pattern!r}") from None
        raise AssertionError(
            f"returned {_summary(result)}; expected {self.error.__name__} "
            f"matching {self.pattern!r}")


@dataclass(frozen=True)
class Gives:
    """The documented result: what ``expected()`` returns, bitwise (``rtol``
    None) or within ``rtol`` with NaN where it has NaN; same dtype."""

    expected: Callable
    rtol: float = None
    dtype: object = None  # the result's dtype where it differs from expected's

    def check(self, call):
        _assert_same(call(), self.expected(), self.rtol, self.dtype)


@dataclass(frozen=True)
class SameAs:
    """What ``other()`` gives, be it a result (bitwise) or an error (same
    type and message)."""

    other: Callable

    def check(self, call):
        try:
            expected = self.other()
        except Exception as exc:
            Raises(type(exc), re.escape(str(exc))).check(call)
            return
        _assert_same(call(), expected, None, None)


def _summary(result):
    if isinstance(result, tuple):
        return "(" + ", ".join(_summary(r) for r in result) + ")"
    if isinstance(result, np.ndarray):
        return f"array of shape {result.shape} and dtype {result.dtype}"
    return repr(result)


def _assert_same(actual, expected, rtol, dtype):
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), _summary(actual)
        for a, e in zip(actual, expected):
            _assert_same(a, e, rtol, dtype)
        return
    if expected is None:
        assert actual is None, _summary(actual)
        return
    if not isinstance(expected, np.ndarray):  # a plain value: a flag, a status
        assert type(actual) is type(expected) and actual == expected, (actual, expected)
        return
    assert isinstance(actual, np.ndarray), _summary(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == (dtype or expected.dtype), (actual.dtype, dtype or expected.dtype)
    if rtol is None:
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol, equal_nan=True)
        # assert_allclose lets +inf stand for -inf's place only if equal; be explicit.
        np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
        np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))


# -- the functions and a valid call of each ----------------------------------

def _values(*shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@dataclass
class Arg:
    """An array argument: its valid value and the errors its misuse gives."""

    value: np.ndarray
    bad_ndims: tuple   # numbers of axes that are refused
    shape_error: str   # message for a refused number of axes or a scalar
    empty: Callable    # axis -> Raises or None (None: the documented result)
    dtype_error: str = None  # message for a refused dtype (default: real numbers)
    values_matter: bool = True  # False where only the shape and dtype are read


@dataclass
class Spec:
    function: Callable
    arrays: dict  # name -> Arg
    params: dict  # hyper-parameters of the valid call
    reference: Callable  # (arrays as float64, params) -> the float64 result
    rtol: float = 1e-12

    def call(self, **changes):
        kwargs = {name: arg.value for name, arg in self.arrays.items()}
        kwargs.update(self.params)
        kwargs.update(changes)
        return self.function(**kwargs)

    def reference_with(self, **changes):
        arrays = {name: arg.value for name, arg in self.arrays.items()}
        arrays.update(changes)
        return self.reference(**arrays)


def _empty_error(name):
    return lambda axis: Raises(ValueError, rf"{name} must not have an empty axis")


def _always(expectation):
    return lambda axis: expectation


def _empty_batch_gives(name, result=None):
    """An empty batch axis gives ``result`` (None: the reference's empty
    result, as in PyTorch); any other empty axis is refused."""
    refused = Raises(ValueError, rf"{name} must not have an empty axis other than the batch")
    return lambda axis: result if axis == 0 else refused


X4_SHAPE = "x must have 3 or 4 dimensions"


def _conv_specs():
    x, w, b = _values(2, 4, 6, 5, seed=1), _values(6, 2, 3, 2, seed=2), _values(6, seed=3)
    params = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    normal = dict(stride=(2, 1), sides=(1, 1, 1, 1), dilation=(1, 2), groups=2)
    out = F.conv2d(x, w, b, **params)
    grad = _values(*out.shape, seed=4)
    grad_shape = "grad_output must have the shape of conv2d's output"
    x_arg = Arg(x, (0, 1, 2, 5), X4_SHAPE, _empty_batch_gives("x"))
    w_arg = Arg(w, (0, 1, 2, 3, 5), "weight must have 4 dimensions", _empty_error("weight"))
    return {
        "conv2d": Spec(
            F.conv2d,
            {"x": x_arg, "weight": w_arg,
             "bias": Arg(b, (0, 2), r"bias must have shape \(F,\) = \(6,\)",
                         _always(Raises(ValueError, r"bias must have shape \(F,\)")))},
            params,
            lambda x, weight, bias: ref.conv2d(x, weight, bias, **normal),
        ),
        "conv2d_backward": Spec(
            F.conv2d_backward,
            {"grad_output": Arg(grad, (0, 1, 2, 3, 5), grad_shape,
                                _always(Raises(ValueError, grad_shape))),
             "x": Arg(x, (0, 1, 2, 5), X4_SHAPE,
                      _empty_batch_gives("x", Raises(ValueError, grad_shape))),
             "weight": w_arg},
            params,
            lambda grad_output, x, weight: ref.conv2d_backward(grad_output, x, weight, **normal),
        ),
    }


def _pool_specs():
    x = _values(2, 3, 7, 6, seed=5)
    params = dict(kernel_size=(3, 2), stride=(2, 2), padding=(1, 0), ceil_mode=True)
    normal = dict(kernel=(3, 2), stride=(2, 2), padding=(1, 0), ceil_mode=True)
    # Max pooling with a dilation of 2 along the columns: same output shape.
    max_params = dict(params, dilation=(1, 2))
    max_normal = dict(normal, dilation=(1, 2))
    out, indices = F.max_pool2d(x, return_indices=True, **max_params)
    assert out.shape == F.avg_pool2d(x, **params).shape
    grad = _values(*out.shape, seed=6)
    grad_shape = "grad_output must have the shape of the pooling's output"
    x_arg = Arg(x, (0, 1, 2, 5), X4_SHAPE, _empty_batch_gives("x"))
    x_backward = Arg(x, (0, 1, 2, 5), X4_SHAPE,
                     _empty_batch_gives("x", Raises(ValueError, grad_shape)))
    grad_arg = Arg(grad, (0, 1, 2, 3, 5), grad_shape, _always(Raises(ValueError, grad_shape)))
    shape_only = Arg(x, (0, 1, 2, 5), X4_SHAPE,
                     _empty_batch_gives("x", Raises(ValueError, grad_shape)),
                     values_matter=False)
    indices_shape = "indices must have the shape of the pooling's output"
    return {
        "max_pool2d": Spec(
            F.max_pool2d, {"x": x_arg}, max_params,
            lambda x: ref.max_pool2d(x, **max_normal)[0],
        ),
        "max_pool2d(return_indices)": Spec(
            F.max_pool2d, {"x": x_arg}, dict(max_params, return_indices=True),
            lambda x: ref.max_pool2d(x, **max_normal),
        ),
        "max_pool2d_backward": Spec(
            F.max_pool2d_backward, {"grad_output": grad_arg, "x": x_backward}, max_params,
            lambda grad_output, x: ref.max_pool2d_backward(grad_output, x, **max_normal),
        ),
        "max_pool2d_backward(indices)": Spec(
            F.max_pool2d_backward,
            {"grad_output": grad_arg, "x": shape_only,
             "indices": Arg(indices, (0, 1, 2, 3, 5), indices_shape,
                            _always(Raises(ValueError, indices_shape)),
                            dtype_error="indices must hold integers")},
            max_params,
            lambda grad_output, x, indices: ref.max_pool2d_backward_indices(
                grad_output, indices, x.shape),
        ),
        "avg_pool2d": Spec(
            F.avg_pool2d, {"x": x_arg}, dict(params, count_include_pad=False),
            lambda x: ref.avg_pool2d(x, count_include_pad=False, **normal),
        ),
        "avg_pool2d(divisor_override)": Spec(
            F.avg_pool2d, {"x": x_arg}, dict(params, divisor_override=-3),
            lambda x: ref.avg_pool2d(x, count_include_pad=True, divisor_override=-3, **normal),
        ),
        "avg_pool2d_backward": Spec(
            F.avg_pool2d_backward, {"grad_output": grad_arg, "x": shape_only}, params,
            lambda grad_output, x: ref.avg_pool2d_backward(
                grad_output, x.shape, count_include_pad=True, **normal),
        ),
        "avg_pool2d_backward(divisor_override)": Spec(
            F.avg_pool2d_backward, {"grad_output": grad_arg, "x": shape_only},
            dict(params, divisor_override=5),
            lambda grad_output, x: ref.avg_pool2d_backward(
                grad_output, x.shape, count_include_pad=True, divisor_override=5, **normal),
        ),
    }


def _pad_specs():
    x = _values(2, 3, 4, 5, seed=7)
    sides = (1, 2, 3, 0)
    grad = _values(2, 3, 7, 8, seed=8)

    def x_empty(axis):
        if axis >= 2:  # a reflection needs an axis longer than the padding
            return Raises(ValueError, r"mode='reflect' needs padding smaller than the axis")
        return None

    def grad_empty(axis):
        if axis >= 2:
            return Raises(ValueError, r"grad's last two axes .* are smaller than the padding")
        return None

    return {
        "pad2d": Spec(
            F.pad2d,
            {"x": Arg(x, (0, 1), r"x must have at least 2 dimensions \(\.\.\., H, W\)", x_empty)},
            dict(padding=sides, mode="reflect"),
            lambda x: ref.pad2d(x, sides, "reflect"),
        ),
        "pad2d_backward": Spec(
            F.pad2d_backward,
            {"grad": Arg(grad, (0, 1), r"grad must have at least 2 dimensions", grad_empty)},
            dict(padding=sides, mode="reflect"),
            lambda grad: ref.pad2d_backward(grad, sides, "reflect"),
        ),
    }


def _norm_specs():
    x = _values(2, 3, 4, 5, seed=11)
    gamma, beta = _values(3, seed=12), _values(3, seed=13)
    running_mean = _values(3, seed=14)
    running_var = np.abs(_values(3, seed=15)) + 0.5
    grad = _values(2, 3, 4, 5, seed=16)
    x_arg = Arg(x, (1, 3, 5), r"x must have 2 or 4 dimensions", _empty_error("x"))

    def channels_arg(value, name):
        shape = rf"{name} must have shape \(C,\) = \(3,\)"
        return Arg(value, (2, 3), shape, _always(Raises(ValueError, shape)))

    grad_shape = r"grad_output must have the shape of x"
    grad_arg = Arg(grad, (1, 2, 3, 5), grad_shape, _always(Raises(ValueError, grad_shape)))
    # Eval mode reads the running statistics, so any array-like will do;
    # training mode writes them in place (cases in _norm_structure_cases).
    running = {"running_mean": channels_arg(running_mean, "running_mean"),
               "running_var": channels_arg(running_var, "running_var")}
    return {
        "batch_norm": Spec(
            F.batch_norm,
            {"x": x_arg, "gamma": channels_arg(gamma, "gamma"),
             "beta": channels_arg(beta, "beta"), **running},
            dict(training=False, momentum=0.1, eps=1e-5),
            lambda x, gamma, beta, running_mean, running_var: ref.batch_norm(
                x, gamma, beta, running_mean, running_var, False, 0.1, 1e-5)[0],
        ),
        "batch_norm(training)": Spec(
            F.batch_norm,
            {"x": x_arg, "gamma": channels_arg(gamma, "gamma"),
             "beta": channels_arg(beta, "beta")},
            dict(training=True, momentum=0.1, eps=1e-5),
            lambda x, gamma, beta: ref.batch_norm(x, gamma, beta, None, None, True, 0.1,
                                                  1e-5)[0],
        ),
        "batch_norm_backward": Spec(
            F.batch_norm_backward,
            {"grad_output": grad_arg, "x": x_arg, "gamma": channels_arg(gamma, "gamma")},
            dict(training=True, eps=1e-5),
            lambda grad_output, x, gamma: ref.batch_norm_backward(
                grad_output, x, gamma, None, None, True, 1e-5),
        ),
        "batch_norm_backward(eval)": Spec(
            F.batch_norm_backward,
            {"grad_output": grad_arg, "x": x_arg, "gamma": channels_arg(gamma, "gamma"),
             **running},
            dict(training=False, eps=1e-5),
            lambda grad_output, x, gamma, running_mean, running_var: ref.batch_norm_backward(
                grad_output, x, gamma, running_mean, running_var, False, 1e-5),
        ),
    }


def _signal_specs():
    in1, in2 = _values(5, 6, seed=9), _values(2, 3, seed=10)
    specs = {}
    for name, function, twin in (("correlate2d", cyconv.correlate2d, ref.correlate2d),
                                 ("convolve2d", cyconv.convolve2d, ref.convolve2d)):
        specs[name] = Spec(
            function,
            {"in1": Arg(in1, (0, 1, 3), r"in1 must have 2 dimensions \(rows, columns\)",
                        _empty_error("in1")),
             "in2": Arg(in2, (0, 1, 3), r"in2 must have 2 dimensions \(rows, columns\)",
                        _empty_error("in2"))},
            dict(mode="same", boundary="symm"),
            lambda in1, in2, twin=twin: twin(in1, in2, mode="same", boundary="symm"),
        )
    return specs


SPECS = {**_signal_specs(), **_conv_specs(), **_pool_specs(), **_pad_specs(),
         **_norm_specs()}
PUBLIC = set(F.__all__) | {"correlate2d", "convolve2d"}


# -- bad arrays ----------------------------------------------------------------

def _shaped(ndim, dtype):
    return np.ones((3, 4, 5, 6, 7)[:ndim], dtype=dtype)


def _unaligned(array):
    """A C-contiguous copy of ``array`` whose data starts one byte past an
    aligned address, as a view into a bytes buffer can."""
    raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
    view = raw[1:].view(array.dtype).reshape(array.shape)
    view[...] = array
    assert not view.flags.aligned and view.flags.c_contiguous
    return view


def _strided(array):
    return np.repeat(array, 2, axis=-1)[..., ::2]


def _reversed(array):
    return np.flip(np.flip(array).copy())


def _readonly(array):
    array = array.copy()
    array.flags.writeable = False
    return array


def _broadcast(array):
    """Zero strides on the first axis: every slice is the first one."""
    return np.broadcast_to(array[:1], array.shape)


LAYOUTS = {
    "fortran-ordered": np.asfortranarray,
    "non-contiguous": _strided,
    "negative-strides": _reversed,
    "read-only": _readonly,
    "unaligned": _unaligned,
    "unaligned-float32": lambda a: _unaligned(a.astype(np.float32)),
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "zero-strides": _broadcast,
}

BAD_DTYPES = {
    "complex128": np.complex128,
    "complex64": np.complex64,
    "float16": np.float16,
    "longdouble": np.longdouble,
    "object": object,
    "str": "U4",
    "bytes": "S4",
    "datetime64": "M8[s]",
    "timedelta64": "m8[s]",
    "structured": [("a", "f8")],
}


def _with_specials(array, kind):
    array = np.array(array, dtype=np.float64)
    flat = array.reshape(-1)
    if kind == "nan":
        flat[0] = np.nan
    elif kind == "inf":
        flat[flat.size // 2] = np.inf
        flat[-1] = -np.inf
    elif kind == "all-nan":
        flat[:] = np.nan
    elif kind == "mixed":
        flat[::3] = np.nan
        flat[1::3] = np.inf
        flat[2::7] = -np.inf
    return array


def _array_cases(name, spec):
    for arg_name, arg in spec.arrays.items():
        call = spec.call
        label = f"{name}-{arg_name}"
        value = arg.value
        dtype_error = arg.dtype_error or f"{arg_name} must hold real numbers"
        is_indices = arg_name == "indices"

        for ndim in arg.bad_ndims:
            yield (f"{label}-ndim{ndim}",
                   lambda c=call, a=arg_name, n=ndim, d=value.dtype: c(**{a: _shaped(n, d)}),
                   Raises(ValueError, arg.shape_error))

        for axis in range(value.ndim):
            shape = list(value.shape)
            shape[axis] = 0
            empty = np.zeros(shape, dtype=value.dtype)
            expectation = arg.empty(axis)
            if expectation is None:
                expectation = Gives(lambda s=spec, a=arg_name, e=empty: s.reference_with(**{a: e}))
            yield (f"{label}-empty-axis{axis}",
                   lambda c=call, a=arg_name, e=empty: c(**{a: e}), expectation)

        for dtype_name, dtype in BAD_DTYPES.items():
            if is_indices and dtype_name == "structured":
                continue
            try:
                bad = value.astype(dtype)
            except (TypeError, ValueError):
                bad = np.zeros(value.shape, dtype=dtype)
            yield (f"{label}-dtype-{dtype_name}",
                   lambda c=call, a=arg_name, b=bad: c(**{a: b}),
                   Raises(TypeError, dtype_error))
        if is_indices:
            for dtype_name in ("float64", "bool"):
                yield (f"{label}-dtype-{dtype_name}",
                       lambda c=call, a=arg_name, b=value.astype(dtype_name): c(**{a: b}),
                       Raises(TypeError, dtype_error))

        # Python containers and scalars.
        yield (f"{label}-nested-list",
               lambda c=call, a=arg_name, v=value.tolist(): c(**{a: v}),
               Gives(lambda c=call: c()))
        yield (f"{label}-scalar",
               lambda c=call, a=arg_name: c(**{a: 2}),
               Raises(ValueError, arg.shape_error + r".*got (shape )?\(\)$"))
        yield (f"{label}-ragged-list",
               lambda c=call, a=arg_name: c(**{a: [[1, 2], [3]]}),
               Raises(ValueError, f"{arg_name} must be an array-like of numbers"))
        yield (f"{label}-string",
               lambda c=call, a=arg_name: c(**{a: "abc"}),
               Raises(TypeError, dtype_error))
        # None means "no bias", "no indices", gamma ones, beta zeros, or no
        # running statistics.
        if arg_name not in ("bias", "indices", "gamma", "beta", "running_mean", "running_var"):
            yield (f"{label}-None", lambda c=call, a=arg_name: c(**{a: None}),
                   Raises(TypeError, dtype_error))

        # Memory layouts: bitwise what the aligned C-contiguous copy gives.
        for layout, make in LAYOUTS.items():
            if is_indices and layout == "unaligned-float32":
                continue
            variant = make(value)
            native = variant.dtype.newbyteorder("=")
            yield (f"{label}-{layout}",
                   lambda c=call, a=arg_name, v=variant: c(**{a: v}),
                   Gives(lambda c=call, a=arg_name, v=variant, d=native:
                         c(**{a: np.ascontiguousarray(v, dtype=d)})))

        if is_indices:
            continue
        # Integer, bool and mixed-precision inputs: computed in float64.
        kinds = [("int64", lambda v: np.round(v * 3).astype(np.int64)),
                 ("uint8", lambda v: (np.abs(v) * 3).astype(np.uint8)),
                 ("bool", lambda v: v > 0)]
        if sum(a.value.dtype.kind == "f" for a in spec.arrays.values()) > 1:
            kinds.append(("float32-among-float64", lambda v: v.astype(np.float32)))
        for kind, make in kinds:
            variant = make(value)
            yield (f"{label}-{kind}",
                   lambda c=call, a=arg_name, v=variant: c(**{a: v}),
                   Gives(lambda c=call, a=arg_name, v=variant: c(**{a: v.astype(np.float64)})))

        # NaN and infinities propagate as through the float64 reference.
        if arg.values_matter:
            for kind in ("nan", "inf", "all-nan", "mixed"):
                special = _with_specials(value, kind)
                yield (f"{label}-values-{kind}",
                       lambda c=call, a=arg_name, v=special: c(**{a: v}),
                       Gives(lambda s=spec, a=arg_name, v=special: s.reference_with(**{a: v}),
                             rtol=spec.rtol))


# -- bad hyper-parameters --------------------------------------------------------

def _int_pair_values(param, minimum):
    """(label, value, expectation) for a parameter taking an int or a pair
    of ints >= minimum."""
    low = Raises(ValueError, rf"{param} must be >= {minimum}")
    not_int = Raises(TypeError, rf"{param} must be an int")
    not_pair = Raises(ValueError, rf"{param} must be an int or a pair of ints")
    huge = Raises(ValueError, rf"{param} must be at most 2\*\*40")
    yield "below-minimum", minimum - 1, low
    yield "negative", -3, low
    yield "pair-below-minimum", (minimum + 1, minimum - 1), low
    yield "float", 1.5, not_int
    yield "integral-float", 2.0, not_int
    yield "numpy-float", np.float64(2), not_int
    yield "bool", True, not_int
    yield "complex", 1j, not_int
    yield "str", "2", Raises(TypeError, rf"{param} must be an int")
    yield "pair-of-floats", (1.0, 1.0), not_int
    yield "nested-pair", ((1, 1), 1), not_int
    yield "triple", (1, 1, 1), not_pair
    # One int in a sequence is that int, as in PyTorch (None: the same
    # result as the int itself).
    yield "single", (minimum + 1,), None
    yield "single-list", [minimum + 1], None
    yield "endless-iterator", itertools.count(minimum + 1), Raises(
        ValueError, rf"{param} must be an int or a pair of ints, got more than 2 items")
    yield "endless-generator", (i for i in itertools.count(minimum + 1)), Raises(
        ValueError, rf"{param} must be an int or a pair of ints, got more than 2 items")
    yield "empty-tuple", (), not_pair
    yield "huge", 2**63, huge
    yield "huge-in-pair", (1, 2**64), huge
    yield "just-over-limit", 2**40 + 1, huge


def _same_as_int(call, param, value):
    """What a call with one int in a sequence must give: the int's result
    (or its error: for a gradient, another stride means another shape)."""
    return SameAs(lambda: call(**{param: value[0]}))


def _param_cases(name, spec):
    call = spec.call
    params = spec.params
    if "stride" in params:
        for label, value, expectation in _int_pair_values("stride", 1):
            expectation = expectation or _same_as_int(call, "stride", value)
            if label == "empty-tuple" and "pool" in name:  # PyTorch's default stride
                expectation = SameAs(lambda c=call: c(stride=None))
            yield f"{name}-stride-{label}", lambda c=call, v=value: c(stride=v), expectation
    if "dilation" in params:
        for label, value, expectation in _int_pair_values("dilation", 1):
            if label == "just-over-limit":
                continue  # a kernel taller than 1 then no longer fits: tested below
            expectation = expectation or _same_as_int(call, "dilation", value)
            yield (f"{name}-dilation-{label}", lambda c=call, v=value: c(dilation=v),
                   expectation)
    if "kernel_size" in params:
        for label, value, expectation in _int_pair_values("kernel_size", 1):
            expectation = expectation or _same_as_int(call, "kernel_size", value)
            yield (f"{name}-kernel_size-{label}", lambda c=call, v=value: c(kernel_size=v),
                   expectation)
        yield (f"{name}-kernel_size-None", lambda c=call: c(kernel_size=None),
               Raises(TypeError, "kernel_size must be an int"))
    if "groups" in params:
        for label, value, expectation in (
                ("zero", 0, Raises(ValueError, "groups must be >= 1")),
                ("negative", -2, Raises(ValueError, "groups must be >= 1")),
                ("not-dividing", 3, Raises(ValueError, "groups=3 must divide")),
                ("huge", 2**70, Raises(ValueError, "must divide")),
                ("float", 2.0, Raises(TypeError, "groups must be an int")),
                ("bool", True, Raises(TypeError, "groups must be an int")),
                ("None", None, Raises(TypeError, "groups must be an int")),
                ("pair", (2, 2), Raises(TypeError, "groups must be an int"))):
            yield f"{name}-groups-{label}", lambda c=call, v=value: c(groups=v), expectation
    if "padding" in params:
        for label, value in (("endless-iterator", itertools.count(1)),
                             ("endless-generator", (i for i in itertools.repeat(0)))):
            yield (f"{name}-padding-{label}", lambda c=call, v=value: c(padding=v),
                   Raises(ValueError, r"padding must be an int.* got more than \d items"))
        if not isinstance(params["padding"], str):
            value = params["padding"]
            pair = value if isinstance(value, tuple) and len(value) == 2 else None
            if pair and pair[0] == pair[1]:
                yield (f"{name}-padding-single", lambda c=call, v=pair[0]: c(padding=(v,)),
                       Gives(lambda c=call: c()))
    if "divisor_override" in params:
        for label, value, expectation in (
                ("zero", 0, Raises(ValueError, "divisor_override must not be 0")),
                ("beyond-int64", 2**63, Raises(ValueError, r"below 2\*\*63")),
                ("float", 2.0, Raises(TypeError, "divisor_override must be an int")),
                ("bool", True, Raises(TypeError, "divisor_override must be an int")),
                ("str", "2", Raises(TypeError, "divisor_override must be an int")),
                ("pair", (2, 2), Raises(TypeError, "divisor_override must be an int")),
                ("endless-iterator", itertools.count(1),
                 Raises(TypeError, "divisor_override must be an int")),
                ("numpy-int", np.int8(params["divisor_override"]), Gives(lambda c=call: c())),
                ("None", None, Gives(lambda c=call: c(divisor_override=None)))):
            yield (f"{name}-divisor_override-{label}",
                   lambda c=call, v=value: c(divisor_override=v), expectation)
    for flag, default in FLAGS.get(name, {}).items():
        for label, value in (("str", "yes"), ("int", 1), ("None", None),
                             ("array", np.array([True, False]))):
            yield (f"{name}-{flag}-{label}", lambda c=call, f=flag, v=value: c(**{f: v}),
                   Raises(TypeError, rf"{flag} must be True or False"))
        yield (f"{name}-{flag}-numpy-bool",
               lambda c=call, f=flag, d=default: c(**{f: np.bool_(d)}),
               Gives(lambda c=call: c()))


# Each function's True/False arguments and their values in the valid call.
FLAGS = {
    "conv2d_backward": {"compute_grad_input": True},
    "max_pool2d": {"ceil_mode": True, "return_indices": False},
    "max_pool2d(return_indices)": {"ceil_mode": True},
    "max_pool2d_backward": {"ceil_mode": True},
    "max_pool2d_backward(indices)": {"ceil_mode": True},
    "avg_pool2d": {"ceil_mode": True, "count_include_pad": False},
    "avg_pool2d_backward": {"ceil_mode": True, "count_include_pad": True},
    "avg_pool2d(divisor_override)": {"ceil_mode": True, "count_include_pad": True},
    "avg_pool2d_backward(divisor_override)": {"ceil_mode": True, "count_include_pad": True},
    "batch_norm": {"training": False},
    "batch_norm(training)": {"training": True},
    "batch_norm_backward": {"training": True},
    "batch_norm_backward(eval)": {"training": False},
}


def _numpy_int_cases(name, spec):
    """numpy integer scalars are ints: the same result as Python ints."""
    for param in ("stride", "kernel_size", "dilation", "groups"):
        if param not in spec.params:
            continue
        value = spec.params[param]
        pair = value if isinstance(value, tuple) else (value,)
        for kind in (np.int8, np.uint64):
            converted = tuple(kind(v) for v in pair)
            converted = converted if isinstance(value, tuple) else converted[0]
            yield (f"{name}-{param}-{kind.__name__}",
                   lambda c=spec.call, p=param, v=converted: c(**{p: v}),
                   Gives(lambda c=spec.call: c()))


def _conv_structure_cases():
    x, w = np.ones((1, 4, 5, 5)), np.ones((4, 2, 3, 3))
    big = Raises(ValueError, "larger than the padded input")
    cases = {
        "channels-mismatch": (lambda: F.conv2d(x, np.ones((4, 3, 3, 3))),
                              Raises(ValueError, r"weight must have shape .* = \(F, 4, kh, kw\)")),
        "channels-mismatch-groups": (lambda: F.conv2d(x, w),
                                     Raises(ValueError, r"= \(F, 4, kh, kw\) for 4 input channels")),
        "filters-not-divisible-by-groups": (
            lambda: F.conv2d(x, np.ones((3, 2, 3, 3)), groups=2),
            Raises(ValueError, r"groups=2 must divide both the input channels \(4\) "
                               r"and the filters \(3\)")),
        "kernel-larger-than-input": (lambda: F.conv2d(x, np.ones((4, 4, 6, 1))), big),
        "kernel-larger-than-padded-input": (
            lambda: F.conv2d(x, np.ones((4, 4, 8, 1)), padding=1), big),
        "dilated-kernel-larger-than-input": (lambda: F.conv2d(x, w, dilation=3, groups=2), big),
        "dilation-just-over-limit": (
            lambda: F.conv2d(x, w, dilation=2**40 + 1, groups=2),
            Raises(ValueError, r"dilation must be at most 2\*\*40")),
        "dilation-huge-1x1-kernel": (
            lambda: F.conv2d(x, np.ones((4, 4, 1, 1)), dilation=2**40),
            Gives(lambda: F.conv2d(x, np.ones((4, 4, 1, 1))))),
        "stride-at-limit": (lambda: F.conv2d(x, w, stride=2**40, groups=2),
                        Gives(lambda: F.conv2d(x, w, groups=2)[:, :, :1, :1], rtol=1e-12)),
        "padding-negative": (lambda: F.conv2d(x, w, padding=-1, groups=2),
                             Raises(ValueError, "padding must be >= 0")),
        "padding-negative-in-pair": (lambda: F.conv2d(x, w, padding=(1, -1), groups=2),
                                     Raises(ValueError, "padding must be >= 0")),
        "padding-unknown-string": (lambda: F.conv2d(x, w, padding="full", groups=2),
                                   Raises(ValueError, "'valid' or 'same'")),
        "padding-float": (lambda: F.conv2d(x, w, padding=1.5, groups=2),
                          Raises(TypeError, "padding must be an int")),
        "padding-None": (lambda: F.conv2d(x, w, padding=None, groups=2),
                         Raises(TypeError, "padding must be an int or a pair")),
        "padding-same-with-stride": (lambda: F.conv2d(x, w, padding="same", stride=2, groups=2),
                                     Raises(ValueError, "padding='same' needs stride 1")),
        "padding-huge": (lambda: F.conv2d(x, w, padding=2**41, groups=2),
                         Raises(ValueError, r"padding must be at most 2\*\*40")),
        # Within the limits, but the output could not be an array at all.
        "output-too-large-for-an-array": (
            lambda: F.conv2d(np.ones((1, 1, 1, 1)), np.ones((2**20, 1, 1, 1)),
                             padding=2**40),
            Raises(ValueError, r"output .* too large")),
        # An output plane of 2**31 or more pixels cannot be indexed by BLAS's
        # 32-bit ints: refused before anything is allocated.
        "output-plane-beyond-32-bit-blas": (
            lambda: F.conv2d(np.ones((1, 1, 1, 1), np.float32),
                             np.ones((1, 1, 1, 1), np.float32), padding=23170),
            Raises(ValueError, r"output planes .* 2\*\*31")),
        "output-plane-beyond-32-bit-blas-backward": (
            lambda: F.conv2d_backward(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)),
                                      np.ones((1, 1, 1, 1)), padding=23170),
            Raises(ValueError, r"output planes .* 2\*\*31")),
        "weight-beyond-32-bit-blas": (  # shapes only: such a weight takes 32 GiB
            lambda: _conv.conv_geometry((1, 2**16, 2**8, 2**8), (1, 2**16, 2**8, 2**8),
                                        1, 0, 1, 1),
            Raises(ValueError, r"fewer than 2\*\*31 values per filter")),
        "bias-wrong-length": (lambda: F.conv2d(x, w, np.ones(3), groups=2),
                              Raises(ValueError, r"bias must have shape \(F,\) = \(4,\)")),
        "grad-output-wrong-shape": (
            lambda: F.conv2d_backward(np.ones((1, 4, 4, 4)), x, w, groups=2),
            Raises(ValueError, r"grad_output must have the shape of conv2d's output, "
                               r"\(1, 4, 3, 3\)")),
        "grad-output-unbatched-for-batched-x": (
            lambda: F.conv2d_backward(np.ones((4, 3, 3)), x, w, groups=2),
            Raises(ValueError, r"grad_output must have the shape")),
        "input-copy-too-large-for-memory": (
            lambda: F.conv2d(np.broadcast_to(np.float64(1), (1, 1, 2**21, 2**20)),
                             np.ones((1, 1, 1, 1))),
            Raises(MemoryError, "")),
    }
    for label, (call, expectation) in cases.items():
        yield f"conv2d-{label}", call, expectation


def _pool_structure_cases():
    x = np.ones((1, 2, 5, 5))
    cases = {}
    for kind, forward, backward in (("max", F.max_pool2d, F.max_pool2d_backward),
                                    ("avg", F.avg_pool2d, F.avg_pool2d_backward)):
        for label, kwargs, expectation in (
                ("kernel-larger-than-input", dict(kernel_size=6),
                 Raises(ValueError, r"kernel_size \(6, 6\) is larger than the padded input")),
                ("kernel-larger-than-padded-input", dict(kernel_size=(8, 2), padding=(1, 0)),
                 Raises(ValueError, "larger than the padded input")),
                ("padding-over-half-kernel", dict(kernel_size=3, padding=2),
                 Raises(ValueError, r"padding must be at most half the kernel size")),
                ("padding-with-1x1-kernel", dict(kernel_size=1, padding=1),
                 Raises(ValueError, "at most half the kernel")),
                ("padding-negative", dict(kernel_size=2, padding=-1),
                 Raises(ValueError, "padding must be >= 0")),
                ("padding-float", dict(kernel_size=2, padding=0.0),
                 Raises(TypeError, "padding must be an int")),
                ("padding-huge", dict(kernel_size=2, padding=2**41),
                 Raises(ValueError, r"padding must be at most 2\*\*40")),
                # One window, almost all padding: the max of the ones, and
                # for the average 25 ones over a divisor of 2**80.
                ("kernel-huge-with-half-padding", dict(kernel_size=2**40, padding=2**39),
                 Gives(lambda k=kind: np.full((1, 2, 1, 1), 1.0 if k == "max" else 25 / 2**80)))):
            cases[f"{kind}_pool2d-{label}"] = (
                lambda f=forward, k=kwargs: f(x, **k), expectation)
            if label.startswith("kernel-huge"):
                continue
            cases[f"{kind}_pool2d_backward-{label}"] = (
                lambda b=backward, k=kwargs: b(np.ones((1, 2, 1, 1)), x, **k), expectation)
        cases[f"{kind}_pool2d_backward-grad-output-wrong-shape"] = (
            lambda b=backward: b(np.ones((1, 2, 3, 3)), x, 2),
            Raises(ValueError, r"grad_output must have the shape of the pooling's output, "
                               r"\(1, 2, 2, 2\)"))
    _, indices = F.max_pool2d(x, 2, return_indices=True)
    g = np.ones(indices.shape)
    for label, bad in (("below-zero", -1), ("at-plane-size", 25), ("far-beyond-plane", 2**40),
                       ("huge", 2**62)):
        wrong = indices.copy()
        wrong[0, 1, 1, 0] = bad
        cases[f"max_pool2d_backward-indices-{label}"] = (
            lambda w=wrong: F.max_pool2d_backward(g, x, 2, indices=w),
            Raises(ValueError, r"indices must lie in \[0, H\*W\) = \[0, 25\)"))
    cases["max_pool2d_backward-indices-uint64-beyond-int64"] = (
        lambda: F.max_pool2d_backward(g, x, 2, indices=np.full(g.shape, 2**63, np.uint64)),
        Raises(ValueError, r"indices must lie in \[0, H\*W\)"))
    for label, (call, expectation) in cases.items():
        yield label, call, expectation


def _pad_structure_cases():
    x = np.arange(12.0).reshape(3, 4)
    cases = {
        "padding-negative": (dict(padding=-1), Raises(ValueError, "padding must be >= 0")),
        "padding-negative-side": (dict(padding=(0, 0, -1, 0)),
                                  Raises(ValueError, "padding must be >= 0")),
        "padding-three-ints": (dict(padding=(1, 1, 1)),
                               Raises(ValueError, r"padding must be an int, a pair")),
        "padding-empty": (dict(padding=[]), Raises(ValueError, "padding must be an int")),
        "padding-float": (dict(padding=1.0), Raises(TypeError, "padding must be an int")),
        "padding-float-in-pair": (dict(padding=(1, 1.0)),
                                  Raises(TypeError, "padding must be an int")),
        "padding-bool": (dict(padding=True), Raises(TypeError, "padding must be an int")),
        "padding-str": (dict(padding="1"), Raises(TypeError, "padding must be an int")),
        "padding-None": (dict(padding=None), Raises(TypeError, "padding must be an int")),
        "mode-unknown": (dict(padding=1, mode="zeros"),
                         Raises(ValueError, "mode must be one of 'constant'")),
        "mode-upper-case": (dict(padding=1, mode="REFLECT"),
                            Raises(ValueError, "mode must be one of")),
        "mode-None": (dict(padding=1, mode=None), Raises(ValueError, "mode must be one of")),
        "reflect-padding-equal-to-axis": (
            dict(padding=(3, 0), mode="reflect"),
            Raises(ValueError, r"mode='reflect' needs padding smaller than the axis it pads: "
                               r"height 3 with padding \(3, 3\)")),
        "symmetric-padding-beyond-axis": (
            dict(padding=(0, 5), mode="symmetric"),
            Raises(ValueError, r"mode='symmetric' needs padding no larger than the axis")),
        "wrap-padding-beyond-axis": (
            dict(padding=(0, 0, 0, 5), mode="wrap"),
            Raises(ValueError, r"mode='wrap' needs padding no larger than the axis")),
        "symmetric-padding-equal-to-axis": (
            dict(padding=(3, 4), mode="symmetric"),
            Gives(lambda: ref.pad2d(x, (3, 3, 4, 4), "symmetric"))),
        "value-str": (dict(padding=1, value="1"), Raises(TypeError, "value must be a real number")),
        "value-None": (dict(padding=1, value=None), Raises(TypeError, "value must be a real")),
        "value-complex": (dict(padding=1, value=1j), Raises(TypeError, "value must be a real")),
        "value-bool": (dict(padding=1, value=True), Raises(TypeError, "value must be a real")),
        "value-list": (dict(padding=1, value=[1.0]), Raises(TypeError, "value must be a real")),
        "value-with-reflect": (dict(padding=1, mode="reflect", value=2.0),
                               Raises(ValueError, "value is only used by mode='constant'")),
        "value-nan": (dict(padding=1, value=np.nan),
                      Gives(lambda: ref.pad2d(x, (1, 1, 1, 1), "constant", np.nan))),
        "value-inf": (dict(padding=1, value=-np.inf),
                      Gives(lambda: ref.pad2d(x, (1, 1, 1, 1), "constant", -np.inf))),
        "value-beyond-float32": (
            dict(padding=1, value=1e300),
            Gives(lambda: ref.pad2d(x, (1, 1, 1, 1), "constant", np.inf).astype(np.float32))),
        "padding-huge": (dict(padding=2**41),
                         Raises(ValueError, r"output .* too large")),
        "padding-beyond-int64": (dict(padding=(0, 0, 0, 2**63)),
                                 Raises(ValueError, r"output .* too large")),
        # Representable, but no machine has the 8 TB it asks for.
        "output-too-large-for-memory": (dict(padding=10**6), Raises(MemoryError, "")),
    }
    for label, (kwargs, expectation) in cases.items():
        dtype = np.float32 if label == "value-beyond-float32" else np.float64
        yield (f"pad2d-{label}", lambda k=kwargs, d=dtype: F.pad2d(x.astype(d), **k),
               expectation)
    grad = np.ones((3, 4))
    for label, padding, mode, expectation in (
            ("grad-smaller-than-padding", 2, "constant",
             Raises(ValueError, r"grad's last two axes \(3, 4\) are smaller than the padding")),
            ("reflect-padding-beyond-input", (1, 1), "reflect",
             Raises(ValueError, r"mode='reflect' needs padding smaller than the axis")),
            ("edge-on-empty-axis", (0, 2), "edge",
             Raises(ValueError, "mode='edge' cannot pad an empty axis")),
            ("mode-unknown", 1, "mirror", Raises(ValueError, "mode must be one of")),
            ("padding-huge", 2**62, "constant",
             Raises(ValueError, r"smaller than the padding")),
            ("padding-float", 0.5, "constant", Raises(TypeError, "padding must be an int")),
            ("all-padding", (0, 2), "constant", Gives(lambda: np.zeros((3, 0))))):
        yield (f"pad2d_backward-{label}",
               lambda p=padding, m=mode: F.pad2d_backward(grad, p, m), expectation)


def _norm_structure_cases():
    x = _values(4, 3, seed=17)

    def buffers(dtype=np.float64):
        return np.zeros(3, dtype), np.ones(3, dtype)

    def updated(x, running_mean, running_var, **kwargs):
        F.batch_norm(x, None, None, running_mean, running_var, **kwargs)
        return running_mean, running_var

    def read_only(array):
        array.flags.writeable = False
        return array

    momentum = r"momentum must be in \[0, 1\]"
    cases = {
        "one-value-per-channel": (lambda: F.batch_norm(np.ones((1, 3))),
                                  Raises(ValueError, "more than 1 value per channel")),
        "one-pixel-one-sample": (lambda: F.batch_norm(np.ones((1, 3, 1, 1))),
                                 Raises(ValueError, "more than 1 value per channel")),
        "backward-one-value-per-channel": (
            lambda: F.batch_norm_backward(np.ones((1, 3)), np.ones((1, 3))),
            Raises(ValueError, "more than 1 value per channel")),
        "one-value-per-channel-eval": (
            lambda: F.batch_norm(np.full((1, 3), 2.0), None, None, *buffers(), training=False,
                                 eps=0.0),
            Gives(lambda: np.full((1, 3), 2.0))),
        "running-statistics-updated-in-place": (
            lambda: updated(x, *buffers(), momentum=0.5),
            Gives(lambda: (0.5 * x.mean(axis=0), 0.5 + 0.5 * x.var(axis=0, ddof=1)),
                  rtol=1e-14)),
        "float32-running-statistics-keep-their-dtype": (
            lambda: updated(x, *buffers(np.float32), momentum=0.5),
            Gives(lambda: tuple(a.astype(np.float32) for a in (
                0.5 * x.mean(axis=0), 0.5 + 0.5 * x.var(axis=0, ddof=1))), rtol=1e-6)),
        "running-mean-alone": (lambda: F.batch_norm(x, None, None, np.zeros(3)),
                               Raises(ValueError, "must be given together")),
        "running-var-alone": (lambda: F.batch_norm(x, None, None, None, np.ones(3)),
                              Raises(ValueError, "must be given together")),
        "eval-without-running-statistics": (lambda: F.batch_norm(x, training=False),
                                            Raises(ValueError, "both must be given")),
        "backward-eval-without-running-statistics": (
            lambda: F.batch_norm_backward(x, x, training=False),
            Raises(ValueError, "both must be given")),
        "training-running-mean-list": (
            lambda: F.batch_norm(x, None, None, [0.0] * 3, np.ones(3)),
            Raises(TypeError, "running_mean must be a float32 or float64 numpy array")),
        "training-running-var-int": (
            lambda: F.batch_norm(x, None, None, np.zeros(3), np.ones(3, int)),
            Raises(TypeError, "running_var must be a float32 or float64 numpy array")),
        "training-running-var-read-only": (
            lambda: F.batch_norm(x, None, None, np.zeros(3), read_only(np.ones(3))),
            Raises(ValueError, "running_var must be writeable")),
        "training-running-mean-wrong-shape": (
            lambda: F.batch_norm(x, None, None, np.zeros(4), np.ones(4)),
            Raises(ValueError, r"running_mean must have shape \(C,\) = \(3,\)")),
        "momentum-above-one": (lambda: F.batch_norm(x, momentum=1.5), Raises(ValueError, momentum)),
        "momentum-negative": (lambda: F.batch_norm(x, momentum=-0.1),
                              Raises(ValueError, momentum)),
        "momentum-nan": (lambda: F.batch_norm(x, momentum=np.nan), Raises(ValueError, momentum)),
        "momentum-str": (lambda: F.batch_norm(x, momentum="0.1"),
                         Raises(TypeError, "momentum must be a real number")),
        "momentum-bool": (lambda: F.batch_norm(x, momentum=True),
                          Raises(TypeError, "momentum must be a real number")),
        "momentum-None": (lambda: F.batch_norm(x, momentum=None),
                          Raises(TypeError, "momentum must be a real number")),
        "momentum-numpy-float": (lambda: F.batch_norm(x, momentum=np.float32(0.5)),
                                 Gives(lambda: F.batch_norm(x, momentum=0.5))),
        "eps-negative": (lambda: F.batch_norm(x, eps=-1e-5),
                         Raises(ValueError, "eps must be finite and >= 0")),
        "eps-inf": (lambda: F.batch_norm(x, eps=np.inf), Raises(ValueError, "eps must be finite")),
        "eps-complex": (lambda: F.batch_norm(x, eps=1j),
                        Raises(TypeError, "eps must be a real number")),
        "backward-eps-nan": (lambda: F.batch_norm_backward(x, x, eps=np.nan),
                             Raises(ValueError, "eps must be finite")),
        "zero-variance-without-eps": (
            lambda: bool(np.isnan(F.batch_norm(np.ones((4, 3)), eps=0.0)).all()),
            Gives(lambda: True)),
        "negative-running-variance": (
            lambda: bool(np.isnan(F.batch_norm(x, None, None, np.zeros(3), -np.ones(3),
                                               training=False)).all()),
            Gives(lambda: True)),
    }
    for label, (call, expectation) in cases.items():
        yield f"batch_norm-{label}", call, expectation


def _signal_structure_cases():
    a, b = np.ones((4, 5)), np.ones((5, 4))
    for name, function, twin in (("correlate2d", cyconv.correlate2d, ref.correlate2d),
                                 ("convolve2d", cyconv.convolve2d, ref.convolve2d)):
        cases = {
            "valid-neither-covers": (lambda f=function: f(a, b, mode="valid"),
                                     Raises(ValueError, "one must be at least as large")),
            "mode-unknown": (lambda f=function: f(a, b, mode="FULL"),
                             Raises(ValueError, "mode must be one of 'full', 'valid', 'same'")),
            "mode-None": (lambda f=function: f(a, b, mode=None),
                          Raises(ValueError, "mode must be one of")),
            "boundary-unknown": (lambda f=function: f(a, b, boundary="reflect"),
                                 Raises(ValueError, "boundary must be one of 'fill'")),
            "boundary-int": (lambda f=function: f(a, b, boundary=0),
                             Raises(ValueError, "boundary must be one of")),
            "fillvalue-str": (lambda f=function: f(a, b, fillvalue="1"),
                              Raises(TypeError, "fillvalue must be a real number")),
            "fillvalue-None": (lambda f=function: f(a, b, fillvalue=None),
                               Raises(TypeError, "fillvalue must be a real number")),
            "fillvalue-complex": (lambda f=function: f(a, b, fillvalue=1 + 1j),
                                  Raises(TypeError, "fillvalue must be a real number")),
            "fillvalue-two-numbers": (lambda f=function: f(a, b, fillvalue=[1, 2]),
                                      Raises(ValueError, "fillvalue must be one number")),
            "fillvalue-nan": (lambda f=function: f(a, b, fillvalue=np.nan),
                              Gives(lambda t=twin: t(a, b, fillvalue=np.nan), rtol=1e-12)),
            "fillvalue-inf": (lambda f=function: f(a, b, fillvalue=np.inf),
                              Gives(lambda t=twin: t(a, b, fillvalue=np.inf), rtol=1e-12)),
            "fillvalue-huge-int": (lambda f=function: f(a, b, fillvalue=10**400),
                                   Raises(TypeError, "fillvalue must be a real number")),
            "in2-larger-in-both-axes": (
                lambda f=function: f(a, np.ones((9, 9)), boundary="wrap"),
                Gives(lambda t=twin: t(a, np.ones((9, 9)), boundary="wrap"), rtol=1e-12)),
            "matrix-subclass": (lambda f=function: f(np.asmatrix(a), b),
                                Gives(lambda f=function: f(a, b))),
        }
        for label, (call, expectation) in cases.items():
            yield f"{name}-{label}", call, expectation


def _thread_cases():
    for label, value, expectation in (
            ("zero", 0, Raises(ValueError, "num_threads must be a positive int")),
            ("negative", -1, Raises(ValueError, "num_threads must be a positive int")),
            ("float", 2.0, Raises(TypeError, "num_threads must be a positive int")),
            ("bool", True, Raises(TypeError, "num_threads must be a positive int")),
            ("str", "2", Raises(TypeError, "num_threads must be a positive int")),
            ("too-many", 10**5, Raises(ValueError, r"num_threads must be at most \d+")),
            ("huge", 2**64, Raises(ValueError, r"num_threads must be at most \d+"))):
        yield (f"set_num_threads-{label}",
               lambda v=value: cyconv.set_num_threads(v), expectation)


def _all_cases():
    cases = []
    for name, spec in SPECS.items():
        cases += _array_cases(name, spec)
        cases += _param_cases(name, spec)
        cases += _numpy_int_cases(name, spec)
    cases += _conv_structure_cases()
    cases += _pool_structure_cases()
    cases += _pad_structure_cases()
    cases += _signal_structure_cases()
    cases += _norm_structure_cases()
    cases += _thread_cases()
    for generator in (training.layer_cases, training.constructor_cases, training.model_cases,
                      training.dataset_cases, training.cli_cases):
        cases += generator(Raises, Gives)
    table = {case_id: (call, expectation) for case_id, call, expectation in cases}
    assert len(table) == len(cases), "two cases share an id"
    return table


CASES = _all_cases()


def run_case(case_id):
    """Run one case; return None or what went wrong."""
    call, expectation = CASES[case_id]
    try:
        expectation.check(call)
    except AssertionError as exc:
        return str(exc) or "assertion failed"
    finally:
        cyconv.set_num_threads(None)
    return None


# -- the worker process ------------------------------------------------------

def _serve(connection):
    """Worker loop: receive case ids, send back (problem or None)."""
    unraisable = []
    # A kernel's noexcept helper can only print an error it cannot raise
    # (an out-of-range index in a bounds-checked build): make it fail the case.
    sys.unraisablehook = lambda info: unraisable.append(
        f"{info.exc_type.__name__}: {info.exc_value} in {info.object!r}")
    F.conv2d(np.ones((4, 2, 8, 8)), np.ones((2, 2, 3, 3)))  # start the thread pools
    _limit_address_space()
    while True:
        try:
            case_id = connection.recv()
        except EOFError:
            return
        problem = run_case(case_id)
        if unraisable:
            problem = (problem or "") + "\nunraisable exception: " + "; ".join(unraisable)
            unraisable.clear()
        connection.send(problem)


def _limit_address_space():
    """Cap the worker's address space a little above what it holds now, so
    that a size validation let through fails to allocate at once instead of
    filling the machine's memory.  Not under AddressSanitizer, which
    reserves terabytes of address space for its own bookkeeping."""
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        return
    try:
        import resource
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[0])
    except (ImportError, OSError):
        return
    size = pages * os.sysconf("SC_PAGE_SIZE") + WORKER_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (size, size))


class Worker:
    def __init__(self):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def run(self, case_id):
        self.connection.send(case_id)
        if not self.connection.poll(CASE_TIMEOUT):
            self.process.kill()
            self.process.join()
            raise Died(f"no answer within {CASE_TIMEOUT} s; worker killed")
        try:
            return self.connection.recv()
        except EOFError:
            self.process.join()
            code = self.process.exitcode
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            raise Died(f"the worker process died ({how})") from None

    def close(self):
        self.connection.close()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


class Died(Exception):
    pass


@pytest.fixture(scope="module")
def worker():
    if os.environ.get("CYCONV_TEST_IN_PROCESS"):
        yield None
        return
    holder = {"worker": Worker()}

    def run(case_id):
        try:
            return holder["worker"].run(case_id)
        except Died as died:
            holder["worker"] = Worker()  # the next case gets a fresh one
            return f"crash or hang: {died}"

    yield run
    holder["worker"].close()


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_input(case_id, worker):
    problem = run_case(case_id) if worker is None else worker(case_id)
    assert problem is None, problem


def test_every_public_function_meets_every_class_of_bad_input():
    """The table is complete: each public function (and each array argument)
    meets each class of bad input at least once."""
    classes = ["ndim", "empty-axis", "dtype-complex128", "dtype-float16", "dtype-object",
               "nested-list", "scalar", "ragged-list", "string", "fortran-ordered",
               "non-contiguous", "read-only", "unaligned", "big-endian", "zero-strides"]
    for name in PUBLIC:
        covered = [case_id for case_id in CASES if case_id.startswith(name + "-")]
        for kind in classes:
            assert any(f"-{kind}" in case_id for case_id in covered), (name, kind)
        assert any("-values-nan" in case_id for case_id in covered), name
    for name, spec in SPECS.items():
        for arg in spec.arrays:
            assert any(case_id.startswith(f"{name}-{arg}-dtype-") for case_id in CASES)
    layer_classes = ["None", "string", "ragged-list", "dtype-complex128", "dtype-float16",
                     "dtype-object", "nested-list", "fortran-ordered", "non-contiguous",
                     "unaligned", "big-endian", "zero-strides", "values-nan", "values-inf"]
    for name in training.LAYERS:
        for kind in layer_classes:
            assert f"{name}-forward-{kind}" in CASES, (name, kind)
        for kind in ("before-forward", "wrong-gradient-shape", "gradient-complex",
                     "learning-rate--0.1"):
            assert f"{name}-backward-{kind}" in CASES, (name, kind)
    assert set(training.LAYERS) == {
        name for name in cyconv.__all__
        if isinstance(getattr(cyconv, name), type) and issubclass(getattr(cyconv, name),
                                                                 cyconv.Layer)} - {"Layer"}
