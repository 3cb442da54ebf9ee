/* 2x2 max pooling with stride 2 (no padding, no dilation), forward and
 * backward over one (H, W) plane, one variant per instruction set, chosen
 * at run time (the package is built without -march=native):
 *   PT_ISA_AVX512    AVX-512F: 16 floats / 8 doubles a vector, masked
 *                    loads and stores for the end of a row
 *   PT_ISA_PORTABLE  plain C: any processor, and the reference the vector
 *                    variant is tested against (bitwise)
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
 * +0.0 elsewhere.  With ReLU's gradient folded in, the winner's value is then
 * multiplied by exactly 1 or 0, 1 where the pooled value (the winner's
 * input) is > 0, as relu_gradient does, so NaN and -0.0 come out alike.
 */
#ifndef CYCONV_POOL_TILES_H
#define CYCONV_POOL_TILES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PT_ISA_PORTABLE 0
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
    return pooled == NULL ? share : share * (pooled[c] > 0 ? (T)1 : (T)0);  \
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
}                                                                           \
                                                                            \
static inline void pt_backward_row_portable_##SUFFIX(                       \
    const T* g, const uint8_t* codes, const T* pooled, T* up, T* lo,        \
    ptrdiff_t c0, ptrdiff_t c1)                                             \
{                                                                           \
    for (ptrdiff_t c = c0; c < c1; c++) {                                   \
        T share = pt_share_##SUFFIX(g[c], pooled, c);                       \
        int code = codes[c];                                                \
        up[2 * c] = code == 0 ? share : (T)0;                               \
        up[2 * c + 1] = code == 1 ? share : (T)0;                           \
        lo[2 * c] = code == 2 ? share : (T)0;                               \
        lo[2 * c + 1] = code == 3 ? share : (T)0;                           \
    }                                                                       \
}

PT_SCALAR(float, f32)
PT_SCALAR(double, f64)

/* ---- AVX-512F: V windows a step ----
 *
 * A step takes the upper and lower input rows of V windows as two vectors
 * each, (u0, u1) and (l0, l1), and gives V outputs and codes; backward the
 * reverse.  Along one row pair the vectors are plain loads, the last step
 * of a row masked.  Planes of V/2 or V/4 windows a row (8x8 and 16x16
 * float32 planes: CIFAR's) would leave most lanes of a row's one step
 * idle, so there one step takes 2 or 4 row pairs, which lie end to end
 * when W = 2 Wout: two loads, or four and 128-bit lane shuffles. */

#if PT_X86
#define PT_AVX512(T, SUFFIX, V, VEC, MASK, PS, EPI, X4)                        \
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
    MASK right = (MASK)((below & rl) | (~below & ru));                         \
    *out = _mm512_mask_blend_##PS(below, u, l);                               \
    *code = _mm512_or_si512(PT_MASKZ_MOV_##SUFFIX(right, PT_SET1_##SUFFIX(1)), \
                            PT_MASKZ_MOV_##SUFFIX(below, PT_SET1_##SUFFIX(2))); \
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
static inline VEC pt_shares_##SUFFIX(VEC g, const T* pooled, MASK m)          \
{                                                                             \
    const VEC zero = _mm512_setzero_##PS();                                   \
    VEC share = _mm512_add_##PS(zero, g);                                     \
    if (pooled == NULL) return share;                                         \
    MASK positive = _mm512_cmp_##PS##_mask(_mm512_maskz_loadu_##PS(m, pooled), \
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
__attribute__((target("avx512f"), always_inline))                            \
static inline void pt_backward_row_avx512_##SUFFIX(const T* g, const uint8_t* codes, \
                                            const T* pooled, T* up, T* lo,    \
                                            ptrdiff_t n)                      \
{                                                                             \
    for (ptrdiff_t c = 0; c < n; c += V) {                                    \
        ptrdiff_t left = n - c < V ? n - c : V;                               \
        MASK m = (MASK)((1u << left) - 1u);                                   \
        MASK m0 = (MASK)((1u << (2 * left < V ? 2 * left : V)) - 1u);         \
        MASK m1 = (MASK)((1u << (2 * left > V ? 2 * left - V : 0)) - 1u);     \
        VEC share = pt_shares_##SUFFIX(_mm512_maskz_loadu_##PS(m, g + c),      \
                                       pooled == NULL ? NULL : pooled + c, m); \
        VEC u0, u1, l0, l1;                                                   \
        /* 16 (8) bytes of codes, past the row's end too: the caller leaves \
         * 15 readable bytes after the last (a masked byte load needs       \
         * AVX-512BW); lanes past the row are not stored. */                \
        pt_backward_step_##SUFFIX(share, codes + c, &u0, &u1, &l0, &l1);      \
        if (left == V) {                                                      \
            _mm512_storeu_##PS(up + 2 * c, u0);                               \
            _mm512_storeu_##PS(up + 2 * c + V, u1);                           \
            _mm512_storeu_##PS(lo + 2 * c, l0);                               \
            _mm512_storeu_##PS(lo + 2 * c + V, l1);                           \
        } else {                                                              \
            _mm512_mask_storeu_##PS(up + 2 * c, m0, u0);                      \
            _mm512_mask_storeu_##PS(lo + 2 * c, m0, l0);                      \
            if (m1 != 0) {                                                    \
                _mm512_mask_storeu_##PS(up + 2 * c + V, m1, u1);              \
                _mm512_mask_storeu_##PS(lo + 2 * c + V, m1, l1);              \
            }                                                                 \
        }                                                                     \
    }                                                                         \
}                                                                             \
                                                                              \
/* pairs row pairs of a plane with W = 2 Wout = V (2 rows a step) or V/2   \
 * (4 rows), pairs a multiple of the step's. */                            \
__attribute__((target("avx512f")))                                           \
static void pt_forward_packed_avx512_##SUFFIX(const T* x, ptrdiff_t W,        \
                                              T* out, uint8_t* codes,         \
                                              ptrdiff_t pairs)                \
{                                                                             \
    ptrdiff_t step = W == V ? 2 : 4;                                          \
    for (ptrdiff_t r = 0; r < pairs; r += step, x += 2 * step * W,            \
         out += V, codes += V) {                                              \
        VEC o, u0, u1, l0, l1;                                                \
        __m512i code;                                                         \
        if (W == V) { /* rows: up0 lo0 up1 lo1 */                            \
            u0 = _mm512_loadu_##PS(x);                                        \
            l0 = _mm512_loadu_##PS(x + V);                                    \
            u1 = _mm512_loadu_##PS(x + 2 * V);                                \
            l1 = _mm512_loadu_##PS(x + 3 * V);                                \
        } else { /* each vector one pair: up_q (lanes 0, 1) lo_q (2, 3) */  \
            VEC z0 = _mm512_loadu_##PS(x), z1 = _mm512_loadu_##PS(x + V);     \
            VEC z2 = _mm512_loadu_##PS(x + 2 * V), z3 = _mm512_loadu_##PS(x + 3 * V); \
            u0 = X4(z0, z1, 0x44);                                            \
            u1 = X4(z2, z3, 0x44);                                            \
            l0 = X4(z0, z1, 0xEE);                                            \
            l1 = X4(z2, z3, 0xEE);                                            \
        }                                                                     \
        pt_forward_step_##SUFFIX(u0, u1, l0, l1, &o, &code);                  \
        _mm512_storeu_##PS(out, o);                                           \
        PT_STORE_ALL_CODES_##SUFFIX(codes, code);                             \
    }                                                                         \
}                                                                             \
                                                                              \
__attribute__((target("avx512f")))                                           \
static void pt_backward_packed_avx512_##SUFFIX(const T* g, const uint8_t* codes, \
                                               const T* pooled, T* gin,       \
                                               ptrdiff_t W, ptrdiff_t pairs)  \
{                                                                             \
    ptrdiff_t step = W == V ? 2 : 4;                                          \
    for (ptrdiff_t r = 0; r < pairs; r += step, gin += 2 * step * W) {        \
        ptrdiff_t k = r * (W / 2);                                            \
        VEC share = pt_shares_##SUFFIX(_mm512_loadu_##PS(g + k),               \
                                       pooled == NULL ? NULL : pooled + k,    \
                                       (MASK)-1);                             \
        VEC u0, u1, l0, l1;                                                   \
        pt_backward_step_##SUFFIX(share, codes + k, &u0, &u1, &l0, &l1);      \
        if (W == V) {                                                         \
            _mm512_storeu_##PS(gin, u0);                                      \
            _mm512_storeu_##PS(gin + V, l0);                                  \
            _mm512_storeu_##PS(gin + 2 * V, u1);                              \
            _mm512_storeu_##PS(gin + 3 * V, l1);                              \
        } else {                                                              \
            _mm512_storeu_##PS(gin, X4(u0, l0, 0x44));                        \
            _mm512_storeu_##PS(gin + V, X4(u0, l0, 0xEE));                    \
            _mm512_storeu_##PS(gin + 2 * V, X4(u1, l1, 0x44));                \
            _mm512_storeu_##PS(gin + 3 * V, X4(u1, l1, 0xEE));                \
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
}                                                                             \
                                                                              \
__attribute__((target("avx512f")))                                           \
static void pt_backward_rows_avx512_##SUFFIX(                                \
    const T* g, const uint8_t* codes, const T* pooled, T* grad_in,            \
    ptrdiff_t W, ptrdiff_t Wout, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t cols)  \
{                                                                             \
    for (ptrdiff_t r = r0; r < r1; r++) {                                     \
        T* up = grad_in + 2 * r * W;                                          \
        const T* row_pooled = pooled == NULL ? NULL : pooled + r * Wout;      \
        pt_backward_row_avx512_##SUFFIX(g + r * Wout, codes + r * Wout,       \
                                        row_pooled, up, up + W, cols);        \
        pt_backward_last_column_##SUFFIX(g + r * Wout, codes + r * Wout,      \
                                         row_pooled, up, W, Wout, cols);      \
    }                                                                         \
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
#define PT_LOAD_CODES_f64(p) _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i*)(p)))
#define PT_CMPEQ_f64(v, k) _mm512_cmpeq_epi64_mask(v, _mm512_set1_epi64(k))
#define PT_STORE_CODES_f64(p, m, v) _mm512_mask_cvtepi64_storeu_epi8(p, m, v)

PT_AVX512(float, f32, 16, __m512, __mmask16, ps, PT_F32, _mm512_shuffle_f32x4)
PT_AVX512(double, f64, 8, __m512d, __mmask8, pd, PT_F64, _mm512_shuffle_f64x2)
#endif /* PT_X86 */

/* ---- whole planes ---- */

/* Backward planes with fewer whole windows a row than this, and not
 * packed, zero the plane and scatter (measured: rows of 5 windows, 11x11
 * planes, 30% faster that way; rows of 13, 26x26, 25% slower). */
#define PT_SCATTER_BELOW 12

#define PT_PLANES(T, SUFFIX, V)                                               \
/* Each window's share to its winner in a zeroed plane.  Inlined into its  \
 * two calls, pooled NULL or not, so that the test leaves the loop. */     \
static inline __attribute__((always_inline)) void pt_scatter_##SUFFIX(     \
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
                share = share * (pooled[r * Wout + c] > 0 ? (T)1 : (T)0);   \
            window[2 * c + offset[row_codes[c] & 3]] = share;               \
        }                                                                   \
    }                                                                       \
}                                                                           \
                                                                            \
/* How many row pairs the packed AVX-512 loops take: those of a plane with \
 * W = 2 Wout = V or V/2, in whole steps; 0 for others. */                 \
static inline ptrdiff_t pt_packed_pairs_##SUFFIX(int isa, ptrdiff_t W,      \
                                                 ptrdiff_t Wout,            \
                                                 ptrdiff_t rows)            \
{                                                                           \
    if (isa != PT_ISA_AVX512 || W != 2 * Wout) return 0;                    \
    if (W == V) return rows - rows % 2;                                     \
    if (2 * W == V) return rows - rows % 4;                                 \
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
        PT_IF_AVX512(isa, pt_forward_packed_avx512_##SUFFIX(x, W, out, codes, packed), \
                     (void)0);                                              \
    PT_IF_AVX512(isa,                                                       \
        pt_forward_rows_avx512_##SUFFIX(x, W, out, codes, Wout, packed, rows, cols), \
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
    if (packed == 0 && cols < PT_SCATTER_BELOW) {                           \
        /* Short rows: see PT_SCATTER_BELOW. */                             \
        memset(grad_in, 0, (size_t)(H * W) * sizeof(T));                    \
        if (pooled == NULL)                                                 \
            pt_scatter_##SUFFIX(g, codes, NULL, grad_in, W, Hout, Wout);    \
        else                                                                \
            pt_scatter_##SUFFIX(g, codes, pooled, grad_in, W, Hout, Wout);  \
        return;                                                             \
    }                                                                       \
    if (packed > 0)                                                         \
        PT_IF_AVX512(isa, pt_backward_packed_avx512_##SUFFIX(g, codes, pooled, \
                                                             grad_in, W, packed), \
                     (void)0);                                              \
    PT_IF_AVX512(isa,                                                       \
        pt_backward_rows_avx512_##SUFFIX(g, codes, pooled, grad_in, W, Wout, \
                                         packed, rows, cols),               \
        for (ptrdiff_t r = packed; r < rows; r++) {                         \
            T* up = grad_in + 2 * r * W;                                    \
            const T* row_pooled = pooled == NULL ? NULL : pooled + r * Wout; \
            pt_backward_row_portable_##SUFFIX(g + r * Wout, codes + r * Wout, \
                                              row_pooled, up, up + W, 0, cols); \
            pt_backward_last_column_##SUFFIX(g + r * Wout, codes + r * Wout, \
                                             row_pooled, up, W, Wout, cols); \
        });                                                                 \
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

#if PT_X86
#define PT_IF_AVX512(isa, vector, portable) \
    do { if ((isa) == PT_ISA_AVX512) vector; else portable; } while (0)
#else
#define PT_IF_AVX512(isa, vector, portable) do { (void)(isa); portable; } while (0)
#endif

PT_PLANES(float, f32, 16)
PT_PLANES(double, f64, 8)

#endif /* CYCONV_POOL_TILES_H */
