"""The shared input checks: what the kernels are promised."""

import numpy as np
import pytest

from cyconv._validation import as_float_arrays


def unaligned(array):
    """A C-contiguous copy of ``array`` one byte past an aligned address."""
    raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
    view = raw[1:].view(array.dtype).reshape(array.shape)
    view[...] = array
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_are_given_aligned_arrays(dtype):
    x = unaligned(np.arange(12, dtype=dtype).reshape(3, 4))
    assert x.flags.c_contiguous and not x.flags.aligned
    (out,) = as_float_arrays((x, "x"))
    assert out.flags.c_contiguous and out.flags.aligned and out.dtype == dtype
    np.testing.assert_array_equal(out, x)


def test_aligned_contiguous_arrays_are_not_copied():
    x = np.ones((3, 4))
    assert as_float_arrays((x, "x"))[0] is x
