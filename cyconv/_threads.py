"""The number of threads the kernels use."""

import numbers
import os
import threading

from ._kernels._threads import default_num_threads, openmp_enabled

# Fixed when the kernels were compiled; asked at every kernel call.
_OPENMP = openmp_enabled()

# More threads than this is no speed-up on any machine cyconv runs on, and
# far more cannot be started at all: libgomp then ends the process (exit
# status 1, or a segmentation fault) rather than report an error.
MAX_THREADS = 1024

_num_threads = None
# A count chosen by timing, in force while nobody chose one (see
# _autothreads.py), for the thread whose fit chose it: two threads training
# at once time their own steps.  None outside Sequential.fit.
_tuned = threading.local()

# Whether this process was forked from one whose kernels may have started
# OpenMP threads, and has not chosen a thread count since.
_forked = False


def _after_fork_in_child():
    # libgomp is not fork-safe: a child forked after a parallel region ran
    # on 2+ threads inherits a thread pool whose threads do not exist, and
    # its first parallel region of 2+ threads waits for them forever.  A
    # team of one thread never touches the pool, so the child runs its
    # kernels on one thread until it sets a count itself.
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Set the number of threads cyconv's kernels use.

    Parameters
    ----------
    n : int or None
        A thread count from 1 to 1024, or None to return to the default
        (``OMP_NUM_THREADS`` where set, else the number of cores; at most
        1024 either way).

    Raises
    ------
    TypeError
        For anything but an int or None.
    ValueError
        For an int below 1 or above 1024.

    Notes
    -----
    Results are bitwise identical whatever the thread count: each output
    element is computed by one thread in a fixed order.

    A process forked from one that used cyconv (``multiprocessing``'s
    ``"fork"`` start method, the default on Linux before Python 3.14, or
    ``os.fork``) runs the kernels on one thread: OpenMP's thread pool does
    not survive a fork, and a child using it would hang.  Calling
    ``set_num_threads`` in the child (with None for the default) lifts
    this; do so only in a child forked before any kernel ran on 2 or more
    threads, or one that replaced its OpenMP runtime, as a child does that
    was started with ``"spawn"`` or ``"forkserver"`` (those never need it).

    Examples
    --------
    >>> import cyconv
    >>> cyconv.set_num_threads(1)
    >>> cyconv.get_num_threads()
    1
    >>> cyconv.set_num_threads(None)
    """
    global _num_threads, _forked
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"num_threads must be a positive int or None, got {n!r}")
        if n < 1:
            raise ValueError(f"num_threads must be a positive int or None, got {n!r}")
        if n > MAX_THREADS:
            raise ValueError(f"num_threads must be at most {MAX_THREADS}, got {n!r}")
        n = int(n)
    _num_threads = n
    _forked = False


def get_num_threads():
    """Return the number of threads cyconv's kernels use.

    Always 1 where cyconv was built without OpenMP, and in a forked child
    until it calls :func:`set_num_threads` (see there).

    Examples
    --------
    >>> import cyconv
    >>> cyconv.get_num_threads() >= 1
    True
    """
    if not _OPENMP or _forked:
        return 1
    if _num_threads is None:
        return getattr(_tuned, "count", None) or default_count()
    return _num_threads


def default_count():
    """The count nobody chose: ``OMP_NUM_THREADS`` or every core, at most
    MAX_THREADS."""
    return max(1, min(default_num_threads(), MAX_THREADS))


def chosen():
    """Whether the thread count was chosen (set_num_threads,
    ``OMP_NUM_THREADS``) or forced (no OpenMP, a forked child), rather
    than left to cyconv."""
    return (_num_threads is not None or "OMP_NUM_THREADS" in os.environ
            or not _OPENMP or _forked)
