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


def test_an_int_is_whatever_operator_index_takes_in_every_argument():
    """groups=np.array(2) was accepted while stride=np.array(2) and
    padding=np.array(1) were refused: one rule for all of them."""
    from cyconv.functional import conv2d, max_pool2d, pad2d

    x = np.arange(2 * 4 * 6 * 6, dtype=float).reshape(2, 4, 6, 6)
    w = np.ones((4, 2, 3, 3))
    zero_d = np.array(2)
    np.testing.assert_array_equal(conv2d(x, w, stride=zero_d, padding=np.array(1), groups=zero_d),
                                  conv2d(x, w, stride=2, padding=1, groups=2))
    np.testing.assert_array_equal(max_pool2d(x, zero_d, stride=(np.array(1), 2)),
                                  max_pool2d(x, 2, stride=(1, 2)))
    np.testing.assert_array_equal(pad2d(x, np.array(1)), pad2d(x, 1))
    for not_an_int in (np.array(2.0), np.True_, True, 2.0):
        with pytest.raises(TypeError, match="stride must be an int"):
            conv2d(x, w, stride=not_an_int, groups=2)


def test_scalars_keep_their_shape_and_are_reported_as_such():
    """A scalar became shape (1,) on its way to the checks: it passed for
    the bias of a one-filter layer, and errors named a shape never given."""
    from cyconv.functional import conv2d, max_pool2d, pad2d

    assert as_float_arrays((2.0, "x"))[0].shape == ()
    x = np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \(F,\) = \(1,\), got \(\)"):
        conv2d(x, np.ones((1, 1, 2, 2)), bias=1.0)
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        max_pool2d(2.0, 1)
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        pad2d(np.float32(2), 1)
