"""Scratch arrays the kernels' passes keep from one call to the next.

A pass of the direct kernels (cyconv/_conv_direct.py) hands its kernels a
few scratch arrays (padded copies, register tiles) that nothing reads
after the kernel call.  Allocating them, and making the typed memoryview
a kernel takes of each, cost 0.3 us an array: 4 of the 90 us of a LeNet
training step at batch 1 (Intel Xeon, AVX-512), more than some of its
kernels' arithmetic.  So a pass with small scratch keeps it, as typed
memoryviews (see _kernels/_views.pyx), for the next call in the same
thread; a pass with large scratch allocates it at every call, as before
(the allocation is then a small part of the call, and the memory is not
held after it).

Kept per thread (another thread's call may be running the same pass with
the GIL released), at most KEEP_BYTES a pass and KEPT_BYTES a thread in
all (past that, what the thread kept is dropped and kept anew).  A thread's
scratch is freed when the thread ends, or when it calls
``cyconv.release_memory()``.

Only what one kernel call writes and reads is kept: between two kernel
calls Python runs (a garbage collection's callbacks, finalizers), which
may call the same pass again in the same thread.  A pass's packed
weights, written by one kernel and read by the next, are made at each
call.
"""

import threading

import numpy as np

from ._kernels._views import typed_view

# Scratch of at most this many bytes a pass is kept...
KEEP_BYTES = 256 << 10
# ...up to this many a thread.
KEPT_BYTES = 4 << 20

_kept = threading.local()


class Scratch:
    """The scratch arrays of one pass: uninitialised, of fixed shapes and
    one dtype.

    ``views()`` gives them as typed memoryviews for one call, the same
    ones each call of this thread where they are small."""

    __slots__ = ("shapes", "dtype", "nbytes")

    def __init__(self, shapes, dtype):
        self.shapes = tuple(tuple(shape) for shape in shapes)
        self.dtype = np.dtype(dtype)
        self.nbytes = sum(int(np.prod(shape)) for shape in self.shapes) * self.dtype.itemsize

    def views(self):
        """The arrays as typed memoryviews (see _kernels/_views.pyx)."""
        kept = _kept.__dict__
        views = kept.get(self)
        if views is None:
            views = tuple(typed_view(np.empty(shape, self.dtype)) for shape in self.shapes)
            if self.nbytes <= KEEP_BYTES:
                total = kept.get("bytes", 0) + self.nbytes
                if total > KEPT_BYTES:
                    kept.clear()
                    total = self.nbytes
                kept[self] = views
                kept["bytes"] = total
        return views


def release():
    """Drop the scratch the calling thread keeps; return its bytes."""
    kept = _kept.__dict__
    held = kept.get("bytes", 0)
    kept.clear()
    return held
