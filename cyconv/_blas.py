"""Keep scipy's BLAS single-threaded while cyconv's own threads call it.

cyconv's matrix-product kernels call BLAS (through
``scipy.linalg.cython_blas``) from inside its OpenMP threads, one call per
sample or channel block.  A BLAS with a thread pool of its own would then
start threads inside threads: oversubscription at best, and OpenBLAS's
pthreads build warns that it may hang.  So while those kernels run, the
BLAS that scipy loaded is told to use one thread, and its setting is
restored afterwards.

Only scipy's bundled OpenBLAS is known by name; with any other BLAS (MKL,
for example, which runs sequentially inside OpenMP regions by default) this
does nothing.

The setting is process-wide while the kernels release the GIL, so several
Python threads may be inside kernels at once: the first to enter saves the
setting and the last to leave restores it.
"""

import ctypes
import glob
import os
import threading

import scipy


def _scipy_openblas():
    """Return (get_num_threads, set_num_threads) of scipy's OpenBLAS, or None."""
    site = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    for path in sorted(glob.glob(os.path.join(site, "scipy.libs", "libscipy_openblas*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            getter = getattr(library, prefix + "get_num_threads", None)
            setter = getattr(library, prefix + "set_num_threads", None)
            if getter is not None and setter is not None:
                getter.restype, getter.argtypes = ctypes.c_int, []
                setter.restype, setter.argtypes = None, [ctypes.c_int]
                return getter, setter
    return None


# Searched for at the first block that needs it: loading the library is a
# tenth of cyconv's import time otherwise.
_UNSEARCHED = object()
_OPENBLAS = _UNSEARCHED


def openblas():
    """(get_num_threads, set_num_threads) of scipy's OpenBLAS, or None."""
    global _OPENBLAS
    if _OPENBLAS is _UNSEARCHED:
        _OPENBLAS = _scipy_openblas()
    return _OPENBLAS


_lock = threading.Lock()
_inside = 0  # threads within single_threaded_blas blocks
_saved = 1  # the setting the first of them found


def _after_fork_in_child():
    # Only the forking thread lives on in a child: a lock another thread
    # held at the fork would never be released, and the threads counted
    # inside are gone.  (OpenBLAS re-creates its own pool at fork.)
    global _lock, _inside
    _lock = threading.Lock()
    _inside = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _SingleThreaded:
    """The context manager :func:`single_threaded_blas` returns.

    A class rather than a generator: the dense layer enters it three times
    a training step, and a generator-based manager costs a few microseconds
    a time, as much as a small layer's whole product.  It keeps no state
    of its own (the count is the module's), so one instance serves every
    caller and nested or concurrent blocks alike."""

    __slots__ = ()

    def __enter__(self):
        global _inside, _saved
        blas = _OPENBLAS if _OPENBLAS is not _UNSEARCHED else openblas()
        if blas is None:
            return
        with _lock:
            if _inside == 0:
                _saved = blas[0]()
                if _saved != 1:
                    blas[1](1)
            _inside += 1

    def __exit__(self, *exc_info):
        global _inside
        blas = _OPENBLAS  # searched for by __enter__
        if blas is None:
            return
        with _lock:
            _inside -= 1
            if _inside == 0 and _saved != 1:
                blas[1](_saved)


_SINGLE_THREADED = _SingleThreaded()


def single_threaded_blas():
    """Within this block, scipy's OpenBLAS runs each call in its caller's thread."""
    return _SINGLE_THREADED
