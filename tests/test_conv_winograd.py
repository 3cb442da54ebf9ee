"""The Winograd path: which layers take it, its results on the layer shapes
of small CNNs against float64 references, and what it does with values
that are not finite.  (Its agreement with the tutorial's scipy loops, the
adjoint identity, finite differences and across thread counts on drawn
shapes is in test_conv.py, algorithms "winograd" and "winograd-chunked".)"""

import contextlib
from unittest import mock

import numpy as np
import pytest

import cyconv
from cyconv import _conv, _conv_pool, _conv_winograd, _runtime
from cyconv._conv import conv_geometry
from cyconv.functional import conv2d, conv2d_backward
from reference import RTOL, assert_close
import reference


def geometry(x_shape, w_shape, stride=1, padding=1, dilation=1, groups=1):
    return conv_geometry(x_shape, w_shape, stride, padding, dilation, groups)


# The forward products (and the input gradient's) by BLAS, or by the
# blocked direct kernels' variant for each instruction set this processor
# runs.
PRODUCTS = ["blas"] + ["blocked-" + isa for isa in _runtime.available_isas()]


@contextlib.contextmanager
def products(kind):
    """Inside the block, the Winograd path always, its products by ``kind``."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_runtime.winograd_convolution("always"))
        if kind == "blas":
            stack.enter_context(mock.patch.object(_runtime, "WINOGRAD_BLOCKED_PRODUCT_ISAS", ()))
        else:
            isa = kind.split("-")[1]
            stack.enter_context(mock.patch.object(_runtime, "WINOGRAD_BLOCKED_PRODUCT_ISAS",
                                                  (isa,)))
            stack.enter_context(_runtime.direct_convolution("auto", isa=isa))
        yield


def test_which_layers_it_supports():
    """3x3, stride 1, no dilation, one group, padding at most 2, a batch."""
    assert _conv_winograd.supports(geometry((64, 32, 16, 16), (64, 32, 3, 3)))
    assert _conv_winograd.supports(geometry((1, 1, 1, 1), (1, 1, 3, 3), padding=2))
    assert _conv_winograd.supports(geometry((2, 3, 5, 4), (2, 3, 3, 3), padding=0))
    assert not _conv_winograd.supports(geometry((64, 32, 16, 16), (64, 32, 5, 5)))
    assert not _conv_winograd.supports(geometry((64, 32, 16, 16), (64, 32, 3, 3), stride=2))
    assert not _conv_winograd.supports(geometry((64, 32, 16, 16), (64, 32, 3, 3), dilation=2))
    assert not _conv_winograd.supports(geometry((64, 32, 16, 16), (64, 16, 3, 3), groups=2))
    assert not _conv_winograd.supports(geometry((64, 32, 16, 16), (64, 32, 3, 3), padding=3))
    assert not _conv_winograd.supports(geometry((0, 32, 16, 16), (64, 32, 3, 3)))


OPERATIONS = ("forward", "input", "weight")


def test_which_layers_the_rule_gives_it():
    """By the measured rule of the variant running (WINOGRAD_MIN_SIZES):
    on AVX2 and the portable variant at least 16 channels and filters and
    32 tiles, for the three operations; on AVX-512 from 16 channels and
    1024 tiles or 32 channels and 256 tiles, and for the forward pass and
    input gradient from 64 channels and 64 tiles too.  Never while a test
    forces the direct path one way or the other."""
    c2 = geometry((64, 32, 16, 16), (64, 32, 3, 3))            # 1024 tiles
    w3 = geometry((8, 64, 56, 56), (64, 64, 3, 3))
    c3 = geometry((64, 64, 8, 8), (128, 64, 3, 3))             # 256 tiles
    c3_half = geometry((32, 64, 8, 8), (128, 64, 3, 3))        # 128 tiles
    c3_quarter = geometry((16, 64, 8, 8), (128, 64, 3, 3))     # 64 tiles
    c3_eighth = geometry((8, 64, 8, 8), (128, 64, 3, 3))       # 32 tiles
    narrow = geometry((64, 16, 16, 16), (32, 16, 3, 3))        # 16 channels, 1024 tiles
    narrow_half = geometry((32, 16, 16, 16), (32, 16, 3, 3))   # ...512 tiles
    c2_quarter = geometry((8, 32, 16, 16), (64, 32, 3, 3))     # 32 channels, 128 tiles
    small = (geometry((64, 3, 32, 32), (32, 3, 3, 3)),         # a first layer
             geometry((64, 8, 16, 16), (16, 8, 3, 3)),         # few channels
             geometry((64, 32, 16, 16), (8, 32, 3, 3)),        # few filters
             geometry((1, 32, 16, 16), (64, 32, 3, 3)))        # a batch of 16 tiles
    expected = {
        "avx512": [(layer, OPERATIONS) for layer in (c2, w3, c3, narrow)]
        + [(layer, ("forward", "input")) for layer in (c3_half, c3_quarter)]
        + [(layer, ()) for layer in (c3_eighth, narrow_half, c2_quarter)],
        "avx2": [(layer, OPERATIONS) for layer in (c2, w3, c3, c3_half, c3_quarter, c3_eighth,
                                                  narrow, narrow_half, c2_quarter)],
    }
    expected["portable"] = expected["avx2"]
    for isa in _runtime.available_isas():
        with _runtime.direct_convolution("auto", isa=isa):
            for layer, operations in expected[isa] + [(layer, ()) for layer in small]:
                assert tuple(op for op in OPERATIONS if _conv_winograd.use(layer, op)) \
                    == operations, (isa, layer)
    for mode in ("always", "never"):
        with _runtime.direct_convolution(mode):
            assert not _conv_winograd.use(c2, "forward")
    with _runtime.winograd_convolution("always"):
        assert _conv_winograd.use(c2, "weight")
        assert not _conv_winograd.use(geometry((64, 32, 16, 16), (64, 32, 5, 5)), "forward")
    with _runtime.winograd_convolution("never"):
        assert not _conv_winograd.use(c2, "forward")
    with pytest.raises(ValueError, match="mode must be"):
        with _runtime.winograd_convolution("sometimes"):
            pass


def test_set_winograd_false_gives_every_layer_the_direct_kernels_rounding():
    """cyconv.set_winograd(False) takes every layer off the Winograd path
    (also a layer whose route a call already cached), so that float32
    results round as the direct kernels' do: within 1e-6 of the largest
    output's magnitude of a float64 reference, where Winograd's lie
    around 1e-5; True gives the rule back."""
    rng = np.random.default_rng(11)
    # 256 tiles, which every variant's rule gives Winograd
    x = rng.standard_normal((16, 32, 16, 16)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    g = rng.standard_normal((16, 64, 16, 16)).astype(np.float32)
    c2 = geometry(x.shape, w.shape)
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, (1, 1),
                                (1,) * 4, (1, 1), 1)
    expected_gx, expected_gw, _ = reference.conv2d_backward(
        g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), (1, 1), (1,) * 4,
        (1, 1), 1)
    assert cyconv.get_winograd() is True
    assert all(_conv_winograd.use(c2, op) for op in ("forward", "input", "weight"))
    by_winograd = conv2d(x, w, padding=1)
    try:
        cyconv.set_winograd(False)
        assert cyconv.get_winograd() is False
        assert not any(_conv_winograd.use(c2, op) for op in ("forward", "input", "weight"))
        assert cyconv.show_config(mode="dicts")["winograd convolution"].startswith("off")
        out = conv2d(x, w, padding=1)
        gx, gw, _ = conv2d_backward(g, x, w, padding=1)
        for got, want in ((out, expected), (gx, expected_gx), (gw, expected_gw)):
            assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
        assert not np.array_equal(out, by_winograd)
        # a numpy bool is a bool; anything else is refused, the setting kept
        cyconv.set_winograd(np.True_)
        assert _conv_winograd.use(c2, "forward")
        for bad in ("no", 0, None):
            with pytest.raises(TypeError, match="allowed must be True or False"):
                cyconv.set_winograd(bad)
        assert cyconv.get_winograd() is True
    finally:
        cyconv.set_winograd(True)
    np.testing.assert_array_equal(conv2d(x, w, padding=1), by_winograd)


@pytest.mark.parametrize("kind", PRODUCTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [
    ((2, 32, 16, 16), (8, 32, 3, 3), 1),     # planes of the CIFAR-like net's second layer
    ((3, 16, 8, 8), (12, 16, 3, 3), 1),      # ...and third
    ((3, 5, 11, 9), (7, 5, 3, 3), 0),        # odd planes, no padding
    ((2, 4, 7, 5), (6, 4, 3, 3), 2),
    ((2, 37, 9, 30), (19, 37, 3, 3), 1),     # 37 channels (no divisor), 8 tiles a row
    ((5, 34, 12, 12), (40, 34, 3, 3), 1),    # chunks of 18 tiles, over samples
])
def test_layer_shapes_match_float64_references(shape, dtype, kind):
    x_shape, w_shape, padding = shape
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    sides = (padding,) * 4
    with products(kind):
        assert _conv_winograd.use(geometry(x_shape, w_shape, padding=padding), "forward")
        out = conv2d(x, w, b, padding=padding)
        g = rng.standard_normal(out.shape).astype(dtype)
        gx, gw, gb = conv2d_backward(g, x, w, padding=padding)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    assert_close(out, reference.conv2d(x64, w64, b.astype(np.float64), (1, 1), sides, (1, 1), 1),
                 reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b.astype(np.float64)),
                                  (1, 1), sides, (1, 1), 1), dtype)
    expected_gx, expected_gw, _ = reference.conv2d_backward(g64, x64, w64, (1, 1), sides,
                                                            (1, 1), 1)
    magnitude_gx, magnitude_gw, _ = reference.conv2d_backward(np.abs(g64), np.abs(x64),
                                                           np.abs(w64), (1, 1), sides, (1, 1), 1)
    assert_close(gx, expected_gx, magnitude_gx, dtype)
    assert_close(gw, expected_gw, magnitude_gw, dtype)
    np.testing.assert_allclose(gb, g64.sum(axis=(0, 2, 3)), rtol=RTOL[dtype] * 10)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("channels", [32, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_products_are_the_same_bits_on_every_variant(dtype, channels, chunked):
    """Each value of a blocked product is one chain of fused multiply-adds
    in the same order on every variant, and each weight-gradient partial
    the chunks' products added in order (the transforms are additions):
    the three operations agree bit for bit across the instruction sets and
    thread counts, and with the float64 references.  Channels in whole
    blocks (32) take blocked weight-gradient products, others BLAS's, whose
    weight gradients agree bit for bit within one layout of U (see below);
    ``chunked``: a row of tiles a chunk, several chunks a part."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, channels, 10, 13)).astype(dtype)
    w = rng.standard_normal((35, channels, 3, 3)).astype(dtype)
    b = rng.standard_normal(35).astype(dtype)
    g = rng.standard_normal((3, 35, 10, 13)).astype(dtype)
    results = {}
    with contextlib.ExitStack() as stack:
        stack.callback(cyconv.set_num_threads, None)
        stack.enter_context(mock.patch.object(_conv, "MIN_MACS_PER_THREAD", 1))
        if chunked:
            stack.enter_context(mock.patch.object(_runtime, "WINOGRAD_TILES", 1))
            stack.enter_context(mock.patch.object(_runtime, "WINOGRAD_WEIGHT_TILES", 1))
            stack.enter_context(mock.patch.object(_runtime, "WINOGRAD_MIN_PART_TILES", 1))
            stack.enter_context(mock.patch.object(_runtime, "DIRECT_WEIGHT_PARTS", 2))
        for kind in PRODUCTS[1:]:
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                with products(kind):
                    results[kind, threads] = ((conv2d(x, w, b, padding=1),)
                                              + conv2d_backward(g, x, w, padding=1))
    first = results[PRODUCTS[1], 1]
    blas_weight_gradient = channels % (64 // np.dtype(dtype).itemsize) != 0
    first_of_layout = {}
    for (kind, _), other in results.items():
        for i in (0, 1, 3):  # output, input gradient, bias gradient
            np.testing.assert_array_equal(first[i], other[i])
        # BLAS's weight-gradient products see U planar or tile-major, as
        # the variant chooses; BLAS promises no order of sums across
        # layouts (OpenBLAS's SkylakeX kernels differ there), so those
        # agree within a layout.
        layout = (kind.split("-")[1] in _runtime.WINOGRAD_TILE_MAJOR_ISAS
                  if blas_weight_gradient else None)
        np.testing.assert_array_equal(first_of_layout.setdefault(layout, other[2]), other[2])
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    sides = (1, 1, 1, 1)
    assert_close(first[0], reference.conv2d(x64, w64, b.astype(np.float64), (1, 1), sides,
                                            (1, 1), 1),
                 reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b.astype(np.float64)),
                                  (1, 1), sides, (1, 1), 1), dtype)
    expected = reference.conv2d_backward(g64, x64, w64, (1, 1), sides, (1, 1), 1)
    magnitude = reference.conv2d_backward(np.abs(g64), np.abs(x64), np.abs(w64), (1, 1), sides,
                                          (1, 1), 1)
    assert_close(first[1], expected[0], magnitude[0], dtype)
    for weight_gradient in first_of_layout.values():
        assert_close(weight_gradient, expected[1], magnitude[1], dtype)


@pytest.mark.parametrize("where", ["x", "weight", "grad"])
def test_values_that_are_not_finite_give_the_other_paths_results(where):
    """An infinity in a window becomes NaN in the transforms (inf - inf)
    where the direct sum keeps it: the kernels notice and the other paths
    compute the results that read it, bit for bit theirs."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 32, 9, 10))
    w = rng.standard_normal((33, 32, 3, 3))
    g = rng.standard_normal((4, 33, 9, 10))
    {"x": x, "weight": w, "grad": g}[where][1, 2, 2, 1] = np.inf
    results = {}
    for mode in ("always", "never"):
        with _runtime.winograd_convolution(mode):
            results[mode] = (conv2d(x, w, padding=1),) + conv2d_backward(g, x, w, padding=1)
    # (output, input gradient, weight gradient, bias gradient)
    readers = {"x": (0, 2, 3), "weight": (0, 1, 3), "grad": (1, 2, 3)}[where]
    assert all(np.isinf(results["never"][i]).any() for i in readers[:2])
    for i in readers:
        np.testing.assert_array_equal(results["always"][i], results["never"][i])


def test_a_layer_on_it_is_not_fused_with_its_pooling():
    """The fused convolution, ReLU and pooling computes the direct path's
    values: a layer whose forward pass takes the Winograd path runs the
    three one after the other."""
    c2 = geometry((64, 32, 16, 16), (64, 32, 3, 3))
    assert _conv_winograd.use(c2, "forward")
    assert _conv_pool.pool_geometry(c2, (2, 2), (2, 2), (0, 0), False, (1, 1)) is None
    with _runtime.winograd_convolution("never"):
        assert _conv_pool.pool_geometry(c2, (2, 2), (2, 2), (0, 0), False, (1, 1)) is not None


@pytest.mark.parametrize("width", [7, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_in_the_store_is_np_maximum(dtype, width):
    """The layers' fast path, conv2d_checked(..., relu=True): max(., 0) in
    the output transform's store, bit for bit np.maximum after the pass
    (zeros of either sign become +0.0); rows of 33 columns take the store's
    vector transposes, 4 tiles at a time, and its one-column tail."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 32, 10, width)).astype(dtype)
    w = rng.standard_normal((33, 32, 3, 3)).astype(dtype)
    b = rng.standard_normal(33).astype(dtype)
    g = geometry(x.shape, w.shape)
    with _runtime.winograd_convolution("always"):
        plain = _conv.conv2d_checked(x, w, b, g)
        fused = _conv.conv2d_checked(x, w, b, g, relu=True)
    assert (plain < 0).any() and (plain > 0).any()
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))
    assert not np.signbit(fused).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_finite_values_give_the_other_paths_results(dtype):
    """A window of huge finite values whose transform overflows (3e38 -
    -3e38 in float32), against a zero weight where it lands, would give NaN
    where the direct sum gives 0: values above 2^44 in magnitude (2^492 in
    float64) send the call to the other kernels, bit for bit theirs."""
    huge = np.finfo(dtype).max * 0.9
    x = np.zeros((2, 32, 6, 6), dtype)
    x[0, 0, 0, 0], x[0, 0, 0, 2] = huge, -huge
    w = np.zeros((32, 32, 3, 3), dtype)
    w[:, :, 1, 1] = 1
    g = np.zeros((2, 32, 4, 4), dtype)
    g[:, :, 1, 1] = 1
    results = {}
    for mode in ("always", "never"):
        with _runtime.winograd_convolution(mode):
            results[mode] = (conv2d(x, w, padding=0),) + conv2d_backward(g, x, w, padding=0)
    assert not np.isnan(results["never"][0]).any()
    # (output, input gradient, weight gradient, bias gradient): those that
    # read x bit for bit the other kernels'; the input gradient, which does
    # not, Winograd's own (G's sixths round)
    for i in (0, 2, 3):
        np.testing.assert_array_equal(results["always"][i], results["never"][i])
    np.testing.assert_allclose(results["always"][1], results["never"][1], rtol=1e-6)
    # the limit itself is in range, the next power of two is not
    limit = 2.0 ** (44 if dtype == np.float32 else 492)
    geo = geometry(x.shape, w.shape, padding=0)
    for value, in_range in ((limit, True), (-limit, True), (2 * limit, False)):
        x[0, 0, 0, 0], x[0, 0, 0, 2] = value, 0
        out = _conv_winograd.forward(x, w, np.empty(0, dtype), geo, 1)
        assert (out is not None) == in_range


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gradient_transform_checks_every_value_it_reads(dtype):
    """The output gradient's transform splits rows of 4 tiles and more by
    vector transposes and the rest one value at a time, into 16 planes by
    row and column mod 4, then checks every value split: a value out of
    range anywhere (every row and column of a first and a last plane)
    sends the weight gradient to the other kernels."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 32, 9, 18)).astype(dtype)
    g = rng.standard_normal((2, 33, 9, 18)).astype(dtype)
    geo = geometry(x.shape, (33, 32, 3, 3), padding=1)
    assert _conv_winograd.grad_weight(g, x, geo, 1) is not None
    huge = 4.0 * 2.0 ** (44 if dtype == np.float32 else 492)
    for sample, plane in ((0, 0), (1, 32)):
        for row in range(g.shape[2]):
            for col in range(g.shape[3]):
                for bad in (np.nan, -huge):
                    g[sample, plane, row, col] = bad
                    assert _conv_winograd.grad_weight(g, x, geo, 1) is None, (row, col)
                g[sample, plane, row, col] = 0
