"""The number of threads the kernels use."""

import numbers

from ._kernels._threads import default_num_threads, openmp_enabled

_num_threads = None


def set_num_threads(n):
    """Set the number of threads cyconv's kernels use.

    Parameters
    ----------
    n : int or None
        A positive thread count, or None to return to the default
        (``OMP_NUM_THREADS`` where set, else the number of cores).

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
        return max(1, default_num_threads())
    return _num_threads
