"""The scratch arrays the direct passes keep between calls (cyconv/_scratch.py):
kept per thread and only where small, and never able to change a result,
whatever a kept array holds from the call before."""

import threading

import numpy as np
import pytest

import cyconv
import reference
from cyconv import _conv, _conv_pool, _runtime, _scratch
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
        for ndim in range(1, 6):
            array = np.zeros((2,) * ndim, dtype)
            view = typed_view(array)
            np.asarray(view)[(1,) * ndim] = 7
            assert array[(1,) * ndim] == 7
    assert np.asarray(typed_view(np.arange(3, dtype=np.intp))).tolist() == [0, 1, 2]
    assert np.asarray(typed_view(np.ones((2, 2), np.intc))).sum() == 4
    assert np.asarray(typed_view(np.ones((1, 1, 1, 2), np.uint8))).sum() == 2
    for bad in (np.zeros(3, np.int16), np.zeros((2,) * 6, np.float32),
                np.zeros((2, 2), np.intp), np.zeros(3, np.complex64)):
        with pytest.raises(TypeError, match="no kernel argument"):
            typed_view(bad)
    with pytest.raises(ValueError):
        typed_view(np.zeros((4, 4), np.float32)[:, ::2])


def test_small_scratch_is_kept_per_thread_and_large_scratch_never():
    small = _scratch.Scratch([(3, 4), (5,)], np.float32)
    assert small.nbytes == 17 * 4
    first = small.views()
    assert small.views() is first
    assert [np.asarray(v).shape for v in first] == [(3, 4), (5,)]
    assert all(np.asarray(v).dtype == np.float32 for v in first)
    other = []
    thread = threading.Thread(target=lambda: other.append(small.views()))
    thread.start()
    thread.join()
    assert other[0] is not first and other[0][0] is not first[0]
    large = _scratch.Scratch([(_scratch.KEEP_BYTES // 8 + 1,)], np.float64)
    assert large.views() is not large.views()
    assert all(key is not large for key in _scratch._kept.__dict__)


def test_a_thread_keeps_at_most_kept_bytes(monkeypatch):
    monkeypatch.setattr(_scratch, "KEPT_BYTES", 1000)
    _scratch._kept.__dict__.clear()
    passes = [_scratch.Scratch([(100,)], np.float32) for _ in range(3)]  # 400 bytes each
    first = [p.views() for p in passes[:2]]
    assert _scratch._kept.__dict__["bytes"] == 800
    assert passes[0].views() is first[0]
    passes[2].views()  # 1200 bytes: what was kept is dropped
    assert _scratch._kept.__dict__["bytes"] == 400
    assert passes[0].views() is not first[0]
    assert passes[2].views() is passes[2].views()


def _poison():
    for view in _kept_views():
        array = np.asarray(view)
        if array.dtype.kind == "f":
            array[...] = np.nan


CASES = [
    # x shape, w shape, padding: unpadded (x read in place) and padded layers
    ((2, 3, 9, 10), (8, 3, 3, 3), 0),
    ((1, 1, 12, 12), (6, 1, 5, 5), 2),
    ((3, 16, 7, 6), (32, 16, 3, 3), 1),
]


@pytest.mark.parametrize("family", ["wide", "blocked"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisoned_kept_scratch_changes_no_bit(dtype, variant, family):
    """Every direct pass run twice, the scratch it kept filled with NaN in
    between: bit for bit the first call's results, which agree with the
    float64 reference."""
    rng = np.random.default_rng(5)
    for x_shape, w_shape, padding in CASES:
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        with _runtime.direct_convolution("always", variant, family):
            out = conv2d(x, w, b, padding=padding)
            g = rng.standard_normal(out.shape).astype(dtype)
            grads = conv2d_backward(g, x, w, padding=padding)
            assert _kept_views()
            _poison()
            assert conv2d(x, w, b, padding=padding).tobytes() == out.tobytes()
            _poison()
            again = conv2d_backward(g, x, w, padding=padding)
        assert all(a.tobytes() == b_.tobytes() for a, b_ in zip(again, grads))
        pads = (padding,) * 4
        x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
        wanted = ((reference.conv2d(x64, w64, b.astype(np.float64), (1, 1), pads, (1, 1), 1),)
                  + reference.conv2d_backward(g64, x64, w64, (1, 1), pads, (1, 1), 1))
        tolerance = 1e-4 if dtype == np.float32 else 1e-10
        for got, want in zip((out,) + tuple(grads), wanted):
            assert np.abs(got - want).max() <= tolerance * np.abs(want).max()

@pytest.mark.parametrize("variant", VARIANTS)
def test_poisoned_kept_scratch_changes_no_bit_of_the_fused_pooling(variant):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 1, 14, 14)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    with _runtime.direct_convolution("always", variant, "wide"):
        geometry = conv_geometry(x.shape, w.shape, 1, 0, 1, 1)
        pooled = _conv_pool.pool_geometry(geometry, (2, 2), (2, 2), (0, 0), False, (1, 1))
        out = _conv_pool.forward(x, w, b, geometry, pooled)[0]
        _poison()
        again = _conv_pool.forward(x, w, b, geometry, pooled)[0]
    assert again.tobytes() == out.tobytes()
    full = np.maximum(_conv.conv2d_checked(x, w, b, geometry), 0)
    assert np.array_equal(out, full[:, :, :12, :12].reshape(1, 8, 6, 2, 6, 2).max(axis=(3, 5)))


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
        mismatches = []

        def job(index):
            x, w = data[index]
            barrier.wait()
            for _ in range(200):
                out = conv2d(x, w, padding=1)
                grads = conv2d_backward(np.ones_like(out), x, w, padding=1)
                if not (np.array_equal(out, expected[index][0])
                        and all(np.array_equal(a, b) for a, b in zip(grads, expected[index][1]))):
                    mismatches.append(index)

        workers = [threading.Thread(target=job, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
    finally:
        cyconv.set_num_threads(None)
    assert not mismatches
