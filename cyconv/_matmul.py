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

# Imported at the first product, not with cyconv (see _deferred): the
# compiled product links to scipy.linalg.cython_blas.
_matmul = Deferred("cyconv._kernels._matmul")
blas = Deferred("scipy.linalg.blas")

# OpenBLAS runs a product of at most 65536 * GEMM_MULTITHREAD_THRESHOLD
# multiply-adds on its caller's thread (interface/gemm.c; the threshold is
# at least 1): below this, holding its threads to one changes nothing, and
# costs two settings a call, more than a batch-1 dense layer's product.
_CALLERS_THREAD_MACS = 65536


def _fortran_operand(matrix):
    """Return (array, transpose flag) with a Fortran-ordered array whose
    flagged transpose is ``matrix``, copying only when neither order fits."""
    if matrix.flags.f_contiguous:
        return matrix, 0
    if matrix.flags.c_contiguous:
        return matrix.T, 1
    return np.asfortranarray(matrix), 0


def _by_f2py(a, b):
    """``a @ b`` through scipy's f2py wrapper of BLAS, which takes any
    layout and size (copying where neither order fits)."""
    gemm = blas.sgemm if a.dtype == np.float32 else blas.dgemm
    # (a b)^T = b^T a^T, computed in Fortran order, is a b in C order.
    left, trans_left = _fortran_operand(b.T)
    right, trans_right = _fortran_operand(a.T)
    return gemm(1.0, left, right, trans_a=trans_left, trans_b=trans_right).T


def _product(a, b):
    """``a @ b``: the compiled call where it takes the arrays (the same BLAS
    call as f2py's, without its wrapper), else f2py's."""
    out = _matmul.product(a, b)
    return _by_f2py(a, b) if out is None else out


def matmul(a, b):
    """``a @ b`` for 2-D arrays of one float dtype, as a C-ordered array."""
    if a.shape[0] * a.shape[1] * b.shape[1] <= _CALLERS_THREAD_MACS:
        return _product(a, b)
    with single_threaded_blas():
        return _product(a, b)


def affine(x, weight, bias):
    """``x @ weight.T + bias`` (bias None: without it) for 2-D arrays of one
    float dtype, as a C-ordered array: the product, then the bias added in
    place, numpy's ``out += bias`` to the bit (compiled: numpy's dispatch
    cost more than a small batch's adds)."""
    out = matmul(x, weight.T)
    if bias is not None and not _matmul.add_bias(out, bias):
        out += bias
    return out


def sum_rows(g):
    """The rows of a 2-D float array added in order to zeros, first to
    last: a dense layer's bias gradient, in the order of the convolutions'
    (compiled; numpy's reduction sums pairwise along one column, and its
    dispatch cost more than a small batch's adds)."""
    total = _matmul.sum_rows(g)
    if total is None:  # an array the compiled sum does not take
        total = np.add.reduce(g, axis=0)
    return total
