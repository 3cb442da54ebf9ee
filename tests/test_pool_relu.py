"""MaxPooling's gradient through a ReLU in one pass
(``MaxPooling._input_gradient_through_relu``) against the two layers' own
backward passes, bit for bit; the layer and the functional 2x2 paths
against loops over every window, with each variant of the kernels."""

import sys
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cyconv
from cyconv import MaxPooling, ReLU, _pool
from cyconv._kernels import _pool as _kernels_pool
from guard_page import run_child

DTYPES = [np.float32, np.float64]
BITS = {np.float32: np.uint32, np.float64: np.uint64}


@st.composite
def max_pool_configs(draw):
    """(x_shape, layer kwargs): any geometry (overlapping, gaps, padding,
    dilation, ceil_mode), or half the time 2x2 tiles (kernel == stride 2)
    on planes with 1 to 40 windows a row, odd sizes and ceil_mode included."""
    if draw(st.booleans()):
        rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 40))
        x_shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)),
                   2 * rows + draw(st.integers(0, 1)), 2 * cols + draw(st.integers(0, 1)))
        return x_shape, dict(kernel_size=2, ceil_mode=draw(st.booleans()))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kwargs = dict(
        kernel_size=kernel,
        stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        padding=(draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2))),
        dilation=dilation, ceil_mode=draw(st.booleans()),
    )
    sizes = [draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 9))
             for k, d in zip(kernel, dilation)]
    return (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *sizes), kwargs


VARIANTS = ["avx512", "avx2", "portable", "indices"]
# What each variant needs of the processor: the best it runs.
RUNS = {"avx512": ["avx512"], "avx2": ["avx512", "avx2"]}


@pytest.fixture(params=VARIANTS)
def variant(request):
    """Run a test with each way MaxPooling has of finding 2x2 maxima: the
    2x2 kernels' AVX-512 and AVX2 variants (each skipped where the processor
    lacks it), their portable one, and the kernels with int64 indices (for
    processors with neither)."""
    if _kernels_pool.pairs_isa() not in RUNS.get(request.param, [_kernels_pool.pairs_isa()]):
        pytest.skip(f"the processor has no {request.param}")
    isa = None if request.param == "indices" else _kernels_pool.PAIRS_ISAS[request.param]
    with mock.patch.object(_pool, "PAIRS_ISA", isa):
        yield request.param


# The fixture only sets which kernels run, the same for every example.
with_variants = settings(suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])


def output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's rule, as its documentation gives it."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pair(value):
    return tuple(value) if isinstance(value, tuple) else (value, value)


def winners(x, out_shape, kwargs):
    """Yield (plane, (oh, ow), (h, w)) for every window: its first largest
    element in row-major order (np.argmax: the first NaN if any)."""
    kh, kw = pair(kwargs["kernel_size"])
    sh, sw = pair(kwargs.get("stride", (kh, kw)))
    ph, pw = pair(kwargs.get("padding", 0))
    dh, dw = pair(kwargs.get("dilation", 1))
    height, width = x.shape[-2:]
    for plane in np.ndindex(*x.shape[:-2]):
        for oh in range(out_shape[-2]):
            rows = [oh * sh - ph + i * dh for i in range(kh)]
            for ow in range(out_shape[-1]):
                cols = [ow * sw - pw + j * dw for j in range(kw)]
                cells = [(h, w) for h in rows if 0 <= h < height
                         for w in cols if 0 <= w < width]
                yield plane, (oh, ow), cells[int(np.argmax([x[plane + c] for c in cells]))]


def reference_output_shape(x, kwargs):
    kh, kw = pair(kwargs["kernel_size"])
    stride = pair(kwargs.get("stride", (kh, kw)))
    padding, dilation = pair(kwargs.get("padding", 0)), pair(kwargs.get("dilation", 1))
    return x.shape[:-2] + tuple(
        output_size(size, k, s, p, d, kwargs.get("ceil_mode", False))
        for size, k, s, p, d in zip(x.shape[-2:], (kh, kw), stride, padding, dilation))


def reference_forward(x, kwargs):
    """Max pooling by loops: each window's winner, bit for bit."""
    out = np.empty(reference_output_shape(x, kwargs), dtype=x.dtype)
    for plane, position, cell in winners(x, out.shape, kwargs):
        out[plane + position] = x[plane + cell]
    return out


def reference_backward(x, g, kwargs):
    """Max pooling's input gradient by loops: each window's winner collects
    the window's gradient, summed in x's dtype in row-major output order."""
    grad = np.zeros(x.shape, dtype=x.dtype)
    for plane, position, cell in winners(x, g.shape, kwargs):
        with np.errstate(invalid="ignore"):  # inf + -inf
            grad[plane + cell] += g[plane + position]
    return grad


def with_specials(rng, array, values):
    """Put each of ``values`` at about a tenth of the places."""
    for value in values:
        array[rng.random(array.shape) < 0.1] = value
    return array


def assert_bitwise_equal(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    bits = BITS[actual.dtype.type]
    np.testing.assert_array_equal(actual.view(bits), expected.view(bits))


def assert_equal_to_loops(actual, expected):
    """Equal values, zeros of equal sign, NaN where NaN: a NaN that an
    operation makes (inf - inf) has a sign and payload that depend on who
    computes it, numpy's scalars or the processor."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    numbers = ~np.isnan(expected)
    np.testing.assert_array_equal(np.signbit(actual[numbers]), np.signbit(expected[numbers]))


def draw_case(data, config, dtype, batched):
    x_shape, kwargs = config
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if data.draw(st.booleans()):  # ties: few distinct values, zeros among them
        x = rng.integers(-3, 4, x_shape).astype(dtype)
    else:
        x = rng.standard_normal(x_shape).astype(dtype)
    if data.draw(st.booleans()):
        with_specials(rng, x, [np.nan, -np.nan, np.inf, -0.0])
    if not batched:
        x = x[0]
    return x, kwargs, rng


def special_gradient(rng, shape, dtype, specials):
    g = rng.standard_normal(shape).astype(dtype)
    if specials:
        with_specials(rng, g, [np.nan, np.inf, -np.inf, -0.0, 0.0])
    return g


@with_variants
@given(max_pool_configs(), st.sampled_from(DTYPES), st.booleans(), st.booleans(), st.data())
def test_gradient_through_relu_is_relu_backward_of_pool_backward(variant, config, dtype,
                                                                 batched, specials, data):
    x, kwargs, rng = draw_case(data, config, dtype, batched)
    relu, pool = ReLU(), MaxPooling(**kwargs)
    out = pool.forward(relu.forward(x))
    g = special_gradient(rng, out.shape, dtype, specials)
    fused = pool._input_gradient_through_relu(g)
    assert_bitwise_equal(fused, relu.backward(pool.backward(g)))
    # The same without the layers: loops, then ReLU's rule written out.
    y = np.maximum(x, 0)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as it should be
        expected = reference_backward(y, g, kwargs) * (y > 0).astype(dtype)
    assert_equal_to_loops(fused, expected)


@with_variants
@given(max_pool_configs(), st.sampled_from(DTYPES), st.booleans(), st.booleans(), st.data())
def test_layer_matches_loops_also_after_the_fused_gradient(variant, config, dtype, batched,
                                                           specials, data):
    x, kwargs, rng = draw_case(data, config, dtype, batched)
    pool = MaxPooling(**kwargs)
    out = pool.forward(x)
    assert_bitwise_equal(out, reference_forward(x, kwargs))
    g = special_gradient(rng, out.shape, dtype, specials)
    expected = reference_backward(x, g, kwargs)
    before = pool.backward(g)
    assert_equal_to_loops(before, expected)
    pool._input_gradient_through_relu(g)
    assert_bitwise_equal(pool.backward(g), before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, kwargs", [
    ((5, 3, 26, 26), dict(kernel_size=2)),
    ((5, 3, 11, 11), dict(kernel_size=2, ceil_mode=True)),
    ((3, 4, 13, 11), dict(kernel_size=3, stride=(1, 2), padding=1, ceil_mode=True)),
])
def test_gradient_through_relu_bitwise_identical_at_any_thread_count(variant, dtype, x_shape,
                                                                    kwargs):
    rng = np.random.default_rng(4)
    x = with_specials(rng, rng.integers(-3, 4, x_shape).astype(dtype), [np.nan])
    results = []
    try:
        # Inputs this small would otherwise get one thread whatever the count.
        with mock.patch.object(_pool, "MIN_WORK_PER_THREAD", 1):
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                relu, pool = ReLU(), MaxPooling(**kwargs)
                out = pool.forward(relu.forward(x))
                g = special_gradient(np.random.default_rng(5), out.shape, dtype, True)
                results.append((out, pool.backward(g), pool._input_gradient_through_relu(g)))
    finally:
        cyconv.set_num_threads(None)
    for result in results[1:]:
        for actual, expected in zip(result, results[0]):
            assert_bitwise_equal(actual, expected)


def test_gradient_through_relu_checks_like_backward():
    pool = MaxPooling(2)
    with pytest.raises(RuntimeError):
        pool._input_gradient_through_relu(np.ones((1, 1, 1)))
    pool.forward(np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match="output_gradient"):
        pool._input_gradient_through_relu(np.ones((1, 1, 2)))
    with pytest.raises(TypeError):
        pool._input_gradient_through_relu(np.ones((1, 2, 2), dtype=complex))
    pool.needs_input_gradient = False
    assert pool._input_gradient_through_relu(np.ones((1, 2, 2))) is None


def test_empty_batch_gives_empty_gradient():
    relu, pool = ReLU(), MaxPooling(2)
    out = pool.forward(relu.forward(np.ones((0, 2, 4, 4), dtype=np.float32)))
    grad = pool._input_gradient_through_relu(np.ones(out.shape, dtype=np.float32))
    assert grad.shape == (0, 2, 4, 4) and grad.dtype == np.float32


@with_variants
@given(max_pool_configs(), st.sampled_from(DTYPES), st.data())
def test_functional_max_pool_without_indices_matches_loops(variant, config, dtype, data):
    x, kwargs, rng = draw_case(data, config, dtype, True)
    expected = reference_forward(x, kwargs)
    assert_bitwise_equal(cyconv.functional.max_pool2d(x, **kwargs), expected)
    out, indices = cyconv.functional.max_pool2d(x, **kwargs, return_indices=True)
    assert_bitwise_equal(out, expected)
    flat = np.empty(expected.shape, dtype=np.int64)
    for plane, position, (h, w) in winners(x, expected.shape, kwargs):
        flat[plane + position] = h * x.shape[-1] + w
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, flat)
    g = special_gradient(rng, expected.shape, dtype, data.draw(st.booleans()))
    grad = reference_backward(x, g, kwargs)
    assert_equal_to_loops(cyconv.functional.max_pool2d_backward(g, x, **kwargs), grad)
    assert_equal_to_loops(
        cyconv.functional.max_pool2d_backward(g, x, **kwargs, indices=indices), grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [
    (3, 5, 8, 8), (3, 5, 16, 16), (2, 3, 4, 4),  # rows of windows packed 2 or 4 a step
    (3, 5, 9, 8), (3, 5, 16, 17), (2, 3, 32, 64), (1, 1, 2, 2), (2, 2, 3, 3),
])
def test_2x2_planes_of_every_kind_match_loops(variant, dtype, x_shape):
    rng = np.random.default_rng(7)
    for ceil_mode in (False, True):
        kwargs = dict(kernel_size=2, ceil_mode=ceil_mode)
        x = with_specials(rng, rng.integers(-3, 4, x_shape).astype(dtype), [np.nan, -0.0])
        relu, pool = ReLU(), MaxPooling(**kwargs)
        out = pool.forward(relu.forward(x))
        y = np.maximum(x, 0)
        assert_bitwise_equal(out, reference_forward(y, kwargs))
        g = special_gradient(rng, out.shape, dtype, True)
        grad = reference_backward(y, g, kwargs)
        assert_equal_to_loops(pool.backward(g), grad)
        with np.errstate(invalid="ignore"):
            expected = grad * (y > 0).astype(dtype)
        assert_equal_to_loops(pool._input_gradient_through_relu(g), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(4, 8, 26, 26), (4, 16, 11, 11), (2, 3, 16, 16),
                                     (2, 5, 8, 8)])
def test_2x2_layer_and_fused_gradient_match_torch(variant, dtype, x_shape):
    """Without NaN (PyTorch takes a window's last NaN, cyconv its first)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.integers(-3, 4, x_shape).astype(dtype)  # ties and zeros
    g = rng.standard_normal((x_shape[0], x_shape[1], x_shape[2] // 2, x_shape[3] // 2))
    g = g.astype(dtype)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.nn.functional.max_pool2d(torch.relu(xt), 2)
    yt.backward(torch.from_numpy(g))
    relu, pool = ReLU(), MaxPooling(2)
    out = pool.forward(relu.forward(x))
    np.testing.assert_array_equal(out, yt.detach().numpy())
    np.testing.assert_array_equal(pool._input_gradient_through_relu(g), xt.grad.numpy())


_POOL_CODES_AT_A_GUARD_PAGE = """
import sys
from cyconv import _pool
from cyconv._kernels import _pool as kernels

isa, dtype = kernels.PAIRS_ISAS[sys.argv[1]], np.dtype(sys.argv[2])
_pool.PAIRS_ISA = isa  # codes, not int64 indices, whatever the processor
rng = np.random.default_rng(0)
# vector rows, packed planes (a row pair or two a vector), narrow rows,
# odd and cut-short edges
for shape in [(1, 3, 32, 32), (2, 1, 16, 16), (1, 2, 8, 8), (1, 1, 4, 4), (1, 1, 2, 32),
              (1, 1, 26, 26), (1, 2, 11, 11), (1, 1, 6, 34), (1, 1, 9, 17), (3, 1, 2, 2)]:
    x = rng.standard_normal(shape).astype(dtype)
    pooled, saved = _pool.max_pool2d_saving(x, 2)
    saved = saved._replace(isa=isa)
    g = rng.standard_normal(pooled.shape).astype(dtype)
    copied = saved._replace(codes=at_guard_page(saved.codes))
    for relu in (False, True):
        want = _pool.max_pool2d_backward_saved(g, saved, through_relu=relu)
        got = _pool.max_pool2d_backward_saved(g, copied, through_relu=relu)
        assert got.tobytes() == want.tobytes(), shape
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux's")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", ["avx512", "avx2", "portable"])
def test_the_2x2_backward_reads_no_code_past_the_array(variant, dtype):
    """The 2x2 backward kernels read their codes a vector at a time, but no
    byte past the array, whose slack a copied or unpickled model's codes
    lack: codes ending at an unreadable page, each variant the processor
    runs."""
    if _kernels_pool.pairs_isa() not in RUNS.get(variant, [_kernels_pool.pairs_isa()]):
        pytest.skip(f"the processor has no {variant}")
    run_child(_POOL_CODES_AT_A_GUARD_PAGE, variant, dtype)
