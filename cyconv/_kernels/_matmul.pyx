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

from ._gemm cimport gemm

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


cdef bint _plain(object a, int ndim, int typenum):
    """Whether ``a`` is an aligned ndarray of ``ndim`` dimensions and type
    ``typenum`` in the native byte order."""
    return (type(a) is cnp.ndarray and cnp.PyArray_NDIM(<cnp.ndarray>a) == ndim
            and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>a) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a))


def add_bias(out, bias):
    """out += bias, row by row, in place, for a C-contiguous float32 or
    float64 ``out`` (M, N) as product() makes it and a ``bias`` (N,) of its
    type, C-contiguous: numpy's expression to the bit (one rounded add a
    value), without its dispatch, which costs more than a small batch's
    adds.  False, touching nothing, for other arrays: the caller adds them
    with numpy."""
    if type(out) is not cnp.ndarray:
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    cdef int typenum = cnp.PyArray_TYPE(o)
    if not (_plain(out, 2, typenum) and _plain(bias, 1, typenum)
            and (typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64)
            and cnp.PyArray_IS_C_CONTIGUOUS(o) and cnp.PyArray_ISWRITEABLE(o)
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>bias)
            and cnp.PyArray_DIM(<cnp.ndarray>bias, 0) == cnp.PyArray_DIM(o, 1)):
        return False
    cdef Py_ssize_t m = cnp.PyArray_DIM(o, 0), n = cnp.PyArray_DIM(o, 1), i, j
    cdef void* values = cnp.PyArray_DATA(o)
    cdef const void* b = cnp.PyArray_DATA(<cnp.ndarray>bias)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            for i in range(m):
                for j in range(n):
                    (<float*>values)[i * n + j] += (<const float*>b)[j]
        else:
            for i in range(m):
                for j in range(n):
                    (<double*>values)[i * n + j] += (<const double*>b)[j]
    return True


def sum_rows(g):
    """The rows of a float32 or float64 ``g`` (M, N), any strides, added in order: a new (N,) array, zeros to which each row is
    added, first to last (numpy's np.add.reduce(g, axis=0) where N > 1;
    for one column numpy sums pairwise).  None for other arrays, for which
    the caller asks numpy."""
    if type(g) is not cnp.ndarray:
        return None
    cdef cnp.ndarray a = <cnp.ndarray>g
    cdef int typenum = cnp.PyArray_TYPE(a)
    if not (_plain(g, 2, typenum) and (typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64)):
        return None
    cdef Py_ssize_t m = cnp.PyArray_DIM(a, 0), n = cnp.PyArray_DIM(a, 1), i, j
    cdef Py_ssize_t rs = cnp.PyArray_STRIDE(a, 0), cs = cnp.PyArray_STRIDE(a, 1)
    cdef cnp.npy_intp size = n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &size, typenum, 0)
    cdef const char* rows = <const char*>cnp.PyArray_DATA(a)
    cdef void* total = cnp.PyArray_DATA(out)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            for j in range(n):
                (<float*>total)[j] = 0
            for i in range(m):
                for j in range(n):
                    (<float*>total)[j] += (<const float*>(rows + i * rs + j * cs))[0]
        else:
            for j in range(n):
                (<double*>total)[j] = 0
            for i in range(m):
                for j in range(n):
                    (<double*>total)[j] += (<const double*>(rows + i * rs + j * cs))[0]
    return out
