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
#   (element l into sum l % 4), added up in a fixed order.  The order
#   depends only on L, never on the threads.
# * The loops over a run are C (batchnorm_loops.h), vectorised, with the
#   sums of four channels advancing together: a run's own sums each wait
#   for their last addition.
# * Eval mode is the same normalisation with the running statistics in
#   place of the batch's; its gradient drops the terms that come from the
#   statistics depending on the batch (``batch_stats`` false).

import numpy as np

from cython cimport floating
from cython.parallel cimport prange


cdef extern from "batchnorm_loops.h" nogil:
    # The loops over one sample's run of K channels (see the header).
    void bn_add_sums_f32(const float* x, Py_ssize_t L, Py_ssize_t K, double* sums)
    void bn_add_sums_f64(const double* x, Py_ssize_t L, Py_ssize_t K, double* sums)
    void bn_add_squared_deviations_f32(const float* x, Py_ssize_t L, Py_ssize_t K,
                                       const double* mean, double* sums)
    void bn_add_squared_deviations_f64(const double* x, Py_ssize_t L, Py_ssize_t K,
                                       const double* mean, double* sums)
    void bn_add_gradient_sums_f32(const float* g, const float* x, Py_ssize_t L, Py_ssize_t K,
                                  const double* mean, double* g_sums, double* gx_sums)
    void bn_add_gradient_sums_f64(const double* g, const double* x, Py_ssize_t L,
                                  Py_ssize_t K, const double* mean, double* g_sums,
                                  double* gx_sums)
    void bn_normalise_f32(const float* x, Py_ssize_t L, double mean, double scale,
                          double shift, int relu, float* out)
    void bn_normalise_f64(const double* x, Py_ssize_t L, double mean, double scale,
                          double shift, int relu, double* out)
    void bn_input_gradient_f32(const float* g, const float* x, Py_ssize_t L, double mean,
                               double invstd, double scale, double mean_g, double mean_gx,
                               int batch_stats, float* out)
    void bn_input_gradient_f64(const double* g, const double* x, Py_ssize_t L, double mean,
                               double invstd, double scale, double mean_g, double mean_gx,
                               int batch_stats, double* out)


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
        if first < last:
            for n in range(N):
                if floating is float:
                    bn_add_sums_f32(&x[n, first, 0], L, last - first, &mean[first])
                else:
                    bn_add_sums_f64(&x[n, first, 0], L, last - first, &mean[first])
            for c in range(first, last):
                mean[c] = mean[c] / count
            for n in range(N):
                if floating is float:
                    bn_add_squared_deviations_f32(&x[n, first, 0], L, last - first,
                                                  &mean[first], &var[first])
                else:
                    bn_add_squared_deviations_f64(&x[n, first, 0], L, last - first,
                                                  &mean[first], &var[first])
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
    cdef Py_ssize_t t, c, n, first, last
    cdef double scale
    # Sample by sample, as batch_norm_stats.
    for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        first = C * t // n_threads
        last = C * (t + 1) // n_threads
        for n in range(N):
            for c in range(first, last):
                scale = invstd[c] * gamma[c]
                if floating is float:
                    bn_normalise_f32(&x[n, c, 0], L, mean[c], scale, beta[c], relu,
                                     &out[n, c, 0])
                else:
                    bn_normalise_f64(&x[n, c, 0], L, mean[c], scale, beta[c], relu,
                                     &out[n, c, 0])


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
    cdef Py_ssize_t t, c, n, first, last
    cdef double channel_invstd, scale
    cdef double count = <double>(N * L)
    cdef double[::1] g_sum = np.zeros(C), gx_sum = np.zeros(C)
    # Sample by sample, as batch_norm_stats.
    for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        first = C * t // n_threads
        last = C * (t + 1) // n_threads
        if first < last:
            for n in range(N):
                if floating is float:
                    bn_add_gradient_sums_f32(&grad[n, first, 0], &x[n, first, 0], L,
                                             last - first, &mean[first], &g_sum[first],
                                             &gx_sum[first])
                else:
                    bn_add_gradient_sums_f64(&grad[n, first, 0], &x[n, first, 0], L,
                                             last - first, &mean[first], &g_sum[first],
                                             &gx_sum[first])
        for c in range(first, last):
            gx_sum[c] = gx_sum[c] * invstd[c]
            grad_beta[c] = <floating>g_sum[c]
            grad_gamma[c] = <floating>gx_sum[c]
        for n in range(N):
            for c in range(first, last):
                channel_invstd = invstd[c]
                scale = gamma[c] * channel_invstd
                if floating is float:
                    bn_input_gradient_f32(&grad[n, c, 0], &x[n, c, 0], L, mean[c],
                                          channel_invstd, scale, g_sum[c] / count,
                                          gx_sum[c] / count, batch_stats,
                                          &grad_input[n, c, 0])
                else:
                    bn_input_gradient_f64(&grad[n, c, 0], &x[n, c, 0], L, mean[c],
                                          channel_invstd, scale, g_sum[c] / count,
                                          gx_sum[c] / count, batch_stats,
                                          &grad_input[n, c, 0])
