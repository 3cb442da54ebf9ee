"""Convolution, ReLU and 2x2 max pooling in one pass (cyconv/_conv_pool.py):
the pooled output and the codes MaxPooling's backward pass reads, against
loops over every window and PyTorch, and bit for bit against the three
layers one by one, with every variant of the kernels and 1 to 3 threads;
and a model's Convolution -> ReLU -> MaxPooling, which runs as that pass
where it may, against the same model unfused and PyTorch."""

import copy
import pickle
import platform
from unittest import mock

import numpy as np
import pytest

import cyconv
from cyconv import (Convolution, Dense, Flatten, MaxPooling, ReLU, Sequential, _conv,
                    _conv_pool, _pool, _runtime)
from cyconv._conv import conv_geometry
from cyconv._kernels import _pool as _kernels_pool

DTYPES = [np.float32, np.float64]
CONV_VARIANTS = _runtime.available_isas()
# The 2x2 kernels' vector variants this processor runs (the pooling's
# backward pass follows the one the forward pass names).
POOL_VARIANTS = [name for name in ("avx2", "avx512")
                 if name in _runtime.available_isas()]
# Without them (processors without AVX2: arm64, say) the pooling takes the
# int64-index kernels and nothing is fused (see the tests at the end).
needs_the_fused_pass = pytest.mark.skipif(
    _pool.PAIRS_ISA is None or not POOL_VARIANTS,
    reason="the fused pass needs the 2x2 pooling's AVX2 or AVX-512 kernels, which this "
           "processor does not run")

# (x shape, filters, kernel, padding, dilation): LeNet's and the CIFAR-like
# network's first layers (smaller batches), odd outputs whose last row or
# column no window covers, padding, dilation, a 1x1 kernel, one window.
GEOMETRIES = [
    ((5, 1, 28, 28), 8, 3, 0, 1),
    ((3, 3, 32, 32), 32, 3, 1, 1),
    ((4, 2, 9, 12), 5, 3, 1, 1),
    ((2, 3, 11, 10), 6, (3, 2), (0, 1), 2),
    ((3, 4, 7, 7), 3, 1, 0, 1),
    ((1, 2, 4, 5), 7, 3, 0, 1),
    ((2, 1, 40, 70), 4, 5, 2, 1),
    # Small planes, many filters: the filter-blocked forward pass, which
    # pools in its store: a block and a part of one, 3 blocks a tile (8x8
    # float32), odd planes, dilation.
    ((3, 8, 8, 8), 20, 3, 1, 1),
    ((2, 6, 8, 8), 48, 3, 1, 1),
    ((2, 5, 7, 9), 17, 3, 1, 1),
    ((2, 4, 9, 8), 24, (3, 2), (2, 1), 2),
]


def _layers_alone(x, weight, bias, geometry):
    """Convolution with its ReLU, then 2x2 max pooling, as the layers run
    them: (pooled, saved maxima)."""
    conv = _conv.conv2d_checked(x, weight, bias, geometry, relu=True)
    return _pool.max_pool2d_saving(conv, 2)


def _fused(x, weight, bias, geometry, ceil_mode=False):
    pooled = _conv_pool.pool_geometry(geometry, (2, 2), (2, 2), (0, 0), ceil_mode, (1, 1))
    assert pooled is not None
    return _conv_pool.forward(x, weight, bias, geometry, pooled)


def _problem(rng, x_shape, filters, kernel, padding, dilation, dtype, integers=False):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    draw = ((lambda shape: rng.integers(-3, 4, shape)) if integers
            else rng.standard_normal)
    x = draw(x_shape).astype(dtype)
    weight = draw((filters, x_shape[1], kh, kw)).astype(dtype)
    bias = draw(filters).astype(dtype)
    return x, weight, bias, conv_geometry(x.shape, weight.shape, 1, padding, dilation, 1)


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _with_every_variant(threads, check, families=(None,)):
    """Call ``check()`` with each variant of the direct convolution's and
    the 2x2 pooling's kernels (and each of ``families`` for the
    convolution alone: None is the rule's), at ``threads`` threads."""
    assert POOL_VARIANTS and CONV_VARIANTS  # else nothing would be checked
    previous = cyconv.get_num_threads()
    cyconv.set_num_threads(threads)
    try:
        for pool_isa in POOL_VARIANTS:
            with mock.patch.object(_pool, "PAIRS_ISA", _kernels_pool.PAIRS_ISAS[pool_isa]):
                for conv_isa in CONV_VARIANTS:
                    for family in families:
                        with _runtime.direct_convolution("always", conv_isa, family):
                            check()
    finally:
        cyconv.set_num_threads(previous)


def _reference(x, weight, bias, padding, dilation):
    """Loops over windows: the convolution (exact for small integers), its
    bias, max(., 0), then each 2x2 window's first largest element in
    row-major order, NaN above everything (np.argmax's own rule)."""
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = h + 2 * ph - dh * (kh - 1)
    wo = w + 2 * pw - dw * (kw - 1)
    conv = np.zeros((n, f, ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh:i * dh + ho, j * dw:j * dw + wo]
            conv += np.einsum("nchw,fc->nfhw", patch, weight[:, :, i, j].astype(np.float64))
    relu = np.maximum((conv + bias[:, None, None]).astype(x.dtype), 0)
    rows, cols = ho // 2, wo // 2
    windows = relu[:, :, :2 * rows, :2 * cols].reshape(n, f, rows, 2, cols, 2)
    windows = windows.transpose(0, 1, 2, 4, 3, 5).reshape(n, f, rows, cols, 4)
    codes = np.argmax(windows, axis=-1)
    pooled = np.take_along_axis(windows, codes[..., None], axis=-1)[..., 0]
    return pooled, codes.astype(np.uint8)


@needs_the_fused_pass
@pytest.mark.parametrize("case", GEOMETRIES)
def test_each_geometry_takes_the_family_it_is_here_for(monkeypatch, case):
    # The last four (small planes, many filters) pool in the filter-blocked
    # store, the others in the kernels by output positions: were the rule
    # to change, the tests above would check the other family only.
    # (The fused pass of a geometry asks for the filter-blocked forward
    # pass when it is first made: the passes kept are dropped.)
    calls = []
    blocked = _conv_pool._conv_direct.forward_pass
    monkeypatch.setattr(_conv_pool._conv_direct, "forward_pass",
                        lambda *args: calls.append(1) or blocked(*args))
    x, weight, bias, geometry = _problem(np.random.default_rng(0), *case, np.float32)
    for conv_isa in CONV_VARIANTS:
        calls.clear()
        _conv_pool._conv_direct._plan.cache_clear()
        with _runtime.direct_convolution("always", conv_isa):
            _fused(x, weight, bias, geometry)
        assert calls == ([1] if case in GEOMETRIES[7:] else [])


@needs_the_fused_pass
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GEOMETRIES)
def test_the_fused_pass_against_loops_over_every_window(case, dtype):
    # Small integers: every sum is exact, and windows hold many ties.
    rng = np.random.default_rng(0)
    x, weight, bias, geometry = _problem(rng, *case, dtype, integers=True)
    want, want_codes = _reference(x, weight, bias, case[3], case[4])
    for conv_isa in CONV_VARIANTS:
        with _runtime.direct_convolution("always", conv_isa):
            got, saved = _fused(x, weight, bias, geometry)
        np.testing.assert_array_equal(_bits(got), _bits(want))
        np.testing.assert_array_equal(saved.codes.reshape(want_codes.shape), want_codes)


@needs_the_fused_pass
@pytest.mark.parametrize("case", GEOMETRIES[:4])
def test_the_fused_pass_against_pytorch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, weight, bias, geometry = _problem(rng, *case, np.float64)
    got, saved = _fused(x, weight, bias, geometry)
    padding, dilation = case[3], case[4]
    conv = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                      torch.from_numpy(bias), padding=padding,
                                      dilation=dilation)
    want, indices = torch.nn.functional.max_pool2d(torch.relu(conv), 2, return_indices=True)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)
    # Flat indices into each plane, as PyTorch gives them, to codes 2 i + j.
    width = conv.shape[-1]
    rows, cols = np.indices(want.shape[-2:])
    indices = indices.numpy()
    codes = 2 * (indices // width - 2 * rows) + indices % width - 2 * cols
    # ReLU's zeros tie: PyTorch also takes a window's first largest element.
    np.testing.assert_array_equal(saved.codes.reshape(codes.shape), codes)


@needs_the_fused_pass
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GEOMETRIES)
def test_the_fused_pass_gives_the_layers_bits_with_every_variant(case, dtype, threads):
    rng = np.random.default_rng(2)
    x, weight, bias, geometry = _problem(rng, *case, dtype)
    # Non-finite values spread through the sums (NaNs of both signs: inf -
    # inf gives x86's negative NaN); ReLU keeps NaN.
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    x[0, -1, -1, :2] = [-np.nan, np.inf]
    x[-1, -1, -1, -1] = np.nan
    # NaN biases, of both signs, meeting those NaN sums: the sum's NaN wins,
    # as in the convolution's own store.
    nan_bias = bias.copy()
    nan_bias[::2] = np.nan
    nan_bias[1::3] = -np.nan

    def check():
        for b in (bias, nan_bias, np.empty(0, dtype)):
            want, want_saved = _layers_alone(x, weight, b, geometry)
            with _runtime.direct_convolution("always", _runtime.isa()):  # the rule's family
                got, saved = _fused(x, weight, b, geometry)
            np.testing.assert_array_equal(_bits(got), _bits(want))
            np.testing.assert_array_equal(saved.codes, want_saved.codes)
            assert saved.geometry == want_saved.geometry
            assert saved.isa == want_saved.isa
            assert saved.indices is None and saved.pooled is got

    # The layers alone on either family of direct kernels: the same sums.
    _with_every_variant(threads, check, families=(None, "blocked"))


@needs_the_fused_pass
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [((1, 1, 28, 28), 8, 3, 0, 1), ((1, 3, 24, 30), 12, 3, 1, 1),
                                  ((1, 3, 11, 10), 6, (3, 2), (0, 1), 2), GEOMETRIES[5]])
def test_threads_that_split_a_samples_filters_give_the_same_bits(monkeypatch, case, dtype,
                                                                 threads):
    # With fewer samples than threads, each sample's blocks of filters are
    # split between threads: as many threads as the work allows (the
    # threshold lowered), so that they really split here.
    monkeypatch.setattr(_conv, "MIN_MACS_PER_THREAD", 1)
    runs = []
    kernel = _conv_pool._conv_pool.forward

    def spy(*args):
        runs.append(args[-3])  # tasks per sample
        return kernel(*args)
    monkeypatch.setattr(_conv_pool._conv_pool, "forward", spy)
    # The passes kept hold the kernel they were made with: made anew here.
    _conv_pool._conv_direct._plan.cache_clear()
    rng = np.random.default_rng(15)
    x, weight, bias, geometry = _problem(rng, *case, dtype)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]

    def check():
        for b in (bias, np.empty(0, dtype)):
            want, want_saved = _layers_alone(x, weight, b, geometry)
            got, saved = _fused(x, weight, b, geometry)
            np.testing.assert_array_equal(_bits(got), _bits(want))
            np.testing.assert_array_equal(saved.codes, want_saved.codes)

    _with_every_variant(threads, check)
    _conv_pool._conv_direct._plan.cache_clear()  # the passes holding the spy
    # (A build without OpenMP runs one thread: nothing to split.)
    assert runs and (min(runs) > 1 or not cyconv._threads.openmp_enabled())


@needs_the_fused_pass
@pytest.mark.parametrize("dtype", DTYPES)
def test_relus_zeros_are_positive_and_tie_to_the_first_element(dtype):
    # Products too small for the dtype round to -0.0, so the convolution's
    # values are -0.0, with a -0.0 bias or none (+0.0 and a +0.0 bias give
    # +0.0); ReLU makes them all +0.0, whose windows go to their first element.
    tiny = np.finfo(dtype).tiny
    x = np.full((2, 1, 6, 6), np.sqrt(tiny) * 2.0 ** -40, dtype)
    weight = np.full((3, 1, 1, 1), -np.sqrt(tiny) * 2.0 ** -40, dtype)
    geometry = conv_geometry(x.shape, weight.shape, 1, 0, 1, 1)

    def check():
        for bias in (np.array([-0.0, 0.0, -0.0], dtype), np.empty(0, dtype)):
            conv = _conv.conv2d_checked(x, weight, bias, geometry)
            assert (conv == 0).all() and np.signbit(conv[:, ::2]).all()
            got, saved = _fused(x, weight, bias, geometry)
            assert not np.signbit(got).any() and not got.any()
            assert not saved.codes.any()

    _with_every_variant(1, check)


@needs_the_fused_pass
def test_ceil_mode_is_fused_only_where_it_cuts_no_window_short():
    x = np.ones((1, 1, 6, 7), np.float32)
    with _runtime.direct_convolution("always"):
        even = conv_geometry(x.shape, (2, 1, 3, 2), 1, 0, 1, 1)     # 4 x 6
        odd = conv_geometry(x.shape, (2, 1, 3, 3), 1, 0, 1, 1)      # 4 x 5
        windows = (2, 2), (2, 2), (0, 0)
        assert _conv_pool.pool_geometry(even, *windows, True, (1, 1)) is not None
        assert _conv_pool.pool_geometry(odd, *windows, True, (1, 1)) is None
        assert _conv_pool.pool_geometry(odd, *windows, False, (1, 1)) is not None
        for other in [((3, 3), (2, 2), (0, 0)), ((2, 2), (1, 1), (0, 0)),
                      ((2, 2), (2, 2), (1, 1))]:
            assert _conv_pool.pool_geometry(even, *other, False, (1, 1)) is None
        assert _conv_pool.pool_geometry(even, *windows, False, (2, 2)) is None
    with _runtime.direct_convolution("never"):
        assert _conv_pool.pool_geometry(even, *windows, False, (1, 1)) is None
    # Either family of direct kernels pools as it stores, whole windows only.
    for family in ("blocked", "wide"):
        with _runtime.direct_convolution("always", family=family):
            assert _conv_pool.pool_geometry(even, *windows, False, (1, 1)) is not None
            assert _conv_pool.pool_geometry(odd, *windows, True, (1, 1)) is None


# -- in a model --------------------------------------------------------------

def _lenet(dtype, input_shape=(1, 12, 12), **conv):
    return Sequential([
        Convolution(kernel_size=3, depth=4, dtype=dtype, rng=1, **conv), ReLU(), MaxPooling(2),
        Convolution(kernel_size=3, depth=5, dtype=dtype, rng=2), ReLU(), MaxPooling(2),
        Flatten(), Dense(output_size=3, dtype=dtype, rng=3)], input_shape=input_shape)


def _spy(monkeypatch):
    # Every fused pass runs a function _conv_pool._pass gives (a model's
    # planned pass keeps the one it was given): each call of those is one
    # fused pass, recorded with its pooling geometry.
    calls = []
    original = _conv_pool._pass

    def spy(geometry, pooled, dtype, n_threads):
        run = original(geometry, pooled, dtype, n_threads)

        def spied(*args):
            calls.append(pooled)
            return run(*args)
        return spied
    monkeypatch.setattr(_conv_pool, "_pass", spy)
    return calls


# Models whose first three layers run as one from the second step on.
MODELS = {
    "lenet": lambda dt: _lenet(dt),
    "no bias, padding, reflect": lambda dt: _lenet(dt, (2, 11, 13), bias=False, padding=1,
                                                   padding_mode="reflect"),
    "dilation, ceil_mode": lambda dt: Sequential([
        Convolution(kernel_size=3, depth=6, dilation=2, dtype=dt, rng=1), ReLU(),
        MaxPooling(2, ceil_mode=True), Flatten(), Dense(output_size=2, dtype=dt, rng=2)],
        input_shape=(3, 12, 14)),
    # Layers on the filter-blocked kernels (7x7: a last row and column no
    # window covers).
    "filter-blocked layers": lambda dt: Sequential([
        Convolution(kernel_size=3, depth=16, padding=1, dtype=dt, rng=1), ReLU(),
        MaxPooling(2), Convolution(kernel_size=3, depth=20, padding=1, dtype=dt, rng=2),
        ReLU(), MaxPooling(2), Flatten(), Dense(output_size=2, dtype=dt, rng=3)],
        input_shape=(3, 14, 14)),
}


def _training_steps(model, x, grads, steps=2):
    results = []
    for _ in range(steps):
        out = model.forward(x)
        model.backward(grads[len(results)])
        results.append((out, [p.grad for p in model.parameters()]))
    return results


@needs_the_fused_pass
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", list(MODELS))
def test_a_fused_model_trains_as_the_layers_one_by_one(monkeypatch, model, dtype, threads):
    calls = _spy(monkeypatch)
    fused = MODELS[model](dtype)
    plain = copy.deepcopy(fused)
    plain.fuse = False
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6,) + fused.input_shape).astype(dtype)
    x[0, 0, 0, :2] = [np.nan, np.inf]
    grads = [rng.standard_normal((6,) + fused.output_shape).astype(dtype) for _ in range(3)]

    def check():
        calls.clear()
        got = _training_steps(fused, x, grads, 3)
        assert calls  # from the second step on (the first checks)
        want = _training_steps(plain, x, grads, 3)
        for (out, params), (out_w, params_w) in zip(got, want):
            np.testing.assert_array_equal(_bits(out), _bits(out_w))
            for g, w in zip(params, params_w):
                np.testing.assert_array_equal(_bits(g), _bits(w))

    _with_every_variant(threads, check)


@needs_the_fused_pass
def test_the_fused_layers_keep_what_their_backward_passes_read():
    model = _lenet(np.float32)
    plain = copy.deepcopy(model)
    plain.fuse = False
    x = np.random.default_rng(5).standard_normal((3, 1, 12, 12)).astype(np.float32)
    for _ in range(2):
        model.forward(x)
        plain.forward(x)
    conv, relu, pool = model.layers[:3]
    conv_w, _, pool_w = plain.layers[:3]
    # The pooling holds what its own forward pass keeps.
    np.testing.assert_array_equal(pool.output, pool_w.output)
    assert pool._saved.pooled is pool.output
    np.testing.assert_array_equal(pool._saved.codes, pool_w._saved.codes)
    assert pool._saved.geometry == pool_w._saved.geometry
    g = np.random.default_rng(6).standard_normal(pool.output.shape).astype(np.float32)
    np.testing.assert_array_equal(pool.backward(g), pool_w.backward(g))
    # The convolution's output was never computed: None, not some array.
    assert conv.output is None and relu.input is None and relu.output is None
    assert pool.input is None
    assert conv.input is x
    # So ReLU's own backward pass cannot run; the model's does, and the
    # convolution's own backward checks the gradient's shape all the same.
    with pytest.raises(RuntimeError, match="run forward again"):
        relu.backward(np.ones(conv_w.output.shape, np.float32))
    with pytest.raises(ValueError, match="shape"):
        conv.backward(np.ones(pool.output.shape, np.float32))
    model.backward(np.ones((3, 3), np.float32))
    plain.backward(np.ones((3, 3), np.float32))
    for a, b in zip(model.parameters(), plain.parameters()):
        np.testing.assert_array_equal(_bits(a.grad), _bits(b.grad))
    # Run alone, the ReLU is itself again.
    relu.forward(conv_w.output)
    relu.backward(np.ones(conv_w.output.shape, np.float32))


@needs_the_fused_pass
@pytest.mark.parametrize("between", ["deepcopy", "pickle", "fuse off", "fuse off, deepcopy"])
def test_backward_after_a_fused_forward_survives_copies_and_fuse_toggled(monkeypatch, between):
    calls = _spy(monkeypatch)
    model = _lenet(np.float64)
    plain = copy.deepcopy(model)
    plain.fuse = False
    x = np.random.default_rng(11).standard_normal((3, 1, 12, 12))
    grad = np.random.default_rng(12).standard_normal((3, 3))
    for _ in range(2):
        model.forward(x)
        plain.forward(x)
    assert calls
    if "fuse off" in between:
        model.fuse = False
    if "deepcopy" in between:
        model = copy.deepcopy(model)
    if between == "pickle":
        model = pickle.loads(pickle.dumps(model))
    # The layers that ran as one still run their backward as one.
    np.testing.assert_array_equal(model.backward(grad), plain.backward(grad))
    for a, b in zip(model.parameters(), plain.parameters()):
        np.testing.assert_array_equal(_bits(a.grad), _bits(b.grad))
    # And the next forward follows ``fuse`` again.
    calls.clear()
    model.forward(x)
    assert bool(calls) == model.fuse


@needs_the_fused_pass
def test_only_these_layers_run_as_one(monkeypatch):
    calls = _spy(monkeypatch)
    x = np.random.default_rng(7).standard_normal((2, 1, 12, 12)).astype(np.float32)

    def fused_calls(layers, fuse=True, input_shape=(1, 12, 12)):
        model = Sequential(layers, input_shape=input_shape)
        model.fuse = fuse
        calls.clear()
        model.forward(x)
        model.forward(x)
        return len(calls)

    class MyPooling(MaxPooling):
        pass

    def conv():
        return Convolution(kernel_size=3, depth=4, rng=0)

    def tail():
        return [Flatten(), Dense(output_size=2, rng=0)]

    assert fused_calls([conv(), ReLU(), MaxPooling(2)] + tail()) == 1
    assert fused_calls([conv(), ReLU(), MaxPooling(2)] + tail(), fuse=False) == 0
    assert fused_calls([conv(), ReLU(), MaxPooling(2)]) == 0  # the model's end
    assert fused_calls([conv(), ReLU(), MyPooling(2)] + tail()) == 0
    assert fused_calls([conv(), ReLU(), MaxPooling(3)] + tail()) == 0
    assert fused_calls([conv(), ReLU(), MaxPooling(2, stride=1)] + tail()) == 0
    assert fused_calls([Convolution(kernel_size=3, depth=4, stride=2, rng=0), ReLU(),
                        MaxPooling(2)] + tail()) == 0
    # Small planes with many filters too (the filter-blocked forward pass),
    # where its store pools with vectors (AVX-512, AVX2), not with the
    # portable loop.
    assert fused_calls([Convolution(kernel_size=3, depth=16, rng=0), ReLU(),
                        MaxPooling(2)] + tail()) == (_runtime.isa() in ("avx512", "avx2"))
    with _runtime.direct_convolution("auto", "avx2"):
        assert fused_calls([Convolution(kernel_size=3, depth=16, rng=0), ReLU(),
                            MaxPooling(2)] + tail()) == 1
    with _runtime.direct_convolution("auto", "portable"):
        assert fused_calls([Convolution(kernel_size=3, depth=16, rng=0), ReLU(),
                            MaxPooling(2)] + tail()) == 0
    with _runtime.direct_convolution("never"):
        assert fused_calls([conv(), ReLU(), MaxPooling(2)] + tail()) == 0
    # Without ReLU's gradient the backward pass keeps the layers apart.
    model = Sequential([conv(), ReLU(), MaxPooling(2)] + tail(), input_shape=(1, 12, 12))
    model.layers[1].needs_input_gradient = False
    calls.clear()
    model.forward(x)
    model.forward(x)
    assert not calls


@needs_the_fused_pass
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_training_steps_match_pytorch(dtype):
    torch = pytest.importorskip("torch")
    model = _lenet(dtype, (1, 14, 14))
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 5, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(20, 3))
    if dtype == np.float64:
        reference.double()
    with torch.no_grad():
        for mine, theirs in zip(model.parameters(), reference.parameters()):
            theirs.copy_(torch.from_numpy(mine.value))
    optimizer = cyconv.SGD(0.1)
    torch_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    loss = cyconv.losses.SoftmaxCrossEntropy()
    rng = np.random.default_rng(8)
    tolerance = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9,
                                                                          atol=1e-11)
    for _ in range(3):  # the first step unfused, then fused
        x = rng.standard_normal((8, 1, 14, 14)).astype(dtype)
        labels = rng.integers(0, 3, 8)
        out = model.forward(x)
        _, grad = loss.value_and_gradient(labels, out)
        model.backward(grad)
        optimizer.step(model.parameters())
        torch_optimizer.zero_grad()
        t_out = reference(torch.from_numpy(x))
        torch.nn.functional.cross_entropy(t_out, torch.from_numpy(labels)).backward()
        torch_optimizer.step()
        np.testing.assert_allclose(out, t_out.detach().numpy(), **tolerance)
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        np.testing.assert_allclose(mine.value, theirs.detach().numpy(), **tolerance)


@needs_the_fused_pass
def test_one_sample_and_predict_take_the_fused_pass_too(monkeypatch):
    calls = _spy(monkeypatch)
    fused = _lenet(np.float64)
    plain = copy.deepcopy(fused)
    plain.fuse = False
    x = np.random.default_rng(9).standard_normal((1, 12, 12))
    for _ in range(2):
        got, want = fused.forward(x), plain.forward(x)
    assert calls and got.shape == (3,)
    np.testing.assert_array_equal(got, want)
    grad = np.arange(3.0)
    np.testing.assert_array_equal(fused.backward(grad), plain.backward(grad))
    for a, b in zip(fused.parameters(), plain.parameters()):
        np.testing.assert_array_equal(a.grad, b.grad)
    batch = np.random.default_rng(10).standard_normal((9, 1, 12, 12))
    calls.clear()
    np.testing.assert_array_equal(fused.predict(batch, batch_size=3),
                                  plain.predict(batch, batch_size=3))
    assert calls


# -- where the fused pass cannot run ------------------------------------------

def test_processors_with_avx2_run_every_variant_here():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("AVX2 and AVX-512 are x86-64's")
    if _runtime.DETECTED_ISA == "portable":
        pytest.skip("this processor has no AVX2")
    # So the tests above check every variant rather than none.
    assert "avx2" in CONV_VARIANTS and "avx2" in POOL_VARIANTS
    assert _kernels_pool.pairs_isa() != "portable"


@pytest.mark.parametrize("dtype", DTYPES)
def test_without_the_2x2_vector_kernels_nothing_is_fused(monkeypatch, dtype):
    # As on a processor without AVX2: the pooling's kernels with int64
    # indices, which the fused pass does not write.
    monkeypatch.setattr(_pool, "PAIRS_ISA", None)
    calls = _spy(monkeypatch)
    fused = _lenet(dtype)
    plain = copy.deepcopy(fused)
    plain.fuse = False
    x = np.random.default_rng(13).standard_normal((3, 1, 12, 12)).astype(dtype)
    grads = [np.random.default_rng(14).standard_normal((3, 3)).astype(dtype)] * 3
    with _runtime.direct_convolution("always"):
        geometry = conv_geometry(x.shape, (4, 1, 3, 3), 1, 0, 1, 1)
        assert _conv_pool.pool_geometry(geometry, (2, 2), (2, 2), (0, 0), False,
                                        (1, 1)) is None
        got = _training_steps(fused, x, grads, 3)
        want = _training_steps(plain, x, grads, 3)
    assert not calls
    assert fused.layers[0].output is not None and fused.layers[2].input is not None
    for (out, params), (out_w, params_w) in zip(got, want):
        np.testing.assert_array_equal(_bits(out), _bits(out_w))
        for g, w in zip(params, params_w):
            np.testing.assert_array_equal(_bits(g), _bits(w))
