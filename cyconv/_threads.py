"""The number of threads the kernels use."""

import numbers

from ._kernels._threads import default_num_threads, openmp_enabled

# More threads than this is no speed-up on any machine cyconv runs on, and
# far more cannot be started at all: libgomp then ends the process (exit
# status 1, or a segmentation fault) rather than report an error.
MAX_THREADS = 1024

_num_threads = None


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

    Examples
    --------
    >>> import cyconv
    >>> cyconv.set_num_threads(1)
    >>> cyconv.get_num_threads()
    1
    >>> cyconv.set_num_threads(None)
    """
    global _num_threads
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"num_threads must be a positive int or None, got {n!r}")
        if n < 1:
            raise ValueError(f"num_threads must be a positive int or None, got {n!r}")
        if n > MAX_THREADS:
            raise ValueError(f"num_threads must be at most {MAX_THREADS}, got {n!r}")
        n = int(n)
    _num_threads = n


def get_num_threads():
    """Return the number of threads cyconv's kernels use.

    Always 1 where cyconv was built without OpenMP.

    Examples
    --------
    >>> import cyconv
    >>> cyconv.get_num_threads() >= 1
    True
    """
    if not openmp_enabled():
        return 1
    if _num_threads is None:
        return max(1, min(default_num_threads(), MAX_THREADS))
    return _num_threads
