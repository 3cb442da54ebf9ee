# Design
# ------
# Padding of the last two axes and its adjoint, over C-contiguous (P, H, W)
# planes (the caller flattens every leading axis into P).
#
# * The mode is not seen here.  The caller passes, for each padded row and
#   each padded column, the input row or column it copies (reflected,
#   mirrored, wrapped or clamped), or -1 where it holds the constant.  Every
#   mode is then one gather forward and one scatter-add backward, and the
#   caller's index maps (each entry -1 or in [0, H) / [0, W)) are all the
#   bounds these loops need.  The input itself lies at rows top .. top + H - 1
#   and columns left .. left + W - 1 of the padded plane, and is copied
#   without looking up the maps.
# * The caller never passes an empty plane: it handles empty arrays itself.
# * Threads split the planes; each plane is written by one thread in a fixed
#   order, so results are bitwise identical whatever the thread count.  In
#   the adjoint every input element starts from the value it had at its own
#   place in the padded plane, then the border copies are added in row-major
#   order.

from cython cimport floating
from cython.parallel cimport prange


cdef void _pad_plane(
    const floating* x,            # IN  (H, W)
    floating* out,                # OUT (Hp, Wp)
    const Py_ssize_t* rows,       # IN  (Hp,) source row or -1
    const Py_ssize_t* cols,       # IN  (Wp,) source column or -1
    Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t Hp, Py_ssize_t Wp,
    Py_ssize_t left,
    floating value,
) noexcept nogil:
    cdef Py_ssize_t r, c, source
    cdef const floating* xrow
    cdef floating* orow
    for r in range(Hp):
        orow = out + r * Wp
        if rows[r] < 0:
            for c in range(Wp):
                orow[c] = value
            continue
        xrow = x + rows[r] * W
        for c in range(left):
            source = cols[c]
            orow[c] = xrow[source] if source >= 0 else value
        for c in range(W):
            orow[left + c] = xrow[c]
        for c in range(left + W, Wp):
            source = cols[c]
            orow[c] = xrow[source] if source >= 0 else value


def pad2d_forward(
    const floating[:, :, ::1] x,   # IN  (P, H, W), no axis empty
    floating[:, :, ::1] out,       # OUT (P, Hp, Wp)
    const Py_ssize_t[::1] rows,    # IN  (Hp,) source row or -1
    const Py_ssize_t[::1] cols,    # IN  (Wp,) source column or -1
    Py_ssize_t left,
    double value,
    int n_threads,
):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Hp = out.shape[1], Wp = out.shape[2]
    cdef Py_ssize_t p
    cdef floating fill = <floating>value
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _pad_plane(&x[p, 0, 0], &out[p, 0, 0], &rows[0], &cols[0],
                   H, W, Hp, Wp, left, fill)


cdef void _pad_backward_plane(
    const floating* grad,         # IN  (Hp, Wp)
    floating* grad_in,            # OUT (H, W)
    const Py_ssize_t* rows,       # IN  (Hp,) source row or -1
    const Py_ssize_t* cols,       # IN  (Wp,) source column or -1
    Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t Hp, Py_ssize_t Wp,
    Py_ssize_t top, Py_ssize_t left,
) noexcept nogil:
    cdef Py_ssize_t r, c, h, source
    cdef const floating* grow
    cdef floating* gin_row
    for h in range(H):
        grow = grad + (top + h) * Wp + left
        gin_row = grad_in + h * W
        for c in range(W):
            gin_row[c] = grow[c]
    for r in range(Hp):
        if rows[r] < 0:
            continue
        grow = grad + r * Wp
        gin_row = grad_in + rows[r] * W
        if top <= r < top + H:
            # The middle of this row is the input's own place, copied above.
            for c in range(left):
                source = cols[c]
                if source >= 0:
                    gin_row[source] += grow[c]
            for c in range(left + W, Wp):
                source = cols[c]
                if source >= 0:
                    gin_row[source] += grow[c]
        else:
            for c in range(Wp):
                source = cols[c]
                if source >= 0:
                    gin_row[source] += grow[c]


def pad2d_backward(
    const floating[:, :, ::1] grad,  # IN  (P, Hp, Wp)
    floating[:, :, ::1] grad_in,     # OUT (P, H, W), no axis empty
    const Py_ssize_t[::1] rows,      # IN  (Hp,) source row or -1
    const Py_ssize_t[::1] cols,      # IN  (Wp,) source column or -1
    Py_ssize_t top, Py_ssize_t left,
    int n_threads,
):
    cdef Py_ssize_t P = grad_in.shape[0], H = grad_in.shape[1], W = grad_in.shape[2]
    cdef Py_ssize_t Hp = grad.shape[1], Wp = grad.shape[2]
    cdef Py_ssize_t p
    for p in prange(P, nogil=True, schedule="static", num_threads=n_threads):
        _pad_backward_plane(&grad[p, 0, 0], &grad_in[p, 0, 0], &rows[0], &cols[0],
                            H, W, Hp, Wp, top, left)
