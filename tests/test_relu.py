"""ReLU's compiled forward pass and the ``out=`` form of both passes
against numpy's ``np.maximum(x, 0)`` and ``grad * (x > 0)``, bit for bit."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import cyconv
from cyconv import _relu

DTYPES = [np.float32, np.float64]


def draw_array(data, dtype, shape):
    values = st.one_of(st.floats(width=np.dtype(dtype).itemsize * 8),
                       st.sampled_from([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf]))
    return data.draw(arrays(dtype, shape, elements=values))


def assert_bitwise_equal(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    actual, expected = np.ascontiguousarray(actual), np.ascontiguousarray(expected)
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))


@given(st.sampled_from(DTYPES), st.integers(1, 3), st.data())
def test_relu_layer_forward_is_numpys_maximum_bit_for_bit(dtype, threads, data):
    """NaN of either sign and any payload kept, -0.0 to +0.0 as numpy does,
    any shape and memory layout, split among threads even when small."""
    shape = tuple(data.draw(st.lists(st.integers(0, 9), min_size=1, max_size=4)))
    x = draw_array(data, dtype, shape)
    if data.draw(st.booleans()):
        x = np.asfortranarray(x)
    before = x.copy()
    try:
        cyconv.set_num_threads(threads)
        with mock.patch.object(_relu, "MIN_ELEMENTS_PER_THREAD", 1):
            actual = cyconv.ReLU().forward(x)
    finally:
        cyconv.set_num_threads(None)
    assert_bitwise_equal(actual, np.maximum(x, 0))
    assert_bitwise_equal(x, before)  # the input is left alone


def test_relu_keeps_nan_payloads_and_clears_negative_zero():
    bits = np.array([0x7FC00001, 0xFFC00002, 0x80000000, 0x00000000, 0xBF800000, 0x3F800000],
                    dtype=np.uint32)
    out = _relu.relu(bits.view(np.float32)).view(np.uint32)
    np.testing.assert_array_equal(out, [0x7FC00001, 0xFFC00002, 0, 0, 0, 0x3F800000])


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_may_be_the_input_itself(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 70001)).astype(dtype)  # enough for two threads
    x[rng.random(x.shape) < 0.1] = np.nan
    g = rng.standard_normal(x.shape).astype(dtype)
    expected = np.maximum(x, 0)
    with np.errstate(invalid="ignore"):
        expected_grad = g * (x > 0)
    grad = g.copy()
    assert _relu.relu_gradient(grad, x, out=grad) is grad
    assert_bitwise_equal(grad, expected_grad)
    assert _relu.relu(x, out=x) is x
    assert_bitwise_equal(x, expected)


def read_only(array):
    array.flags.writeable = False
    return array


@pytest.mark.parametrize("out", [
    np.empty((2, 3), dtype=np.float32), np.empty((3, 2), dtype=np.float64),
    read_only(np.empty((3, 2), dtype=np.float32)),
    np.empty((3, 4), dtype=np.float32)[:, :2], np.zeros((3, 2), np.float32).T.copy().T, [0.0],
])
def test_a_bad_out_is_refused(out):
    x = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="out must be a writeable, aligned, C-contiguous array"):
        _relu.relu(x, out=out)
    with pytest.raises(ValueError, match="out must be a writeable, aligned, C-contiguous array"):
        _relu.relu_gradient(x, x, out=out)


@pytest.mark.parametrize("x", [np.ones(2, np.float32), np.ones(9, np.float32),
                               np.ones((2, 4), np.float32), np.ones(8, np.float64)])
def test_a_gradient_and_input_of_different_shapes_or_dtypes_are_refused(x):
    grad = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="grad and x must have one shape and dtype"):
        _relu.relu_gradient(grad, x)
    layer = cyconv.ReLU()
    layer.forward(np.ones(8, np.float32))
    layer.input = x  # replaced by hand
    with pytest.raises(ValueError, match="grad and x must have one shape and dtype"):
        layer.backward(grad)


def _unaligned(values):
    """A C-contiguous float64 view at an odd address."""
    raw = np.zeros(values.nbytes + 1, dtype=np.uint8)
    view = raw[1:].view(np.float64)
    view[...] = values.ravel()
    assert not view.flags.aligned
    return view


def test_unaligned_arrays_are_read_as_numpy_reads_them():
    values = np.array([-1.5, 0.0, -0.0, 2.5, np.nan, -np.inf, np.inf, 3.0])
    x = _unaligned(values)
    np.testing.assert_array_equal(_relu.relu(x), np.maximum(values, 0))
    grad = _unaligned(np.arange(8.0) - 3)
    np.testing.assert_array_equal(_relu.relu_gradient(grad, x), (np.arange(8.0) - 3) * (values > 0))
    with pytest.raises(ValueError, match="aligned"):
        _relu.relu(values, out=_unaligned(values))


def test_relu_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((4, 5, 6)).astype(np.float32)
    x[0, 0, :3] = [np.nan, -0.0, 0.0]
    expected = torch.relu(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(_relu.relu(x), expected)
