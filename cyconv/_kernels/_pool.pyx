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
#   clipped here to [0, H) (and likewise for columns).  For max pooling the
#   padding is -inf, so it can never be chosen and is simply skipped; for
#   average pooling it only enters the divisor.
# * The caller guarantees (PyTorch's rules: padding <= kernel // 2, kernel no
#   larger than the padded input, and under ceil_mode no window starting in
#   the right or bottom padding) that every window, once clipped to the
#   input, holds at least one element.  The max kernels read the first of
#   them without checking, and no divisor is zero.
# * The maximum of a window is its first largest element in row-major order,
#   with NaN larger than everything, so the first NaN wins.  Its flat index
#   h*W + w within the plane is what the gradient follows.  It is found in
#   two branch-free passes over the (cache-hot) window, the largest value
#   first and then where it first occurs, because on real data a running
#   "is this the new maximum?" branch is mispredicted about half the time.
# * Sums of average pooling are accumulated in double, also for float32, and
#   divided once.

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t


cdef inline floating _window_max(
    const floating* plane,  # IN  (H, W) plane, row stride W
    Py_ssize_t W,
    Py_ssize_t h0, Py_ssize_t h1,
    Py_ssize_t w0, Py_ssize_t w1,
    bint* nan_seen,         # OUT whether the window holds a NaN
) noexcept nogil:
    # Written without data-dependent branches (a ternary the compiler turns
    # into maxss, bitwise or): on real data which element wins is
    # unpredictable, and mispredicted branches cost more than the loads.
    cdef floating best_value = plane[h0 * W + w0]
    cdef floating value
    cdef bint nan = False
    cdef Py_ssize_t h, w
    for h in range(h0, h1):
        for w in range(w0, w1):
            value = plane[h * W + w]
            best_value = value if value > best_value else best_value
            nan = nan | (value != value)
    nan_seen[0] = nan
    return best_value


cdef inline Py_ssize_t _window_first(
    const floating* plane,  # IN  (H, W) plane, row stride W
    Py_ssize_t W,
    Py_ssize_t h0, Py_ssize_t h1,
    Py_ssize_t w0, Py_ssize_t w1,
    floating target,
    bint nan,
) noexcept nogil:
    # The flat index of the first element equal to target, or of the first
    # NaN if nan.  Scanning backwards and keeping the last match found leaves
    # the first in row-major order, again without a data-dependent branch.
    cdef Py_ssize_t best = h0 * W + w0
    cdef floating value
    cdef Py_ssize_t h, w
    if nan:
        for h in range(h1 - 1, h0 - 1, -1):
            for w in range(w1 - 1, w0 - 1, -1):
                value = plane[h * W + w]
                best = h * W + w if value != value else best
    else:
        for h in range(h1 - 1, h0 - 1, -1):
            for w in range(w1 - 1, w0 - 1, -1):
                best = h * W + w if plane[h * W + w] == target else best
    return best


cdef inline Py_ssize_t _window_argmax(
    const floating* plane,  # IN  (H, W) plane, row stride W
    Py_ssize_t W,
    Py_ssize_t h0, Py_ssize_t h1,
    Py_ssize_t w0, Py_ssize_t w1,
) noexcept nogil:
    cdef bint nan
    cdef floating best_value = _window_max(plane, W, h0, h1, w0, w1, &nan)
    return _window_first(plane, W, h0, h1, w0, w1, best_value, nan)


cdef void _max_pool_plane(
    const floating* x,        # IN  (H, W)
    Py_ssize_t H, Py_ssize_t W,
    floating* out,            # OUT (Hout, Wout)
    int64_t* indices,         # OUT (Hout, Wout) argmax, or NULL when not wanted
    Py_ssize_t Hout, Py_ssize_t Wout,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1, best
    cdef floating best_value
    cdef bint nan
    for oh in range(Hout):
        h0 = oh * sh - ph
        h1 = min(h0 + kh, H)
        h0 = max(h0, 0)
        for ow in range(Wout):
            w0 = ow * sw - pw
            w1 = min(w0 + kw, W)
            w0 = max(w0, 0)
            if indices != NULL:
                best = _window_argmax(x, W, h0, h1, w0, w1)
                out[oh * Wout + ow] = x[best]
                indices[oh * Wout + ow] = best
            else:
                best_value = _window_max(x, W, h0, h1, w0, w1, &nan)
                # A NaN is copied from where it was found, payload and all.
                out[oh * Wout + ow] = (
                    x[_window_first(x, W, h0, h1, w0, w1, best_value, True)] if nan
                    else best_value
                )


def max_pool2d_forward(
    const floating[:, :, ::1] x,   # IN  (P, H, W)
    floating[:, :, ::1] out,       # OUT (P, Hout, Wout)
    int64_t[:, :, ::1] indices,    # OUT (P, Hout, Wout), or (0, 0, 0) to skip
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
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
            Hout, Wout, kh, kw, sh, sw, ph, pw,
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
) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1, best
    for oh in range(Hout):
        h0 = oh * sh - ph
        h1 = min(h0 + kh, H)
        h0 = max(h0, 0)
        for ow in range(Wout):
            w0 = ow * sw - pw
            w1 = min(w0 + kw, W)
            w0 = max(w0, 0)
            best = _window_argmax(x, W, h0, h1, w0, w1)
            grad_in[best] += grad_out[oh * Wout + ow]


def max_pool2d_backward(
    const floating[:, :, ::1] grad_out,  # IN  (P, Hout, Wout)
    const floating[:, :, ::1] x,         # IN  (P, H, W)
    floating[:, :, ::1] grad_in,         # OUT (P, H, W), zeroed by the caller
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    int n_threads,
):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Hout = grad_out.shape[1], Wout = grad_out.shape[2]
    cdef Py_ssize_t p
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _max_pool_backward_plane(
            &grad_out[p, 0, 0], &x[p, 0, 0], &grad_in[p, 0, 0],
            H, W, Hout, Wout, kh, kw, sh, sw, ph, pw,
        )


def max_pool2d_backward_indices(
    const floating[:, :, ::1] grad_out,  # IN  (P, Hout, Wout)
    const int64_t[:, :, ::1] indices,    # IN  (P, Hout, Wout), each in [0, H*W)
    floating[:, :, ::1] grad_in,         # OUT (P, H, W), zeroed by the caller
    int n_threads,
):
    # The argmax was found by the forward pass; only the scatter is left.
    cdef Py_ssize_t P = grad_in.shape[0]
    cdef Py_ssize_t size_out = grad_out.shape[1] * grad_out.shape[2]
    cdef Py_ssize_t p, o
    cdef const floating* g
    cdef const int64_t* index
    cdef floating* gin
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        g = &grad_out[p, 0, 0]
        index = &indices[p, 0, 0]
        gin = &grad_in[p, 0, 0]
        for o in range(size_out):
            gin[index[o]] += g[o]


cdef inline double _divisor(
    Py_ssize_t h0, Py_ssize_t w0,  # window start, input coordinates (may be < 0)
    Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t ph, Py_ssize_t pw,
    bint count_include_pad,
) noexcept nogil:
    # PyTorch's rule: with count_include_pad the window is clipped to the
    # padded input (a ceil_mode window hanging past the bottom or right
    # padding loses the overhang); without, only input elements count.
    cdef Py_ssize_t h1, w1
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
) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w, h0, h1, w0, w1
    cdef double total, divisor
    for oh in range(Hout):
        h0 = oh * sh - ph
        h1 = min(h0 + kh, H)
        for ow in range(Wout):
            w0 = ow * sw - pw
            w1 = min(w0 + kw, W)
            divisor = _divisor(h0, w0, H, W, kh, kw, ph, pw, count_include_pad)
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
    int n_threads,
):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2]
    cdef Py_ssize_t p
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _avg_pool_plane(&x[p, 0, 0], H, W, &out[p, 0, 0], Hout, Wout,
                        kh, kw, sh, sw, ph, pw, count_include_pad)


cdef void _avg_pool_backward_plane(
    const floating* grad_out,  # IN  (Hout, Wout)
    floating* grad_in,         # OUT (H, W), zeroed by the caller
    Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t Hout, Py_ssize_t Wout,
    Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw,
    bint count_include_pad,
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
                / _divisor(h0, w0, H, W, kh, kw, ph, pw, count_include_pad)
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
    int n_threads,
):
    cdef Py_ssize_t P = grad_in.shape[0], H = grad_in.shape[1], W = grad_in.shape[2]
    cdef Py_ssize_t Hout = grad_out.shape[1], Wout = grad_out.shape[2]
    cdef Py_ssize_t p
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _avg_pool_backward_plane(&grad_out[p, 0, 0], &grad_in[p, 0, 0], H, W, Hout, Wout,
                                 kh, kw, sh, sw, ph, pw, count_include_pad)
