"""The direct convolution path: which layers take it, its results on the
layer shapes of small CNNs against float64 references, and bitwise
agreement across thread counts and instruction-set variants.  (Its
agreement with the tutorial's scipy loops, the adjoint identity, finite
differences and non-finite values are in test_conv.py, run for every
variant this processor runs.)"""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyconv
from cyconv import _conv, _conv_direct, _runtime, _scratch
from cyconv._conv import conv_geometry
from cyconv._kernels import _conv_direct as _kernels
from cyconv.functional import conv2d, conv2d_backward
from cyconv.testing import conv2d_configs, random_arrays
from guard_page import run_child
from reference import RTOL

VARIANTS = _runtime.available_isas()


def geometry(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    return conv_geometry(x_shape, w_shape, stride, padding, dilation, groups)


def test_the_detected_variant_is_one_this_processor_runs():
    assert _runtime.DETECTED_ISA in ("portable", "avx2", "avx512")
    assert VARIANTS[0] == "portable" and VARIANTS[-1] == _runtime.DETECTED_ISA
    with pytest.raises(ValueError, match="mode must be"):
        with _runtime.direct_convolution("sometimes"):
            pass
    with pytest.raises(ValueError, match="this processor runs"):
        with _runtime.direct_convolution("always", "sse9"):
            pass


def test_which_layers_take_the_direct_path():
    """Stride 1, one group, at most 7x7 taps, padding within the dilated
    kernel's span; and, by the rule, only with a vectorised variant."""
    lenet = geometry((64, 8, 13, 13), (16, 8, 3, 3))
    assert _conv_direct.supports(lenet)
    assert _conv_direct.supports(geometry((64, 3, 32, 32), (32, 3, 5, 5), padding=2))
    assert _conv_direct.supports(geometry((2, 4, 9, 9), (4, 4, 3, 3), padding="same",
                                          dilation=2))
    assert not _conv_direct.supports(geometry((64, 3, 32, 32), (32, 3, 3, 3), stride=2))
    assert not _conv_direct.supports(geometry((2, 4, 9, 9), (4, 2, 3, 3), groups=2))
    assert not _conv_direct.supports(geometry((2, 4, 16, 16), (4, 4, 9, 9)))
    assert not _conv_direct.supports(geometry((2, 4, 9, 9), (4, 4, 1, 1), padding=1))
    for operation in ("forward", "input", "weight"):
        with _runtime.direct_convolution("never"):
            assert not _conv_direct.use(lenet, operation)
        with _runtime.direct_convolution("always", "portable"):
            assert _conv_direct.use(lenet, operation)
        with _runtime.direct_convolution("auto", "portable"):
            assert not _conv_direct.use(lenet, operation)
        for variant in ("avx2", "avx512"):
            if variant in VARIANTS:
                with _runtime.direct_convolution("auto", variant):
                    assert _conv_direct.use(lenet, operation)
    # 8 input channels: the input gradient is not worth a block of 16, and
    # takes the wide kernels
    for variant in ("avx2", "avx512"):
        if variant in VARIANTS:
            with _runtime.direct_convolution("auto", variant):
                assert not _conv_direct._blocked(lenet, "input")


def test_which_kernel_family_the_rule_picks():
    """Filter-blocked kernels for at least 16 output channels on planes of at
    most 256 pixels, and for weight gradients of at least 64 channel taps
    (on any plane with AVX-512, small planes with AVX2), or of fewer taps
    and at least 32 filters on output planes of more than 256 pixels at
    stride 1 (first layers); else the wide kernels (weight gradients of at
    most 16 filters), or the products where the variant's rule leaves them
    out."""
    c3 = geometry((64, 64, 8, 8), (128, 64, 3, 3), padding=1)
    c1 = geometry((64, 3, 32, 32), (32, 3, 3, 3), padding=1)
    w3 = geometry((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    w1b = geometry((64, 8, 13, 13), (16, 8, 3, 3))
    w4 = geometry((32, 16, 32, 32), (32, 16, 5, 5), stride=2, padding=2)
    c1_strided = geometry((64, 3, 32, 32), (32, 3, 3, 3), stride=2, padding=1)
    c1_20 = geometry((64, 3, 32, 32), (20, 3, 3, 3), padding=1)
    first_strided = geometry((32, 3, 64, 64), (32, 3, 3, 3), stride=2, padding=1)
    expected = {
        "avx512": {c3: ("blocked",) * 3, c1: ("wide", "wide", "blocked"),
                   c1_20: ("wide", "wide", None), first_strided: (None,) * 3,
                   w3: ("wide", "wide", "blocked"), w1b: ("blocked", "wide", "blocked"),
                   w4: ("blocked", None, "blocked"), c1_strided: ("blocked", None, None)},
        "avx2": {c3: ("blocked",) * 3, c1: ("wide", "wide", "blocked"),
                 w3: ("wide", "wide", None), w1b: ("blocked", "wide", "blocked"),
                 w4: ("blocked", None, "blocked"), c1_20: ("wide", "wide", None),
                 first_strided: (None,) * 3},
        "portable": {c3: (None,) * 3, w4: (None,) * 3},
    }
    for variant in VARIANTS:
        with _runtime.direct_convolution("auto", variant):
            for geo, choices in expected[variant].items():
                assert tuple(_runtime.direct_choice(geo, op)
                             for op in ("forward", "input", "weight")) == choices
                for op, choice in zip(("forward", "input", "weight"), choices):
                    assert _conv_direct.use(geo, op) == (choice is not None)
                    if choice is not None:
                        assert _runtime.direct_family(geo, op) == choice
    with pytest.raises(ValueError, match="family must be"):
        with _runtime.direct_convolution("always", None, "narrow"):
            pass


def _einsum_conv(x, w, padding):
    """float64 reference by taps: np.pad and one einsum per tap."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2))
    w = w.astype(np.float64)
    _, _, kh, kw = w.shape
    ho, wo = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = 0
    for i in range(kh):
        for j in range(kw):
            out = out + np.einsum("nchw,fc->nfhw", x[:, :, i:i + ho, j:j + wo], w[:, :, i, j])
    return out


# The layers of the LeNet and CIFAR-like networks of the benchmarks, with a
# smaller batch, and 5x5 variants of them.
SMALL_CNN_LAYERS = [
    ((4, 1, 28, 28), (8, 1, 3, 3), 0),
    ((4, 8, 13, 13), (16, 8, 3, 3), 0),
    ((4, 3, 32, 32), (32, 3, 3, 3), 1),
    ((4, 32, 16, 16), (64, 32, 3, 3), 1),
    ((3, 64, 8, 8), (128, 64, 3, 3), 1),
    ((4, 1, 28, 28), (6, 1, 5, 5), 2),
    ((4, 6, 14, 14), (16, 6, 5, 5), 0),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, padding", SMALL_CNN_LAYERS)
def test_small_cnn_layers_against_float64_references(variant, dtype, x_shape, w_shape,
                                                      padding):
    """Forward against a float64 reference; both gradients by the adjoint
    identity <conv(x), g> = <x, grad_input> = <w, grad_weight>, element by
    element for the weight gradient (each entry is a correlation of x and g)."""
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    expected = _einsum_conv(x, w, padding) + b[:, None, None].astype(np.float64)
    g = rng.standard_normal(expected.shape).astype(dtype)
    assert _conv_direct.supports(geometry(x_shape, w_shape, padding=padding))
    with _runtime.direct_convolution("always", variant):
        out = conv2d(x, w, b, padding=padding)
        gx, gw, gb = conv2d_backward(g, x, w, padding=padding)
    magnitude = _einsum_conv(np.abs(x), np.abs(w), padding) + np.abs(b)[:, None, None]
    assert out.dtype == gx.dtype == gw.dtype == dtype
    assert np.all(np.abs(out - expected) <= RTOL[dtype] * (magnitude + 1))
    g64 = g.astype(np.float64)
    total = np.vdot(expected - b[:, None, None], g64)
    scale = np.vdot(magnitude, np.abs(g64)) + 1
    assert abs(np.vdot(x.astype(np.float64), gx) - total) <= RTOL[dtype] * 10 * scale
    # grad_weight[f, c, i, j] = <x[:, c] shifted by (i, j), g[:, f]>
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2))
    ho, wo = g.shape[2:]
    for i, j in [(0, 0), (w_shape[2] - 1, w_shape[3] - 1)]:
        window = xp[:, :, i:i + ho, j:j + wo]
        want = np.einsum("nchw,nfhw->fc", window, g64)
        bound = RTOL[dtype] * 10 * (np.einsum("nchw,nfhw->fc", np.abs(window), np.abs(g64)) + 1)
        assert np.all(np.abs(gw[:, :, i, j] - want) <= bound)
    np.testing.assert_allclose(gb, g64.sum(axis=(0, 2, 3)), rtol=RTOL[dtype] * 10)


@settings(max_examples=30)
@given(st.sampled_from([np.float32, np.float64]), st.data())
def test_bitwise_identical_across_threads_and_variants(dtype, data):
    """Each value is one fixed chain of fused multiply-adds whatever the
    thread count (1, 2, 3) and whichever variant runs it."""
    config = data.draw(conv2d_configs(max_batch=20, max_group_channels=5, max_groups=1,
                                      max_kernel=5, max_stride=1, max_extra_size=12))
    x, w, b = random_arrays(data.draw, [config.x_shape, config.weight_shape,
                                        (config.weight_shape[0],)], dtype)
    g = random_arrays(data.draw, [config.output_shape], dtype)[0]
    results = []
    try:
        for variant in VARIANTS:
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                with _runtime.direct_convolution("always", variant):
                    results.append((conv2d(x, w, b, **config.kwargs),)
                                   + conv2d_backward(g, x, w, **config.kwargs))
    finally:
        cyconv.set_num_threads(None)
    first = results[0]
    for other in results[1:]:
        for a, b_ in zip(first, other):
            assert a.tobytes() == b_.tobytes()


def test_threads_really_split_the_direct_kernels():
    """A layer big enough for several threads, with partial weight
    gradients over several runs of samples: still bitwise identical."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    g = rng.standard_normal((24, 16, 20, 20)).astype(np.float32)
    geo = geometry(x.shape, w.shape, padding=1)
    results = []
    try:
        for threads in (1, 2, 3):
            cyconv.set_num_threads(threads)
            assert geo.threads() == cyconv.get_num_threads()  # 1 in a build without OpenMP
            results.append(conv2d_backward(g, x, w, padding=1))
    finally:
        cyconv.set_num_threads(None)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("variant", VARIANTS)
def test_non_finite_values_propagate_in_the_forward_pass(variant):
    x = np.ones((1, 1, 5, 5))
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 4, 4] = np.inf
    with _runtime.direct_convolution("always", variant):
        out = conv2d(x, np.ones((1, 1, 3, 3)), padding=1)
    assert np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, 0, 1, 1])
    assert np.isinf(out[0, 0, 4, 4]) and np.isinf(out[0, 0, 3, 3])
    assert np.isfinite(out[0, 0, 0, 3]) and out[0, 0, 2, 2] == 9


def test_show_config_names_the_kernels_this_machine_runs(capsys):
    info = cyconv.show_config(mode="dicts")
    assert info["direct convolution kernels"] == _runtime.DETECTED_ISA
    assert info["threads"] == cyconv.get_num_threads()
    assert cyconv.show_config() is None
    assert f"direct convolution kernels: {_runtime.DETECTED_ISA}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="mode must be 'stdout' or 'dicts'"):
        cyconv.show_config(mode="json")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_batches_run_in_chunks_with_the_same_result(dtype, monkeypatch):
    """Padded copies are bounded by DIRECT_MAX_PADDED: a batch larger than
    that runs in chunks of whole weight-gradient runs, bitwise as one call;
    a layer whose single run exceeds it takes the matrix products."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 3, 9, 9)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    g = rng.standard_normal((37, 5, 9, 9)).astype(dtype)
    geo = geometry(x.shape, w.shape, padding=1)
    monkeypatch.setattr(_runtime, "DIRECT_WEIGHT_RUN", 1)  # runs of 5 samples, 8 parts

    def run():
        _conv_direct._plan.cache_clear()
        with _runtime.direct_convolution("always"):
            return (conv2d(x, w, padding=1),) + conv2d_backward(g, x, w, padding=1)

    whole = run()
    assert len(_conv_direct._plan(geo).chunks(37)) == 1
    plan = _conv_direct._plan(geo)
    per_sample = 5 * max(plan.stride, plan.grad_stride)
    monkeypatch.setattr(_runtime, "DIRECT_MAX_PADDED", per_sample * (plan.samples_per_part + 1))
    chunked = run()
    assert len(_conv_direct._plan(geo).chunks(37)) == plan.parts > 1
    for a, b in zip(whole, chunked):
        assert a.tobytes() == b.tobytes()
    monkeypatch.setattr(_runtime, "DIRECT_MAX_PADDED", per_sample)
    _conv_direct._plan.cache_clear()
    assert not _conv_direct.supports(geo)
    _conv_direct._plan.cache_clear()


def test_an_empty_batch_gives_empty_outputs_and_zero_weight_gradients():
    """conv2d may hand the direct kernels an empty batch (N = 0)."""
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    g = np.zeros((0, 4, 8, 8), np.float32)
    geo = geometry(x.shape, w.shape, padding=1)
    assert _conv_direct.supports(geo)
    assert _conv_direct.forward(x, w, np.empty(0, np.float32), geo, 1).shape == (0, 4, 8, 8)
    assert _conv_direct.grad_input(g, w, geo, 1).shape == (0, 3, 8, 8)
    grad_bias = np.full(4, np.nan, np.float32)
    grad_weight, bias_done = _conv_direct.grad_weight(g, x, w, geo, 1, grad_bias)
    assert grad_weight.dtype == np.float32 and not grad_weight.any()
    assert grad_weight.shape == w.shape
    assert bias_done and np.array_equal(grad_bias, np.zeros(4))


def _relu_cases():
    """(x, w, b, padding) cases: the direct path's shapes, a layer the
    matrix products take (stride 2), NaN, infinities and a -0.0 bias."""
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        # 19 filters: a whole block of 16 float filters and a partial one
        x = rng.standard_normal((5, 6, 11, 11)).astype(dtype)
        w = rng.standard_normal((19, 6, 3, 3)).astype(dtype)
        b = rng.standard_normal(19).astype(dtype)
        yield x, w, b, dict(padding=1)
        yield x, w, np.empty(0, dtype), dict(padding=1)
        nan = x.copy()
        nan[0, 0, 3, 3] = np.nan
        nan[1, 2, 5, 5] = -np.nan
        nan[2, 1, 0, 0] = np.inf
        nan[3, 1, 7, 7] = -np.inf
        yield nan, w, b, dict(padding=1)
        # NaN biases of both signs over NaN sums: the sum's NaN is kept
        nan_bias = b.copy()
        nan_bias[::3] = np.nan
        nan_bias[1::4] = -np.nan
        yield nan, w, nan_bias, dict(padding=1)
        # -0.0 bias on an all-zero input: outputs of -0.0, which np.maximum
        # turns into +0.0
        yield np.zeros_like(x), w, np.full(19, -0.0, dtype), dict(padding=0)
        yield x, w, b, dict(padding=1, stride=2)
        yield nan, w, b, dict(padding=2, dilation=2)


@pytest.mark.parametrize("variant, family", [(variant, family) for variant in VARIANTS
                                             for family in ("wide", "blocked")]
                         + [("never", None)])
def test_fused_relu_is_max_after_the_convolution_bitwise(variant, family):
    """conv2d_checked(..., relu=True) equals np.maximum(conv2d(...), 0) bit
    for bit, NaN kept, whichever path, kernels, variant and thread count
    runs it."""
    mode = ("never", None) if variant == "never" else ("always", variant, family)
    try:
        for x, w, b, kwargs in _relu_cases():
            geo = geometry(x.shape, w.shape, **kwargs)
            with _runtime.direct_convolution(*mode):
                expected = np.maximum(conv2d(x, w, b if b.size else None, **kwargs), 0)
                for threads in (1, 2, 3):
                    cyconv.set_num_threads(threads)
                    got = _conv.conv2d_checked(x, w, b, geo, relu=True)
                    assert got.dtype == x.dtype
                    assert got.tobytes() == expected.tobytes()
            assert np.isnan(expected).any() == bool(np.isnan(x).any())
    finally:
        cyconv.set_num_threads(None)


@pytest.mark.parametrize("family", ["wide", "blocked"])
def test_every_variant_stores_the_same_bits(family):
    """The stores and copies of each variant (vector moves on AVX-512 and
    AVX2, loops on the portable one) write the same bits as the portable
    loops: NaN inputs and biases of both signs, -0.0, partial blocks and
    tiles, with and without ReLU, all three operations, 1 and 3 threads."""
    try:
        for x, w, b, kwargs in _relu_cases():
            geo = geometry(x.shape, w.shape, **kwargs)
            g = np.random.default_rng(5).standard_normal(geo.output_shape).astype(x.dtype)
            g[0, 0, 0, :2] = [np.nan, -np.inf]
            results = []
            for variant in VARIANTS:
                for threads in (1, 3):
                    cyconv.set_num_threads(threads)
                    with _runtime.direct_convolution("always", variant, family):
                        results.append(
                            (conv2d(x, w, b if b.size else None, **kwargs),
                             _conv.conv2d_checked(x, w, b, geo, relu=True))
                            + conv2d_backward(g, x, w, **kwargs))
            for other in results[1:]:
                # outputs, input gradient, bias gradient (running sums)
                for k in (0, 1, 2, 4):
                    assert results[0][k].tobytes() == other[k].tobytes()
                # The weight gradient: where a NaN of x meets one of the
                # output gradient, the vector kernels' fused multiply-adds
                # and the portable loop's may keep either NaN (its sign); the
                # other bits are the same.
                a, b_ = results[0][3], other[3]
                assert np.array_equal(np.isnan(a), np.isnan(b_))
                assert (np.where(np.isnan(a), 0, a).tobytes()
                        == np.where(np.isnan(b_), 0, b_).tobytes())
    finally:
        cyconv.set_num_threads(None)


def _reference(x, w, g, padding, dilation, stride=(1, 1)):
    """float64 forward, input and weight gradients tap by tap (np.pad and
    einsum), with their magnitudes (the same sums of absolute values)."""
    (ph, pw), (dh, dw), (sh, sw) = padding, dilation, stride
    _, _, kh, kw = w.shape
    ho, wo = g.shape[2:]
    results = []
    for sign in (1, -1):  # the values, then the magnitudes
        xs, ws, gs = (a.astype(np.float64) if sign > 0 else np.abs(a.astype(np.float64))
                      for a in (x, w, g))
        xp = np.pad(xs, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        out = np.zeros(g.shape)
        gxp = np.zeros(xp.shape)
        gw = np.zeros(w.shape)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                window = (slice(None), slice(None), rows, cols)
                out += np.einsum("nchw,fc->nfhw", xp[window], ws[:, :, i, j])
                gxp[window] += np.einsum("nfhw,fc->nchw", gs, ws[:, :, i, j])
                gw[:, :, i, j] = np.einsum("nchw,nfhw->fc", xp[window], gs)
        results.append((out, gxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]], gw))
    return results


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([np.float32, np.float64]), st.data())
def test_filter_blocked_kernels_against_references_threads_and_variants(dtype, data):
    """The kernels vectorised over blocks of 16 float / 8 double filters:
    channels and filters that are not whole blocks, 1x1 to 20x20 planes,
    padding, dilation, strides (forward and weight gradient; the input
    gradient then runs on the products), batches of 0, 1 or odd sizes.  Against a float64
    reference; bitwise across 1, 2, 3 threads and every variant; the forward
    pass and input gradient bitwise those of the wide kernels (the same
    chains of fused multiply-adds)."""
    channels, filters = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    # padding within the dilated span, as the direct path requires
    padding = tuple(data.draw(st.integers(0, d * (k - 1))) for d, k in zip(dilation, (kh, kw)))
    sizes = [data.draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 20))
             for d, k, p in zip(dilation, (kh, kw), padding)]
    n = data.draw(st.sampled_from([0, 1, 2, 3, 5]))
    x, w, b = random_arrays(data.draw, [(n, channels, *sizes), (filters, channels, kh, kw),
                                        (filters,)], dtype)
    kwargs = dict(padding=padding, dilation=dilation, stride=stride)
    geo = geometry(x.shape, w.shape, **kwargs)
    if not _conv_direct.supports_operation(geo, "forward"):
        return
    strided = stride != (1, 1)
    g = random_arrays(data.draw, [geo.output_shape], dtype)[0]
    results = []
    try:
        for variant in VARIANTS:
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                with _runtime.direct_convolution("always", variant, "blocked"):
                    results.append((conv2d(x, w, b, **kwargs),)
                                   + conv2d_backward(g, x, w, **kwargs))
        with _runtime.direct_convolution("always", None, "wide"):
            wide = (conv2d(x, w, b, **kwargs),) + conv2d_backward(g, x, w, **kwargs)
    finally:
        cyconv.set_num_threads(None)
    first = results[0]
    for other in results[1:]:
        for a, b_ in zip(first, other):
            assert a.tobytes() == b_.tobytes()
    if not strided:  # (strided, the wide family is not asked: the products run)
        assert first[0].tobytes() == wide[0].tobytes()
        assert first[1].tobytes() == wide[1].tobytes()
    (out, gx, gw), (out_mag, gx_mag, gw_mag) = _reference(x, w, g, padding, dilation,
                                                          stride)
    out = out + b.astype(np.float64)[:, None, None]
    out_mag = out_mag + np.abs(b.astype(np.float64))[:, None, None]
    for actual, expected, magnitude in ((first[0], out, out_mag), (first[1], gx, gx_mag),
                                        (first[2], gw, gw_mag)):
        assert actual.dtype == dtype and actual.shape == expected.shape
        assert np.all(np.abs(actual - expected) <= RTOL[dtype] * 4 * (magnitude + 1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_filter_blocked_weight_gradient_is_exact_for_any_x(variant):
    """The filter-blocked weight gradient visits output pixels only (no
    garbage positions multiplied by zeros), so NaN and infinities in x give
    exactly the non-finite entries of the sums of the existing terms."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 5, 9, 8))
    w = rng.standard_normal((18, 5, 3, 3))
    g = rng.standard_normal((3, 18, 9, 8))
    x[0, 1, 0, 0], x[1, 2, 4, 7], x[2, 4, 8, 3] = np.inf, -np.inf, np.nan
    with _runtime.direct_convolution("always", variant, "blocked"):
        _, gw, _ = conv2d_backward(g, x, w, padding=1)
    with np.errstate(invalid="ignore"):
        expected = _reference(x, w, g, (1, 1), (1, 1))[0][2]
    for special in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(special(gw), special(expected))
    finite = np.isfinite(expected)
    assert finite.any() and not finite.all()
    np.testing.assert_allclose(gw[finite], expected[finite], rtol=1e-12, atol=1e-12)


def test_filter_blocked_large_batches_run_in_chunks_with_the_same_result(monkeypatch):
    """The weight gradient's running sums carry from one chunk of the batch
    to the next: bitwise the same as one call."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((13, 20, 6, 6)).astype(np.float32)
    w = rng.standard_normal((17, 20, 3, 3)).astype(np.float32)
    g = rng.standard_normal((13, 17, 6, 6)).astype(np.float32)
    geo = geometry(x.shape, w.shape, padding=1)
    monkeypatch.setattr(_runtime, "DIRECT_WEIGHT_RUN", 1)  # chunks of whole runs of 2

    def run():
        _conv_direct._plan.cache_clear()
        with _runtime.direct_convolution("always", None, "blocked"):
            return (conv2d(x, w, padding=1),) + conv2d_backward(g, x, w, padding=1)

    whole = run()
    plan = _conv_direct._plan(geo)
    per_sample = 20 * max(plan.stride, plan.grad_stride)
    monkeypatch.setattr(_runtime, "DIRECT_MAX_PADDED", per_sample * (plan.samples_per_part + 2))
    chunked = run()
    assert len(_conv_direct._plan(geo).chunks(13)) > 1
    _conv_direct._plan.cache_clear()
    for a, b in zip(whole, chunked):
        assert a.tobytes() == b.tobytes()


class _NanFilledNumpy:
    """numpy, but np.empty gives arrays full of NaN: scratch that a kernel
    reads before writing would show."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float):
        return np.full(shape, np.nan, dtype)


@pytest.mark.parametrize("family", ["wide", "blocked"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scratch_buffers_need_no_zeroing(family, dtype, monkeypatch):
    """The padded copies write their zeros themselves (no np.zeros pass):
    scratch full of NaN gives bitwise the same results."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 18, 7, 9)).astype(dtype)
    w = rng.standard_normal((20, 18, 3, 2)).astype(dtype)
    g = rng.standard_normal((3, 20, 5, 10)).astype(dtype)
    kwargs = dict(padding=(1, 1), dilation=(2, 1))

    def run():
        with _runtime.direct_convolution("always", None, family):
            return (conv2d(x, w, **kwargs),) + conv2d_backward(g, x, w, **kwargs)

    clean = run()
    monkeypatch.setattr(_conv_direct, "np", _NanFilledNumpy())
    # the scratch the passes keep, made anew (see test_scratch.py)
    monkeypatch.setattr(_scratch, "np", _NanFilledNumpy())
    _scratch._kept.__dict__.clear()
    for a, b in zip(clean, run()):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_three_block_tiles_on_narrow_rows(dtype):
    """Rows of at most 8 pixels take tiles of 3 filter blocks on AVX-512 (40
    filters: 3 float blocks, 5 double blocks as 3 + 2): bitwise as the
    other variants and the wide kernels, and against the float64
    reference."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 11, 8, 7)).astype(dtype)
    w = rng.standard_normal((40, 11, 3, 3)).astype(dtype)
    b = rng.standard_normal(40).astype(dtype)
    g = rng.standard_normal((3, 40, 8, 7)).astype(dtype)
    results = []
    for variant in VARIANTS:
        with _runtime.direct_convolution("always", variant, "blocked"):
            results.append((conv2d(x, w, b, padding=1),) + conv2d_backward(g, x, w, padding=1))
    with _runtime.direct_convolution("always", None, "wide"):
        wide = conv2d(x, w, b, padding=1)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert a.tobytes() == b_.tobytes()
    assert results[0][0].tobytes() == wide.tobytes()
    (out, _, _), (magnitude, _, _) = _reference(x, w, g, (1, 1), (1, 1))
    expected = out + b.astype(np.float64)[:, None, None]
    assert np.all(np.abs(results[0][0] - expected)
                  <= RTOL[dtype] * 4 * (magnitude + np.abs(b)[:, None, None] + 1))


class _ZerosFollowedByNaN:
    """numpy, but each array np.zeros returns is followed in memory by NaN:
    a kernel reading past it would spread NaN into its result."""

    def __init__(self, numpy):
        self._numpy = numpy

    def __getattr__(self, name):
        return getattr(self._numpy, name)

    def zeros(self, shape, dtype=float):
        size = int(self._numpy.prod(shape))
        buffer = self._numpy.full(size + 4096, self._numpy.nan, dtype)
        buffer[:size] = 0
        return buffer[:size].reshape(shape)


@pytest.mark.parametrize("isa", _runtime.available_isas())
@pytest.mark.parametrize("x_shape, w_shape, dilation", [
    ((2, 1, 1, 1), (4, 1, 6, 3), (3, 2)),   # wide padding on a 1x1 plane
    ((2, 1, 1, 1), (8, 1, 2, 5), (2, 2)),
    ((3, 2, 1, 3), (5, 2, 6, 7), (3, 2)),
])
def test_the_wide_weight_gradient_reads_nothing_past_its_planes(monkeypatch, isa, x_shape,
                                                                 w_shape, dilation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    kwargs = dict(padding="same", dilation=dilation)
    g = rng.standard_normal(conv2d(x, w, **kwargs).shape).astype(np.float32)
    with _runtime.direct_convolution("never"):
        expected = conv2d_backward(g, x, w, **kwargs)[1]
    monkeypatch.setattr(_conv_direct, "np", _ZerosFollowedByNaN(np))
    _conv_direct._plan.cache_clear()
    try:
        with _runtime.direct_convolution("always", isa=isa, family="wide"):
            got = conv2d_backward(g, x, w, **kwargs)[1]
    finally:
        _conv_direct._plan.cache_clear()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _bias_gradient_in_order(g):
    """The bias gradient in the order the package promises on every path:
    per filter, per-pixel sums over the samples in order, each from 0, then
    the sum of those over the pixels in order, from 0 (numpy's elementwise
    adds round as the kernels' scalar or vector ones)."""
    n, f = g.shape[:2]
    per_pixel = np.zeros((f, g.shape[2] * g.shape[3]), g.dtype)
    for sample in g.reshape(n, f, -1):
        per_pixel = per_pixel + sample
    total = np.zeros(f, g.dtype)
    for q in range(per_pixel.shape[1]):
        total = total + per_pixel[:, q]
    return total


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_gradient_from_the_weight_pass_is_the_ordered_sum(dtype, monkeypatch):
    """The filter-blocked weight gradient sums the bias gradient in its pass
    over the output gradient: bitwise the documented order (as the separate
    pass of the other paths), for filters that are not whole blocks, planes
    that are not whole blocks of positions, -0.0 and infinities, on every
    variant and thread count and across batch chunks; and near the float64
    sum."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((7, 9, 7, 9)).astype(dtype)
    w = rng.standard_normal((37, 9, 3, 3)).astype(dtype)
    g = (rng.standard_normal((7, 37, 7, 9)) * 10.0 ** rng.integers(-3, 4, (7, 37, 1, 1)))
    g = g.astype(dtype)
    g[:, 3] = -0.0  # sums from +0.0: the bias gradient is +0.0
    g[2, 5, 1, 1], g[4, 6, 0, 2] = np.inf, -np.inf
    expected = _bias_gradient_in_order(g)
    assert np.signbit(expected[3]) == False and np.isnan(expected[5:7]).all() == False
    np.testing.assert_allclose(expected[np.isfinite(expected)],
                               g.astype(np.float64).sum(axis=(0, 2, 3))[np.isfinite(expected)],
                               rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 1e3)

    def bias_gradients():
        found = []
        for variant in VARIANTS:
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                with _runtime.direct_convolution("always", variant, "blocked"):
                    found.append(conv2d_backward(g, x, w, padding=1)[2])
            # the wide kernels sum it as they copy the output gradient
            with _runtime.direct_convolution("always", variant, "wide"):
                found.append(conv2d_backward(g, x, w, padding=1)[2])
        with _runtime.direct_convolution("never"):
            found.append(conv2d_backward(g, x, w, padding=1)[2])
        return found

    try:
        for found in bias_gradients():
            assert found.tobytes() == expected.tobytes()
        monkeypatch.setattr(_runtime, "DIRECT_WEIGHT_RUN", 1)
        _conv_direct._plan.cache_clear()
        geo = geometry(x.shape, w.shape, padding=1)
        plan = _conv_direct._plan(geo)
        monkeypatch.setattr(_runtime, "DIRECT_MAX_PADDED",
                            37 * max(plan.stride, plan.grad_stride) * (plan.samples_per_part + 2))
        _conv_direct._plan.cache_clear()
        assert len(_conv_direct._plan(geo).chunks(7)) > 1
        for found in bias_gradients():
            assert found.tobytes() == expected.tobytes()
    finally:
        cyconv.set_num_threads(None)
        _conv_direct._plan.cache_clear()


@pytest.mark.parametrize("kernel, dilation, stride, padding, height", [
    (3, 1, 1, 1, 8), (3, 2, 1, 2, 9), (5, 1, 2, 2, 11), (3, 1, 1, 2, 4), (4, 1, 3, 3, 10)])
def test_rows_skip_exactly_the_taps_that_read_padding_rows_only(kernel, dilation, stride,
                                                                 padding, height):
    """The filter-blocked forward pass and input gradient leave out, per
    output row, the kernel rows that read padding only (zero products): the
    taps kept (taps in the order of rows of the kernel, then its 2 columns)
    are those whose row of the zero-padded input holds data."""
    g = geometry((1, 1, height, 7), (1, 1, kernel, 2), stride=(stride, 1),
                 padding=(padding, 0), dilation=(dilation, 1))
    plan = _conv_direct._plan(g)
    data = np.pad(np.ones(height), padding) == 1         # rows of the padded input
    for row, (t0, t1) in enumerate(plan.row_taps):
        kept = [i for i in range(kernel) if data[row * stride + i * dilation]]
        assert set(range(t0, t1)) == {2 * i + j for i in kept for j in range(2)}
    if stride == 1:  # the input gradient: the output gradient, padded, flipped taps
        span = dilation * (kernel - 1)
        data = np.pad(np.ones(g.out_height), (span - padding, span - padding)) == 1
        for row, (t0, t1) in enumerate(plan.grad_row_taps):
            kept = [i for i in range(kernel) if data[row + (kernel - 1 - i) * dilation]]
            assert set(range(t0, t1)) == {2 * i + j for i in kept for j in range(2)}


@pytest.mark.parametrize("kernel, dilation, stride, padding, width", [
    (3, 1, 1, 1, 8), (3, 2, 1, 2, 9), (5, 1, 2, 2, 11), (3, 1, 1, 2, 4), (4, 1, 3, 3, 10),
    (4, 1, 1, "same", 7), (3, 1, 1, 1, 1), (7, 1, 1, 3, 2)])
def test_edge_columns_mark_exactly_the_taps_that_read_padding_columns(kernel, dilation, stride,
                                                                      padding, width):
    """At a row's first and last pixel, the filter-blocked forward pass and
    input gradient add the zeros of the taps (rows of the kernel, then its
    columns) whose column of the zero-padded input is padding: exactly
    those, found here from np.pad's layout."""
    g = geometry((1, 1, 5, width), (1, 1, 2, kernel), stride=(1, stride),
                 padding=padding if padding == "same" else (0, padding),
                 dilation=(1, dilation))
    plan = _conv_direct._plan(g)

    def masks(out_cols, data, read):
        return tuple(sum(1 << (i * kernel + j) for i in range(2) for j in range(kernel)
                         if not data[read(col, j)])
                     for col in (0, out_cols - 1))

    data = np.pad(np.ones(width), (g.pad_left, g.pad_right)) == 1  # columns of the padded input
    assert plan.edge_taps == masks(g.out_width, data, lambda c, j: c * stride + j * dilation)
    if stride == 1:  # the input gradient: the output gradient, padded, flipped taps
        span = dilation * (kernel - 1)
        data = np.pad(np.ones(g.out_width), (span - g.pad_left, span - g.pad_right)) == 1
        assert plan.grad_edge_taps == masks(width, data,
                                            lambda c, j: c + (kernel - 1 - j) * dilation)
    assert plan.edge_taps != (0, 0) or g.pad_left == g.pad_right == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 2, 8, 17])
def test_padding_columns_add_the_signed_zeros_of_the_products(dtype, width):
    """At a row's first and last pixel the filter-blocked kernels add the
    zeros w * 0 of the taps that read padding columns, in their place in
    each chain: bitwise the wide kernels' results, which multiply every
    zero.  Products that underflow to -0.0 or +0.0 make chains of signed
    zeros, where the place and sign of each padding zero decide the
    result's sign; rows of one or two pixels take both edges at once."""
    rng = np.random.default_rng(31)
    signs = lambda shape: rng.choice(np.array([-1.0, 1.0], dtype), shape)
    tiny = np.finfo(dtype).tiny  # tiny * tiny underflows to a signed zero
    x = signs((2, 18, 5, width)) * tiny
    w = signs((35, 18, 3, 3)) * tiny
    g = signs((2, 35, 5, width)) * tiny
    found = []
    for variant, family in [(v, "blocked") for v in VARIANTS] + [(None, "wide")]:
        with _runtime.direct_convolution("always", variant, family):
            found.append((conv2d(x, w, padding=1), conv2d_backward(g, x, w, padding=1)[0]))
    out, gx = found[-1]
    for zeros in (out, gx):
        assert np.all(zeros == 0) and np.signbit(zeros).any() and not np.signbit(zeros).all()
    for other_out, other_gx in found[:-1]:
        assert other_out.tobytes() == out.tobytes()
        assert other_gx.tobytes() == gx.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_skipped_padding_rows_change_no_bit(dtype):
    """Adding the signed zeros w * 0 of the kernel rows that read padding
    only, rather than multiplying the padding, is exact for finite weights:
    bitwise the wide kernels' results, which multiply every zero, also with
    -0.0 inputs and negative weights (zero sums must stay +0.0); with a
    non-finite weight nothing is left out, and the NaN that infinity times
    a padding zero makes appears as in the wide kernels."""
    rng = np.random.default_rng(17)
    x = rng.standard_normal((3, 19, 6, 8)).astype(dtype)
    x[1] = -0.0
    w = -np.abs(rng.standard_normal((33, 19, 3, 3))).astype(dtype)
    g = rng.standard_normal((3, 33, 6, 8)).astype(dtype)
    g[2] = -0.0

    def both_families(w):
        found = []
        for variant, family in [(v, "blocked") for v in VARIANTS] + [(None, "wide")]:
            with _runtime.direct_convolution("always", variant, family):
                found.append((conv2d(x, w, padding=1),
                               conv2d_backward(g, x, w, padding=1)[0]))
        return found

    results = both_families(w)
    assert np.all(results[0][0][1] == 0) and not np.signbit(results[0][0][1]).any()
    for out, gx in results[1:]:
        assert out.tobytes() == results[0][0].tobytes()
        assert gx.tobytes() == results[0][1].tobytes()
    w[4, 2, 0, 1] = np.inf
    results = both_families(w)
    assert np.isnan(results[0][0][:, 4, 0]).any()  # inf times a padding row's zero
    for out, _ in results[1:]:
        assert out.tobytes() == results[0][0].tobytes()


@pytest.mark.parametrize("variant", VARIANTS)
def test_filter_blocked_weight_gradient_with_a_non_finite_output_gradient(variant):
    """The weight gradient leaves out the products of padding rows only
    where the output gradient is finite (infinity times a padding zero is
    NaN): an infinite or NaN output gradient on a border row gives the NaN
    and infinities of the zero-padded sums, as the reference, and the same
    bits at 1, 2 and 3 threads."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((5, 6, 8, 7))
    w = rng.standard_normal((20, 6, 3, 3))
    g = rng.standard_normal((5, 20, 8, 7))
    g[1, 3, 0, 2], g[4, 17, 7, 6], g[2, 0, 3, 3] = np.inf, -np.inf, np.nan
    found = []
    try:
        for threads in (1, 2, 3):
            cyconv.set_num_threads(threads)
            with _runtime.direct_convolution("always", variant, "blocked"):
                found.append(conv2d_backward(g, x, w, padding=1)[1])
    finally:
        cyconv.set_num_threads(None)
    for other in found[1:]:
        assert other.tobytes() == found[0].tobytes()
    with np.errstate(invalid="ignore"):
        expected = _reference(x, w, g, (1, 1), (1, 1))[0][2]
    for special in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(special(found[0]), special(expected))
    finite = np.isfinite(expected)
    assert finite.any() and not finite.all()
    np.testing.assert_allclose(found[0][finite], expected[finite], rtol=1e-12, atol=1e-12)


def test_padding_rows_left_out_keep_the_sign_of_underflowed_zeros():
    """Products that underflow to -0.0 make chains that hold -0.0; a
    multiply-add with padding's +0.0 then turns that into +0.0 (for a
    non-negative weight).  The padding rows the filter-blocked kernels leave
    out must do the same: bitwise the wide kernels' results (which multiply
    every padding zero), signs of zero included."""
    rng = np.random.default_rng(29)
    signs = lambda shape: rng.choice(np.array([-1.0, 1.0], np.float32), shape)
    x = (signs((4, 20, 8, 8)) * np.float32(1e-30)).astype(np.float32)
    w = (signs((24, 20, 3, 3)) * np.float32(1e-20)).astype(np.float32)
    g = (signs((4, 24, 8, 8)) * np.float32(1e-30)).astype(np.float32)
    found, weight_gradients = [], []
    for variant, family in [(v, "blocked") for v in VARIANTS] + [(None, "wide")]:
        with _runtime.direct_convolution("always", variant, family):
            gx, gw, _ = conv2d_backward(g, x, w, padding=1)
            found.append((conv2d(x, w, padding=1), gx))
            if family == "blocked":
                weight_gradients.append(gw)
    out, gx = found[-1]
    assert np.all(out == 0) and np.signbit(out).any() and not np.signbit(out).all()
    assert np.signbit(gx).any() and not np.signbit(gx).all()
    for other_out, other_gx in found[:-1]:
        assert other_out.tobytes() == out.tobytes()
        assert other_gx.tobytes() == gx.tobytes()
    # The weight gradient leaves the padding rows' zeros out: its chains are
    # added to running sums from +0, so a zero comes out +0 either way.
    gw = weight_gradients[0]
    assert np.all(gw == 0) and not np.signbit(gw).any()
    for other in weight_gradients[1:]:
        assert other.tobytes() == gw.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_first_layers_sum_each_run_of_rows_apart_then_in_order(dtype, monkeypatch):
    """A filter-blocked weight gradient with few (filter block, channel)
    pairs on planes of several runs of rows sums each run of rows over the
    samples into its own partial, the partials then added in order of the
    rows (so that threads share first layers); others add the runs in order
    of samples.  With x = 1, a 1x1 kernel and one nonzero output gradient
    per run, every chain is exact and only that order decides: 2**60 (run
    0 of sample 0) + 1 (run 1 of sample 0) - 2**60 (run 0 of sample 1) is
    1 by runs of rows, 0 by samples; on every variant and thread count."""
    big = dtype(2.0 ** 60)
    x = np.ones((2, 1, 32, 16), dtype)
    w = np.ones((32, 1, 1, 1), dtype)  # two float blocks, four double ones
    g = np.zeros((2, 32, 32, 16), dtype)  # rows of 16: runs of 16 rows, two a plane
    g[0, :, 3, 5], g[0, :, 20, 1], g[1, :, 7, 2] = big, 1, -big
    assert _runtime.blocked_weight_split(-(-32 // _conv_direct._block(dtype)), 1)

    def weight_gradients():
        found = []
        for variant in VARIANTS:
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                with _runtime.direct_convolution("always", variant, "blocked"):
                    found.append(conv2d_backward(g, x, w)[1:])
        return found

    try:
        for gw, gb in weight_gradients():
            assert np.all(gw == 1) and gw.dtype == dtype
            assert np.all(gb == 1)  # per pixel over the samples: 0 and 1
        monkeypatch.setattr(_runtime, "BLOCKED_WEIGHT_SPLIT_PAIRS", 0)
        for gw, gb in weight_gradients():
            assert np.all(gw == 0) and np.all(gb == 1)
    finally:
        cyconv.set_num_threads(None)


SPLIT_LAYERS = [
    # x shape, w shape, keyword arguments: 3 channels and 33 filters (float
    # blocks of 16 and 1), 2 channels and 20 filters with stride, dilation
    # and uneven padding, 1 channel and 40 filters 5x5
    ((5, 3, 21, 19), (33, 3, 3, 3), dict(padding=1)),
    ((4, 2, 31, 22), (20, 2, 3, 2), dict(padding=(2, 1), stride=(2, 1), dilation=(2, 1))),
    ((3, 1, 17, 18), (40, 1, 5, 5), dict(padding=2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", SPLIT_LAYERS)
def test_weight_gradient_by_runs_of_rows_against_references(dtype, x_shape, w_shape, kwargs,
                                                             monkeypatch):
    """The weight gradient summed by groups of rows (runs of 2 rows here,
    so several groups a plane, the last one shorter): against the float64
    reference, NaN and infinities in x and in the output gradient where the
    reference has them; the bias gradient bitwise the documented order;
    bitwise across 1, 2, 3 threads, every variant and batch chunks."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    geo = geometry(x_shape, w_shape, **kwargs)
    g = rng.standard_normal(geo.output_shape).astype(dtype)
    monkeypatch.setattr(_runtime, "BLOCKED_WEIGHT_RUN", 2 * geo.out_width)
    assert geo.out_height * geo.out_width > _runtime.BLOCKED_WEIGHT_RUN
    blocks = -(-w_shape[0] // _conv_direct._block(dtype))
    assert _runtime.blocked_weight_split(blocks, x_shape[1])

    def run():
        _conv_direct._plan.cache_clear()
        found = []
        for variant in VARIANTS:
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                with _runtime.direct_convolution("always", variant, "blocked"):
                    found.append(conv2d_backward(g, x, w, **kwargs)[1:])
        return found

    try:
        for special in (False, True):
            if special:
                x[1, 0, 0, 0], x[2, -1, 5, 4], x[0, 0, -1, -1] = np.nan, np.inf, -np.inf
                g[0, 3, 1, 2], g[2, -1, -1, 0] = np.inf, np.nan
            found = run()
            for other in found[1:]:
                for a, b in zip(found[0], other):
                    assert a.tobytes() == b.tobytes()
            gw, gb = found[0]
            assert gb.tobytes() == _bias_gradient_in_order(g).tobytes()
            with np.errstate(invalid="ignore"):
                (_, _, expected), (_, _, magnitude) = _reference(
                    x, w, g, _pair(kwargs.get("padding", 0)), _pair(kwargs.get("dilation", 1)),
                    _pair(kwargs.get("stride", 1)))
            for kind in (np.isnan, np.isposinf, np.isneginf):
                np.testing.assert_array_equal(kind(gw), kind(expected))
            assert np.isfinite(expected).all() != special
            finite = np.isfinite(expected)
            assert np.all(np.abs(gw[finite] - expected[finite])
                          <= RTOL[dtype] * 4 * (magnitude[finite] + 1))
        # chunks of the batch carry the partials on: bitwise one call
        monkeypatch.setattr(_runtime, "DIRECT_WEIGHT_RUN", 1)  # parts of 1 sample
        _conv_direct._plan.cache_clear()
        plan = _conv_direct._plan(geo)
        monkeypatch.setattr(_runtime, "DIRECT_MAX_PADDED",
                            w_shape[0] * max(plan.stride, plan.grad_stride) * 3)
        _conv_direct._plan.cache_clear()
        assert len(_conv_direct._plan(geo).chunks(x_shape[0])) > 1
        for other in run():
            for a, b in zip(found[0], other):
                assert a.tobytes() == b.tobytes()
    finally:
        cyconv.set_num_threads(None)
        _conv_direct._plan.cache_clear()


def _pair(value):
    return value if isinstance(value, tuple) else (value, value)


@pytest.mark.parametrize("family", ["blocked", "wide"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, ceil_mode, expanded", [
    ((5, 3, 32, 32), False, True), ((3, 3, 33, 31), False, True),
    ((3, 3, 33, 31), True, False), ((2, 2, 20, 18), False, True),
    ((2, 3, 19, 7), True, False), ((3, 3, 12, 10), False, True),
    ((2, 3, 9, 11), False, True), ((2, 3, 23, 19), False, False)])
def test_weight_gradient_from_the_pooled_gradient(family, variant, dtype, shape, ceil_mode,
                                                  expanded, monkeypatch):
    """The direct weight gradient given a ReLU and 2x2 max pooling's
    gradient unexpanded (a PooledGradient: the wide kernels expand it, the
    filter-blocked ones as they copy it, where its windows tile the plane
    and the rows are summed in groups of an even number of rows or in
    one, else they take its dense form) gives, with its bias gradient, the
    bits it gives on the expanded gradient (which the pooling's backward
    pass makes): NaN, infinities and -0.0 in it, planes whose last row or
    column no window covers (or, under ceil_mode, a cut-short one), at 1,
    2 and 3 threads.  (Planes above 256 pixels are summed in groups of
    256 // width rows: 8 rows of 32 and 31, 14 of 18, 13 of 19.)"""
    from cyconv._pool import PooledGradient, max_pool2d_saving

    made = []
    dense = PooledGradient.dense
    monkeypatch.setattr(PooledGradient, "dense", lambda self: made.append(1) or dense(self))

    rng = np.random.default_rng(37)
    x = rng.standard_normal(shape).astype(dtype)
    # 36 filters: a last block of 4 in both dtypes
    w = rng.standard_normal((36, shape[1], 3, 3)).astype(dtype)
    geo = geometry(x.shape, w.shape, padding=1)
    with _runtime.direct_convolution("always", variant, family):
        y = np.maximum(_conv.conv2d_checked(x, w, np.zeros(36, dtype), geo), 0)
        pooled, saved = max_pool2d_saving(y, 2, ceil_mode=ceil_mode)
        g = rng.standard_normal(pooled.shape).astype(dtype)
        g[0, 1, 0, :4] = [np.nan, np.inf, -np.inf, -0.0]
        g[1, 2] = -0.0
        found = []
        try:
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                for gradient in (PooledGradient(g, saved), PooledGradient(g, saved).dense()):
                    made.clear()
                    _, gw, gb = _conv.conv2d_backward_checked(gradient, x, w, geo, False)
                    found.append(gw.tobytes() + gb.tobytes())
                    if isinstance(gradient, PooledGradient):
                        assert made == ([] if family == "wide" or expanded else [1])
        finally:
            cyconv.set_num_threads(None)
        assert _conv_direct.use(geo, "weight")
        assert _conv_direct._blocked(geo, "weight") == (family == "blocked")
    assert all(other == found[0] for other in found[1:])


_CODES_AT_A_GUARD_PAGE = """
import sys
from cyconv import _conv, _runtime
from cyconv._conv import conv_geometry
from cyconv import _pool
from cyconv._kernels import _pool as pool_kernels
from cyconv._pool import PooledGradient, max_pool2d_saving

# codes, not int64 indices, whatever the processor
if _pool.PAIRS_ISA is None:
    _pool.PAIRS_ISA = pool_kernels.PAIRS_ISAS["portable"]
variant, dtype = sys.argv[1], np.dtype(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 2, 6, 8)).astype(dtype)
w = rng.standard_normal((16, 2, 3, 3)).astype(dtype)
geo = conv_geometry(x.shape, w.shape, 1, 1, 1, 1)  # 6 x 8, pooled 3 x 4
with _runtime.direct_convolution("always", variant, "blocked"):
    y = np.maximum(_conv.conv2d_checked(x, w, np.zeros(16, dtype), geo), 0)
    pooled, saved = max_pool2d_saving(y, 2)
    codes = at_guard_page(saved.codes)
    g = rng.standard_normal(pooled.shape).astype(dtype)
    want = _conv.conv2d_backward_checked(PooledGradient(g, saved).dense(), x, w, geo, False)
    got = _conv.conv2d_backward_checked(PooledGradient(g, saved._replace(codes=codes)), x, w,
                                        geo, False)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got[1:], want[1:]))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux's")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_pooled_expansion_reads_no_code_past_the_array(variant, dtype):
    """The filter-blocked weight gradient's expansion of a pooled gradient
    reads its codes a vector at a time, but no byte past the array, whose
    2x2 slack a copied model's codes lack: codes ending at an unreadable
    page."""
    run_child(_CODES_AT_A_GUARD_PAGE, variant, dtype)


_PLANES_AT_A_GUARD_PAGE = """
import sys
from cyconv import _conv, _conv_direct, _runtime
from cyconv._conv import conv_geometry
import reference

variant, dtype = sys.argv[1], np.dtype(sys.argv[2])
rng = np.random.default_rng(0)
# (x shape, w shape, stride, dilation): no padding, so that the filter-blocked
# forward pass and weight gradient read x where it lies
for x_shape, w_shape, stride, dilation in [
        ((3, 2, 9, 11), (16, 2, 3, 3), 1, 1),
        ((2, 3, 11, 12), (20, 3, 5, 5), 2, 1),
        ((2, 2, 9, 9), (8, 2, 3, 3), 1, 2),
        ((2, 1, 5, 7), (16, 1, 5, 7), 1, 1),     # the kernel covers the plane
        ((2, 4, 3, 5), (16, 4, 1, 1), (1, 2), 1)]:
    x = at_guard_page(rng.standard_normal(x_shape).astype(dtype))
    read_only = x.copy()
    read_only.flags.writeable = False
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    geo = conv_geometry(x.shape, w.shape, stride, 0, dilation, 1)
    assert _conv_direct.input_planes(x, geo, _conv_direct._plan(geo))[1] is False
    assert _conv_direct.input_planes(read_only, geo, _conv_direct._plan(geo))[1] is True
    g = rng.standard_normal(geo.output_shape).astype(dtype)
    with _runtime.direct_convolution("always", variant, "blocked"):
        for relu in (False, True):
            got = _conv.conv2d_checked(x, w, b, geo, relu=relu)
            want = _conv.conv2d_checked(read_only, w, b, geo, relu=relu)
            assert got.tobytes() == want.tobytes()
        got = _conv.conv2d_backward_checked(g, x, w, geo, False)
        want = _conv.conv2d_backward_checked(g, read_only, w, geo, False)
        assert all(a.tobytes() == b_.tobytes() for a, b_ in zip(got[1:], want[1:]))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    pairs = (stride, stride) if isinstance(stride, int) else stride
    expected = reference.conv2d(x64, w64, b.astype(np.float64), pairs, (0,) * 4,
                                (dilation, dilation), 1)
    out = _conv.conv2d_checked(x, w, b, geo)
    assert np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux's")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_unpadded_layers_read_x_in_place_and_nothing_past_it(variant, dtype):
    """Without padding, the filter-blocked forward pass (ReLU or not) and
    weight gradient read x's own planes rather than a padded copy, at
    strides and dilations too: bit for bit what they compute from the copy
    they make of a read-only x, and no byte past x, which ends at an
    unreadable page."""
    run_child(_PLANES_AT_A_GUARD_PAGE, variant, dtype)


def test_kernels_refuse_scratch_planes_short_of_a_thread(monkeypatch):
    """The forward passes and input gradients pad each sample into its
    thread's planes of the scratch: one that holds fewer threads' planes
    (or other channels) is refused with a ValueError, not written past."""
    x = np.ones((2, 3, 4, 4), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    no_bias = np.zeros(0, np.float32)
    offsets = np.arange(9, dtype=np.intp)
    for planes in (np.zeros((1, 3, 64), np.float32), np.zeros((2, 2, 64), np.float32)):
        with pytest.raises(ValueError, match="scratch planes"):
            _kernels.forward(x, w, no_bias, np.zeros((2, 4, 4, 4), np.float32), planes,
                             np.zeros((2, 256), np.float32), offsets, 1, 1, 5, False, 0, 2)
        with pytest.raises(ValueError, match="scratch planes"):
            _kernels.backward_input(np.ones((2, 3, 4, 4), np.float32),
                                    w.transpose(1, 0, 2, 3).copy(),
                                    np.zeros((2, 4, 4, 4), np.float32), planes,
                                    np.zeros((2, 256), np.float32), offsets, 1, 1, 5, 0, 2)
    # the filter-blocked forward pass, its scratch cut short of the threads it is given
    short = _conv_direct.input_planes
    monkeypatch.setattr(_conv_direct, "input_planes",
                        lambda *args: (lambda planes, copy: (planes[:1], copy))(*short(*args)))
    x = np.ones((4, 16, 8, 8), np.float32)
    w = np.ones((16, 16, 3, 3), np.float32)
    with _runtime.direct_convolution("always", family="blocked"):
        with pytest.raises(ValueError, match="scratch planes"):
            _conv_direct.forward(x, w, np.zeros(0, np.float32),
                                 geometry(x.shape, w.shape, padding=1), 2)
