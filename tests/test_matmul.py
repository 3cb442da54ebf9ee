"""The dense layer's matrix products (cyconv._matmul): the compiled BLAS
call gives the bits of scipy's f2py wrapper of the same BLAS routine, in
every layout it takes, and leaves everything else to that wrapper."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import blas

from cyconv import _matmul
from cyconv._blas import single_threaded_blas
from cyconv._kernels import _matmul as compiled
from reference import awkward_values

SHAPES = [(1, 400, 10), (1, 10, 400), (10, 1, 400), (64, 400, 10), (3, 5, 7), (1, 1, 1),
          (7, 1, 1), (1, 1, 9), (33, 65, 17), (120, 130, 140)]


def _laid_out(matrix, layout):
    """``matrix`` C-ordered, Fortran-ordered, or a view of every other column."""
    if layout == "C":
        return np.ascontiguousarray(matrix)
    if layout == "F":
        return np.asfortranarray(matrix)
    wide = np.zeros((matrix.shape[0], 2 * matrix.shape[1]), matrix.dtype)
    wide[:, ::2] = matrix
    return wide[:, ::2]


def _scipy_product(a, b):
    """a @ b by scipy's f2py gemm on C-ordered copies, one BLAS thread."""
    gemm = blas.sgemm if a.dtype == np.float32 else blas.dgemm
    with single_threaded_blas():
        # (a b)^T = b^T a^T: C-ordered b and a are Fortran-ordered b^T, a^T.
        return gemm(1.0, np.ascontiguousarray(b).T, np.ascontiguousarray(a).T).T


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_products_are_scipys_bit_for_bit(dtype, m, k, n):
    rng = np.random.default_rng(m * 10000 + k * 100 + n)
    a0 = rng.standard_normal((m, k)).astype(dtype)
    b0 = rng.standard_normal((k, n)).astype(dtype)
    expected = _scipy_product(a0, b0)
    np.testing.assert_allclose(expected, a0.astype(np.float64) @ b0.astype(np.float64),
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)
    for layout_a, layout_b in itertools.product("CFS", repeat=2):
        a, b = _laid_out(a0, layout_a), _laid_out(b0, layout_b)
        out = _matmul.matmul(a, b)
        assert out.dtype == dtype and out.shape == (m, n) and out.flags.c_contiguous
        if layout_a == "F" and m > 1 and k > 1 or layout_b == "F" and k > 1 and n > 1:
            # a Fortran-ordered operand is read transposed: another BLAS
            # kernel, whose sums may run in another order
            np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32
                                       else 1e-13, atol=1e-5)
        else:
            np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fortran_operands_are_read_as_f2py_reads_them(dtype):
    """A Fortran-ordered operand goes to BLAS transposed, as the f2py path
    hands it: the two calls agree bit for bit."""
    rng = np.random.default_rng(3)
    for m, k, n in SHAPES:
        a = np.asfortranarray(rng.standard_normal((m, k)).astype(dtype))
        b = np.asfortranarray(rng.standard_normal((k, n)).astype(dtype))
        for left, right in ((a, b), (np.ascontiguousarray(a), b), (a, np.ascontiguousarray(b))):
            with single_threaded_blas():
                expected = _matmul._by_f2py(left, right)
            np.testing.assert_array_equal(_matmul.matmul(left, right), expected)


@pytest.mark.parametrize("a, b", [
    (np.ones((2, 3), np.float32), np.ones((3, 4), np.float64)),   # two dtypes
    (np.ones((2, 3), np.int64), np.ones((3, 4), np.int64)),       # not floats
    (np.ones(3, np.float32), np.ones((3, 4), np.float32)),        # 1-D
    (np.ones((1, 2, 3), np.float32), np.ones((3, 4), np.float32)),
    (np.ones((2, 3), np.float32), np.ones((5, 4), np.float32)),   # inner sizes
    (np.ones((0, 3), np.float32), np.ones((3, 4), np.float32)),   # empty
    (np.ones((2, 0), np.float32), np.ones((0, 4), np.float32)),
    (np.ones((2, 3), np.float32)[:, ::2], np.ones((2, 4), np.float32)),  # strided
    (np.ones((2, 3), np.float32).view(type("Sub", (np.ndarray,), {})),  # a subclass
     np.ones((3, 4), np.float32)),
    (np.ones((2, 3), ">f4" if np.little_endian else "<f4"),       # byte-swapped
     np.ones((3, 4), ">f4" if np.little_endian else "<f4")),
    (np.ones((2, 3), np.float32), np.ones((3, 4), ">f4" if np.little_endian else "<f4")),
    ([[1.0, 2.0]], np.ones((2, 4))),
])
def test_the_compiled_call_refuses_what_it_does_not_take(a, b):
    assert compiled.product(a, b) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_call_takes_plain_arrays(dtype):
    """C- and Fortran-ordered operands take the compiled call (else every
    other test here would pass on f2py's path alone)."""
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    b = np.arange(12, dtype=dtype).reshape(3, 4)
    for left, right in ((a, b), (np.asfortranarray(a), b), (a, np.asfortranarray(b))):
        out = compiled.product(left, right)
        assert out is not None
        np.testing.assert_array_equal(out, a.astype(np.float64) @ b.astype(np.float64))


def test_byte_swapped_operands_give_their_values_product():
    swapped = np.dtype(np.float32).newbyteorder()
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = _matmul.matmul(a.astype(swapped), b.astype(swapped))
    np.testing.assert_array_equal(out, a @ b)


def test_misaligned_arrays_are_refused():
    raw = np.zeros(4 * 12 + 1, np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(3, 4)
    assert not misaligned.flags.aligned
    assert compiled.product(misaligned, np.ones((4, 2), np.float32)) is None
    np.testing.assert_array_equal(_matmul.matmul(misaligned, np.ones((4, 2), np.float32)),
                                  np.zeros((3, 2), np.float32))


def test_empty_products_take_the_f2py_path():
    out = _matmul.matmul(np.ones((2, 0), np.float32), np.ones((0, 4), np.float32))
    np.testing.assert_array_equal(out, np.zeros((2, 4), np.float32))
    assert _matmul.matmul(np.ones((0, 3)), np.ones((3, 4))).shape == (0, 4)


def _bytes_nan_as_one(a):
    """The array's bytes, every NaN made one (the payload of a NaN that two
    NaNs give depends on the operands' order, which C leaves open)."""
    return np.where(np.isnan(a), np.nan, a).astype(a.dtype).tobytes()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf - inf, NaN casts
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # huge values cast to float32
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n", [(1, 10), (64, 10), (3, 1), (1, 1), (7, 33)])
def test_add_bias_is_numpys_expression_and_refuses_what_it_does_not_take(dtype, m, n):
    rng = np.random.default_rng(m * 100 + n)
    out = awkward_values(rng, (m, n), dtype)
    bias = awkward_values(rng, (n,), dtype)
    expected = out.copy()
    expected += bias
    assert compiled.add_bias(out, bias)
    assert _bytes_nan_as_one(out) == _bytes_nan_as_one(expected)
    assert _bytes_nan_as_one(_matmul.affine(out, np.eye(n, dtype=dtype), bias)) == _bytes_nan_as_one(
        _matmul.matmul(out, np.eye(n, dtype=dtype)) + bias)
    read_only = out.copy()
    read_only.flags.writeable = False
    strided = [] if n == 1 else [(np.zeros((m, 2 * n), dtype)[:, ::2], bias)]
    other_dtype = np.float64 if dtype == np.float32 else np.float32
    for target, b in strided + [
            (out, bias.astype(other_dtype)), (out, np.zeros(n + 1, dtype)), (read_only, bias),
            (out, bias.astype(bias.dtype.newbyteorder())), (out.tolist(), bias),
            (out, np.zeros((1, n), dtype)), (out, out[-1])]:  # a bias in out's memory
        before = np.array(target).tobytes()
        assert not compiled.add_bias(target, b)
        assert np.array(target).tobytes() == before


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf - inf, NaN casts
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n", [(1, 10), (64, 10), (300, 1), (5, 2), (129, 3)])
def test_sum_rows_adds_the_rows_in_order(dtype, m, n):
    """Each row added to zeros in order: numpy's reduction over the rows
    where there are two columns or more (it sums one column pairwise), for
    any strides; NaN where a row has one, whatever its payload."""
    rng = np.random.default_rng(m + n)
    g = awkward_values(rng, (m, n), dtype)
    expected = np.zeros(n, dtype)
    for row in g:
        expected = expected + row
    for layout in (g, np.asfortranarray(g), np.repeat(g, 2, axis=1)[:, ::2], g.T.copy().T):
        total = _matmul.sum_rows(layout)
        assert total.dtype == dtype and total.shape == (n,)
        assert _bytes_nan_as_one(total) == _bytes_nan_as_one(expected)
    if n > 1:
        assert _bytes_nan_as_one(expected) == _bytes_nan_as_one(np.add.reduce(g, axis=0))
    finite = np.nan_to_num(g.astype(np.float64), posinf=0, neginf=0)
    np.testing.assert_allclose(_matmul.sum_rows(np.nan_to_num(g, posinf=0, neginf=0)),
                               finite.sum(axis=0), rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-3 * np.abs(finite).max())
    for other in (g.astype(np.int64), g[0], g.astype(g.dtype.newbyteorder())):
        assert compiled.sum_rows(other) is None
    assert _bytes_nan_as_one(_matmul.sum_rows(g[:0])) == _bytes_nan_as_one(np.zeros(n, dtype))


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 40), n=st.integers(1, 20), layout=st.sampled_from("CFS"),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_dense_bias_helpers_against_numpy_loops(m, n, layout, dtype, seed):
    """affine's bias and sum_rows against numpy's own row-by-row loops, for
    any batch size, width and layout of the gradient."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((max(m, 1), 5)).astype(dtype)
    w = rng.standard_normal((n, 5)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    expected = _matmul.matmul(x, w.T)
    for row in expected:
        row += b
    assert _matmul.affine(x, w, b).tobytes() == expected.tobytes()
    g = _laid_out(rng.standard_normal((m, n)).astype(dtype), layout)
    total = np.zeros(n, dtype)
    for row in g:
        total = total + row
    assert _matmul.sum_rows(g).tobytes() == total.tobytes()
