"""Drop-in replacements for ``scipy.signal.correlate2d`` and ``convolve2d``
on real inputs: the same signature, defaults, output shapes and values in
every mode and boundary, computed by the compiled loop in
``_kernels/_correlate.pyx`` with cyconv's dtype policy.

Every mode and boundary comes down to one operation: extend ``in1`` past
its borders as the boundary says, then take the "valid" cross-correlation
of that extension with ``in2`` (flipped in both axes for a convolution).
Only the amount of extension on each side differs.
"""

import reprlib

import numpy as np

from . import _runtime
from ._kernels import _correlate
from ._validation import (
    as_array,
    as_float_arrays,
    check_choice,
    check_ndim,
    check_nonempty,
    float_dtype,
)

__all__ = ["correlate2d", "convolve2d"]

_LAYOUT = "(rows, columns)"
_MODES = ("full", "valid", "same")
# scipy's boundary names and their aliases.  scipy's lookup table also lists
# 'reflect', but its compiled layer then refuses it ("Incorrect boundary
# value."), so it is not accepted here either.
_BOUNDARIES = {
    "fill": "fill",
    "pad": "fill",
    "wrap": "wrap",
    "circular": "wrap",
    "symm": "symm",
    "symmetric": "symm",
}
# Below this many multiply-adds per thread (about a 128 x 128 image and a
# 3 x 3 kernel, measured on two cores) starting a parallel region costs more
# than it saves (see _runtime.py).
_PARALLEL_MIN_WORK = _runtime.CORRELATE_MIN_WORK_PER_THREAD


def _checked_inputs(in1, in2):
    in1, in2 = as_array(in1, "in1"), as_array(in2, "in2")
    for array, name in ((in1, "in1"), (in2, "in2")):
        # The dtype first: None or a string is not a number, whatever its shape.
        float_dtype(array, name)
        check_ndim(array, name, (2,), _LAYOUT)
        check_nonempty(array, name)
    return as_float_arrays((in1, "in1"), (in2, "in2"))


def _fill_value(fillvalue, dtype):
    """``fillvalue`` as a 0-d array of ``dtype``.

    Like scipy, a scalar or any array of exactly one element is accepted;
    unlike scipy, strings, None and complex numbers are refused rather than
    parsed, turned into NaN or truncated.
    """
    value = as_array(fillvalue, "fillvalue")
    if value.dtype.kind not in "biuf":
        raise TypeError(f"fillvalue must be a real number, got {reprlib.repr(fillvalue)}")
    if value.size != 1:
        raise ValueError(
            f"fillvalue must be one number (a scalar or an array of one element), "
            f"got an array of shape {value.shape}"
        )
    return value.reshape(()).astype(dtype)


def _valid_swap_needed(shape1, shape2):
    """scipy's rule for mode 'valid': the input at least as large as the
    other in every dimension plays the role of in1."""
    in1_covers = all(a >= b for a, b in zip(shape1, shape2))
    in2_covers = all(b >= a for a, b in zip(shape1, shape2))
    if not (in1_covers or in2_covers):
        raise ValueError(
            f"For 'valid' mode, one must be at least as large as the other in "
            f"every dimension; got in1 of shape {shape1} and in2 of shape {shape2}"
        )
    return not in1_covers


def _axis_plan(size, taps, mode, convolve):
    """Return (output length, extension before, extension after) of one axis.

    In 'same' mode scipy centres the output on the full one, rounding down
    the offset for a correlation and up for a convolution: with an even
    kernel the two differ by one sample, so convolving is not correlating
    with the flipped kernel there.
    """
    if mode == "full":
        length, before = size + taps - 1, taps - 1
    elif mode == "same":
        length, before = size, (taps // 2 if convolve else (taps - 1) // 2)
    else:
        length, before = size - taps + 1, 0
    return length, before, length + taps - 1 - size - before


def _extension_indices(positions, size, boundary):
    """Map positions along an axis of ``size`` samples, any distance past
    either end, to the sample the boundary rule reads there."""
    if boundary == "wrap":
        return positions % size
    # 'symm' mirrors about each edge, repeating the edge sample, so the
    # extension has period 2 * size: ... 1 0 | 0 1 ... m-1 | m-1 m-2 ...
    folded = np.where(positions >= 0, positions, -positions - 1) % (2 * size)
    return np.where(folded < size, folded, 2 * size - 1 - folded)


def _extension(in1, rows, cols, top, left, boundary, fill):
    """The part of ``in1``'s extension (``in1`` moved ``top`` rows down and
    ``left`` columns right, the rest filled by the boundary rule) with rows
    ``rows = (first, stop)`` and columns ``cols``, C-contiguous."""
    h, w = in1.shape
    row_positions = np.arange(*rows) - top
    col_positions = np.arange(*cols) - left
    if boundary == "fill":
        part = np.full((len(row_positions), len(col_positions)), fill, dtype=in1.dtype)
        # The rows and columns of the part that lie inside in1.
        r0, r1 = np.clip([rows[0] - top, rows[1] - top], 0, h)
        c0, c1 = np.clip([cols[0] - left, cols[1] - left], 0, w)
        if r1 > r0 and c1 > c0:
            part[r0 + top - rows[0]:r1 + top - rows[0],
                 c0 + left - cols[0]:c1 + left - cols[0]] = in1[r0:r1, c0:c1]
        return part
    row_index = _extension_indices(row_positions, h, boundary)
    col_index = _extension_indices(col_positions, w, boundary)
    return np.ascontiguousarray(in1[np.ix_(row_index, col_index)])


def _correlate_valid(ext, kernel, out):
    """The kernel's "valid" correlation of ``ext`` into ``out``, both with
    contiguous rows, on as many threads as the work is worth."""
    if out.size == 0:
        return
    # The kernel indexes along a row by pointer (a row of one value may
    # have any stride: numpy calls such an array contiguous).
    assert all(a.shape[1] == 1 or a.strides[1] == a.itemsize for a in (ext, out))
    work = out.size * kernel.size
    n_threads = _runtime.threads_for(work, _PARALLEL_MIN_WORK)
    _correlate.correlate2d_valid(ext, kernel, out, n_threads)


def _correlate_extended(in1, kernel, out, top, left, boundary, fill):
    """Fill ``out`` with the "valid" correlation of ``in1``'s extension
    (``top`` rows and ``left`` columns before it, as many as ``out`` needs
    after) with ``kernel``.

    The extension is never built whole, which would cost another array of
    the output's size: the interior, where the kernel lies inside ``in1``,
    is computed from ``in1`` itself, and only the border strips from the
    parts of the extension they read."""
    (h, w), (kh, kw), (out_h, out_w) = in1.shape, kernel.shape, out.shape
    # Output rows m0:m1 and columns n0:n1 read nothing but in1.
    m0, m1 = top, min(top + h - kh + 1, out_h)
    n0, n1 = left, min(left + w - kw + 1, out_w)
    if m1 <= m0 or n1 <= n0:
        # The kernel never fits inside in1: every output reads the border.
        _correlate_valid(_extension(in1, (0, out_h + kh - 1), (0, out_w + kw - 1),
                                    top, left, boundary, fill), kernel, out)
        return
    _correlate_valid(in1[:m1 - m0 + kh - 1, :n1 - n0 + kw - 1], kernel, out[m0:m1, n0:n1])
    # Top and bottom strips over the whole width, left and right between.
    for rows, cols in (((0, m0), (0, out_w)), ((m1, out_h), (0, out_w)),
                       ((m0, m1), (0, n0)), ((m0, m1), (n1, out_w))):
        if rows[1] > rows[0] and cols[1] > cols[0]:
            part = _extension(in1, (rows[0], rows[1] + kh - 1), (cols[0], cols[1] + kw - 1),
                              top, left, boundary, fill)
            _correlate_valid(part, kernel, out[rows[0]:rows[1], cols[0]:cols[1]])


def _reverse_in_place(out):
    """Reverse a C-contiguous 2-D array in both axes without a copy of it:
    its flat view reversed, a slice at a time."""
    flat = out.reshape(-1)
    n = flat.size
    step = 1 << 16
    for i in range(0, n // 2, step):
        j = min(i + step, n // 2)
        saved = flat[i:j].copy()
        flat[i:j] = flat[n - j:n - i][::-1]
        flat[n - j:n - i] = saved[::-1]


def _correlate_or_convolve(in1, in2, mode, boundary, fillvalue, convolve):
    in1, in2 = _checked_inputs(in1, in2)
    check_choice(mode, "mode", _MODES)
    check_choice(boundary, "boundary", tuple(_BOUNDARIES))
    boundary = _BOUNDARIES[boundary]
    # scipy reads fillvalue only for the 'fill' boundary (in every mode).
    fill = _fill_value(fillvalue, in1.dtype) if boundary == "fill" else None
    swapped = mode == "valid" and _valid_swap_needed(in1.shape, in2.shape)
    if swapped:
        in1, in2 = in2, in1
    kernel = np.ascontiguousarray(in2[::-1, ::-1]) if convolve else in2

    out_h, top, _ = _axis_plan(in1.shape[0], kernel.shape[0], mode, convolve)
    out_w, left, _ = _axis_plan(in1.shape[1], kernel.shape[1], mode, convolve)
    out = np.empty((out_h, out_w), dtype=in1.dtype)
    _correlate_extended(in1, kernel, out, top, left, boundary, fill)
    if swapped and not convolve:
        # Correlation is not symmetric in its inputs: scipy correlates the
        # swapped pair and reverses the result, which equals the
        # correlation of in1 with in2 over the positions where one covers
        # the other.
        _reverse_in_place(out)
    return out


_SHARED_PARAMETERS = """\
    in1 : array_like, 2-D
        First input: the image, extended past its borders by ``boundary``.
    in2 : array_like, 2-D
        Second input: the kernel.  Either may be the larger.
    mode : {"full", "valid", "same"}, default "full"
        Size of the output.  ``"full"``: every position where the inputs
        overlap, ``(M1 + M2 - 1, N1 + N2 - 1)``.  ``"valid"``: only
        positions that need no boundary values,
        ``(|M1 - M2| + 1, |N1 - N2| + 1)``; one input must be at least as
        large as the other in every dimension.  ``"same"``: the shape of
        ``in1``, centred on the full output.
    boundary : {"fill", "wrap", "symm"}, default "fill"
        Values read beyond ``in1``'s borders: ``fillvalue`` (``"fill"``,
        alias ``"pad"``), periodic (``"wrap"``, alias ``"circular"``) or
        mirrored with the edge repeated (``"symm"``, alias
        ``"symmetric"``), however far the kernel reaches.
    fillvalue : real scalar or array of one element, default 0
        Value beyond the borders for ``boundary="fill"``; ignored otherwise,
        as in scipy.

    Returns
    -------
    out : ndarray, 2-D, C-contiguous
        float32 if both inputs are float32, else float64 (integer and bool
        inputs are computed in float64, so ``fillvalue`` is never
        truncated to an integer).

    Raises
    ------
    TypeError
        For complex, float16, object or other non-real inputs, or a
        non-numeric ``fillvalue``.
    ValueError
        For inputs that are not 2-D or have an empty axis, an unknown
        ``mode`` or ``boundary``, a ``fillvalue`` of more than one element,
        or, in ``"valid"`` mode, inputs neither of which covers the other.
"""


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Cross-correlate two 2-D arrays, as ``scipy.signal.correlate2d``.

    ``out[m, n] = sum over i, j of ext[m + i - p, n + j - q] * in2[i, j]``
    where ``ext`` is ``in1`` extended by ``boundary`` and the offsets
    ``p, q`` are set by ``mode``.  In ``"valid"`` mode with ``in2`` the
    larger input, the inputs are swapped and the result reversed in both
    axes, exactly as scipy does.

    Parameters
    ----------
{parameters}
    See Also
    --------
    convolve2d : the same with ``in2`` flipped in both axes.
    cyconv.functional.conv2d : batched, multi-channel cross-correlation.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import correlate2d
    >>> image = np.arange(12.0).reshape(3, 4)
    >>> kernel = np.array([[1.0, 0.0], [0.0, -1.0]])
    >>> correlate2d(image, kernel, mode="valid")
    array([[-5., -5., -5.],
           [-5., -5., -5.]])
    >>> correlate2d(image, kernel, mode="same", boundary="wrap")
    array([[-5., -5., -5., -1.],
           [-5., -5., -5., -1.],
           [ 7.,  7.,  7., 11.]])
    >>> correlate2d(image, kernel).shape
    (4, 5)
    """
    return _correlate_or_convolve(in1, in2, mode, boundary, fillvalue, convolve=False)


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Convolve two 2-D arrays, as ``scipy.signal.convolve2d``.

    ``out[m, n] = sum over i, j of ext[m - i + p, n - j + q] * in2[i, j]``:
    a cross-correlation with ``in2`` flipped in both axes, with ``ext`` and
    the offsets ``p, q`` as in :func:`correlate2d` except in ``"same"``
    mode, where scipy rounds the centring the other way, so that for an
    even-sized ``in2`` the output is shifted by one sample from
    ``correlate2d(in1, in2[::-1, ::-1], "same")``.  In ``"valid"`` mode the
    larger input plays the role of ``in1`` (convolution is symmetric).

    Parameters
    ----------
{parameters}
    See Also
    --------
    correlate2d : the same without flipping ``in2``.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import convolve2d
    >>> image = np.arange(12.0).reshape(3, 4)
    >>> kernel = np.array([[1.0, 0.0], [0.0, -1.0]])
    >>> convolve2d(image, kernel, mode="valid")
    array([[5., 5., 5.],
           [5., 5., 5.]])
    >>> convolve2d(image, kernel, mode="same", boundary="symm")
    array([[0., 1., 1., 1.],
           [4., 5., 5., 5.],
           [4., 5., 5., 5.]])

    Integer inputs are computed in float64, so a fractional ``fillvalue``
    is kept:

    >>> convolve2d([[1, 2]], [[1], [1]], fillvalue=0.5)
    array([[1.5, 2.5],
           [1.5, 2.5]])
    """
    return _correlate_or_convolve(in1, in2, mode, boundary, fillvalue, convolve=True)


# Docstrings are absent under ``python -OO``.
for _function in (correlate2d, convolve2d):
    if _function.__doc__:
        _function.__doc__ = _function.__doc__.replace("{parameters}", _SHARED_PARAMETERS)
del _function
