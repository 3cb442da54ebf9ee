# Design
# ------
# ReLU, ``np.maximum(x, 0)``, and its gradient, ``grad * (x > 0)``, in one
# pass each, bit for bit what numpy gives (tested).
#
# * Forward: x where x > 0, x itself where NaN (payload and sign), else
#   +0.0 (also for -0.0, as numpy's maximum gives it).  numpy's maximum
#   runs at a third of the memory bandwidth here, as it tests every pair
#   for NaN; this is one compare and a select an element.  ``out`` may
#   be ``x`` itself.
# * The loops are in relu_loops.h, compiled for AVX-512, AVX2 and the
#   baseline; each thread runs one of n_threads equal shares.
#
# The gradient in one pass.  numpy needs two
# (the mask, then a multiply that converts the mask element by element
# through a buffered cast) and a temporary as large as ``x`` for the mask:
# in a LeNet training step that was the largest single cost after the
# convolutions.
#
# * The gradient is multiplied by exactly 1 or 0, as numpy does, so that
#   the results are the same bits: NaN and infinite gradients give NaN
#   where x <= 0 or x is NaN, and a negative gradient gives -0.0 there.
# * The caller passes C-contiguous arrays of one size, flattened.  Threads
#   split the elements; each is written once, so results do not depend on
#   the thread count.

from cython cimport floating
from cython.parallel cimport prange

cdef extern from "relu_loops.h" nogil:
    void rl_forward_f32(const float* x, float* out, Py_ssize_t n)
    void rl_forward_f64(const double* x, double* out, Py_ssize_t n)
    void rl_backward_f32(const float* grad, const float* x, float* out, Py_ssize_t n)
    void rl_backward_f64(const double* grad, const double* x, double* out, Py_ssize_t n)


cdef inline Py_ssize_t _share(Py_ssize_t n, int parts, int part) noexcept nogil:
    # Where part `part` of `parts` equal shares of n elements starts.
    return n * part // parts


def relu_backward(
    const floating[::1] grad,   # IN  (n,)
    const floating[::1] x,      # IN  (n,) the forward pass's input
    floating[::1] out,          # OUT (n,) may be grad's memory
    int n_threads,
):
    _in_shares(grad, x, out, n_threads, True)


def relu_forward(
    const floating[::1] x,      # IN  (n,)
    floating[::1] out,          # OUT (n,) may be x's memory
    int n_threads,
):
    _in_shares(x, x, out, n_threads, False)


cdef void _in_shares(
    const floating[::1] grad,   # IN  (n,) read by the backward pass only
    const floating[::1] x,      # IN  (n,)
    floating[::1] out,          # OUT (n,)
    int n_threads,
    bint backward,
) noexcept:
    # Thread t of n_threads runs the loop on share t of the elements.
    cdef Py_ssize_t n = x.shape[0], start, stop
    cdef int t
    if n == 0:
        return
    for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        start = _share(n, n_threads, t)
        stop = _share(n, n_threads, t + 1)
        if floating is float:
            if backward:
                rl_backward_f32(&grad[start], &x[start], &out[start], stop - start)
            else:
                rl_forward_f32(&x[start], &out[start], stop - start)
        else:
            if backward:
                rl_backward_f64(&grad[start], &x[start], &out[start], stop - start)
            else:
                rl_forward_f64(&x[start], &out[start], stop - start)
