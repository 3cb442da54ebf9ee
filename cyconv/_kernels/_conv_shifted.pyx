# Design
# ------
# Stride-1 conv2d and its gradients as sums of shifted matrix products, with
# no unrolled input: the im2col path (``_conv.pyx``) writes and reads kh*kw
# copies of every input value, and on layers of many channels that memory
# traffic costs a third of the time of its matrix product.
#
# * A sample is copied once into a zero-padded buffer of C planes of
#   Hp x Wp values.  Read from offset i*dh*Wp + j*dw, that buffer *is* the
#   unrolled input of tap (i, j): a (C x Hout*Wp) matrix with leading
#   dimension Hp*Wp, one column per position of a "wide" output whose rows
#   are Wp long.  The last Wp - Wout columns of each wide row read values
#   that wrap round to the next row: those outputs are garbage.
# * Forward: wide (Fg x Hout*Wp) = sum over taps of W_tap (Fg x Cg) @ the
#   tap's shifted matrix; the garbage columns are dropped when the wide
#   output is copied out.  Input gradient: the wide gradient, its garbage
#   columns set to zero, is multiplied by each W_tap^T and added into the
#   padded buffer at the tap's offset, whose interior is the input gradient.
#   Weight gradient: W_tap's gradient = the zero-garbage wide gradient @ the
#   tap's shifted matrix^T.
# * Zero garbage contributes exactly nothing only while what it multiplies is
#   finite (0 * inf is NaN): the caller uses this path for the input
#   gradient only when the weight is finite and for the weight gradient only
#   when the input is.
# * Bounds: the caller guarantees stride 1, Hout = Hp - dh*(kh-1) and
#   Wout = Wp - dw*(kw-1).  The last tap's matrix then ends dw*(kw-1) values
#   past the last plane, so the padded buffer carries that many zeros after
#   its planes.  Hp*Wp fits a C int (BLAS's leading dimension).
# * Weights arrive re-laid out by the caller as (groups, taps, Fg, Cg), so
#   that each W_tap is a contiguous column-major (Cg x Fg) matrix.
# * Determinism as in ``_conv.pyx``: one BLAS call runs in one thread, every
#   output is produced by one task in a fixed order of chunks and taps, and
#   chunk and task sizes depend only on the shapes.

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset
from cyconv._kernels._gemm cimport gemm

cdef extern from "run_loops.h" nogil:
    void rn_store_plane_f32(const float* src, Py_ssize_t srs, Py_ssize_t rows, Py_ssize_t cols,
                            float* dst, float b, int has_bias, int relu)
    void rn_store_plane_f64(const double* src, Py_ssize_t srs, Py_ssize_t rows,
                            Py_ssize_t cols, double* dst, double b, int has_bias, int relu)


ctypedef struct Frame:
    # The padded buffer's planes, the kernel's shape and dilation, and the
    # top and left padding: where each tap's shifted matrix starts.
    Py_ssize_t Hp, Wp, kh, kw, dh, dw, pt, pl, groups


cdef inline Py_ssize_t _tap_offset(Frame fr, Py_ssize_t tap) noexcept nogil:
    return (tap // fr.kw) * fr.dh * fr.Wp + (tap % fr.kw) * fr.dw


cdef void _pad_sample(
    const floating[:, :, ::1] x,   # IN  (C, H, W)
    floating* buf,                 # OUT C planes of (Hp, Wp), then the tail zeros
    Frame fr,
) noexcept nogil:
    cdef Py_ssize_t C = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t plane = fr.Hp * fr.Wp, c, h
    cdef floating* row
    memset(buf, 0, (C * plane + fr.dw * (fr.kw - 1)) * sizeof(floating))
    for c in range(C):
        for h in range(H):
            row = buf + c * plane + (h + fr.pt) * fr.Wp + fr.pl
            memcpy(row, &x[c, h, 0], W * sizeof(floating))


cdef void _widen(
    const floating[:, :, ::1] g,   # IN  (F, Hout, Wout)
    Py_ssize_t f_first, Py_ssize_t f_count, Py_ssize_t r0, Py_ssize_t rows,
    Py_ssize_t Wp,
    floating* wide,                # OUT (f_count, rows * Wp), garbage columns zero
) noexcept nogil:
    cdef Py_ssize_t Wout = g.shape[2], f, r
    cdef floating* dst
    for f in range(f_count):
        for r in range(rows):
            dst = wide + (f * rows + r) * Wp
            memcpy(dst, &g[f_first + f, r0 + r, 0], Wout * sizeof(floating))
            memset(dst + Wout, 0, (Wp - Wout) * sizeof(floating))


cdef void _forward_sample(
    const floating[:, :, ::1] x,           # IN  (C, H, W)
    const floating[:, :, :, ::1] wt,       # IN  (groups, taps, Fg, Cg)
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, ::1] out,               # OUT (F, Hout, Wout)
    floating* buf, floating* wide,         # scratch: padded sample; Fg*rows_per_chunk*Wp
    Py_ssize_t rows_per_chunk,
    Frame fr,
) noexcept nogil:
    cdef Py_ssize_t taps = wt.shape[1], Fg = wt.shape[2], Cg = wt.shape[3]
    cdef Py_ssize_t Hout = out.shape[1], Wout = out.shape[2], plane = fr.Hp * fr.Wp
    cdef Py_ssize_t g, chunk, r0, rows, m, t, f
    cdef floating b
    _pad_sample(x, buf, fr)
    for g in range(fr.groups):
        for chunk in range((Hout + rows_per_chunk - 1) // rows_per_chunk):
            r0 = chunk * rows_per_chunk
            rows = min(rows_per_chunk, Hout - r0)
            m = rows * fr.Wp
            for t in range(taps):
                # wide' (m x Fg) (+)= shifted' (m x Cg, ld Hp*Wp) @ W_tap' (Cg x Fg)
                gemm(b"N", b"N", <int> m, <int> Fg, <int> Cg,
                      1, buf + g * Cg * plane + r0 * fr.Wp + _tap_offset(fr, t), <int> plane,
                      &wt[g, t, 0, 0], <int> Cg, 0 if t == 0 else 1, wide, <int> m)
            for f in range(Fg):
                b = bias[g * Fg + f] if bias.shape[0] > 0 else 0
                if floating is float:
                    rn_store_plane_f32(wide + f * rows * fr.Wp, fr.Wp, rows, Wout,
                                       &out[g * Fg + f, r0, 0], b, bias.shape[0] > 0, False)
                else:
                    rn_store_plane_f64(wide + f * rows * fr.Wp, fr.Wp, rows, Wout,
                                       &out[g * Fg + f, r0, 0], b, bias.shape[0] > 0, False)


def conv2d_forward(
    const floating[:, :, :, ::1] x,        # IN  (N, C, H, W)
    const floating[:, :, :, ::1] wt,       # IN  (groups, taps, Fg, Cg)
    const floating[::1] bias,              # IN  (F,) or empty
    floating[:, :, :, ::1] out,            # OUT (N, F, Hout, Wout)
    floating[:, ::1] padded,               # scratch (n_threads, C*Hp*Wp + dw*(kw-1))
    floating[:, ::1] wide,                 # scratch (n_threads, Fg*rows_per_chunk*Wp)
    Py_ssize_t rows_per_chunk,
    Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl,
    int n_threads,
):
    cdef Frame fr = Frame(Hp, Wp, kh, kw, dh, dw, pt, pl, wt.shape[0])
    cdef Py_ssize_t n
    for n in prange(x.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _forward_sample(x[n], wt, bias, out[n], &padded[threadid(), 0], &wide[threadid(), 0],
                        rows_per_chunk, fr)


cdef void _backward_input_sample(
    const floating[:, :, ::1] g,           # IN  (F, Hout, Wout)
    const floating[:, :, :, ::1] wt,       # IN  (groups, taps, Fg, Cg), finite
    floating[:, :, ::1] gx,                # OUT (C, H, W)
    floating* buf, floating* wide,         # scratch: padded gradient; Fg*rows_per_chunk*Wp
    Py_ssize_t rows_per_chunk,
    Frame fr,
) noexcept nogil:
    cdef Py_ssize_t taps = wt.shape[1], Fg = wt.shape[2], Cg = wt.shape[3]
    cdef Py_ssize_t C = gx.shape[0], H = gx.shape[1], W = gx.shape[2]
    cdef Py_ssize_t Hout = g.shape[1], plane = fr.Hp * fr.Wp
    cdef Py_ssize_t grp, chunk, r0, rows, m, t, c, h
    memset(buf, 0, (C * plane + fr.dw * (fr.kw - 1)) * sizeof(floating))
    for grp in range(fr.groups):
        for chunk in range((Hout + rows_per_chunk - 1) // rows_per_chunk):
            r0 = chunk * rows_per_chunk
            rows = min(rows_per_chunk, Hout - r0)
            m = rows * fr.Wp
            _widen(g, grp * Fg, Fg, r0, rows, fr.Wp, wide)
            for t in range(taps):
                # shifted' (m x Cg, ld Hp*Wp) += wide' (m x Fg) @ W_tap'^T (Fg x Cg)
                gemm(b"N", b"T", <int> m, <int> Cg, <int> Fg,
                      1, wide, <int> m, &wt[grp, t, 0, 0], <int> Cg,
                      1, buf + grp * Cg * plane + r0 * fr.Wp + _tap_offset(fr, t), <int> plane)
    for c in range(C):
        for h in range(H):
            memcpy(&gx[c, h, 0], buf + c * plane + (h + fr.pt) * fr.Wp + fr.pl,
                   W * sizeof(floating))


def conv2d_backward_input(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] wt,        # IN  (groups, taps, Fg, Cg), finite
    floating[:, :, :, ::1] gx,              # OUT (N, C, H, W)
    floating[:, ::1] padded,                # scratch (n_threads, C*Hp*Wp + dw*(kw-1))
    floating[:, ::1] wide,                  # scratch (n_threads, Fg*rows_per_chunk*Wp)
    Py_ssize_t rows_per_chunk,
    Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl,
    int n_threads,
):
    cdef Frame fr = Frame(Hp, Wp, kh, kw, dh, dw, pt, pl, wt.shape[0])
    cdef Py_ssize_t n
    for n in prange(gx.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1):
        _backward_input_sample(grad_out[n], wt, gx[n], &padded[threadid(), 0],
                               &wide[threadid(), 0], rows_per_chunk, fr)


cdef void _backward_weight_task(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] x,         # IN  (N, C, H, W), finite
    floating[:, :, :, ::1] partial,         # OUT (groups, taps, Fg, Cg), zeroed by the caller
    floating* buf, floating* wide,          # scratch: padded sample; Fg*Hout*Wp
    Py_ssize_t sample_first, Py_ssize_t sample_count, Py_ssize_t rows_per_chunk,
    Frame fr,
) noexcept nogil:
    cdef Py_ssize_t taps = partial.shape[1], Fg = partial.shape[2], Cg = partial.shape[3]
    cdef Py_ssize_t Hout = grad_out.shape[2], plane = fr.Hp * fr.Wp
    cdef Py_ssize_t Q = Hout * fr.Wp
    cdef Py_ssize_t n, grp, t, chunk, r0, rows
    for n in range(sample_first, sample_first + sample_count):
        _pad_sample(x[n], buf, fr)
        for grp in range(fr.groups):
            _widen(grad_out[n], grp * Fg, Fg, 0, Hout, fr.Wp, wide)
            # Chunks of output rows, so that the taps reuse them from cache.
            for chunk in range((Hout + rows_per_chunk - 1) // rows_per_chunk):
                r0 = chunk * rows_per_chunk
                rows = min(rows_per_chunk, Hout - r0)
                for t in range(taps):
                    # dW_tap' (Cg x Fg) += shifted'^T (Cg x m) @ wide'[chunk] (m x Fg)
                    gemm(b"T", b"N", <int> Cg, <int> Fg, <int> (rows * fr.Wp),
                          1, buf + grp * Cg * plane + r0 * fr.Wp + _tap_offset(fr, t),
                          <int> plane, wide + r0 * fr.Wp, <int> Q,
                          1, &partial[grp, t, 0, 0], <int> Cg)


def conv2d_backward_weight(
    const floating[:, :, :, ::1] grad_out,  # IN  (N, F, Hout, Wout)
    const floating[:, :, :, ::1] x,         # IN  (N, C, H, W), finite
    floating[:, :, :, :, ::1] partials,     # OUT (parts, groups, taps, Fg, Cg), zeroed
    floating[:, ::1] padded,                # scratch (n_threads, C*Hp*Wp + dw*(kw-1))
    floating[:, ::1] wide,                  # scratch (n_threads, Fg*Hout*Wp)
    Py_ssize_t samples_per_part, Py_ssize_t rows_per_chunk,
    Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t kh, Py_ssize_t kw,
    Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl,
    int n_threads,
):
    """Partial weight gradients, one per run of ``samples_per_part`` samples;
    the caller sums them in order."""
    cdef Frame fr = Frame(Hp, Wp, kh, kw, dh, dw, pt, pl, partials.shape[1])
    cdef Py_ssize_t N = grad_out.shape[0], part, first
    for part in prange(partials.shape[0], nogil=True, schedule="static",
                       num_threads=n_threads, use_threads_if=n_threads > 1):
        first = part * samples_per_part
        _backward_weight_task(grad_out, x, partials[part], &padded[threadid(), 0],
                              &wide[threadid(), 0], first,
                              min(samples_per_part, N - first), rows_per_chunk, fr)
