# Design
# ------
# Direct 2-D cross-correlation, stride 1, for the small layers of small
# CNNs, where per-sample matrix products spend more time arranging data than
# multiplying.  Two families of register-tile microkernels, each with one
# variant per instruction set chosen at run time: conv_direct.h vectorises
# over output positions ("wide"), conv_blocked.h over blocks of 16 float /
# 8 double filters ("blocked": no lanes wasted on small planes, where a row
# of 8 pixels fills half a vector).  The loops, the layout changes and the
# threading are here; _runtime.direct_choice picks a family per operation.
#
# * "Wide" positions.  A sample's input is copied into zeroed planes of Hp
#   rows of Wp values (plus a zeroed tail, so that the last tiles may read
#   past the plane).  Rows share their zero columns: Wp = W + max(left,
#   right padding), so that reads past a row's data land in the next row's
#   left padding.  Output pixel (oh, ow) is then wide position
#   p = oh * Wp + ow, and tap (i, j) reads input position p + i*dh*Wp + j*dw:
#   every tap is one offset, and a run of consecutive positions is one
#   vector load.  The Wp - Wout positions at the end of each row are garbage,
#   computed and dropped (or, for the weight gradient, multiplied by zeros).
# * Forward and input gradient are the same kernel: the input gradient of a
#   stride-1 correlation is the correlation of the zero-padded output
#   gradient with the flipped, transposed weights (flipped here by
#   reversing the tap offsets).
# * Determinism.  Each output value of the forward pass and of the input
#   gradient is one chain of fused multiply-adds over channels then taps,
#   computed by one task.  Each weight-gradient value is a sum over 16 (float)
#   or 8 (double) virtual lanes, each lane a chain over samples then
#   positions, the lanes then added in order; its tasks are (run of samples,
#   filter block, channel) triples writing their own partial gradient, which
#   the caller sums in order.  Nothing depends on the thread count or on the
#   instruction set: results are bitwise identical across both.
# * The blocked family reads the same padded planes.  Its forward pass (and
#   input gradient) broadcasts each input value against a block of weights
#   packed (blocks, C, taps, B) into a tile of output pixels x filters, in
#   the wide family's order (channel chunks, then taps): bitwise the same
#   results, though each output row multiplies only the kernel rows that
#   read data: those that read padding rows only add, per channel, the
#   sum of their signed zeros w * 0 instead (the same bits, on the adder
#   pipes).  The tile goes to a
#   position-major scratch that is transposed into NCHW with the bias (and
#   ReLU).  Its weight gradient copies the output gradient, a run of
#   samples at a time, into blocks of filters, each position-major, in the
#   thread's scratch (keeping the bias gradient's per-pixel sums on the
#   way), visits output pixels only (no garbage: exact for any x; border
#   rows leave out padding rows where that copy is finite), sums each value
#   in runs of rows or of whole samples, each run one chain, the runs added
#   in order, and splits tasks by (filter blocks, channels), never by
#   samples.  Layers with few (filter block, channel) pairs (first layers,
#   _runtime.blocked_weight_split) sum each run of rows over the samples
#   into a partial of its own, the caller adding them in order of rows;
#   tasks then split by groups of runs too.
# * Indexing.  The caller checks the geometry (stride 1, one group, padding
#   of the input gradient no larger than the dilated kernel's span) and
#   allocates every buffer with the sizes plane_stride() and wide_length()
#   give; nothing here is bounds-checked.

from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from cython.parallel cimport prange, threadid
from libc.stdint cimport uint8_t

from cyconv._kernels._sums cimport ordered_sums

import numpy as np

cdef extern from "run_loops.h" nogil:
    void rn_copy_plane_summing_f32(const float* src, Py_ssize_t srs, Py_ssize_t rows,
                                   Py_ssize_t cols, float* dst, Py_ssize_t ds, Py_ssize_t S,
                                   float* sums)
    void rn_copy_plane_summing_f64(const double* src, Py_ssize_t srs, Py_ssize_t rows,
                                   Py_ssize_t cols, double* dst, Py_ssize_t ds, Py_ssize_t S,
                                   double* sums)
    void rn_store_plane_f32(const float* src, Py_ssize_t srs, Py_ssize_t rows, Py_ssize_t cols,
                            float* dst, float b, int has_bias, int relu)
    void rn_store_plane_f64(const double* src, Py_ssize_t srs, Py_ssize_t rows,
                            Py_ssize_t cols, double* dst, double b, int has_bias, int relu)
    bint rn_all_finite_f32(const float* p, Py_ssize_t n)
    bint rn_all_finite_f64(const double* p, Py_ssize_t n)

cdef extern from "conv_direct.h" nogil:
    int CD_ISA_PORTABLE, CD_ISA_AVX2, CD_ISA_AVX512
    int cd_detect_isa()
    int cd_forward_filters(int isa)
    int cd_weight_filters(int isa)
    void cd_forward_rows_f32(int isa, const float* x, Py_ssize_t xcs, int C,
                             const Py_ssize_t* offs, int nt, const float* w, Py_ssize_t wfs,
                             int nf, float* out, Py_ssize_t ofs, Py_ssize_t L)
    void cd_forward_rows_f64(int isa, const double* x, Py_ssize_t xcs, int C,
                             const Py_ssize_t* offs, int nt, const double* w, Py_ssize_t wfs,
                             int nf, double* out, Py_ssize_t ofs, Py_ssize_t L)
    void cd_weight_rows_f32(int isa, const float* g, Py_ssize_t gfs, int nf,
                            const float* x, const Py_ssize_t* offs, int nt, Py_ssize_t L,
                            float* lanes)
    void cd_weight_rows_f64(int isa, const double* g, Py_ssize_t gfs, int nf,
                            const double* x, const Py_ssize_t* offs, int nt, Py_ssize_t L,
                            double* lanes)

from cyconv._kernels._pool_tiles cimport pt_backward_f32, pt_backward_f64

cdef extern from "conv_blocked.h" nogil:
    int CD_CHUNK_TAPS
    int cb_blocks(int isa)
    int CB_MAX_TILE_BLOCKS
    int cb_forward_blocks(int isa, int width, int blocks, int strided)
    void cb_forward_rows_f32(int isa, const float* x, Py_ssize_t xcs, int C,
                             const Py_ssize_t* offs, int nt, const float* w, Py_ssize_t wbs,
                             int nb, float* out, Py_ssize_t ldo, int rows, int width,
                             Py_ssize_t wp, Py_ssize_t sw, int chunk, const int* row_taps,
                             unsigned long long first_taps, unsigned long long last_taps,
                             int accumulate)
    void cb_forward_rows_f64(int isa, const double* x, Py_ssize_t xcs, int C,
                             const Py_ssize_t* offs, int nt, const double* w, Py_ssize_t wbs,
                             int nb, double* out, Py_ssize_t ldo, int rows, int width,
                             Py_ssize_t wp, Py_ssize_t sw, int chunk, const int* row_taps,
                             unsigned long long first_taps, unsigned long long last_taps,
                             int accumulate)
    void cb_weight_rows_f32(int isa, const float* g, Py_ssize_t gbs, int nb, const float* x,
                            const Py_ssize_t* offs, int nt, int rows, int width,
                            Py_ssize_t wp, Py_ssize_t sw, int run_rows, int samples,
                            Py_ssize_t gns, Py_ssize_t xns, float* acc, Py_ssize_t accbs,
                            const int* row_taps)
    void cb_weight_rows_f64(int isa, const double* g, Py_ssize_t gbs, int nb, const double* x,
                            const Py_ssize_t* offs, int nt, int rows, int width,
                            Py_ssize_t wp, Py_ssize_t sw, int run_rows, int samples,
                            Py_ssize_t gns, Py_ssize_t xns, double* acc, Py_ssize_t accbs,
                            const int* row_taps)

    void cb_store_planes_f32(int isa, const float* buf, Py_ssize_t ldo, Py_ssize_t P, int nf,
                             float* out, const float* bias, int relu)
    void cb_store_planes_f64(int isa, const double* buf, Py_ssize_t ldo, Py_ssize_t P, int nf,
                             double* out, const double* bias, int relu)
    void cb_store_pooled_f32(int isa, const float* buf, Py_ssize_t ldo, Py_ssize_t Wo,
                             Py_ssize_t Hp, Py_ssize_t Wp, int nf, float* out, uint8_t* codes,
                             const float* bias, int relu)
    void cb_store_pooled_f64(int isa, const double* buf, Py_ssize_t ldo, Py_ssize_t Wo,
                             Py_ssize_t Hp, Py_ssize_t Wp, int nf, double* out, uint8_t* codes,
                             const double* bias, int relu)
    void cb_pad_plane_f32(int isa, const float* src, Py_ssize_t srs, int rows, int cols,
                          float* plane, Py_ssize_t top, Py_ssize_t left, Py_ssize_t wp,
                          Py_ssize_t S)
    void cb_pad_plane_f64(int isa, const double* src, Py_ssize_t srs, int rows, int cols,
                          double* plane, Py_ssize_t top, Py_ssize_t left, Py_ssize_t wp,
                          Py_ssize_t S)
    bint cb_position_major_pooled_f32(int isa, const float* g, const uint8_t* codes,
                                      const float* pooled, Py_ssize_t Pp, int nf, Py_ssize_t Wo,
                                      Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t r0,
                                      Py_ssize_t r1, float* gt, float* sums)
    bint cb_position_major_pooled_f64(int isa, const double* g, const uint8_t* codes,
                                      const double* pooled, Py_ssize_t Pp, int nf,
                                      Py_ssize_t Wo, Py_ssize_t Hp, Py_ssize_t Wp,
                                      Py_ssize_t r0, Py_ssize_t r1, double* gt, double* sums)
    bint cb_position_major_f32(int isa, const float* g, Py_ssize_t P, int nf, Py_ssize_t q0,
                               Py_ssize_t q1, float* gt, float* sums)
    bint cb_position_major_f64(int isa, const double* g, Py_ssize_t P, int nf, Py_ssize_t q0,
                               Py_ssize_t q1, double* gt, double* sums)

cdef enum:
    # Values a vector may read or write past a plane's last position: the
    # widest vector (16 floats) rounds positions up by less than this.
    ROUND = 16
    # Virtual lanes of the weight gradient, as in conv_direct.h: 64 bytes.
    LANES_F32 = 16
    LANES_F64 = 8
    # Filters of the widest weight-gradient tile.
    MAX_WEIGHT_FILTERS = 4

# A thread's lane accumulators in weight_gradient: this many values per tap.
LANE_VALUES_PER_TAP = MAX_WEIGHT_FILTERS * LANES_F32

ISA_NAMES = {CD_ISA_PORTABLE: "portable", CD_ISA_AVX2: "avx2", CD_ISA_AVX512: "avx512"}


def tile_blocks():
    """Most filter blocks per tile of the filter-blocked kernels."""
    return CB_MAX_TILE_BLOCKS


def detected_isa():
    """Name of the best variant this processor runs: 'avx512', 'avx2' or 'portable'."""
    return ISA_NAMES[cd_detect_isa()]


def isa_code(name):
    for code, known in ISA_NAMES.items():
        if known == name:
            return code
    raise ValueError(f"unknown instruction set {name!r}")


def round_up(Py_ssize_t n):
    """Positions rounded up to a whole number of the widest vectors and lanes."""
    return (n + ROUND - 1) // ROUND * ROUND


def plane_stride(Py_ssize_t padded_height, Py_ssize_t padded_width, Py_ssize_t reach):
    """Values per padded plane: the plane, then zeros for the last tiles'
    reads (``reach``, the widest tap offset within a row, plus rounding),
    rounded up to whole vectors so that runs of planes are whole vectors too."""
    return (padded_height * padded_width + reach + 2 * ROUND + ROUND - 1) // ROUND * ROUND


def packed_stride(Py_ssize_t padded_height, Py_ssize_t padded_width):
    """Values per plane of the weight gradient's sample-major runs: the
    plane in whole vectors.  Reads past it land in the next plane, where the
    output gradient's zeros cancel them."""
    return (padded_height * padded_width + ROUND - 1) // ROUND * ROUND


cdef enum:
    # Most "taps" a product's inner dimension is cut into (see below).
    PRODUCT_TAPS = 32


cdef inline int _product_taps(Py_ssize_t k) noexcept nogil:
    """The largest divisor of k of at most PRODUCT_TAPS."""
    cdef int nt = PRODUCT_TAPS
    while k % nt:
        nt -= 1
    return nt


cdef inline void _blocked_product(
    int isa, const floating* a, Py_ssize_t a_step, Py_ssize_t a_stride, Py_ssize_t m,
    Py_ssize_t k, const floating* b, Py_ssize_t blocks, floating* out, Py_ssize_t ldo,
    bint accumulate,
) noexcept nogil:
    """out[i * ldo + j] = sum over c < k of A[i, c] * B[c, j], for i < m and
    j < LANES ``blocks`` (LANES: 16 float, 8 double), A[i, c] = a[c * a_step
    + i * a_stride], one of them 1; B packed in blocks of LANES columns,
    b[(j // LANES) * k * LANES + c * LANES + j % LANES].  The blocked forward
    kernel on one output row of m "positions" (A's rows), c cut into
    "channels" of nt "taps" (the kernel's inner loop runs over taps: one tap
    a channel spent more on the loop than on the multiply-adds); each value
    one chain of fused multiply-adds over c in order, on every variant,
    stored in out, or with ``accumulate`` added to it."""
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef Py_ssize_t offsets[PRODUCT_TAPS]
    cdef int nt = _product_taps(k), t
    cdef Py_ssize_t j = 0, n, nb = cb_blocks(isa)
    for t in range(nt):
        offsets[t] = t * a_step
    while j < blocks:
        n = min(nb, blocks - j)
        if floating is float:
            cb_forward_rows_f32(isa, a, nt * a_step, <int> (k // nt), offsets, nt,
                                b + j * k * lanes, k * lanes, <int> n, out + j * lanes, ldo, 1,
                                <int> m, 0, a_stride, <int> (k // nt), NULL, 0, 0, accumulate)
        else:
            cb_forward_rows_f64(isa, a, nt * a_step, <int> (k // nt), offsets, nt,
                                b + j * k * lanes, k * lanes, <int> n, out + j * lanes, ldo, 1,
                                <int> m, 0, a_stride, <int> (k // nt), NULL, 0, 0, accumulate)
        j += n


cdef void blocked_product_f32(
    int isa, const float* a, Py_ssize_t a_step, Py_ssize_t a_stride, Py_ssize_t m,
    Py_ssize_t k, const float* b, Py_ssize_t blocks, float* out, Py_ssize_t ldo,
    bint accumulate,
) noexcept nogil:
    """_blocked_product in float (exported through _conv_direct.pxd)."""
    _blocked_product(isa, a, a_step, a_stride, m, k, b, blocks, out, ldo, accumulate)


cdef void blocked_product_f64(
    int isa, const double* a, Py_ssize_t a_step, Py_ssize_t a_stride, Py_ssize_t m,
    Py_ssize_t k, const double* b, Py_ssize_t blocks, double* out, Py_ssize_t ldo,
    bint accumulate,
) noexcept nogil:
    """_blocked_product in double."""
    _blocked_product(isa, a, a_step, a_stride, m, k, b, blocks, out, ldo, accumulate)


cdef void _pad_planes(
    const floating[:, :, :, :] x,     # IN  (N, C, H, W), rows contiguous (strides[3] == itemsize)
    floating[:, :, ::1] xp,           # OUT (N, C, stride)
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    int isa, int n_threads,
) noexcept:
    """Write x[n, c] into the planes with its top-left corner at (top,
    left), and zeros everywhere else in them (one pass, no separate
    zeroing); the caller sized the planes to hold it.  x may be a view with
    its first two axes swapped.  (A copy: the same values on every
    variant.)"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], rows = x.shape[2], cols = x.shape[3]
    cdef Py_ssize_t task
    if rows == 0 or cols == 0:  # (no row to take the address of)
        xp[:, :, :] = 0
        return
    # One thread runs the tasks without a parallel region: entering one
    # costs about a microsecond even for a team of one thread (as much as
    # a batch-1 layer's arithmetic); the same below.
    if n_threads > 1:
        for task in prange(N * C, nogil=True, schedule="static", num_threads=n_threads):
            _pad_plane(x, xp, task // C, task % C, top, left, padded_width, isa)
    else:
        with nogil:
            for task in range(N * C):
                _pad_plane(x, xp, task // C, task % C, top, left, padded_width, isa)


cdef inline void _pad_plane(
    const floating[:, :, :, :] x, floating[:, :, ::1] xp, Py_ssize_t n, Py_ssize_t c,
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width, int isa,
) noexcept nogil:
    """One task of _pad_planes: plane (n, c)."""
    cdef Py_ssize_t rows = x.shape[2], cols = x.shape[3]
    cdef Py_ssize_t S = xp.shape[2], srs = x.strides[2] // sizeof(floating)
    if floating is float:
        cb_pad_plane_f32(isa, &x[n, c, 0, 0], srs, <int> rows, <int> cols, &xp[n, c, 0],
                         top, left, padded_width, S)
    else:
        cb_pad_plane_f64(isa, &x[n, c, 0, 0], srs, <int> rows, <int> cols, &xp[n, c, 0],
                         top, left, padded_width, S)


cdef floating* _sample_planes(
    floating[:, :, ::1] xp,                # IN  (N, C, stride) planes, or with pad_in_task
                                           #     scratch (n_threads, C, stride)
    const floating[:, :, :, :] x,          # IN  (N, C, H, W), rows contiguous (pad_in_task)
    bint pad_in_task, Py_ssize_t n, Py_ssize_t tid,
    Py_ssize_t* padded,                    # IN/OUT each thread's sample in its scratch, or
                                           #        NULL (none known: pad every task)
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width, int isa,
) noexcept nogil:
    """Sample n's planes for a task of thread tid: xp[n] as they are, or
    with pad_in_task x[n] padded into the thread's scratch xp[tid] (as
    _pad_planes, the same values), unless its last task did.  A thread's
    static range of tasks runs a sample's tasks one after the other, so
    each sample is padded once a thread, and its planes are still in cache
    when the kernel reads them, where a padded copy of the whole batch had
    left the cache before (W4's forward pass: 16 channels of 36 x 36
    values a sample, 2.7 MB in all)."""
    cdef Py_ssize_t c, S = xp.shape[2], srs = x.strides[2] // sizeof(floating)
    cdef floating* planes
    if not pad_in_task:
        return &xp[n, 0, 0]
    planes = &xp[tid, 0, 0]
    if padded == NULL or padded[tid] != n:
        for c in range(x.shape[1]):
            if floating is float:
                cb_pad_plane_f32(isa, &x[n, c, 0, 0], srs, <int> x.shape[2], <int> x.shape[3],
                                 planes + c * S, top, left, padded_width, S)
            else:
                cb_pad_plane_f64(isa, &x[n, c, 0, 0], srs, <int> x.shape[2], <int> x.shape[3],
                                 planes + c * S, top, left, padded_width, S)
        if padded != NULL:
            padded[tid] = n
    return planes


cdef int _check_thread_planes(floating[:, :, ::1] xp, Py_ssize_t channels,
                              int n_threads) except -1:
    """Refuse scratch planes that do not give each of n_threads threads
    its sample's ``channels`` planes (_sample_planes indexes xp[tid])."""
    if xp.shape[0] < max(n_threads, 1) or xp.shape[1] != channels:
        raise ValueError(f"scratch planes ({xp.shape[0]}, {xp.shape[1]}) do not hold "
                         f"{channels} planes for each of {n_threads} threads")
    return 0


cdef Py_ssize_t* _no_sample_padded(int n_threads) noexcept nogil:
    """For _sample_planes: each of n_threads threads' sample, none yet
    (-1); NULL if there is no memory (every task then pads); free() it."""
    cdef Py_ssize_t* padded = <Py_ssize_t*> malloc(max(n_threads, 1) * sizeof(Py_ssize_t))
    cdef int t
    if padded != NULL:
        for t in range(max(n_threads, 1)):
            padded[t] = -1
    return padded


cdef void _correlate(
    floating[:, :, ::1] xp,                # IN  scratch (n_threads, C, stride) for x padded
                                           #     in each task (see _sample_planes)
    const floating[:, :, :, :] x,          # IN  (N, C, H, W), rows contiguous
    Py_ssize_t top, Py_ssize_t left,       # IN  where x sits in its planes
    const floating[:, :, :, ::1] weight,   # IN  (F, C, kh, kw)
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, :, ::1] out,            # OUT (N, F, Hout, Wout)
    const Py_ssize_t[::1] offsets,         # IN  (kh*kw,) tap offsets
    Py_ssize_t padded_width,
    floating[:, ::1] wide,                 # scratch (n_threads, 4 * round_up(Hout * Wp))
    bint relu, int isa, int n_threads,
) noexcept:
    """out[n, f, oh, ow] = bias[f] + sum_c sum_t weight[f, c, t] *
    xp[n, c, oh * Wp + ow + offsets[t]], then max(out, 0) with relu.
    Tasks are (sample, block of filters) pairs, each padding its sample
    into its thread's planes first (_sample_planes)."""
    cdef Py_ssize_t N = out.shape[0], F = out.shape[1], Ho = out.shape[2]
    cdef Py_ssize_t L = Ho * padded_width, Lr = (L + ROUND - 1) // ROUND * ROUND
    cdef Py_ssize_t block = cd_forward_filters(isa)
    cdef Py_ssize_t blocks = (F + block - 1) // block
    cdef Py_ssize_t* padded = _no_sample_padded(n_threads)
    cdef Py_ssize_t task
    if n_threads > 1:
        for task in prange(N * blocks, nogil=True, schedule="static", num_threads=n_threads):
            _correlate_task(task, threadid(), xp, x, top, left, weight, bias, out, offsets,
                            padded_width, wide, relu, isa, padded, block, blocks, L, Lr)
    else:
        with nogil:
            for task in range(N * blocks):
                _correlate_task(task, 0, xp, x, top, left, weight, bias, out, offsets,
                                padded_width, wide, relu, isa, padded, block, blocks, L, Lr)
    free(padded)


cdef inline void _correlate_task(
    Py_ssize_t task, Py_ssize_t tid, floating[:, :, ::1] xp, const floating[:, :, :, :] x,
    Py_ssize_t top, Py_ssize_t left, const floating[:, :, :, ::1] weight,
    const floating[::1] bias, floating[:, :, :, ::1] out, const Py_ssize_t[::1] offsets,
    Py_ssize_t padded_width, floating[:, ::1] wide, bint relu, int isa, Py_ssize_t* padded,
    Py_ssize_t block, Py_ssize_t blocks, Py_ssize_t L, Py_ssize_t Lr,
) noexcept nogil:
    """One task of _correlate, in thread tid's scratch."""
    cdef Py_ssize_t F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t C = weight.shape[1], nt = weight.shape[2] * weight.shape[3]
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t n = task // blocks, f0 = (task % blocks) * block, k
    cdef Py_ssize_t nf = min(block, F - f0)
    cdef floating* buf = &wide[tid, 0]
    cdef floating* planes = _sample_planes(xp, x, True, n, tid, padded, top, left,
                                           padded_width, isa)
    cdef floating b
    if floating is float:
        cd_forward_rows_f32(isa, planes, xp.shape[2], <int> C, &offsets[0], <int> nt,
                            &weight[f0, 0, 0, 0], C * nt, <int> nf, buf, Lr, L)
    else:
        cd_forward_rows_f64(isa, planes, xp.shape[2], <int> C, &offsets[0], <int> nt,
                            &weight[f0, 0, 0, 0], C * nt, <int> nf, buf, Lr, L)
    for k in range(nf if Ho > 0 and Wo > 0 else 0):  # (no element to address else)
        b = bias[f0 + k] if has_bias else 0
        if floating is float:
            rn_store_plane_f32(buf + k * Lr, padded_width, Ho, Wo, &out[n, f0 + k, 0, 0], b,
                               has_bias, relu)
        else:
            rn_store_plane_f64(buf + k * Lr, padded_width, Ho, Wo, &out[n, f0 + k, 0, 0], b,
                               has_bias, relu)


cdef void _weight_gradient(
    const floating[:, :, ::1] gw,          # IN  (F, N + 1, stride) wide output gradient
    const floating[:, :, ::1] xp,          # IN  (C, N + 1, stride) padded planes
    floating[:, :, :, ::1] partials,       # OUT (S, F, C, kh*kw)
    const Py_ssize_t[::1] offsets,         # IN  (kh*kw,) tap offsets
    Py_ssize_t samples_per_part,
    floating[:, ::1] workspace,            # scratch (n_threads, kh*kw * LANE_VALUES_PER_TAP)
    int isa, int n_threads,
) noexcept:
    """partials[s, f, c, t] = sum over the samples n of part s and wide
    positions p of gw[f, n, p] * xp[c, n, p + offsets[t]].  Tasks are (part,
    filter block, channel) triples; each runs over its samples' planes as
    one sequence (sample-major planes, so that the register tile stays
    loaded across samples).  gw is zero beyond each plane's wide positions,
    so a tap reading into the next plane (the last one a plane of zeros)
    adds nothing, as long as xp is finite."""
    cdef Py_ssize_t F = gw.shape[0], C = xp.shape[0], parts = partials.shape[0]
    cdef Py_ssize_t block = cd_weight_filters(isa)
    cdef Py_ssize_t blocks = (F + block - 1) // block
    cdef Py_ssize_t task
    if n_threads > 1:
        for task in prange(parts * blocks * C, nogil=True, schedule="static",
                           num_threads=n_threads):
            _weight_gradient_task(task, threadid(), gw, xp, partials, offsets,
                                  samples_per_part, workspace, isa, block, blocks)
    else:
        with nogil:
            for task in range(parts * blocks * C):
                _weight_gradient_task(task, 0, gw, xp, partials, offsets, samples_per_part,
                                      workspace, isa, block, blocks)


cdef inline void _weight_gradient_task(
    Py_ssize_t task, Py_ssize_t tid, const floating[:, :, ::1] gw,
    const floating[:, :, ::1] xp, floating[:, :, :, ::1] partials,
    const Py_ssize_t[::1] offsets, Py_ssize_t samples_per_part, floating[:, ::1] workspace,
    int isa, Py_ssize_t block, Py_ssize_t blocks,
) noexcept nogil:
    """One task of _weight_gradient, in thread tid's workspace."""
    cdef Py_ssize_t F = gw.shape[0], N = gw.shape[1] - 1, stride = gw.shape[2]
    cdef Py_ssize_t C = xp.shape[0], nt = offsets.shape[0]
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef Py_ssize_t part = task // (blocks * C), rest = task % (blocks * C)
    cdef Py_ssize_t f0 = (rest // C) * block, c = rest % C
    cdef Py_ssize_t nf = min(block, F - f0), i, k, t, l
    cdef Py_ssize_t n = part * samples_per_part
    cdef Py_ssize_t last = min(N, n + samples_per_part)
    cdef floating* acc = &workspace[tid, 0]
    cdef floating total
    for i in range(nf * nt * lanes):
        acc[i] = 0
    if floating is float:
        cd_weight_rows_f32(isa, &gw[f0, n, 0], (N + 1) * stride, <int> nf, &xp[c, n, 0],
                           &offsets[0], <int> nt, (last - n) * stride, acc)
    else:
        cd_weight_rows_f64(isa, &gw[f0, n, 0], (N + 1) * stride, <int> nf, &xp[c, n, 0],
                           &offsets[0], <int> nt, (last - n) * stride, acc)
    for k in range(nf):
        for t in range(nt):
            total = acc[(k * nt + t) * lanes]
            for l in range(1, lanes):
                total = total + acc[(k * nt + t) * lanes + l]
            partials[part, f0 + k, c, t] = total


cdef bint _all_finite(const floating[:, :, :, ::1] a) noexcept nogil:
    """Whether every value is finite (run_loops.h)."""
    cdef Py_ssize_t size = a.shape[0] * a.shape[1] * a.shape[2] * a.shape[3]
    if size == 0:
        return True
    if floating is float:
        return rn_all_finite_f32(&a[0, 0, 0, 0], size)
    else:
        return rn_all_finite_f64(&a[0, 0, 0, 0], size)


# -- entry points: one call per operation, each argument checked by the
# caller (cyconv/_conv_direct.py) against the geometry

def forward(
    const floating[:, :, :, :] x,          # IN  (N, C, H, W), rows contiguous
    const floating[:, :, :, ::1] weight,   # IN  (F, C, kh, kw)
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, :, ::1] out,            # OUT (N, F, Hout, Wout)
    floating[:, :, ::1] xp,                # scratch (n_threads, C, plane_stride)
    floating[:, ::1] wide,                 # scratch (n_threads, 4 * round_up(Hout * Wp))
    const Py_ssize_t[::1] offsets,         # IN  (kh*kw,) tap offsets
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    bint relu, int isa, int n_threads,
):
    """The correlation, plus bias, then max(., 0) with relu (in the
    store, no second pass over the output)."""
    _check_thread_planes(xp, x.shape[1], n_threads)
    _correlate(xp, x, top, left, weight, bias, out, offsets, padded_width, wide, relu, isa,
               n_threads)


def backward_input(
    const floating[:, :, :, :] grad_out,    # IN  (N, F, Hout, Wout), rows contiguous
    const floating[:, :, :, ::1] weight_t,  # IN  (C, F, kh, kw): weight transposed
    floating[:, :, :, ::1] grad_input,      # OUT (N, C, H, W)
    floating[:, :, ::1] gp,                 # scratch (n_threads, F, plane_stride)
    floating[:, ::1] wide,                  # scratch (n_threads, 4 * round_up(H * Wgp))
    const Py_ssize_t[::1] offsets,          # IN  (kh*kw,) flipped tap offsets
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    int isa, int n_threads,
):
    """The correlation of the padded output gradient with the flipped,
    transposed weights.  False, with nothing written, when the weight is
    not finite: its products with the padding's zeros would be NaN."""
    _check_thread_planes(gp, grad_out.shape[1], n_threads)
    if not _all_finite(weight_t):
        return False
    _correlate(gp, grad_out, top, left, weight_t, weight_t[0, 0, 0, :0], grad_input, offsets,
               padded_width, wide, False, isa, n_threads)
    return True


def backward_weight(
    const floating[:, :, :, :] grad_out_t,  # IN  (F, N, Hout, Wout): a transposed view
    const floating[:, :, :, :] x_t,         # IN  (C, N, H, W): a transposed view
    floating[:, :, ::1] gw,                 # scratch (F, N + 1, packed_stride)
    floating[:, :, ::1] xp,                 # scratch (C, N + 1, packed_stride)
    floating[:, :, :, ::1] partials,        # OUT (S, F, C, kh*kw)
    const Py_ssize_t[::1] offsets,          # IN  (kh*kw,) tap offsets
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    Py_ssize_t samples_per_part,
    floating[:, ::1] workspace,             # scratch (n_threads, kh*kw * LANE_VALUES_PER_TAP)
    const floating[:, :, :, ::1] x,         # IN  (N, C, H, W): x_t's array, checked finite
    floating[:, ::1] pixel_sums,            # IN/OUT (F, Hout*Wout) running sums
    int isa, int n_threads,
    const uint8_t[:, :, :, :] codes_t,      # IN  (F, N, Hp, Wp) + slack, or empty (see below)
    const floating[:, :, :, :] pooled_t,    # IN  (F, N, Hp, Wp), or empty
    floating[:, ::1] dense,                 # scratch (n_threads, Hout * Wout)
    int pairs_isa,
    Py_ssize_t out_height, Py_ssize_t out_width,
    floating[::1] grad_bias,                # OUT (F,), or empty: the last run of a batch
):
    """Partial weight gradients per run of samples, and the output gradient
    added to the per-pixel sums of the bias gradient as it is copied (see
    sum_pixels), and given a non-empty ``grad_bias``, the bias gradient
    from those sums (sum_pixels).  False, with nothing
    written, when x is not finite: the output gradient's zeros at the
    garbage positions multiply x.  With codes, grad_out_t is the gradient
    of a 2x2 max pooling after a ReLU after this convolution (its output
    out_height x out_width), expanded plane by plane in cache with the
    pooling's backward pass (see _copy_rows_summing)."""
    if not _all_finite(x):
        return False
    # The plane after the last sample's is read at every tap's offset past
    # the last positions: zeros.
    _zero_last_planes(gw)
    _zero_last_planes(xp)
    _pad_planes(x_t, xp, top, left, padded_width, isa, n_threads)
    _copy_rows_summing(grad_out_t, codes_t, pooled_t, dense, pairs_isa, out_height, out_width,
                       gw, padded_width, pixel_sums, n_threads)
    _weight_gradient(gw, xp, partials, offsets, samples_per_part, workspace, isa, n_threads)
    if grad_bias.shape[0] > 0:
        sum_pixels(pixel_sums, grad_bias)
    return True


cdef void _zero_last_planes(floating[:, :, ::1] planes) noexcept nogil:
    """planes[:, -1, :] = 0 (a memset a row: the loop indexing each value
    cost 2% of a LeNet batch-1 step's instructions)."""
    cdef Py_ssize_t c, last = planes.shape[1] - 1
    if planes.shape[2] == 0:
        return
    for c in range(planes.shape[0]):
        memset(&planes[c, last, 0], 0, planes.shape[2] * sizeof(floating))


cdef void _copy_rows_summing(
    const floating[:, :, :, :] g_t,        # IN  (F, N, Hout, Wout): a transposed view, or
                                           #     with codes, a 2x2 pooling's (F, N, Hp, Wp)
    const uint8_t[:, :, :, :] codes_t,     # IN  that pooling's codes...
    const floating[:, :, :, :] pooled_t,   # IN  ...and output (both empty: g_t is dense)
    floating[:, ::1] dense,                # scratch (n_threads, Hout * Wout)
    int pairs_isa,
    Py_ssize_t rows, Py_ssize_t cols,      # Hout, Wout
    floating[:, :, ::1] gw,                # OUT (F, N + 1, S): planes N of each filter kept
    Py_ssize_t padded_width,
    floating[:, ::1] pixel_sums,           # IN/OUT (F, Hout * Wout)
    int n_threads,
) noexcept:
    """_pad_planes(g_t, gw, 0, 0, padded_width) for the wide weight
    gradient's output-gradient planes, also adding each sample's plane to
    its filter's per-pixel sums, samples in order: one pass over the
    output gradient for the weight and the bias gradients.  Tasks are
    filters, so each sum is one thread's and the order never changes.
    Given the codes, each plane of the output gradient is first made in
    the thread's scratch by the pooling's backward pass (ReLU's gradient
    included), bit for bit what that pass writes to memory otherwise."""
    cdef Py_ssize_t F = g_t.shape[0], N = g_t.shape[1]
    cdef Py_ssize_t f
    if rows == 0 or cols == 0:  # (no row to take the address of)
        gw[:, :N, :] = 0
        return
    if n_threads > 1:
        for f in prange(F, nogil=True, schedule="static", num_threads=n_threads):
            _copy_filter_rows_summing(f, threadid(), g_t, codes_t, pooled_t, dense, pairs_isa,
                                      rows, cols, gw, padded_width, pixel_sums)
    else:
        with nogil:
            for f in range(F):
                _copy_filter_rows_summing(f, 0, g_t, codes_t, pooled_t, dense, pairs_isa,
                                          rows, cols, gw, padded_width, pixel_sums)


cdef inline void _copy_filter_rows_summing(
    Py_ssize_t f, Py_ssize_t tid, const floating[:, :, :, :] g_t,
    const uint8_t[:, :, :, :] codes_t, const floating[:, :, :, :] pooled_t,
    floating[:, ::1] dense, int pairs_isa, Py_ssize_t rows, Py_ssize_t cols,
    floating[:, :, ::1] gw, Py_ssize_t padded_width, floating[:, ::1] pixel_sums,
) noexcept nogil:
    """One task of _copy_rows_summing: filter f, in thread tid's scratch."""
    cdef Py_ssize_t N = g_t.shape[1], S = gw.shape[2], n, row_stride
    cdef bint expand = codes_t.shape[0] > 0
    cdef floating* made = &dense[tid, 0] if expand else NULL
    cdef floating* plane
    cdef const floating* src
    for n in range(N):
        plane = &gw[f, n, 0]
        if expand:
            if floating is float:
                pt_backward_f32(pairs_isa, &g_t[f, n, 0, 0], &codes_t[f, n, 0, 0],
                                &pooled_t[f, n, 0, 0], made, rows, cols, g_t.shape[2],
                                g_t.shape[3])
            else:
                pt_backward_f64(pairs_isa, &g_t[f, n, 0, 0], &codes_t[f, n, 0, 0],
                                &pooled_t[f, n, 0, 0], made, rows, cols, g_t.shape[2],
                                g_t.shape[3])
        # rows of the made plane, or of the (transposed) output gradient's
        if expand:
            src = made
            row_stride = cols
        else:
            src = &g_t[f, n, 0, 0]
            row_stride = g_t.strides[2] // sizeof(floating)
        if floating is float:
            rn_copy_plane_summing_f32(src, row_stride, rows, cols, plane, padded_width, S,
                                      &pixel_sums[f, 0])
        else:
            rn_copy_plane_summing_f64(src, row_stride, rows, cols, plane, padded_width, S,
                                      &pixel_sums[f, 0])


cpdef void sum_pixels(
    const floating[:, ::1] pixel_sums,     # IN  (F, P) per-pixel sums
    floating[::1] grad_bias,               # OUT (F,)
) noexcept:
    """grad_bias[f] = the sum over pixels p, in order and from 0, of
    pixel_sums[f, p]: the bias gradient's second stage, as
    conv2d_backward_bias (see _sums.ordered_sums)."""
    cdef Py_ssize_t F = pixel_sums.shape[0], P = pixel_sums.shape[1], f
    with nogil:
        if P == 0:  # (no row to take the address of)
            for f in range(F):
                grad_bias[f] = 0
        elif F > 0:
            ordered_sums(&pixel_sums[0, 0], 1, P, P, F, &grad_bias[0])


# -- the filter-blocked family (conv_blocked.h): vectorised over blocks of
# 16 float / 8 double filters, position-major tiles transposed to NCHW in
# the store

cdef void _correlate_blocked(
    floating[:, :, ::1] xp,                # IN  (N, C, stride) padded planes, or with
                                           #     pad_in_task scratch (n_threads, C, stride)
    const floating[:, :, :, :] x,          # IN  (N, C, H, W), rows contiguous: with
                                           #     pad_in_task, what the planes hold
    bint pad_in_task,
    Py_ssize_t top, Py_ssize_t left,       # IN  with pad_in_task: where x sits in its plane
    const floating[:, :, :, ::1] packed,   # IN  (FB, C, kh*kw, B) weight blocks, zero-padded
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, :, ::1] out,            # OUT (N, F, Hout, Wout), or pooled (N, F, Hp, Wp)
    uint8_t[:, :, :, ::1] codes,           # OUT (N, F, Hp, Wp) if pooled, else empty
    Py_ssize_t Ho, Py_ssize_t Wo,          # IN  the convolution's output size
    const Py_ssize_t[::1] offsets,         # IN  (kh*kw,) tap offsets
    Py_ssize_t padded_width, Py_ssize_t stride_h, Py_ssize_t stride_w,
    const int[:, ::1] row_taps,            # IN  (Hout, 2) each output row's taps...
    bint skip_padding,                     # ...taken if True, else all taps
    unsigned long long first_taps,         # IN  bit t: tap t reads a padding column at a
    unsigned long long last_taps,          #     row's first (last) pixel (used if skip_padding)
    floating[:, ::1] tiles,                # scratch (n_threads, Hout * Wout * tile_blocks() * B)
    bint relu, int isa, int n_threads,
) noexcept:
    """out[n, f, oh, ow] = bias[f] + sum_c sum_t weight[f, c, t] *
    xp[n, c, oh * sh * Wp + ow * sw + offsets[t]], then max(out, 0) with
    relu; at stride 1 the same sums as _correlate, in the same order.  Tasks are (sample, tile of
    filter blocks) pairs; each computes its rows into a position-major
    scratch tile, then writes them transposed.  Output row oh takes taps
    row_taps[oh, 0] <= t < row_taps[oh, 1] as multiply-adds (the others
    read padding rows only: their signed zeros are added, see
    cb_fwd_tile), and at its first and last pixels adds the signed zeros
    of the taps that read a padding column there.  With codes (not
    empty), out is instead the 2x2 max pooling (stride 2) of that output,
    and codes its winners' (cb_store_pooled): whole windows only.
    With pad_in_task, each task first pads its sample's planes of x into
    its thread's scratch (_sample_planes)."""
    cdef Py_ssize_t N = out.shape[0], FB = packed.shape[0], nt = packed.shape[2]
    cdef Py_ssize_t per_tile = cb_forward_blocks(isa, <int> Wo, <int> FB, stride_w != 1)
    cdef Py_ssize_t groups = (FB + per_tile - 1) // per_tile
    cdef int chunk = (CD_CHUNK_TAPS + <int> nt - 1) // <int> nt
    cdef const int* taps = &row_taps[0, 0] if skip_padding else NULL
    if not skip_padding:
        first_taps = last_taps = 0
    cdef Py_ssize_t* padded = _no_sample_padded(n_threads)
    cdef Py_ssize_t task
    if n_threads > 1:
        for task in prange(N * groups, nogil=True, schedule="static", num_threads=n_threads):
            _correlate_blocked_task(task, threadid(), xp, x, pad_in_task, top, left, packed,
                                    bias, out, codes, Ho, Wo, offsets, padded_width, stride_h,
                                    stride_w, taps, first_taps, last_taps, tiles, relu, isa,
                                    padded, per_tile, groups, chunk)
    else:
        with nogil:
            for task in range(N * groups):
                _correlate_blocked_task(task, 0, xp, x, pad_in_task, top, left, packed, bias,
                                        out, codes, Ho, Wo, offsets, padded_width, stride_h,
                                        stride_w, taps, first_taps, last_taps, tiles, relu,
                                        isa, padded, per_tile, groups, chunk)
    free(padded)


cdef inline void _correlate_blocked_task(
    Py_ssize_t task, Py_ssize_t tid, floating[:, :, ::1] xp, const floating[:, :, :, :] x,
    bint pad_in_task, Py_ssize_t top, Py_ssize_t left, const floating[:, :, :, ::1] packed,
    const floating[::1] bias, floating[:, :, :, ::1] out, uint8_t[:, :, :, ::1] codes,
    Py_ssize_t Ho, Py_ssize_t Wo, const Py_ssize_t[::1] offsets, Py_ssize_t padded_width,
    Py_ssize_t stride_h, Py_ssize_t stride_w, const int* taps, unsigned long long first_taps,
    unsigned long long last_taps, floating[:, ::1] tiles, bint relu, int isa,
    Py_ssize_t* padded, Py_ssize_t per_tile, Py_ssize_t groups, int chunk,
) noexcept nogil:
    """One task of _correlate_blocked, in thread tid's scratch."""
    cdef Py_ssize_t F = out.shape[1]
    cdef bint pooled = codes.shape[0] > 0
    cdef Py_ssize_t FB = packed.shape[0], C = packed.shape[1], nt = packed.shape[2]
    cdef Py_ssize_t B = packed.shape[3], ldo = per_tile * B, positions = Ho * Wo
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t S = xp.shape[2]
    cdef Py_ssize_t n = task // groups, b0 = (task % groups) * per_tile
    cdef Py_ssize_t nb = min(per_tile, FB - b0), nf
    cdef floating* buf = &tiles[tid, 0]
    cdef floating* planes = _sample_planes(xp, x, pad_in_task, n, tid, padded, top, left,
                                           padded_width, isa)
    if floating is float:
        cb_forward_rows_f32(isa, planes, S, <int> C, &offsets[0], <int> nt,
                            &packed[b0, 0, 0, 0], C * nt * B, <int> nb, buf, ldo,
                            <int> Ho, <int> Wo, stride_h * padded_width, stride_w, chunk,
                            taps, first_taps, last_taps, False)
    else:
        cb_forward_rows_f64(isa, planes, S, <int> C, &offsets[0], <int> nt,
                            &packed[b0, 0, 0, 0], C * nt * B, <int> nb, buf, ldo,
                            <int> Ho, <int> Wo, stride_h * padded_width, stride_w, chunk,
                            taps, first_taps, last_taps, False)
    nf = min(F, (b0 + nb) * B) - b0 * B
    if pooled:
        if floating is float:
            cb_store_pooled_f32(isa, buf, ldo, Wo, out.shape[2], out.shape[3], <int> nf,
                                &out[n, b0 * B, 0, 0], &codes[n, b0 * B, 0, 0],
                                &bias[b0 * B] if has_bias else NULL, relu)
        else:
            cb_store_pooled_f64(isa, buf, ldo, Wo, out.shape[2], out.shape[3], <int> nf,
                                &out[n, b0 * B, 0, 0], &codes[n, b0 * B, 0, 0],
                                &bias[b0 * B] if has_bias else NULL, relu)
    elif floating is float:
        cb_store_planes_f32(isa, buf, ldo, positions, <int> nf, &out[n, b0 * B, 0, 0],
                            &bias[b0 * B] if has_bias else NULL, relu)
    else:
        cb_store_planes_f64(isa, buf, ldo, positions, <int> nf, &out[n, b0 * B, 0, 0],
                            &bias[b0 * B] if has_bias else NULL, relu)


def pack_blocks(
    const floating[:, :, :, ::1] weight,   # IN  (F, C, kh, kw)
    floating[:, :, :, ::1] packed,         # OUT (FB, C, kh*kw, B); transposed (CB, F, kh*kw, B)
    bint transposed,
):
    """packed[b, c, t, l] = weight[b * B + l, c, t], or with ``transposed``
    weight[c, b * B + l, t] (the input gradient's weights), zeros past the
    last filter (channel); returns whether every weight is finite."""
    cdef Py_ssize_t blocks = packed.shape[0], inner = packed.shape[1]
    cdef Py_ssize_t nt = packed.shape[2], B = packed.shape[3]
    cdef Py_ssize_t outer = weight.shape[1] if transposed else weight.shape[0]
    cdef Py_ssize_t b, c, t, l, o
    cdef const floating* src
    cdef floating* dst
    with nogil:
        for b in range(blocks):
            for c in range(inner):
                dst = &packed[b, c, 0, 0]
                for l in range(B):
                    o = b * B + l
                    if o >= outer:
                        for t in range(nt):
                            dst[t * B + l] = 0
                        continue
                    src = &weight[c, o, 0, 0] if transposed else &weight[o, c, 0, 0]
                    for t in range(nt):
                        dst[t * B + l] = src[t]
    return _all_finite(packed)


def forward_blocked(
    const floating[:, :, :, :] x,          # IN  (N, C, H, W), rows contiguous
    const floating[:, :, :, ::1] packed,   # IN  (FB, C, kh*kw, B) weight blocks
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, :, ::1] out,            # OUT (N, F, Hout, Wout), or pooled (N, F, Hp, Wp)
    uint8_t[:, :, :, ::1] codes,           # OUT (N, F, Hp, Wp) the pooling's winners, or empty
    floating[:, :, ::1] xp,                # scratch (n_threads, C, plane_stride), or x itself
                                           # (N, C, H * W) without padding (copy False)
    bint copy,                             # IN  whether x is padded into xp (in each task)
    floating[:, ::1] tiles,                # scratch (n_threads, Hout * Wout * tile_blocks() * B)
    const Py_ssize_t[::1] offsets,         # IN  (kh*kw,) tap offsets
    const int[:, ::1] row_taps,            # IN  (Hout, 2) taps reading more than padding
    unsigned long long first_taps,         # IN  taps reading padding at a row's first pixel
    unsigned long long last_taps,          # IN  ...and at its last
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    Py_ssize_t out_width,                  # IN  Wout (with codes: 2 Wp <= Wout, 2 Hp <= Hout)
    Py_ssize_t stride_h, Py_ssize_t stride_w,
    bint relu, int isa, int n_threads,
):
    """forward, by the filter-blocked kernels (bitwise the same result),
    and for strided layers too.  Rows add the taps that read padding rows
    only, and their first and last pixels those that read padding columns,
    as signed zeros where every weight is finite (else as multiply-adds:
    NaN).  With codes (stride 1), out is the 2x2 max pooling with stride 2
    of that output, made in the store with its winners' codes
    (pool_tiles.h's): the same bits as the two one after the other,
    without writing the convolution's output.  With ``copy``, each task
    pads its sample into its thread's planes of xp (see
    _correlate_blocked); without, xp is x's own planes, which every tap
    reads inside of (no padding: see _conv_direct.input_planes)."""
    if copy:
        _check_thread_planes(xp, x.shape[1], n_threads)
    _correlate_blocked(xp, x, copy, top, left, packed, bias, out, codes, row_taps.shape[0],
                       out_width, offsets, padded_width, stride_h, stride_w, row_taps,
                       _all_finite(packed), first_taps, last_taps, tiles, relu, isa, n_threads)


# No pooling in the store.
cdef uint8_t[:, :, :, ::1] _NO_CODES = np.empty((0, 0, 0, 0), np.uint8)


def backward_input_blocked(
    const floating[:, :, :, :] grad_out,    # IN  (N, F, Hout, Wout), rows contiguous
    const floating[:, :, :, ::1] packed_t,  # IN  (CB, F, kh*kw, B) transposed weight blocks
    floating[:, :, :, ::1] grad_input,      # OUT (N, C, H, W)
    floating[:, :, ::1] gp,                 # scratch (n_threads, F, plane_stride)
    floating[:, ::1] tiles,                 # scratch (n_threads, H * W * tile_blocks() * B)
    const Py_ssize_t[::1] offsets,          # IN  (kh*kw,) flipped tap offsets
    const int[:, ::1] row_taps,             # IN  (H, 2) taps reading more than padding
    unsigned long long first_taps,          # IN  taps reading padding at a row's first pixel
    unsigned long long last_taps,           # IN  ...and at its last
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    int isa, int n_threads,
):
    """backward_input, by the filter-blocked kernels, for finite weights
    (the caller checks: pack_blocks), skipping the taps of each row that
    read padding rows only, and adding the zeros of padding columns.
    Each task pads its sample of grad_out into its thread's planes of gp
    (see _correlate_blocked)."""
    _check_thread_planes(gp, grad_out.shape[1], n_threads)
    _correlate_blocked(gp, grad_out, True, top, left, packed_t, packed_t[0, 0, 0, :0],
                       grad_input, _NO_CODES, grad_input.shape[2], grad_input.shape[3], offsets,
                       padded_width, 1, 1, row_taps, True, first_taps, last_taps, tiles, False,
                       isa, n_threads)


cpdef void sum_positions(
    const floating[:, ::1] sums,           # IN  (FB, P * B) per-pixel sums
    floating[::1] grad_bias,               # OUT (F,)
) noexcept:
    """grad_bias[f] = sum over positions q, in order, of sums[f // B, q * B
    + f % B]: the bias gradient's second stage, as conv2d_backward_bias
    (per-pixel sums over samples, then over pixels, each from 0)."""
    cdef Py_ssize_t F = grad_bias.shape[0]
    cdef Py_ssize_t B = LANES_F32 if floating is float else LANES_F64
    cdef Py_ssize_t positions = sums.shape[1] // B
    cdef Py_ssize_t b, q, l
    cdef floating total[LANES_F32]     # a block's filters side by side
    with nogil:
        for b in range(sums.shape[0]):
            for l in range(B):
                total[l] = 0
            for q in range(positions):
                for l in range(B):
                    total[l] = total[l] + sums[b, q * B + l]
            for l in range(min(B, F - b * B)):
                grad_bias[b * B + l] = total[l]


cdef void _weight_blocked(
    const floating[:, :, :, ::1] g,        # IN  (N, F, Hout, Wout) output gradient, or with
                                           #     codes a 2x2 pooling's (N, F, Hp, Wp)
    const uint8_t[:, :, :, ::1] codes,     # IN  that pooling's codes...
    const floating[:, :, :, ::1] pooled,   # IN  ...and output (both empty: g is dense)
    Py_ssize_t Wo,                         # IN  Wout
    const floating[:, :, ::1] xp,          # IN  (N, C, stride) padded planes
    floating[:, :, :, :, ::1] acc,         # IN/OUT (R, FB, C, kh*kw, B) running sums
    floating[:, ::1] sums,                 # IN/OUT (FB, Hout * Wout * B) running sums
    floating[:, ::1] gt,                   # scratch (n_threads, run_samples * tile_blocks()
                                           #          * Hout * Wout * B)
    const Py_ssize_t[::1] offsets,         # IN  (kh*kw,) tap offsets
    const int[:, ::1] row_taps,            # IN  (Hout, 2) taps reading more than padding
    Py_ssize_t padded_width, Py_ssize_t stride_h, Py_ssize_t stride_w,
    Py_ssize_t run_rows, Py_ssize_t run_samples, Py_ssize_t group_rows,
    int isa, int n_threads,
) noexcept:
    """acc[r, b, c, t, l] += sum over samples n and output pixels (oh, ow)
    of rows r * group_rows <= oh < (r + 1) * group_rows (R groups of rows
    covering the plane) of g[n, b * B + l, oh, ow] * xp[n, c, oh * sh * Wp
    + ow * sw + offsets[t]], in runs of run_rows output rows, or (run_rows
    covering the plane) of run_samples samples, each run one chain, the
    runs added in order; and sums[b, q * B + l] += g[n, b * B + l, q] for
    each sample in order (the bias gradient's per-pixel partial sums).
    Tasks are (tile of filter blocks, run of row groups, run of channels)
    triples over every sample; for each sample run and row group, each
    copies the output gradient of its filter blocks and rows
    position-major (blocks of filters) into its thread's scratch, where it
    serves every channel of the task from cache.  The task of a tile's
    first channels also keeps the per-pixel sums of its rows.  Where that
    copy is finite, output row oh takes only taps row_taps[oh, 0] <= t <
    row_taps[oh, 1] (the others' terms are signed zeros, which change no
    running sum here: see cb_wgt_tile).  Given codes (windows tiling the
    plane, groups of an even number of rows), the copy is made from the
    pooling's gradient (cb_position_major_pooled), bit for bit the copy of
    what its backward pass writes otherwise."""
    cdef Py_ssize_t R = acc.shape[0], FB = acc.shape[1], C = acc.shape[2]
    cdef Py_ssize_t per_tile = cb_blocks(isa), groups = (FB + per_tile - 1) // per_tile
    # Row groups, then channels, per task: as many as leave each thread the
    # same number of tasks where they can (each task copies the output
    # gradient once per run of samples; the more channels it serves, the
    # cheaper).  The sums do not depend on it: each row group's partial is
    # one running sum over the samples in order, whichever task adds it.
    cdef Py_ssize_t row_blocks = min(R, n_threads // _gcd(groups, n_threads))
    cdef Py_ssize_t per_rows = (R + row_blocks - 1) // row_blocks
    cdef Py_ssize_t channel_blocks = min(C, n_threads // _gcd(groups * row_blocks, n_threads))
    cdef Py_ssize_t per_task = (C + channel_blocks - 1) // channel_blocks
    cdef Py_ssize_t task
    if n_threads > 1:
        for task in prange(groups * row_blocks * channel_blocks, nogil=True, schedule="static",
                           num_threads=n_threads):
            _weight_blocked_task(task, threadid(), g, codes, pooled, Wo, xp, acc, sums, gt,
                                 offsets, row_taps, padded_width, stride_h, stride_w, run_rows,
                                 run_samples, group_rows, isa, per_tile, row_blocks, per_rows,
                                 channel_blocks, per_task)
    else:
        with nogil:
            for task in range(groups * row_blocks * channel_blocks):
                _weight_blocked_task(task, 0, g, codes, pooled, Wo, xp, acc, sums, gt, offsets,
                                     row_taps, padded_width, stride_h, stride_w, run_rows,
                                     run_samples, group_rows, isa, per_tile, row_blocks,
                                     per_rows, channel_blocks, per_task)


cdef inline void _weight_blocked_task(
    Py_ssize_t task, Py_ssize_t tid, const floating[:, :, :, ::1] g,
    const uint8_t[:, :, :, ::1] codes, const floating[:, :, :, ::1] pooled, Py_ssize_t Wo,
    const floating[:, :, ::1] xp, floating[:, :, :, :, ::1] acc, floating[:, ::1] sums,
    floating[:, ::1] gt, const Py_ssize_t[::1] offsets, const int[:, ::1] row_taps,
    Py_ssize_t padded_width, Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t run_rows,
    Py_ssize_t run_samples, Py_ssize_t group_rows, int isa, Py_ssize_t per_tile,
    Py_ssize_t row_blocks, Py_ssize_t per_rows, Py_ssize_t channel_blocks,
    Py_ssize_t per_task,
) noexcept nogil:
    """One task of _weight_blocked, in thread tid's scratch."""
    cdef Py_ssize_t N = g.shape[0], F = g.shape[1], Ho = row_taps.shape[0]
    cdef Py_ssize_t positions = Ho * Wo, Pp = g.shape[2] * g.shape[3]
    cdef bint expand = codes.shape[0] > 0
    cdef Py_ssize_t R = acc.shape[0], FB = acc.shape[1], C = acc.shape[2], nt = acc.shape[3]
    cdef Py_ssize_t B = acc.shape[4]
    cdef Py_ssize_t b0, nb, bb, c, c0, k, n, ns, j, r, ra, r0, r1, gbs, gns
    cdef floating* buf
    cdef floating* total
    cdef bint finite
    b0 = (task // (row_blocks * channel_blocks)) * per_tile
    ra = ((task // channel_blocks) % row_blocks) * per_rows
    c0 = (task % channel_blocks) * per_task
    nb = min(per_tile, FB - b0)
    buf = &gt[tid, 0]
    for k in range((N + run_samples - 1) // run_samples):
        n = k * run_samples
        ns = min(run_samples, N - n)
        for r in range(ra, min(R, ra + per_rows)):
            r0 = r * group_rows
            r1 = min(Ho, r0 + group_rows)
            gbs = (r1 - r0) * Wo * B
            gns = per_tile * gbs
            finite = True
            for j in range(ns):
                for bb in range(nb):
                    total = &sums[b0 + bb, r0 * Wo * B] if c0 == 0 else NULL
                    if expand:
                        if floating is float:
                            if not cb_position_major_pooled_f32(
                                    isa, &g[n + j, (b0 + bb) * B, 0, 0],
                                    &codes[n + j, (b0 + bb) * B, 0, 0],
                                    &pooled[n + j, (b0 + bb) * B, 0, 0], Pp,
                                    <int> min(B, F - (b0 + bb) * B), Wo, g.shape[2],
                                    g.shape[3], r0, r1, buf + j * gns + bb * gbs, total):
                                finite = False
                        else:
                            if not cb_position_major_pooled_f64(
                                    isa, &g[n + j, (b0 + bb) * B, 0, 0],
                                    &codes[n + j, (b0 + bb) * B, 0, 0],
                                    &pooled[n + j, (b0 + bb) * B, 0, 0], Pp,
                                    <int> min(B, F - (b0 + bb) * B), Wo, g.shape[2],
                                    g.shape[3], r0, r1, buf + j * gns + bb * gbs, total):
                                finite = False
                    elif floating is float:
                        if not cb_position_major_f32(
                                isa, &g[n + j, (b0 + bb) * B, r0, 0], positions,
                                <int> min(B, F - (b0 + bb) * B), 0, (r1 - r0) * Wo,
                                buf + j * gns + bb * gbs, total):
                            finite = False
                    else:
                        if not cb_position_major_f64(
                                isa, &g[n + j, (b0 + bb) * B, r0, 0], positions,
                                <int> min(B, F - (b0 + bb) * B), 0, (r1 - r0) * Wo,
                                buf + j * gns + bb * gbs, total):
                            finite = False
            for c in range(c0, min(C, c0 + per_task)):
                if floating is float:
                    cb_weight_rows_f32(isa, buf, gbs, <int> nb,
                                       &xp[n, c, r0 * stride_h * padded_width],
                                       &offsets[0], <int> nt, <int> (r1 - r0), <int> Wo,
                                       stride_h * padded_width, stride_w, <int> run_rows,
                                       <int> ns, gns, C * xp.shape[2],
                                       &acc[r, b0, c, 0, 0], C * nt * B,
                                       &row_taps[r0, 0] if finite else NULL)
                else:
                    cb_weight_rows_f64(isa, buf, gbs, <int> nb,
                                       &xp[n, c, r0 * stride_h * padded_width],
                                       &offsets[0], <int> nt, <int> (r1 - r0), <int> Wo,
                                       stride_h * padded_width, stride_w, <int> run_rows,
                                       <int> ns, gns, C * xp.shape[2],
                                       &acc[r, b0, c, 0, 0], C * nt * B,
                                       &row_taps[r0, 0] if finite else NULL)


cdef inline Py_ssize_t _gcd(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


def backward_weight_blocked(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout), or with codes a 2x2
                                            #     pooling's gradient (N, F, Hp, Wp)
    const uint8_t[:, :, :, ::1] codes,      # IN  that pooling's codes...
    const floating[:, :, :, ::1] pooled,    # IN  ...and output (both empty: dense)
    Py_ssize_t out_width,                   # IN  Wout
    const floating[:, :, :, :] x,           # IN  (N, C, H, W), rows contiguous
    floating[:, ::1] gt,                    # scratch (n_threads, run_samples * tile_blocks()
                                            #          * Hout * Wout * B)
    floating[:, :, ::1] xp,                 # scratch (N, C, plane_stride), or x itself
                                            # (N, C, H * W) without padding (copy False)
    bint copy,                              # IN  whether x is padded into xp first
    floating[:, :, :, :, ::1] acc,          # IN/OUT (R, FB, C, kh*kw, B) running sums
    floating[:, ::1] sums,                  # IN/OUT (FB, Hout * Wout * B) running sums
    const Py_ssize_t[::1] offsets,          # IN  (kh*kw,) tap offsets
    const int[:, ::1] row_taps,             # IN  (Hout, 2) taps reading more than padding
    Py_ssize_t top, Py_ssize_t left, Py_ssize_t padded_width,
    Py_ssize_t stride_h, Py_ssize_t stride_w,
    Py_ssize_t run_rows, Py_ssize_t run_samples, Py_ssize_t group_rows,
    int isa, int n_threads,
    floating[::1] grad_bias,                # OUT (F,), or empty: the batch's last chunk
):
    """Add this chunk of samples' weight gradient to acc, and its output
    gradient to the per-pixel sums of the bias gradient (see
    sum_positions), by the filter-blocked kernels; given a non-empty
    ``grad_bias``, the bias gradient from those sums.  Only output pixels are
    visited (no garbage positions), so any x is exact.  A pooling's
    gradient (with codes: windows tiling the plane, group_rows even or the
    plane's) is expanded as it is copied.  Without ``copy``, xp is x's
    own planes (as forward_blocked)."""
    if copy:
        _pad_planes(x, xp, top, left, padded_width, isa, n_threads)
    _weight_blocked(grad_out, codes, pooled, out_width, xp, acc, sums, gt, offsets, row_taps,
                    padded_width, stride_h, stride_w, run_rows, run_samples, group_rows, isa,
                    n_threads)
    if grad_bias.shape[0] > 0:
        sum_positions(sums, grad_bias)
