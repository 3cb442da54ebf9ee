"""max_pool2d, avg_pool2d and their gradients against straightforward loops
over every window, and the adjoint identity for average pooling."""

import itertools
from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cyconv
import reference as ref
from cyconv import _pool, _runtime
from cyconv.functional import (
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from cyconv.testing import Pool2dConfig, pool2d_configs, random_arrays

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 3e-6, np.float64: 1e-14}


def hanging_past_the_padding(config):
    """The same sizes with ceil_mode, stride >= 2 and the most padding
    PyTorch allows, so that last windows often hang past the bottom or right
    padding (where the divisor must be clipped): plain draws rarely go there."""
    (kh, kw), (sh, sw) = config.kernel_size, config.stride
    return replace(config, padding=(kh // 2, kw // 2), stride=(max(sh, 2), max(sw, 2)),
                   ceil_mode=True)


CONFIGS = st.one_of(pool2d_configs(), pool2d_configs().map(hanging_past_the_padding))

# The unsigned integers whose bits a float's are compared as.
BITS = {np.float32: np.uint32, np.float64: np.uint64}


@st.composite
def tiled_configs(draw):
    """Kernel == stride and no padding, the pooling with a forward kernel of
    its own.  2x2 half of the time, with 1 to 20 windows per row (rows of
    fewer than 8 are packed together, except 4), 250 to 300 (runs of up to
    256 and an overlapping last vector), or tall planes of 30 to 80 rows of
    windows (several packed passes); a last row and column that no window
    covers, or with ceil_mode a cut-short window."""
    kh, kw = draw(st.one_of(st.just((2, 2)), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    shape = draw(st.sampled_from(["small", "wide", "tall"]))
    rows = draw(st.integers(30, 80) if shape == "tall" else st.integers(1, 6))
    cols = draw(st.integers(250, 300) if shape == "wide" else st.integers(1, 20))
    height = kh * rows + draw(st.integers(0, kh - 1))
    width = kw * cols + draw(st.integers(0, kw - 1))
    return Pool2dConfig(
        x_shape=(draw(st.integers(1, 2)), draw(st.integers(1, 2)), height, width),
        kernel_size=(kh, kw), stride=(kh, kw), padding=(0, 0), ceil_mode=draw(st.booleans()),
    )


def windows(config):
    """Yield ``(output index, real cells, padded cell count)`` for every
    output element: the (h, w) input positions its window covers, and how
    many positions it covers within the padded input (padding included,
    overhang past the padding excluded)."""
    n_count, c_count, height, width = config.x_shape
    (kh, kw), (sh, sw), (ph, pw) = config.kernel_size, config.stride, config.padding
    out_h, out_w = config.output_shape[-2:]
    for oh in range(out_h):
        rows = [oh * sh - ph + i for i in range(kh)]
        real_rows = [h for h in rows if 0 <= h < height]
        padded_rows = [h for h in rows if -ph <= h < height + ph]
        for ow in range(out_w):
            cols = [ow * sw - pw + j for j in range(kw)]
            real_cols = [w for w in cols if 0 <= w < width]
            padded_cols = [w for w in cols if -pw <= w < width + pw]
            cells = [(h, w) for h in real_rows for w in real_cols]
            yield (oh, ow), cells, len(padded_rows) * len(padded_cols)


def reference_max_pool(x, config):
    """Values, argmax flat indices and input gradient (for ``grad``) by loops.

    Padding is -inf, so the maximum is taken over the real cells only;
    np.argmax returns the first largest in row-major order, or the first NaN.
    """
    width = x.shape[-1]
    out = np.empty(config.output_shape, dtype=x.dtype)
    indices = np.empty(config.output_shape, dtype=np.int64)
    for n, c in np.ndindex(*x.shape[:2]):
        for (oh, ow), cells, _ in windows(config):
            values = [x[n, c, h, w] for h, w in cells]
            h, w = cells[int(np.argmax(values))]
            out[n, c, oh, ow] = x[n, c, h, w]
            indices[n, c, oh, ow] = h * width + w
    return out, indices


def reference_max_pool_backward(grad_output, indices, x_shape):
    grad = np.zeros(x_shape)
    flat = grad.reshape(x_shape[0], x_shape[1], -1)
    for index in np.ndindex(*grad_output.shape):
        n, c = index[:2]
        flat[n, c, indices[index]] += grad_output[index]
    return grad


def reference_avg_pool(x, config, count_include_pad):
    """Forward and the transpose matrix's action, by loops, in float64."""
    out = np.empty(config.output_shape)
    for n, c in np.ndindex(*x.shape[:2]):
        for (oh, ow), cells, padded_count in windows(config):
            divisor = padded_count if count_include_pad else len(cells)
            out[n, c, oh, ow] = sum(float(x[n, c, h, w]) for h, w in cells) / divisor
    return out


def reference_avg_pool_backward(grad_output, config, count_include_pad):
    grad = np.zeros(config.x_shape)
    for n, c in np.ndindex(*config.x_shape[:2]):
        for (oh, ow), cells, padded_count in windows(config):
            divisor = padded_count if count_include_pad else len(cells)
            for h, w in cells:
                grad[n, c, h, w] += grad_output[n, c, oh, ow] / divisor
    return grad


def with_specials(draw, x):
    """When hypothesis says so, put NaN, +inf or -inf at about a tenth of
    the places in ``x`` each."""
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        for special in (np.nan, np.inf, -np.inf):
            if draw(st.booleans()):
                x[rng.random(x.shape) < 0.1] = special
    return x


def with_zeros_and_nans(draw, x):
    """When hypothesis says so, put -0.0, +0.0 and quiet NaNs of either sign
    and any payload at about a tenth of the places in ``x`` each: the
    maximum must be the first of them bit for bit."""
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        x[rng.random(x.shape) < 0.1] = -0.0
        x[rng.random(x.shape) < 0.1] = 0.0
        bits = x.view(BITS[x.dtype.type])
        quiet_nan = bits.dtype.type(np.array(np.nan, dtype=x.dtype).view(bits.dtype))
        payloads = rng.integers(0, quiet_nan >> 10, size=x.shape).astype(bits.dtype)
        signs = rng.integers(0, 2, size=x.shape).astype(bits.dtype) << (8 * bits.itemsize - 1)
        places = rng.random(x.shape) < 0.1
        bits[places] = (quiet_nan | payloads | signs)[places]
    return x


@given(CONFIGS, st.sampled_from(DTYPES), st.booleans(), st.data())
def test_max_pool2d_matches_loops(config, dtype, ties, data):
    (x,) = random_arrays(data.draw, [config.x_shape], dtype, ties=ties)
    x = with_specials(data.draw, x)
    out, indices = max_pool2d(x, **config.kwargs, return_indices=True)
    expected, expected_indices = reference_max_pool(x, config)
    assert out.dtype == dtype and indices.dtype == np.int64
    assert out.shape == indices.shape == config.output_shape
    np.testing.assert_array_equal(out, expected)  # NaN compares equal here
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(max_pool2d(x, **config.kwargs), out)


@given(CONFIGS, st.sampled_from(DTYPES), st.booleans(), st.data())
def test_max_pool2d_backward_matches_loops(config, dtype, ties, data):
    x, g = random_arrays(data.draw, [config.x_shape, config.output_shape], dtype, ties=ties)
    x = with_specials(data.draw, x)
    grad = max_pool2d_backward(g, x, **config.kwargs)
    _, expected_indices = reference_max_pool(x, config)
    expected = reference_max_pool_backward(g.astype(np.float64), expected_indices, x.shape)
    assert grad.dtype == dtype and grad.shape == x.shape
    np.testing.assert_allclose(grad, expected, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * np.abs(g).sum(dtype=np.float64))
    _, indices = max_pool2d(x, **config.kwargs, return_indices=True)
    np.testing.assert_array_equal(max_pool2d_backward(g, x, **config.kwargs, indices=indices),
                                  grad)


@given(tiled_configs(), st.sampled_from(DTYPES), st.booleans(), st.data())
def test_tiled_max_pool2d_matches_loops_bit_for_bit(config, dtype, ties, data):
    (x,) = random_arrays(data.draw, [config.x_shape], dtype, ties=ties)
    x = with_zeros_and_nans(data.draw, with_specials(data.draw, x))
    out, indices = max_pool2d(x, **config.kwargs, return_indices=True)
    expected, expected_indices = reference_max_pool(x, config)
    assert out.dtype == dtype and indices.dtype == np.int64
    assert out.shape == indices.shape == config.output_shape
    bits = BITS[dtype]
    np.testing.assert_array_equal(out.view(bits), expected.view(bits))
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(max_pool2d(x, **config.kwargs).view(bits), out.view(bits))
    # Windows do not overlap, so each element gets at most one gradient:
    # exactly the one its window sends, or +0.0.
    (g,) = random_arrays(data.draw, [config.output_shape], dtype)
    g[g < -1] = -0.0
    expected = reference_max_pool_backward(g.astype(np.float64), expected_indices, x.shape)
    expected = expected.astype(dtype)
    for grad in (max_pool2d_backward(g, x, **config.kwargs, indices=indices),
                 max_pool2d_backward(g, x, **config.kwargs)):
        assert grad.dtype == dtype and grad.shape == x.shape
        np.testing.assert_array_equal(grad.view(bits), expected.view(bits))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [10, 11, 17, 24])  # 5 (packed), 5, 8 and 12 windows a row
def test_tiled_max_pool2d_finds_a_lone_nan_anywhere(dtype, width):
    # NaN-free runs of windows take keys without the NaN test, so each
    # element must be able to send its run to the slow path on its own.  The
    # NaN has its sign bit set: read as a number it would be the smallest.
    x = np.arange(2 * 4 * width, dtype=dtype).reshape(2, 1, 4, width) % 7
    negative_nan = np.copysign(np.array(np.nan, dtype=dtype), -1)
    config = Pool2dConfig(x_shape=x.shape, kernel_size=(2, 2), stride=(2, 2),
                          padding=(0, 0), ceil_mode=True)
    for place in np.ndindex(*x.shape):
        with_nan = x.copy()
        with_nan[place] = negative_nan
        out, indices = max_pool2d(with_nan, 2, ceil_mode=True, return_indices=True)
        expected, expected_indices = reference_max_pool(with_nan, config)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(indices, expected_indices)


@given(CONFIGS, st.sampled_from(DTYPES), st.data())
def test_max_pool2d_backward_follows_any_indices(config, dtype, data):
    """Indices that are not the argmax (repeated, pointing into other
    windows, uncovered rows or anywhere in the plane) are followed as given,
    and several landing on one element add up, in output order."""
    x, g = random_arrays(data.draw, [config.x_shape, config.output_shape], dtype)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    height, width = config.x_shape[-2:]
    indices = rng.integers(0, min(height * width, data.draw(st.integers(1, 50))),
                           size=config.output_shape)
    grad = max_pool2d_backward(g, x, **config.kwargs, indices=indices)
    expected = reference_max_pool_backward(g.astype(np.float64), indices, x.shape)
    np.testing.assert_allclose(grad, expected, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * np.abs(g).sum(dtype=np.float64))


@given(CONFIGS, st.sampled_from(DTYPES), st.booleans(), st.data())
def test_avg_pool2d_matches_loops(config, dtype, count_include_pad, data):
    x, g = random_arrays(data.draw, [config.x_shape, config.output_shape], dtype)
    out = avg_pool2d(x, **config.kwargs, count_include_pad=count_include_pad)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    assert out.dtype == dtype and out.shape == config.output_shape
    expected = reference_avg_pool(x64, config, count_include_pad)
    magnitude = reference_avg_pool(np.abs(x64), config, count_include_pad)
    np.testing.assert_array_less(np.abs(out - expected), RTOL[dtype] * (magnitude + 1))
    grad = avg_pool2d_backward(g, x, **config.kwargs, count_include_pad=count_include_pad)
    assert grad.dtype == dtype and grad.shape == x.shape
    expected = reference_avg_pool_backward(g64, config, count_include_pad)
    magnitude = reference_avg_pool_backward(np.abs(g64), config, count_include_pad)
    np.testing.assert_array_less(np.abs(grad - expected), RTOL[dtype] * (magnitude + 1))


@given(CONFIGS, st.sampled_from(DTYPES), st.booleans(), st.data())
def test_avg_pool2d_backward_adjoint_identity(config, dtype, count_include_pad, data):
    """<avg_pool(x), g> = <x, avg_pool_backward(g)>: the backward pass is
    the transpose of the (linear) forward pass."""
    x, g = random_arrays(data.draw, [config.x_shape, config.output_shape], dtype)
    kwargs = dict(config.kwargs, count_include_pad=count_include_pad)
    forward = np.vdot(avg_pool2d(x, **kwargs).astype(np.float64), g.astype(np.float64))
    backward = np.vdot(x.astype(np.float64), avg_pool2d_backward(g, x, **kwargs))
    scale = np.vdot(avg_pool2d(np.abs(x), **kwargs).astype(np.float64), np.abs(g)) + 1
    assert abs(forward - backward) <= RTOL[dtype] * 10 * scale


def test_max_pool2d_nan_takes_first_nan_and_inf_windows_pick_an_input_element():
    nan, inf = np.nan, np.inf
    x = np.array([[[1.0, nan, 5.0, nan],
                   [-inf, -inf, 2.0, 3.0]]])
    out, indices = max_pool2d(x, (1, 4), return_indices=True)
    assert np.isnan(out[0, 0, 0]) and indices[0, 0, 0] == 1
    assert out[0, 1, 0] == 3.0 and indices[0, 1, 0] == 7
    grad = max_pool2d_backward(np.array([[[10.0], [20.0]]]), x, (1, 4))
    np.testing.assert_array_equal(grad, [[[0, 10, 0, 0], [0, 0, 0, 20]]])
    # A window of -inf inputs next to -inf padding: the maximum is -inf and
    # its gradient goes to the window's first input element, never the padding.
    x = np.full((1, 3, 3), -inf)
    out, indices = max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    assert out.shape == (1, 2, 2) and np.all(out == -inf)
    np.testing.assert_array_equal(indices, [[[0, 1], [3, 4]]])


def test_max_pool2d_overlapping_windows_accumulate_gradient():
    x = np.array([[[0.0, 0.0, 0.0],
                   [0.0, 9.0, 0.0],
                   [0.0, 0.0, 0.0]]])
    grad = max_pool2d_backward(np.ones((1, 2, 2)), x, 2, stride=1)
    np.testing.assert_array_equal(grad, [[[0, 0, 0], [0, 4, 0], [0, 0, 0]]])


def test_ceil_mode_windows_follow_pytorch():
    # H = W = 4, kernel 3, stride 2, padding 1, ceil_mode: three windows per
    # axis covering input rows (-1..1), (1..3), (3..5); the last hangs one
    # row past the bottom padding, so its divisor with padding counted is 2.
    per_axis_real = np.array([2, 3, 1])
    per_axis_padded = np.array([3, 3, 2])
    out = avg_pool2d(np.ones((1, 4, 4)), 3, stride=2, padding=1, ceil_mode=True)
    np.testing.assert_allclose(
        out[0], np.outer(per_axis_real, per_axis_real) / np.outer(per_axis_padded, per_axis_padded)
    )
    out = avg_pool2d(np.ones((1, 4, 4)), 3, stride=2, padding=1, ceil_mode=True,
                     count_include_pad=False)
    np.testing.assert_array_equal(out, np.ones((1, 3, 3)))
    # H = 5, kernel 2, stride 2, padding 1: rounding up gives a fourth window
    # starting at padded row 6, inside the bottom padding, so it is dropped.
    assert max_pool2d(np.ones((1, 5, 5)), 2, padding=1, ceil_mode=True).shape == (1, 3, 3)
    assert max_pool2d(np.ones((1, 5, 5)), 2, padding=1).shape == (1, 3, 3)
    assert max_pool2d(np.ones((1, 5, 5)), 2, ceil_mode=True).shape == (1, 3, 3)
    assert max_pool2d(np.ones((1, 5, 5)), 2).shape == (1, 2, 2)


def test_stride_defaults_to_kernel_size():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 9))
    np.testing.assert_array_equal(max_pool2d(x, (2, 3)), max_pool2d(x, (2, 3), stride=(2, 3)))
    np.testing.assert_array_equal(avg_pool2d(x, 3), avg_pool2d(x, 3, 3))


def _all_results(x, g, indices_g, kwargs):
    out, indices = max_pool2d(x, **kwargs, return_indices=True)
    return [
        out, indices,
        max_pool2d_backward(indices_g, x, **kwargs),
        max_pool2d_backward(indices_g, x, **kwargs, indices=indices),
        avg_pool2d(x, **kwargs),
        avg_pool2d_backward(g, x, **kwargs),
        avg_pool2d_backward(g, x, **kwargs, count_include_pad=False),
    ]


def _results_at_thread_counts(x, g, kwargs):
    results = []
    try:
        # Inputs this small would otherwise get one thread whatever the count.
        with mock.patch.object(_pool, "MIN_WORK_PER_THREAD", 1):
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                results.append(_all_results(x, g, g, kwargs))
    finally:
        cyconv.set_num_threads(None)
    return results


def _assert_bitwise_equal(results):
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_bitwise_identical_at_any_thread_count(dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (5, 3, 13, 11)).astype(dtype)  # many ties
    kwargs = dict(kernel_size=3, stride=(1, 2), padding=1, ceil_mode=True)
    g = rng.standard_normal(max_pool2d(x, **kwargs).shape).astype(dtype)
    _assert_bitwise_equal(_results_at_thread_counts(x, g, kwargs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, kernel_size, ceil_mode", [
    ((5, 3, 26, 26), 2, False),   # 13 windows per row
    ((5, 3, 11, 11), 2, True),    # 5 per row, packed, cut-short last window
    ((3, 2, 9, 301), 2, False),   # 150 per row
    ((5, 3, 20, 17), 3, True),    # 3x3
])
def test_tiled_results_bitwise_identical_at_any_thread_count(dtype, x_shape, kernel_size,
                                                             ceil_mode):
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 4, x_shape).astype(dtype)  # many ties
    x[rng.random(x_shape) < 0.05] = np.nan
    kwargs = dict(kernel_size=kernel_size, ceil_mode=ceil_mode)
    g = rng.standard_normal(max_pool2d(x, **kwargs).shape).astype(dtype)
    results = _results_at_thread_counts(x, g, kwargs)
    assert _pool.pool_geometry(x.shape, kernel_size, None, 0, ceil_mode).tiled
    _assert_bitwise_equal(results)


def test_threads_only_for_enough_work():
    with mock.patch.object(_runtime, "get_num_threads", lambda: 8):
        small = _pool.pool_geometry((1, 1, 8, 8), 2, None, 0, False)
        assert small.threads() == 1
        big = _pool.pool_geometry((64, 16, 64, 64), 2, None, 0, False)
        assert big.threads() == 8
        assert big.threads() == min(8, big.work // _pool.MIN_WORK_PER_THREAD)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "reversed"])
def test_any_memory_layout_gives_the_same_result(layout):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 9, 8))
    kwargs = dict(kernel_size=(3, 2), stride=2, padding=(1, 0))
    g = rng.standard_normal(max_pool2d(x, **kwargs).shape)
    expected = _all_results(x, g, g, kwargs)
    if layout == "fortran":
        x, g = (np.asfortranarray(a) for a in (x, g))
    elif layout == "strided":
        x, g = (np.repeat(a, 2, axis=-1)[..., ::2] for a in (x, g))
    elif layout == "readonly":
        for a in (x, g):
            a.flags.writeable = False
    else:
        x, g = (a[..., ::-1].copy()[..., ::-1] for a in (x, g))
    for a, e in zip(_all_results(x, g, g, kwargs), expected):
        np.testing.assert_array_equal(a, e)


def test_single_sample_has_no_batch_axis():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 6))
    kwargs = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    g = rng.standard_normal((2, 4, 4))
    single = _all_results(x, g, g, kwargs)
    batched = _all_results(x[None], g[None], g[None], kwargs)
    assert single[0].shape == (2, 4, 4) and single[2].shape == x.shape
    for a, b in zip(single, batched):
        np.testing.assert_array_equal(a, b[0])


def test_integer_and_mixed_inputs_compute_in_float64():
    x = np.arange(2 * 4 * 4).reshape(2, 1, 4, 4)
    assert max_pool2d(x, 2).dtype == np.float64
    np.testing.assert_array_equal(max_pool2d(x, 2), max_pool2d(x.astype(np.float64), 2))
    assert avg_pool2d(x.astype(bool), 2).dtype == np.float64
    assert avg_pool2d(x.tolist(), 2).dtype == np.float64
    x32 = x.astype(np.float32)
    g32 = np.ones((2, 1, 2, 2), dtype=np.float32)
    assert max_pool2d(x32, 2).dtype == np.float32
    assert max_pool2d_backward(g32, x32, 2).dtype == np.float32
    assert max_pool2d_backward(g32.astype(np.float64), x32, 2).dtype == np.float64
    assert avg_pool2d_backward(g32, x32, 2).dtype == np.float32
    assert avg_pool2d_backward(g32, x, 2).dtype == np.float64
    # uint32 and int16 indices work as well as int64 ones.
    _, indices = max_pool2d(x32, 2, return_indices=True)
    for dtype in (np.uint32, np.int16):
        np.testing.assert_array_equal(
            max_pool2d_backward(g32, x32, 2, indices=indices.astype(dtype)),
            max_pool2d_backward(g32, x32, 2),
        )


BAD_POOL_ARGUMENTS = [
    # (x shape, kwargs, error, words the message must contain)
    ((5, 5), {"kernel_size": 2}, ValueError, "x must have 3 or 4 dimensions"),
    ((1, 1, 1, 5, 5), {"kernel_size": 2}, ValueError, "x must have 3 or 4 dimensions"),
    ((1, 0, 5, 5), {"kernel_size": 2}, ValueError, "empty axis"),
    ((0, 5, 5), {"kernel_size": 2}, ValueError, "empty axis"),
    ((1, 0, 5), {"kernel_size": 2}, ValueError, "empty axis"),
    ((1, 1, 5, 5), {"kernel_size": 0}, ValueError, "kernel_size must be >= 1"),
    ((1, 1, 5, 5), {"kernel_size": (2, -1)}, ValueError, "kernel_size must be >= 1"),
    ((1, 1, 5, 5), {"kernel_size": 2.0}, TypeError, "kernel_size must be an int"),
    ((1, 1, 5, 5), {"kernel_size": None}, TypeError, "kernel_size must be an int"),
    ((1, 1, 5, 5), {"kernel_size": "2"}, TypeError, "kernel_size must be an int"),
    ((1, 1, 5, 5), {"kernel_size": 2, "stride": b"1"}, TypeError, "stride must be an int"),
    ((1, 1, 5, 5), {"kernel_size": (2, 2, 2)}, ValueError, "pair of ints"),
    ((1, 1, 5, 5), {"kernel_size": 2, "stride": 0}, ValueError, "stride must be >= 1"),
    ((1, 1, 5, 5), {"kernel_size": 2, "stride": (1, -2)}, ValueError, "stride must be >= 1"),
    ((1, 1, 5, 5), {"kernel_size": 2, "stride": True}, TypeError, "stride must be an int"),
    ((1, 1, 5, 5), {"kernel_size": 2, "padding": -1}, ValueError, "padding must be >= 0"),
    ((1, 1, 5, 5), {"kernel_size": 3, "padding": 2}, ValueError, "at most half the kernel"),
    ((1, 1, 5, 5), {"kernel_size": (2, 3), "padding": (0, 2)}, ValueError,
     "at most half the kernel"),
    ((1, 1, 5, 5), {"kernel_size": 1, "padding": 1}, ValueError, "at most half the kernel"),
    ((1, 1, 2, 2), {"kernel_size": 3}, ValueError, "larger than the padded input"),
    ((1, 1, 5, 2), {"kernel_size": (2, 5), "padding": (0, 1)}, ValueError,
     "larger than the padded input"),
    ((1, 1, 1, 1), {"kernel_size": 2, "stride": 1, "ceil_mode": True}, ValueError,
     "larger than the padded input"),
    ((1, 1, 5, 5), {"kernel_size": 2, "stride": itertools.count()}, ValueError,
     r"stride must be an int or a pair of ints, got more than 2 items \(count\)"),
    ((1, 1, 5, 5), {"kernel_size": (i for i in itertools.count(1))}, ValueError,
     r"kernel_size must be an int or a pair of ints, got more than 2 items \(generator\)"),
    ((1, 1, 5, 5), {"kernel_size": 2, "ceil_mode": "yes"}, TypeError,
     "ceil_mode must be True or False"),
    ((1, 1, 5, 5), {"kernel_size": 2**50, "padding": 2**49}, ValueError, r"at most 2\*\*40"),
    ((1, 1, 5, 5), {"kernel_size": 2, "stride": 2**63}, ValueError, r"at most 2\*\*40"),
]


@pytest.mark.parametrize("x_shape, kwargs, error, words", BAD_POOL_ARGUMENTS)
@pytest.mark.parametrize("function", ["max", "avg"])
def test_bad_arguments_raise_clear_errors(function, x_shape, kwargs, error, words):
    forward, backward = {"max": (max_pool2d, max_pool2d_backward),
                         "avg": (avg_pool2d, avg_pool2d_backward)}[function]
    x = np.ones(x_shape)
    with pytest.raises(error, match=words):
        forward(x, **kwargs)
    with pytest.raises(error, match=words):
        backward(np.ones((1, 1, 1, 1)), x, **kwargs)


BAD_MAX_POOL_ARGUMENTS = [
    ((1, 1, 3, 3), {"kernel_size": 2, "padding": 1, "dilation": 5}, ValueError,
     r"kernel_size \(2, 2\) \(dilated: \(6, 6\)\) is larger than the padded input"),
    ((1, 1, 3, 3), {"kernel_size": 2, "padding": 1, "dilation": 4}, ValueError,
     r"with dilation 4 the window starting at -1 along H \(size 3, padding 1\)"),
    ((1, 1, 1, 1), {"kernel_size": 2, "padding": 1, "dilation": 2}, ValueError,
     r"with dilation 2 the window starting at -1 along H \(size 1, padding 1\) holds only "
     "padding"),
    ((1, 1, 1, 9), {"kernel_size": (1, 2), "padding": (0, 1), "dilation": (1, 2)}, None, None),
    ((1, 1, 9, 1), {"kernel_size": 2, "padding": 1, "dilation": 2}, ValueError,
     r"window starting at -1 along W \(size 1, padding 1\) holds only padding"),
    ((1, 1, 5, 5), {"kernel_size": 2, "dilation": 0}, ValueError, "dilation must be >= 1"),
    ((1, 1, 5, 5), {"kernel_size": 2, "dilation": (1, -1)}, ValueError,
     "dilation must be >= 1"),
    ((1, 1, 5, 5), {"kernel_size": 2, "dilation": 1.0}, TypeError, "dilation must be an int"),
    ((1, 1, 5, 5), {"kernel_size": 2, "dilation": 2**41}, ValueError, r"at most 2\*\*40"),
    ((1, 1, 5, 5), {"kernel_size": 2, "dilation": itertools.repeat(1)}, ValueError,
     r"dilation must be an int or a pair of ints, got more than 2 items"),
]


@pytest.mark.parametrize("x_shape, kwargs, error, words", BAD_MAX_POOL_ARGUMENTS)
def test_bad_dilations_raise_clear_errors(x_shape, kwargs, error, words):
    x = np.ones(x_shape)
    if error is None:  # a valid neighbour of the refused cases
        out = max_pool2d(x, **kwargs)
        assert max_pool2d_backward(np.ones(out.shape), x, **kwargs).shape == x.shape
        return
    with pytest.raises(error, match=words):
        max_pool2d(x, **kwargs)
    with pytest.raises(error, match=words):
        max_pool2d_backward(np.ones((1, 1, 1, 1)), x, **kwargs)


@pytest.mark.parametrize("value, error, words", [
    (0, ValueError, "divisor_override must not be 0"),
    (2**63, ValueError, "below 2\\*\\*63"),
    (-(2**63) - 1, ValueError, "divisor_override must be >= "),
    (1.5, TypeError, "divisor_override must be an int"),
    (2.0, TypeError, "divisor_override must be an int"),
    (True, TypeError, "divisor_override must be an int"),
    ("2", TypeError, "divisor_override must be an int"),
    ((2,), TypeError, "divisor_override must be an int"),
])
def test_bad_divisor_overrides_raise_clear_errors(value, error, words):
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(error, match=words):
        avg_pool2d(x, 2, divisor_override=value)
    with pytest.raises(error, match=words):
        avg_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, divisor_override=value)
    with pytest.raises(error, match=words):
        cyconv.AveragePooling(2, divisor_override=value)


@pytest.mark.parametrize("dtype", [np.complex128, np.float16, object, "U3"])
def test_unsupported_dtypes_raise_type_error(dtype):
    x = np.ones((1, 1, 4, 4)).astype(dtype)
    g = np.ones((1, 1, 2, 2))
    for call in (lambda: max_pool2d(x, 2), lambda: avg_pool2d(x, 2),
                 lambda: max_pool2d_backward(g, x, 2), lambda: avg_pool2d_backward(g, x, 2),
                 lambda: max_pool2d_backward(g.astype(dtype), g, 1)):
        with pytest.raises(TypeError, match="real numbers"):
            call()


def test_arguments_equal_to_accepted_ones_are_still_refused():
    # Geometries are remembered; True and 2.0 equal 1 and 2 but are refused.
    x = np.ones((1, 1, 4, 4))
    max_pool2d(x, 2)
    max_pool2d(x, 1, stride=1, ceil_mode=True)
    max_pool2d(x, (2, 1))
    for kwargs in ({"kernel_size": 2.0}, {"kernel_size": 1, "stride": True},
                   {"kernel_size": 1, "stride": 1, "ceil_mode": 1},
                   {"kernel_size": (2, True)}, {"kernel_size": [2.0, 2]}):
        with pytest.raises(TypeError):
            max_pool2d(x, **kwargs)


def test_ragged_input_raises_value_error():
    with pytest.raises(ValueError, match="array-like of numbers"):
        max_pool2d([[[1.0, 2.0], [3.0]]], 1)


def test_bad_grad_output_and_indices():
    x = np.ones((2, 3, 6, 6))
    with pytest.raises(ValueError, match=r"grad_output must have the shape .*\(2, 3, 3, 3\)"):
        max_pool2d_backward(np.ones((2, 3, 2, 2)), x, 2)
    with pytest.raises(ValueError, match=r"grad_output must have the shape .*\(3, 3, 3\)"):
        avg_pool2d_backward(np.ones((2, 3, 3, 3)), x[0], 2)
    g = np.ones((2, 3, 3, 3))
    _, indices = max_pool2d(x, 2, return_indices=True)
    with pytest.raises(TypeError, match="indices must hold integers"):
        max_pool2d_backward(g, x, 2, indices=indices.astype(float))
    with pytest.raises(ValueError, match="indices must have the shape"):
        max_pool2d_backward(g, x, 2, indices=indices[:1])
    for wrong in (-1, 36, 2**40):
        bad = indices.copy()
        bad[1, 2, 0, 1] = wrong
        with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\) = \[0, 36\)"):
            max_pool2d_backward(g, x, 2, indices=bad)
    with pytest.raises(TypeError, match="return_indices must be True or False"):
        max_pool2d(x, 2, return_indices=1)
    with pytest.raises(TypeError, match="count_include_pad must be True or False"):
        avg_pool2d(x, 2, count_include_pad=None)


# -- PyTorch's other call forms: dilation, divisor_override, kernels larger
# than the padded input under ceil_mode, empty batches -----------------------

@st.composite
def dilated_configs(draw):
    """Any max pooling PyTorch accepts, dilation 1 to 4 included: sizes
    from 1 (so that kernels larger than the padded input and windows
    stepping over the input come up) and both rounding modes.  Returns
    (x_shape, kwargs); some are refused, as the test works out."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    kwargs = dict(
        kernel_size=kernel,
        stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        padding=(draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2))),
        dilation=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        ceil_mode=draw(st.booleans()),
    )
    x_shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
               draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    return x_shape, kwargs


def _reference_refuses(x_shape, kwargs):
    """What PyTorch's rule and the loops say: None where the pooling is
    valid, else the start of cyconv's message."""
    axes = zip(x_shape[-2:], kwargs["kernel_size"], kwargs["stride"], kwargs["padding"],
               kwargs.get("dilation", (1, 1)))
    windows = []
    for size, k, s, p, d in axes:
        out = ref.pool_output_size(size, k, s, p, kwargs["ceil_mode"], d)
        if out < 1:
            return "kernel_size"
        windows.append([[o * s - p + i * d for i in range(k)] for o in range(out)])
    for axis_windows, size in zip(windows, x_shape[-2:]):
        if any(all(not 0 <= h < size for h in window) for window in axis_windows):
            return "with dilation"
    return None


def _ref_kwargs(kwargs):
    return dict(kernel=kwargs["kernel_size"], stride=kwargs["stride"],
                padding=kwargs["padding"], ceil_mode=kwargs["ceil_mode"])


@given(dilated_configs(), st.sampled_from(DTYPES), st.booleans(), st.data())
def test_dilated_max_pool2d_matches_loops(config, dtype, ties, data):
    x_shape, kwargs = config
    refused = _reference_refuses(x_shape, kwargs)
    (x,) = random_arrays(data.draw, [x_shape], dtype, ties)
    x = with_specials(data.draw, x)
    if refused:
        with pytest.raises(ValueError, match=refused):
            max_pool2d(x, **kwargs)
        return
    expected, expected_indices = ref.max_pool2d(x, **_ref_kwargs(kwargs),
                                                dilation=kwargs["dilation"])
    out, indices = max_pool2d(x, **kwargs, return_indices=True)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected.astype(dtype))
    np.testing.assert_array_equal(indices, expected_indices)
    (grad,) = random_arrays(data.draw, [out.shape], dtype)
    expected_grad = ref.max_pool2d_backward_indices(grad, expected_indices, x_shape)
    # Overlapping windows add gradients in the input's precision: the error
    # bound is relative to the sum of the magnitudes added, not to the sum.
    magnitude = ref.max_pool2d_backward_indices(np.abs(grad), expected_indices, x_shape)
    for given_indices in (None, indices):
        grad_input = max_pool2d_backward(grad, x, **kwargs, indices=given_indices)
        assert np.all(np.abs(grad_input - expected_grad) <= RTOL[dtype] * magnitude)


@given(pool2d_configs(max_extra_size=4), st.sampled_from(DTYPES), st.booleans(),
       st.integers(-5, 9).filter(bool), st.data())
def test_avg_pool2d_divisor_override_matches_loops(config, dtype, count_include_pad,
                                                   divisor, data):
    x, grad = random_arrays(data.draw, [config.x_shape, config.output_shape], dtype)
    kwargs = dict(config.kwargs, count_include_pad=count_include_pad, divisor_override=divisor)
    expected = ref.avg_pool2d(x, *ref_args(config), count_include_pad, divisor)
    np.testing.assert_allclose(avg_pool2d(x, **kwargs), expected, rtol=RTOL[dtype],
                               atol=RTOL[dtype])
    expected_grad = ref.avg_pool2d_backward(grad, config.x_shape, *ref_args(config),
                                            count_include_pad, divisor)
    np.testing.assert_allclose(avg_pool2d_backward(grad, x, **kwargs), expected_grad,
                               rtol=RTOL[dtype], atol=RTOL[dtype])
    layer = cyconv.AveragePooling(**kwargs)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=RTOL[dtype], atol=RTOL[dtype])


def ref_args(config):
    return config.kernel_size, config.stride, config.padding, config.ceil_mode


@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 3), st.integers(1, 4),
       st.booleans(), st.sampled_from(DTYPES), st.data())
def test_kernels_larger_than_the_padded_input_follow_pytorchs_rule(size, kernel, padding,
                                                                    stride, ceil_mode, dtype,
                                                                    data):
    # Plain configurations never draw a kernel larger than the padded
    # input; PyTorch allows one under ceil_mode where a window still starts
    # inside the input or its left padding.
    padding = min(padding, kernel // 2)
    kwargs = dict(kernel_size=(kernel, 1), stride=(stride, 1), padding=(padding, 0),
                  ceil_mode=ceil_mode)
    x_shape = (1, 2, size, 3)
    (x,) = random_arrays(data.draw, [x_shape], dtype)
    if _reference_refuses(x_shape, kwargs):
        for call in (lambda: max_pool2d(x, **kwargs), lambda: avg_pool2d(x, **kwargs)):
            with pytest.raises(ValueError, match="larger than the padded input"):
                call()
        return
    expected, _ = ref.max_pool2d(x, **_ref_kwargs(kwargs))
    np.testing.assert_array_equal(max_pool2d(x, **kwargs), expected.astype(dtype))
    for count_include_pad in (True, False):
        np.testing.assert_allclose(
            avg_pool2d(x, **kwargs, count_include_pad=count_include_pad),
            ref.avg_pool2d(x, **_ref_kwargs(kwargs), count_include_pad=count_include_pad),
            rtol=RTOL[dtype], atol=RTOL[dtype])


def test_a_kernel_larger_than_the_input_gives_pytorchs_one_window():
    # PyTorch: max_pool2d(ones(1, 1, 1, 1), 2, ceil_mode=True) is 1x1, and
    # avg_pool2d(ones(1, 1, 1), 4, 2, 1, ceil_mode=True) divides by the 3x3
    # part of the window inside the padded input.
    np.testing.assert_array_equal(max_pool2d(np.ones((1, 1, 1, 1)), 2, ceil_mode=True),
                                  np.ones((1, 1, 1, 1)))
    np.testing.assert_allclose(
        avg_pool2d(np.ones((1, 1, 1)), 4, stride=2, padding=1, ceil_mode=True), [[[1 / 9]]])
    with pytest.raises(ValueError, match="ceil_mode=True would keep the one window"):
        max_pool2d(np.ones((1, 1, 1, 1)), 2)
    with pytest.raises(ValueError, match=r"larger than the padded input \(1, 1\)$"):
        max_pool2d(np.ones((1, 1, 1, 1)), 2, stride=1)


@pytest.mark.parametrize("x_shape", [(0, 3, 7, 6), (0, 1, 1, 2)])
def test_an_empty_batch_gives_empty_results(x_shape):
    x = np.ones(x_shape, dtype=np.float32)
    kwargs = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True)
    expected_shape = (0,) + ref._pool_out_shape(x_shape, (3, 2), (2, 1), (1, 0), True)[1:]
    out, indices = max_pool2d(x, **kwargs, return_indices=True)
    assert out.shape == indices.shape == expected_shape and out.dtype == np.float32
    assert avg_pool2d(x, **kwargs, divisor_override=3).shape == expected_shape
    grad = np.ones(expected_shape, dtype=np.float32)
    for result in (max_pool2d_backward(grad, x, **kwargs),
                   max_pool2d_backward(grad, x, **kwargs, indices=indices),
                   max_pool2d_backward(grad, x, **kwargs, indices=indices.astype(np.int16)),
                   max_pool2d_backward(grad, x, **kwargs, dilation=1),
                   avg_pool2d_backward(grad, x, **kwargs)):
        assert result.shape == x_shape and result.dtype == np.float32
    for layer in (cyconv.MaxPooling(**kwargs), cyconv.AveragePooling(**kwargs)):
        assert layer.forward(x).shape == expected_shape
        assert layer.backward(grad).shape == x_shape
    # The hyper-parameters are still checked.
    with pytest.raises(ValueError, match="at most half the kernel"):
        max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="grad_output must have the shape"):
        avg_pool2d_backward(np.ones((1,) + expected_shape[1:]), x, **kwargs)


def test_one_int_in_a_sequence_is_that_int():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    np.testing.assert_array_equal(
        max_pool2d(x, (3,), stride=[2], padding=(1,), dilation=(2,)),
        max_pool2d(x, 3, stride=2, padding=1, dilation=2))
    np.testing.assert_array_equal(avg_pool2d(x, (3,), stride=()), avg_pool2d(x, 3))
    np.testing.assert_array_equal(cyconv.MaxPooling((3,), padding=(1,)).forward(x),
                                  max_pool2d(x, 3, padding=1))


def test_pooling_layers_take_and_save_the_new_keywords():
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8))
    layer = cyconv.MaxPooling(3, stride=1, padding=1, dilation=(2, 1))
    np.testing.assert_array_equal(layer.forward(x),
                                  ref.max_pool2d(x, (3, 3), (1, 1), (1, 1), False, (2, 1))[0])
    rebuilt = cyconv.MaxPooling(**layer.get_config())
    assert rebuilt.dilation == (2, 1)
    np.testing.assert_array_equal(rebuilt.forward(x), layer.forward(x))
    average = cyconv.AveragePooling(2, divisor_override=3)
    assert cyconv.AveragePooling(**average.get_config()).divisor_override == 3


# -- against PyTorch itself, where installed -------------------------------------

@given(dilated_configs(), st.sampled_from(DTYPES), st.data())
def test_dilated_max_pool2d_matches_torch(config, dtype, data):
    torch = pytest.importorskip("torch")
    x_shape, kwargs = config
    if _reference_refuses(x_shape, kwargs):
        return  # PyTorch raises too, or returns -inf with an index outside the window
    (x,) = random_arrays(data.draw, [x_shape], dtype)
    tx = torch.from_numpy(x).requires_grad_()
    t_out, t_indices = torch.nn.functional.max_pool2d(tx, **kwargs, return_indices=True)
    out, indices = max_pool2d(x, **kwargs, return_indices=True)
    np.testing.assert_array_equal(out, t_out.detach().numpy())
    np.testing.assert_array_equal(indices, t_indices.numpy())  # no ties in normal draws
    (grad,) = random_arrays(data.draw, [out.shape], dtype)
    t_out.backward(torch.from_numpy(grad))
    np.testing.assert_allclose(max_pool2d_backward(grad, x, **kwargs), tx.grad.numpy(),
                               rtol=RTOL[dtype], atol=RTOL[dtype])


@given(pool2d_configs(max_extra_size=4), st.sampled_from(DTYPES), st.booleans(),
       st.integers(-5, 9).filter(bool), st.data())
def test_avg_pool2d_divisor_override_matches_torch(config, dtype, count_include_pad, divisor,
                                                   data):
    torch = pytest.importorskip("torch")
    x, grad = random_arrays(data.draw, [config.x_shape, config.output_shape], dtype)
    kwargs = dict(config.kwargs, count_include_pad=count_include_pad, divisor_override=divisor)
    tx = torch.from_numpy(x).requires_grad_()
    t_out = torch.nn.functional.avg_pool2d(tx, **kwargs)
    t_out.backward(torch.from_numpy(grad))
    tolerance = dict(rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])
    np.testing.assert_allclose(avg_pool2d(x, **kwargs), t_out.detach().numpy(), **tolerance)
    np.testing.assert_allclose(avg_pool2d_backward(grad, x, **kwargs), tx.grad.numpy(),
                               **tolerance)


@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 3), st.integers(1, 4),
       st.booleans())
def test_output_sizes_match_torch_for_kernels_larger_than_the_input(size, kernel, padding,
                                                                     stride, ceil_mode):
    torch = pytest.importorskip("torch")
    padding = min(padding, kernel // 2)
    x = np.arange(float(size * 2)).reshape(1, 1, size, 2)
    kwargs = dict(kernel_size=(kernel, 1), stride=(stride, 1), padding=(padding, 0),
                  ceil_mode=ceil_mode)
    try:
        expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), **kwargs).numpy()
    except RuntimeError:
        with pytest.raises(ValueError, match="larger than the padded input"):
            avg_pool2d(x, **kwargs)
        return
    np.testing.assert_allclose(avg_pool2d(x, **kwargs), expected, rtol=1e-12)
    np.testing.assert_array_equal(
        max_pool2d(x, **kwargs),
        torch.nn.functional.max_pool2d(torch.from_numpy(x), **kwargs).numpy())


def test_empty_batches_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.zeros((0, 2, 5, 5), dtype=torch.float64, requires_grad=True)
    for ours, theirs in ((max_pool2d(x.detach().numpy(), 3, 2, 1, dilation=2),
                          F.max_pool2d(x, 3, 2, 1, dilation=2)),
                         (avg_pool2d(x.detach().numpy(), 3, 2, 1, True, False, 2),
                          F.avg_pool2d(x, 3, 2, 1, True, False, 2))):
        assert ours.shape == tuple(theirs.shape)


def test_pooling_layers_infer_their_output_shape_with_dilation():
    # Shape inference (Sequential with a known input shape) follows the
    # dilated output size rule: 9 - 2*(3 - 1) = 5.
    assert cyconv.MaxPooling(3, stride=1, dilation=2).build((2, 9, 9)) == (2, 5, 5)
    assert cyconv.AveragePooling(3, stride=1, divisor_override=2).build((2, 9, 9)) == (2, 7, 7)


def test_max_pooling_layer_rechecks_an_input_unlike_the_last_one():
    # The layer skips its checks for an input like the last one it checked;
    # each change below must still take the checked path, with its result
    # or its error.
    rng = np.random.default_rng(7)
    layer = cyconv.MaxPooling(2)

    def expect(x, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
        want, _ = ref.max_pool2d(x, kernel, stride, padding, False)
        got = layer.forward(x)
        dtype = np.asarray(x).dtype
        assert got.dtype == (np.float32 if dtype.kind == "f" and dtype.itemsize == 4
                             else np.float64)
        np.testing.assert_array_equal(got, want.astype(got.dtype))
        grad = rng.standard_normal(got.shape).astype(got.dtype)
        # Overlapping windows sum in the layer's dtype, the reference in float64.
        np.testing.assert_allclose(
            layer.backward(grad),
            ref.max_pool2d_backward(grad, x, kernel, stride, padding, False), rtol=1e-6)

    x = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    for _ in range(2):  # the second call takes the remembered path
        expect(x)
    expect(x.astype(np.float64))                       # dtype
    expect(x.astype(">f4"))                            # byte order
    expect(rng.integers(-5, 5, (2, 3, 6, 8)))          # integers
    expect(np.asfortranarray(x))                       # layout
    expect(x[..., ::-1])                               # strides
    expect(x[0])                                       # one sample
    expect(x[0])
    expect(rng.standard_normal((2, 3, 4, 10)).astype(np.float32))  # shape
    expect(x.tolist())                                 # not an ndarray
    expect(x)
    layer.stride = (1, 1)                              # a hyper-parameter
    expect(x, stride=(1, 1))
    layer.stride = (2, 2)
    expect(x)
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer.forward(x[..., :1])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(C, H, W\)"):
        layer.forward(x[0, 0])
    with pytest.raises(TypeError, match="real numbers"):
        layer.forward(x.astype(np.complex64))
    with pytest.raises(ValueError, match="empty axis"):
        layer.forward(x[:, :0])
    layer.forward(x)
    layer.kernel_size = (3, 3)
    layer.padding = (2, 2)
    with pytest.raises(ValueError, match="at most half the kernel size"):
        layer.forward(x)
