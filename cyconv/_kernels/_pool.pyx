# Design
# ------
# Max and average pooling over planes, forward and backward.  The caller
# flattens (N, C) into one axis, so every kernel sees C-contiguous
# (P, H, W) inputs and (P, Hout, Wout) outputs, and threads split the P
# planes: each plane is read and written by exactly one thread, in one fixed
# order, so results are bitwise identical whatever the thread count.
#
# * Padding is never materialised.  Output (oh, ow) looks at padded rows
#   oh*sh .. oh*sh + kh - 1, that is input rows h0 = oh*sh - ph .. h0 + kh - 1,
#   clipped here to [0, H) (and likewise for columns).  Dilated max pooling
#   reads every dh-th of rows h0 .. h0 + (kh - 1)*dh instead (_window_span).  For max pooling the
#   padding is -inf, so it can never be chosen and is simply skipped; for
#   average pooling it only enters the divisor.
# * The caller guarantees (PyTorch's rules: padding <= kernel // 2, kernel no
#   larger than the padded input, and under ceil_mode no window starting in
#   the right or bottom padding; with dilation, a check of its own) that
#   every window, once clipped to the input, holds at least one element.  The max kernels read the first of
#   them without checking, and no divisor is zero.
# * The maximum of a window is its first largest element in row-major order,
#   with NaN larger than everything, so the first NaN wins.  Its flat index
#   h*W + w within the plane is what the gradient follows.  It is found in
#   two branch-free passes over the (cache-hot) window, the largest value
#   first and then where it first occurs, because on real data a running
#   "is this the new maximum?" branch is mispredicted about half the time.
# * Sums of average pooling are accumulated in double, also for float32, and
#   divided once.
#
# Tiles: non-overlapping max pooling
# ----------------------------------
# Kernel == stride with no padding (2x2/2, 3x3/3: the max pooling of nearly
# every CNN) has a forward kernel of its own, max_pool2d_tiles_forward:
#
# * Elements are compared through order keys, an integer per element built
#   from its bits (_order_key) whose signed order is the order above: -0
#   equal to +0, every NaN above +inf and equal to each other, so that a
#   strict "greater" keeps the first largest and the first NaN.  Compilers
#   vectorise integer compares and selects of one width; float compares
#   whose masks select integers (an index) they left scalar (GCC 12), and
#   there the selects became branches.  So this kernel reads and writes
#   float32 planes as int32 and float64 planes as int64 (bits_t), and never
#   touches that memory as floats, which keeps the type punning within C's
#   aliasing rules.  An output is the bits of the element it came from, NaN
#   payload and sign of zero included.
# * 2x2 windows are one branch-free tournament per window, vectorised along
#   the output row (or along several short rows packed end to end).  Runs of
#   windows are first tried with keys that skip the NaN test, and a run that
#   meets a NaN is done again.  Other sizes, and the partial last windows
#   that ceil_mode adds, take one scalar pass per window.
#
# The backward pass with indices, max_pool2d_backward_indices, serves every
# geometry: it zeroes each plane just before scattering into it.
# max_pool2d_backward_indices_relu applies ReLU's gradient in the same pass.
#
# 2x2 windows, stride 2: pool_tiles.h
# -----------------------------------
# Where the processor has AVX-512 or AVX2, MaxPooling(2) and max_pool2d
# (indices then follow from the codes) run max_pool2d_pairs_forward /
# _backward instead (see the header):
# one byte per window says which of its 4 elements won, and backward writes
# each element of the input gradient once from those codes, with ReLU's
# gradient folded in on request.

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport INT32_MAX, INT64_MAX, int32_t, int64_t, uint64_t
from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

cdef extern from "run_loops.h" nogil:
    void rn_indices_of_codes(const uint8_t* codes, const int64_t* corners, int64_t* indices,
                             int64_t W, Py_ssize_t n)

from cyconv._kernels._pool_tiles cimport (PT_ISA_AVX2, PT_ISA_AVX512, PT_ISA_PORTABLE,
                                          pt_backward_f32, pt_backward_f64, pt_detect_isa,
                                          pt_forward_f32, pt_forward_f64)

# The 2x2 kernels' variants (pool_tiles.h), by name.
PAIRS_ISAS = {"portable": PT_ISA_PORTABLE, "avx2": PT_ISA_AVX2, "avx512": PT_ISA_AVX512}


def pairs_isa():
    """Name of the best 2x2 variant this processor runs: 'avx512', 'avx2' or
    'portable'."""
    isa = pt_detect_isa()
    return next(name for name, value in PAIRS_ISAS.items() if value == isa)

ctypedef fused bits_t:
    int32_t  # the bits of a float32
    int64_t  # the bits of a float64


cdef inline void _window_span(
    Py_ssize_t start,   # the window's first position, input coordinates (may be < 0)
    Py_ssize_t k, Py_ssize_t d,  # kernel size and dilation along the axis
    Py_ssize_t size,    # the input's size along the axis
    Py_ssize_t* first,  # OUT the window's first position inside the input
    Py_ssize_t* count,  # OUT how many of its k positions lie inside the input
) noexcept nogil:
    # The window reads start, start + d, ..., start + (k - 1) * d; those in
    # the padding are skipped.  The caller guarantees count >= 1.
    cdef Py_ssize_t stop = min(start + (k - 1) * d + 1, size)
    if start < 0:
        start = start + (-start + d - 1) // d * d
    first[0] = start
    count[0] = (stop - start + d - 1) // d if stop > start else 0


cdef inline floating _window_max(
    const floating* plane,  # IN  (H, W) plane, row stride W
    Py_ssize_t W,
    Py_ssize_t h0, Py_ssize_t nh, Py_ssize_t dh,  # first row, rows, row step
    Py_ssize_t w0, Py_ssize_t nw, Py_ssize_t dw,  # first column, columns, column step
    bint* nan_seen,         # OUT whether the window holds a NaN
) noexcept nogil:
    # Written without data-dependent branches (a ternary the compiler turns
    # into maxss, bitwise or): on real data which element wins is
    # unpredictable, and mispredicted branches cost more than the loads.
    # Callers pass a literal dw of 1 for undilated windows, so that the
    # inlined loop runs over contiguous columns.
    cdef floating best_value = plane[h0 * W + w0]
    cdef floating value
    cdef bint nan = False
    cdef Py_ssize_t i, j
    cdef const floating* row
    for i in range(nh):
        row = plane + (h0 + i * dh) * W + w0
        for j in range(nw):
            value = row[j * dw]
            best_value = value if value > best_value else best_value
            nan = nan | (value != value)
    nan_seen[0] = nan
    return best_value


cdef inline Py_ssize_t _window_first(
    const floating* plane,  # IN  (H, W) plane, row stride W
    Py_ssize_t W,
    Py_ssize_t h0, Py_ssize_t nh, Py_ssize_t dh,
    Py_ssize_t w0, Py_ssize_t nw, Py_ssize_t dw,
    floating target,
    bint nan,
) noexcept nogil:
    # The flat index of the first element equal to target, or of the first
    # NaN if nan.  Scanning backwards and keeping the last match found leaves
    # the first in row-major order, again without a data-dependent branch.
    cdef Py_ssize_t best = h0 * W + w0
    cdef Py_ssize_t index
    cdef floating value
    cdef Py_ssize_t i, j
    if nan:
        for i in range(nh - 1, -1, -1):
            for j in range(nw - 1, -1, -1):
                index = (h0 + i * dh) * W + w0 + j * dw
                value = plane[index]
                best = index if value != value else best
    else:
        for i in range(nh - 1, -1, -1):
            for j in range(nw - 1, -1, -1):
                index = (h0 + i * dh) * W + w0 + j * dw
                best = index if plane[index] == target else best
    return best


cdef inline Py_ssize_t _window_argmax(
    const floating* plane,  # IN  (H, W) plane, row stride W
    Py_ssize_t W,
    Py_ssize_t h0, Py_ssize_t nh, Py_ssize_t dh,
    Py_ssize_t w0, Py_ssize_t nw, Py_ssize_t dw,
) noexcept nogil:
    cdef bint nan
    cdef floating best_value = _window_max(plane, W, h0, nh, dh, w0, nw, dw, &nan)
    return _window_first(plane, W, h0, nh, dh, w0, nw, dw, best_value, nan)


cdef inline void _max_pool_window(
    const floating* x, Py_ssize_t W,
    Py_ssize_t h0, Py_ssize_t nh, Py_ssize_t dh,
    Py_ssize_t w0, Py_ssize_t nw, Py_ssize_t dw,
    floating* out,     # OUT one output element
    int64_t* index,    # OUT its argmax, or NULL when not wanted
) noexcept nogil:
    cdef Py_ssize_t best
    cdef floating best_value
    cdef bint nan
    if index != NULL:
        best = _window_argmax(x, W, h0, nh, dh, w0, nw, dw)
        out[0] = x[best]
        index[0] = best
    else:
        best_value = _window_max(x, W, h0, nh, dh, w0, nw, dw, &nan)
        # A NaN is copied from where it was found, payload and all.
        out[0] = (
            x[_window_first(x, W, h0, nh, dh, w0, nw, dw, best_value, True)] if nan
            else best_value
        )


cdef void _max_pool_plane(
    const floating* x,        # IN  (H, W)
    Py_ssize_t H, Py_ssize_t W,
    floating* out,            # OUT (Hout, Wout)
    int64_t* indices,         # OUT (Hout, Wout) argmax, or NULL when not wanted
    Py_ssize_t Hout, Py_ssize_t Wout,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    Py_ssize_t dh, Py_ssize_t dw,
) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, nh, w0, nw
    for oh in range(Hout):
        _window_span(oh * sh - ph, kh, dh, H, &h0, &nh)
        for ow in range(Wout):
            _window_span(ow * sw - pw, kw, dw, W, &w0, &nw)
            if dw == 1:
                _max_pool_window(x, W, h0, nh, dh, w0, nw, 1, &out[oh * Wout + ow],
                                 &indices[oh * Wout + ow] if indices != NULL else NULL)
            else:
                _max_pool_window(x, W, h0, nh, dh, w0, nw, dw, &out[oh * Wout + ow],
                                 &indices[oh * Wout + ow] if indices != NULL else NULL)


def max_pool2d_forward(
    const floating[:, :, ::1] x,   # IN  (P, H, W)
    floating[:, :, ::1] out,       # OUT (P, Hout, Wout)
    int64_t[:, :, ::1] indices,    # OUT (P, Hout, Wout), or (0, 0, 0) to skip
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    Py_ssize_t dh, Py_ssize_t dw,
    int n_threads,
):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2]
    cdef Py_ssize_t p
    cdef int64_t* first_index = NULL
    if indices.shape[0] > 0:
        first_index = &indices[0, 0, 0]
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _max_pool_plane(
            &x[p, 0, 0], H, W, &out[p, 0, 0],
            first_index + p * Hout * Wout if first_index != NULL else NULL,
            Hout, Wout, kh, kw, sh, sw, ph, pw, dh, dw,
        )


cdef void _max_pool_backward_plane(
    const floating* grad_out,  # IN  (Hout, Wout)
    const floating* x,         # IN  (H, W)
    floating* grad_in,         # OUT (H, W), zeroed by the caller
    Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t Hout, Py_ssize_t Wout,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    Py_ssize_t dh, Py_ssize_t dw,
) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, nh, w0, nw, best
    for oh in range(Hout):
        _window_span(oh * sh - ph, kh, dh, H, &h0, &nh)
        for ow in range(Wout):
            _window_span(ow * sw - pw, kw, dw, W, &w0, &nw)
            if dw == 1:
                best = _window_argmax(x, W, h0, nh, dh, w0, nw, 1)
            else:
                best = _window_argmax(x, W, h0, nh, dh, w0, nw, dw)
            grad_in[best] += grad_out[oh * Wout + ow]


def max_pool2d_backward(
    const floating[:, :, ::1] grad_out,  # IN  (P, Hout, Wout)
    const floating[:, :, ::1] x,         # IN  (P, H, W)
    floating[:, :, ::1] grad_in,         # OUT (P, H, W), zeroed by the caller
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    Py_ssize_t dh, Py_ssize_t dw,
    int n_threads,
):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Hout = grad_out.shape[1], Wout = grad_out.shape[2]
    cdef Py_ssize_t p
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _max_pool_backward_plane(
            &grad_out[p, 0, 0], &x[p, 0, 0], &grad_in[p, 0, 0],
            H, W, Hout, Wout, kh, kw, sh, sw, ph, pw, dh, dw,
        )


def max_pool2d_backward_indices(
    const floating[:, :, ::1] grad_out,  # IN  (P, Hout, Wout)
    const int64_t[:, :, ::1] indices,    # IN  (P, Hout, Wout)
    floating[:, :, ::1] grad_in,         # OUT (P, H, W), every element written
    int n_threads,
):
    """Return how many indices lie outside [0, H*W): those are skipped, and
    where there are any the caller must raise."""
    # The argmax was found by the forward pass; only the scatter is left.
    # Each plane is zeroed just before its scatter, so that the scatter
    # finds it in cache: one pass over grad_in instead of two.  For windows
    # that do not overlap this also measured faster than writing every
    # element once, gradient or zero, through compares.
    cdef Py_ssize_t P = grad_in.shape[0], plane = grad_in.shape[1] * grad_in.shape[2]
    cdef Py_ssize_t size_out = grad_out.shape[1] * grad_out.shape[2]
    cdef Py_ssize_t p, o, outside = 0
    cdef int64_t index
    cdef const floating* g
    cdef const int64_t* plane_indices
    cdef floating* gin
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        g = &grad_out[p, 0, 0]
        plane_indices = &indices[p, 0, 0]
        gin = &grad_in[p, 0, 0]
        memset(gin, 0, plane * sizeof(floating))
        for o in range(size_out):
            index = plane_indices[o]
            if <uint64_t>index < <uint64_t>plane:
                gin[index] += g[o]
            else:
                outside += 1
    return outside


def max_pool2d_backward_indices_relu(
    const floating[:, :, ::1] grad_out,  # IN  (P, Hout, Wout)
    const int64_t[:, :, ::1] indices,    # IN  (P, Hout, Wout), each in [0, H*W)
    const floating[:, :, ::1] pooled,    # IN  (P, Hout, Wout) the forward's output
    floating[:, :, ::1] grad_in,         # OUT (P, H, W), every element written
    int n_threads,
):
    # max_pool2d_backward_indices followed by ReLU's gradient on the pool's
    # input, relu_gradient(grad_in, x), in one pass over grad_in: x is only
    # read where an index points, and there x[index] is pooled[o], bit for
    # bit.  Same operations as the two passes, in the same order: the
    # scatter's sums (from +0.0), then one multiply by exactly 1 or 0, so
    # -0.0, NaN and infinite gradients come out as they do there.  An
    # element several windows chose is multiplied once per window: by the
    # same factor each time, and s * f * f == s * f for f = 1 or 0.
    # Elements no index points to stay +0.0, as +0.0 * f does.  The caller
    # has checked the indices' range.
    cdef Py_ssize_t P = grad_in.shape[0], plane = grad_in.shape[1] * grad_in.shape[2]
    cdef Py_ssize_t size_out = grad_out.shape[1] * grad_out.shape[2]
    cdef Py_ssize_t p, o
    cdef const floating* g
    cdef const floating* y
    cdef const int64_t* plane_indices
    cdef floating* gin
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        g = &grad_out[p, 0, 0]
        y = &pooled[p, 0, 0]
        plane_indices = &indices[p, 0, 0]
        gin = &grad_in[p, 0, 0]
        memset(gin, 0, plane * sizeof(floating))
        for o in range(size_out):
            gin[plane_indices[o]] += g[o]
        for o in range(size_out):
            gin[plane_indices[o]] = gin[plane_indices[o]] * (1 if y[o] > 0 else 0)


cdef inline bits_t _number_key(bits_t bits) noexcept nogil:
    # _order_key of a float that is not NaN.  IEEE floats are sign and
    # magnitude, and magnitudes order like the floats they encode, so the
    # key is the magnitude with the float's sign (negated as (m ^ s) - s,
    # s = 0 or -1, cheaper than a select); -0.0 then equals +0.0.
    cdef bits_t sign
    if bits_t is int32_t:
        sign = bits >> 31
        return ((bits & INT32_MAX) ^ sign) - sign
    else:
        sign = bits >> 63
        return ((bits & INT64_MAX) ^ sign) - sign


cdef inline bint _is_nan(bits_t bits) noexcept nogil:
    # Magnitudes above infinity's are NaNs.
    if bits_t is int32_t:
        return (bits & INT32_MAX) > 0x7f800000
    else:
        return (bits & INT64_MAX) > 0x7ff0000000000000LL


cdef inline bits_t _order_key(bits_t bits) noexcept nogil:
    # Every NaN maps to the largest key, above +inf's.  (The test is spelt
    # out rather than _is_nan: through a bint GCC 12 no longer vectorised
    # the loops using this.)
    if bits_t is int32_t:
        return INT32_MAX if (bits & INT32_MAX) > 0x7f800000 else _number_key(bits)
    else:
        return INT64_MAX if (bits & INT64_MAX) > 0x7ff0000000000000LL else _number_key(bits)


cdef inline Py_ssize_t _window_argmax_by_key(
    const bits_t* plane,  # IN  (H, W) plane, row stride W
    Py_ssize_t W,
    Py_ssize_t h0, Py_ssize_t h1,
    Py_ssize_t w0, Py_ssize_t w1,
) noexcept nogil:
    # One pass: with integer keys the running maximum and its index are
    # conditional moves, not branches.
    cdef Py_ssize_t best = h0 * W + w0
    cdef bits_t best_key = _order_key(plane[best])
    cdef bits_t key
    cdef bint better
    cdef Py_ssize_t h, w
    for h in range(h0, h1):
        for w in range(w0, w1):
            key = _order_key(plane[h * W + w])
            better = key > best_key
            best_key = key if better else best_key
            best = h * W + w if better else best
    return best


cdef enum:
    # Windows per call of the 2x2 loop, so that its window-relative offsets
    # can wait in a stack buffer before being widened to int64 indices.  A
    # multiple of 4, the vector width on int32.
    _CHUNK = 256
    # Output rows of fewer windows than this, other than 4, are packed
    # together for the 2x2 loop: done one by one, their last vector would
    # redo up to 3 windows out of 5 to 7 (measured: 5 to 7 gain, 4 and 8
    # and more lose).
    _PACK_BELOW = 8


cdef void _max_pool_2x2_chunk(
    const bits_t* upper,  # IN  (2n,) the windows' first input row
    const bits_t* lower,  # IN  (2n,) their second
    bits_t W,
    bits_t* out,          # OUT (n,)
    bits_t* offsets,      # OUT (n,) argmax relative to the window's first element
    Py_ssize_t n,         # a multiple of 4
) noexcept nogil:
    # Upper pair, lower pair, then the two winners: a tie goes to the
    # earlier element in row-major order at every step.  Values are selected
    # alongside keys, and offsets are kept at the keys' width, so that the
    # loop is integer selects of one width only: that is what vectorises.
    # Callers pass whole vectors only, n a multiple of 4: the compiled loop
    # for a remainder is scalar, and there the selects become branches that
    # mispredict on about every other window, which on narrow planes doubled
    # the time of the whole pass.
    cdef bits_t a, b, c, d, upper_key, lower_key, upper_bits, lower_bits
    cdef bint upper_right, lower_right, below
    cdef Py_ssize_t i
    for i in range(n):
        a = _order_key(upper[2 * i])
        b = _order_key(upper[2 * i + 1])
        c = _order_key(lower[2 * i])
        d = _order_key(lower[2 * i + 1])
        upper_right = b > a
        upper_key = b if upper_right else a
        upper_bits = upper[2 * i + 1] if upper_right else upper[2 * i]
        lower_right = d > c
        lower_key = d if lower_right else c
        lower_bits = lower[2 * i + 1] if lower_right else lower[2 * i]
        below = lower_key > upper_key
        out[i] = lower_bits if below else upper_bits
        offsets[i] = (W + lower_right) if below else <bits_t>upper_right


cdef bint _max_pool_2x2_chunk_of_numbers(
    const bits_t* upper, const bits_t* lower, bits_t W,
    bits_t* out, bits_t* offsets, Py_ssize_t n,
) noexcept nogil:
    # _max_pool_2x2_chunk with keys that skip the NaN test.  Returns whether
    # it met a NaN, in which case out and offsets are wrong.  (The loop is
    # repeated rather than shared through an inline function: GCC 12 then
    # kept one of the two loops scalar.)
    cdef bits_t a, b, c, d, upper_key, lower_key, upper_bits, lower_bits
    cdef bint upper_right, lower_right, below, nan = False
    cdef Py_ssize_t i
    for i in range(n):
        nan = nan | _is_nan(upper[2 * i]) | _is_nan(upper[2 * i + 1]) | (
            _is_nan(lower[2 * i]) | _is_nan(lower[2 * i + 1]))
        a = _number_key(upper[2 * i])
        b = _number_key(upper[2 * i + 1])
        c = _number_key(lower[2 * i])
        d = _number_key(lower[2 * i + 1])
        upper_right = b > a
        upper_key = b if upper_right else a
        upper_bits = upper[2 * i + 1] if upper_right else upper[2 * i]
        lower_right = d > c
        lower_key = d if lower_right else c
        lower_bits = lower[2 * i + 1] if lower_right else lower[2 * i]
        below = lower_key > upper_key
        out[i] = lower_bits if below else upper_bits
        offsets[i] = (W + lower_right) if below else <bits_t>upper_right
    return nan


cdef inline void _max_pool_2x2_vectors(
    const bits_t* upper, const bits_t* lower, bits_t W,
    bits_t* out, bits_t* offsets, Py_ssize_t n,
) noexcept nogil:
    # NaNs are rare, and leaving them out of the keys saved 5 to 10%: a run
    # that meets one is done again with them.
    if _max_pool_2x2_chunk_of_numbers(upper, lower, W, out, offsets, n):
        _max_pool_2x2_chunk(upper, lower, W, out, offsets, n)


cdef inline void _max_pool_2x2_run(
    const bits_t* x,   # IN  (H, W) plane, W + 1 representable in bits_t
    Py_ssize_t W,
    Py_ssize_t h0,     # the windows' first input row
    Py_ssize_t first,  # the run's first window in the row
    Py_ssize_t count,  # windows in the run, a multiple of 4 up to _CHUNK
    bits_t* out,       # OUT (n,) the output row
    int64_t* indices,  # OUT (n,) argmax of each window, or NULL
) noexcept nogil:
    cdef bits_t offsets[_CHUNK]
    cdef Py_ssize_t i
    _max_pool_2x2_vectors(x + h0 * W + 2 * first, x + (h0 + 1) * W + 2 * first, <bits_t>W,
                          out + first, offsets, count)
    if indices != NULL:
        for i in range(count):
            indices[first + i] = h0 * W + 2 * (first + i) + offsets[i]


cdef void _max_pool_2x2_row(
    const bits_t* x,   # IN  (H, W) plane, W + 1 representable in bits_t
    Py_ssize_t W,
    Py_ssize_t h0,     # the windows' first input row
    bits_t* out,       # OUT (n,) this output row
    int64_t* indices,  # OUT (n,) argmax of each window, or NULL
    Py_ssize_t n,      # whole windows in the row, at least 4
) noexcept nogil:
    cdef Py_ssize_t body = n - n % 4
    cdef Py_ssize_t chunk, first
    for chunk in range((body + _CHUNK - 1) // _CHUNK):
        first = chunk * _CHUNK
        _max_pool_2x2_run(x, W, h0, first, min(<Py_ssize_t>_CHUNK, body - first), out, indices)
    # The last n % 4 windows are done as part of the last 4, again: the
    # overlap computes the same results twice, which costs less than the
    # scalar remainder loop.
    if body < n:
        _max_pool_2x2_run(x, W, h0, n - 4, 4, out, indices)


cdef void _max_pool_2x2_packed(
    const bits_t* x,   # IN  (H, W) plane, W + 1 representable in bits_t
    Py_ssize_t W,
    bits_t* out,       # OUT (rows, Wout) plane
    int64_t* indices,  # OUT (rows, Wout) argmax, or NULL
    Py_ssize_t Wout,
    Py_ssize_t rows,   # output rows of whole windows
    Py_ssize_t n,      # whole windows per row, at least 1
    const int64_t* starts,  # IN  2*r*W + 2*i for window i of row r of a pass
) noexcept nogil:
    # Short rows cost a call and a vector loop each for a few windows, so
    # several of them are copied end to end and done in one pass.
    cdef bits_t upper[2 * _CHUNK]
    cdef bits_t lower[2 * _CHUNK]
    cdef bits_t values[_CHUNK]
    cdef bits_t offsets[_CHUNK]
    cdef Py_ssize_t rows_per_pass = _CHUNK // n
    cdef Py_ssize_t one_pass, first_row, count, padded, r, i, oh
    for one_pass in range((rows + rows_per_pass - 1) // rows_per_pass):
        first_row = one_pass * rows_per_pass
        count = min(rows_per_pass, rows - first_row)
        for r in range(count):
            oh = first_row + r
            memcpy(upper + 2 * r * n, x + 2 * oh * W, 2 * n * sizeof(bits_t))
            memcpy(lower + 2 * r * n, x + (2 * oh + 1) * W, 2 * n * sizeof(bits_t))
        # Pad to whole vectors with windows whose results are dropped.
        padded = (count * n + 3) // 4 * 4
        for i in range(2 * count * n, 2 * padded):
            upper[i] = 0
            lower[i] = 0
        _max_pool_2x2_vectors(upper, lower, <bits_t>W, values, offsets, padded)
        if Wout == n:
            # The rows lie end to end in out too: one copy, one loop.
            memcpy(out + first_row * n, values, count * n * sizeof(bits_t))
            if indices != NULL:
                for i in range(count * n):
                    indices[first_row * n + i] = 2 * first_row * W + starts[i] + offsets[i]
        else:
            for r in range(count):
                oh = first_row + r
                memcpy(out + oh * Wout, values + r * n, n * sizeof(bits_t))
                if indices != NULL:
                    for i in range(n):
                        indices[oh * Wout + i] = 2 * oh * W + 2 * i + offsets[r * n + i]


cdef void _max_pool_tiles_plane(
    const bits_t* x,   # IN  (H, W)
    Py_ssize_t H, Py_ssize_t W,
    bits_t* out,       # OUT (Hout, Wout)
    int64_t* indices,  # OUT (Hout, Wout) argmax, or NULL when not wanted
    Py_ssize_t Hout, Py_ssize_t Wout,
    Py_ssize_t kh, Py_ssize_t kw,
    const int64_t* starts,  # IN  for _max_pool_2x2_packed
) noexcept nogil:
    # Under ceil_mode the last row and column of windows may be cut short
    # by the input's edge; every other window is whole.
    cdef Py_ssize_t whole_rows = min(Hout, H // kh), whole_cols = min(Wout, W // kw)
    cdef Py_ssize_t oh, ow, first, best
    cdef bint pairs = kh == 2 and kw == 2 and whole_cols >= 1
    cdef bint packed = whole_cols < _PACK_BELOW and whole_cols != 4
    if pairs and packed:
        _max_pool_2x2_packed(x, W, out, indices, Wout, whole_rows, whole_cols, starts)
    for oh in range(Hout):
        first = 0
        if pairs and oh < whole_rows:
            if not packed:
                _max_pool_2x2_row(x, W, 2 * oh, out + oh * Wout,
                                  indices + oh * Wout if indices != NULL else NULL, whole_cols)
            first = whole_cols
        for ow in range(first, Wout):
            best = _window_argmax_by_key(x, W, oh * kh, min(oh * kh + kh, H),
                                         ow * kw, min(ow * kw + kw, W))
            out[oh * Wout + ow] = x[best]
            if indices != NULL:
                indices[oh * Wout + ow] = best


def max_pool2d_tiles_forward(
    const floating[:, :, ::1] x,   # IN  (P, H, W)
    floating[:, :, ::1] out,       # OUT (P, Hout, Wout)
    int64_t[:, :, ::1] indices,    # OUT (P, Hout, Wout), or (0, 0, 0) to skip
    Py_ssize_t kh, Py_ssize_t kw,  # kernel == stride, no padding
    int n_threads,
):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2]
    cdef Py_ssize_t p
    cdef int64_t* first_index = NULL
    cdef int64_t* plane_indices
    # Where window i of row r of a packed pass starts, the same for every
    # plane (pass); computed once here rather than per row.
    cdef int64_t starts[_CHUNK]
    cdef Py_ssize_t n = min(Wout, W // 2), j
    if kh == 2 and kw == 2 and n < _PACK_BELOW:
        for j in range(_CHUNK // n * n):
            starts[j] = 2 * (j // n) * W + 2 * (j % n)
    if indices.shape[0] > 0:
        first_index = &indices[0, 0, 0]
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        plane_indices = first_index + p * Hout * Wout if first_index != NULL else NULL
        if floating is float:
            _max_pool_tiles_plane(<const int32_t*>&x[p, 0, 0], H, W, <int32_t*>&out[p, 0, 0],
                                  plane_indices, Hout, Wout, kh, kw, starts)
        else:
            _max_pool_tiles_plane(<const int64_t*>&x[p, 0, 0], H, W, <int64_t*>&out[p, 0, 0],
                                  plane_indices, Hout, Wout, kh, kw, starts)


def max_pool2d_pairs_forward(
    const floating[:, :, ::1] x,   # IN  (P, H, W)
    floating[:, :, ::1] out,       # OUT (P, Hout, Wout)
    uint8_t[:, :, ::1] codes,      # OUT (P, Hout, Wout) the winner in its window, 2*i + j
    int64_t[:, :, ::1] indices,    # OUT (P, Hout, Wout) its flat index, or (0, 0, 0) to skip
    int isa,                       # a value of PAIRS_ISAS this processor runs
    int n_threads,
):
    # 2x2 windows, stride 2, no padding (pool_tiles.h).  Indices, when
    # asked for, follow from each plane's codes while they are in cache:
    # each window's top-left index, from a table the same for every plane
    # (one flat loop a plane, which vectorises; rows of a few windows did
    # not), plus the code's row times W and its column.
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2]
    cdef Py_ssize_t p, k, windows = Hout * Wout
    cdef int64_t* corners = NULL
    if indices.shape[0] > 0 and windows > 0:
        corners = <int64_t*>malloc(windows * sizeof(int64_t))
        if corners == NULL:
            raise MemoryError()
        for k in range(windows):
            corners[k] = 2 * (k // Wout) * W + 2 * (k % Wout)
    # One thread runs the planes without a parallel region: entering one
    # costs about a microsecond even for a team of one thread, as much as a
    # batch-1 layer's pooling (the same in the backward pass).
    try:
        if n_threads > 1:
            for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
                _pairs_forward_plane(p, x, out, codes, indices, corners, isa)
        else:
            with nogil:
                for p in range(P):
                    _pairs_forward_plane(p, x, out, codes, indices, corners, isa)
    finally:
        free(corners)


cdef inline void _pairs_forward_plane(
    Py_ssize_t p, const floating[:, :, ::1] x, floating[:, :, ::1] out,
    uint8_t[:, :, ::1] codes, int64_t[:, :, ::1] indices, const int64_t* corners, int isa,
) noexcept nogil:
    """Plane p of max_pool2d_pairs_forward."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2], Hout = out.shape[1], Wout = out.shape[2]
    if floating is float:
        pt_forward_f32(isa, &x[p, 0, 0], H, W, &out[p, 0, 0], &codes[p, 0, 0], Hout, Wout)
    else:
        pt_forward_f64(isa, &x[p, 0, 0], H, W, &out[p, 0, 0], &codes[p, 0, 0], Hout, Wout)
    if corners != NULL:
        rn_indices_of_codes(&codes[p, 0, 0], corners, &indices[p, 0, 0], W, Hout * Wout)


def max_pool2d_pairs_backward(
    const floating[:, :, ::1] grad_out,  # IN  (P, Hout, Wout)
    const uint8_t[:, :, ::1] codes,      # IN  (P, Hout, Wout) from max_pool2d_pairs_forward
                                         #     (no byte past them is read)
    const floating[:, :, ::1] pooled,    # IN  (P, Hout, Wout) its output, for ReLU's
                                         #     gradient too, or (0, 0, 0) for the plain one
    floating[:, :, ::1] grad_in,         # OUT (P, H, W), every element written
    int isa,
    int n_threads,
):
    cdef Py_ssize_t P = grad_in.shape[0], p
    if n_threads > 1:
        for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
            _pairs_backward_plane(p, grad_out, codes, pooled, grad_in, isa)
    else:
        with nogil:
            for p in range(P):
                _pairs_backward_plane(p, grad_out, codes, pooled, grad_in, isa)


cdef inline void _pairs_backward_plane(
    Py_ssize_t p, const floating[:, :, ::1] grad_out, const uint8_t[:, :, ::1] codes,
    const floating[:, :, ::1] pooled, floating[:, :, ::1] grad_in, int isa,
) noexcept nogil:
    """Plane p of max_pool2d_pairs_backward."""
    cdef Py_ssize_t H = grad_in.shape[1], W = grad_in.shape[2]
    cdef Py_ssize_t Hout = grad_out.shape[1], Wout = grad_out.shape[2]
    cdef bint relu = pooled.shape[0] > 0
    if floating is float:
        pt_backward_f32(isa, &grad_out[p, 0, 0], &codes[p, 0, 0],
                        &pooled[p, 0, 0] if relu else NULL, &grad_in[p, 0, 0], H, W, Hout, Wout)
    else:
        pt_backward_f64(isa, &grad_out[p, 0, 0], &codes[p, 0, 0],
                        &pooled[p, 0, 0] if relu else NULL, &grad_in[p, 0, 0], H, W, Hout, Wout)


cdef inline double _divisor(
    Py_ssize_t h0, Py_ssize_t w0,  # window start, input coordinates (may be < 0)
    Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t ph, Py_ssize_t pw,
    bint count_include_pad,
    double divisor_override,  # used instead when not 0
) noexcept nogil:
    # PyTorch's rule: with count_include_pad the window is clipped to the
    # padded input (a ceil_mode window hanging past the bottom or right
    # padding loses the overhang); without, only input elements count.
    cdef Py_ssize_t h1, w1
    if divisor_override != 0:
        return divisor_override
    if count_include_pad:
        h1 = min(h0 + kh, H + ph)
        w1 = min(w0 + kw, W + pw)
    else:
        h1 = min(h0 + kh, H)
        w1 = min(w0 + kw, W)
        h0 = max(h0, 0)
        w0 = max(w0, 0)
    return <double>(h1 - h0) * <double>(w1 - w0)


cdef void _avg_pool_plane(
    const floating* x,  # IN  (H, W)
    Py_ssize_t H, Py_ssize_t W,
    floating* out,      # OUT (Hout, Wout)
    Py_ssize_t Hout, Py_ssize_t Wout,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    bint count_include_pad,
    double divisor_override,
) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w, h0, h1, w0, w1
    cdef double total, divisor
    for oh in range(Hout):
        h0 = oh * sh - ph
        h1 = min(h0 + kh, H)
        for ow in range(Wout):
            w0 = ow * sw - pw
            w1 = min(w0 + kw, W)
            divisor = _divisor(h0, w0, H, W, kh, kw, ph, pw, count_include_pad,
                               divisor_override)
            total = 0
            for h in range(max(h0, 0), h1):
                for w in range(max(w0, 0), w1):
                    total = total + x[h * W + w]
            out[oh * Wout + ow] = <floating>(total / divisor)


def avg_pool2d_forward(
    const floating[:, :, ::1] x,  # IN  (P, H, W)
    floating[:, :, ::1] out,      # OUT (P, Hout, Wout)
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    bint count_include_pad,
    double divisor_override,      # used instead of the window's size when not 0
    int n_threads,
):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2]
    cdef Py_ssize_t p
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _avg_pool_plane(&x[p, 0, 0], H, W, &out[p, 0, 0], Hout, Wout,
                        kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override)


cdef void _avg_pool_backward_plane(
    const floating* grad_out,  # IN  (Hout, Wout)
    floating* grad_in,         # OUT (H, W), zeroed by the caller
    Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t Hout, Py_ssize_t Wout,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    bint count_include_pad,
    double divisor_override,
) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w, h0, h1, w0, w1
    cdef floating share
    for oh in range(Hout):
        h0 = oh * sh - ph
        h1 = min(h0 + kh, H)
        for ow in range(Wout):
            w0 = ow * sw - pw
            w1 = min(w0 + kw, W)
            share = <floating>(
                grad_out[oh * Wout + ow]
                / _divisor(h0, w0, H, W, kh, kw, ph, pw, count_include_pad, divisor_override)
            )
            for h in range(max(h0, 0), h1):
                for w in range(max(w0, 0), w1):
                    grad_in[h * W + w] += share


def avg_pool2d_backward(
    const floating[:, :, ::1] grad_out,  # IN  (P, Hout, Wout)
    floating[:, :, ::1] grad_in,         # OUT (P, H, W), zeroed by the caller
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    bint count_include_pad,
    double divisor_override,             # used instead of the window's size when not 0
    int n_threads,
):
    cdef Py_ssize_t P = grad_in.shape[0], H = grad_in.shape[1], W = grad_in.shape[2]
    cdef Py_ssize_t Hout = grad_out.shape[1], Wout = grad_out.shape[2]
    cdef Py_ssize_t p
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _avg_pool_backward_plane(&grad_out[p, 0, 0], &grad_in[p, 0, 0], H, W, Hout, Wout,
                                 kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override)
