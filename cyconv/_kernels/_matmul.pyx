# The dense layer's matrix products through scipy's BLAS (cython_blas),
# without f2py's argument handling: a batch-1 LeNet step makes three
# products of a few thousand multiply-adds each, and f2py's wrapper cost
# about 1 us more per call than the product itself.
#
# The arrays are checked here, in C, as _optim.pyx checks its own: plain
# ndarrays of one float dtype in the native byte order, 2-D, of matching
# inner sizes, each C- or Fortran-contiguous and aligned, every size from 1
# to INT_MAX.  Anything else returns None and the caller takes scipy's f2py
# wrapper.  The call is
# the one that wrapper made (cyconv/_matmul.py), operand for operand: same
# transposes, sizes and leading dimensions, so the same BLAS kernel and the
# same bits.

from libc.limits cimport INT_MAX

cimport numpy as cnp

from cython cimport floating

from ._arrays cimport native_array
from ._gemm cimport gemm
from ._sums cimport ordered_sums

cnp.import_array()


cdef bint _operand(cnp.ndarray a, char** trans, int* ld):
    """The Fortran-ordered view BLAS reads of ``a``'s transpose: ``a``'s
    own data, read as is ("N", a C-ordered array) or transposed ("T", a
    Fortran-ordered one); False for neither order, a misaligned array or
    one not in the native byte order."""
    # a byte-swapped array has the same type number: its values are not
    # what BLAS reads there
    if not (cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)):
        return False
    # C order first, as _matmul._fortran_operand tries the transpose's
    # Fortran order first (an array of one row or column is both).
    if cnp.PyArray_IS_C_CONTIGUOUS(a):
        trans[0] = b"N"
        ld[0] = <int> cnp.PyArray_DIM(a, 1)
        return True
    if cnp.PyArray_IS_F_CONTIGUOUS(a):
        trans[0] = b"T"
        ld[0] = <int> cnp.PyArray_DIM(a, 0)
        return True
    return False


def product(a, b):
    """``a @ b`` as a new C-ordered array, for 2-D arrays of one float dtype
    (float32 or float64, native byte order), each C- or Fortran-contiguous
    and aligned, no size 0 and none above INT_MAX; None for anything else.
    The caller keeps BLAS's own threads as it wants them."""
    if type(a) is not cnp.ndarray or type(b) is not cnp.ndarray:
        return None
    cdef cnp.ndarray left = <cnp.ndarray> a, right = <cnp.ndarray> b
    if cnp.PyArray_NDIM(left) != 2 or cnp.PyArray_NDIM(right) != 2:
        return None
    cdef int typenum = cnp.PyArray_TYPE(left)
    if (typenum != cnp.PyArray_TYPE(right)
            or (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64)):
        return None
    cdef cnp.npy_intp m = cnp.PyArray_DIM(left, 0), k = cnp.PyArray_DIM(left, 1)
    cdef cnp.npy_intp n = cnp.PyArray_DIM(right, 1)
    if cnp.PyArray_DIM(right, 0) != k:
        return None
    if not (0 < m <= INT_MAX and 0 < n <= INT_MAX and 0 < k <= INT_MAX):
        return None
    # C = a b in C order is C^T = b^T a^T in Fortran order (ldc n): b's
    # transpose is BLAS's first operand, a's its second.
    cdef char* trans_b
    cdef char* trans_a
    cdef int ld_b, ld_a
    if not (_operand(right, &trans_b, &ld_b) and _operand(left, &trans_a, &ld_a)):
        return None
    cdef cnp.npy_intp shape[2]
    shape[0], shape[1] = m, n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(2, shape, typenum, 0)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            gemm[float](trans_b, trans_a, <int> n, <int> m, <int> k, 1,
                        <const float*> cnp.PyArray_DATA(right), ld_b,
                        <const float*> cnp.PyArray_DATA(left), ld_a,
                        0, <float*> cnp.PyArray_DATA(out), <int> n)
    else:
        with nogil:
            gemm[double](trans_b, trans_a, <int> n, <int> m, <int> k, 1,
                         <const double*> cnp.PyArray_DATA(right), ld_b,
                         <const double*> cnp.PyArray_DATA(left), ld_a,
                         0, <double*> cnp.PyArray_DATA(out), <int> n)
    return out


cdef bint _floats(object a, int ndim, int typenum):
    """Whether ``a`` is a native array (see _arrays) of ``ndim`` dimensions
    and type ``typenum``, float32 or float64."""
    return (native_array(a, ndim) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and (typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64))


cdef void _add_rows(floating* out, const floating* bias, Py_ssize_t m,
                    Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            out[i * n + j] = out[i * n + j] + bias[j]


def add_bias(out, bias):
    """out += bias, row by row, in place, for a C-contiguous, writeable
    float32 or float64 ``out`` (M, N), as product() makes it, and a
    C-contiguous ``bias`` (N,) of its type apart from it: numpy's
    expression (one rounded add a value; where both are NaN, which NaN's
    payload the sum keeps is C's choice), without numpy's dispatch, which
    costs more than a small batch's adds.  False, touching nothing, for
    other arrays: the caller adds them with numpy."""
    if type(out) is not cnp.ndarray:
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    cdef int typenum = cnp.PyArray_TYPE(o)
    if not (_floats(out, 2, typenum) and _floats(bias, 1, typenum)
            and cnp.PyArray_IS_C_CONTIGUOUS(o) and cnp.PyArray_ISWRITEABLE(o)
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>bias)
            and cnp.PyArray_DIM(<cnp.ndarray>bias, 0) == cnp.PyArray_DIM(o, 1)):
        return False
    cdef char* first = cnp.PyArray_BYTES(o)
    cdef char* b = cnp.PyArray_BYTES(<cnp.ndarray>bias)
    if not (b + cnp.PyArray_NBYTES(<cnp.ndarray>bias) <= first
            or first + cnp.PyArray_NBYTES(o) <= b):
        return False  # a bias in out's memory: numpy's order of reads
    cdef Py_ssize_t m = cnp.PyArray_DIM(o, 0), n = cnp.PyArray_DIM(o, 1)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            _add_rows(<float*>first, <const float*>b, m, n)
        else:
            _add_rows(<double*>first, <const double*>b, m, n)
    return True


def sum_rows(g):
    """The rows of a float32 or float64 ``g`` (M, N), any strides, added in
    order: a new (N,) array, zeros to which each row is added, first to
    last (_sums.ordered_sums; numpy's np.add.reduce(g, axis=0) where N > 1,
    for one column numpy sums pairwise).  None for other arrays, for which
    the caller asks numpy."""
    if type(g) is not cnp.ndarray:
        return None
    cdef cnp.ndarray a = <cnp.ndarray>g
    cdef int typenum = cnp.PyArray_TYPE(a)
    if not _floats(g, 2, typenum):
        return None
    cdef Py_ssize_t m = cnp.PyArray_DIM(a, 0), n = cnp.PyArray_DIM(a, 1)
    # strides in values: an aligned array's are whole values
    cdef Py_ssize_t rows = cnp.PyArray_STRIDE(a, 0) // cnp.PyArray_ITEMSIZE(a)
    cdef Py_ssize_t columns = cnp.PyArray_STRIDE(a, 1) // cnp.PyArray_ITEMSIZE(a)
    cdef cnp.npy_intp length = n
    cdef cnp.ndarray out = cnp.PyArray_ZEROS(1, &length, typenum, 0)
    if m == 0 or n == 0:
        return out
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            ordered_sums(<const float*>cnp.PyArray_DATA(a), rows, m, columns, n,
                         <float*>cnp.PyArray_DATA(out))
        else:
            ordered_sums(<const double*>cnp.PyArray_DATA(a), rows, m, columns, n,
                         <double*>cnp.PyArray_DATA(out))
    return out
