"""The input gradient of stride-2 layers as four stride-1 ones
(cyconv/_conv_phases.py), against the float64 reference, bitwise across
thread counts and the direct kernels' variants, and against the products
where a value is not finite."""

import contextlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyconv
from cyconv import _conv, _conv_phases, _runtime
from cyconv.functional import conv2d_backward
import reference
from reference import assert_close


# The phases run on the direct kernels, which only the vectorised variants
# take (the portable one gives every layer the products).
VECTORISED = [isa for isa in _runtime.available_isas() if isa != "portable"]
vectorised = pytest.mark.skipif(not VECTORISED, reason="this processor runs no vectorised "
                                "variant of the direct kernels (AVX2 and FMA at least)")


@contextlib.contextmanager
def counting_phases():
    """Inside the block, the phases' calls are counted in the list yielded."""
    calls = []
    real = _conv_phases.grad_input

    def counted(*args):
        calls.append(args)
        return real(*args)

    with mock.patch.object(_conv_phases, "grad_input", counted):
        yield calls


def _input_gradients(g, x, w, padding):
    """The input gradient at 1, 2 and 3 threads."""
    results = []
    try:
        for threads in (1, 2, 3):
            cyconv.set_num_threads(threads)
            results.append(conv2d_backward(g, x, w, stride=2, padding=padding)[0])
    finally:
        cyconv.set_num_threads(None)
    return results


@st.composite
def strided_layers(draw):
    # kernels of 3 take the products, and so do paddings that leave a phase
    # padded by as many rows as its taps, or more (often wider than half the
    # kernel: drawn half the time)
    kh, kw = draw(st.sampled_from([4, 5, 6, 7, 3])), draw(st.sampled_from([4, 5, 6, 7, 3]))
    ph = draw(st.integers(0, kh // 2) | st.integers(0, kh))
    pw = draw(st.integers(0, kw // 2) | st.integers(0, kw))
    height = draw(st.integers(max(1, kh - 2 * ph), kh + 9))
    width = draw(st.integers(max(1, kw - 2 * pw), kw + 9))
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 20))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return (n, c, height, width), (f, c, kh, kw), (ph, pw), dtype


@settings(max_examples=100, deadline=None)
@given(strided_layers(), st.integers(0, 2**32 - 1))
def test_phases_give_the_input_gradient(layer, seed):
    x_shape, w_shape, padding, dtype = layer
    geometry = _conv.conv_geometry(x_shape, w_shape, 2, padding, 1, 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    g = rng.standard_normal(geometry.output_shape).astype(dtype)
    with counting_phases() as calls:
        results = _input_gradients(g, x, w, padding)
    # taken exactly where the rule says
    assert bool(calls) == _conv_phases.use(geometry)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    sides = (padding[0], padding[0], padding[1], padding[1])
    expected = reference.conv2d_backward(g, x, w, (2, 2), sides, (1, 1), 1)[0]
    magnitude = reference.conv2d_backward(np.abs(g), np.abs(x), np.abs(w), (2, 2), sides,
                                          (1, 1), 1)[0]
    assert_close(results[0], expected, magnitude, dtype)


def geometry(x_shape, w_shape, stride=2, padding=2, dilation=1, groups=1):
    return _conv.conv_geometry(x_shape, w_shape, stride, padding, dilation, groups)


@vectorised
def test_which_layers_take_them():
    """Stride 2 both ways, kernels of at least PHASES_MIN_KERNEL taps a side,
    one group, no dilation, and every phase with taps and rows."""
    w4 = geometry((32, 16, 32, 32), (32, 16, 5, 5))
    assert _conv_phases.use(w4)
    assert _conv_phases.use(geometry((8, 64, 56, 56), (64, 64, 7, 7), padding=3))
    assert not _conv_phases.use(geometry((32, 16, 16, 16), (32, 16, 3, 3), padding=1))
    assert not _conv_phases.use(geometry((32, 16, 32, 32), (32, 16, 5, 5), stride=(2, 1)))
    assert not _conv_phases.use(geometry((32, 16, 32, 32), (32, 16, 5, 5), stride=3))
    assert not _conv_phases.use(geometry((32, 16, 32, 32), (32, 16, 5, 5), dilation=2))
    assert not _conv_phases.use(geometry((32, 16, 32, 32), (32, 8, 5, 5), groups=2))
    # a single input row: its odd phase has no rows
    assert not _conv_phases.use(geometry((2, 3, 1, 9), (4, 3, 5, 5), padding=2))
    assert _conv_phases.use(geometry((32, 16, 32, 32), (32, 16, 4, 4), padding=1))
    with mock.patch.object(_runtime, "PHASES_MIN_KERNEL", 6):
        assert not _conv_phases.use(w4)
    for mode in ("never",):
        with _runtime.direct_convolution(mode):
            assert not _conv_phases.use(w4)


def test_every_variant_gives_the_same_bits():
    """The phases run on the direct kernels, the same bits on every variant
    that has them (the portable one takes the products)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6, 17, 14)).astype(np.float32)
    w = rng.standard_normal((20, 6, 5, 6)).astype(np.float32)
    layer = geometry(x.shape, w.shape)
    g = rng.standard_normal(layer.output_shape).astype(np.float32)
    results = {}
    for isa in _runtime.available_isas():
        with _runtime.direct_convolution("auto", isa=isa), counting_phases() as calls:
            results[isa] = conv2d_backward(g, x, w, stride=2, padding=2)[0]
        assert bool(calls) == (isa != "portable")
    taking = [r for isa, r in results.items() if isa != "portable"]
    for other in taking[1:]:
        np.testing.assert_array_equal(taking[0], other)


@vectorised
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_weight_not_finite_gives_the_products_result(bad):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 4, 5, 5)).astype(np.float32)
    w[2, 1, 3, 0] = bad
    layer = geometry(x.shape, w.shape)
    g = rng.standard_normal(layer.output_shape).astype(np.float32)
    assert _conv_phases.use(layer)
    with counting_phases() as calls:
        ours = conv2d_backward(g, x, w, stride=2, padding=2)[0]
    assert calls
    with mock.patch.object(_runtime, "PHASES_MIN_KERNEL", 99):
        products = conv2d_backward(g, x, w, stride=2, padding=2)[0]
    np.testing.assert_array_equal(ours, products)
    assert not np.isfinite(ours).all()


@vectorised
def test_a_large_gradient_is_put_together_by_several_threads():
    """Planes enough for the phases' interleaving to share among threads
    (odd sizes: the last row and column come from the even phases)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 16, 67, 65)).astype(np.float32)
    w = rng.standard_normal((16, 16, 5, 5)).astype(np.float32)
    layer = geometry(x.shape, w.shape)
    assert _conv_phases.use(layer)
    assert x.size // _runtime.RELU_MIN_ELEMENTS_PER_THREAD >= 3  # 3 threads at 3
    g = rng.standard_normal(layer.output_shape).astype(np.float32)
    with counting_phases() as calls:
        results = _input_gradients(g, x, w, 2)
    assert len(calls) == 3
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    expected = reference.conv2d_backward(g, x, w, (2, 2), (2,) * 4, (1, 1), 1)[0]
    magnitude = reference.conv2d_backward(np.abs(g), np.abs(x), np.abs(w), (2, 2), (2,) * 4,
                                          (1, 1), 1)[0]
    assert_close(results[0], expected, magnitude, np.float32)


@vectorised
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_families_give_the_same_bits(dtype):
    """W4's shape: 16 channels on 16x16 phase planes take the filter-blocked
    input gradient by the rule; the wide one gives the same bits, and both
    the reference's gradient."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 16, 32, 31)).astype(dtype)
    w = rng.standard_normal((20, 16, 5, 5)).astype(dtype)
    layer = geometry(x.shape, w.shape)
    g = rng.standard_normal(layer.output_shape).astype(dtype)
    results = []
    for family in ("blocked", "wide"):
        with _runtime.direct_convolution("auto", isa=VECTORISED[-1], family=family), \
                counting_phases() as calls:
            results.append(conv2d_backward(g, x, w, stride=2, padding=2)[0])
        assert calls
    np.testing.assert_array_equal(results[0], results[1])
    expected = reference.conv2d_backward(g, x, w, (2, 2), (2,) * 4, (1, 1), 1)[0]
    magnitude = reference.conv2d_backward(np.abs(g), np.abs(x), np.abs(w), (2, 2), (2,) * 4,
                                          (1, 1), 1)[0]
    assert_close(results[0], expected, magnitude, dtype)


@vectorised
def test_rows_and_columns_no_window_reaches_are_zeros():
    """Without padding, a 5x5 stride-2 layer on 32x32 planes never reads
    the last row and column: its odd phases leave them out, and they are
    +0.0, as the products leave them."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 3, 5, 5)).astype(np.float32)
    layer = geometry(x.shape, w.shape, padding=0)
    assert [p[4].height for p in _conv_phases._phases(layer)] == [16, 16, 15, 15]
    g = rng.standard_normal(layer.output_shape).astype(np.float32)
    with counting_phases() as calls:
        grad = conv2d_backward(g, x, w, stride=2, padding=0)[0]
    assert calls
    for edge in (grad[:, :, 31, :], grad[:, :, :, 31]):
        np.testing.assert_array_equal(edge, 0)
        assert not np.signbit(edge).any()
    expected = reference.conv2d_backward(g, x, w, (2, 2), (0,) * 4, (1, 1), 1)[0]
    magnitude = reference.conv2d_backward(np.abs(g), np.abs(x), np.abs(w), (2, 2), (0,) * 4,
                                          (1, 1), 1)[0]
    assert_close(grad, expected, magnitude, np.float32)
