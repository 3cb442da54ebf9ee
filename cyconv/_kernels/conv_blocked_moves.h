/* Moving tiles between layouts around the filter-blocked microkernels
 * (conv_blocked.h): position-major tiles stored to NCHW planes with their
 * bias and ReLU (or pooled as they are stored), the weight
 * gradient's position-major copy of the output gradient (and, on AVX-512,
 * of a 2x2 pooling's gradient, expanded), and the padded copies of both
 * families.  Portable loops, AVX-512 and AVX2 versions; exact, so every
 * version writes the portable loops' bits.
 */
#ifndef CYCONV_CONV_BLOCKED_MOVES_H
#define CYCONV_CONV_BLOCKED_MOVES_H

#include <stdint.h>
#include <string.h>

#include "conv_direct.h"

/* out[k * P + q] = buf[q * ldo + k] (+ bias[k]) (then max(., 0) as
 * np.maximum: NaN kept, -0.0 to +0.0) for k < nf, q < P; bias may be NULL. */
#define CB_STORE_PLANES(T, SUFFIX) \
static void cb_store_planes_portable_##SUFFIX(const T* buf, ptrdiff_t ldo, ptrdiff_t P, \
                                              int nf, T* out, const T* bias, int relu) \
{ \
    for (int k = 0; k < nf; k++) { \
        T* o = out + k * P; \
        for (ptrdiff_t q = 0; q < P; q++) { \
            T v = buf[q * ldo + k]; \
            if (bias) v = CD_ADD_BIAS(v, bias[k]); \
            o[q] = v; \
        } \
        /* ReLU over the stored row, a contiguous loop (in the strided one \
         * above it took 5 ms of a 12 ms forward pass, Zen 4, AVX2 variant) */ \
        if (relu) \
            for (ptrdiff_t q = 0; q < P; q++) o[q] = CD_RELU(o[q]); \
    } \
}
/* One sample's output gradient for one block of filters, position-major,
 * over positions q0 <= q < q1: gt[q * B + l] = g[l * P + q] for l < nf, 0
 * for nf <= l < B (the block's padding filters); and each value added to
 * its position's running sum over samples, sums[q * B + l], unless sums
 * is NULL (the bias gradient's per-pixel partial sums, in the order of
 * samples, as conv2d_backward_bias adds them).  Returns whether every
 * value copied is finite. */
#define CB_POSITION_MAJOR(T, B, SUFFIX) \
static int cb_position_major_portable_##SUFFIX(const T* g, ptrdiff_t P, int nf, \
    ptrdiff_t q0, ptrdiff_t q1, T* gt, T* sums) \
{ \
    T zero[B] = {0}; /* v * 0 is 0 for finite v, else NaN; a chain per lane */ \
    for (ptrdiff_t q = q0; q < q1; q++) \
        for (int l = 0; l < B; l++) { \
            T v = l < nf ? g[l * P + q] : 0; \
            gt[q * B + l] = v; \
            zero[l] = zero[l] + v * 0; \
            if (sums) sums[q * B + l] = sums[q * B + l] + v; \
        } \
    for (int l = 1; l < B; l++) zero[0] = zero[0] + zero[l]; \
    return zero[0] == 0; \
}
/* plane[0:S] = the rows x cols values at src (rows srs values apart)
 * placed with their top-left corner at (top, left) of a grid of rows of wp
 * values (wp >= left + cols), zeros everywhere else: the padded planes of
 * both families, written in one pass. */
#define CB_PAD_PLANE(T, SUFFIX) \
static void cb_pad_plane_portable_##SUFFIX(const T* src, ptrdiff_t srs, int rows, int cols, \
    T* plane, ptrdiff_t top, ptrdiff_t left, ptrdiff_t wp, ptrdiff_t S) \
{ \
    ptrdiff_t o = 0; \
    for (int r = 0; r < rows; r++) { \
        ptrdiff_t start = (top + r) * wp + left; \
        for (; o < start; o++) plane[o] = 0; \
        for (int q = 0; q < cols; q++) plane[o++] = src[r * srs + q]; \
    } \
    for (; o < S; o++) plane[o] = 0; \
}
/* windows a row pair of the portable pooled store takes at a time */
#define CB_POOL_CHUNK 32
/* The 2x2 max pooling (stride 2) of the planes cb_store_planes would
 * write from a tile of Wo-pixel rows, without writing them: for k < nf and
 * whole windows r < Hp, c < Wp (2 Hp, 2 Wp at most the tile's rows and
 * width), out[k * Hp * Wp + r * Wp + c] and codes[...] are the winner's
 * value and code (2 i + j, row i and column j of the window) by
 * pool_tiles.h's rules: the first largest in row-major order, the first
 * NaN winning.  Only selections after the store's own bias and ReLU: the
 * same bits as storing, then pooling, in every variant.  Where both the
 * sum and its bias are NaN the sum's NaN wins, as in cb_store_planes; the
 * compiler may put an addition's operands either way round (GCC 13 put
 * the bias first here, its load folded), so the sum's NaN is taken
 * explicitly (v + v: v, quietened). */
#define CB_STORE_POOLED(T, SUFFIX) \
static void cb_store_pooled_portable_##SUFFIX(const T* buf, ptrdiff_t ldo, ptrdiff_t Wo, \
    ptrdiff_t Hp, ptrdiff_t Wp, int nf, T* out, uint8_t* codes, const T* bias, int relu) \
{ \
    T up[2 * CB_POOL_CHUNK], lo[2 * CB_POOL_CHUNK]; \
    for (int k = 0; k < nf; k++) \
        for (ptrdiff_t r = 0; r < Hp; r++) \
            for (ptrdiff_t c0 = 0; c0 < Wp; c0 += CB_POOL_CHUNK) { \
                /* a window row pair's values, biased, then rectified in \
                 * a contiguous pass (see cb_store_planes), then pooled */ \
                ptrdiff_t cn = Wp - c0 < CB_POOL_CHUNK ? Wp - c0 : CB_POOL_CHUNK; \
                const T* at = buf + (2 * r * Wo + 2 * c0) * ldo + k; \
                for (ptrdiff_t q = 0; q < 2 * cn; q++) { \
                    T u = at[q * ldo], l = at[(Wo + q) * ldo]; \
                    up[q] = bias ? CD_ADD_BIAS(u, bias[k]) : u; \
                    lo[q] = bias ? CD_ADD_BIAS(l, bias[k]) : l; \
                } \
                if (relu) \
                    for (ptrdiff_t q = 0; q < 2 * cn; q++) { \
                        up[q] = CD_RELU(up[q]); \
                        lo[q] = CD_RELU(lo[q]); \
                    } \
                for (ptrdiff_t c = 0; c < cn; c++) { \
                    T v[4] = {up[2 * c], up[2 * c + 1], lo[2 * c], lo[2 * c + 1]}; \
                    int ru = !(v[0] >= v[1]) && v[0] == v[0]; \
                    T u = ru ? v[1] : v[0]; \
                    int rl = !(v[2] >= v[3]) && v[2] == v[2]; \
                    T l = rl ? v[3] : v[2]; \
                    int below = !(u >= l) && u == u; \
                    out[(k * Hp + r) * Wp + c0 + c] = below ? l : u; \
                    codes[(k * Hp + r) * Wp + c0 + c] = (uint8_t)(below ? 2 + rl : ru); \
                } \
            } \
}
/* cb_position_major of output rows r0 <= r < r1 (r0 even) of the output
 * gradient that a 2x2 max pooling's backward pass, ReLU's gradient
 * included, makes from the pooling's output gradient g (nf planes of Hp x
 * Wp, Pp = Hp * Wp apart), its codes (laid out alike; no byte past them is
 * read) and its output pooled, for windows tiling the Ho x Wo
 * plane (Hp = Ho / 2, Wp = Wo / 2, rounded down): the values pool_tiles.h
 * writes, (0 + g) times 1 or 0 as the pooled value is > 0 or not at each
 * window's winner, +0 elsewhere and in a last row or column no window
 * covers, made here without writing the full gradient anywhere.  gt and
 * sums start at row r0; returns whether every value is finite. */
#define CB_POSITION_MAJOR_POOLED(T, B, SUFFIX) \
static int cb_position_major_pooled_portable_##SUFFIX(const T* g, const uint8_t* codes, \
    const T* pooled, ptrdiff_t Pp, int nf, ptrdiff_t Wo, ptrdiff_t Hp, ptrdiff_t Wp, \
    ptrdiff_t r0, ptrdiff_t r1, T* gt, T* sums) \
{ \
    T zero[B] = {0}; \
    for (ptrdiff_t r = r0; r < r1; r++) \
        for (ptrdiff_t c = 0; c < Wo; c++) \
            for (int l = 0; l < B; l++) { \
                ptrdiff_t i = r / 2, j = c / 2, at = l * Pp + i * Wp + j; \
                T v = 0; \
                if (l < nf && i < Hp && j < Wp && codes[at] == 2 * (r % 2) + c % 2) { \
                    v = ((T)0 + g[at]) * CD_RELU_FACTOR(T, pooled[at]); \
                    zero[l] = zero[l] + v * 0; \
                } \
                ptrdiff_t q = ((r - r0) * Wo + c) * B + l; \
                gt[q] = v; \
                if (sums) sums[q] = sums[q] + v; \
            } \
    for (int l = 1; l < B; l++) zero[0] = zero[0] + zero[l]; \
    return zero[0] == 0; \
}
CB_STORE_PLANES(float, f32)
CB_STORE_PLANES(double, f64)
CB_STORE_POOLED(float, f32)
CB_STORE_POOLED(double, f64)
CB_POSITION_MAJOR_POOLED(float, 16, f32)
CB_POSITION_MAJOR_POOLED(double, 8, f64)
CB_POSITION_MAJOR(float, 16, f32)
CB_POSITION_MAJOR(double, 8, f64)
CB_PAD_PLANE(float, f32)
CB_PAD_PLANE(double, f64)
#undef CB_PAD_PLANE
#undef CB_STORE_POOLED
#undef CB_POSITION_MAJOR_POOLED
#undef CB_STORE_PLANES
#undef CB_POSITION_MAJOR

#if CD_X86
#define CB_AVX512 __attribute__((target("avx512f")))

/* r[i][j] -> r[j][i] */
static inline __attribute__((always_inline)) CB_AVX512 void cb_transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
        t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xdd);
        t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
        r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
        r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
        r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xdd);
    }
}

static inline __attribute__((always_inline)) CB_AVX512 void cb_transpose8(__m512d r[8])
{
    __m512d t[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        r[4 * i] = _mm512_shuffle_f64x2(t[4 * i], t[4 * i + 2], 0x88);
        r[4 * i + 1] = _mm512_shuffle_f64x2(t[4 * i + 1], t[4 * i + 3], 0x88);
        r[4 * i + 2] = _mm512_shuffle_f64x2(t[4 * i], t[4 * i + 2], 0xdd);
        r[4 * i + 3] = _mm512_shuffle_f64x2(t[4 * i + 1], t[4 * i + 3], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f64x2(r[i], r[4 + i], 0x88);
        t[4 + i] = _mm512_shuffle_f64x2(r[i], r[4 + i], 0xdd);
    }
    for (int i = 0; i < 8; i++) r[i] = t[i];
}

/* The same as the portable versions, a B x B tile at a time; tails masked. */
#define CB_MOVES_AVX512(T, V, B, SUFFIX, TRANSPOSE, MASK, LOAD, MASKZ_LOAD, MASK_STORE, \
                        STORE, ADD, MUL, CMP_MASK, SET1, ZERO, KEEP, BLEND, CODES, \
                        STORE_CODES, LOAD_CODES, CODE_IS, MASKZ_MOV) \
static CB_AVX512 void cb_store_planes_avx512_##SUFFIX(const T* buf, ptrdiff_t ldo, \
    ptrdiff_t P, int nf, T* out, const T* bias, int relu) \
{ \
    for (ptrdiff_t q0 = 0; q0 < P; q0 += B) { \
        int qn = P - q0 < B ? (int)(P - q0) : B; \
        MASK qm = (MASK)((1u << qn) - 1); \
        for (int k0 = 0; k0 < nf; k0 += B) { \
            int kn = nf - k0 < B ? nf - k0 : B; \
            V r[B]; \
            for (int q = 0; q < B; q++) \
                r[q] = q < qn ? LOAD(buf + (q0 + q) * ldo + k0) : ZERO(); \
            TRANSPOSE(r); \
            for (int k = 0; k < kn; k++) { \
                V v = r[k]; \
                if (bias) { /* the sum's NaN over a NaN bias: see cb_store_pooled */ \
                    T b = bias[k0 + k]; \
                    V sum = ADD(v, SET1(b)); \
                    v = b != b ? BLEND(CMP_MASK(v, v, _CMP_UNORD_Q), sum, ADD(v, v)) : sum; \
                } \
                if (relu) v = KEEP(v); \
                MASK_STORE(out + (ptrdiff_t)(k0 + k) * P + q0, qm, v); \
            } \
        } \
    } \
} \
/* B pooled positions at a time, lanes the filters (the store's bias and \
 * ReLU, then pool_tiles.h's selections), transposed to planes; the codes \
 * as integers in the lanes, transposed alike (the transposes move bits). */ \
static CB_AVX512 void cb_store_pooled_avx512_##SUFFIX(const T* buf, ptrdiff_t ldo, \
    ptrdiff_t Wo, ptrdiff_t Hp, ptrdiff_t Wp, int nf, T* out, uint8_t* codes, const T* bias, \
    int relu) \
{ \
    ptrdiff_t P = Hp * Wp; \
    for (int k0 = 0; k0 < nf; k0 += B) { \
        int kn = nf - k0 < B ? nf - k0 : B; \
        V bv = bias ? MASKZ_LOAD((MASK)((1u << kn) - 1), bias + k0) : ZERO(); \
        int bias_nan = CMP_MASK(bv, bv, _CMP_UNORD_Q) != 0; \
        for (ptrdiff_t q0 = 0; q0 < P; q0 += B) { \
            int qn = P - q0 < B ? (int)(P - q0) : B; \
            MASK qm = (MASK)((1u << qn) - 1); \
            V r[B], code[B]; \
            for (int q = 0; q < B; q++) { \
                if (q >= qn) { \
                    r[q] = code[q] = ZERO(); \
                    continue; \
                } \
                ptrdiff_t row = (q0 + q) / Wp, col = (q0 + q) % Wp; \
                const T* at = buf + (2 * row * Wo + 2 * col) * ldo + k0; \
                V v[4] = {LOAD(at), LOAD(at + ldo), LOAD(at + Wo * ldo), \
                          LOAD(at + (Wo + 1) * ldo)}; \
                for (int i = 0; i < 4; i++) { \
                    if (bias) { \
                        V sum = ADD(v[i], bv); \
                        if (bias_nan) /* see above */ \
                            sum = BLEND(CMP_MASK(v[i], v[i], _CMP_UNORD_Q), sum, \
                                        ADD(v[i], v[i])); \
                        v[i] = sum; \
                    } \
                    if (relu) v[i] = KEEP(v[i]); \
                } \
                MASK ru = CMP_MASK(v[0], v[1], _CMP_NGE_UQ) & CMP_MASK(v[0], v[0], _CMP_ORD_Q); \
                MASK rl = CMP_MASK(v[2], v[3], _CMP_NGE_UQ) & CMP_MASK(v[2], v[2], _CMP_ORD_Q); \
                V u = BLEND(ru, v[0], v[1]), l = BLEND(rl, v[2], v[3]); \
                MASK below = CMP_MASK(u, l, _CMP_NGE_UQ) & CMP_MASK(u, u, _CMP_ORD_Q); \
                r[q] = BLEND(below, u, l); \
                code[q] = CODES(ru, rl, below); \
            } \
            TRANSPOSE(r); \
            TRANSPOSE(code); \
            for (int k = 0; k < kn; k++) { \
                MASK_STORE(out + (ptrdiff_t)(k0 + k) * P + q0, qm, r[k]); \
                STORE_CODES(codes + (ptrdiff_t)(k0 + k) * P + q0, qm, code[k]); \
            } \
        } \
    } \
} \
static CB_AVX512 int cb_position_major_avx512_##SUFFIX(const T* g, ptrdiff_t P, int nf, \
    ptrdiff_t q0, ptrdiff_t q1, T* gt, T* sums) \
{ \
    V zero = ZERO(); \
    for (ptrdiff_t q = q0; q < q1; q += B) { \
        int qn = q1 - q < B ? (int)(q1 - q) : B; \
        MASK qm = (MASK)((1u << qn) - 1); \
        V r[B]; \
        for (int f = 0; f < B; f++) \
            r[f] = f < nf ? MASKZ_LOAD(qm, g + f * P + q) : ZERO(); \
        /* four tiles ahead: a block's rows are nf short streams read side \
         * by side, which the hardware prefetcher barely follows (from \
         * memory the copy took 1.4x as long without; Zen 4, GCC 12) */ \
        if (q + 4 * B < q1) \
            for (int f = 0; f < nf; f++) \
                _mm_prefetch((const char*)(g + f * P + q + 4 * B), _MM_HINT_T0); \
        TRANSPOSE(r); \
        for (int k = 0; k < qn; k++) { \
            STORE(gt + (q + k) * B, r[k]); \
            zero = ADD(zero, MUL(r[k], ZERO())); \
            if (sums) STORE(sums + (q + k) * B, ADD(LOAD(sums + (q + k) * B), r[k])); \
        } \
    } \
    return CMP_MASK(zero, ZERO(), _CMP_NEQ_UQ) == 0; \
} \
/* B pooled windows at a time, lanes the filters (loads and transposes as \
 * above, the codes as integers in float lanes), each window's four \
 * positions written whole: the winner's share, +0 in the other lanes. */ \
static CB_AVX512 int cb_position_major_pooled_avx512_##SUFFIX(const T* g, \
    const uint8_t* codes, const T* pooled, ptrdiff_t Pp, int nf, ptrdiff_t Wo, ptrdiff_t Hp, \
    ptrdiff_t Wp, ptrdiff_t r0, ptrdiff_t r1, T* gt, T* sums) \
{ \
    V zero = ZERO(); \
    const V one = SET1((T)1); \
    ptrdiff_t i1 = r1 / 2 < Hp ? r1 / 2 : Hp; /* windows of rows r0/2 <= i < i1 */ \
    for (ptrdiff_t p = r0 / 2 * Wp; p < i1 * Wp; p += B) { \
        int pn = i1 * Wp - p < B ? (int)(i1 * Wp - p) : B; \
        MASK pm = (MASK)((1u << pn) - 1); \
        /* each window's share, (0 + g) times ReLU's 1 or 0 where pooled, \
         * made before the transpose (lane for lane the same values): two \
         * arrays of B vectors live rather than three, which spilled (Zen 4, \
         * GCC 12: the copy took 0.7 of the CIFAR-like first layer's 1.8 ms) */ \
        V share[B], cv[B]; \
        for (int f = 0; f < B; f++) { \
            if (f < nf) { \
                V gv = MASKZ_LOAD(pm, g + f * Pp + p); \
                V pv = MASKZ_LOAD(pm, pooled + f * Pp + p); \
                share[f] = MUL(ADD(ZERO(), gv), \
                               BLEND(CMP_MASK(pv, ZERO(), _CMP_GT_OQ), ZERO(), one)); \
            } else { \
                share[f] = ZERO(); \
            } \
            zero = ADD(zero, MUL(share[f], ZERO())); \
        } \
        TRANSPOSE(share); \
        for (int f = 0; f < B; f++) { \
            /* B bytes; a plane's last step copies its pn first (past the \
             * array's end, no slack may follow: a copied model's codes) */ \
            if (f >= nf) { \
                cv[f] = ZERO(); \
            } else if (pn == B) { \
                cv[f] = LOAD_CODES(codes + f * Pp + p); \
            } else { \
                uint8_t tail[16] = {0}; \
                memcpy(tail, codes + f * Pp + p, (size_t)pn); \
                cv[f] = LOAD_CODES(tail); \
            } \
        } \
        TRANSPOSE(cv); \
        for (int k = 0; k < pn; k++) { \
            ptrdiff_t i = (p + k) / Wp, j = (p + k) % Wp; \
            ptrdiff_t at = (2 * i - r0) * Wo + 2 * j; \
            ptrdiff_t where[4] = {at, at + 1, at + Wo, at + Wo + 1}; \
            for (int e = 0; e < 4; e++) { \
                V v = MASKZ_MOV(CODE_IS(cv[k], e), share[k]); \
                STORE(gt + where[e] * B, v); \
                if (sums) STORE(sums + where[e] * B, ADD(LOAD(sums + where[e] * B), v)); \
            } \
        } \
    } \
    /* what no window covers: a last column, a last row */ \
    for (ptrdiff_t r = r0; r < r1; r++) \
        for (ptrdiff_t c = r < 2 * Hp ? 2 * Wp : 0; c < Wo; c++) { \
            ptrdiff_t at = ((r - r0) * Wo + c) * B; \
            STORE(gt + at, ZERO()); \
            if (sums) STORE(sums + at, ADD(LOAD(sums + at), ZERO())); \
        } \
    return CMP_MASK(zero, ZERO(), _CMP_NEQ_UQ) == 0; \
} \
/* a vector at a time (rather than GCC's calls to memset and memcpy for \
 * runs of a few values: short rows and paddings of one or two) */ \
static CB_AVX512 void cb_pad_plane_avx512_##SUFFIX(const T* src, ptrdiff_t srs, int rows, \
    int cols, T* plane, ptrdiff_t top, ptrdiff_t left, ptrdiff_t wp, ptrdiff_t S) \
{ \
    ptrdiff_t o = 0; \
    for (int r = 0; r <= rows; r++) { \
        ptrdiff_t end = r < rows ? (top + r) * wp + left : S; \
        for (; o + B <= end; o += B) STORE(plane + o, ZERO()); \
        if (o < end) MASK_STORE(plane + o, (MASK)((1u << (end - o)) - 1), ZERO()); \
        o = end; \
        if (r == rows) break; \
        const T* s = src + r * srs; \
        int q = 0; \
        for (; q + B <= cols; q += B) STORE(plane + o + q, LOAD(s + q)); \
        if (q < cols) { \
            MASK m = (MASK)((1u << (cols - q)) - 1); \
            MASK_STORE(plane + o + q, m, MASKZ_LOAD(m, s + q)); \
        } \
        o += cols; \
    } \
}
/* np.maximum(v, 0): v where v > 0 or v is NaN (unordered), else +0.0 */
#define CB_KEEP_PS(v) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), \
                                                               _CMP_NLE_UQ), v)
#define CB_KEEP_PD(v) _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(v, _mm512_setzero_pd(), \
                                                               _CMP_NLE_UQ), v)
/* A pooled vector's codes, 2 i + j (lanes of the float's width, as float
 * bits for the transposes) from the winners' masks: right in the upper and
 * the lower row, below; by blends on vectors (pool_tiles.h's step), and
 * their store as bytes. */
#define CB_CODES_PS(ru, rl, below) _mm512_castsi512_ps(_mm512_mask_blend_epi32(below, \
    _mm512_maskz_mov_epi32(ru, _mm512_set1_epi32(1)), \
    _mm512_mask_blend_epi32(rl, _mm512_set1_epi32(2), _mm512_set1_epi32(3))))
#define CB_CODES_PD(ru, rl, below) _mm512_castsi512_pd(_mm512_mask_blend_epi64(below, \
    _mm512_maskz_mov_epi64(ru, _mm512_set1_epi64(1)), \
    _mm512_mask_blend_epi64(rl, _mm512_set1_epi64(2), _mm512_set1_epi64(3))))
#define CB_STORE_CODES_PS(p, m, v) _mm512_mask_cvtepi32_storeu_epi8(p, m, _mm512_castps_si512(v))
#define CB_STORE_CODES_PD(p, m, v) _mm512_mask_cvtepi64_storeu_epi8(p, m, _mm512_castpd_si512(v))
#define CB_LOAD_CODES_PS(p) _mm512_castsi512_ps(_mm512_cvtepu8_epi32( \
    _mm_loadu_si128((const __m128i*)(p))))
#define CB_LOAD_CODES_PD(p) _mm512_castsi512_pd(_mm512_cvtepu8_epi64( \
    _mm_loadl_epi64((const __m128i*)(p))))
#define CB_CODE_IS_PS(v, k) _mm512_cmpeq_epi32_mask(_mm512_castps_si512(v), _mm512_set1_epi32(k))
#define CB_CODE_IS_PD(v, k) _mm512_cmpeq_epi64_mask(_mm512_castpd_si512(v), _mm512_set1_epi64(k))
CB_MOVES_AVX512(float, __m512, 16, f32, cb_transpose16, __mmask16, _mm512_loadu_ps,
                _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps, _mm512_storeu_ps, _mm512_add_ps,
                _mm512_mul_ps, _mm512_cmp_ps_mask, _mm512_set1_ps, _mm512_setzero_ps, CB_KEEP_PS,
                _mm512_mask_blend_ps, CB_CODES_PS, CB_STORE_CODES_PS, CB_LOAD_CODES_PS,
                CB_CODE_IS_PS, _mm512_maskz_mov_ps)
CB_MOVES_AVX512(double, __m512d, 8, f64, cb_transpose8, __mmask8, _mm512_loadu_pd,
                _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd, _mm512_storeu_pd, _mm512_add_pd,
                _mm512_mul_pd, _mm512_cmp_pd_mask, _mm512_set1_pd, _mm512_setzero_pd, CB_KEEP_PD,
                _mm512_mask_blend_pd, CB_CODES_PD, CB_STORE_CODES_PD, CB_LOAD_CODES_PD,
                CB_CODE_IS_PD, _mm512_maskz_mov_pd)
#undef CB_MOVES_AVX512
#undef CB_KEEP_PS
#undef CB_KEEP_PD
#undef CB_CODES_PS
#undef CB_CODES_PD
#undef CB_STORE_CODES_PS
#undef CB_STORE_CODES_PD
#undef CB_LOAD_CODES_PS
#undef CB_LOAD_CODES_PD
#undef CB_CODE_IS_PS
#undef CB_CODE_IS_PD
#undef CB_AVX512

/* AVX2 versions of the moves every AVX2 layer runs (the plain and the
 * pooled store, the weight gradient's position-major copy, the padded
 * copy): an L x L
 * tile of one ymm vector a row at a time (L: 8 floats, 4 doubles), tails
 * by scalars rather than masked stores (slow on AMD).  The same values and
 * operations as the portable loops (copies; the bias and ReLU one
 * operation each), in the portable loops' order where it matters (each
 * running sum adds its own sample's value).  LeNet's second layer, AVX2
 * variant, Zen 4, batch 64, 1 thread: the portable copy was a third of its
 * weight gradient (0.35 ms) and the portable store a seventh of its
 * forward pass (0.29 ms). */
#define CB_AVX2 __attribute__((target("avx2,fma")))

/* r[i][j] -> r[j][i] */
static inline __attribute__((always_inline)) CB_AVX2 void cb_transpose8x8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

static inline __attribute__((always_inline)) CB_AVX2 void cb_transpose4x4(__m256d r[4])
{
    __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

#define CB_MOVES_AVX2(T, V, L, B, SUFFIX, TRANSPOSE, LOAD, STORE, ADD, MUL, SET1, ZERO, \
                      CMP, AND, BLENDV, MOVEMASK, I, CODE) \
static CB_AVX2 void cb_store_planes_avx2_##SUFFIX(const T* buf, ptrdiff_t ldo, ptrdiff_t P, \
    int nf, T* out, const T* bias, int relu) \
{ \
    for (ptrdiff_t q0 = 0; q0 < P; q0 += L) { \
        int qn = P - q0 < L ? (int)(P - q0) : L; \
        /* the tile's rows hold whole blocks of filters: L lanes from k0 < nf \
         * stay inside them */ \
        for (int k0 = 0; k0 < nf; k0 += L) { \
            int kn = nf - k0 < L ? nf - k0 : L; \
            V r[L]; \
            for (int q = 0; q < L; q++) \
                r[q] = q < qn ? LOAD(buf + (q0 + q) * ldo + k0) : ZERO(); \
            TRANSPOSE(r); \
            for (int k = 0; k < kn; k++) { \
                V v = r[k]; \
                if (bias) { /* CD_ADD_BIAS: the sum's NaN where both are NaN */ \
                    T b = bias[k0 + k]; \
                    V sum = ADD(v, SET1(b)); \
                    v = b != b ? BLENDV(sum, ADD(v, v), CMP(v, v, _CMP_UNORD_Q)) : sum; \
                } \
                if (relu) v = AND(CMP(v, ZERO(), _CMP_NLE_UQ), v); /* CD_RELU */ \
                T* o = out + (ptrdiff_t)(k0 + k) * P + q0; \
                if (qn == L) { \
                    STORE(o, v); \
                } else { \
                    T lanes[L]; \
                    STORE(lanes, v); \
                    for (int q = 0; q < qn; q++) o[q] = lanes[q]; \
                } \
            } \
        } \
    } \
} \
static CB_AVX2 int cb_position_major_avx2_##SUFFIX(const T* g, ptrdiff_t P, int nf, \
    ptrdiff_t q0, ptrdiff_t q1, T* gt, T* sums) \
{ \
    V zero = ZERO(); \
    for (ptrdiff_t q = q0; q < q1; q += L) { \
        int qn = q1 - q < L ? (int)(q1 - q) : L; \
        for (int f0 = 0; f0 < B; f0 += L) { \
            V r[L]; \
            for (int f = 0; f < L; f++) { \
                if (f0 + f >= nf) { \
                    r[f] = ZERO(); \
                } else if (qn == L) { \
                    r[f] = LOAD(g + (f0 + f) * P + q); \
                } else { /* not past the plane: it may end the array */ \
                    T lanes[L] = {0}; \
                    for (int k = 0; k < qn; k++) lanes[k] = g[(f0 + f) * P + q + k]; \
                    r[f] = LOAD(lanes); \
                } \
            } \
            TRANSPOSE(r); \
            for (int k = 0; k < qn; k++) { \
                STORE(gt + (q + k) * B + f0, r[k]); \
                zero = ADD(zero, MUL(r[k], ZERO())); \
                if (sums) \
                    STORE(sums + (q + k) * B + f0, ADD(LOAD(sums + (q + k) * B + f0), r[k])); \
            } \
        } \
    } \
    return MOVEMASK(CMP(zero, ZERO(), _CMP_NEQ_UQ)) == 0; \
} \
/* cb_store_pooled: L pooled positions at a time, lanes the filters (the \
 * store's bias and ReLU, then pool_tiles.h's selections on vector \
 * masks), transposed to planes; the codes as integers in the lanes \
 * (CODE(k): k's bits in a lane), transposed alike. */ \
static CB_AVX2 void cb_store_pooled_avx2_##SUFFIX(const T* buf, ptrdiff_t ldo, ptrdiff_t Wo, \
    ptrdiff_t Hp, ptrdiff_t Wp, int nf, T* out, uint8_t* codes, const T* bias, int relu) \
{ \
    ptrdiff_t P = Hp * Wp; \
    for (int k0 = 0; k0 < nf; k0 += L) { \
        /* the tile's rows hold whole blocks of filters: L lanes from k0 < nf \
         * stay inside them */ \
        int kn = nf - k0 < L ? nf - k0 : L, bias_nan = 0; \
        T lanes[L] = {0}; \
        for (int k = 0; bias && k < kn; k++) { \
            lanes[k] = bias[k0 + k]; \
            bias_nan |= lanes[k] != lanes[k]; \
        } \
        V bv = LOAD(lanes); \
        for (ptrdiff_t q0 = 0; q0 < P; q0 += L) { \
            int qn = P - q0 < L ? (int)(P - q0) : L; \
            V r[L], code[L]; \
            for (int q = 0; q < L; q++) { \
                if (q >= qn) { \
                    r[q] = code[q] = ZERO(); \
                    continue; \
                } \
                ptrdiff_t row = (q0 + q) / Wp, col = (q0 + q) % Wp; \
                const T* at = buf + (2 * row * Wo + 2 * col) * ldo + k0; \
                V v[4] = {LOAD(at), LOAD(at + ldo), LOAD(at + Wo * ldo), \
                          LOAD(at + (Wo + 1) * ldo)}; \
                for (int i = 0; i < 4; i++) { \
                    if (bias) { /* CD_ADD_BIAS: the sum's NaN where both are NaN */ \
                        V sum = ADD(v[i], bv); \
                        if (bias_nan) \
                            sum = BLENDV(sum, ADD(v[i], v[i]), CMP(v[i], v[i], _CMP_UNORD_Q)); \
                        v[i] = sum; \
                    } \
                    if (relu) v[i] = AND(CMP(v[i], ZERO(), _CMP_NLE_UQ), v[i]); /* CD_RELU */ \
                } \
                V ru = AND(CMP(v[0], v[1], _CMP_NGE_UQ), CMP(v[0], v[0], _CMP_ORD_Q)); \
                V rl = AND(CMP(v[2], v[3], _CMP_NGE_UQ), CMP(v[2], v[2], _CMP_ORD_Q)); \
                V u = BLENDV(v[0], v[1], ru), l = BLENDV(v[2], v[3], rl); \
                V below = AND(CMP(u, l, _CMP_NGE_UQ), CMP(u, u, _CMP_ORD_Q)); \
                r[q] = BLENDV(u, l, below); \
                code[q] = BLENDV(BLENDV(ZERO(), CODE(1), ru), BLENDV(CODE(2), CODE(3), rl), \
                                 below); \
            } \
            TRANSPOSE(r); \
            TRANSPOSE(code); \
            for (int k = 0; k < kn; k++) { \
                T* o = out + (ptrdiff_t)(k0 + k) * P + q0; \
                uint8_t* c = codes + (ptrdiff_t)(k0 + k) * P + q0; \
                I bits[L]; \
                STORE((T*)bits, code[k]); \
                if (qn == L) { \
                    STORE(o, r[k]); \
                } else { \
                    STORE(lanes, r[k]); \
                    for (int q = 0; q < qn; q++) o[q] = lanes[q]; \
                } \
                for (int q = 0; q < qn; q++) c[q] = (uint8_t)bits[q]; \
            } \
        } \
    } \
} \
static CB_AVX2 void cb_pad_plane_avx2_##SUFFIX(const T* src, ptrdiff_t srs, int rows, \
    int cols, T* plane, ptrdiff_t top, ptrdiff_t left, ptrdiff_t wp, ptrdiff_t S) \
{ \
    ptrdiff_t o = 0; \
    for (int r = 0; r <= rows; r++) { \
        ptrdiff_t end = r < rows ? (top + r) * wp + left : S; \
        for (; o + L <= end; o += L) STORE(plane + o, ZERO()); \
        for (; o < end; o++) plane[o] = 0; \
        if (r == rows) break; \
        const T* s = src + r * srs; \
        int q = 0; \
        for (; q + L <= cols; q += L) STORE(plane + o + q, LOAD(s + q)); \
        for (; q < cols; q++) plane[o + q] = s[q]; \
        o += cols; \
    } \
}
#define CB_CODE_PS(k) _mm256_castsi256_ps(_mm256_set1_epi32(k))
#define CB_CODE_PD(k) _mm256_castsi256_pd(_mm256_set1_epi64x(k))
CB_MOVES_AVX2(float, __m256, 8, 16, f32, cb_transpose8x8, _mm256_loadu_ps, _mm256_storeu_ps,
              _mm256_add_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_cmp_ps,
              _mm256_and_ps, _mm256_blendv_ps, _mm256_movemask_ps, int32_t, CB_CODE_PS)
CB_MOVES_AVX2(double, __m256d, 4, 8, f64, cb_transpose4x4, _mm256_loadu_pd, _mm256_storeu_pd,
              _mm256_add_pd, _mm256_mul_pd, _mm256_set1_pd, _mm256_setzero_pd, _mm256_cmp_pd,
              _mm256_and_pd, _mm256_blendv_pd, _mm256_movemask_pd, int64_t, CB_CODE_PD)
#undef CB_CODE_PS
#undef CB_CODE_PD
#undef CB_MOVES_AVX2
#undef CB_AVX2
/* the moves with an AVX2 version, and those without */
#define CB_MOVES2(name, type, isa, args) \
    ((isa) == CD_ISA_AVX512 ? name##_avx512_##type args \
     : (isa) == CD_ISA_AVX2 ? name##_avx2_##type args : name##_portable_##type args)
#define CB_MOVES(name, type, isa, args) \
    ((isa) == CD_ISA_AVX512 ? name##_avx512_##type args : name##_portable_##type args)
#else
#define CB_MOVES(name, type, isa, args) name##_portable_##type args
#define CB_MOVES2 CB_MOVES
#endif

static void cb_store_planes_f32(int isa, const float* buf, ptrdiff_t ldo, ptrdiff_t P, int nf,
                                float* out, const float* bias, int relu)
{ CB_MOVES2(cb_store_planes, f32, isa, (buf, ldo, P, nf, out, bias, relu)); }
static void cb_store_planes_f64(int isa, const double* buf, ptrdiff_t ldo, ptrdiff_t P, int nf,
                                double* out, const double* bias, int relu)
{ CB_MOVES2(cb_store_planes, f64, isa, (buf, ldo, P, nf, out, bias, relu)); }
static void cb_store_pooled_f32(int isa, const float* buf, ptrdiff_t ldo, ptrdiff_t Wo,
                                ptrdiff_t Hp, ptrdiff_t Wp, int nf, float* out, uint8_t* codes,
                                const float* bias, int relu)
{ CB_MOVES2(cb_store_pooled, f32, isa, (buf, ldo, Wo, Hp, Wp, nf, out, codes, bias, relu)); }
static void cb_store_pooled_f64(int isa, const double* buf, ptrdiff_t ldo, ptrdiff_t Wo,
                                ptrdiff_t Hp, ptrdiff_t Wp, int nf, double* out, uint8_t* codes,
                                const double* bias, int relu)
{ CB_MOVES2(cb_store_pooled, f64, isa, (buf, ldo, Wo, Hp, Wp, nf, out, codes, bias, relu)); }
static void cb_pad_plane_f32(int isa, const float* src, ptrdiff_t srs, int rows, int cols,
                             float* plane, ptrdiff_t top, ptrdiff_t left, ptrdiff_t wp,
                             ptrdiff_t S)
{ CB_MOVES2(cb_pad_plane, f32, isa, (src, srs, rows, cols, plane, top, left, wp, S)); }
static void cb_pad_plane_f64(int isa, const double* src, ptrdiff_t srs, int rows, int cols,
                             double* plane, ptrdiff_t top, ptrdiff_t left, ptrdiff_t wp,
                             ptrdiff_t S)
{ CB_MOVES2(cb_pad_plane, f64, isa, (src, srs, rows, cols, plane, top, left, wp, S)); }
static int cb_position_major_pooled_f32(int isa, const float* g, const uint8_t* codes,
    const float* pooled, ptrdiff_t Pp, int nf, ptrdiff_t Wo, ptrdiff_t Hp, ptrdiff_t Wp,
    ptrdiff_t r0, ptrdiff_t r1, float* gt, float* sums)
{ return CB_MOVES(cb_position_major_pooled, f32, isa,
                  (g, codes, pooled, Pp, nf, Wo, Hp, Wp, r0, r1, gt, sums)); }
static int cb_position_major_pooled_f64(int isa, const double* g, const uint8_t* codes,
    const double* pooled, ptrdiff_t Pp, int nf, ptrdiff_t Wo, ptrdiff_t Hp, ptrdiff_t Wp,
    ptrdiff_t r0, ptrdiff_t r1, double* gt, double* sums)
{ return CB_MOVES(cb_position_major_pooled, f64, isa,
                  (g, codes, pooled, Pp, nf, Wo, Hp, Wp, r0, r1, gt, sums)); }
static int cb_position_major_f32(int isa, const float* g, ptrdiff_t P, int nf, ptrdiff_t q0,
                                 ptrdiff_t q1, float* gt, float* sums)
{ return CB_MOVES2(cb_position_major, f32, isa, (g, P, nf, q0, q1, gt, sums)); }
static int cb_position_major_f64(int isa, const double* g, ptrdiff_t P, int nf, ptrdiff_t q0,
                                 ptrdiff_t q1, double* gt, double* sums)
{ return CB_MOVES2(cb_position_major, f64, isa, (g, P, nf, q0, q1, gt, sums)); }

#endif /* CYCONV_CONV_BLOCKED_MOVES_H */
