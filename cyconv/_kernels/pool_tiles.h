/* 2x2 max pooling with stride 2 (no padding, no dilation), forward and
 * backward over one (H, W) plane, one variant per instruction set, chosen
 * at run time (the package is built without -march=native):
 *   PT_ISA_AVX512    AVX-512F: 16 floats / 8 doubles a vector (backward
 *                    row by row runs AVX2's loop, measured faster)
 *   PT_ISA_AVX2      AVX2: 8 floats / 4 doubles
 *   PT_ISA_PORTABLE  plain C, any processor; slower than the kernels with
 *                    int64 indices, which _pool.py runs where neither
 *                    vector variant does, so it only runs when asked for
 * Intrinsics live in a header because each variant needs GCC's target
 * attribute, which Cython cannot emit; the threading over planes is in
 * _pool.pyx.
 *
 * Which element of its window won is kept as a one-byte code, 2*i + j for
 * row i and column j of the window (0 1 / 2 3), not as an 8-byte flat
 * index: a byte a window to write and read back, where an index took 8.
 *
 * The rules are those of every max pooling kernel in _pool.pyx: a window's
 * maximum is its first largest element in row-major order, NaN larger than
 * everything and the first NaN winning, -0.0 equal to +0.0; the output is
 * that element's bits.  "b beats a" is then
 *     !(a >= b) && a == a
 * (b larger, or b NaN and a not): one compare that is true when unordered,
 * one that a is a number.  Only selections, no arithmetic, so the variants
 * agree bit for bit.
 *
 * Backward writes every element of the input gradient once (or, on
 * narrow planes, zeroes the plane and then writes the winners): the
 * window's gradient plus +0.0 where the code points (the sum a zeroed
 * plane gets from the scatter of the other kernels: -0.0 becomes +0.0),
 * +0.0 elsewhere.  With ReLU's gradient folded in, the winner's value is
 * then multiplied by exactly 1 or 0, 1 where the pooled value (the
 * winner's input) is > 0, as relu_gradient does, so NaN and -0.0 come out
 * alike.
 */
#ifndef CYCONV_POOL_TILES_H
#define CYCONV_POOL_TILES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "store_rules.h"  /* CD_RELU_FACTOR */

#if defined(__GNUC__)
#define PT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PT_ALWAYS_INLINE inline
#endif

#define PT_ISA_PORTABLE 0
#define PT_ISA_AVX2 1
#define PT_ISA_AVX512 2

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define PT_X86 1
#include <immintrin.h>
#else
#define PT_X86 0
#endif

static int pt_detect_isa(void)
{
#if PT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return PT_ISA_AVX512;
    if (__builtin_cpu_supports("avx2")) return PT_ISA_AVX2;
#endif
    return PT_ISA_PORTABLE;
}

/* ---- the window rules on scalars, for every variant's edges ---- */

#define PT_SCALAR(T, SUFFIX)                                                  \
/* The winner's code among the window's rows h0..h1-1, columns w0..w1-1    \
 * (clipped by the plane's edge), counted in the whole 2x2 window. */       \
static inline int pt_window_##SUFFIX(const T* x, ptrdiff_t W, ptrdiff_t h0, \
                                     ptrdiff_t h1, ptrdiff_t w0,            \
                                     ptrdiff_t w1)                          \
{                                                                           \
    T best = x[h0 * W + w0];                                                \
    int code = 0;                                                           \
    for (ptrdiff_t h = h0; h < h1; h++)                                     \
        for (ptrdiff_t w = w0; w < w1; w++) {                               \
            T v = x[h * W + w];                                             \
            int beats = !(best >= v) && best == best;                       \
            best = beats ? v : best;                                        \
            code = beats ? (int)(2 * (h - h0) + (w - w0)) : code;           \
        }                                                                   \
    return code;                                                            \
}                                                                           \
                                                                            \
/* Forward over whole windows of output row r, columns c0..c1-1. */         \
static inline void pt_forward_row_portable_##SUFFIX(                        \
    const T* up, const T* lo, T* out, uint8_t* codes, ptrdiff_t c0,         \
    ptrdiff_t c1)                                                           \
{                                                                           \
    for (ptrdiff_t c = c0; c < c1; c++) {                                   \
        T a = up[2 * c], b = up[2 * c + 1], d0 = lo[2 * c],                 \
          d1 = lo[2 * c + 1];                                               \
        int ru = !(a >= b) && a == a;                                       \
        T u = ru ? b : a;                                                   \
        int rl = !(d0 >= d1) && d0 == d0;                                   \
        T l = rl ? d1 : d0;                                                 \
        int below = !(u >= l) && u == u;                                    \
        out[c] = below ? l : u;                                             \
        codes[c] = (uint8_t)(below ? 2 + rl : ru);                          \
    }                                                                       \
}                                                                           \
                                                                            \
/* The gradient a window's winner gets. */                                  \
static inline T pt_share_##SUFFIX(T g, const T* pooled, ptrdiff_t c)        \
{                                                                           \
    T share = (T)0 + g;                                                     \
    return pooled == NULL ? share : share * CD_RELU_FACTOR(T, pooled[c]);   \
}                                                                           \
                                                                            \
/* The last column of a row pair of the input gradient when W is odd: no   \
 * window covers it, or under ceil_mode cut-short ones (the row's last). */ \
static inline void pt_backward_last_column_##SUFFIX(                        \
    const T* g, const uint8_t* codes, const T* pooled, T* up, ptrdiff_t W,  \
    ptrdiff_t Wout, ptrdiff_t cols)                                         \
{                                                                           \
    if (2 * cols == W) return;                                              \
    up[W - 1] = (T)0;                                                       \
    up[2 * W - 1] = (T)0;                                                   \
    if (cols < Wout)                                                        \
        up[(codes[cols] / 2) * W + W - 1] = pt_share_##SUFFIX(g[cols], pooled, cols); \
}

PT_SCALAR(float, f32)
PT_SCALAR(double, f64)

/* ---- AVX-512F: V windows a step ----
 *
 * A step takes the upper and lower input rows of V windows as two vectors
 * each, (u0, u1) and (l0, l1), and gives V outputs and codes; backward the
 * reverse.  Forward along one row pair the vectors are plain loads, the
 * last step of a row masked.  Planes of V/2 or V/4 windows a row (8x8 and
 * 16x16 float32 planes: CIFAR's) would leave most lanes of a row's one
 * step idle, so there one step takes 2 or 4 row pairs, which lie end to
 * end when W = 2 Wout (PT_PACKED, below, both ways). */

#if PT_X86
#define PT_AVX512(T, SUFFIX, V, VEC, MASK, PS, EPI)                            \
__attribute__((target("avx512f"), always_inline))                            \
static inline void pt_forward_step_##SUFFIX(VEC u0, VEC u1, VEC l0, VEC l1,   \
                                            VEC* out, __m512i* code)          \
{                                                                             \
    const __m512i even = EPI##_EVEN, odd = EPI##_ODD;                         \
    VEC a = _mm512_permutex2var_##PS(u0, even, u1);                           \
    VEC b = _mm512_permutex2var_##PS(u0, odd, u1);                            \
    VEC d0 = _mm512_permutex2var_##PS(l0, even, l1);                          \
    VEC d1 = _mm512_permutex2var_##PS(l0, odd, l1);                           \
    MASK ru = _mm512_cmp_##PS##_mask(a, b, _CMP_NGE_UQ)                        \
              & _mm512_cmp_##PS##_mask(a, a, _CMP_ORD_Q);                     \
    MASK rl = _mm512_cmp_##PS##_mask(d0, d1, _CMP_NGE_UQ)                      \
              & _mm512_cmp_##PS##_mask(d0, d0, _CMP_ORD_Q);                   \
    VEC u = _mm512_mask_blend_##PS(ru, a, b);                                 \
    VEC l = _mm512_mask_blend_##PS(rl, d0, d1);                               \
    MASK below = _mm512_cmp_##PS##_mask(u, l, _CMP_NGE_UQ)                     \
                 & _mm512_cmp_##PS##_mask(u, u, _CMP_ORD_Q);                  \
    *out = _mm512_mask_blend_##PS(below, u, l);                               \
    /* 2 i + j by blends on vectors: mask arithmetic went through general \
     * registers (GCC 12), the step's slowest part on Zen 4 */                \
    *code = PT_MASK_BLEND_##SUFFIX(below,                                      \
        PT_MASKZ_MOV_##SUFFIX(ru, PT_SET1_##SUFFIX(1)),                       \
        PT_MASK_BLEND_##SUFFIX(rl, PT_SET1_##SUFFIX(2), PT_SET1_##SUFFIX(3)));  \
}                                                                             \
                                                                              \
/* share: the V windows' gradients; codes: V readable bytes. */              \
__attribute__((target("avx512f"), always_inline))                            \
static inline void pt_backward_step_##SUFFIX(VEC share, const uint8_t* codes, \
                                             VEC* u0, VEC* u1, VEC* l0,       \
                                             VEC* l1)                         \
{                                                                             \
    const __m512i first = EPI##_FIRST, second = EPI##_SECOND;                 \
    __m512i code = PT_LOAD_CODES_##SUFFIX(codes);                             \
    VEC v0 = _mm512_maskz_mov_##PS(PT_CMPEQ_##SUFFIX(code, 0), share);         \
    VEC v1 = _mm512_maskz_mov_##PS(PT_CMPEQ_##SUFFIX(code, 1), share);         \
    VEC v2 = _mm512_maskz_mov_##PS(PT_CMPEQ_##SUFFIX(code, 2), share);         \
    VEC v3 = _mm512_maskz_mov_##PS(PT_CMPEQ_##SUFFIX(code, 3), share);         \
    *u0 = _mm512_permutex2var_##PS(v0, first, v1);                            \
    *u1 = _mm512_permutex2var_##PS(v0, second, v1);                           \
    *l0 = _mm512_permutex2var_##PS(v2, first, v3);                            \
    *l1 = _mm512_permutex2var_##PS(v2, second, v3);                           \
}                                                                             \
                                                                              \
/* The windows' shares: gradient + 0, times ReLU's 1 or 0 where pooled. */   \
__attribute__((target("avx512f"), always_inline))                            \
static inline VEC pt_shares_##SUFFIX(VEC g, const T* pooled)                  \
{                                                                             \
    const VEC zero = _mm512_setzero_##PS();                                   \
    VEC share = _mm512_add_##PS(zero, g);                                     \
    if (pooled == NULL) return share;                                         \
    MASK positive = _mm512_cmp_##PS##_mask(_mm512_loadu_##PS(pooled),          \
                                           zero, _CMP_GT_OQ);                 \
    return _mm512_mul_##PS(share, _mm512_mask_blend_##PS(                     \
        positive, zero, _mm512_set1_##PS((T)1)));                             \
}                                                                             \
                                                                              \
__attribute__((target("avx512f"), always_inline))                            \
static inline void pt_forward_row_avx512_##SUFFIX(const T* up, const T* lo, T* out,  \
                                           uint8_t* codes, ptrdiff_t n)       \
{                                                                             \
    for (ptrdiff_t c = 0; c < n; c += V) {                                    \
        ptrdiff_t left = n - c < V ? n - c : V;                               \
        MASK m = (MASK)((1u << left) - 1u);                                   \
        MASK m0 = (MASK)((1u << (2 * left < V ? 2 * left : V)) - 1u);         \
        MASK m1 = (MASK)((1u << (2 * left > V ? 2 * left - V : 0)) - 1u);     \
        VEC o;                                                                \
        __m512i code;                                                         \
        pt_forward_step_##SUFFIX(_mm512_maskz_loadu_##PS(m0, up + 2 * c),     \
                                 _mm512_maskz_loadu_##PS(m1, up + 2 * c + V), \
                                 _mm512_maskz_loadu_##PS(m0, lo + 2 * c),     \
                                 _mm512_maskz_loadu_##PS(m1, lo + 2 * c + V), \
                                 &o, &code);                                  \
        if (left == V) {                                                      \
            _mm512_storeu_##PS(out + c, o);                                   \
            PT_STORE_ALL_CODES_##SUFFIX(codes + c, code);                     \
        } else {                                                              \
            _mm512_mask_storeu_##PS(out + c, m, o);                           \
            PT_STORE_CODES_##SUFFIX(codes + c, m, code);                      \
        }                                                                     \
    }                                                                         \
}                                                                             \
                                                                              \
/* Rows r0..r1-1 of whole windows, cols of them a row. */                  \
__attribute__((target("avx512f")))                                           \
static void pt_forward_rows_avx512_##SUFFIX(const T* x, ptrdiff_t W, T* out,  \
                                            uint8_t* codes, ptrdiff_t Wout,   \
                                            ptrdiff_t r0, ptrdiff_t r1,       \
                                            ptrdiff_t cols)                   \
{                                                                             \
    for (ptrdiff_t r = r0; r < r1; r++)                                       \
        pt_forward_row_avx512_##SUFFIX(x + 2 * r * W, x + (2 * r + 1) * W,    \
                                       out + r * Wout, codes + r * Wout, cols); \
}

#define PT_STORE_ALL_CODES_f32(p, v) _mm_storeu_si128((__m128i*)(p), _mm512_cvtepi32_epi8(v))
#define PT_STORE_ALL_CODES_f64(p, v) _mm_storel_epi64((__m128i*)(p), _mm512_cvtepi64_epi8(v))

/* float32: 16 lanes of 32 bits.  Lane k of (x0, x1) is k < 16 ? x0[k] : x1[k-16]. */
#define PT_F32_EVEN _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define PT_F32_ODD _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
/* Interleaving back: a0 b0 a1 b1 ... for the first half, then the second. */
#define PT_F32_FIRST _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define PT_F32_SECOND _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#define PT_SET1_f32(v) _mm512_set1_epi32(v)
#define PT_MASKZ_MOV_f32(m, v) _mm512_maskz_mov_epi32(m, v)
#define PT_MASK_BLEND_f32(m, a, b) _mm512_mask_blend_epi32(m, a, b)
#define PT_LOAD_CODES_f32(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(p)))
#define PT_CMPEQ_f32(v, k) _mm512_cmpeq_epi32_mask(v, _mm512_set1_epi32(k))
#define PT_STORE_CODES_f32(p, m, v) _mm512_mask_cvtepi32_storeu_epi8(p, m, v)

/* float64: 8 lanes of 64 bits. */
#define PT_F64_EVEN _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14)
#define PT_F64_ODD _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15)
#define PT_F64_FIRST _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11)
#define PT_F64_SECOND _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15)
#define PT_SET1_f64(v) _mm512_set1_epi64(v)
#define PT_MASKZ_MOV_f64(m, v) _mm512_maskz_mov_epi64(m, v)
#define PT_MASK_BLEND_f64(m, a, b) _mm512_mask_blend_epi64(m, a, b)
#define PT_LOAD_CODES_f64(p) _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i*)(p)))
#define PT_CMPEQ_f64(v, k) _mm512_cmpeq_epi64_mask(v, _mm512_set1_epi64(k))
#define PT_STORE_CODES_f64(p, m, v) _mm512_mask_cvtepi64_storeu_epi8(p, m, v)

PT_AVX512(float, f32, 16, __m512, __mmask16, ps, PT_F32)
PT_AVX512(double, f64, 8, __m512d, __mmask8, pd, PT_F64)

/* ---- AVX2: the same steps on 8 floats / 4 doubles ----
 *
 * No mask registers: compares give all-ones lanes, selects are blendv,
 * and codes leave through movemask and a table spreading 4 bits into 4
 * bytes (little-endian, as every x86). */

static const uint32_t pt_spread4[16] = {
    0x00000000, 0x00000001, 0x00000100, 0x00000101, 0x00010000, 0x00010001,
    0x00010100, 0x00010101, 0x01000000, 0x01000001, 0x01000100, 0x01000101,
    0x01010000, 0x01010001, 0x01010100, 0x01010101};

/* The bytes (bits of right) + 2 (bits of below), lane i in byte i. */
static inline uint64_t pt_code_bytes(int right, int below)
{
    uint64_t r = pt_spread4[right & 15] | (uint64_t)pt_spread4[(right >> 4) & 15] << 32;
    uint64_t b = pt_spread4[below & 15] | (uint64_t)pt_spread4[(below >> 4) & 15] << 32;
    return r | b << 1;
}

/* float32: 8 lanes. */
#define PT2_LANES_f32(k) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(k)), \
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define PT2_EVEN_f32(u0, u1) _mm256_castpd_ps(_mm256_permute4x64_pd(      \
    _mm256_castps_pd(_mm256_shuffle_ps(u0, u1, 0x88)), 0xD8))
#define PT2_ODD_f32(u0, u1) _mm256_castpd_ps(_mm256_permute4x64_pd(       \
    _mm256_castps_pd(_mm256_shuffle_ps(u0, u1, 0xDD)), 0xD8))
#define PT2_CODES_f32(p) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p)))
#define PT2_CMPEQ_f32(v, k) _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, _mm256_set1_epi32(k)))

/* float64: 4 lanes. */
#define PT2_LANES_f64(k) _mm256_cmpgt_epi64(_mm256_set1_epi64x(k),          \
                                            _mm256_setr_epi64x(0, 1, 2, 3))
#define PT2_EVEN_f64(u0, u1) _mm256_permute4x64_pd(_mm256_unpacklo_pd(u0, u1), 0xD8)
#define PT2_ODD_f64(u0, u1) _mm256_permute4x64_pd(_mm256_unpackhi_pd(u0, u1), 0xD8)
#define PT2_CODES_f64(p) _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(pt_load4(p)))
#define PT2_CMPEQ_f64(v, k) _mm256_castsi256_pd(_mm256_cmpeq_epi64(v, _mm256_set1_epi64x(k)))

static inline int pt_load4(const uint8_t* p)
{
    int v;
    memcpy(&v, p, 4);
    return v;
}

#define PT_AVX2(T, SUFFIX, V, VEC, PS)                                          \
__attribute__((target("avx2"), always_inline))                               \
static inline void pt2_forward_step_##SUFFIX(VEC u0, VEC u1, VEC l0, VEC l1,  \
                                             VEC* out, uint64_t* code)        \
{                                                                             \
    VEC a = PT2_EVEN_##SUFFIX(u0, u1), b = PT2_ODD_##SUFFIX(u0, u1);          \
    VEC d0 = PT2_EVEN_##SUFFIX(l0, l1), d1 = PT2_ODD_##SUFFIX(l0, l1);        \
    VEC ru = _mm256_and_##PS(_mm256_cmp_##PS(a, b, _CMP_NGE_UQ),              \
                             _mm256_cmp_##PS(a, a, _CMP_ORD_Q));              \
    VEC rl = _mm256_and_##PS(_mm256_cmp_##PS(d0, d1, _CMP_NGE_UQ),            \
                             _mm256_cmp_##PS(d0, d0, _CMP_ORD_Q));            \
    VEC u = _mm256_blendv_##PS(a, b, ru);                                     \
    VEC l = _mm256_blendv_##PS(d0, d1, rl);                                   \
    VEC below = _mm256_and_##PS(_mm256_cmp_##PS(u, l, _CMP_NGE_UQ),           \
                                _mm256_cmp_##PS(u, u, _CMP_ORD_Q));           \
    VEC right = _mm256_blendv_##PS(ru, rl, below);                            \
    *out = _mm256_blendv_##PS(u, l, below);                                   \
    *code = pt_code_bytes(_mm256_movemask_##PS(right), _mm256_movemask_##PS(below)); \
}                                                                             \
                                                                              \
__attribute__((target("avx2"), always_inline))                               \
static inline void pt2_backward_step_##SUFFIX(VEC share, const uint8_t* codes, \
                                              VEC* u0, VEC* u1, VEC* l0,      \
                                              VEC* l1)                        \
{                                                                             \
    __m256i code = PT2_CODES_##SUFFIX(codes);                                 \
    VEC v0 = _mm256_and_##PS(share, PT2_CMPEQ_##SUFFIX(code, 0));             \
    VEC v1 = _mm256_and_##PS(share, PT2_CMPEQ_##SUFFIX(code, 1));             \
    VEC v2 = _mm256_and_##PS(share, PT2_CMPEQ_##SUFFIX(code, 2));             \
    VEC v3 = _mm256_and_##PS(share, PT2_CMPEQ_##SUFFIX(code, 3));             \
    VEC lo01 = _mm256_unpacklo_##PS(v0, v1), hi01 = _mm256_unpackhi_##PS(v0, v1); \
    VEC lo23 = _mm256_unpacklo_##PS(v2, v3), hi23 = _mm256_unpackhi_##PS(v2, v3); \
    *u0 = _mm256_permute2f128_##PS(lo01, hi01, 0x20);                         \
    *u1 = _mm256_permute2f128_##PS(lo01, hi01, 0x31);                         \
    *l0 = _mm256_permute2f128_##PS(lo23, hi23, 0x20);                         \
    *l1 = _mm256_permute2f128_##PS(lo23, hi23, 0x31);                         \
}                                                                             \
                                                                              \
__attribute__((target("avx2"), always_inline))                               \
static inline VEC pt2_shares_##SUFFIX(VEC g, const T* pooled)                 \
{                                                                             \
    const VEC zero = _mm256_setzero_##PS();                                   \
    VEC share = _mm256_add_##PS(zero, g);                                     \
    if (pooled == NULL) return share;                                         \
    VEC positive = _mm256_cmp_##PS(_mm256_loadu_##PS(pooled), zero, _CMP_GT_OQ); \
    return _mm256_mul_##PS(share, _mm256_and_##PS(positive, _mm256_set1_##PS((T)1))); \
}                                                                             \
                                                                              \
/* A row of fewer windows than a vector holds: its two input rows' first   \
 * 2V values, loaded whole where ``whole`` says the lanes past them are    \
 * readable, else through masks; and its windows stored likewise, where    \
 * ``whole`` says the lanes past them are overwritten later.  AMD's cores  \
 * store through a mask slowly, and a copy of ``cols`` code bytes became a \
 * byte loop: whole vectors made LeNet's second pooling (64x16x11x11,      \
 * float32) forward pass 105 -> 80 us on a Zen 3. */                    \
__attribute__((target("avx2"), always_inline))                               \
static inline void pt2_narrow_load_##SUFFIX(const T* up, const T* lo, int whole, \
                                            __m256i m0, __m256i m1, VEC* a0,  \
                                            VEC* a1, VEC* b0, VEC* b1)        \
{                                                                             \
    if (whole) {                                                              \
        *a0 = _mm256_loadu_##PS(up); *a1 = _mm256_loadu_##PS(up + V);        \
        *b0 = _mm256_loadu_##PS(lo); *b1 = _mm256_loadu_##PS(lo + V);        \
    } else {                                                                  \
        *a0 = _mm256_maskload_##PS(up, m0); *a1 = _mm256_maskload_##PS(up + V, m1); \
        *b0 = _mm256_maskload_##PS(lo, m0); *b1 = _mm256_maskload_##PS(lo + V, m1); \
    }                                                                         \
}                                                                             \
                                                                              \
__attribute__((target("avx2"), always_inline))                               \
static inline void pt2_narrow_store_##SUFFIX(T* out, uint8_t* codes, VEC o,   \
                                             uint64_t code, ptrdiff_t cols,   \
                                             int whole, __m256i m)            \
{                                                                             \
    if (whole) {                                                              \
        _mm256_storeu_##PS(out, o);                                           \
        memcpy(codes, &code, V);                                              \
    } else {                                                                  \
        _mm256_maskstore_##PS(out, m, o);                                     \
        memcpy(codes, &code, (size_t)cols);                                   \
    }                                                                         \
}                                                                             \
                                                                              \
/* Rows r0..r1-1 of whole windows, cols of them a row, in whole vectors:  \
 * the last one of a row overlaps the one before, computing some windows   \
 * twice (masked loads and stores measured slow on Zen 4 for every row's   \
 * end; scalars for the rest of a row were slower still); rows narrower    \
 * than a vector take pt2_narrow_load and pt2_narrow_store. */             \
__attribute__((target("avx2"), always_inline))                               \
static inline void pt2_forward_at_##SUFFIX(const T* up, const T* lo, T* out,  \
                                           uint8_t* codes, ptrdiff_t c)       \
{                                                                             \
    VEC o;                                                                    \
    uint64_t code;                                                            \
    pt2_forward_step_##SUFFIX(_mm256_loadu_##PS(up + 2 * c),                  \
                              _mm256_loadu_##PS(up + 2 * c + V),              \
                              _mm256_loadu_##PS(lo + 2 * c),                  \
                              _mm256_loadu_##PS(lo + 2 * c + V), &o, &code);  \
    _mm256_storeu_##PS(out + c, o);                                           \
    memcpy(codes + c, &code, V);                                              \
}                                                                             \
                                                                              \
__attribute__((target("avx2")))                                              \
static void pt_forward_rows_avx2_##SUFFIX(const T* x, ptrdiff_t W, T* out,    \
                                          uint8_t* codes, ptrdiff_t Wout,     \
                                          ptrdiff_t r0, ptrdiff_t r1,         \
                                          ptrdiff_t cols)                     \
{                                                                             \
    __m256i m = PT2_LANES_##SUFFIX(cols);                                     \
    __m256i m0 = PT2_LANES_##SUFFIX(2 * cols), m1 = PT2_LANES_##SUFFIX(2 * cols - V); \
    for (ptrdiff_t r = r0; r < r1; r++) {                                     \
        const T* up = x + 2 * r * W;                                          \
        const T* lo = up + W;                                                 \
        T* row_out = out + r * Wout;                                          \
        uint8_t* row_codes = codes + r * Wout;                                \
        if (cols >= V) {                                                      \
            for (ptrdiff_t c = 0; c + V <= cols; c += V)                      \
                pt2_forward_at_##SUFFIX(up, lo, row_out, row_codes, c);       \
            if (cols % V != 0)                                                \
                pt2_forward_at_##SUFFIX(up, lo, row_out, row_codes, cols - V); \
        } else {                                                              \
            /* whole vectors where the lanes past the row stay in rows    \
             * this call reads and writes (later rows and the cut-short    \
             * windows overwrite what they wrote) */                       \
            int whole = lo + 2 * V <= x + 2 * r1 * W && r * Wout + V <= r1 * Wout; \
            VEC a0, a1, b0, b1, o;                                            \
            uint64_t code;                                                    \
            pt2_narrow_load_##SUFFIX(up, lo, whole, m0, m1, &a0, &a1, &b0, &b1); \
            pt2_forward_step_##SUFFIX(a0, a1, b0, b1, &o, &code);             \
            pt2_narrow_store_##SUFFIX(row_out, row_codes, o, code, cols, whole, m); \
        }                                                                     \
    }                                                                         \
}                                                                             \
                                                                              \
__attribute__((target("avx2"), always_inline))                               \
static inline void pt2_backward_at_##SUFFIX(const T* g, const uint8_t* codes,  \
                                            const T* pooled, T* up, T* lo,    \
                                            ptrdiff_t c)                      \
{                                                                             \
    VEC share = pt2_shares_##SUFFIX(_mm256_loadu_##PS(g + c),                 \
                                    pooled == NULL ? NULL : pooled + c);      \
    VEC u0, u1, l0, l1;                                                       \
    pt2_backward_step_##SUFFIX(share, codes + c, &u0, &u1, &l0, &l1);         \
    _mm256_storeu_##PS(up + 2 * c, u0);                                       \
    _mm256_storeu_##PS(up + 2 * c + V, u1);                                   \
    _mm256_storeu_##PS(lo + 2 * c, l0);                                       \
    _mm256_storeu_##PS(lo + 2 * c + V, l1);                                   \
}                                                                             \
                                                                              \
__attribute__((target("avx2")))                                              \
static void pt_backward_rows_avx2_##SUFFIX(                                  \
    const T* g, const uint8_t* codes, const T* pooled, T* grad_in,            \
    ptrdiff_t W, ptrdiff_t Wout, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t cols)  \
{                                                                             \
    for (ptrdiff_t r = r0; r < r1; r++) {                                     \
        T* up = grad_in + 2 * r * W;                                          \
        T* lo = up + W;                                                       \
        const T* row_g = g + r * Wout;                                        \
        const uint8_t* row_codes = codes + r * Wout;                          \
        const T* row_pooled = pooled == NULL ? NULL : pooled + r * Wout;      \
        /* cols >= V: narrower rows are scattered (pt_backward_##SUFFIX) */ \
        for (ptrdiff_t c = 0; c + V <= cols; c += V)                          \
            pt2_backward_at_##SUFFIX(row_g, row_codes, row_pooled, up, lo, c); \
        if (cols % V != 0)                                                    \
            pt2_backward_at_##SUFFIX(row_g, row_codes, row_pooled, up, lo, cols - V); \
        pt_backward_last_column_##SUFFIX(row_g, row_codes, row_pooled, up, W, Wout, cols); \
    }                                                                         \
}

PT_AVX2(float, f32, 8, __m256, ps)
PT_AVX2(double, f64, 4, __m256d, pd)

/* ---- planes of 2 or 4 row pairs a step, either variant ----
 *
 * pairs row pairs of a plane with W = 2 Wout = the vector's lanes (2 rows
 * a step: the vectors are the rows) or half of them (4 rows: each vector
 * one row pair, upper half then lower, regrouped by 128-bit halves with
 * LO (first halves of a and b) and HI (second halves)); pairs a multiple
 * of the step. */
#define PT_PACKED(ISA, TARGET, T, SUFFIX, V, VEC, CODE_T, PFX, PS, STEP)        \
__attribute__((target(TARGET)))                                              \
static void pt_forward_packed_##ISA##_##SUFFIX(const T* x, ptrdiff_t W,       \
                                               T* out, uint8_t* codes,        \
                                               ptrdiff_t pairs)               \
{                                                                             \
    ptrdiff_t step = W == V ? 2 : 4;                                          \
    for (ptrdiff_t r = 0; r < pairs; r += step, x += 2 * step * W,            \
         out += V, codes += V) {                                              \
        VEC z0 = PFX##_loadu_##PS(x), z1 = PFX##_loadu_##PS(x + V);           \
        VEC z2 = PFX##_loadu_##PS(x + 2 * V), z3 = PFX##_loadu_##PS(x + 3 * V); \
        VEC o;                                                                \
        CODE_T code;                                                          \
        if (W == V) /* rows: up0 lo0 up1 lo1 */                              \
            STEP##_forward_step_##SUFFIX(z0, z2, z1, z3, &o, &code);          \
        else                                                                  \
            STEP##_forward_step_##SUFFIX(STEP##_LO_##SUFFIX(z0, z1),          \
                                         STEP##_LO_##SUFFIX(z2, z3),          \
                                         STEP##_HI_##SUFFIX(z0, z1),          \
                                         STEP##_HI_##SUFFIX(z2, z3), &o, &code); \
        PFX##_storeu_##PS(out, o);                                            \
        STEP##_STORE_CODES_##SUFFIX(codes, code);                             \
    }                                                                         \
}                                                                             \
                                                                              \
__attribute__((target(TARGET)))                                              \
static void pt_backward_packed_##ISA##_##SUFFIX(const T* g, const uint8_t* codes, \
                                                const T* pooled, T* gin,      \
                                                ptrdiff_t W, ptrdiff_t pairs) \
{                                                                             \
    ptrdiff_t step = W == V ? 2 : 4;                                          \
    for (ptrdiff_t r = 0; r < pairs; r += step, gin += 2 * step * W) {        \
        ptrdiff_t k = r * (W / 2);                                            \
        VEC share = STEP##_shares_##SUFFIX(PFX##_loadu_##PS(g + k),           \
                                           pooled == NULL ? NULL : pooled + k); \
        VEC u0, u1, l0, l1;                                                   \
        STEP##_backward_step_##SUFFIX(share, codes + k, &u0, &u1, &l0, &l1);  \
        if (W == V) {                                                         \
            PFX##_storeu_##PS(gin, u0);                                       \
            PFX##_storeu_##PS(gin + V, l0);                                   \
            PFX##_storeu_##PS(gin + 2 * V, u1);                               \
            PFX##_storeu_##PS(gin + 3 * V, l1);                               \
        } else {                                                              \
            PFX##_storeu_##PS(gin, STEP##_LO_##SUFFIX(u0, l0));               \
            PFX##_storeu_##PS(gin + V, STEP##_HI_##SUFFIX(u0, l0));           \
            PFX##_storeu_##PS(gin + 2 * V, STEP##_LO_##SUFFIX(u1, l1));       \
            PFX##_storeu_##PS(gin + 3 * V, STEP##_HI_##SUFFIX(u1, l1));       \
        }                                                                     \
    }                                                                         \
}

#define pt_LO_f32(a, b) _mm512_shuffle_f32x4(a, b, 0x44)
#define pt_HI_f32(a, b) _mm512_shuffle_f32x4(a, b, 0xEE)
#define pt_LO_f64(a, b) _mm512_shuffle_f64x2(a, b, 0x44)
#define pt_HI_f64(a, b) _mm512_shuffle_f64x2(a, b, 0xEE)
#define pt_STORE_CODES_f32(p, v) PT_STORE_ALL_CODES_f32(p, v)
#define pt_STORE_CODES_f64(p, v) PT_STORE_ALL_CODES_f64(p, v)
#define pt2_LO_f32(a, b) _mm256_permute2f128_ps(a, b, 0x20)
#define pt2_HI_f32(a, b) _mm256_permute2f128_ps(a, b, 0x31)
#define pt2_LO_f64(a, b) _mm256_permute2f128_pd(a, b, 0x20)
#define pt2_HI_f64(a, b) _mm256_permute2f128_pd(a, b, 0x31)
#define pt2_STORE_CODES_f32(p, v) memcpy(p, &(v), 8)
#define pt2_STORE_CODES_f64(p, v) memcpy(p, &(v), 4)

PT_PACKED(avx512, "avx512f", float, f32, 16, __m512, __m512i, _mm512, ps, pt)
PT_PACKED(avx512, "avx512f", double, f64, 8, __m512d, __m512i, _mm512, pd, pt)
PT_PACKED(avx2, "avx2", float, f32, 8, __m256, uint64_t, _mm256, ps, pt2)
PT_PACKED(avx2, "avx2", double, f64, 4, __m256d, uint64_t, _mm256, pd, pt2)
#endif /* PT_X86 */

/* ---- whole planes ---- */

/* Windows in an AVX2 vector. */
#define PT_AVX2_LANES(T) ((ptrdiff_t)(32 / sizeof(T)))

#define PT_PLANES(T, SUFFIX, V)                                               \
/* Each window's share to its winner in a zeroed plane.  Inlined into its  \
 * two calls, pooled NULL or not, so that the test leaves the loop. */     \
static PT_ALWAYS_INLINE void pt_scatter_##SUFFIX(                          \
    const T* g, const uint8_t* codes, const T* pooled, T* grad_in,          \
    ptrdiff_t W, ptrdiff_t Hout, ptrdiff_t Wout)                            \
{                                                                           \
    const ptrdiff_t offset[4] = {0, 1, W, W + 1};                           \
    for (ptrdiff_t r = 0; r < Hout; r++) {                                  \
        T* window = grad_in + 2 * r * W;                                    \
        const T* row_g = g + r * Wout;                                      \
        const uint8_t* row_codes = codes + r * Wout;                        \
        for (ptrdiff_t c = 0; c < Wout; c++) {                              \
            T share = (T)0 + row_g[c];                                      \
            if (pooled != NULL)                                             \
                share = share * CD_RELU_FACTOR(T, pooled[r * Wout + c]);     \
            window[2 * c + offset[row_codes[c] & 3]] = share;               \
        }                                                                   \
    }                                                                       \
}                                                                           \
                                                                            \
/* How many row pairs the packed vector loops take: those of a plane with \
 * W = 2 Wout = the vector's lanes or half of them, in whole steps; 0 for  \
 * others (V: AVX-512's lanes). */                                          \
static inline ptrdiff_t pt_packed_pairs_##SUFFIX(int isa, ptrdiff_t W,      \
                                                 ptrdiff_t Wout,            \
                                                 ptrdiff_t rows)            \
{                                                                           \
    ptrdiff_t lanes = isa == PT_ISA_AVX512 ? V : isa == PT_ISA_AVX2 ? V / 2 : 0; \
    if (lanes == 0 || W != 2 * Wout) return 0;                              \
    if (W == lanes) return rows - rows % 2;                                 \
    if (2 * W == lanes) return rows - rows % 4;                             \
    return 0;                                                               \
}                                                                           \
                                                                            \
/* out and codes (Hout, Wout); under ceil_mode the last row and column of  \
 * windows may be cut short by the plane's edge. */                         \
static void pt_forward_##SUFFIX(int isa, const T* x, ptrdiff_t H,           \
                                ptrdiff_t W, T* out, uint8_t* codes,        \
                                ptrdiff_t Hout, ptrdiff_t Wout)             \
{                                                                           \
    ptrdiff_t rows = H / 2 < Hout ? H / 2 : Hout;                           \
    ptrdiff_t cols = W / 2 < Wout ? W / 2 : Wout;                           \
    ptrdiff_t packed = pt_packed_pairs_##SUFFIX(isa, W, Wout, rows);        \
    if (packed > 0)                                                         \
        PT_VECTOR(isa, pt_forward_packed, SUFFIX, (x, W, out, codes, packed), \
                  (void)0);                                                 \
    PT_VECTOR(isa, pt_forward_rows, SUFFIX,                                 \
        (x, W, out, codes, Wout, packed, rows, cols),                       \
        for (ptrdiff_t r = packed; r < rows; r++)                           \
            pt_forward_row_portable_##SUFFIX(x + 2 * r * W, x + (2 * r + 1) * W, \
                                             out + r * Wout, codes + r * Wout, 0, cols)); \
    /* Cut-short windows: the last column's, then the last row's. */        \
    for (ptrdiff_t r = 0; r < Hout; r++) {                                  \
        for (ptrdiff_t c = r < rows ? cols : 0; c < Wout; c++) {            \
            ptrdiff_t h1 = 2 * r + 2 < H ? 2 * r + 2 : H;                   \
            ptrdiff_t w1 = 2 * c + 2 < W ? 2 * c + 2 : W;                   \
            int code = pt_window_##SUFFIX(x, W, 2 * r, h1, 2 * c, w1);      \
            out[r * Wout + c] = x[(2 * r + code / 2) * W + 2 * c + code % 2]; \
            codes[r * Wout + c] = (uint8_t)code;                            \
        }                                                                   \
    }                                                                       \
}                                                                           \
                                                                            \
/* grad_in (H, W), every element written; pooled NULL for the plain       \
 * gradient, else the forward's output, for ReLU's gradient. */             \
static void pt_backward_##SUFFIX(int isa, const T* g, const uint8_t* codes, \
                                 const T* pooled, T* grad_in, ptrdiff_t H,  \
                                 ptrdiff_t W, ptrdiff_t Hout,               \
                                 ptrdiff_t Wout)                            \
{                                                                           \
    ptrdiff_t rows = H / 2 < Hout ? H / 2 : Hout;                           \
    ptrdiff_t cols = W / 2 < Wout ? W / 2 : Wout;                           \
    ptrdiff_t packed = pt_packed_pairs_##SUFFIX(isa, W, Wout, rows);        \
    if (packed == 0 && (isa == PT_ISA_PORTABLE || cols < PT_AVX2_LANES(T))) { \
        /* Rows narrower than an AVX2 vector (11x11 float32 planes: 30%    \
         * faster than vector rows with masked ends), and the portable     \
         * variant (7 times faster than its scalar rows, whose selects     \
         * became branches): zero the plane, then write the winners. */  \
        memset(grad_in, 0, (size_t)(H * W) * sizeof(T));                    \
        if (pooled == NULL)                                                 \
            pt_scatter_##SUFFIX(g, codes, NULL, grad_in, W, Hout, Wout);    \
        else                                                                \
            pt_scatter_##SUFFIX(g, codes, pooled, grad_in, W, Hout, Wout);  \
        return;                                                             \
    }                                                                       \
    if (packed > 0)                                                         \
        PT_VECTOR(isa, pt_backward_packed, SUFFIX,                          \
                  (g, codes, pooled, grad_in, W, packed), (void)0);         \
    if (cols < PT_AVX2_LANES(T)) {                                          \
        /* Row pairs a packed plane leaves (W = 2 Wout, fewer than a step). */ \
        ptrdiff_t at = packed * Wout;                                       \
        memset(grad_in + 2 * packed * W, 0, (size_t)(2 * (rows - packed) * W) * sizeof(T)); \
        pt_scatter_##SUFFIX(g + at, codes + at, pooled == NULL ? NULL : pooled + at, \
                            grad_in + 2 * packed * W, W, rows - packed, Wout); \
    } else {                                                                \
        /* Row by row, AVX2's loop measured 10-20% faster than AVX-512's   \
         * (26x26 and 32x32 planes, Zen 4), so it serves both. */          \
        PT_AVX2_UP(isa, pt_backward_rows, SUFFIX,                           \
            (g, codes, pooled, grad_in, W, Wout, packed, rows, cols), (void)0); \
    }                                                                       \
    /* A last row no window covers, or cut-short windows. */                \
    if (2 * rows < H) {                                                     \
        T* last = grad_in + (H - 1) * W;                                    \
        memset(last, 0, (size_t)W * sizeof(T));                             \
        if (rows < Hout) {                                                  \
            const T* row_pooled = pooled == NULL ? NULL : pooled + rows * Wout; \
            for (ptrdiff_t c = 0; c < Wout; c++) {                          \
                T share = pt_share_##SUFFIX(g[rows * Wout + c], row_pooled, c); \
                last[2 * c + codes[rows * Wout + c] % 2] = share;           \
            }                                                               \
        }                                                                   \
    }                                                                       \
}

/* name_avx512_SUFFIX args, name_avx2_SUFFIX args or the portable code. */
#if PT_X86
#define PT_VECTOR(isa, name, SUFFIX, args, portable) do {                      \
    if ((isa) == PT_ISA_AVX512) name##_avx512_##SUFFIX args;                   \
    else if ((isa) == PT_ISA_AVX2) name##_avx2_##SUFFIX args;                  \
    else { portable; } } while (0)
/* name_avx2_SUFFIX args for AVX2 and up, or the portable code. */
#define PT_AVX2_UP(isa, name, SUFFIX, args, portable) do {                     \
    if ((isa) != PT_ISA_PORTABLE) name##_avx2_##SUFFIX args;                   \
    else { portable; } } while (0)
#else
#define PT_VECTOR(isa, name, SUFFIX, args, portable) do { (void)(isa); portable; } while (0)
#define PT_AVX2_UP PT_VECTOR
#endif

PT_PLANES(float, f32, 16)
PT_PLANES(double, f64, 8)

#endif /* CYCONV_POOL_TILES_H */
