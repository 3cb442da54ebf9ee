"""Softmax cross-entropy's value and gradient in one pass per row
(cyconv/nn/losses.py checks the arguments, the labels' range included,
except for by_labels, which checks its own and leaves anything else to
it).

In numpy the loss took ten array expressions, each as costly as its
arithmetic on a small batch: 9% of a LeNet training step at batch 1.  Here
each row's maximum, sum of exponentials and contributions are computed in
double precision, whatever the logits' dtype, and the results rounded to
it once.
"""

from libc.math cimport exp, log
from libc.stdlib cimport free, malloc

cimport numpy as cnp
from cython cimport floating

from ._arrays cimport native_array

cnp.import_array()


cdef double _softmax_cross_entropy(
    const floating* logits,            # IN  (n, k)
    const floating* target,            # IN  (n, k) probabilities, or NULL with labels
    const Py_ssize_t* labels,          # IN  (n,) in [0, k), or NULL with target
    Py_ssize_t n, Py_ssize_t k,
    floating* grad,                    # OUT (n, k): (softmax(logits) - target) / n
    double* exps,                      # scratch (k,)
) noexcept nogil:
    """The mean over rows of logsumexp(z) - sum(target * z), and its
    gradient into ``grad``.  A class whose target is 0 adds nothing to the
    value, even where its logit is -inf (labels and their one-hot rows give
    the same bits); NaN logits give NaN."""
    cdef Py_ssize_t i, j, label = -1
    cdef const floating* z
    cdef double top, v, total, log_total, t, value = 0.0
    for i in range(n):
        z = logits + i * k
        # The row's maximum, NaN if any is (z - top is then NaN too):
        # shifting by it keeps exp() finite for logits of any size.
        top = z[0]
        for j in range(1, k):
            v = z[j]
            if v != v:
                top = v
                break
            if v > top:
                top = v
        total = 0.0
        for j in range(k):
            exps[j] = exp(z[j] - top)
            total = total + exps[j]
        log_total = log(total)
        # -log softmax(z)_j = log_total - (z_j - top)
        if labels != NULL:
            label = labels[i]
            value = value + (log_total - (z[label] - top))
        else:
            for j in range(k):
                t = target[i * k + j]
                if t != 0.0:
                    value = value + t * (log_total - (z[j] - top))
        for j in range(k):
            t = (1.0 if j == label else 0.0) if labels != NULL else target[i * k + j]
            grad[i * k + j] = <floating>((exps[j] / total - t) / n)
    return value / n


def softmax_cross_entropy(
    const floating[:, ::1] logits,     # IN  (N, K), N and K at least 1
    const floating[:, ::1] target,     # IN  (N, K) probabilities, or (0, 0) with labels
    const Py_ssize_t[::1] labels,      # IN  (N,) in [0, K), or (0,) with target
    floating[:, ::1] grad,             # OUT (N, K)
    double[::1] exps,                  # scratch (K,)
):
    """The loss as a Python float, and its gradient into ``grad`` (see
    _softmax_cross_entropy)."""
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1]
    cdef const floating* probabilities = NULL
    cdef const Py_ssize_t* classes = NULL
    cdef double value
    if labels.shape[0] == n:
        classes = &labels[0]
    else:
        probabilities = &target[0, 0]
    with nogil:
        value = _softmax_cross_entropy(&logits[0, 0], probabilities, classes, n, k,
                                       &grad[0, 0], &exps[0])
    return value


def by_labels(logits, labels):
    """``(value, gradient)`` of the loss of a batch of logits (N, K), float32
    or float64, and N integer labels (intp) in [0, K), both C-contiguous
    and native (see _arrays.native_array); None, computing nothing, for any
    other arguments, which the caller checks and converts itself.  The
    common call of a training step, in one compiled call: the checks of
    the general way cost more than a small batch's arithmetic."""
    if not (native_array(logits, 2) and native_array(labels, 1)
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>logits)
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>labels)):
        return None
    cdef cnp.ndarray z = <cnp.ndarray>logits, y = <cnp.ndarray>labels
    cdef int typenum = cnp.PyArray_TYPE(z)
    cdef Py_ssize_t n = cnp.PyArray_DIM(z, 0), k = cnp.PyArray_DIM(z, 1), i
    if ((typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64)
            or cnp.PyArray_TYPE(y) != cnp.NPY_INTP or cnp.PyArray_DIM(y, 0) != n
            or n == 0 or k == 0):
        return None
    cdef cnp.ndarray grad = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(z), typenum, 0)
    # The labels are copied as they are checked: the loop runs without the
    # GIL, while another thread could write the caller's array.
    cdef double* exps = <double*>malloc(k * sizeof(double) + n * sizeof(Py_ssize_t))
    if exps == NULL:
        raise MemoryError()
    cdef Py_ssize_t* checked = <Py_ssize_t*>(exps + k)
    cdef const Py_ssize_t* label = <const Py_ssize_t*>cnp.PyArray_DATA(y)
    for i in range(n):
        checked[i] = label[i]
        if checked[i] < 0 or checked[i] >= k:
            free(exps)
            return None  # the caller's checks say which
    cdef double value
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            value = _softmax_cross_entropy[float](
                <const float*>cnp.PyArray_DATA(z), NULL, checked, n, k,
                <float*>cnp.PyArray_DATA(grad), exps)
        else:
            value = _softmax_cross_entropy[double](
                <const double*>cnp.PyArray_DATA(z), NULL, checked, n, k,
                <double*>cnp.PyArray_DATA(grad), exps)
    free(exps)
    return value, grad
