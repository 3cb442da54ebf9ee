"""pad2d against np.pad in every mode, and pad2d_backward against the
transpose of np.pad's matrix and the adjoint identity."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cyconv
from cyconv.functional import pad2d, pad2d_backward
from cyconv.testing import random_arrays

MODES = ["constant", "reflect", "symmetric", "edge", "wrap"]
DTYPES = [np.float32, np.float64]


def largest_padding(mode, size):
    """The most np.pad may add on one side for pad2d to accept it."""
    if mode == "reflect":
        return size - 1
    if mode in ("symmetric", "wrap"):
        return size
    return 2 * size + 3  # constant, edge: no limit; keep examples small


@st.composite
def pad_cases(draw, max_size=6, max_leading=2):
    """(shape, mode, padding argument, ((top, bottom), (left, right)))."""
    leading = draw(st.lists(st.integers(1, 3), min_size=0, max_size=max_leading))
    height, width = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    mode = draw(st.sampled_from(MODES))
    most_h, most_w = largest_padding(mode, height), largest_padding(mode, width)
    form = draw(st.sampled_from(["int", "pair", "four"]))
    if form == "int":
        amount = draw(st.integers(0, min(most_h, most_w)))
        padding, sides = amount, ((amount, amount), (amount, amount))
    elif form == "pair":
        ph, pw = draw(st.integers(0, most_h)), draw(st.integers(0, most_w))
        padding, sides = (ph, pw), ((ph, ph), (pw, pw))
    else:
        top, bottom = draw(st.integers(0, most_h)), draw(st.integers(0, most_h))
        left, right = draw(st.integers(0, most_w)), draw(st.integers(0, most_w))
        padding, sides = [top, bottom, left, right], ((top, bottom), (left, right))
    return (*leading, height, width), mode, padding, sides


def np_pad(x, sides, mode, value=0.0):
    widths = [(0, 0)] * (x.ndim - 2) + list(sides)
    if mode == "constant":
        return np.pad(x, widths, mode=mode, constant_values=value)
    return np.pad(x, widths, mode=mode)


@given(pad_cases(), st.sampled_from(DTYPES), st.sampled_from([0.0, -1.5, np.nan]), st.data())
def test_pad2d_matches_np_pad(case, dtype, value, data):
    shape, mode, padding, sides = case
    (x,) = random_arrays(data.draw, [shape], dtype)
    kwargs = {"value": value} if mode == "constant" else {}
    out = pad2d(x, padding, mode, **kwargs)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np_pad(x, sides, mode, value))


@given(pad_cases(), st.sampled_from(DTYPES), st.data())
def test_pad2d_backward_adjoint_identity(case, dtype, data):
    """<pad(x), y> = <x, pad_backward(y)>."""
    shape, mode, padding, sides = case
    x = random_arrays(data.draw, [shape], dtype)[0]
    y = random_arrays(data.draw, [pad2d(x, padding, mode).shape], dtype)[0]
    grad = pad2d_backward(y, padding, mode)
    assert grad.dtype == dtype and grad.shape == x.shape
    forward = np.vdot(pad2d(x, padding, mode).astype(np.float64), y.astype(np.float64))
    backward = np.vdot(x.astype(np.float64), grad.astype(np.float64))
    scale = np.vdot(np.abs(pad2d(x, padding, mode)), np.abs(y)) + 1
    tolerance = {np.float32: 1e-5, np.float64: 1e-13}[dtype]
    assert abs(forward - backward) <= tolerance * scale


@given(pad_cases(max_size=5, max_leading=0), st.data())
def test_pad2d_backward_is_the_transpose_of_np_pad(case, data):
    """np.pad is linear; its matrix, built column by column from the basis
    images, transposed, must be pad2d_backward."""
    (height, width), mode, padding, sides = case
    basis = np.eye(height * width).reshape(-1, height, width)
    matrix = np.stack([np_pad(e, sides, mode).ravel() for e in basis], axis=1)
    padded_shape = np_pad(basis[0], sides, mode).shape
    (y,) = random_arrays(data.draw, [padded_shape])
    expected = (matrix.T @ y.ravel()).reshape(height, width)
    np.testing.assert_allclose(pad2d_backward(y, padding, mode), expected, rtol=1e-13,
                               atol=1e-13 * np.abs(y).sum())


def test_borders_accumulate_into_the_elements_they_copy():
    # One row of width 3 padded by 2 on each side, positions -2 .. 4; powers
    # of ten keep every sum exact and show which positions were added.
    # reflect copies 2 1 | 0 1 2 | 1 0, symmetric 1 0 | 0 1 2 | 2 1,
    # wrap 1 2 | 0 1 2 | 0 1, edge 0 0 | 0 1 2 | 2 2.
    y = np.array([[1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0]])
    expected = {
        "reflect": [100.0 + 1000000.0, 10.0 + 1000.0 + 100000.0, 1.0 + 10000.0],
        "symmetric": [10.0 + 100.0, 1.0 + 1000.0 + 1000000.0, 10000.0 + 100000.0],
        "wrap": [100.0 + 100000.0, 1.0 + 1000.0 + 1000000.0, 10.0 + 10000.0],
        "edge": [1.0 + 10.0 + 100.0, 1000.0, 10000.0 + 100000.0 + 1000000.0],
        "constant": [100.0, 1000.0, 10000.0],
    }
    for mode, row in expected.items():
        np.testing.assert_array_equal(pad2d_backward(y, (0, 2), mode), [row], err_msg=mode)


@pytest.mark.parametrize("shape, padding, mode", [
    ((0, 3, 4), 2, "constant"),
    ((2, 0, 4), (1, 0, 2, 1), "constant"),
    ((2, 3, 0), 1, "constant"),
    ((2, 0, 4), (0, 1), "reflect"),
    ((0, 4), (0, 3), "wrap"),
    ((3, 0), (2, 0), "edge"),
])
def test_empty_arrays_match_np_pad(shape, padding, mode):
    x = np.ones(shape)
    kwargs = {"value": 7.0} if mode == "constant" else {}
    top, bottom, left, right = (
        (padding,) * 4 if isinstance(padding, int)
        else (padding[0], padding[0], padding[1], padding[1]) if len(padding) == 2
        else padding
    )
    out = pad2d(x, padding, mode, **kwargs)
    np.testing.assert_array_equal(out, np_pad(x, ((top, bottom), (left, right)), mode,
                                               kwargs.get("value", 0.0)))
    grad = pad2d_backward(out, padding, mode)
    assert grad.shape == shape and not grad.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_bitwise_identical_at_any_thread_count(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 13, 11)).astype(dtype)
    results = []
    try:
        for threads in (1, 2, 3):
            cyconv.set_num_threads(threads)
            row = []
            for mode in MODES:
                out = pad2d(x, (3, 1, 2, 5), mode)
                row += [out, pad2d_backward(out * out, (3, 1, 2, 5), mode)]
            results.append(row)
    finally:
        cyconv.set_num_threads(None)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "reversed"])
def test_any_memory_layout_gives_the_same_result(layout):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 6, 5))
    g = rng.standard_normal((3, 2, 9, 8))

    def results(x, g):
        return [f(a, (2, 1, 1, 2), mode) for mode in MODES
                for f, a in ((pad2d, x), (pad2d_backward, g))]

    expected = results(x, g)
    if layout == "fortran":
        x, g = np.asfortranarray(x), np.asfortranarray(g)
    elif layout == "strided":
        x, g = (np.repeat(a, 2, axis=-1)[..., ::2] for a in (x, g))
    elif layout == "readonly":
        x.flags.writeable = g.flags.writeable = False
    else:
        x, g = (a[..., ::-1].copy()[..., ::-1] for a in (x, g))
    for a, e in zip(results(x, g), expected):
        np.testing.assert_array_equal(a, e)


def test_integer_and_bool_inputs_compute_in_float64():
    x = np.arange(12).reshape(3, 4)
    out = pad2d(x, 1, "reflect")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, np.pad(x, 1, mode="reflect"))
    assert pad2d(x.astype(bool), 1).dtype == np.float64
    assert pad2d(x.tolist(), 1).dtype == np.float64
    assert pad2d_backward(np.ones((5, 6), dtype=np.int8), 1).dtype == np.float64
    assert pad2d(x.astype(np.float32), 1, value=np.float64(2.5)).dtype == np.float32


BAD_PAD_ARGUMENTS = [
    # (x shape, padding, kwargs, error, words the message must contain)
    ((5,), 1, {}, ValueError, r"at least 2 dimensions \(\.\.\., H, W\)"),
    ((), 1, {}, ValueError, "at least 2 dimensions"),
    ((3, 3), -1, {}, ValueError, "padding must be >= 0"),
    ((3, 3), (1, 0, -2, 0), {}, ValueError, "padding must be >= 0"),
    ((3, 3), (1, 1, 1), {}, ValueError, r"four ints \(top, bottom, left, right\)"),
    ((3, 3), ((1, 1), (1, 1)), {}, TypeError, "padding must be an int"),
    ((3, 3), "1", {}, TypeError, "padding must be an int"),
    ((3, 3), 1.0, {}, TypeError, "padding must be an int"),
    ((3, 3), True, {}, TypeError, "padding must be an int"),
    ((3, 3), None, {}, TypeError, "padding must be an int"),
    ((3, 3), 1, {"mode": "reflection"}, ValueError, "mode must be one of 'constant'"),
    ((3, 3), 1, {"mode": None}, ValueError, "mode must be one of"),
    ((3, 3), (0, 3), {"mode": "reflect"}, ValueError,
     "mode='reflect' needs padding smaller than the axis it pads: width 3"),
    ((2, 5), (2, 0, 0, 0), {"mode": "reflect"}, ValueError, "reflect.*height 2"),
    ((1, 5), (0, 1, 0, 0), {"mode": "reflect"}, ValueError, "reflect.*height 1"),
    ((3, 3), (0, 4), {"mode": "symmetric"}, ValueError,
     "mode='symmetric' needs padding no larger than the axis it pads"),
    ((3, 3), (0, 0, 0, 4), {"mode": "wrap"}, ValueError, "mode='wrap' needs padding no larger"),
    ((0, 3), (1, 0), {"mode": "edge"}, ValueError, "mode='edge' cannot pad an empty axis"),
    ((0, 3), (1, 0), {"mode": "wrap"}, ValueError, "wrap"),
    ((3, 3), 1, {"mode": "reflect", "value": 1.0}, ValueError,
     "value is only used by mode='constant'"),
    ((3, 3), 1, {"value": 1j}, TypeError, "value must be a real number"),
    ((3, 3), 1, {"value": "0"}, TypeError, "value must be a real number"),
    ((3, 3), 1, {"value": None}, TypeError, "value must be a real number"),
    ((3, 3), 2**41, {}, ValueError, r"output would have shape .* too large for an array"),
    ((3, 3), (0, 0, 0, 2**63), {}, ValueError, "too large for an array"),
]


@pytest.mark.parametrize("x_shape, padding, kwargs, error, words", BAD_PAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(x_shape, padding, kwargs, error, words):
    with pytest.raises(error, match=words):
        pad2d(np.ones(x_shape), padding, **kwargs)


@pytest.mark.parametrize("grad_shape, padding, mode, error, words", [
    ((4,), 1, "constant", ValueError, "grad must have at least 2 dimensions"),
    ((3, 3), 2, "constant", ValueError, r"grad's last two axes \(3, 3\) are smaller"),
    ((7, 3), (1, 2, 2, 2), "edge", ValueError, "smaller than the padding"),
    ((3, 3), (1, 2, 0, 0), "edge", ValueError, "mode='edge' cannot pad an empty axis"),
    ((5, 5), 2, "reflect", ValueError, "mode='reflect' needs padding smaller"),
    ((5, 5), 2, "wrap", ValueError, "mode='wrap' needs padding no larger"),
    ((5, 5), 1, "mirror", ValueError, "mode must be one of"),
    ((5, 5), (1, 1, 1), "constant", ValueError, "four ints"),
])
def test_bad_backward_arguments_raise_clear_errors(grad_shape, padding, mode, error, words):
    with pytest.raises(error, match=words):
        pad2d_backward(np.ones(grad_shape), padding, mode)


@pytest.mark.parametrize("dtype", [np.complex128, np.float16, object, "U3"])
def test_unsupported_dtypes_raise_type_error(dtype):
    x = np.ones((4, 4)).astype(dtype)
    with pytest.raises(TypeError, match="real numbers"):
        pad2d(x, 1)
    with pytest.raises(TypeError, match="real numbers"):
        pad2d_backward(x, 1)
