/* Element-wise loops that the compiler vectorises, shared by the kernels.
 *
 * `restrict` tells the compiler the arrays do not overlap, so it vectorises
 * without run-time alias checks.  On x86-64 with GCC, each loop is also
 * compiled for AVX2+FMA and AVX-512 next to the baseline, and the loader
 * picks the best one the processor supports (function multi-versioning):
 * the shipped build stays portable, with no -march=native.  The choice is
 * made once per process, so results never depend on the thread count.
 */
#ifndef CYCONV_SIMD_H
#define CYCONV_SIMD_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CYCONV_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CYCONV_CLONES
#endif

#define CYCONV_DEFINE(T)                                                        \
/* y[k] += a * x[k] */                                                          \
CYCONV_CLONES static void cyconv_axpy_##T(                                      \
        ptrdiff_t n, T a, const T *restrict x, T *restrict y) {                \
    for (ptrdiff_t k = 0; k < n; k++) y[k] += a * x[k];                         \
}                                                                               \
/* y[k * incy] += a * x[k * incx] */                                            \
CYCONV_CLONES static void cyconv_axpy_strided_##T(                              \
        ptrdiff_t n, T a, const T *restrict x, ptrdiff_t incx,                  \
        T *restrict y, ptrdiff_t incy) {                                        \
    for (ptrdiff_t k = 0; k < n; k++) y[k * incy] += a * x[k * incx];           \
}                                                                               \
/* acc[k] += x[k] * y[k * incy] */                                              \
CYCONV_CLONES static void cyconv_mul_acc_##T(                                   \
        ptrdiff_t n, const T *restrict x, const T *restrict y, ptrdiff_t incy,  \
        T *restrict acc) {                                                      \
    if (incy == 1) { for (ptrdiff_t k = 0; k < n; k++) acc[k] += x[k] * y[k]; } \
    else { for (ptrdiff_t k = 0; k < n; k++) acc[k] += x[k] * y[k * incy]; }    \
}

CYCONV_DEFINE(float)
CYCONV_DEFINE(double)

#endif
