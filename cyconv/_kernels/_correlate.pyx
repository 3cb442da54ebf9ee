# Design
# ------
# One loop serves both scipy.signal-style functions: the "valid"
# cross-correlation of an input that the caller has already extended past
# its borders (fill, wrap or symmetric) with a small 2-D kernel.
#
# * Every mode and boundary is reduced to this by the caller: it builds the
#   extended input, in blocks, (or passes the input itself where the kernel
#   lies inside it, which is all of "valid" mode), flips the
#   kernel for a convolution, and sizes ``out`` so that the extended input
#   has exactly ``Hout + kh - 1`` rows and ``Wout + kw - 1`` columns.  Every
#   index below is then ``oh + i < ext.shape[0]`` and
#   ``ow + j < ext.shape[1]``.
# * Threads split the output rows; each element is summed by one thread, tap
#   by tap in row-major kernel order, so results are bitwise identical
#   whatever the thread count.
# * For one output row all taps are accumulated before moving on, so the row
#   stays in the first-level cache; the innermost loop runs along that row,
#   contiguous in both the output and the extended input, and the compiler
#   vectorises it without reassociating any sum (no -ffast-math needed).

from cython cimport floating
from cython.parallel cimport prange


cdef void _correlate_row(
    const floating[:, :] ext,       # IN  (Hout + kh - 1, Wout + kw - 1), contiguous rows
    const floating[:, ::1] kernel,  # IN  (kh, kw)
    floating* orow,                 # OUT row oh of the output, Wout long
    Py_ssize_t oh,
    Py_ssize_t Wout,
) noexcept nogil:
    cdef Py_ssize_t kh = kernel.shape[0], kw = kernel.shape[1]
    cdef Py_ssize_t i, j, ow
    cdef floating w
    cdef const floating* xrow
    for ow in range(Wout):
        orow[ow] = 0
    for i in range(kh):
        for j in range(kw):
            w = kernel[i, j]
            xrow = &ext[oh + i, j]
            for ow in range(Wout):
                orow[ow] += w * xrow[ow]


def correlate2d_valid(
    const floating[:, :] ext,       # IN  (Hout + kh - 1, Wout + kw - 1) extended input
    const floating[:, ::1] kernel,  # IN  (kh, kw)
    floating[:, :] out,             # OUT (Hout, Wout)
    int n_threads,
):
    # ext and out may be blocks of larger arrays (the caller computes the
    # interior of the output straight from the input, and the border strips
    # from small extensions), so their rows may be further apart than their
    # width; but each row must be contiguous, which the caller guarantees:
    # the loops below index within a row by pointer.
    cdef Py_ssize_t oh
    cdef Py_ssize_t Wout = out.shape[1]
    for oh in prange(out.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        _correlate_row(ext, kernel, &out[oh, 0], oh, Wout)
