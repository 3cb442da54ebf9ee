"""conv2d and conv2d_backward against the tutorial's method (loops over
scipy.signal.correlate2d), finite differences and the adjoint identity."""

import contextlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

import cyconv
from cyconv import _conv, _runtime
from cyconv.functional import conv2d, conv2d_backward
from cyconv.testing import Conv2dConfig, central_difference, conv2d_configs, random_arrays
from reference import RTOL, assert_close


# Three formulations.  "im2col" unrolls the input; "shifted" multiplies
# shifted views of a padded copy, for stride 1 only, so its examples are
# drawn with stride 1; each whole and "-chunked": shrunk workspaces, so that
# output rows are processed one chunk at a time, weight-gradient blocks hold
# one channel each and samples are summed in several parts.  "direct-<isa>"
# runs the direct kernels' variant for that instruction set (each one this
# processor runs), drawn with stride 1 and one group, on the kernels
# vectorised over output positions; "blocked-<isa>" on the ones vectorised
# over blocks of filters, drawn with one group and any stride.
# "winograd" runs the F(4x4, 3x3) kernels, drawn 3x3 with stride 1, one
# group and no dilation, the weight gradient's transformed input written
# tile-major ("-chunked": a row of tiles a chunk, and the weight gradient's
# samples summed in several parts; "-planar": chunked, and that input
# written as the forward pass writes it, as on the variants that do): their
# forward products by BLAS; "winograd-blocked-<isa>" by the blocked direct
# kernels' variant for that instruction set, chunked.
DIRECT_ALGORITHMS = [family + "-" + isa for family in ("direct", "blocked")
                     for isa in _runtime.available_isas()]
WINOGRAD_ALGORITHMS = (["winograd", "winograd-chunked", "winograd-planar"]
                       + ["winograd-blocked-" + isa for isa in _runtime.available_isas()])
ALGORITHMS = pytest.mark.parametrize(
    "algorithm", ["im2col", "im2col-chunked", "shifted", "shifted-chunked"] + DIRECT_ALGORITHMS
    + WINOGRAD_ALGORITHMS)


@contextlib.contextmanager
def forced(algorithm):
    if algorithm.startswith("winograd"):
        blocked = algorithm.startswith("winograd-blocked")
        with contextlib.ExitStack() as stack:
            stack.enter_context(_runtime.winograd_convolution("always"))
            stack.enter_context(mock.patch.object(
                _runtime, "WINOGRAD_TILE_MAJOR_ISAS",
                () if algorithm.endswith("planar") else _runtime.available_isas()))
            stack.enter_context(mock.patch.object(
                _runtime, "WINOGRAD_BLOCKED_PRODUCT_ISAS",
                _runtime.available_isas() if blocked else ()))
            if blocked:
                stack.enter_context(_runtime.direct_convolution(
                    "auto", isa=algorithm.rsplit("-", 1)[1]))
            if algorithm.endswith(("chunked", "planar")) or blocked:
                stack.enter_context(mock.patch.object(_runtime, "WINOGRAD_TILES", 1))
                stack.enter_context(mock.patch.object(_runtime, "WINOGRAD_WEIGHT_TILES", 1))
                stack.enter_context(mock.patch.object(_runtime, "WINOGRAD_MIN_PART_TILES", 1))
                stack.enter_context(mock.patch.object(_runtime, "DIRECT_WEIGHT_PARTS", 2))
            yield
        return
    if algorithm.startswith(("direct", "blocked")):
        family, isa = algorithm.split("-")
        with _runtime.direct_convolution("always", isa,
                                         "wide" if family == "direct" else "blocked"):
            yield
        return
    shifted = algorithm.startswith("shifted")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_runtime.direct_convolution("never"))
        stack.enter_context(mock.patch.object(
            _conv, "SHIFTED_MIN_CHANNELS", 1 if shifted else 2**62))
        stack.enter_context(mock.patch.object(
            _conv, "SHIFTED_WEIGHT_MAX_CHANNELS", 2**62 if shifted else 0))
        if algorithm.endswith("chunked"):
            for name, value in [("WORKSPACE_ELEMENTS", 1), ("WEIGHT_BLOCK_TAPS", 1),
                                ("WEIGHT_PARTS", 2), ("WIDE_ELEMENTS", 1)]:
                stack.enter_context(mock.patch.object(_conv, name, value))
        yield


def configs_for(algorithm, **limits):
    """conv2d_configs, with stride 1 for the shifted formulation, and one
    group too for the direct one."""
    # The blocked kernels also take strided forward passes and weight
    # gradients (the input gradient then takes the products).
    if algorithm.startswith("winograd"):
        return winograd_configs(max_batch=limits.get("max_batch", 3),
                                max_channels=limits.get("max_group_channels", 3),
                                max_extra_size=limits.get("max_extra_size", 8))
    if algorithm.startswith(("shifted", "direct")):
        limits["max_stride"] = 1
    if algorithm.startswith(("direct", "blocked")):
        limits["max_groups"] = 1
    return conv2d_configs(**limits)


@st.composite
def winograd_configs(draw, max_batch=3, max_channels=3, max_extra_size=8):
    """Convolutions the Winograd kernels take: 3x3, stride 1, no dilation,
    one group, padding 0 to 2 on each axis (or "same"), any batch, channels
    and plane with a non-empty output, odd sizes included."""
    padding = draw(st.one_of(st.just("same"), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    pads = (1, 1) if padding == "same" else padding
    sizes = [draw(st.integers(max(1, 3 - 2 * p), max(1, 3 - 2 * p) + max_extra_size))
             for p in pads]
    channels = draw(st.integers(1, max_channels))
    return Conv2dConfig(
        x_shape=(draw(st.integers(1, max_batch)), channels, *sizes),
        weight_shape=(draw(st.integers(1, 3)), channels, 3, 3),
        stride=(1, 1), padding=padding, dilation=(1, 1), groups=1)


def same_padding(config):
    if config.padding != "same":
        ph, pw = config.padding
        return ph, ph, pw, pw
    _, _, kh, kw = config.weight_shape
    th, tw = config.dilation[0] * (kh - 1), config.dilation[1] * (kw - 1)
    return th // 2, th - th // 2, tw // 2, tw - tw // 2


def reference_conv2d(x, weight, bias, config):
    """The tutorial's loop over scipy.signal.correlate2d, extended: np.pad
    for padding, zeros between the taps for dilation, slicing for stride."""
    top, bottom, left, right = same_padding(config)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    f_count, group_channels, kh, kw = weight.shape
    dh, dw = config.dilation
    dilated = np.zeros((f_count, group_channels, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    dilated[:, :, ::dh, ::dw] = weight
    per_group = f_count // config.groups
    sh, sw = config.stride
    out = []
    for sample in xp:
        maps = []
        for f in range(f_count):
            first = (f // per_group) * group_channels
            total = sum(
                signal.correlate2d(sample[first + c], dilated[f, c], mode="valid")
                for c in range(group_channels)
            )
            maps.append(total[::sh, ::sw] + (0 if bias is None else bias[f]))
        out.append(maps)
    return np.array(out)


@ALGORITHMS
@given(st.sampled_from([np.float32, np.float64]), st.booleans(), st.data())
def test_conv2d_matches_scipy_loops(algorithm, dtype, with_bias, data):
    config = data.draw(configs_for(algorithm))
    x, w, b = random_arrays(data.draw, [config.x_shape, config.weight_shape,
                                        (config.weight_shape[0],)], dtype)
    bias = b if with_bias else None
    with forced(algorithm):
        out = conv2d(x, w, bias, **config.kwargs)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    expected = reference_conv2d(x64, w64, b64 if with_bias else None, config)
    magnitude = reference_conv2d(np.abs(x64), np.abs(w64), np.abs(b64) if with_bias else None,
                                 config)
    assert out.shape == config.output_shape
    assert_close(out, expected, magnitude, dtype)


@ALGORITHMS
@given(st.sampled_from([np.float32, np.float64]), st.data())
def test_conv2d_backward_adjoint_identity(algorithm, dtype, data):
    """<conv(x, w), g> = <x, grad_input(g)> = <w, grad_weight(g)>, and the
    bias gradient sums g: the backward pass is the forward's transpose."""
    config = data.draw(configs_for(algorithm))
    x, w, g = random_arrays(data.draw, [config.x_shape, config.weight_shape,
                                        config.output_shape], dtype)
    with forced(algorithm):
        gx, gw, gb = conv2d_backward(g, x, w, **config.kwargs)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (w.shape[0],)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    forward = np.vdot(reference_conv2d(x64, w64, None, config), g64)
    scale = np.vdot(reference_conv2d(np.abs(x64), np.abs(w64), None, config), np.abs(g64)) + 1
    tol = RTOL[dtype] * 10 * scale
    assert abs(np.vdot(x64, gx.astype(np.float64)) - forward) <= tol
    assert abs(np.vdot(w64, gw.astype(np.float64)) - forward) <= tol
    np.testing.assert_allclose(gb, g64.sum(axis=(0, 2, 3)), rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * 10 * np.abs(g64).sum())


@ALGORITHMS
@settings(max_examples=25)
@given(st.data())
def test_conv2d_backward_matches_finite_differences(algorithm, data):
    config = data.draw(configs_for(algorithm, max_batch=2, max_group_channels=2, max_groups=2,
                                   max_kernel=3, max_extra_size=4))
    x, w, b, weights = random_arrays(
        data.draw, [config.x_shape, config.weight_shape, (config.weight_shape[0],),
                    config.output_shape])

    def loss():
        return float(np.sum(conv2d(x, w, b, **config.kwargs) * weights))

    with forced(algorithm):
        gx, gw, gb = conv2d_backward(weights, x, w, **config.kwargs)
        np.testing.assert_allclose(gx, central_difference(loss, x), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gw, central_difference(loss, w), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gb, central_difference(loss, b), rtol=1e-6, atol=1e-8)


def test_single_sample_has_no_batch_axis():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    out = conv2d(x, w, padding=1)
    assert out.shape == (3, 6, 5)
    np.testing.assert_array_equal(out, conv2d(x[None], w, padding=1)[0])
    g = rng.standard_normal(out.shape)
    gx, gw, gb = conv2d_backward(g, x, w, padding=1)
    gx4, gw4, gb4 = conv2d_backward(g[None], x[None], w, padding=1)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gx, gx4[0])
    np.testing.assert_array_equal(gw, gw4)
    np.testing.assert_array_equal(gb, gb4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel_width", [2, 3, 5, 6, 7])
def test_input_gradient_at_stride_2_near_the_row_ends(dtype, kernel_width):
    """At stride 2 along rows (the products' col2im; stride (1, 2) never
    takes the phases), each tap lands on every other column and some
    fall in the padding: narrow rows and wide padding put those ends
    everywhere.  Against the float64 reference, at 1 and 3 threads."""
    import reference

    rng = np.random.default_rng(kernel_width)
    for width in range(1, 12):
        for padding in range(kernel_width + 2):  # padding wider than the kernel too
            if width + 2 * padding < kernel_width:
                continue
            x = rng.standard_normal((2, 3, 4, width)).astype(dtype)
            w = rng.standard_normal((4, 3, 3, kernel_width)).astype(dtype)
            out_width = (width + 2 * padding - kernel_width) // 2 + 1
            g = rng.standard_normal((2, 4, 4, out_width)).astype(dtype)
            results = []
            try:
                for threads in (1, 3):
                    cyconv.set_num_threads(threads)
                    results.append(conv2d_backward(g, x, w, stride=(1, 2),
                                                   padding=(1, padding))[0])
            finally:
                cyconv.set_num_threads(None)
            np.testing.assert_array_equal(results[0], results[1])
            sides = (1, 1, padding, padding)
            expected = reference.conv2d_backward(g, x, w, (1, 2), sides, (1, 1), 1)[0]
            magnitude = reference.conv2d_backward(np.abs(g), np.abs(x), np.abs(w), (1, 2), sides,
                                                  (1, 1), 1)[0]
            assert_close(results[0], expected, magnitude, dtype)


def test_compute_grad_input_false_skips_it():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((4, 1, 3, 3))
    g = rng.standard_normal((2, 4, 4, 4))
    gx, gw, gb = conv2d_backward(g, x, w, compute_grad_input=False)
    assert gx is None
    _, gw_full, gb_full = conv2d_backward(g, x, w)
    np.testing.assert_array_equal(gw, gw_full)
    np.testing.assert_array_equal(gb, gb_full)
    # Only True or False: 0, "no" or an array would be a misplaced argument.
    for wrong in (0, "no", None, np.ones(2)):
        with pytest.raises(TypeError, match="compute_grad_input must be True or False"):
            conv2d_backward(g, x, w, compute_grad_input=wrong)


@ALGORITHMS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_bitwise_identical_at_any_thread_count(algorithm, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 12, 40, 11)).astype(dtype)
    w = rng.standard_normal((7, 12, 3, 3)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    stride = (1, 1) if algorithm.startswith(("shifted", "winograd")) else (1, 2)
    results = []
    try:
        with forced(algorithm), mock.patch.object(_conv, "MIN_MACS_PER_THREAD", 1):
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                out = conv2d(x, w, b, stride=stride, padding=1)
                results.append((out,) + conv2d_backward(out, x, w, stride=stride, padding=1))
    finally:
        cyconv.set_num_threads(None)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)


def test_integer_and_mixed_inputs_compute_in_float64():
    x = np.arange(2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    w = np.ones((1, 1, 2, 2), dtype=np.float32)
    out = conv2d(x, w)
    assert out.dtype == np.float64
    assert conv2d(x.astype(np.float32), w).dtype == np.float32
    assert conv2d(x.astype(np.float32), w.astype(np.float64)).dtype == np.float64
    assert conv2d(x.tolist(), w.tolist()).dtype == np.float64


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "reversed"])
def test_any_memory_layout_gives_the_same_result(layout):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 9, 8))
    w = rng.standard_normal((4, 2, 2, 3))
    g = rng.standard_normal((3, 4, 8, 6))
    expected = (conv2d(x, w),) + conv2d_backward(g, x, w)
    if layout == "fortran":
        x, w, g = (np.asfortranarray(a) for a in (x, w, g))
    elif layout == "strided":
        x, w, g = (np.repeat(a, 2, axis=-1)[..., ::2] for a in (x, w, g))
    elif layout == "readonly":
        for a in (x, w, g):
            a.flags.writeable = False
    else:
        x, w, g = (a[..., ::-1].copy()[..., ::-1] for a in (x, w, g))
    actual = (conv2d(x, w),) + conv2d_backward(g, x, w)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


BAD_CONV_ARGUMENTS = [
    # (x shape, weight shape, kwargs, error, words the message must contain)
    ((1, 2, 5, 5), (3, 3, 3, 3), {}, ValueError, "weight must have shape"),
    ((2, 5, 5), (3, 2, 3), {}, ValueError, "weight must have 4 dimensions"),
    ((5, 5), (3, 1, 3, 3), {}, ValueError, "x must have 3 or 4 dimensions"),
    ((1, 1, 2, 2), (1, 1, 3, 3), {}, ValueError, "larger than the padded input"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"dilation": 3}, ValueError, "larger than the padded input"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"stride": 0}, ValueError, "stride must be >= 1"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"stride": (1, -1)}, ValueError, "stride must be >= 1"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"stride": 1.5}, TypeError, "stride must be an int"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"stride": True}, TypeError, "stride must be an int"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"stride": "2"}, TypeError, "stride must be an int"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"dilation": "1"}, TypeError, "dilation must be an int"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"stride": (1, 2, 3)}, ValueError, "pair of ints"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"padding": -1}, ValueError, "padding must be >= 0"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"padding": "full"}, ValueError, "'valid' or 'same'"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"padding": "same", "stride": 2}, ValueError, "stride 1"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"dilation": 0}, ValueError, "dilation must be >= 1"),
    ((1, 4, 5, 5), (4, 2, 3, 3), {"groups": 3}, ValueError, "must divide"),
    ((1, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}, ValueError, "must divide"),
    ((1, 4, 5, 5), (4, 4, 3, 3), {"groups": 0}, ValueError, "groups must be >= 1"),
    ((1, 0, 5, 5), (1, 0, 3, 3), {}, ValueError, "empty axis"),
    ((0, 5, 5), (1, 0, 3, 3), {}, ValueError, "empty axis"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"stride": 2**63}, ValueError, r"stride must be at most 2\*\*40"),
    ((1, 1, 5, 5), (1, 1, 1, 1), {"dilation": (1, 2**64)}, ValueError,
     r"dilation must be at most 2\*\*40"),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"padding": 2**41}, ValueError,
     r"padding must be at most 2\*\*40"),
    ((1, 1, 1, 1), (2**20, 1, 1, 1), {"padding": 2**40}, ValueError,
     "output would have shape .* too large for an array"),
    # 46341 x 46341 output pixels from one input pixel: more than a C int indexes.
    ((1, 1, 1, 1), (1, 1, 1, 1), {"padding": 23170}, ValueError,
     r"output planes must have fewer than 2\*\*31 pixels"),
    ((1, 1, 5, 5), (0, 1, 3, 3), {}, ValueError, "empty axis"),
]


@pytest.mark.parametrize("x_shape, w_shape, kwargs, error, words", BAD_CONV_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(x_shape, w_shape, kwargs, error, words):
    x, w = np.ones(x_shape), np.ones(w_shape)
    with pytest.raises(error, match=words):
        conv2d(x, w, **kwargs)
    if len(x_shape) in (3, 4) and len(w_shape) == 4:
        with pytest.raises(error, match=words):
            conv2d_backward(np.ones((1, 1, 1, 1)), x, w, **kwargs)


@pytest.mark.parametrize("dtype", [np.complex128, np.float16, object, "U3"])
def test_unsupported_dtypes_raise_type_error(dtype):
    x = np.ones((1, 1, 4, 4)).astype(dtype)
    with pytest.raises(TypeError, match="real numbers"):
        conv2d(x, np.ones((1, 1, 2, 2)))


def test_weight_beyond_blas_ints_is_refused_before_anything_is_allocated():
    # Only the shapes are looked at: such a weight would take 32 GiB.
    with pytest.raises(ValueError, match=r"fewer than 2\*\*31 values per filter"):
        _conv.conv_geometry((1, 2**16, 2**8, 2**8), (1, 2**16, 2**8, 2**8), 1, 0, 1, 1)
    # 2**30 filters per group, but the weight gradient's products stride over
    # all 2**31 of them.
    with pytest.raises(ValueError, match=r"fewer than 2\*\*31 filters"):
        _conv.conv_geometry((1, 2, 1, 1), (2**31, 1, 1, 1), 1, 0, 1, 2)


def test_bad_bias_and_grad_output_shapes():
    x, w = np.ones((2, 1, 5, 5)), np.ones((3, 1, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \(F,\) = \(3,\)"):
        conv2d(x, w, np.ones(2))
    with pytest.raises(ValueError, match=r"grad_output must have the shape .*\(2, 3, 3, 3\)"):
        conv2d_backward(np.ones((2, 3, 4, 4)), x, w)


def test_nan_and_inf_propagate():
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 3, 3] = np.inf
    out = conv2d(x, np.ones((1, 1, 2, 2)))
    assert np.isnan(out[0, 0, 0, 0]) and np.isinf(out[0, 0, 2, 2])
    assert np.isfinite(out[0, 0, 1, 1])


@pytest.mark.parametrize("algorithm", ["im2col", "shifted"] + DIRECT_ALGORITHMS)
@pytest.mark.parametrize("where", ["x", "weight", "both"])
def test_nan_and_inf_reach_exactly_the_gradients_they_touch(algorithm, where):
    """The shifted formulation multiplies zeros into its garbage columns,
    and 0 * inf is NaN: with non-finite values it must still give the NaN
    and infinities of the sums of the terms that exist, here summed tap by
    tap.  (scipy's full-mode convolution is no reference here: it also
    multiplies its zero fill by the kernel.)"""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    g = rng.standard_normal((2, 4, 5, 5))
    if where in ("x", "both"):
        x[0, 1, 0, 0], x[1, 2, 3, 5], x[1, 0, 6, 2] = np.inf, -np.inf, np.nan
    if where in ("weight", "both"):
        w[1, 2, 0, 1], w[3, 0, 2, 0] = np.inf, -np.inf
    with forced(algorithm):
        gx, gw, _ = conv2d_backward(g, x, w)
    expected_gx, expected_gw = np.zeros_like(x), np.zeros_like(w)
    with np.errstate(invalid="ignore"):
        for i in range(3):
            for j in range(2):
                expected_gx[:, :, i:i + 5, j:j + 5] += np.einsum("nfhw,fc->nchw", g, w[:, :, i, j])
                expected_gw[:, :, i, j] = np.einsum("nchw,nfhw->fc", x[:, :, i:i + 5, j:j + 5], g)
    for actual, expected in ((gx, expected_gx), (gw, expected_gw)):
        for special in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(special(actual), special(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-12, atol=1e-12)


def test_the_formulation_follows_the_measured_rule():
    """Shifted products for stride 1 from SHIFTED_MIN_CHANNELS channels per
    group, their weight gradient up to SHIFTED_WEIGHT_MAX_CHANNELS, and never
    for a sample whose padded copy would exceed SHIFTED_MAX_SAMPLE values."""
    def geometry(x_shape, w_shape, stride=1, padding=1, groups=1):
        return _conv.conv_geometry(x_shape, w_shape, stride, padding, 1, groups)

    wide = geometry((8, 64, 56, 56), (64, 64, 3, 3))
    assert wide.shifted and not wide.shifted_weight
    narrow = geometry((64, 8, 13, 13), (16, 8, 3, 3))
    assert narrow.shifted and narrow.shifted_weight
    assert not geometry((64, 1, 28, 28), (8, 1, 3, 3)).shifted
    assert not geometry((32, 16, 32, 32), (32, 16, 5, 5), stride=2).shifted
    assert geometry((8, 32, 32, 32), (64, 8, 3, 3), groups=4).shifted  # 8 per group
    assert not geometry((8, 32, 32, 32), (64, 4, 3, 3), groups=8).shifted  # 4 per group
    side = int((_conv.SHIFTED_MAX_SAMPLE // 16) ** 0.5)
    assert geometry((1, 16, side - 2, side - 2), (4, 16, 3, 3)).shifted
    assert not geometry((1, 16, side, side), (4, 16, 3, 3)).shifted


@pytest.mark.parametrize("padding", [0, (1,), "same"])
def test_an_empty_batch_gives_empty_results(padding):
    # PyTorch returns empty results for a batch of 0 samples (an empty shard
    # of a data set); the weight and bias gradients are then zero.
    x = np.ones((0, 4, 6, 5), dtype=np.float32)
    w = np.ones((6, 2, 3, 3), dtype=np.float32)
    out = conv2d(x, w, np.ones(6, np.float32), padding=padding, groups=2)
    expected_shape = (0, 6, 6, 5) if padding != 0 else (0, 6, 4, 3)
    assert out.shape == expected_shape and out.dtype == np.float32
    grad_input, grad_weight, grad_bias = conv2d_backward(np.ones(expected_shape), x, w,
                                                         padding=padding, groups=2)
    assert grad_input.shape == x.shape
    np.testing.assert_array_equal(grad_weight, np.zeros(w.shape))
    np.testing.assert_array_equal(grad_bias, np.zeros(6))
    assert conv2d_backward(np.ones(expected_shape), x, w, padding=padding, groups=2,
                           compute_grad_input=False)[0] is None
    with pytest.raises(ValueError, match="grad_output must have the shape"):
        conv2d_backward(np.ones((1,) + expected_shape[1:]), x, w, padding=padding, groups=2)
    with pytest.raises(ValueError, match="groups=4 must divide"):
        conv2d(x, w, groups=4)


def test_an_empty_batch_matches_torch():
    torch = pytest.importorskip("torch")
    x = torch.zeros((0, 2, 5, 5), dtype=torch.float64, requires_grad=True)
    w = torch.ones((3, 2, 3, 3), dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.conv2d(x, w, padding=(1,), dilation=(2,))
    ours = conv2d(x.detach().numpy(), w.detach().numpy(), padding=(1,), dilation=(2,))
    assert ours.shape == tuple(out.shape)
    out.sum().backward()
    _, grad_weight, _ = conv2d_backward(ours, x.detach().numpy(), w.detach().numpy(),
                                        padding=(1,), dilation=(2,))
    np.testing.assert_array_equal(grad_weight, w.grad.numpy())
