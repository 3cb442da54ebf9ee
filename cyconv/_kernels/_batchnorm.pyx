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
#   normalisation.  The backward pass reads its two sums (each run twice,
#   while it is in cache) and writes the input's gradient in a second pass.
# * Every sum is accumulated in double, also for float32 data, and the
#   per-channel statistics (mean, inverse standard deviation) are double.
#   A run of L contiguous elements is summed into four partial sums
#   (element l into sum l % 4), added up in a fixed order: one running sum
#   would make every addition wait for the one before, four keep the
#   adder busy.  The order depends only on L, never on the threads.
# * Eval mode is the same normalisation with the running statistics in
#   place of the batch's; its gradient drops the terms that come from the
#   statistics depending on the batch (``batch_stats`` false).

import numpy as np

from cython cimport floating
from cython.parallel cimport prange


cdef inline double _sum(const floating* run, Py_ssize_t L) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t l = 0
    while l + 4 <= L:
        s0 += run[l]
        s1 += run[l + 1]
        s2 += run[l + 2]
        s3 += run[l + 3]
        l += 4
    while l < L:
        s0 += run[l]
        l += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _sum_squared_deviations(
    const floating* run, Py_ssize_t L, double mean,
) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, d0, d1, d2, d3
    cdef Py_ssize_t l = 0
    while l + 4 <= L:
        d0 = run[l] - mean
        d1 = run[l + 1] - mean
        d2 = run[l + 2] - mean
        d3 = run[l + 3] - mean
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        l += 4
    while l < L:
        d0 = run[l] - mean
        s0 += d0 * d0
        l += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _sum_products_of_deviations(
    const floating* grad, const floating* run, Py_ssize_t L, double mean,
) noexcept nogil:
    # sum(grad * (run - mean))
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t l = 0
    while l + 4 <= L:
        s0 += grad[l] * (run[l] - mean)
        s1 += grad[l + 1] * (run[l + 1] - mean)
        s2 += grad[l + 2] * (run[l + 2] - mean)
        s3 += grad[l + 3] * (run[l + 3] - mean)
        l += 4
    while l < L:
        s0 += grad[l] * (run[l] - mean)
        l += 1
    return (s0 + s1) + (s2 + s3)


def batch_norm_stats(
    const floating[:, :, ::1] x,  # IN  (N, C, L)
    double[::1] mean,             # OUT (C,) the batch mean of each channel
    double[::1] var,              # OUT (C,) the biased batch variance of each channel
    int n_threads,
):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t t, c, n, first, last
    cdef double count = <double>(N * L)
    # Each thread takes a run of channels and walks them sample by sample:
    # memory in order, where channel by channel would jump C * L elements
    # from one sample's run to the next (on (64, 32, 32, 32) float32 those
    # runs all fall into the same cache sets, and the second pass read
    # everything again from memory).  Each channel's sums still add its
    # runs in the order n = 0, 1, ...: the same result.
    for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        first = C * t // n_threads
        last = C * (t + 1) // n_threads
        for c in range(first, last):
            mean[c] = 0
            var[c] = 0
        for n in range(N):
            for c in range(first, last):
                mean[c] += _sum(&x[n, c, 0], L)
        for c in range(first, last):
            mean[c] = mean[c] / count
        for n in range(N):
            for c in range(first, last):
                var[c] += _sum_squared_deviations(&x[n, c, 0], L, mean[c])
        for c in range(first, last):
            var[c] = var[c] / count


def batch_norm_apply(
    const floating[:, :, ::1] x,  # IN  (N, C, L)
    const double[::1] mean,       # IN  (C,)
    const double[::1] invstd,     # IN  (C,) 1 / sqrt(var + eps)
    const floating[::1] gamma,    # IN  (C,)
    const floating[::1] beta,     # IN  (C,)
    floating[:, :, ::1] out,      # OUT (N, C, L)
    bint relu,                    # IN  store max(out, 0), as np.maximum would
    int n_threads,
):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t t, c, n, l, first, last
    cdef double channel_mean, scale, shift
    cdef floating value
    # Sample by sample, as batch_norm_stats.
    for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        first = C * t // n_threads
        last = C * (t + 1) // n_threads
        for n in range(N):
            for c in range(first, last):
                channel_mean = mean[c]
                scale = invstd[c] * gamma[c]
                shift = beta[c]
                if relu:
                    for l in range(L):
                        value = <floating>((x[n, c, l] - channel_mean) * scale + shift)
                        # np.maximum(value, 0) on the rounded value: NaN
                        # stays, -0.0 becomes +0.0.
                        out[n, c, l] = value if value > 0 or value != value else 0
                else:
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
    cdef Py_ssize_t t, c, n, l, first, last
    cdef double channel_mean, channel_invstd, scale, xhat, mean_g, mean_gx
    cdef double count = <double>(N * L)
    cdef double[::1] g_sum = np.zeros(C), gx_sum = np.zeros(C)
    # Sample by sample, as batch_norm_stats.
    for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        first = C * t // n_threads
        last = C * (t + 1) // n_threads
        for n in range(N):
            for c in range(first, last):
                g_sum[c] += _sum(&grad[n, c, 0], L)
                gx_sum[c] += _sum_products_of_deviations(&grad[n, c, 0], &x[n, c, 0], L,
                                                         mean[c])
        for c in range(first, last):
            gx_sum[c] = gx_sum[c] * invstd[c]
            grad_beta[c] = <floating>g_sum[c]
            grad_gamma[c] = <floating>gx_sum[c]
        for n in range(N):
            for c in range(first, last):
                channel_mean = mean[c]
                channel_invstd = invstd[c]
                scale = gamma[c] * channel_invstd
                if batch_stats:
                    mean_g = g_sum[c] / count
                    mean_gx = gx_sum[c] / count
                    for l in range(L):
                        xhat = (x[n, c, l] - channel_mean) * channel_invstd
                        grad_input[n, c, l] = <floating>(
                            scale * (grad[n, c, l] - mean_g - xhat * mean_gx))
                else:
                    for l in range(L):
                        grad_input[n, c, l] = <floating>(scale * grad[n, c, l])
