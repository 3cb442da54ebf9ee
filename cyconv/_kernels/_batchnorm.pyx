# Design
# ------
# Batch normalisation over axis 1, forward and backward.  The caller views
# its (N, C, H, W) or (N, C) input as a C-contiguous (N, C, L) array
# (L = H*W, or 1), so that channel c is N runs of L contiguous elements.
#
# * Threads split the channels: every statistic of a channel, and every
#   element of its output, is computed by one thread in one fixed order
#   (n, then l), so results are bitwise identical whatever the thread count.
# * One pass per statistic: the mean, then the sum of squared deviations
#   from it (two passes rather than one sum of squares, which cancels
#   catastrophically when the mean is large beside the spread), then the
#   normalisation.  The backward pass reads its two sums in one pass and
#   writes the input's gradient in a second.
# * Every sum is accumulated in double, also for float32 data, and the
#   per-channel statistics (mean, inverse standard deviation) are double.
# * Eval mode is the same normalisation with the running statistics in
#   place of the batch's; its gradient drops the terms that come from the
#   statistics depending on the batch (``batch_stats`` false).

from cython cimport floating
from cython.parallel cimport prange


def batch_norm_stats(
    const floating[:, :, ::1] x,  # IN  (N, C, L)
    double[::1] mean,             # OUT (C,) the batch mean of each channel
    double[::1] var,              # OUT (C,) the biased batch variance of each channel
    int n_threads,
):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t c, n, l
    cdef double total, deviation, channel_mean
    cdef double count = <double>(N * L)
    for c in prange(C, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        total = 0
        for n in range(N):
            for l in range(L):
                total = total + x[n, c, l]
        channel_mean = total / count
        total = 0
        for n in range(N):
            for l in range(L):
                deviation = x[n, c, l] - channel_mean
                total = total + deviation * deviation
        mean[c] = channel_mean
        var[c] = total / count


def batch_norm_apply(
    const floating[:, :, ::1] x,  # IN  (N, C, L)
    const double[::1] mean,       # IN  (C,)
    const double[::1] invstd,     # IN  (C,) 1 / sqrt(var + eps)
    const floating[::1] gamma,    # IN  (C,)
    const floating[::1] beta,     # IN  (C,)
    floating[:, :, ::1] out,      # OUT (N, C, L)
    int n_threads,
):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t c, n, l
    cdef double channel_mean, scale, shift
    for c in prange(C, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        channel_mean = mean[c]
        scale = invstd[c] * gamma[c]
        shift = beta[c]
        for n in range(N):
            for l in range(L):
                out[n, c, l] = <floating>((x[n, c, l] - channel_mean) * scale + shift)


def batch_norm_backward(
    const floating[:, :, ::1] grad,  # IN  (N, C, L) gradient of the output
    const floating[:, :, ::1] x,     # IN  (N, C, L) the forward pass's input
    const double[::1] mean,          # IN  (C,) the mean x was normalised with
    const double[::1] invstd,        # IN  (C,) the 1 / sqrt(var + eps) it was scaled by
    const floating[::1] gamma,       # IN  (C,)
    floating[:, :, ::1] grad_input,  # OUT (N, C, L)
    floating[::1] grad_gamma,        # OUT (C,)
    floating[::1] grad_beta,         # OUT (C,)
    bint batch_stats,                # IN  whether mean and invstd are x's own
    int n_threads,
):
    # With xhat = (x - mean) * invstd, the sums g_sum = sum(grad) and
    # gx_sum = sum(grad * xhat) are the gradients of beta and gamma, and
    #   grad_input = gamma * invstd * (grad - g_sum / M - xhat * gx_sum / M)
    # when mean and invstd are the batch's own (M values per channel), else
    #   grad_input = gamma * invstd * grad.
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t c, n, l
    cdef double g_sum, gx_sum, channel_mean, channel_invstd, scale, xhat
    cdef double mean_g, mean_gx
    cdef double count = <double>(N * L)
    for c in prange(C, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        channel_mean = mean[c]
        channel_invstd = invstd[c]
        g_sum = 0
        gx_sum = 0
        for n in range(N):
            for l in range(L):
                g_sum = g_sum + grad[n, c, l]
                gx_sum = gx_sum + grad[n, c, l] * (x[n, c, l] - channel_mean)
        gx_sum = gx_sum * channel_invstd
        grad_beta[c] = <floating>g_sum
        grad_gamma[c] = <floating>gx_sum
        scale = gamma[c] * channel_invstd
        if batch_stats:
            mean_g = g_sum / count
            mean_gx = gx_sum / count
            for n in range(N):
                for l in range(L):
                    xhat = (x[n, c, l] - channel_mean) * channel_invstd
                    grad_input[n, c, l] = <floating>(
                        scale * (grad[n, c, l] - mean_g - xhat * mean_gx))
        else:
            for n in range(N):
                for l in range(L):
                    grad_input[n, c, l] = <floating>(scale * grad[n, c, l])
