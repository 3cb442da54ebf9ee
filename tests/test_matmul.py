"""The dense layer's matrix products (cyconv/_matmul.py): one BLAS call
from the compiled kernels for operands whose strides BLAS takes, contiguous
copies for the others, against float64 products."""

from unittest import mock

import numpy as np
import pytest

from cyconv import _matmul


def _layouts(matrix):
    """The same values laid out as BLAS takes them (C order, Fortran
    order, rows a stride apart) and as it does not (a reversed axis,
    every other column of a wider array)."""
    rows, cols = matrix.shape
    wide = np.zeros((rows, 2 * cols), matrix.dtype)
    wide[:, ::2] = matrix
    tall = np.zeros((2 * rows, cols), matrix.dtype)
    tall[::2] = matrix
    return {"C": matrix, "F": np.asfortranarray(matrix), "rows apart": tall[::2],
            "reversed": matrix[::-1].copy()[::-1], "strided": wide[:, ::2]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(1, 400, 10), (64, 400, 10), (10, 64, 400), (3, 1, 5),
                                     (1, 1, 1), (7, 9, 11), (300, 300, 300)])
def test_products_of_every_layout_against_float64(dtype, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    magnitude = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    eps = np.finfo(dtype).eps
    for left in _layouts(a).values():
        for right in _layouts(b).values():
            out = _matmul.matmul(left, right)
            assert out.shape == (m, n) and out.dtype == dtype and out.flags.c_contiguous
            assert np.all(np.abs(out - expected) <= 2 * k * eps * magnitude)


def test_blas_strides_take_one_call_and_others_a_copy_first():
    a = np.ones((4, 6), np.float32)
    b = np.ones((6, 3), np.float32)
    with mock.patch.object(_matmul, "_product", wraps=_matmul._product) as product:
        for left in (a, np.asfortranarray(a), _layouts(a)["rows apart"]):
            product.reset_mock()
            _matmul.matmul(left, b)
            assert product.call_count == 1
        product.reset_mock()
        np.testing.assert_array_equal(_matmul.matmul(_layouts(a)["strided"], b), a @ b)
        assert product.call_count == 2


@pytest.mark.parametrize("shape_a, shape_b", [((0, 3), (3, 4)), ((3, 4), (4, 0)),
                                              ((3, 0), (0, 4))])
def test_empty_axes(shape_a, shape_b):
    out = _matmul.matmul(np.ones(shape_a, np.float32), np.ones(shape_b, np.float32))
    np.testing.assert_array_equal(out, np.zeros((shape_a[0], shape_b[1]), np.float32))
