# Design
# ------
# Batched, grouped, strided and dilated 2-D cross-correlation (the "conv2d"
# of deep learning) and its gradients as matrix products: im2col / col2im
# loops feeding BLAS through scipy.linalg.cython_blas, whose run-time
# dispatched kernels reach the processor's FMA peak with a portable build.
#
# * Layout.  For one sample and one group, the unrolled input ``col`` holds
#   one row per filter tap (channel, i, j) and one column per output pixel,
#   row-major (CgK x L).  Row-major matrices are handed to the column-major
#   BLAS as their transposes, so e.g. out (Fg x HW) = W (Fg x CgK) @ col
#   becomes out' = col' @ W' with no copy.
# * Workspaces are bounded: output rows are processed in chunks of
#   ``rows_per_chunk`` so that a thread's ``col`` never exceeds the buffer the
#   caller allocated for it (one row of ``workspace`` per thread).
# * Determinism.  Each BLAS call runs in one thread (the caller limits BLAS to
#   one thread while these kernels run) and every output element is produced
#   by one task in a fixed order: samples for the forward pass and the input
#   gradient; (run of samples, block of input channels) pairs for the weight
#   gradient, each summing its samples and row chunks in order into its own
#   partial gradient, which the caller then sums in order.  Chunk, block and
#   run sizes depend only on the shapes, never on the thread count, so
#   results are bitwise identical whatever the thread count.
# * Padding is done by the caller, as in _conv.pyx: every index here is
#   ``oh*sh + i*dh < Hp`` and ``ow*sw + j*dw < Wp`` by construction of Hout,
#   Wout from the padded sizes.

from cython cimport floating
from cython.parallel cimport prange, threadid
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef inline void _gemm(
    char* trans_a, char* trans_b, int m, int n, int k,
    floating alpha, const floating* a, int lda, const floating* b, int ldb,
    floating beta, floating* c, int ldc,
) noexcept nogil:
    """Column-major C = alpha * op(A) @ op(B) + beta * C in the right precision."""
    if floating is float:
        sgemm(trans_a, trans_b, &m, &n, &k, &alpha, <float*> a, &lda,
              <float*> b, &ldb, &beta, c, &ldc)
    else:
        dgemm(trans_a, trans_b, &m, &n, &k, &alpha, <double*> a, &lda,
              <double*> b, &ldb, &beta, c, &ldc)


cdef void _im2col(
    const floating[:, :, ::1] xp,   # IN  (C, Hp, Wp) padded sample
    Py_ssize_t c_first, Py_ssize_t c_count,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t row_first, Py_ssize_t row_count, Py_ssize_t Wout,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
    floating* col,                   # OUT (c_count*kh*kw, row_count*Wout)
) noexcept nogil:
    cdef Py_ssize_t L = row_count * Wout
    cdef Py_ssize_t ci, i, j, r, ow
    cdef floating* dst
    cdef const floating* src
    for ci in range(c_count):
        for i in range(kh):
            for j in range(kw):
                dst = col + ((ci * kh + i) * kw + j) * L
                for r in range(row_count):
                    src = &xp[c_first + ci, (row_first + r) * sh + i * dh, j * dw]
                    if sw == 1:
                        for ow in range(Wout):
                            dst[ow] = src[ow]
                    else:
                        for ow in range(Wout):
                            dst[ow] = src[ow * sw]
                    dst += Wout


cdef void _col2im_add(
    const floating* col,             # IN  (c_count*kh*kw, row_count*Wout)
    Py_ssize_t c_first, Py_ssize_t c_count,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t row_first, Py_ssize_t row_count, Py_ssize_t Wout,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
    floating[:, :, ::1] gxp,         # OUT (C, Hp, Wp), accumulated into
) noexcept nogil:
    cdef Py_ssize_t L = row_count * Wout
    cdef Py_ssize_t ci, i, j, r, ow
    cdef const floating* src
    cdef floating* dst
    for ci in range(c_count):
        for i in range(kh):
            for j in range(kw):
                src = col + ((ci * kh + i) * kw + j) * L
                for r in range(row_count):
                    dst = &gxp[c_first + ci, (row_first + r) * sh + i * dh, j * dw]
                    if sw == 1:
                        for ow in range(Wout):
                            dst[ow] += src[ow]
                    else:
                        for ow in range(Wout):
                            dst[ow * sw] += src[ow]
                    src += Wout


cdef void _forward_sample(
    const floating[:, :, ::1] xp,          # IN  (C, Hp, Wp)
    const floating[:, :, :, ::1] weight,   # IN  (F, Cg, kh, kw)
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, ::1] out,               # OUT (F, Hout, Wout)
    floating* col,                         # scratch, CgK * rows_per_chunk * Wout
    Py_ssize_t rows_per_chunk,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    cdef Py_ssize_t F = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2]
    cdef Py_ssize_t Fg = F // groups, CgK = Cg * kh * kw, HW = Hout * Wout
    cdef Py_ssize_t g, chunk, r0, rows, f, p
    cdef floating b
    for g in range(groups):
        for chunk in range((Hout + rows_per_chunk - 1) // rows_per_chunk):
            r0 = chunk * rows_per_chunk
            rows = min(rows_per_chunk, Hout - r0)
            _im2col(xp, g * Cg, Cg, kh, kw, r0, rows, Wout, sh, sw, dh, dw, col)
            # out'[chunk] (L x Fg, ldc HW) = col' (L x CgK) @ W' (CgK x Fg)
            _gemm(b"N", b"N", <int> (rows * Wout), <int> Fg, <int> CgK,
                  1, col, <int> (rows * Wout), &weight[g * Fg, 0, 0, 0], <int> CgK,
                  0, &out[g * Fg, r0, 0], <int> HW)
    if bias.shape[0] > 0:
        for f in range(F):
            b = bias[f]
            for p in range(HW):
                (&out[f, 0, 0])[p] += b


def conv2d_forward(
    const floating[:, :, :, ::1] xp,       # IN  (N, C, Hp, Wp) padded input
    const floating[:, :, :, ::1] weight,   # IN  (F, C // groups, kh, kw)
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, :, ::1] out,            # OUT (N, F, Hout, Wout)
    floating[:, ::1] workspace,            # scratch (n_threads, CgK*rows_per_chunk*Wout)
    Py_ssize_t rows_per_chunk,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    cdef Py_ssize_t n
    for n in prange(xp.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _forward_sample(xp[n], weight, bias, out[n], &workspace[threadid(), 0],
                        rows_per_chunk, sh, sw, dh, dw, groups)


cdef void _backward_input_sample(
    const floating[:, :, ::1] grad_out,    # IN  (F, Hout, Wout)
    const floating[:, :, :, ::1] weight,   # IN  (F, Cg, kh, kw)
    floating[:, :, ::1] gxp,               # OUT (C, Hp, Wp), zeroed by the caller
    floating* col,                         # scratch, CgK * rows_per_chunk * Wout
    Py_ssize_t rows_per_chunk,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    cdef Py_ssize_t F = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Hout = grad_out.shape[1], Wout = grad_out.shape[2]
    cdef Py_ssize_t Fg = F // groups, CgK = Cg * kh * kw, HW = Hout * Wout
    cdef Py_ssize_t g, chunk, r0, rows
    for g in range(groups):
        for chunk in range((Hout + rows_per_chunk - 1) // rows_per_chunk):
            r0 = chunk * rows_per_chunk
            rows = min(rows_per_chunk, Hout - r0)
            # col' (L x CgK) = grad_out'[chunk] (L x Fg, lda HW) @ W'^T (Fg x CgK)
            _gemm(b"N", b"T", <int> (rows * Wout), <int> CgK, <int> Fg,
                  1, &grad_out[g * Fg, r0, 0], <int> HW, &weight[g * Fg, 0, 0, 0], <int> CgK,
                  0, col, <int> (rows * Wout))
            _col2im_add(col, g * Cg, Cg, kh, kw, r0, rows, Wout, sh, sw, dh, dw, gxp)


def conv2d_backward_input(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] weight,    # IN  (F, C // groups, kh, kw)
    floating[:, :, :, ::1] gxp,             # OUT (N, C, Hp, Wp), zeroed
    floating[:, ::1] workspace,             # scratch (n_threads, CgK*rows_per_chunk*Wout)
    Py_ssize_t rows_per_chunk,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    cdef Py_ssize_t n
    for n in prange(gxp.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _backward_input_sample(grad_out[n], weight, gxp[n], &workspace[threadid(), 0],
                               rows_per_chunk, sh, sw, dh, dw, groups)


cdef void _backward_weight_task(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] xp,        # IN  (N, C, Hp, Wp)
    floating[:, :, :, ::1] partial,         # OUT (F, Cg, kh, kw), zeroed by the caller
    floating* col,                          # scratch, block*kh*kw * rows_per_chunk * Wout
    Py_ssize_t block, Py_ssize_t channels_per_block,
    Py_ssize_t sample_first, Py_ssize_t sample_count, Py_ssize_t rows_per_chunk,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
) noexcept nogil:
    cdef Py_ssize_t F = grad_out.shape[1]
    cdef Py_ssize_t Hout = grad_out.shape[2], Wout = grad_out.shape[3]
    cdef Py_ssize_t Cg = partial.shape[1]
    cdef Py_ssize_t kh = partial.shape[2], kw = partial.shape[3]
    cdef Py_ssize_t Fg = F // groups, CgK = Cg * kh * kw, HW = Hout * Wout
    cdef Py_ssize_t blocks_per_group = (Cg + channels_per_block - 1) // channels_per_block
    cdef Py_ssize_t g = block // blocks_per_group
    cdef Py_ssize_t ci_first = (block % blocks_per_group) * channels_per_block
    cdef Py_ssize_t ci_count = min(channels_per_block, Cg - ci_first)
    cdef Py_ssize_t n, chunk, r0, rows
    for n in range(sample_first, sample_first + sample_count):
        for chunk in range((Hout + rows_per_chunk - 1) // rows_per_chunk):
            r0 = chunk * rows_per_chunk
            rows = min(rows_per_chunk, Hout - r0)
            _im2col(xp[n], g * Cg + ci_first, ci_count, kh, kw, r0, rows, Wout,
                    sh, sw, dh, dw, col)
            # gW'[block] (Kb x Fg, ldc CgK) += col'^T (Kb x L) @ grad_out'[chunk] (L x Fg)
            _gemm(b"T", b"N", <int> (ci_count * kh * kw), <int> Fg, <int> (rows * Wout),
                  1, col, <int> (rows * Wout), &grad_out[n, g * Fg, r0, 0], <int> HW,
                  1, &partial[g * Fg, ci_first, 0, 0], <int> CgK)


def conv2d_backward_weight(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] xp,        # IN  (N, C, Hp, Wp) padded input
    floating[:, :, :, :, ::1] partials,     # OUT (S, F, C // groups, kh, kw), zeroed
    floating[:, ::1] workspace,             # scratch (n_threads, block*K*rows_per_chunk*Wout)
    Py_ssize_t channels_per_block, Py_ssize_t samples_per_part, Py_ssize_t rows_per_chunk,
    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t groups,
    int n_threads,
):
    """Partial weight gradients, one per run of ``samples_per_part`` samples;
    the caller sums them in order.  Tasks are (part, channel block) pairs."""
    cdef Py_ssize_t N = grad_out.shape[0], Cg = partials.shape[2]
    cdef Py_ssize_t blocks = groups * ((Cg + channels_per_block - 1) // channels_per_block)
    cdef Py_ssize_t parts = partials.shape[0]
    cdef Py_ssize_t task, part, first
    for task in prange(parts * blocks, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        part = task // blocks
        first = part * samples_per_part
        _backward_weight_task(grad_out, xp, partials[part], &workspace[threadid(), 0],
                              task % blocks, channels_per_block,
                              first, min(samples_per_part, N - first), rows_per_chunk,
                              sh, sw, dh, dw, groups)


def conv2d_backward_bias(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    floating[::1] grad_bias,                # OUT (F,)
    floating[:, ::1] workspace,             # scratch (n_threads, Hout*Wout)
    int n_threads,
):
    cdef Py_ssize_t N = grad_out.shape[0], F = grad_out.shape[1]
    cdef Py_ssize_t HW = grad_out.shape[2] * grad_out.shape[3]
    cdef Py_ssize_t f
    for f in prange(F, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        grad_bias[f] = _sum_filter(grad_out, f, N, HW, &workspace[threadid(), 0])


cdef floating _sum_filter(
    const floating[:, :, :, ::1] grad_out, Py_ssize_t f, Py_ssize_t N, Py_ssize_t HW,
    floating* acc,
) noexcept nogil:
    # Partial sums per pixel keep the inner loop an element-wise add that
    # vectorises without reassociation; reduced once, in a fixed order.
    cdef Py_ssize_t n, p
    cdef const floating* row
    cdef floating total = 0
    for p in range(HW):
        acc[p] = 0
    for n in range(N):
        row = &grad_out[n, f, 0, 0]
        for p in range(HW):
            acc[p] += row[p]
    for p in range(HW):
        total = total + acc[p]
    return total
