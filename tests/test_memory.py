"""Thousands of calls must not grow the process: neither what Python and
numpy allocate (tracemalloc, which sees numpy's array buffers) nor the
resident set (which also sees what the compiled code allocates)."""

import gc
import os
import tracemalloc

import numpy as np
import pytest

import cyconv
from cyconv import functional as F

CALLS = 1000  # watched through the resident set
TRACED_CALLS = 300  # watched by tracemalloc, which slows every allocation
# A leak of one small array per call (about 400 bytes with its header)
# would grow the traced memory by over 100 kB in TRACED_CALLS calls.
TRACED_GROWTH_LIMIT = 50_000  # bytes
# The resident set moves in pages and allocator arenas: only a leak of
# about 8 KiB per call or more shows there.
RSS_GROWTH_LIMIT = 8 << 20  # bytes

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 4, 9, 8))
X32 = X.astype(np.float32)
W = rng.standard_normal((6, 2, 3, 3))
G = rng.standard_normal(F.conv2d(X, W, groups=2, padding=1).shape)
GP = rng.standard_normal(F.max_pool2d(X, 2).shape)
IMAGE, KERNEL = rng.standard_normal((20, 17)), rng.standard_normal((3, 4))
_, INDICES = F.max_pool2d(X, 2, return_indices=True)

CALLS_BY_NAME = {
    "conv2d": lambda: F.conv2d(X, W, np.ones(6), padding=1, groups=2),
    "conv2d-float32-same": lambda: F.conv2d(X32, W.astype(np.float32), padding="same", groups=2),
    "conv2d_backward": lambda: F.conv2d_backward(G, X, W, padding=1, groups=2),
    "max_pool2d": lambda: F.max_pool2d(X, 2, return_indices=True),
    "max_pool2d_backward": lambda: F.max_pool2d_backward(GP, X, 2),
    "max_pool2d_backward-indices": lambda: F.max_pool2d_backward(GP, X, 2, indices=INDICES),
    "avg_pool2d": lambda: F.avg_pool2d(X32, 3, stride=2, padding=1, ceil_mode=True),
    "avg_pool2d_backward": lambda: F.avg_pool2d_backward(GP, X, 2),
    "pad2d": lambda: F.pad2d(X, (1, 2, 3, 0), mode="reflect"),
    "pad2d_backward": lambda: F.pad2d_backward(X, 1, mode="wrap"),
    "correlate2d": lambda: cyconv.correlate2d(IMAGE, KERNEL, boundary="symm"),
    "convolve2d": lambda: cyconv.convolve2d(IMAGE, KERNEL, mode="same"),
    # Conversions: lists, integers, non-contiguous and misaligned inputs.
    "conversions": lambda: F.max_pool2d(X[:, :, ::2].tolist(), 2) + F.avg_pool2d(
        np.asfortranarray(X.astype(np.int32)), 2),
}

# Refused calls: the exception, its traceback and message must not pile up.
REFUSALS_BY_NAME = {
    "conv2d-channels": lambda: F.conv2d(X, np.ones((6, 3, 3, 3))),
    "conv2d-dtype": lambda: F.conv2d(X.astype(np.complex128), W),
    "conv2d-huge-output": lambda: F.conv2d(X, W, groups=2, padding=2**40),
    "max_pool2d-padding": lambda: F.max_pool2d(X, 2, padding=2),
    "max_pool2d_backward-indices": lambda: F.max_pool2d_backward(GP, X, 2, indices=INDICES + 99),
    "pad2d-mode": lambda: F.pad2d(X, 9, mode="reflect"),
    "correlate2d-ragged": lambda: cyconv.correlate2d([[1.0], [2.0, 3.0]], KERNEL),
}


def _rss():
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def _growth(call):
    """(traced bytes gained over TRACED_CALLS calls, resident bytes gained
    over CALLS calls or None), after a warm-up that fills caches and starts
    thread pools."""
    def run(count):
        for _ in range(count):
            try:
                call()
            except (TypeError, ValueError):
                pass

    run(50)
    gc.collect()
    rss_before = _rss()
    run(CALLS)
    gc.collect()
    rss_after = _rss()
    tracemalloc.start()
    try:
        traced_before, _ = tracemalloc.get_traced_memory()
        run(TRACED_CALLS)
        gc.collect()
        traced_after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss = None if rss_before is None else rss_after - rss_before
    return traced_after - traced_before, rss


def _refuses(call):
    try:
        call()
    except (TypeError, ValueError):
        return True
    return False


@pytest.mark.parametrize("name", sorted(CALLS_BY_NAME))
def test_repeated_calls_do_not_grow_memory(name):
    traced, rss = _growth(CALLS_BY_NAME[name])
    assert traced < TRACED_GROWTH_LIMIT, f"{traced} bytes more traced after {TRACED_CALLS} calls"
    assert rss is None or rss < RSS_GROWTH_LIMIT, f"resident set grew by {rss} bytes"


@pytest.mark.parametrize("name", sorted(REFUSALS_BY_NAME))
def test_repeated_refusals_do_not_grow_memory(name):
    call = REFUSALS_BY_NAME[name]
    assert _refuses(call)
    traced, rss = _growth(call)
    assert traced < TRACED_GROWTH_LIMIT, f"{traced} bytes more traced after {TRACED_CALLS} refusals"
    assert rss is None or rss < RSS_GROWTH_LIMIT, f"resident set grew by {rss} bytes"


def test_the_measure_sees_a_leak_of_one_small_array_per_call():
    """The limits are tight enough to catch the smallest leak worth having."""
    kept = []
    traced, _ = _growth(lambda: kept.append(np.empty(40)))
    assert traced > TRACED_GROWTH_LIMIT, traced
