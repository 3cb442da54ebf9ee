/* The store of a convolution followed by ReLU and 2x2 max pooling with
 * stride 2: from one filter's wide output (conv_direct.h's layout: rows of
 * Wp positions, the first Wout of each the plane's), the pooled plane and
 * its one-byte codes (pool_tiles.h's), without writing the convolution's
 * output anywhere.  One variant per instruction set, as in the two headers
 * it builds on:
 *   PT_ISA_AVX512 / PT_ISA_AVX2  vectors of windows, pool_tiles.h's steps
 *   PT_ISA_PORTABLE              plain C, pool_tiles.h's scalar rows
 *
 * Each value is first what the convolution's own store writes, v + bias
 * (no addition without a bias) then np.maximum(., 0): NaN kept, -0.0 and
 * everything not above 0 made +0.0; then the windows are pooled by
 * pool_tiles.h's rules on those values.  An addition and selections only,
 * so every variant gives the bits of the three layers run one by one.
 */
#ifndef CYCONV_CONV_POOL_H
#define CYCONV_CONV_POOL_H

/* Only some of the two headers' kernels serve here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "conv_direct.h"
#include "pool_tiles.h"
#pragma GCC diagnostic pop

#define CP_SCALAR(T, SUFFIX)                                                 \
/* Rows 2r and 2r + 1 of the wide output, whole windows only: their first    \
 * 2 cols values biased and rectified in place, then pooled. */              \
static inline void cp_rows_portable_##SUFFIX(T* wide, ptrdiff_t Wp, T bias,  \
                                             int has_bias, T* out,           \
                                             uint8_t* codes, ptrdiff_t rows, \
                                             ptrdiff_t cols)                 \
{                                                                            \
    for (ptrdiff_t r = 0; r < rows; r++) {                                   \
        T* up = wide + 2 * r * Wp;                                           \
        for (ptrdiff_t q = 0; q < 2 * cols; q++) {                           \
            /* a NaN value stays its own NaN with a NaN bias too */          \
            T u = has_bias && up[q] == up[q] ? up[q] + bias : up[q];         \
            T l = has_bias && up[Wp + q] == up[Wp + q] ? up[Wp + q] + bias : up[Wp + q]; \
            up[q] = CD_RELU(u);                                              \
            up[Wp + q] = CD_RELU(l);                                         \
        }                                                                    \
        pt_forward_row_portable_##SUFFIX(up, up + Wp, out + r * cols,        \
                                         codes + r * cols, 0, cols);         \
    }                                                                        \
}

CP_SCALAR(float, f32)
CP_SCALAR(double, f64)

#if PT_X86
/* ---- AVX-512F: pt_forward_row_avx512's loop, each load biased and
 * rectified (masked-off lanes hold zeros and are never stored) ---- */
#define CP_AVX512(T, SUFFIX, V, VEC, MASK, PS)                               \
__attribute__((target("avx512f"), always_inline))                            \
static inline VEC cp_relu_##SUFFIX(VEC v, VEC bias, int has_bias)            \
{                                                                            \
    /* A NaN v stays v's NaN even with a NaN bias, as in the convolution's \
     * own store: x86 adds return their first operand's NaN, and which     \
     * operand the compiler puts first is its choice. */                   \
    if (has_bias) v = _mm512_mask_mov_##PS(_mm512_add_##PS(v, bias),         \
        _mm512_cmp_##PS##_mask(v, v, _CMP_UNORD_Q), v);                      \
    /* v > 0 or unordered: kept; else +0.0 */                                \
    return _mm512_maskz_mov_##PS(                                            \
        _mm512_cmp_##PS##_mask(v, _mm512_setzero_##PS(), _CMP_NLE_UQ), v);   \
}                                                                            \
                                                                             \
__attribute__((target("avx512f")))                                           \
static void cp_rows_avx512_##SUFFIX(const T* wide, ptrdiff_t Wp, T b,        \
                                    int has_bias, T* out, uint8_t* codes,    \
                                    ptrdiff_t rows, ptrdiff_t cols)          \
{                                                                            \
    const VEC bias = _mm512_set1_##PS(b);                                    \
    for (ptrdiff_t r = 0; r < rows; r++) {                                   \
        const T* up = wide + 2 * r * Wp;                                     \
        const T* lo = up + Wp;                                               \
        T* row_out = out + r * cols;                                         \
        uint8_t* row_codes = codes + r * cols;                               \
        for (ptrdiff_t c = 0; c < cols; c += V) {                            \
            ptrdiff_t left = cols - c < V ? cols - c : V;                    \
            MASK m = (MASK)((1u << left) - 1u);                              \
            MASK m0 = (MASK)((1u << (2 * left < V ? 2 * left : V)) - 1u);    \
            MASK m1 = (MASK)((1u << (2 * left > V ? 2 * left - V : 0)) - 1u); \
            const T* u = up + 2 * c;                                         \
            const T* l = lo + 2 * c;                                         \
            VEC o;                                                           \
            __m512i code;                                                    \
            pt_forward_step_##SUFFIX(                                        \
                cp_relu_##SUFFIX(_mm512_maskz_loadu_##PS(m0, u), bias, has_bias), \
                cp_relu_##SUFFIX(_mm512_maskz_loadu_##PS(m1, u + V), bias, has_bias), \
                cp_relu_##SUFFIX(_mm512_maskz_loadu_##PS(m0, l), bias, has_bias), \
                cp_relu_##SUFFIX(_mm512_maskz_loadu_##PS(m1, l + V), bias, has_bias), \
                &o, &code);                                                  \
            if (left == V) {                                                 \
                _mm512_storeu_##PS(row_out + c, o);                          \
                PT_STORE_ALL_CODES_##SUFFIX(row_codes + c, code);            \
            } else {                                                         \
                _mm512_mask_storeu_##PS(row_out + c, m, o);                  \
                PT_STORE_CODES_##SUFFIX(row_codes + c, m, code);             \
            }                                                                \
        }                                                                    \
    }                                                                        \
}

CP_AVX512(float, f32, 16, __m512, __mmask16, ps)
CP_AVX512(double, f64, 8, __m512d, __mmask8, pd)

/* ---- AVX2: pt_forward_rows_avx2's loop, each load biased and rectified
 * (a row's last vector overlaps the one before; rows narrower than a
 * vector as pt_forward_rows_avx2's, whole vectors but at the end) ---- */
#define CP_AVX2(T, SUFFIX, V, VEC, PS)                                       \
__attribute__((target("avx2"), always_inline))                               \
static inline VEC cp2_relu_##SUFFIX(VEC v, VEC bias, int has_bias)           \
{                                                                            \
    /* A NaN v stays v's NaN with a NaN bias too (see cp_relu above) */    \
    if (has_bias) v = _mm256_blendv_##PS(_mm256_add_##PS(v, bias), v,        \
                                         _mm256_cmp_##PS(v, v, _CMP_UNORD_Q)); \
    return _mm256_and_##PS(v, _mm256_cmp_##PS(v, _mm256_setzero_##PS(), _CMP_NLE_UQ)); \
}                                                                            \
                                                                             \
__attribute__((target("avx2"), always_inline))                               \
static inline void cp2_at_##SUFFIX(const T* up, const T* lo, VEC bias,       \
                                   int has_bias, T* out, uint8_t* codes,     \
                                   ptrdiff_t c)                              \
{                                                                            \
    VEC o;                                                                   \
    uint64_t code;                                                           \
    pt2_forward_step_##SUFFIX(                                               \
        cp2_relu_##SUFFIX(_mm256_loadu_##PS(up + 2 * c), bias, has_bias),    \
        cp2_relu_##SUFFIX(_mm256_loadu_##PS(up + 2 * c + V), bias, has_bias), \
        cp2_relu_##SUFFIX(_mm256_loadu_##PS(lo + 2 * c), bias, has_bias),    \
        cp2_relu_##SUFFIX(_mm256_loadu_##PS(lo + 2 * c + V), bias, has_bias), \
        &o, &code);                                                          \
    _mm256_storeu_##PS(out + c, o);                                          \
    memcpy(codes + c, &code, V);                                             \
}                                                                            \
                                                                             \
__attribute__((target("avx2")))                                              \
static void cp_rows_avx2_##SUFFIX(const T* wide, ptrdiff_t Wp, T b,          \
                                  int has_bias, T* out, uint8_t* codes,      \
                                  ptrdiff_t rows, ptrdiff_t cols)            \
{                                                                            \
    const VEC bias = _mm256_set1_##PS(b);                                    \
    __m256i m = PT2_LANES_##SUFFIX(cols);                                    \
    __m256i m0 = PT2_LANES_##SUFFIX(2 * cols), m1 = PT2_LANES_##SUFFIX(2 * cols - V); \
    for (ptrdiff_t r = 0; r < rows; r++) {                                   \
        const T* up = wide + 2 * r * Wp;                                     \
        const T* lo = up + Wp;                                               \
        T* row_out = out + r * cols;                                         \
        uint8_t* row_codes = codes + r * cols;                               \
        if (cols >= V) {                                                     \
            for (ptrdiff_t c = 0; c + V <= cols; c += V)                     \
                cp2_at_##SUFFIX(up, lo, bias, has_bias, row_out, row_codes, c); \
            if (cols % V != 0)                                               \
                cp2_at_##SUFFIX(up, lo, bias, has_bias, row_out, row_codes, cols - V); \
        } else {                                                             \
            /* see pt2_narrow_load: the rows this call reads and writes */   \
            int whole = lo + 2 * V <= wide + 2 * rows * Wp && r * cols + V <= rows * cols; \
            VEC a0, a1, b0, b1, o;                                           \
            uint64_t code;                                                   \
            pt2_narrow_load_##SUFFIX(up, lo, whole, m0, m1, &a0, &a1, &b0, &b1); \
            pt2_forward_step_##SUFFIX(cp2_relu_##SUFFIX(a0, bias, has_bias), \
                                      cp2_relu_##SUFFIX(a1, bias, has_bias), \
                                      cp2_relu_##SUFFIX(b0, bias, has_bias), \
                                      cp2_relu_##SUFFIX(b1, bias, has_bias), &o, &code); \
            pt2_narrow_store_##SUFFIX(row_out, row_codes, o, code, cols, whole, m); \
        }                                                                    \
    }                                                                        \
}

CP_AVX2(float, f32, 8, __m256, ps)
CP_AVX2(double, f64, 4, __m256d, pd)
#endif /* PT_X86 */

/* The pooled plane (rows x cols) and its codes from one filter's wide
 * output; wide is scratch (the portable variant rectifies it in place). */
#define CP_DISPATCH(T, SUFFIX)                                               \
static void cp_rows_##SUFFIX(int isa, T* wide, ptrdiff_t Wp, T bias,         \
                             int has_bias, T* out, uint8_t* codes,           \
                             ptrdiff_t rows, ptrdiff_t cols)                 \
{                                                                            \
    PT_VECTOR(isa, cp_rows, SUFFIX,                                          \
              (wide, Wp, bias, has_bias, out, codes, rows, cols),            \
              cp_rows_portable_##SUFFIX(wide, Wp, bias, has_bias, out, codes, rows, cols)); \
}

CP_DISPATCH(float, f32)
CP_DISPATCH(double, f64)

/* One sample's filters 0..nf-1 (nf <= the forward tile's filters): the wide
 * output of the 2 * rows rows the windows cover into wide (ofs values a
 * filter), then each filter's pooled plane and codes (rows x cols each,
 * planes end to end); bias NULL for none. */
#define CP_BLOCK(T, SUFFIX)                                                  \
static void cp_block_##SUFFIX(int isa, const T* xp, ptrdiff_t xcs, int C,    \
                              const ptrdiff_t* offs, int nt, const T* w,     \
                              ptrdiff_t wfs, int nf, const T* bias, T* wide, \
                              ptrdiff_t ofs, ptrdiff_t Wp, T* out,           \
                              uint8_t* codes, ptrdiff_t rows,                \
                              ptrdiff_t cols)                                \
{                                                                            \
    cd_forward_rows_##SUFFIX(isa, xp, xcs, C, offs, nt, w, wfs, nf, wide,    \
                             ofs, 2 * rows * Wp);                            \
    for (int k = 0; k < nf; k++)                                             \
        cp_rows_##SUFFIX(isa, wide + k * ofs, Wp, bias == NULL ? (T)0 : bias[k], \
                         bias != NULL, out + k * rows * cols,                \
                         codes + k * rows * cols, rows, cols);               \
}

CP_BLOCK(float, f32)
CP_BLOCK(double, f64)

#endif /* CYCONV_CONV_POOL_H */
