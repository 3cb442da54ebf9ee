"""correlate2d and convolve2d against scipy.signal, computed in float64, in
every mode and boundary (aliases included), with either input the larger."""

import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from scipy import signal

import cyconv
from cyconv.testing import random_arrays
from reference import assert_close

MODES = ["full", "valid", "same"]
BOUNDARIES = ["fill", "wrap", "symm", "pad", "circular", "symmetric"]
PAIRS = [
    pytest.param(cyconv.correlate2d, signal.correlate2d, id="correlate2d"),
    pytest.param(cyconv.convolve2d, signal.convolve2d, id="convolve2d"),
]


@dataclass(frozen=True)
class SignalCase:
    shape1: tuple
    shape2: tuple
    mode: str
    boundary: str
    fillvalue: float


@st.composite
def signal_cases(draw, max_size=9):
    """Any shapes (in2 larger than in1 about half the time in each axis),
    mode, boundary name and fill value that scipy accepts."""
    mode = draw(st.sampled_from(MODES))
    sizes = st.integers(1, max_size)
    shape1 = (draw(sizes), draw(sizes))
    shape2 = (draw(sizes), draw(sizes))
    if mode == "valid":
        # One input must cover the other: order both axes the same way.
        in2_larger = draw(st.booleans())
        pairs = [sorted(pair, reverse=not in2_larger) for pair in zip(shape1, shape2)]
        shape1, shape2 = (pairs[0][0], pairs[1][0]), (pairs[0][1], pairs[1][1])
    fillvalue = draw(st.one_of(st.just(0), st.integers(-5, 5),
                               st.floats(-10, 10, allow_nan=False)))
    return SignalCase(shape1, shape2, mode, draw(st.sampled_from(BOUNDARIES)), fillvalue)


def record_kind(case):
    """Report how often the awkward cases come up (--hypothesis-show-statistics)."""
    if case.shape1 == (1, 1) or case.shape2 == (1, 1):
        event("an input is 1 pixel")
    if all(b > a for a, b in zip(case.shape1, case.shape2)):
        event("in2 larger than in1 in both axes")
    if case.mode == "valid" and case.shape1 != case.shape2 and all(
            b >= a for a, b in zip(case.shape1, case.shape2)):
        event("valid mode, inputs swapped")
    if case.mode == "same" and any(k % 2 == 0 for k in case.shape2):
        event("same mode, even-sized in2")
    if case.boundary in ("fill", "pad") and case.fillvalue != 0:
        event("non-zero fill value")


@pytest.mark.parametrize("ours, scipys", PAIRS)
@given(signal_cases(), st.sampled_from([np.float32, np.float64]), st.data())
def test_matches_scipy(ours, scipys, case, dtype, data):
    record_kind(case)
    in1, in2 = random_arrays(data.draw, [case.shape1, case.shape2], dtype)
    out = ours(in1, in2, case.mode, case.boundary, case.fillvalue)
    in1_64, in2_64 = in1.astype(np.float64), in2.astype(np.float64)
    expected = scipys(in1_64, in2_64, case.mode, case.boundary, case.fillvalue)
    magnitude = scipys(np.abs(in1_64), np.abs(in2_64), case.mode, case.boundary,
                       abs(case.fillvalue))
    assert_close(out, expected, magnitude, dtype)
    assert out.flags.c_contiguous


@pytest.mark.parametrize("ours, scipys", PAIRS)
@given(signal_cases(), st.data())
def test_integer_inputs_compute_exactly_in_float64(ours, scipys, case, data):
    """Small integers give exact sums in float64 and in scipy's int64, so the
    two must agree to the last bit (with an integral fill value: scipy
    truncates the fill value to the inputs' integer type)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    in1 = rng.integers(-50, 51, size=case.shape1)
    in2 = rng.integers(-50, 51, size=case.shape2)
    fillvalue = int(case.fillvalue)
    out = ours(in1, in2, case.mode, case.boundary, fillvalue)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, scipys(in1, in2, case.mode, case.boundary, fillvalue))


@st.composite
def incompatible_valid_shapes(draw, max_size=9):
    """Shapes where each input is larger than the other in one axis."""
    small = draw(st.integers(1, max_size - 1)), draw(st.integers(1, max_size - 1))
    large = draw(st.integers(small[0] + 1, max_size)), draw(st.integers(small[1] + 1, max_size))
    if draw(st.booleans()):
        return (small[0], large[1]), (large[0], small[1])
    return (large[0], small[1]), (small[0], large[1])


@pytest.mark.parametrize("ours, scipys", PAIRS)
@given(incompatible_valid_shapes())
def test_valid_mode_refuses_shapes_scipy_refuses(ours, scipys, shapes):
    in1, in2 = np.ones(shapes[0]), np.ones(shapes[1])
    with pytest.raises(ValueError, match="at least as large as the other"):
        scipys(in1, in2, "valid")
    with pytest.raises(ValueError, match="at least as large as the other in every dimension"):
        ours(in1, in2, "valid")


def test_same_mode_centres_even_kernels_differently_for_each_function():
    """scipy rounds the 'same' offset down for a correlation and up for a
    convolution, so convolving is not correlating with the flipped kernel."""
    x, k = np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 10.0]])
    np.testing.assert_array_equal(cyconv.correlate2d(x, k, "same"), [[21.0, 32.0, 3.0]])
    np.testing.assert_array_equal(cyconv.convolve2d(x, k, "same"), [[1.0, 12.0, 23.0]])
    np.testing.assert_array_equal(cyconv.correlate2d(x, k[:, ::-1], "same"), [[12.0, 23.0, 30.0]])
    for ours, scipys in ((cyconv.correlate2d, signal.correlate2d),
                         (cyconv.convolve2d, signal.convolve2d)):
        np.testing.assert_array_equal(ours(x, k, "same"), scipys(x, k, "same"))


def test_valid_mode_with_larger_in2_reverses_the_swapped_correlation():
    x = np.array([[1.0, 2.0]])
    y = np.array([[1.0, 10.0, 100.0]])
    # scipy: correlate2d(y, x, 'valid') = [[21, 210]], reversed.
    np.testing.assert_array_equal(cyconv.correlate2d(x, y, "valid"), [[210.0, 21.0]])
    np.testing.assert_array_equal(cyconv.convolve2d(x, y, "valid"), [[12.0, 120.0]])


@pytest.mark.parametrize("ours, scipys", PAIRS)
def test_kernel_far_larger_than_input_wraps_and_mirrors_repeatedly(ours, scipys):
    in1 = np.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]])
    in2 = np.arange(77.0).reshape(7, 11)
    for boundary in ("wrap", "symm"):
        for mode in ("full", "same"):
            np.testing.assert_array_equal(ours(in1, in2, mode, boundary),
                                          scipys(in1, in2, mode, boundary))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_bitwise_identical_at_any_thread_count(dtype):
    rng = np.random.default_rng(3)
    in1 = rng.standard_normal((150, 131)).astype(dtype)
    in2 = rng.standard_normal((5, 4)).astype(dtype)
    results = []
    try:
        for threads in (1, 2, 3):
            cyconv.set_num_threads(threads)
            results.append([cyconv.correlate2d(in1, in2, "same", "symm"),
                            cyconv.convolve2d(in1, in2, "full", "fill", 0.5)])
    finally:
        cyconv.set_num_threads(None)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    in1_64, in2_64 = in1.astype(np.float64), in2.astype(np.float64)
    expected = signal.correlate2d(in1_64, in2_64, "same", "symm")
    magnitude = signal.correlate2d(np.abs(in1_64), np.abs(in2_64), "same", "symm")
    assert_close(results[0][0], expected, magnitude, dtype)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "reversed"])
@pytest.mark.parametrize("ours", [cyconv.correlate2d, cyconv.convolve2d])
def test_any_memory_layout_gives_the_same_result(ours, layout):
    rng = np.random.default_rng(4)
    in1, in2 = rng.standard_normal((9, 8)), rng.standard_normal((3, 4))
    expected = [ours(in1, in2, mode, "symm") for mode in MODES]
    if layout == "fortran":
        in1, in2 = np.asfortranarray(in1), np.asfortranarray(in2)
    elif layout == "strided":
        in1, in2 = (np.repeat(a, 2, axis=-1)[:, ::2] for a in (in1, in2))
    elif layout == "readonly":
        for a in (in1, in2):
            a.flags.writeable = False
    else:
        in1, in2 = (a[::-1, ::-1].copy()[::-1, ::-1] for a in (in1, in2))
    for mode, e in zip(MODES, expected):
        np.testing.assert_array_equal(ours(in1, in2, mode, "symm"), e)


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("ours, scipys", PAIRS)
def test_one_column_arrays_of_any_stride(ours, scipys, boundary):
    # numpy calls a one-column slice of a wider array contiguous, whatever
    # its column stride: such arrays are taken as they are.
    rng = np.random.default_rng(6)
    wide1, wide2 = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    wide1[0, 0] = -np.inf
    for in1, in2 in ((wide1[:1, ::3], wide2[:1, ::3]), (wide1[:, ::3], wide2[:, ::3]),
                     (wide1, wide2[:1, ::3])):
        for mode in MODES:
            np.testing.assert_array_equal(ours(in1, in2, mode, boundary),
                                          scipys(in1, in2, mode, boundary))


def test_dtype_policy():
    f32, f64 = np.ones((3, 3), np.float32), np.ones((3, 3))
    assert cyconv.correlate2d(f32, f32).dtype == np.float32
    assert cyconv.correlate2d(f32, f64).dtype == np.float64
    assert cyconv.correlate2d(f32, np.ones((2, 2), int)).dtype == np.float64
    assert cyconv.convolve2d(np.arange(9).reshape(3, 3), [[1, 2]]).dtype == np.float64
    # scipy refuses bool inputs ("not available for this type"); here they
    # are numbers like any integer.
    boolean = cyconv.correlate2d(np.eye(3, dtype=bool), np.ones((2, 2), bool))
    np.testing.assert_array_equal(boolean, signal.correlate2d(np.eye(3), np.ones((2, 2))))
    # float32 fill values are rounded to float32, as scipy does.
    out = cyconv.correlate2d(f32, f32, fillvalue=0.1)
    np.testing.assert_array_equal(out, signal.correlate2d(f32, f32, fillvalue=0.1))


@pytest.mark.parametrize("fillvalue", [2, 2.5, np.float32(2.5), np.array([[2.5]]), [2.5], True])
def test_fill_value_forms_scipy_accepts(fillvalue):
    in1, in2 = np.arange(12.0).reshape(3, 4), np.ones((2, 3))
    np.testing.assert_array_equal(cyconv.convolve2d(in1, in2, fillvalue=fillvalue),
                                  signal.convolve2d(in1, in2, fillvalue=fillvalue))


@pytest.mark.parametrize("boundary", ["wrap", "symm"])
def test_fill_value_is_ignored_unless_boundary_is_fill(boundary):
    in1, in2 = np.arange(12.0).reshape(3, 4), np.ones((2, 3))
    expected = signal.correlate2d(in1, in2, boundary=boundary)
    for fillvalue in (None, "abc", [1.0, 2.0], 1j):
        np.testing.assert_array_equal(
            cyconv.correlate2d(in1, in2, boundary=boundary, fillvalue=fillvalue), expected)


def test_nan_and_inf_propagate_as_in_scipy():
    in1 = np.arange(20.0).reshape(4, 5)
    in1[1, 2] = np.nan
    in2 = np.zeros((2, 2))
    in2[0, 0] = 1.0
    for ours, scipys in ((cyconv.correlate2d, signal.correlate2d),
                         (cyconv.convolve2d, signal.convolve2d)):
        for fillvalue in (0.0, np.inf, -np.inf, np.nan):
            np.testing.assert_array_equal(ours(in1, in2, fillvalue=fillvalue),
                                          scipys(in1, in2, fillvalue=fillvalue))


BAD_ARGUMENTS = [
    # (in1, in2, kwargs, error, words the message must contain)
    (np.ones(3), np.ones((2, 2)), {}, ValueError, r"in1 must have 2 dimensions \(rows, columns\)"),
    (np.ones((3, 3)), np.ones((1, 2, 2)), {}, ValueError, "in2 must have 2 dimensions"),
    (np.float64(3.0), np.ones((2, 2)), {}, ValueError, r"in1 must have 2 dimensions.*shape \(\)"),
    (np.ones((0, 3)), np.ones((2, 2)), {}, ValueError, "in1 must not have an empty axis"),
    (np.ones((3, 3)), np.ones((2, 0)), {}, ValueError, "in2 must not have an empty axis"),
    (np.ones((0, 3)), np.ones((0, 2)), {"mode": "valid"}, ValueError, "empty axis"),
    (np.ones((3, 3)), np.ones((2, 2)), {"mode": "Full"}, ValueError, "mode must be one of"),
    (np.ones((3, 3)), np.ones((2, 2)), {"mode": 2}, ValueError, "mode must be one of"),
    (np.ones((3, 3)), np.ones((2, 2)), {"mode": None}, ValueError, "mode must be one of"),
    (np.ones((3, 3)), np.ones((2, 2)), {"boundary": "reflect"}, ValueError,
     "boundary must be one of"),
    (np.ones((3, 3)), np.ones((2, 2)), {"boundary": "edge", "mode": "valid"}, ValueError,
     "boundary must be one of"),
    (np.ones((3, 5)), np.ones((5, 3)), {"mode": "valid"}, ValueError,
     r"at least as large as the other.*\(3, 5\).*\(5, 3\)"),
    (np.ones((3, 3)) + 1j, np.ones((2, 2)), {}, TypeError, "in1 must hold real numbers"),
    (np.ones((3, 3)), np.ones((2, 2), np.float16), {}, TypeError, "in2 must hold real numbers"),
    (np.ones((3, 3), object), np.ones((2, 2)), {}, TypeError, "real numbers"),
    (np.ones((3, 3)).astype("U3"), np.ones((2, 2)), {}, TypeError, "real numbers"),
    ([[1.0, 2.0], [3.0]], np.ones((2, 2)), {}, ValueError, "in1 must be an array-like of numbers"),
    (np.ones((3, 3)), np.ones((2, 2)), {"fillvalue": "abc"}, TypeError,
     "fillvalue must be a real number"),
    (np.ones((3, 3)), np.ones((2, 2)), {"fillvalue": "2"}, TypeError,
     "fillvalue must be a real number"),
    (np.ones((3, 3)), np.ones((2, 2)), {"fillvalue": None}, TypeError,
     "fillvalue must be a real number"),
    (np.ones((3, 3)), np.ones((2, 2)), {"fillvalue": 1 + 2j}, TypeError,
     "fillvalue must be a real number"),
    (np.ones((3, 3)), np.ones((2, 2)), {"fillvalue": object()}, TypeError,
     "fillvalue must be a real number"),
    (np.ones((3, 3)), np.ones((2, 2)), {"fillvalue": [1.0, 2.0]}, ValueError,
     r"fillvalue must be one number.*shape \(2,\)"),
    (np.ones((3, 3)), np.ones((2, 2)), {"fillvalue": np.array([])}, ValueError,
     "fillvalue must be one number"),
    (np.ones((3, 3)), np.ones((2, 2)), {"fillvalue": "abc", "mode": "valid"}, TypeError,
     "fillvalue must be a real number"),
    (None, np.ones((2, 2)), {}, TypeError, "in1 must hold real numbers"),
    (np.ones((2, 2)), "abc", {}, TypeError, "in2 must hold real numbers"),
]


@pytest.mark.parametrize("in1, in2, kwargs, error, words", BAD_ARGUMENTS)
@pytest.mark.parametrize("ours", [cyconv.correlate2d, cyconv.convolve2d])
def test_bad_arguments_raise_clear_errors(ours, in1, in2, kwargs, error, words):
    with pytest.raises(error, match=words):
        ours(in1, in2, **kwargs)


@pytest.mark.parametrize("ours, scipys", PAIRS)
def test_large_swapped_valid_mode_is_reversed_exactly(ours, scipys):
    # The reversal runs in slices of 65,536 elements: an odd count of
    # 158,403 takes three, with a middle element that stays in place.
    rng = np.random.default_rng(4)
    in1, in2 = rng.standard_normal((3, 2)), rng.standard_normal((399, 398))
    np.testing.assert_allclose(ours(in1, in2, mode="valid"), scipys(in1, in2, mode="valid"),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_peak_memory_is_the_output_and_thin_border_strips(mode, boundary):
    """The extended input is never built whole (it cost another array of
    the output's size): beyond the output, only the strips along its
    border that read the boundary are allocated."""
    rng = np.random.default_rng(5)
    in1, in2 = rng.standard_normal((1000, 1000)), rng.standard_normal((7, 5))
    tracemalloc.start()
    try:
        out = cyconv.correlate2d(in1, in2, mode=mode, boundary=boundary)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    strips = 2 * (6 + 6) * (out.shape[1] + 4) * 8 + 2 * out.shape[0] * (4 + 4) * 8
    assert peak <= out.nbytes + strips + (64 << 10), (peak, out.nbytes)
    np.testing.assert_allclose(out, signal.correlate2d(in1, in2, mode=mode, boundary=boundary),
                               rtol=1e-12, atol=1e-12)
