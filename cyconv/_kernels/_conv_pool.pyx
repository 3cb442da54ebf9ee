# Design
# ------
# A stride-1 convolution, its bias, ReLU and 2x2 max pooling with stride 2,
# in one pass that never writes the convolution's output: for a model's
# Convolution -> ReLU -> MaxPooling(2), the pooled output and the one-byte
# codes MaxPooling's backward pass reads (pool_tiles.h), bit for bit what
# the three layers give one by one.
#
# * Tasks are (sample, run of filter blocks) pairs.  A task copies its
#   sample into zero-padded planes of its thread's scratch (the layout of
#   _conv_direct.pyx's wide family: rows of Wp values sharing their zero
#   columns, a zeroed tail), then for each block of filters computes the
#   wide output of the rows the windows cover with conv_direct.h's
#   microkernel (each value one chain of fused multiply-adds, as the wide
#   and blocked families compute it) into a second scratch, and pools it
#   from there (conv_pool.h): the convolution's output stays in the L1/L2
#   cache, a quarter of it is written.  Samples are one task each when
#   there are enough of them for the threads; else a sample's filter
#   blocks are split between tasks, which never changes a value.
# * Indexing.  The caller (cyconv/_conv_pool.py) checks the geometry
#   (stride 1, one group, pooled rows and columns covering whole windows
#   of the convolution's output) and sizes the scratch with
#   _conv_direct.plane_stride and round_up; nothing here is bounds-checked.

from cython cimport floating
from cython.parallel cimport prange, threadid

cdef extern from "conv_pool.h" nogil:
    int cd_forward_filters(int isa)
    void cp_block_f32(int isa, const float* xp, Py_ssize_t xcs, int C, const Py_ssize_t* offs,
                      int nt, const float* w, Py_ssize_t wfs, int nf, const float* bias,
                      float* wide, Py_ssize_t ofs, Py_ssize_t Wp, float* out,
                      unsigned char* codes, Py_ssize_t rows, Py_ssize_t cols)
    void cp_block_f64(int isa, const double* xp, Py_ssize_t xcs, int C, const Py_ssize_t* offs,
                      int nt, const double* w, Py_ssize_t wfs, int nf, const double* bias,
                      double* wide, Py_ssize_t ofs, Py_ssize_t Wp, double* out,
                      unsigned char* codes, Py_ssize_t rows, Py_ssize_t cols)

cdef enum:
    # Values a vector may read or write past a wide row's last position, as
    # in _conv_direct.pyx.
    ROUND = 16


def filter_block(int isa):
    """Filters the forward microkernel computes at once."""
    return cd_forward_filters(isa)


cdef void _pad_sample(
    const floating* x,          # IN  (C, H, W) one sample
    Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    floating* xp,               # OUT (C, stride) padded planes
    Py_ssize_t stride, Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
) noexcept nogil:
    """Each channel of x with its top-left corner at (top, left) of a
    plane of rows of padded_width values, zeros everywhere else up to
    stride (one pass, no separate zeroing)."""
    cdef Py_ssize_t c, r, q, start, end
    cdef floating* plane
    cdef const floating* src
    for c in range(C):
        plane = xp + c * stride
        for q in range(top * padded_width + left):
            plane[q] = 0
        for r in range(H):
            start = (top + r) * padded_width + left
            src = x + (c * H + r) * W
            for q in range(W):
                plane[start + q] = src[q]
            # the right padding and the next row's left padding, or after
            # the last row everything to the plane's end
            end = start + padded_width if r + 1 < H else stride
            for q in range(start + W, end):
                plane[q] = 0


cdef inline void _forward_task(
    Py_ssize_t task, int tid,
    const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
    const floating[::1] bias, floating[:, :, :, ::1] out, unsigned char[:, :, ::1] codes,
    floating[:, ::1] padded, floating[:, ::1] wide, const Py_ssize_t[::1] offsets,
    Py_ssize_t stride, Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    Py_ssize_t runs, Py_ssize_t per_run, Py_ssize_t blocks, Py_ssize_t block, Py_ssize_t Lr,
    int isa,
) noexcept nogil:
    """One task of forward(): sample task // runs, its run task % runs of
    filter blocks, in thread tid's scratch."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = out.shape[1], rows = out.shape[2], cols = out.shape[3]
    cdef Py_ssize_t nt = weight.shape[2] * weight.shape[3]
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t n = task // runs, b, f0, nf
    cdef floating* xp = &padded[tid, 0]
    cdef floating* buf = &wide[tid, 0]
    if (task % runs) * per_run < blocks:
        _pad_sample(&x[n, 0, 0, 0], C, H, W, xp, stride, top, left, padded_width)
    for b in range((task % runs) * per_run, min(blocks, (task % runs + 1) * per_run)):
        f0 = b * block
        nf = min(block, F - f0)
        if floating is float:
            cp_block_f32(isa, xp, stride, <int> C, &offsets[0], <int> nt,
                         &weight[f0, 0, 0, 0], C * nt, <int> nf,
                         &bias[f0] if has_bias else NULL, buf, Lr, padded_width,
                         &out[n, f0, 0, 0], &codes[n * F + f0, 0, 0], rows, cols)
        else:
            cp_block_f64(isa, xp, stride, <int> C, &offsets[0], <int> nt,
                         &weight[f0, 0, 0, 0], C * nt, <int> nf,
                         &bias[f0] if has_bias else NULL, buf, Lr, padded_width,
                         &out[n, f0, 0, 0], &codes[n * F + f0, 0, 0], rows, cols)


def forward(
    const floating[:, :, :, ::1] x,        # IN  (N, C, H, W)
    const floating[:, :, :, ::1] weight,   # IN  (F, C, kh, kw)
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, :, ::1] out,            # OUT (N, F, Hp, Wp) pooled
    unsigned char[:, :, ::1] codes,        # OUT (N * F, Hp, Wp) winners' codes
    floating[:, ::1] padded,               # scratch (n_threads, C * stride)
    floating[:, ::1] wide,                 # scratch (n_threads, block * round_up(2 Hp * Wp))
    const Py_ssize_t[::1] offsets,         # IN  (kh*kw,) tap offsets
    Py_ssize_t stride, Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    Py_ssize_t runs, int isa, int n_threads,
):
    """out[n, f] = 2x2 max pooling of max(conv2d(x, weight)[n, f] + bias[f], 0)
    with its codes; each sample's filter blocks split into ``runs`` tasks."""
    cdef Py_ssize_t N = x.shape[0], F = out.shape[1], rows = out.shape[2]
    cdef Py_ssize_t L = 2 * rows * padded_width, Lr = (L + ROUND - 1) // ROUND * ROUND
    cdef Py_ssize_t block = cd_forward_filters(isa)
    cdef Py_ssize_t blocks = (F + block - 1) // block
    cdef Py_ssize_t per_run = (blocks + runs - 1) // runs
    cdef Py_ssize_t task
    # One thread runs the tasks without a parallel region: entering one
    # costs about a microsecond even for a team of one, as much as a
    # batch-1 layer's arithmetic.
    if n_threads > 1:
        for task in prange(N * runs, nogil=True, schedule="static", num_threads=n_threads):
            _forward_task(task, threadid(), x, weight, bias, out, codes, padded, wide,
                          offsets, stride, top, left, padded_width, runs, per_run, blocks,
                          block, Lr, isa)
    else:
        with nogil:
            for task in range(N * runs):
                _forward_task(task, 0, x, weight, bias, out, codes, padded, wide, offsets,
                              stride, top, left, padded_width, runs, per_run, blocks, block,
                              Lr, isa)
