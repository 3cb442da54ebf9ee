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
            # No longer what a container's planned pass left (planned_intact).
            state.pop("_planned", None)
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


# -- a container's planned pass (cyconv/nn/_plan.py) ------------------------

def planned_forward(tuple layers, tuple locks, plan, stage, x):
    """``stage(x)``, a step of ``plan``'s forward pass over ``layers``,
    under the guard their own forward runs under: their locks (``locks``,
    in order) and the marks of a forward that completed in this thread,
    and the mark of ``plan`` that planned_intact looks for.  The memory
    cache is the container's, already in place."""
    cdef Py_ssize_t held = 0
    try:
        for lock in locks:
            lock.acquire()
            held += 1
        for layer in layers:
            (<dict>layer.__dict__)["_cache_thread"] = INCOMPLETE
        result = stage(x)
        ident = _get_ident()
        for layer in layers:
            state = <dict>layer.__dict__
            state["_cache_thread"] = ident
            state["_planned"] = plan
        return result
    finally:
        while held > 0:
            held -= 1
            locks[held].release()


def planned_backward(tuple layers, tuple locks, refuse_owner, stage, grad, learning_rate):
    """``stage(grad, learning_rate)``, a step of a planned backward pass
    over ``layers``, under the guard their own backward runs under (see
    guarded_call)."""
    cdef Py_ssize_t held = 0
    try:
        for lock in locks:
            lock.acquire()
            held += 1
        ident = _get_ident()
        for layer in layers:
            owner = (<dict>layer.__dict__).get("_cache_thread")
            if owner is not None and owner != ident:
                refuse_owner(layer, owner)
        return stage(grad, learning_rate)
    finally:
        while held > 0:
            held -= 1
            locks[held].release()


def planned_intact(tuple layers, plan):
    """Whether every one of ``layers`` last ran forward in ``plan``'s pass,
    in this thread, none of them on its own since (its own forward takes
    the mark away)."""
    ident = _get_ident()
    for layer in layers:
        state = <dict>layer.__dict__
        if state.get("_planned") is not plan or state.get("_cache_thread") != ident:
            return False
    return True


def unchanged(tuple watched, tuple arrays):
    """Whether every ``(obj, names, values, in_dict)`` of ``watched``
    still has ``getattr(obj, name) is value`` for each name and value (read
    from the instance's ``__dict__`` where ``in_dict``: the caller checked
    that nothing else answers for those names), and every ``(array,
    kind)`` of ``arrays`` still has that :func:`array_kind` (an array's
    shape can be set in place): what a planned pass was planned for, asked
    at every call, so in a microsecond or less."""
    cdef cnp.ndarray a
    cdef int wanted = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    cdef Py_ssize_t i, ndim
    cdef tuple shape, names, values
    cdef dict state
    for obj, names, values, in_dict in watched:
        if in_dict:
            state = obj.__dict__
            for i in range(len(names)):
                if state.get(names[i], _MISSING) is not values[i]:
                    return False
        else:
            for i in range(len(names)):
                if getattr(obj, names[i]) is not values[i]:
                    return False
    for array, kind in arrays:
        if type(array) is not np.ndarray:
            return False
        a = array
        shape = kind[0]
        ndim = cnp.PyArray_NDIM(a)
        if (ndim != len(shape) or <object>cnp.PyArray_DESCR(a) is not kind[1]
                or ((cnp.PyArray_FLAGS(a) & wanted) == wanted) is not kind[2]):
            return False
        for i in range(ndim):
            if cnp.PyArray_DIMS(a)[i] != <cnp.npy_intp>shape[i]:
                return False
    return True


_MISSING = object()
