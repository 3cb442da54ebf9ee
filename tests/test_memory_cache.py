"""The cache of freed array memory (cyconv/_memory.py): current only inside
cyconv's calls, a block reused only after numpy freed it, zeroed where
zeros were asked for, bounded, safe across threads."""

import threading

import numpy as np
import pytest

import cyconv
from cyconv import _memory
from cyconv.nn import lenet

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:  # numpy 1
    from numpy.core.multiarray import get_handler_name

CACHE = "cyconv_memory_cache"
BIG = 1 << 18  # float64 values: 2 MiB, well above the smallest cached block


@pytest.fixture(autouse=True)
def empty_cache():
    limit = _memory.stats()["limit"]
    _memory.release()
    yield
    _memory.set_limit(limit)


class Recorder(cyconv.Layer):
    def forward(self, input):
        self.seen = get_handler_name()
        if input is None:
            raise ValueError("no input")
        self.input = np.asarray(input)
        return self.input * 2.0

    def backward(self, output_gradient, learning_rate=None):
        self.seen_backward = get_handler_name()
        return np.asarray(output_gradient) * 2.0


def test_the_cache_allocates_only_inside_a_layers_calls():
    layer = Recorder()
    outside = get_handler_name()
    out = layer.forward(np.ones(BIG))
    assert layer.seen == CACHE and get_handler_name(out) == CACHE
    layer.backward(np.ones(3))
    assert layer.seen_backward == CACHE
    assert get_handler_name() == outside
    with pytest.raises(ValueError, match="no input"):
        layer.forward(None)
    assert get_handler_name() == outside  # restored after an exception too


def test_a_models_pass_holds_the_cache_once_and_restores_the_callers_handler():
    # A container puts the cache in place for its whole pass; its layers'
    # nested entries find it there and leave it there, and the caller's
    # handler comes back when the pass ends, normally or by an exception.
    first, second = Recorder(), Recorder()
    model = cyconv.Sequential([first, second])
    outside = get_handler_name()
    model.forward(np.ones(4))
    model.backward(np.ones(4))
    assert first.seen == second.seen == CACHE
    assert first.seen_backward == second.seen_backward == CACHE
    assert get_handler_name() == outside
    second.forward = lambda input: second.__class__.forward(second, None)
    with pytest.raises(ValueError, match="no input"):
        model.forward(np.ones(4))
    assert get_handler_name() == outside


def test_a_nested_entry_leaves_the_cache_in_place_for_the_outer_one():
    outside = get_handler_name()
    outer = _memory.enter()
    inner = _memory.enter()
    assert get_handler_name() == CACHE
    _memory.leave(inner)
    assert get_handler_name() == CACHE  # still inside the outer entry
    _memory.leave(outer)
    assert get_handler_name() == outside


def test_a_freed_block_goes_to_the_next_request_of_its_size_and_zeros_are_zeros():
    with _memory.reusing():
        a = np.full(BIG, 7.0)
        address = a.ctypes.data
        hits = _memory.stats()["hits"]
        b = np.empty(BIG)  # a is alive: never handed out twice
        assert b.ctypes.data != address
        del a
        c = np.zeros(BIG)
        assert c.ctypes.data == address
        assert _memory.stats()["hits"] == hits + 1
        assert not c.any()
        del b, c


def test_arrays_outlive_the_block_that_made_them():
    with _memory.reusing():
        kept = np.arange(BIG, dtype=np.float64)
    expected = np.arange(BIG, dtype=np.float64)
    with _memory.reusing():
        for _ in range(5):
            np.ones(BIG)
    assert np.array_equal(kept, expected)
    del kept  # freed through the cache, outside any cyconv call
    assert _memory.stats()["held"] >= BIG * 8


def test_the_cache_keeps_no_more_than_its_limit():
    _memory.set_limit(3 * BIG * 8)
    with _memory.reusing():
        arrays = [np.ones(BIG + i) for i in range(10)]
    del arrays
    assert 0 < _memory.stats()["held"] <= 3 * BIG * 8
    _memory.set_limit(0)
    with _memory.reusing():
        np.ones(BIG)
    assert _memory.stats()["held"] == 0


def test_small_arrays_are_left_to_numpy():
    with _memory.reusing():
        np.ones(16)
    assert _memory.stats()["held"] == 0


def test_release_memory_frees_what_is_kept():
    from cyconv import _scratch

    cyconv.release_memory()  # what earlier calls left
    with _memory.reusing():
        np.ones(BIG)
    assert _memory.stats()["held"] == BIG * 8
    assert cyconv.release_memory() == BIG * 8
    assert _memory.stats()["held"] == 0
    # the convolutions' scratch, kept for their next call in this thread,
    # the larger arrays allocated through the cache inside a layer's call
    from cyconv._kernels._memory import MIN_BYTES

    layer = cyconv.Convolution((16, 24, 24), 3, 32, padding=1, dtype=np.float32)
    layer.forward(np.ones((1, 16, 24, 24), np.float32))
    largest = max(np.asarray(view).nbytes for key, views in _scratch._kept.__dict__.items()
                  if key != "bytes" for view in views)
    assert largest >= MIN_BYTES  # one the cache takes back when it is dropped
    assert cyconv.release_memory() >= largest
    assert not _scratch._kept.__dict__
    assert _memory.stats()["held"] == 0


def test_a_second_training_step_reuses_every_large_array():
    model = lenet(rng=0)
    rng = np.random.default_rng(1)
    # Two steps an epoch: a layer's new output is allocated while its last
    # one is alive, so reuse starts at the second step.
    x = rng.random((128, 1, 28, 28), np.float32)
    y = rng.integers(0, 10, 128)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    before = _memory.stats()
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    after = _memory.stats()
    assert after["misses"] == before["misses"]
    assert after["hits"] > before["hits"]


def test_threads_allocating_at_once_get_their_own_blocks():
    errors = []

    def work(k):
        with _memory.reusing():
            for i in range(200):
                a = np.full(BIG + (i % 3), float(k))
                b = np.zeros(BIG + (i % 3))
                if not (a == k).all() or b.any():
                    errors.append(k)
                b += k
                del a
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_resized_array_is_cached_under_its_new_size():
    with _memory.reusing():
        a = np.arange(BIG, dtype=np.float64)
        a.resize(2 * BIG, refcheck=False)  # realloc through the handler
        assert np.array_equal(a[:BIG], np.arange(BIG)) and not a[BIG:].any()
        address = a.ctypes.data
        del a
        hits = _memory.stats()["hits"]
        b = np.empty(2 * BIG)
        assert b.ctypes.data == address and _memory.stats()["hits"] == hits + 1
        del b


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_allocates_through_the_cache():
    import multiprocessing

    with _memory.reusing():
        kept = np.ones(BIG)
    del kept  # cached in the parent, copied into the child
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        assert pool.apply(_allocate_in_child) == float(BIG)


def _allocate_in_child():
    with _memory.reusing():
        a = np.ones(BIG)
        del a
        return float(np.ones(BIG).sum())
