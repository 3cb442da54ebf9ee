"""The guards every layer's ``forward`` and ``backward`` run under (see
cyconv/nn/layer.py, which wraps them and says why they exist), compiled:
a batch-1 training step makes 14 guarded calls, and in Python their
bookkeeping cost 7% of the step.  The logic is layer.py's; only its
interpretation is gone."""

from ._memory import enter, leave

cimport numpy as cnp

import threading

import numpy as np

cnp.import_array()

# The thread of the last forward that completed, per layer; this marks one
# that raised, leaving a cache that may be half rewritten.
INCOMPLETE = "incomplete"

_get_ident = threading.get_ident


def guarded_forward(method, cache_lock):
    """``method`` (a layer's forward) under the cache guard: the layer's
    lock (``cache_lock(layer)`` makes it), the memory cache, and the marks
    of who owns the cache (see layer.py)."""

    def forward(self, *args, **kwargs):
        cdef dict state = self.__dict__
        lock = state.get("_cache_lock") or cache_lock(self)
        lock.acquire()
        try:
            # A subclass's forward may call its parent's: only the outermost
            # call marks the cache whole, and only if it returns.
            depth = state.get("_cache_depth", 0)
            state["_cache_depth"] = depth + 1
            state["_cache_thread"] = INCOMPLETE
            previous = enter()
            try:
                result = method(self, *args, **kwargs)
            finally:
                leave(previous)
                state["_cache_depth"] = depth
            if depth == 0:
                state["_cache_thread"] = _get_ident()
            return result
        finally:
            lock.release()

    return forward


def guarded_call(cache_lock, refuse_owner):
    """``call_guarded(layer, method, *args, **kwargs)``: ``method(layer,
    ...)``, a pass that reads what the last forward cached (a backward),
    under the guard backward runs under; ``refuse_owner(layer, owner)``
    raises where another thread, or a forward that raised, owns the
    cache."""

    def call_guarded(layer, method, *args, **kwargs):
        cdef dict state = layer.__dict__
        lock = state.get("_cache_lock") or cache_lock(layer)
        lock.acquire()
        try:
            owner = state.get("_cache_thread")
            if owner is not None and owner != _get_ident():
                refuse_owner(layer, owner)
            previous = enter()
            try:
                return method(layer, *args, **kwargs)
            finally:
                leave(previous)
        finally:
            lock.release()

    return call_guarded


def guarded_backward(method, call_guarded):
    """``method`` (a layer's backward) under ``call_guarded``."""

    def backward(self, *args, **kwargs):
        return call_guarded(self, method, *args, **kwargs)

    return backward


def array_kind(array):
    """What a layer's remembered checks of ``array`` depend on: its shape,
    dtype and whether it is aligned and C-contiguous, or None for anything
    but an ndarray (which always takes the checked path).  Asked of every
    array at every call of a layer that remembers its checks; in Python it
    cost three times as much."""
    if type(array) is not np.ndarray:
        return None
    cdef cnp.ndarray a = array
    cdef int flags = cnp.PyArray_FLAGS(a)
    cdef int wanted = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    return array.shape, <object>cnp.PyArray_DESCR(a), (flags & wanted) == wanted
