# Design
# ------
# Batched, grouped, strided and dilated 2-D cross-correlation (the "conv2d" of
# deep learning) and its two gradients, over C-contiguous NCHW memoryviews.
#
# * Padding is not handled here: the caller passes an input already padded
#   (forward, weight gradient) or a padded buffer to scatter into (input
#   gradient) and crops it afterwards.  Every index below is then
#   ``oh*sh + i*dh < Hp`` and ``ow*sw + j*dw < Wp``, which the caller
#   guarantees by computing Hout, Wout from the padded sizes.
# * Threads split work that writes disjoint outputs (samples for the forward
#   pass and the input gradient, filters for the weight gradient), and each
#   output element is summed in one fixed order, so results are bitwise
#   identical whatever the thread count.
# * The innermost loop runs along an output row, which is contiguous in the
#   output and, at stride 1, in the input too: the compiler vectorises it
#   without reassociating any sum (no -ffast-math needed).

from cython cimport floating
from cython.parallel cimport prange


cdef void _forward_sample(
    const floating[:, :, ::1] xp,         # IN  (C, Hp, Wp) padded input
    const floating[:, :, :, ::1] weight,  # IN  (F, C // groups, kh, kw)
    const floating[::1] bias,             # IN  (F,) or empty for no bias
    floating[:, :, ::1] out,              # OUT (F, Hout, Wout)
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    cdef Py_ssize_t F = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2]
    cdef Py_ssize_t Fg = F // groups
    cdef Py_ssize_t f, c, ci, i, j, oh, ow
    cdef floating w, b
    cdef floating* orow
    cdef const floating* xrow
    for f in range(F):
        b = bias[f] if bias.shape[0] > 0 else 0
        for oh in range(Hout):
            for ow in range(Wout):
                out[f, oh, ow] = b
        for ci in range(Cg):
            c = (f // Fg) * Cg + ci
            for i in range(kh):
                for j in range(kw):
                    w = weight[f, ci, i, j]
                    for oh in range(Hout):
                        orow = &out[f, oh, 0]
                        xrow = &xp[c, oh * sh + i * dh, j * dw]
                        if sw == 1:
                            for ow in range(Wout):
                                orow[ow] += w * xrow[ow]
                        else:
                            for ow in range(Wout):
                                orow[ow] += w * xrow[ow * sw]


def conv2d_forward(
    const floating[:, :, :, ::1] xp,      # IN  (N, C, Hp, Wp) padded input
    const floating[:, :, :, ::1] weight,  # IN  (F, C // groups, kh, kw)
    const floating[::1] bias,             # IN  (F,) or empty
    floating[:, :, :, ::1] out,           # OUT (N, F, Hout, Wout)
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    cdef Py_ssize_t n
    for n in prange(xp.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        _forward_sample(xp[n], weight, bias, out[n], sh, sw, dh, dw, groups)


cdef void _backward_input_sample(
    const floating[:, :, ::1] grad_out,   # IN  (F, Hout, Wout)
    const floating[:, :, :, ::1] weight,  # IN  (F, C // groups, kh, kw)
    floating[:, :, ::1] gxp,              # OUT (C, Hp, Wp), zeroed by the caller
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    cdef Py_ssize_t F = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Hout = grad_out.shape[1], Wout = grad_out.shape[2]
    cdef Py_ssize_t Fg = F // groups
    cdef Py_ssize_t f, c, ci, i, j, oh, ow
    cdef floating w
    cdef const floating* grow
    cdef floating* xrow
    for f in range(F):
        for ci in range(Cg):
            c = (f // Fg) * Cg + ci
            for i in range(kh):
                for j in range(kw):
                    w = weight[f, ci, i, j]
                    for oh in range(Hout):
                        grow = &grad_out[f, oh, 0]
                        xrow = &gxp[c, oh * sh + i * dh, j * dw]
                        if sw == 1:
                            for ow in range(Wout):
                                xrow[ow] += w * grow[ow]
                        else:
                            for ow in range(Wout):
                                xrow[ow * sw] += w * grow[ow]


def conv2d_backward_input(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] weight,    # IN  (F, C // groups, kh, kw)
    floating[:, :, :, ::1] gxp,             # OUT (N, C, Hp, Wp), zeroed
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    cdef Py_ssize_t n
    for n in prange(gxp.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        _backward_input_sample(grad_out[n], weight, gxp[n], sh, sw, dh, dw, groups)


cdef void _backward_weight_filter(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] xp,        # IN  (N, C, Hp, Wp)
    floating[:, :, :, ::1] grad_weight,     # OUT (F, C // groups, kh, kw)
    floating[::1] grad_bias,                # OUT (F,)
    floating* acc,                          # scratch of length Wout
    Py_ssize_t f,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    cdef Py_ssize_t N = grad_out.shape[0], F = grad_out.shape[1]
    cdef Py_ssize_t Hout = grad_out.shape[2], Wout = grad_out.shape[3]
    cdef Py_ssize_t Cg = grad_weight.shape[1]
    cdef Py_ssize_t kh = grad_weight.shape[2], kw = grad_weight.shape[3]
    cdef Py_ssize_t c, ci, i, j, n, oh, ow
    cdef const floating* grow
    cdef const floating* xrow
    cdef floating total
    # Sums go through a row of partial sums, one per output column, so the
    # inner loop is an element-wise multiply-add the compiler can vectorise;
    # the row is reduced once at the end, always in the same order.
    for ow in range(Wout):
        acc[ow] = 0
    for n in range(N):
        for oh in range(Hout):
            grow = &grad_out[n, f, oh, 0]
            for ow in range(Wout):
                acc[ow] += grow[ow]
    total = 0
    for ow in range(Wout):
        total = total + acc[ow]
    grad_bias[f] = total
    for ci in range(Cg):
        c = (f // (F // groups)) * Cg + ci
        for i in range(kh):
            for j in range(kw):
                for ow in range(Wout):
                    acc[ow] = 0
                for n in range(N):
                    for oh in range(Hout):
                        grow = &grad_out[n, f, oh, 0]
                        xrow = &xp[n, c, oh * sh + i * dh, j * dw]
                        if sw == 1:
                            for ow in range(Wout):
                                acc[ow] += grow[ow] * xrow[ow]
                        else:
                            for ow in range(Wout):
                                acc[ow] += grow[ow] * xrow[ow * sw]
                total = 0
                for ow in range(Wout):
                    total = total + acc[ow]
                grad_weight[f, ci, i, j] = total


def conv2d_backward_weight(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] xp,        # IN  (N, C, Hp, Wp) padded input
    floating[:, :, :, ::1] grad_weight,     # OUT (F, C // groups, kh, kw)
    floating[::1] grad_bias,                # OUT (F,)
    floating[:, ::1] scratch,               # scratch (n_threads, Wout)
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    cdef Py_ssize_t f
    cdef int t
    # Filters are split into n_threads contiguous blocks; block t uses row t
    # of the scratch buffer.  The split never changes what is summed or in
    # which order, only who sums it.
    cdef Py_ssize_t F = grad_weight.shape[0]
    cdef Py_ssize_t block = (F + n_threads - 1) // n_threads
    for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads):
        for f in range(t * block, min(F, (t + 1) * block)):
            _backward_weight_filter(grad_out, xp, grad_weight, grad_bias, &scratch[t, 0],
                                    f, sh, sw, dh, dw, groups)
