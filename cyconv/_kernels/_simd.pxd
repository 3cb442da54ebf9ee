# Vectorised element-wise loops from _simd.h, fused over float/double.

from cython cimport floating

cdef extern from "_simd.h" nogil:
    void cyconv_axpy_float(Py_ssize_t n, float a, const float* x, float* y)
    void cyconv_axpy_double(Py_ssize_t n, double a, const double* x, double* y)
    void cyconv_axpy_strided_float(Py_ssize_t n, float a, const float* x, Py_ssize_t incx,
                                   float* y, Py_ssize_t incy)
    void cyconv_axpy_strided_double(Py_ssize_t n, double a, const double* x, Py_ssize_t incx,
                                    double* y, Py_ssize_t incy)
    void cyconv_mul_acc_float(Py_ssize_t n, const float* x, const float* y, Py_ssize_t incy,
                              float* acc)
    void cyconv_mul_acc_double(Py_ssize_t n, const double* x, const double* y,
                               Py_ssize_t incy, double* acc)


cdef inline void axpy(Py_ssize_t n, floating a, const floating* x, floating* y) noexcept nogil:
    """y[k] += a * x[k]; x and y must not overlap."""
    if floating is float:
        cyconv_axpy_float(n, a, x, y)
    else:
        cyconv_axpy_double(n, a, x, y)


cdef inline void axpy_strided(Py_ssize_t n, floating a, const floating* x, Py_ssize_t incx,
                              floating* y, Py_ssize_t incy) noexcept nogil:
    """y[k * incy] += a * x[k * incx]; x and y must not overlap."""
    if floating is float:
        cyconv_axpy_strided_float(n, a, x, incx, y, incy)
    else:
        cyconv_axpy_strided_double(n, a, x, incx, y, incy)


cdef inline void mul_acc(Py_ssize_t n, const floating* x, const floating* y, Py_ssize_t incy,
                         floating* acc) noexcept nogil:
    """acc[k] += x[k] * y[k * incy]; acc must overlap neither."""
    if floating is float:
        cyconv_mul_acc_float(n, x, y, incy, acc)
    else:
        cyconv_mul_acc_double(n, x, y, incy, acc)


cdef inline floating ordered_sum(Py_ssize_t n, const floating* x) noexcept nogil:
    """x[0] + x[1] + ... in that order (no reassociation: reproducible)."""
    cdef floating total = 0
    cdef Py_ssize_t k
    for k in range(n):
        total = total + x[k]
    return total
