# Matrix products for the conv kernels, in the precision of the arrays,
# through the BLAS that scipy ships (its run-time dispatched kernels reach
# the processor's FMA peak with a portable build).

from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef inline void gemm(
    char* trans_a, char* trans_b, int m, int n, int k,
    floating alpha, const floating* a, int lda, const floating* b, int ldb,
    floating beta, floating* c, int ldc,
) noexcept nogil:
    """Column-major C = alpha * op(A) @ op(B) + beta * C."""
    if floating is float:
        sgemm(trans_a, trans_b, &m, &n, &k, &alpha, <float*> a, &lda,
              <float*> b, &ldb, &beta, c, &ldc)
    else:
        dgemm(trans_a, trans_b, &m, &n, &k, &alpha, <double*> a, &lda,
              <double*> b, &ldb, &beta, c, &ldc)
