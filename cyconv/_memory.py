"""Array memory that cyconv's own calls reuse from one training step to the
next.

Inside every layer's ``forward`` and ``backward`` (and each training step
of ``Sequential.fit``, its loss and optimizer included), numpy allocates through a
handler that keeps freed blocks of 32 KiB or more, up to 128 MiB in all, and
gives each back to the next request of the same size (see
``_kernels/memory_cache.h``): a training step asks for the same arrays
every step, and fresh pages cost more than small layers' arithmetic (a
LeNet step at batch 64: 3.8-4.1 ms without, 2.4-2.6 ms with; AMD EPYC Zen 4,
one thread).  Only arrays allocated inside those calls are concerned; the
caller's handler is restored on return, and ``import cyconv`` changes
nothing.  An array is never handed out while it is alive: a block is reused
only after numpy freed it.  (Arrays allocated inside those calls bypass a
numpy allocation handler of the caller's own, if one was set.)

``cyconv.release_memory()`` frees what is kept (say, after training, in a
long-lived process that needs the memory back).
"""

import contextlib
import os

from . import _scratch

from ._kernels._memory import (after_fork_in_child, enter, leave, release, set_limit,  # noqa: F401
                               stats)

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)


def release_memory():
    """Free the array memory cyconv keeps for reuse between training steps.

    Layers' ``forward`` and ``backward`` (so ``fit``, ``predict`` and
    ``evaluate`` too) keep up to 128 MiB of the arrays they free, for the
    next step's arrays of the same sizes; and the convolutions keep their
    small scratch arrays, up to 4 MiB a thread, for their next call in that
    thread.  Training frees nothing more by itself; a long-lived process
    that needs the memory back calls this (the scratch of the calling
    thread: other threads' goes when they end).

    Returns
    -------
    int
        The bytes the cache released (the scratch is released too, and
        counted here where a layer's call allocated it).

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> pool = cyconv.MaxPooling(2)
    >>> out = pool.forward(np.zeros((64, 8, 26, 26), np.float32))
    >>> grad = pool.backward(np.ones_like(out))
    >>> del out, grad
    >>> cyconv.release_memory() >= 0
    True
    """
    # The scratch first: those of its arrays that a layer's call allocated
    # go back to the cache when dropped, which then frees them too.
    _scratch.release()
    return release()


@contextlib.contextmanager
def reusing():
    """Within this block, numpy arrays are allocated through the cache."""
    previous = enter()
    try:
        yield
    finally:
        leave(previous)
