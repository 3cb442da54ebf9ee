"""Typed memoryviews of arrays, made once and passed to the kernels as they
are (see cyconv/_scratch.py).

A kernel's typed-memoryview argument given an ndarray makes a memoryview
object of it at every call: 0.1 us, 58 times in a LeNet training step at
batch 1.  Given a memoryview object of its own element type, it takes it
as it is (0.02 us).  These functions make such objects, of C-contiguous
arrays of the dtypes and dimensions the kernels' arguments have.
"""

from cython cimport floating
from libc.stdint cimport uint8_t

import numpy as np


def _float2(floating[:, ::1] a):
    return a


def _float3(floating[:, :, ::1] a):
    return a


def _float4(floating[:, :, :, ::1] a):
    return a


def _offsets(const Py_ssize_t[::1] a):
    return a


def _row_taps(const int[:, ::1] a):
    return a


def _codes(uint8_t[:, :, :, ::1] a):
    return a


_FLOATS = (None, None, _float2, _float3, _float4)


def typed_view(array):
    """The memoryview object a kernel's argument of ``array``'s element
    type and dimensions takes as it is: float32 or float64 with 2-4
    dimensions (writeable: the passes' scratch and placeholders), intp
    with 1 and C int with 2 (read-only arguments: offsets and row taps),
    uint8 with 4 (codes); every one C-contiguous.  A ValueError or
    TypeError where the array is none of these."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"typed_view takes a numpy array, got {type(array).__name__}")
    kind, ndim = array.dtype.char, array.ndim
    if kind in "fd" and 2 <= ndim <= 4:
        make = _FLOATS[ndim]
        return (make["float"] if kind == "f" else make["double"])(array)
    if array.dtype == "intp" and ndim == 1:
        return _offsets(array)
    if array.dtype == "intc" and ndim == 2:
        return _row_taps(array)
    if array.dtype == "uint8" and ndim == 4:
        return _codes(array)
    raise TypeError(f"no kernel argument takes an array of dtype {array.dtype} "
                    f"and {ndim} dimensions")
