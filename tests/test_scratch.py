"""The scratch arrays the direct passes keep between calls (cyconv/_scratch.py):
kept per thread and only where small, and never able to change a result,
whatever a kept array holds from the call before."""

import gc
import threading

import numpy as np
import pytest

import cyconv
import reference
from cyconv import _conv, _conv_direct, _conv_pool, _runtime, _scratch
from cyconv._pool import PooledGradient
from cyconv._conv import conv_geometry
from cyconv._kernels._views import typed_view
from cyconv.functional import conv2d, conv2d_backward

VARIANTS = _runtime.available_isas()


def _kept_views():
    """The typed memoryviews this thread keeps, of every pass."""
    kept = _scratch._kept.__dict__
    return [view for key, views in kept.items() if key != "bytes" for view in views]


def test_typed_view_shares_the_array_and_refuses_other_kinds():
    for dtype in (np.float32, np.float64):
        for ndim in range(2, 5):
            array = np.zeros((2,) * ndim, dtype)
            view = typed_view(array)
            np.asarray(view)[(1,) * ndim] = 7
            assert array[(1,) * ndim] == 7
    assert np.asarray(typed_view(np.arange(3, dtype=np.intp))).tolist() == [0, 1, 2]
    assert np.asarray(typed_view(np.ones((2, 2), np.intc))).sum() == 4
    assert np.asarray(typed_view(np.ones((1, 1, 1, 2), np.uint8))).sum() == 2
    for bad in (np.zeros(3, np.int16), np.zeros((2,) * 5, np.float32), np.zeros(3, np.float64),
                np.zeros((2, 2), np.intp), np.zeros(3, np.complex64)):
        with pytest.raises(TypeError, match="no kernel argument"):
            typed_view(bad)
    with pytest.raises(ValueError):
        typed_view(np.zeros((4, 4), np.float32)[:, ::2])
    with pytest.raises(TypeError, match="numpy array"):
        typed_view([1.0, 2.0])


def test_small_scratch_is_kept_per_thread_and_large_scratch_never():
    small = _scratch.Scratch([(3, 4), (1, 5)], np.float32)
    assert small.nbytes == 17 * 4
    first = small.views()
    assert small.views() is first
    assert [np.asarray(v).shape for v in first] == [(3, 4), (1, 5)]
    assert all(np.asarray(v).dtype == np.float32 for v in first)
    other = []
    thread = threading.Thread(target=lambda: other.append(small.views()))
    thread.start()
    thread.join()
    assert other[0] is not first and other[0][0] is not first[0]
    large = _scratch.Scratch([(1, _scratch.KEEP_BYTES // 8 + 1)], np.float64)
    assert large.views() is not large.views()
    assert all(key is not large for key in _scratch._kept.__dict__)


def test_a_thread_keeps_at_most_kept_bytes(monkeypatch):
    monkeypatch.setattr(_scratch, "KEPT_BYTES", 1000)
    _scratch._kept.__dict__.clear()
    passes = [_scratch.Scratch([(10, 10)], np.float32) for _ in range(3)]  # 400 bytes each
    first = [p.views() for p in passes[:2]]
    assert _scratch._kept.__dict__["bytes"] == 800
    assert passes[0].views() is first[0]
    passes[2].views()  # 1200 bytes: what was kept is dropped
    assert _scratch._kept.__dict__["bytes"] == 400
    assert passes[0].views() is not first[0]
    assert passes[2].views() is passes[2].views()


def _poison(value):
    for view in _kept_views():
        array = np.asarray(view)
        if array.dtype.kind == "f":
            array[...] = value


POISONS = [np.nan, 1e30, -np.inf]

CASES = [
    # x shape, w shape, convolution arguments: unpadded (x read in place),
    # padded, strided and dilated layers
    ((2, 3, 9, 10), (8, 3, 3, 3), {}),
    ((1, 1, 12, 12), (6, 1, 5, 5), {"padding": 2}),
    ((3, 16, 7, 6), (32, 16, 3, 3), {"padding": 1}),
    ((2, 4, 11, 9), (16, 4, 3, 3), {"padding": 1, "stride": 2}),
    ((2, 5, 10, 10), (16, 5, 3, 3), {"padding": 2, "dilation": 2}),
]


def _passes(x, w, b, g, kwargs):
    return (conv2d(x, w, b, **kwargs),) + tuple(conv2d_backward(g, x, w, **kwargs))


@pytest.mark.parametrize("family", ["wide", "blocked"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisoned_kept_scratch_changes_no_bit(dtype, variant, family):
    """Every direct pass run, then run again with the scratch it kept filled
    with NaN, 1e30 or -inf, at 1 to 3 threads: bit for bit the first
    results, which agree with the float64 reference."""
    rng = np.random.default_rng(5)
    for x_shape, w_shape, kwargs in CASES:
        if family == "wide" and kwargs.get("stride", 1) != 1:
            continue  # the blocked family's alone
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        g = rng.standard_normal(conv2d(x, w, **kwargs).shape).astype(dtype)
        try:
            for threads in (1, 2, 3):
                cyconv.set_num_threads(threads)
                with _runtime.direct_convolution("always", variant, family):
                    first = _passes(x, w, b, g, kwargs)
                    assert _kept_views()
                    for value in POISONS:
                        _poison(value)
                        again = _passes(x, w, b, g, kwargs)
                        assert all(a.tobytes() == b_.tobytes() for a, b_ in zip(again, first))
        finally:
            cyconv.set_num_threads(None)
        geometry = conv_geometry(x.shape, w.shape, kwargs.get("stride", 1),
                                 kwargs.get("padding", 0), kwargs.get("dilation", 1), 1)
        sides = (geometry.pad_top, geometry.pad_bottom, geometry.pad_left, geometry.pad_right)
        x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
        wanted = ((reference.conv2d(x64, w64, b.astype(np.float64), geometry.stride, sides,
                                    geometry.dilation, 1),)
                  + reference.conv2d_backward(g64, x64, w64, geometry.stride, sides,
                                              geometry.dilation, 1))
        tolerance = 1e-4 if dtype == np.float32 else 1e-10
        for got, want in zip(first, wanted):
            assert np.abs(got - want).max() <= tolerance * np.abs(want).max()


@pytest.mark.parametrize("family", ["wide", "blocked"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_poisoned_kept_scratch_changes_no_bit_of_the_pooled_passes(variant, family):
    """The fused convolution and pooling, and the weight gradient taking the
    pooling's gradient as it is (PooledGradient), poisoned as above: the
    same bits, and the pooling of the convolution's ReLU."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    geometry = conv_geometry(x.shape, w.shape, 1, 0, 1, 1)
    with _runtime.direct_convolution("always", variant, family):
        pooled = _conv_pool.pool_geometry(geometry, (2, 2), (2, 2), (0, 0), False, (1, 1))
        out, saved = _conv_pool.forward(x, w, b, geometry, pooled)
        grad = PooledGradient(rng.standard_normal(out.shape).astype(np.float32), saved)
        first = _conv.conv2d_backward_checked(grad, x, w, geometry, True)
        for value in POISONS:
            _poison(value)
            assert _conv_pool.forward(x, w, b, geometry, pooled)[0].tobytes() == out.tobytes()
            again = _conv.conv2d_backward_checked(grad, x, w, geometry, True)
            assert all(a.tobytes() == b_.tobytes() for a, b_ in zip(again, first))
        # the gradients of the pooling's gradient made dense: the same bits
        dense = _conv.conv2d_backward_checked(grad.dense(), x, w, geometry, True)
        assert all(a.tobytes() == b_.tobytes() for a, b_ in zip(dense, first))
    full = np.maximum(_conv.conv2d_checked(x, w, b, geometry), 0)
    assert np.array_equal(out, full.reshape(2, 16, 6, 2, 6, 2).max(axis=(3, 5)))


@pytest.mark.parametrize("family", ["wide", "blocked"])
def test_batches_in_several_parts_poisoned_change_no_bit(family, monkeypatch):
    """Batches the passes split into parts or chunks (the last one shorter),
    whose part-sized arrays are made at each call and the rest kept."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((7, 6, 9, 9)).astype(np.float32)
    w = rng.standard_normal((16, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    g = rng.standard_normal((7, 16, 9, 9)).astype(np.float32)
    with _runtime.direct_convolution("always", None, family):
        whole = _passes(x, w, b, g, {"padding": 1})
    # parts of one sample, calls of two (as test_conv_direct's chunk tests)
    monkeypatch.setattr(_runtime, "DIRECT_WEIGHT_RUN", 1)
    _conv_direct._plan.cache_clear()
    try:
        geometry = conv_geometry(x.shape, w.shape, 1, 1, 1, 1)
        plan = _conv_direct._plan(geometry)
        monkeypatch.setattr(_runtime, "DIRECT_MAX_PADDED",
                            16 * max(plan.stride, plan.grad_stride) * (plan.samples_per_part + 2))
        _conv_direct._plan.cache_clear()
        assert [len(range(7)[part]) for part in _conv_direct._plan(geometry).chunks(7)] == [
            2, 2, 2, 1]
        with _runtime.direct_convolution("always", None, family):
            first = _passes(x, w, b, g, {"padding": 1})
            for value in POISONS:
                _poison(value)
                again = _passes(x, w, b, g, {"padding": 1})
                assert all(a.tobytes() == b_.tobytes() for a, b_ in zip(again, first))
    finally:
        _conv_direct._plan.cache_clear()
    for a, b_ in zip(first, whole):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-5)


def test_a_pass_called_again_inside_itself_keeps_its_own_weights():
    """A call of a pass from a collection's callback, in the middle of the
    same pass in the same thread, computes with its own weight and leaves
    the outer call's results as they were (the packed weights, read by
    several kernel calls, are not kept)."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    g = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    w1, w2 = (rng.standard_normal((16, 4, 3, 3)).astype(np.float32) for _ in range(2))
    cyconv.set_num_threads(1)
    inner, busy = [], []

    def callback(phase, info):  # at every collection, but not within its own call
        if phase == "start" and not busy:
            busy.append(1)
            try:
                inner.append(_passes(x, w2, None, g, {"padding": 1}))
            finally:
                busy.pop()

    try:
        with _runtime.direct_convolution("always", None, "blocked"):
            expected = _passes(x, w1, None, g, {"padding": 1})
            inner_expected = _passes(x, w2, None, g, {"padding": 1})
            threshold = gc.get_threshold()
            gc.callbacks.append(callback)
            gc.set_threshold(1)  # a collection at nearly every allocation
            try:
                got = _passes(x, w1, None, g, {"padding": 1})
            finally:
                gc.set_threshold(*threshold)
                gc.callbacks.remove(callback)
    finally:
        cyconv.set_num_threads(None)
    assert inner, "no collection ran inside the pass"
    assert all(a.tobytes() == b_.tobytes() for a, b_ in zip(got, expected))
    for results in inner:
        assert all(a.tobytes() == b_.tobytes() for a, b_ in zip(results, inner_expected))


def test_threads_running_one_pass_at_once_keep_their_own_scratch():
    """Threads in the same passes at the same time (the kernels release the
    GIL), each on data of its own: each gets what it gets alone."""
    rng = np.random.default_rng(7)
    threads = 6
    data = [(rng.standard_normal((1, 4, 10, 10)).astype(np.float32),
             rng.standard_normal((16, 4, 3, 3)).astype(np.float32)) for _ in range(threads)]
    cyconv.set_num_threads(1)
    try:
        expected = [(conv2d(x, w, padding=1), conv2d_backward(np.ones((1, 16, 10, 10),
                                                                      np.float32), x, w,
                                                              padding=1))
                    for x, w in data]
        barrier = threading.Barrier(threads)
        mismatches, errors, rounds = [], [], []

        def job(index):
            try:
                x, w = data[index]
                barrier.wait()
                for _ in range(200):
                    out = conv2d(x, w, padding=1)
                    grads = conv2d_backward(np.ones_like(out), x, w, padding=1)
                    if not (np.array_equal(out, expected[index][0])
                            and all(np.array_equal(a, b)
                                    for a, b in zip(grads, expected[index][1]))):
                        mismatches.append(index)
                    rounds.append(index)
            except Exception as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=job, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
    finally:
        cyconv.set_num_threads(None)
    assert not any(worker.is_alive() for worker in workers), "a thread hung"
    assert not errors, errors
    assert len(rounds) == threads * 200
    assert not mismatches
