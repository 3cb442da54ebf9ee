# The filter-blocked forward kernel as a matrix product, for the modules of
# other kernels (the Winograd products): cimported from here, so that its
# variants are compiled once.

cdef void blocked_product_f32(
    int isa, const float* a, Py_ssize_t a_step, Py_ssize_t a_stride, Py_ssize_t m,
    Py_ssize_t k, const float* b, Py_ssize_t blocks, float* out, Py_ssize_t ldo,
    bint accumulate,
) noexcept nogil
cdef void blocked_product_f64(
    int isa, const double* a, Py_ssize_t a_step, Py_ssize_t a_stride, Py_ssize_t m,
    Py_ssize_t k, const double* b, Py_ssize_t blocks, double* out, Py_ssize_t ldo,
    bint accumulate,
) noexcept nogil
