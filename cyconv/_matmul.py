"""Matrix products for the dense layer, on one thread.

``numpy.matmul`` hands a product to numpy's own BLAS, whose thread pool
then competes for the cores with the kernels' OpenMP threads: on a busy
two-core machine a 32 x 400 x 64 product measured 15 ms inside a training
loop instead of 0.1 ms.  Going through scipy's BLAS with its threads held to
one (as the convolution kernels do) avoids that, and makes the result
independent of any thread count, as cyconv promises.
"""

import numpy as np

from ._blas import single_threaded_blas
from ._deferred import Deferred

# Loaded at the first product, not with cyconv (see _deferred).
_conv = Deferred("cyconv._kernels._conv")

# OpenBLAS runs a product of at most 65536 * GEMM_MULTITHREAD_THRESHOLD
# multiply-adds on its caller's thread (interface/gemm.c; the threshold is
# at least 1): below this, holding its threads to one changes nothing, and
# costs two settings a call, more than a batch-1 dense layer's product.
_CALLERS_THREAD_MACS = 65536


def _product(a, b, out):
    """One BLAS call from the compiled kernels, each operand read where it
    lies (scipy's Python wrapper cost about 10 us more a call, more than a
    batch-1 dense layer's arithmetic); False where BLAS cannot take an
    operand's strides."""
    if a.shape[0] * a.shape[1] * b.shape[1] <= _CALLERS_THREAD_MACS:
        return _conv.matmul(a, b, out)
    with single_threaded_blas():
        return _conv.matmul(a, b, out)


def matmul(a, b):
    """``a @ b`` for 2-D arrays of one float dtype, as a C-ordered array."""
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    if 0 in out.shape:
        return out
    if a.shape[1] == 0:
        out[...] = 0
        return out
    if _product(a, b, out) or _product(np.ascontiguousarray(a), np.ascontiguousarray(b), out):
        return out
    raise ValueError(f"matrices of shapes {a.shape} and {b.shape} exceed the sizes BLAS takes")
