# Design
# ------
# ReLU, ``np.maximum(x, 0)``, and its gradient, ``grad * (x > 0)``, in one
# pass each, bit for bit what numpy gives (tested).
#
# * Forward: x where x > 0, x itself where NaN (payload and sign), else
#   +0.0 (also for -0.0, as numpy's maximum gives it).  numpy's maximum
#   runs at a third of the memory bandwidth here, as it tests every pair
#   for NaN; this is one compare and two selects an element.  ``out`` may
#   be ``x`` itself.
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


def relu_backward(
    const floating[::1] grad,   # IN  (n,)
    const floating[::1] x,      # IN  (n,) the forward pass's input
    floating[::1] out,          # OUT (n,)
    int n_threads,
):
    cdef Py_ssize_t i
    for i in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        out[i] = grad[i] * (1 if x[i] > 0 else 0)


def relu_forward(
    const floating[::1] x,      # IN  (n,)
    floating[::1] out,          # OUT (n,) may be x's memory
    int n_threads,
):
    cdef Py_ssize_t i
    cdef floating value
    for i in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        value = x[i]
        # "not <= 0" is "> 0 or NaN": one compare, which vectorises.
        out[i] = value if not (value <= 0) else 0
