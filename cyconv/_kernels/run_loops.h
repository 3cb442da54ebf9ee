/* Loops over contiguous runs that the convolutions' Cython code runs
 * around its kernels and products (and the 2x2 pooling its indices),
 * compiled for AVX-512, AVX2 and the baseline at
 * once (GCC's target_clones, as relu_loops.h; elsewhere the baseline only).
 * Element by element, no sum reordered, so every clone gives the same
 * results.  LeNet's first layer's weight gradient (batch 64, Zen 4, 1
 * thread) spent a third of its 0.27 ms in the baseline (SSE2) copy and a
 * twelfth in a finite check the compiler left scalar.
 */
#ifndef CYCONV_RUN_LOOPS_H
#define CYCONV_RUN_LOOPS_H

#include <stddef.h>
#include <stdint.h>

#include "store_rules.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)\
    && defined(__GLIBC__)
#define RN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RN_CLONES
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define RN_NO_MEMCPY __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define RN_NO_MEMCPY
#endif

#define RN_LOOPS(T, SUFFIX)                                                   \
/* A plane of rows x cols values at src (rows srs apart) copied into dst   \
 * with rows ds apart, zeros after each row up to the next and after the   \
 * last up to dst[S]; and each value added to its running sum, sums[r *    \
 * cols + q] (no overlap).  One call a plane: LeNet's rows are 26 values.  \
 * Not a memcpy and a second loop (GCC's loop distribution: a call a row). */ \
RN_CLONES RN_NO_MEMCPY static void rn_copy_plane_summing_##SUFFIX(           \
    const T* restrict src, ptrdiff_t srs, ptrdiff_t rows, ptrdiff_t cols,     \
    T* restrict dst, ptrdiff_t ds, ptrdiff_t S, T* restrict sums)             \
{                                                                             \
    for (ptrdiff_t r = 0; r < rows; r++) {                                    \
        const T* s = src + r * srs;                                           \
        T* d = dst + r * ds;                                                  \
        T* t = sums + r * cols;                                               \
        for (ptrdiff_t q = 0; q < cols; q++) {                                \
            T v = s[q];                                                       \
            d[q] = v;                                                         \
            t[q] = t[q] + v;                                                  \
        }                                                                     \
        ptrdiff_t end = r + 1 < rows ? ds : S - r * ds;                       \
        for (ptrdiff_t q = cols; q < end; q++) d[q] = 0;                      \
    }                                                                         \
}                                                                             \
                                                                              \
/* The wide forward pass's store: rows x cols values at src (rows srs     \
 * apart) to dst (rows end to end), each plus b if has_bias (CD_ADD_BIAS)  \
 * then max(v, 0) as np.maximum if relu (CD_RELU): selections the compiler  \
 * turns into blends, where the .pyx loop branched on each value (float64  \
 * LeNet first layer's forward pass: 0.33-0.47 ms by where the branch     \
 * fell, Zen 4; now 0.24). */                                                \
RN_CLONES RN_NO_MEMCPY static void rn_store_plane_##SUFFIX(                   \
    const T* restrict src, ptrdiff_t srs, ptrdiff_t rows, ptrdiff_t cols,     \
    T* restrict dst, T b, int has_bias, int relu)                             \
{                                                                             \
    for (ptrdiff_t r = 0; r < rows; r++) {                                    \
        const T* s = src + r * srs;                                           \
        T* d = dst + r * cols;                                                \
        if (has_bias && relu)                                                 \
            for (ptrdiff_t q = 0; q < cols; q++) {                            \
                T v = CD_ADD_BIAS(s[q], b);                                   \
                d[q] = CD_RELU(v);                                            \
            }                                                                 \
        else if (has_bias)                                                    \
            for (ptrdiff_t q = 0; q < cols; q++)                              \
                d[q] = CD_ADD_BIAS(s[q], b);                                  \
        else if (relu)                                                        \
            for (ptrdiff_t q = 0; q < cols; q++)                              \
                d[q] = CD_RELU(s[q]);                                         \
        else                                                                  \
            for (ptrdiff_t q = 0; q < cols; q++) d[q] = s[q];                 \
    }                                                                         \
}                                                                             \
                                                                              \
/* p[i] = CD_ADD_BIAS(p[i], b), i < n, in place. */                        \
RN_CLONES static void rn_add_bias_##SUFFIX(T* p, ptrdiff_t n, T b)           \
{                                                                             \
    for (ptrdiff_t i = 0; i < n; i++) p[i] = CD_ADD_BIAS(p[i], b);            \
}                                                                             \
                                                                              \
/* Whether every p[i], i < n, is finite: v * 0 is a zero for finite v and  \
 * NaN otherwise; the comparisons or-ed as integers, which vectorise (a     \
 * float sum would need reassociating). */                                  \
RN_CLONES static int rn_all_finite_##SUFFIX(const T* p, ptrdiff_t n)         \
{                                                                             \
    int bad = 0;                                                              \
    for (ptrdiff_t i = 0; i < n; i++)                                         \
        bad |= p[i] * (T)0 != (T)0;                                           \
    return !bad;                                                              \
}

RN_LOOPS(float, f32)
RN_LOOPS(double, f64)

/* A plane's pooling indices from its windows' codes (2 i + j, pool_tiles.h):
 * each window's top-left flat index plus i * W + j.  The row by a mask,
 * not a multiply (64-bit products have no SSE2 or AVX2 instruction): the
 * baseline loop was a third of max_pool2d(return_indices=True) on LeNet's
 * 26x26 planes. */
RN_CLONES static void rn_indices_of_codes(
    const uint8_t* restrict codes, const int64_t* restrict corners,
    int64_t* restrict indices, int64_t W, ptrdiff_t n)
{
    for (ptrdiff_t k = 0; k < n; k++) {
        int64_t code = codes[k];
        indices[k] = corners[k] + (-(code >> 1) & W) + (code & 1);
    }
}

#endif /* CYCONV_RUN_LOOPS_H */
