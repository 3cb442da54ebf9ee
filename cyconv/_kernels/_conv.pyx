# Design
# ------
# Batched, grouped, strided and dilated 2-D cross-correlation (the "conv2d" of
# deep learning) and its two gradients as direct loops over C-contiguous
# NCHW memoryviews: the fast path for layers with few channels, where the
# matrix products of _conv_gemm.pyx would be too thin to pay off.
#
# * Padding is not handled here: the caller passes an input already padded
#   (forward, weight gradient) or a padded buffer to scatter into (input
#   gradient) and crops it afterwards.  Every index below is then
#   ``oh*sh + i*dh < Hp`` and ``ow*sw + j*dw < Wp``, which the caller
#   guarantees by computing Hout, Wout from the padded sizes.
# * "Wide" rows.  At stride 1, output row oh of tap (i, j) reads input row
#   oh + i*dh from column j*dw on, so a whole output plane laid out with the
#   input's row pitch Wp is one long run ``p -> p + (i*dh)*Wp + j*dw``: one
#   vectorised loop of (Hout-1)*Wp + Wout elements per tap instead of Hout
#   short ones.  The Wp - Wout extra columns per row are scratch: discarded
#   in the forward pass, and multiplied by zeros the caller put in a wide
#   copy of grad_output in the backward passes (the caller only takes this
#   path when the other factor is finite, so 0 * inf never leaks a NaN).
#   Other strides go row by row.
# * Threads split work that writes disjoint outputs (samples for the forward
#   pass and the input gradient, filters for the weight gradient), and each
#   output element is summed in one fixed order, so results are bitwise
#   identical whatever the thread count.

from cython cimport floating
from cython.parallel cimport prange, threadid

from cyconv._kernels._simd cimport axpy, axpy_strided, mul_acc, ordered_sum


cdef void _forward_sample(
    const floating[:, :, ::1] xp,         # IN  (C, Hp, Wp) padded input
    const floating[:, :, :, ::1] weight,  # IN  (F, C // groups, kh, kw)
    const floating[::1] bias,             # IN  (F,) or empty for no bias
    floating[:, :, ::1] out,              # OUT (F, Hout, Wout)
    floating* acc,                        # scratch, Hout * Wp
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    cdef Py_ssize_t F = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2], Wp = xp.shape[2]
    cdef bint wide = sh == 1 and sw == 1
    cdef Py_ssize_t pitch = Wp if wide else Wout
    cdef Py_ssize_t span = (Hout - 1) * Wp + Wout
    cdef Py_ssize_t f, c, ci, i, j, oh, ow, p
    cdef floating w, b
    for f in range(F):
        for p in range(Hout * pitch):
            acc[p] = 0
        for ci in range(Cg):
            c = (f // (F // groups)) * Cg + ci
            for i in range(kh):
                for j in range(kw):
                    w = weight[f, ci, i, j]
                    if wide:
                        axpy(span, w, &xp[c, i * dh, j * dw], acc)
                    else:
                        for oh in range(Hout):
                            axpy_strided(Wout, w, &xp[c, oh * sh + i * dh, j * dw], sw,
                                         &acc[oh * pitch], 1)
        b = bias[f] if bias.shape[0] > 0 else 0
        for oh in range(Hout):
            for ow in range(Wout):
                out[f, oh, ow] = acc[oh * pitch + ow] + b


def conv2d_forward(
    const floating[:, :, :, ::1] xp,      # IN  (N, C, Hp, Wp) padded input
    const floating[:, :, :, ::1] weight,  # IN  (F, C // groups, kh, kw)
    const floating[::1] bias,             # IN  (F,) or empty
    floating[:, :, :, ::1] out,           # OUT (N, F, Hout, Wout)
    floating[:, ::1] scratch,             # scratch (n_threads, Hout * Wp)
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    cdef Py_ssize_t n
    for n in prange(xp.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _forward_sample(xp[n], weight, bias, out[n], &scratch[threadid(), 0],
                        sh, sw, dh, dw, groups)


cdef void _backward_input_sample(
    const floating[:, :, ::1] grad_out,   # IN  (F, Hout, Wo): Wo = Wp if wide, else Wout
    const floating[:, :, :, ::1] weight,  # IN  (F, C // groups, kh, kw)
    floating[:, :, ::1] gxp,              # OUT (C, Hp, Wp), zeroed by the caller
    Py_ssize_t Wout, bint wide,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    cdef Py_ssize_t F = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Hout = grad_out.shape[1], Wp = gxp.shape[2]
    cdef Py_ssize_t span = (Hout - 1) * Wp + Wout
    cdef Py_ssize_t f, c, ci, i, j, oh
    cdef floating w
    for f in range(F):
        for ci in range(Cg):
            c = (f // (F // groups)) * Cg + ci
            for i in range(kh):
                for j in range(kw):
                    w = weight[f, ci, i, j]
                    if wide:
                        axpy(span, w, &grad_out[f, 0, 0], &gxp[c, i * dh, j * dw])
                    else:
                        for oh in range(Hout):
                            axpy_strided(Wout, w, &grad_out[f, oh, 0], 1,
                                         &gxp[c, oh * sh + i * dh, j * dw], sw)


def conv2d_backward_input(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wp) wide, or (N, F, Hout, Wout)
    const floating[:, :, :, ::1] weight,    # IN  (F, C // groups, kh, kw)
    floating[:, :, :, ::1] gxp,             # OUT (N, C, Hp, Wp), zeroed
    Py_ssize_t Wout, bint wide,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    cdef Py_ssize_t n
    for n in prange(gxp.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _backward_input_sample(grad_out[n], weight, gxp[n], Wout, wide,
                               sh, sw, dh, dw, groups)


cdef void _backward_weight_filter(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wo): Wo = Wp if wide, else Wout
    const floating[:, :, :, ::1] xp,        # IN  (N, C, Hp, Wp)
    floating[:, :, :, ::1] grad_weight,     # OUT (F, C // groups, kh, kw)
    floating[::1] grad_bias,                # OUT (F,)
    floating* acc,                          # scratch, Hout * Wo
    Py_ssize_t f, Py_ssize_t Wout, bint wide,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    # Products go into a plane of partial sums, one per output position, so
    # the inner loop is an element-wise multiply-add the compiler vectorises;
    # the plane is reduced once at the end, always in the same order.
    cdef Py_ssize_t N = grad_out.shape[0], F = grad_out.shape[1]
    cdef Py_ssize_t Hout = grad_out.shape[2], pitch = grad_out.shape[3]
    cdef Py_ssize_t Wp = xp.shape[3]
    cdef Py_ssize_t Cg = grad_weight.shape[1]
    cdef Py_ssize_t kh = grad_weight.shape[2], kw = grad_weight.shape[3]
    cdef Py_ssize_t plane = Hout * pitch, span = (Hout - 1) * Wp + Wout
    cdef Py_ssize_t c, ci, i, j, n, oh, p
    for p in range(plane):
        acc[p] = 0
    for n in range(N):
        axpy(plane, 1, &grad_out[n, f, 0, 0], acc)
    grad_bias[f] = ordered_sum(plane, acc)
    for ci in range(Cg):
        c = (f // (F // groups)) * Cg + ci
        for i in range(kh):
            for j in range(kw):
                for p in range(plane):
                    acc[p] = 0
                for n in range(N):
                    if wide:
                        mul_acc(span, &grad_out[n, f, 0, 0], &xp[n, c, i * dh, j * dw], 1, acc)
                    else:
                        for oh in range(Hout):
                            mul_acc(Wout, &grad_out[n, f, oh, 0],
                                    &xp[n, c, oh * sh + i * dh, j * dw], sw, &acc[oh * pitch])
                grad_weight[f, ci, i, j] = ordered_sum(plane, acc)


def conv2d_backward_weight(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wp) wide, or (N, F, Hout, Wout)
    const floating[:, :, :, ::1] xp,        # IN  (N, C, Hp, Wp) padded input
    floating[:, :, :, ::1] grad_weight,     # OUT (F, C // groups, kh, kw)
    floating[::1] grad_bias,                # OUT (F,)
    floating[:, ::1] scratch,               # scratch (n_threads, Hout * grad_out.shape[3])
    Py_ssize_t Wout, bint wide,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    cdef Py_ssize_t f
    for f in prange(grad_weight.shape[0], nogil=True, schedule="static",
                    num_threads=n_threads, use_threads_if=n_threads > 1):
        _backward_weight_filter(grad_out, xp, grad_weight, grad_bias, &scratch[threadid(), 0],
                                f, Wout, wide, sh, sw, dh, dw, groups)
