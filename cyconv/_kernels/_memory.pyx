"""numpy allocation handler that keeps freed array memory for reuse: see
memory_cache.h for why and how, and cyconv/_memory.py for where it is used."""

from cpython.pycapsule cimport PyCapsule_New
from cpython.ref cimport PyObject

cimport numpy as cnp

cnp.import_array()

cdef extern from "memory_cache.h":
    ctypedef struct PyDataMem_Handler:
        pass
    PyDataMem_Handler mc_handler
    size_t mc_held, mc_limit
    unsigned long long mc_hits, mc_misses
    size_t MC_MIN_BYTES
    int mc_init(object default_handler, size_t limit) except -1
    size_t mc_release() noexcept nogil
    int mc_after_fork_in_child() except -1

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)
    object PyDataMem_GetHandler()
    PyObject* PyDataMem_DefaultHandler

# Bytes kept at most (a CIFAR-like training step at batch 64 frees about
# 60 MB of arrays of the sizes it asks for again next step).
DEFAULT_LIMIT = 128 << 20
MIN_BYTES = MC_MIN_BYTES

mc_init(<object>PyDataMem_DefaultHandler, DEFAULT_LIMIT)

HANDLER = PyCapsule_New(&mc_handler, "mem_handler", NULL)


def after_fork_in_child():
    """Give a forked child a lock of its own (see memory_cache.h)."""
    mc_after_fork_in_child()


def enter():
    """Make the cache the current context's array allocator; return the
    handler it replaces, for :func:`leave`."""
    # Setting a handler sets a context variable, which copies the
    # context: inside a model's pass, whose layers each enter again, the
    # cache is already in place and the nested calls need not set it.
    current = PyDataMem_GetHandler()
    if current is HANDLER:
        return current
    return PyDataMem_SetHandler(HANDLER)


def leave(previous):
    """Restore the handler :func:`enter` returned."""
    if previous is not HANDLER or PyDataMem_GetHandler() is not HANDLER:
        PyDataMem_SetHandler(previous)


def release():
    """Free every cached block; return the bytes released."""
    return mc_release()


def set_limit(size_t limit):
    """Keep at most ``limit`` bytes from now on (0 keeps none); releases
    what is cached."""
    global mc_limit
    mc_limit = limit
    mc_release()


def stats():
    """``{"held", "limit", "hits", "misses"}``: bytes cached now and the
    most kept; requests of a cacheable size served from the cache and not."""
    return {"held": mc_held, "limit": mc_limit, "hits": mc_hits, "misses": mc_misses}
