"""Softmax cross-entropy's value and gradient in one pass per row
(cyconv/nn/losses.py checks the arguments, the labels' range included).

In numpy the loss took ten array expressions, each as costly as its
arithmetic on a small batch: 9% of a LeNet training step at batch 1.  Here
each row's maximum, sum of exponentials and contributions are computed in
double precision, whatever the logits' dtype, and the results rounded to
it once.
"""

from libc.math cimport exp, log

from cython cimport floating


def softmax_cross_entropy(
    const floating[:, ::1] logits,     # IN  (N, K)
    const floating[:, ::1] target,     # IN  (N, K) probabilities, or (0, 0) with labels
    const Py_ssize_t[::1] labels,      # IN  (N,) in [0, K), or (0,) with target
    floating[:, ::1] grad,             # OUT (N, K): (softmax(logits) - target) / N
    double[::1] exps,                  # scratch (K,)
):
    """The mean over rows of logsumexp(z) - sum(target * z), as a Python
    float, and its gradient into ``grad``.  A class whose target is 0 adds
    nothing to the value, even where its logit is -inf (labels and their
    one-hot rows give the same bits); NaN logits give NaN."""
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1], i, j, label = -1
    cdef bint by_label = labels.shape[0] == n
    cdef double top, v, total, log_total, t, value = 0.0
    with nogil:
        for i in range(n):
            # The row's maximum, NaN if any is (z - top is then NaN too):
            # shifting by it keeps exp() finite for logits of any size.
            top = logits[i, 0]
            for j in range(1, k):
                v = logits[i, j]
                if v != v:
                    top = v
                    break
                if v > top:
                    top = v
            total = 0.0
            for j in range(k):
                exps[j] = exp(logits[i, j] - top)
                total = total + exps[j]
            log_total = log(total)
            # -log softmax(z)_j = log_total - (z_j - top)
            if by_label:
                label = labels[i]
                value = value + (log_total - (logits[i, label] - top))
            else:
                for j in range(k):
                    t = target[i, j]
                    if t != 0.0:
                        value = value + t * (log_total - (logits[i, j] - top))
            for j in range(k):
                t = (1.0 if j == label else 0.0) if by_label else target[i, j]
                grad[i, j] = <floating>((exps[j] / total - t) / n)
    return value / n
