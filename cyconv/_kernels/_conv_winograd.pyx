# Design
# ------
# 3x3, stride-1 conv2d and its weight gradient by Winograd's F(4x4, 3x3)
# (Lavin and Gray, 2016): 36 multiplications for a 4x4 block of outputs
# where the direct convolution spends 144, the rest additions and
# multiplications by powers of two.
#
# * Tiles: the output planes are cut into 4x4 blocks (th x tw of them, the
#   last row and column possibly partly outside); a block reads a 6x6 window
#   of the zero-padded input.  A chunk is ``rows`` consecutive rows of
#   tiles of the batch (a row of tiles belongs to one sample), ``rows * tw``
#   tiles in all, which the caller sizes so that a chunk's matrices stay in
#   cache.
# * Forward: the chunk's input windows, transformed (winograd_loops.h), are
#   36 matrices U_p (C x tiles); the weight, transformed by the caller, 36
#   matrices W_p (F x C); the 36 products M_p = W_p @ U_p (one BLAS call
#   each) are transformed back into the outputs.  The input gradient is the
#   forward pass of the output gradient with the flipped, transposed
#   weight (the caller transforms it and sets the padding).
# * Blocked products: where the caller asks, the products run on the
#   filter-blocked direct kernels instead (blocked_product, cimported from
#   _conv_direct, whose variants are compiled there once), which read their
#   second operand in blocks of LANES columns (16 float, 8 double: 64
#   bytes): U is then written in blocks of LANES tiles, each chunk's tiles
#   rounded up to whole blocks (the lanes past them hold earlier chunks'
#   finite values or zeros; their products are never read), and the
#   weight transformed as W_p^T.  The weight gradient takes them where
#   the channels fill whole blocks: U tile-major in blocks of LANES
#   channels, V as for BLAS, each chunk's product stored or added to its
#   part's sum in order.  OpenBLAS packs both operands of each of these
#   small products anew; these read them as the transforms write them.
# * Weight gradient: the output gradient's 4x4 blocks, transformed, are
#   V_p (F x tiles), and dW_p = sum over tiles of V_p @ U_p^T, which the
#   caller transforms back to 3x3.  Each part of the batch (whole samples)
#   sums its chunks, in order, into its own partial; the caller adds the
#   partials in a fixed order.  Where the caller asks (the variants whose
#   BLAS runs these products faster so), U is written tile-major, the
#   channels of a tile together: the products' inner dimension, the
#   tiles, is then U's slow axis, as it is V's.
# * Determinism: every output (and every partial) is computed by one task
#   in a fixed order; chunk and part sizes depend only on the shapes, and
#   one BLAS call runs in one thread (the caller holds BLAS to one).  The
#   blocked products are one chain of fused multiply-adds per value, in
#   the same order on every variant, and the transforms' multiplications
#   are by powers of two (exact) or divisions: the same bits on each.
# * Values out of range: the transforms add and subtract values of a
#   window, so an infinity there gives NaN where the direct sum gives an
#   infinity, and a huge finite value may overflow where the direct sum
#   does not.  The kernels return whether every value they read was finite
#   and at most 2^44 in magnitude (2^492 in float64; WG_OUT_OF_RANGE in
#   winograd_loops.h); the caller takes another path when one was not.
# * Bounds: the caller checks a 3x3 kernel, stride 1, no dilation, one
#   group, out = in + pad_top + pad_bottom - 2 (and across), and the sizes
#   of the buffers (each thread's U, M or V: 36 matrices of rows * tw
#   values per channel or filter, WG_PAD values apart, rows * tw rounded up
#   to a multiple of 16 for the blocked products; its scratch 24 (rows +
#   1) tw + 4 tw + 4 and 17 (filters * that width + WG_PAD), and for a
#   tile-major U at least (4 rows + 2) (4 tw + 2) C), and for the blocked weight
#   gradient that C is a multiple of LANES.

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memset
from cyconv._kernels._conv_direct cimport blocked_product_f32, blocked_product_f64
from cyconv._kernels._gemm cimport gemm

cdef extern from "winograd_loops.h" nogil:
    enum: WG_POSITIONS  # positions of a transformed tile: 6 x 6
    enum: WG_TILE       # outputs along a side of a tile: 4
    enum: WG_PAD        # values between a matrix's end and the next's start
    int wg_weight_f32(const float* w, Py_ssize_t F, Py_ssize_t C, int flipped, int by_channel,
                      Py_ssize_t first, Py_ssize_t last, float* out)
    int wg_weight_f64(const double* w, Py_ssize_t F, Py_ssize_t C, int flipped, int by_channel,
                      Py_ssize_t first, Py_ssize_t last, double* out)
    void wg_weight_back_f32(const float* x, Py_ssize_t parts, Py_ssize_t F, Py_ssize_t C,
                            Py_ssize_t first, Py_ssize_t last, float* out)
    void wg_weight_back_f64(const double* x, Py_ssize_t parts, Py_ssize_t F, Py_ssize_t C,
                            Py_ssize_t first, Py_ssize_t last, double* out)
    int wg_input_chunk_f32(const float* x, Py_ssize_t sample, Py_ssize_t rows, Py_ssize_t cols,
                           Py_ssize_t first, Py_ssize_t count, Py_ssize_t th, Py_ssize_t top,
                           Py_ssize_t left, Py_ssize_t tw, float* scratch, float* u,
                           Py_ssize_t ps, Py_ssize_t bl, Py_ssize_t bs)
    int wg_input_chunk_f64(const double* x, Py_ssize_t sample, Py_ssize_t rows,
                           Py_ssize_t cols, Py_ssize_t first, Py_ssize_t count, Py_ssize_t th,
                           Py_ssize_t top, Py_ssize_t left, Py_ssize_t tw, double* scratch,
                           double* u, Py_ssize_t ps, Py_ssize_t bl, Py_ssize_t bs)
    int wg_input_tiles_f32(const float* x, Py_ssize_t C, Py_ssize_t rows, Py_ssize_t cols,
                           Py_ssize_t first, Py_ssize_t count, Py_ssize_t th, Py_ssize_t top,
                           Py_ssize_t left, Py_ssize_t tw, float* scratch, float* u,
                           Py_ssize_t ps, Py_ssize_t bl, Py_ssize_t bs)
    int wg_input_tiles_f64(const double* x, Py_ssize_t C, Py_ssize_t rows,
                           Py_ssize_t cols, Py_ssize_t first, Py_ssize_t count, Py_ssize_t th,
                           Py_ssize_t top, Py_ssize_t left, Py_ssize_t tw, double* scratch,
                           double* u, Py_ssize_t ps, Py_ssize_t bl, Py_ssize_t bs)
    void wg_output_chunk_f32(const float* m, Py_ssize_t ps, Py_ssize_t F, Py_ssize_t tiles,
                             float* out, Py_ssize_t sample, Py_ssize_t rows, Py_ssize_t cols,
                             Py_ssize_t first, Py_ssize_t count, Py_ssize_t th, Py_ssize_t tw,
                             const float* bias, int relu, float* scratch)
    void wg_output_chunk_f64(const double* m, Py_ssize_t ps, Py_ssize_t F, Py_ssize_t tiles,
                             double* out, Py_ssize_t sample, Py_ssize_t rows, Py_ssize_t cols,
                             Py_ssize_t first, Py_ssize_t count, Py_ssize_t th, Py_ssize_t tw,
                             const double* bias, int relu, double* scratch)
    int wg_gradient_chunk_f32(const float* g, Py_ssize_t F, Py_ssize_t sample, Py_ssize_t rows,
                              Py_ssize_t cols, Py_ssize_t first, Py_ssize_t count,
                              Py_ssize_t th, Py_ssize_t tw, float* scratch, float* v,
                              Py_ssize_t ps)
    int wg_gradient_chunk_f64(const double* g, Py_ssize_t F, Py_ssize_t sample,
                              Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t first,
                              Py_ssize_t count, Py_ssize_t th, Py_ssize_t tw, double* scratch,
                              double* v, Py_ssize_t ps)


# The sizes _conv_winograd.py makes the buffers and the transformed weight
# with: the ones these kernels index.
POSITIONS = WG_POSITIONS
TILE = WG_TILE
MATRIX_PAD = WG_PAD


cdef int _input_chunk(
    const floating[:, :, :, ::1] x, Py_ssize_t first, Py_ssize_t count, Py_ssize_t th,
    Py_ssize_t tw, Py_ssize_t pad_top, Py_ssize_t pad_left, floating* scratch,
    floating* u, Py_ssize_t ps, bint blocked,
) noexcept nogil:
    """U of ``count`` rows of tiles from row ``first`` of the batch's:
    u[p * ps + c * tiles + t], tiles = count * tw; with ``blocked`` in
    blocks of LANES tiles, as blocked_product reads them: u[p * ps + (t //
    LANES) * C * LANES + c * LANES + t % LANES].  Whether a value read is
    out of range."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t lanes = 64 // sizeof(floating)
    cdef Py_ssize_t cs = lanes if blocked else count * tw
    cdef Py_ssize_t bl = lanes if blocked else 1, bs = C * lanes if blocked else 1
    cdef Py_ssize_t c
    cdef int bad = 0
    for c in range(C):
        if floating is float:
            bad |= wg_input_chunk_f32(&x[0, c, 0, 0], C * H * W, H, W, first, count, th,
                                      pad_top, pad_left, tw, scratch, u + c * cs, ps, bl, bs)
        else:
            bad |= wg_input_chunk_f64(&x[0, c, 0, 0], C * H * W, H, W, first, count, th,
                                      pad_top, pad_left, tw, scratch, u + c * cs, ps, bl, bs)
    return bad


cdef inline int _input_tiles(
    const floating[:, :, :, ::1] x, Py_ssize_t first, Py_ssize_t count, Py_ssize_t th,
    Py_ssize_t tw, Py_ssize_t pad_top, Py_ssize_t pad_left, floating* scratch,
    floating* u, Py_ssize_t ps, bint blocked,
) noexcept nogil:
    """U of ``count`` rows of tiles from row ``first`` of the batch's,
    tile-major: u[p * ps + t * C + c], t < count * tw (the weight
    gradient's products then run over unit strides of their inner, tile
    dimension); with ``blocked`` its channels in blocks of LANES, as
    blocked_product reads them: u[p * ps + (c // LANES) * tiles * LANES +
    t * LANES + c % LANES] (C a multiple of LANES).  Whether a value read
    is out of range."""
    cdef Py_ssize_t C = x.shape[1], lanes = 64 // sizeof(floating)
    cdef Py_ssize_t bl = lanes if blocked else C, bs = count * tw * lanes if blocked else 0
    if floating is float:
        return wg_input_tiles_f32(&x[0, 0, 0, 0], C, x.shape[2], x.shape[3], first,
                                  count, th, pad_top, pad_left, tw, scratch, u, ps, bl, bs)
    else:
        return wg_input_tiles_f64(&x[0, 0, 0, 0], C, x.shape[2], x.shape[3], first,
                                  count, th, pad_top, pad_left, tw, scratch, u, ps, bl, bs)


cdef inline int _gradient_chunk(
    const floating[:, :, :, ::1] g, Py_ssize_t first, Py_ssize_t count, Py_ssize_t th,
    Py_ssize_t tw, floating* scratch, floating* v, Py_ssize_t ps,
) noexcept nogil:
    """V of every filter for ``count`` rows of tiles from row ``first`` of
    the batch's: v[p * ps + f * count * tw + t], t < count * tw; whether a
    value read is out of range."""
    cdef Py_ssize_t F = g.shape[1], Ho = g.shape[2], Wo = g.shape[3]
    if floating is float:
        return wg_gradient_chunk_f32(&g[0, 0, 0, 0], F, F * Ho * Wo, Ho, Wo, first, count, th,
                                     tw, scratch, v, ps)
    else:
        return wg_gradient_chunk_f64(&g[0, 0, 0, 0], F, F * Ho * Wo, Ho, Wo, first, count, th,
                                     tw, scratch, v, ps)


def forward(
    const floating[:, :, :, ::1] x,        # IN  (N, C, H, W)
    const floating[:, :, ::1] wt,          # IN  (36, F, C): the transformed weight, (36, C,
                                           #     F) with ``blocked``
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, :, ::1] out,            # OUT (N, F, Hout, Wout)
    floating[:, ::1] u_buf,                # each thread's U: 36 * (C * width + WG_PAD)
    floating[:, ::1] m_buf,                # ...its M: 36 * (F * width + WG_PAD)
    floating[:, ::1] scratch,              # ...its scratch: 24 * (rows + 1) * tw + 4 * tw + 4,
                                           # and 17 * (F * width + WG_PAD)
    Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t rows, bint relu, int isa,
    bint blocked, int n_threads,
):
    """out = the correlation of x with the weight whose transform is wt,
    plus bias, with ``relu`` max(., 0); False (out unfinished) where x holds
    a value out of range (see the design notes).  The products by BLAS, or
    with ``blocked`` by the blocked direct kernels' variant ``isa``; width:
    rows * tw, rounded up to a multiple of 16 with ``blocked``."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], F = out.shape[1]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t th = (Ho + WG_TILE - 1) // WG_TILE, tw = (Wo + WG_TILE - 1) // WG_TILE
    cdef Py_ssize_t total = N * th, chunks = (total + rows - 1) // rows
    cdef Py_ssize_t lanes = 64 // sizeof(floating)
    cdef Py_ssize_t chunk, first, count, tiles, us, ms, p
    cdef int tid
    cdef floating* u
    cdef floating* m
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef int bad = 0
    for chunk in prange(chunks, nogil=True, schedule="dynamic", chunksize=1,
                        num_threads=n_threads):
        tid = threadid()
        u = &u_buf[tid, 0]
        m = &m_buf[tid, 0]
        first = chunk * rows
        count = min(rows, total - first)
        # the row stride of U_p and M_p: the chunk's tiles, in whole blocks
        # where blocked (the last block's lanes past them hold earlier
        # chunks' values or zeros, and their products are never read)
        tiles = (count * tw + lanes - 1) // lanes * lanes if blocked else count * tw
        us = C * tiles + WG_PAD
        ms = F * tiles + WG_PAD
        bad |= _input_chunk(x, first, count, th, tw, pad_top, pad_left, &scratch[tid, 0],
                            u, us, blocked)
        for p in range(WG_POSITIONS):
            if blocked:
                # M_p (F x tiles) = W_p (F x C) @ U_p (C x tiles), W_p^T in wt[p]
                if floating is float:
                    blocked_product_f32(isa, &wt[p, 0, 0], F, 1, F, C, u + p * us,
                                        tiles // lanes, m + p * ms, tiles, False)
                else:
                    blocked_product_f64(isa, &wt[p, 0, 0], F, 1, F, C, u + p * us,
                                        tiles // lanes, m + p * ms, tiles, False)
            else:
                # column-major: M_p^T (tiles x F) = U_p^T (tiles x C) @ W_p^T (C x F)
                gemm(b"N", b"N", <int> tiles, <int> F, <int> C, 1, u + p * us,
                     <int> tiles, &wt[p, 0, 0], <int> C, 0, m + p * ms, <int> tiles)
        if floating is float:
            wg_output_chunk_f32(m, ms, F, tiles, &out[0, 0, 0, 0], F * Ho * Wo, Ho, Wo,
                                first, count, th, tw, b, relu, &scratch[tid, 0])
        else:
            wg_output_chunk_f64(m, ms, F, tiles, &out[0, 0, 0, 0], F * Ho * Wo, Ho, Wo,
                                first, count, th, tw, b, relu, &scratch[tid, 0])
    return bad == 0


def grad_weight(
    const floating[:, :, :, ::1] g,        # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] x,        # IN  (N, C, H, W)
    floating[:, :, :, ::1] partials,       # OUT (parts, 36, F, C): each part's sum of V_p U_p^T
    floating[:, ::1] u_buf,                # each thread's U: 36 * (C * rows * tw + WG_PAD)
    floating[:, ::1] v_buf,                # ...its V: 36 * (F * rows * tw + WG_PAD)
    floating[:, ::1] scratch,              # ...its scratch: 24 * (rows + 1) * tw + 4 * tw + 4,
                                           # 16 * (F * rows * tw + WG_PAD), tile-major at least
                                           # (4 rows + 2) (4 tw + 2) C
    Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t rows, Py_ssize_t samples_per_part,
    bint tile_major, bint blocked, int isa, int n_threads,
):
    """Each part's transformed weight gradient; False where x or g holds a
    value out of range (see the design notes).  With ``tile_major`` U is
    written tile-major, and the products' inner dimension, the tiles, is
    U's slow axis; otherwise U is written as the forward pass writes it.
    With ``blocked`` (C a multiple of LANES) the products run on the
    blocked direct kernels' variant ``isa``, U tile-major in blocks of
    channels; each chunk's product is stored, or added to its part's sum
    after the first (by the kernel's store)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], F = g.shape[1]
    cdef Py_ssize_t Ho = g.shape[2], Wo = g.shape[3]
    cdef Py_ssize_t th = (Ho + WG_TILE - 1) // WG_TILE, tw = (Wo + WG_TILE - 1) // WG_TILE
    cdef Py_ssize_t parts = partials.shape[0], lanes = 64 // sizeof(floating)
    cdef Py_ssize_t part, first, last, count, tiles, us, vs, p
    cdef int tid
    cdef floating* u
    cdef floating* v
    cdef floating* acc
    cdef floating beta
    cdef int bad = 0
    for part in prange(parts, nogil=True, schedule="dynamic", chunksize=1,
                       num_threads=n_threads):
        tid = threadid()
        u = &u_buf[tid, 0]
        v = &v_buf[tid, 0]
        acc = &partials[part, 0, 0, 0]
        first = part * samples_per_part * th
        last = min(N, (part + 1) * samples_per_part) * th
        beta = 0
        while first < last:
            count = min(rows, last - first)
            tiles = count * tw
            us = C * tiles + WG_PAD
            vs = F * tiles + WG_PAD
            # U: tile-major, its channels in blocks for the blocked products
            if blocked or tile_major:
                bad |= _input_tiles(x, first, count, th, tw, pad_top, pad_left,
                                    &scratch[tid, 0], u, us, blocked)
            else:
                bad |= _input_chunk(x, first, count, th, tw, pad_top, pad_left,
                                    &scratch[tid, 0], u, us, False)
            bad |= _gradient_chunk(g, first, count, th, tw, &scratch[tid, 0], v, vs)
            for p in range(WG_POSITIONS):
                if blocked:
                    # dW_p (F x C) (+)= V_p (F x tiles) @ U_p^T (tiles x C)
                    if floating is float:
                        blocked_product_f32(isa, v + p * vs, 1, tiles, F, tiles,
                                            u + p * us, C // lanes, acc + p * F * C, C,
                                            beta != 0)
                    else:
                        blocked_product_f64(isa, v + p * vs, 1, tiles, F, tiles,
                                            u + p * us, C // lanes, acc + p * F * C, C,
                                            beta != 0)
                # column-major: dW_p^T (C x F) += U_p (C x tiles) @ V_p^T (tiles x F)
                elif tile_major:
                    gemm(b"N", b"N", <int> C, <int> F, <int> tiles, 1, u + p * us,
                         <int> C, v + p * vs, <int> tiles, beta, acc + p * F * C,
                         <int> C)
                else:
                    gemm(b"T", b"N", <int> C, <int> F, <int> tiles, 1, u + p * us,
                         <int> tiles, v + p * vs, <int> tiles, beta, acc + p * F * C,
                         <int> C)
            beta = 1
            first = first + count
    return bad == 0


def transform_weight(
    const floating[:, :, :, ::1] w,        # IN  (F, C, 3, 3)
    floating[:, :, ::1] out,               # OUT (36, F, C), or (36, C, F) ``by_channel``
    bint flipped, bint by_channel, int n_threads,
):
    """G w G^T of each (filter, channel) pair, into out[6 i + j]; with
    ``flipped`` of the weight flipped in both axes (the input gradient's),
    with ``by_channel`` each matrix transposed.  Returns whether every
    value is in range (see the design notes).  Each thread a block of
    out's rows."""
    cdef Py_ssize_t rows = out.shape[1], blocks = min(rows, max(n_threads, 1)), block
    cdef int bad = 0
    for block in prange(blocks, nogil=True, schedule="static", num_threads=n_threads,
                        use_threads_if=n_threads > 1):
        if floating is float:
            bad |= wg_weight_f32(&w[0, 0, 0, 0], w.shape[0], w.shape[1], flipped, by_channel,
                                 block * rows // blocks, (block + 1) * rows // blocks,
                                 &out[0, 0, 0])
        else:
            bad |= wg_weight_f64(&w[0, 0, 0, 0], w.shape[0], w.shape[1], flipped, by_channel,
                                 block * rows // blocks, (block + 1) * rows // blocks,
                                 &out[0, 0, 0])
    return bad == 0


def weight_from_partials(
    const floating[:, :, :, ::1] partials, # IN  (parts, 36, F, C)
    floating[:, :, :, ::1] out,            # OUT (F, C, 3, 3)
    int n_threads,
):
    """G^T X G of each (filter, channel) pair, X the partials added in
    order of the parts, X[i][j] = their [., 6 i + j]; each thread a block
    of pairs (the same bits whatever the thread count)."""
    cdef Py_ssize_t pairs = out.shape[0] * out.shape[1]
    cdef Py_ssize_t blocks = min(pairs, max(n_threads, 1)), block
    for block in prange(blocks, nogil=True, schedule="static", num_threads=n_threads,
                        use_threads_if=n_threads > 1):
        if floating is float:
            wg_weight_back_f32(&partials[0, 0, 0, 0], partials.shape[0], out.shape[0],
                               out.shape[1], block * pairs // blocks,
                               (block + 1) * pairs // blocks, &out[0, 0, 0, 0])
        else:
            wg_weight_back_f64(&partials[0, 0, 0, 0], partials.shape[0], out.shape[0],
                               out.shape[1], block * pairs // blocks,
                               (block + 1) * pairs // blocks, &out[0, 0, 0, 0])
