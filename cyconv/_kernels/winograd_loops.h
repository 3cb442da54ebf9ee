/* The transforms of Winograd's F(4x4, 3x3) convolution (Lavin and Gray,
 * 2016), between the planes of NCHW arrays and the (36, channels, tiles)
 * matrices whose products _conv_winograd.pyx takes.  A tile is the 6x6
 * input window of a 4x4 block of outputs; tiles of a row are 4 columns
 * apart, so each padded row is first transformed along its columns, once
 * for every tile that reads it, into six arrays (one a column of the
 * transform, tiles side by side): the loops down the rows then run over
 * unit strides (vectorised by the compiler), and a padded row shared by
 * two rows of tiles is transformed once.
 *
 *   input:            U = B^T d B   (d: 6x6 window of the zero-padded input)
 *   output:           Y = A^T M A   (M: 6x6 product, Y: the 4x4 outputs)
 *   output's adjoint: V = A g A^T   (g: 4x4 output gradient)
 *   weight:           W = G k G^T   (k: 3x3 kernel), and back G^T X G
 *
 * with the interpolation points 0, 1, -1, 2, -2 and infinity:
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
 *          0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 *   G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
 *          1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 * B and A take additions and multiplications by powers of two, which are
 * exact (a fused multiply-add gives the same bits), and G divisions by 6,
 * correctly rounded: every instruction-set clone gives the same bits.
 * Position p = 6 i + j of a transform goes to row p of its matrix, ``ps``
 * values apart.
 */
#ifndef CYCONV_WINOGRAD_LOOPS_H
#define CYCONV_WINOGRAD_LOOPS_H

#include <stddef.h>

#include "run_loops.h"
#include "store_rules.h"

/* positions of a transformed tile, and outputs along a side of a tile */
#define WG_POSITIONS 36
#define WG_TILE 4

/* Values between one array's end and the next's start, where a transform
 * reads or writes many arrays side by side (the 36 matrices of U, M and V,
 * the 16 planes of its scratch): arrays a multiple of 4 KiB long put all
 * those streams in one set of the first-level cache, which holds 8 to 12
 * (the output transform ran 2x slower so on the CIFAR-like layers). */
#define WG_PAD 16

/* The loops over the tiles of a row write 36 rows of a matrix, ps values
 * apart: no store reads or overwrites another's value, which the compiler
 * cannot see (ps is a variable) and checks for at run time on no more than
 * 10 pairs, else leaves the loop scalar (3x slower). */
#if defined(__clang__)
#define WG_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define WG_IVDEP _Pragma("GCC ivdep")
#else
#define WG_IVDEP
#endif

/* Whether v is out of the range the transforms take: NaN, an infinity
 * (inf - inf is NaN where the direct sum keeps the infinity), or a finite
 * value above 2^44 in float (2^492 in double), whose sums and products in
 * the transforms could overflow where the direct sum does not (and an
 * overflow times a zero weight is NaN).  B^T d B grows a value at most
 * 100 times, A g A^T 225 times, G k G^T not at all and A^T M A 361 times:
 * a product of two transformed values stays below 2^103 (float), and a
 * sum of 2^24 of them (channels of a forward pass, tiles of a weight
 * gradient's part) below 2^128 after A^T too.  Two negated comparisons,
 * each true for NaN, or-ed as integers (not &&, whose branch GCC 12 kept
 * scalar: a fifth of the input transform). */
#define WG_LIMIT(T) ((T)(sizeof(T) == sizeof(float) ? 0x1p44 : 0x1p492))
#define WG_OUT_OF_RANGE(T, v) (!((v) <= WG_LIMIT(T)) | !((v) >= -WG_LIMIT(T)))

/* The transforms' clones: AVX2 and the baseline.  Their loops are
 * additions, loads and stores, which AVX2's vectors serve on AVX-512
 * processors too, and an AVX-512 clone of each would cost the wheel about
 * 25 KB (compressed).  The weight's transforms too, whose divisions by 6
 * the AVX2 clone takes a vector at a time (8 floats, 4 doubles; 64 -> 128,
 * baseline / AVX2: float32 0.15 / 0.13 ms, float64 0.42 / 0.31, Intel
 * Xeon). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)\
    && defined(__GLIBC__)
#define WG_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define WG_CLONES
#endif

/* inlined into each clone of its callers */
#if defined(__GNUC__)
#define WG_INLINE __attribute__((always_inline)) inline
#else
#define WG_INLINE inline
#endif

/* B^T applied to six values r0..r5 (a row or a column of a window), into
 * x0..x5 */
#define WG_BT(T, r0, r1, r2, r3, r4, r5, x)                                   \
    T x##_t1 = (r4) - (r2) * 4, x##_t2 = (r3) - (r1) * 4;                       \
    T x##_t3 = (r4) - (r2), x##_t4 = ((r3) - (r1)) * 2;                         \
    T x##0 = ((r0) - (r2)) * 4 + x##_t3;                                       \
    T x##1 = x##_t1 + x##_t2, x##2 = x##_t1 - x##_t2;                             \
    T x##3 = x##_t3 + x##_t4, x##4 = x##_t3 - x##_t4;                             \
    T x##5 = ((r1) - (r3)) * 4 + ((r5) - (r3));

/* A^T applied to six values m0..m5, into y0..y3 */
#define WG_AT(T, m0, m1, m2, m3, m4, m5, y)                                   \
    T y##_a = (m1) + (m2), y##_b = (m1) - (m2);                                 \
    T y##_c = (m3) + (m4), y##_d = (m3) - (m4);                                 \
    T y##0 = ((m0) + y##_a) + y##_c, y##1 = y##_b + y##_d * 2;                   \
    T y##2 = y##_a + y##_c * 4, y##3 = (y##_b + y##_d * 8) + (m5);

/* A applied to four values g0..g3, into v0..v5 */
#define WG_A(T, g0, g1, g2, g3, v)                                            \
    T v##_e = (g0) + (g2), v##_o = (g1) + (g3);                                 \
    T v##_f = (g0) + (g2) * 4, v##_q = (g1) * 2 + (g3) * 8;                     \
    T v##0 = (g0), v##1 = v##_e + v##_o, v##2 = v##_e - v##_o;                    \
    T v##3 = v##_f + v##_q, v##4 = v##_f - v##_q, v##5 = (g3);

/* U of the tiles s..s + n of a run from the row transforms h (see
 * wg_input_chunk), into v: B^T down the six rows of each column k */
#define WG_DOWN_ROWS(T, n)                                                    \
    for (int k = 0; k < 6; k++) {                                             \
        const T* restrict H0 = h + k * S + s;                                 \
        const T* restrict H1 = h + (6 + k) * S + s;                           \
        const T* restrict H2 = h + (12 + k) * S + s;                          \
        const T* restrict H3 = h + (18 + k) * S + s;                          \
        const T* restrict H4 = H0 + tw;                                       \
        const T* restrict H5 = H1 + tw;                                       \
        T* restrict vk = v + k * ps;                                          \
        WG_IVDEP                                                              \
        for (ptrdiff_t t = 0; t < (n); t++) {                                 \
            WG_BT(T, H0[t], H1[t], H2[t], H3[t], H4[t], H5[t], y)             \
            vk[t] = y0; vk[6 * ps + t] = y1; vk[12 * ps + t] = y2;            \
            vk[18 * ps + t] = y3; vk[24 * ps + t] = y4; vk[30 * ps + t] = y5; \
        }                                                                     \
    }

/* V's column j, A down the row transforms a, b, d, f of the gradient's
 * four rows (wg_gradient_chunk), into o[(6 i + j) * ps] */
#define WG_A_DOWN(T, j, x)                                                    \
    WG_A(T, a##j, b##j, d##j, f##j, x)                                        \
    o[(j) * ps] = x##0; o[(6 + (j)) * ps] = x##1; o[(12 + (j)) * ps] = x##2;  \
    o[(18 + (j)) * ps] = x##3; o[(24 + (j)) * ps] = x##4; o[(30 + (j)) * ps] = x##5;

/* max(v, 0) as np.maximum where ``relu`` (CD_RELU) */
#define WG_RELU(v) (relu ? CD_RELU(v) : (v))

#if defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 12)
/* Four vectors of four values transposed, as two shuffles each: o[k]
 * holds value k of r0, r1, r2, r3 (wg_v4, the vector type the caller
 * declares). */
#define WG_TRANSPOSE4(r0, r1, r2, r3, o)                                      \
    {                                                                         \
        wg_v4 s0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5);               \
        wg_v4 s1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);               \
        wg_v4 s2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5);               \
        wg_v4 s3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);               \
        o[0] = __builtin_shufflevector(s0, s2, 0, 1, 4, 5);                   \
        o[1] = __builtin_shufflevector(s0, s2, 2, 3, 6, 7);                   \
        o[2] = __builtin_shufflevector(s1, s3, 0, 1, 4, 5);                   \
        o[3] = __builtin_shufflevector(s1, s3, 2, 3, 6, 7);                   \
    }
/* o[k] = p[4 k .. 4 k + 3], k < 4 */
#define WG_LOAD4(p, o)                                                        \
    for (int wg_k = 0; wg_k < 4; wg_k++)                                      \
        __builtin_memcpy(&o[wg_k], (p) + 4 * wg_k, sizeof o[0]);

/* dst[4 t + j] = a[j * L + t], j < 4, with ``relu`` max(., 0) as
 * np.maximum, for t from t up to ``whole`` in steps of 4 tiles: four
 * loads, a 4x4 transpose in vector registers and four stores (the
 * compiler's own interleaving stored one value at a time); t is left at
 * the first tile not done.  ReLU clears the bits of the values <= 0 (-0
 * and 0 become +0, NaN stays), as CD_RELU. */
#define WG_INTERLEAVE(T, dst, a, L, t, whole, relu)                           \
    {                                                                         \
        typedef T wg_v4 __attribute__((vector_size(4 * sizeof(T))));          \
        typedef __typeof__((wg_v4){0} <= (wg_v4){0}) wg_m4;                   \
        for (; t + 4 <= (whole); t += 4) {                                    \
            wg_v4 r[4], o[4];                                                 \
            for (int k = 0; k < 4; k++)                                       \
                __builtin_memcpy(&r[k], (a) + k * (L) + t, sizeof r[0]);      \
            WG_TRANSPOSE4(r[0], r[1], r[2], r[3], o)                          \
            if (relu)                                                         \
                for (int k = 0; k < 4; k++)                                   \
                    o[k] = (wg_v4)((wg_m4)o[k] & ~(o[k] <= (wg_v4){0}));      \
            __builtin_memcpy((dst) + 4 * t, o, sizeof o);                     \
        }                                                                     \
    }

/* The inverse of WG_INTERLEAVE: a[j * L + t] = src[4 t + j], j < 4, for t
 * from t up to ``whole`` in steps of 4 tiles (four loads of 16 values in a
 * row, a 4x4 transpose, four stores; the compiler's own loop took the
 * values one at a time); t is left at the first tile not done. */
#define WG_DEINTERLEAVE(T, a, L, src, t, whole)                               \
    {                                                                         \
        typedef T wg_v4 __attribute__((vector_size(4 * sizeof(T))));          \
        for (; t + 4 <= (whole); t += 4) {                                    \
            wg_v4 r[4], o[4];                                                 \
            WG_LOAD4((src) + 4 * t, r)                                        \
            WG_TRANSPOSE4(r[0], r[1], r[2], r[3], o)                          \
            for (int k = 0; k < 4; k++)                                       \
                __builtin_memcpy((a) + k * (L) + t, &o[k], sizeof o[0]);      \
        }                                                                     \
    }

/* (d B) of a padded row's tiles t..t + 3 at a time, up to tw: its columns
 * 4 t + k (k < 4) by a 4x4 transpose of 16 values, and 4 t + 4, 4 t + 5
 * by a second one 4 columns on (which reads 2 values past the row's 4 tw
 * + 2: the row keeps 2 more), B^T on the vectors, into a[k * S + t]; t is
 * left at the first tile not done.  The same operations as WG_BT on each
 * tile. */
#define WG_ROW_BT(T, row, a, S, t, tw)                                        \
    {                                                                         \
        typedef T wg_v4 __attribute__((vector_size(4 * sizeof(T))));          \
        for (; t + 4 <= (tw); t += 4) {                                       \
            wg_v4 r[4], p[4], q[4];                                           \
            WG_LOAD4((row) + 4 * t, r)                                        \
            WG_TRANSPOSE4(r[0], r[1], r[2], r[3], p)                          \
            WG_LOAD4((row) + 4 * t + 4, r)                                    \
            WG_TRANSPOSE4(r[0], r[1], r[2], r[3], q)                          \
            WG_BT(wg_v4, p[0], p[1], p[2], p[3], q[0], q[1], x)               \
            __builtin_memcpy((a) + t, &x0, sizeof x0);                        \
            __builtin_memcpy((a) + (S) + t, &x1, sizeof x1);                  \
            __builtin_memcpy((a) + 2 * (S) + t, &x2, sizeof x2);              \
            __builtin_memcpy((a) + 3 * (S) + t, &x3, sizeof x3);              \
            __builtin_memcpy((a) + 4 * (S) + t, &x4, sizeof x4);              \
            __builtin_memcpy((a) + 5 * (S) + t, &x5, sizeof x5);              \
        }                                                                     \
    }
#else
#define WG_INTERLEAVE(T, dst, a, L, t, whole, relu)
#define WG_DEINTERLEAVE(T, a, L, src, t, whole)
#define WG_ROW_BT(T, row, a, S, t, tw)
#endif

/* channels the tile-major input transform takes at a time (a table of
 * 36 x WG_LANES values on the stack) */
#define WG_LANES 16

#define WG_LOOPS(T, SUFFIX)                                                   \
/* Row ``row`` of a plane (rows x cols) split into its columns 4 t + k,    \
 * k < 4, t < n: out[k * stride + t], zeros past its edges. */                \
WG_INLINE static void wg_split_row_##SUFFIX(                                  \
    const T* restrict plane, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t row,   \
    ptrdiff_t n, T* restrict out, ptrdiff_t stride)                           \
{                                                                             \
    if (row >= rows) {                                                        \
        for (int k = 0; k < 4; k++)                                           \
            for (ptrdiff_t t = 0; t < n; t++) out[k * stride + t] = 0;        \
        return;                                                               \
    }                                                                         \
    const T* src = plane + row * cols;                                        \
    ptrdiff_t whole = cols / 4 < n ? cols / 4 : n;  /* all 4 columns inside */ \
    ptrdiff_t t = 0;                                                          \
    WG_DEINTERLEAVE(T, out, stride, src, t, whole)                            \
    for (; t < whole; t++) {                                                  \
        out[t] = src[4 * t]; out[stride + t] = src[4 * t + 1];                \
        out[2 * stride + t] = src[4 * t + 2]; out[3 * stride + t] = src[4 * t + 3]; \
    }                                                                         \
    for (t = whole; t < n; t++)                                               \
        for (int k = 0; k < 4; k++)                                           \
            out[k * stride + t] = 4 * t + k < cols ? src[4 * t + k] : 0;      \
}                                                                             \
                                                                              \
/* U for ``count`` rows of tiles of one channel, from row ``first`` of the \
 * batch's (th rows of tiles a sample, tw tiles a row): u[p * ps + r * tw  \
 * + t], the windows of row r starting at row 4 ty - top and column -left  \
 * of its sample's plane (zero padding around; planes ``sample`` values     \
 * apart).  Each padded row the chunk reads is copied once into ``row`` and \
 * transformed along its columns, (d B) of every tile, into six arrays     \
 * (one a column of the transform) for each of the four phases of the      \
 * padded rows mod 4: then the six rows of every tile of a run of rows of  \
 * tiles lie at their own index, and one vectorised loop transforms the    \
 * run down its rows.  With ``bl`` > 1 the tiles go in blocks of bl,        \
 * ``bs`` values apart: tile i to u[p * ps + (i / bl) * bs + i % bl] (the  \
 * blocked products' layout); bl = bs = 1 is the plain row.  ``scratch``:  \
 * 24 (count + 1) tw + 4 tw + 4 values.  Returns whether a value read is    \
 * out of range (WG_OUT_OF_RANGE). */                                      \
WG_CLONES RN_NO_MEMCPY static int wg_input_chunk_##SUFFIX(                    \
    const T* restrict x, ptrdiff_t sample, ptrdiff_t rows, ptrdiff_t cols,    \
    ptrdiff_t first, ptrdiff_t count, ptrdiff_t th, ptrdiff_t top,            \
    ptrdiff_t left, ptrdiff_t tw, T* restrict scratch, T* restrict u,         \
    ptrdiff_t ps, ptrdiff_t bl, ptrdiff_t bs)                                 \
{                                                                             \
    ptrdiff_t S = (count + 1) * tw;   /* values of each array */              \
    ptrdiff_t width = 4 * tw + 2;                                             \
    T* restrict row = scratch;                                                \
    /* h[(phase * 6 + k) * S + block * tw + t]: column k of (d B) of tile t \
     * on padded row 4 block + phase of the run */                            \
    T* restrict h = scratch + width + 2;                                      \
    /* copied columns: q - left inside the plane */                           \
    ptrdiff_t lo = left, hi = cols + left < width ? cols + left : width;      \
    int bad = 0;                                                              \
    for (ptrdiff_t done = 0; done < count;) {                                 \
        ptrdiff_t n = (first + done) / th, ty0 = (first + done) % th;         \
        ptrdiff_t run = th - ty0 < count - done ? th - ty0 : count - done;    \
        const T* plane = x + n * sample;                                      \
        for (ptrdiff_t j = 0; j < 4 * run + 2; j++) {                         \
            ptrdiff_t at = 4 * ty0 + j - top;                                 \
            for (ptrdiff_t q = 0; q < width + 2; q++) row[q] = 0;             \
            if (at >= 0 && at < rows) {                                       \
                const T* src = plane + at * cols;                             \
                for (ptrdiff_t q = lo; q < hi; q++) row[q] = src[q - left];   \
                for (ptrdiff_t q = 0; q < cols; q++) bad |= WG_OUT_OF_RANGE(T, src[q]); \
            }                                                                 \
            T* restrict a = h + (j & 3) * 6 * S + (j >> 2) * tw;              \
            ptrdiff_t t = 0;                                                  \
            WG_ROW_BT(T, row, a, S, t, tw)                                    \
            for (; t < tw; t++) {                                             \
                const T* r = row + 4 * t;                                     \
                WG_BT(T, r[0], r[1], r[2], r[3], r[4], r[5], x)               \
                a[t] = x0; a[S + t] = x1; a[2 * S + t] = x2;                  \
                a[3 * S + t] = x3; a[4 * S + t] = x4; a[5 * S + t] = x5;      \
            }                                                                 \
        }                                                                     \
        /* down the rows: padded rows 4 r + i, i < 6, of phase i & 3 and     \
         * block r + (i >> 2); in pieces that stay within a block of tiles */ \
        for (ptrdiff_t s = 0; s < run * tw;) {                                \
            ptrdiff_t i = done * tw + s, lane = i % bl;                       \
            ptrdiff_t piece = bl - lane < run * tw - s ? bl - lane : run * tw - s; \
            if (bl == 1) piece = run * tw - s;                                \
            T* restrict v = u + (i / bl) * bs + lane;                         \
            /* a whole block of 16 in straight-line vectors */                \
            if (piece == 16) {                                                \
                WG_DOWN_ROWS(T, 16)                                           \
            } else {                                                          \
                WG_DOWN_ROWS(T, piece)                                        \
            }                                                                 \
            s += piece;                                                       \
        }                                                                     \
        done += run;                                                          \
    }                                                                         \
    return bad;                                                               \
}                                                                             \
                                                                              \
/* U for ``count`` rows of tiles of all C channels, from row ``first`` of \
 * the batch's (th rows of tiles a sample, tw tiles a row): u[p * ps +     \
 * tile * C + c], tile = r * tw + t, the windows of row r starting at row  \
 * 4 ty - top and column -left of their sample's planes (zero padding      \
 * around; planes rows x cols).  The padded rows a run of rows of tiles    \
 * reads are first gathered channels last, scratch[(j * width + q) * C +   \
 * c]: then the loops over the channels of a tile run over unit strides    \
 * (vectorised however small the planes), each tile through a small table \
 * of its rows' transforms, up to WG_LANES channels at a time.  With       \
 * ``bl`` < C the channels go in blocks of bl, ``bs`` values apart:        \
 * u[p * ps + (c / bl) * bs + tile * bl + c % bl] (the blocked products'   \
 * layout; bl = C is the plain one).  ``scratch``: (4 count + 2) (4 tw +   \
 * 2) C values.  Returns whether a value read is out of range               \
 * (WG_OUT_OF_RANGE). */                                                   \
WG_CLONES RN_NO_MEMCPY static int wg_input_tiles_##SUFFIX(                    \
    const T* restrict x, ptrdiff_t C, ptrdiff_t rows, ptrdiff_t cols,         \
    ptrdiff_t first, ptrdiff_t count, ptrdiff_t th, ptrdiff_t top,            \
    ptrdiff_t left, ptrdiff_t tw, T* restrict scratch, T* restrict u,         \
    ptrdiff_t ps, ptrdiff_t bl, ptrdiff_t bs)                                 \
{                                                                             \
    ptrdiff_t plane = rows * cols, width = 4 * tw + 2;                        \
    int bad = 0;                                                              \
    T rt[6][6][WG_LANES];   /* (d B) of the tile's rows, channels last */    \
    for (ptrdiff_t done = 0; done < count;) {                                 \
        ptrdiff_t n = (first + done) / th, ty0 = (first + done) % th;         \
        ptrdiff_t run = th - ty0 < count - done ? th - ty0 : count - done;    \
        const T* xs = x + n * C * plane;                                      \
        for (ptrdiff_t j = 0; j < 4 * run + 2; j++) {                         \
            ptrdiff_t at = 4 * ty0 + j - top;                                 \
            for (ptrdiff_t q = 0; q < width; q++) {                           \
                ptrdiff_t col = q - left;                                     \
                T* restrict d = scratch + (j * width + q) * C;                \
                if (at >= 0 && at < rows && col >= 0 && col < cols) {         \
                    const T* src = xs + at * cols + col;                      \
                    for (ptrdiff_t c = 0; c < C; c++) d[c] = src[c * plane];  \
                } else {                                                      \
                    for (ptrdiff_t c = 0; c < C; c++) d[c] = 0;               \
                }                                                             \
            }                                                                 \
        }                                                                     \
        for (ptrdiff_t k = 0; k < (4 * run + 2) * width * C; k++)             \
            bad |= WG_OUT_OF_RANGE(T, scratch[k]);                            \
        for (ptrdiff_t r = 0; r < run; r++) {                                 \
            for (ptrdiff_t t = 0; t < tw; t++) {                              \
                const T* restrict w0 = scratch + (4 * r * width + 4 * t) * C; \
                for (ptrdiff_t k0 = 0; k0 < C; k0 += bl) {                    \
                    /* v[.. + ch] is channel ch of this tile, ch in the block */ \
                    T* restrict v = u + (k0 / bl) * bs + ((done + r) * tw + t) * bl - k0; \
                    ptrdiff_t k1 = C - k0 < bl ? C : k0 + bl;                 \
                    for (ptrdiff_t c0 = k0; c0 < k1; c0 += WG_LANES) {        \
                        ptrdiff_t c1 = k1 - c0 < WG_LANES ? k1 : c0 + WG_LANES; \
                        for (int i = 0; i < 6; i++) {                         \
                            const T* restrict d = w0 + i * width * C;         \
                            WG_IVDEP                                          \
                            for (ptrdiff_t ch = c0; ch < c1; ch++) {          \
                                WG_BT(T, d[ch], d[C + ch], d[2 * C + ch], d[3 * C + ch], \
                                      d[4 * C + ch], d[5 * C + ch], x)        \
                                rt[i][0][ch - c0] = x0; rt[i][1][ch - c0] = x1; \
                                rt[i][2][ch - c0] = x2; rt[i][3][ch - c0] = x3; \
                                rt[i][4][ch - c0] = x4; rt[i][5][ch - c0] = x5; \
                            }                                                 \
                        }                                                     \
                        for (int k = 0; k < 6; k++) {                         \
                            T* restrict vk = v + k * ps;                      \
                            WG_IVDEP                                          \
                            for (ptrdiff_t ch = c0; ch < c1; ch++) {          \
                                ptrdiff_t l = ch - c0;                        \
                                WG_BT(T, rt[0][k][l], rt[1][k][l], rt[2][k][l], \
                                      rt[3][k][l], rt[4][k][l], rt[5][k][l], y) \
                                vk[ch] = y0; vk[6 * ps + ch] = y1;            \
                                vk[12 * ps + ch] = y2; vk[18 * ps + ch] = y3; \
                                vk[24 * ps + ch] = y4; vk[30 * ps + ch] = y5; \
                            }                                                 \
                        }                                                     \
                    }                                                         \
                }                                                             \
            }                                                                 \
        }                                                                     \
        done += run;                                                          \
    }                                                                         \
    return bad;                                                               \
}                                                                             \
                                                                              \
/* Y = A^T M A for ``count`` rows of tiles of the F output planes of each   \
 * sample (rows x cols each, ``sample`` values apart), from row ``first``   \
 * of the batch's, from m[p * ps + f * tiles + r * tw + t] (tiles >= count \
 * tw: the values past a filter's tiles are finite and left unwritten):    \
 * rows 4 ty to 4 ty + 3 (those inside the plane) written, plus bias[f]    \
 * (none where bias is NULL), with ``relu`` max(., 0) as np.maximum.  The  \
 * transform into y planar, every (filter, tile) in one vectorised loop;  \
 * each row of outputs its four columns interleaved (WG_INTERLEAVE).       \
 * ``scratch``: 17 (F tiles + WG_PAD) values. */                              \
WG_CLONES RN_NO_MEMCPY static void wg_output_chunk_##SUFFIX(                  \
    const T* restrict m, ptrdiff_t ps, ptrdiff_t F, ptrdiff_t tiles,          \
    T* restrict out, ptrdiff_t sample, ptrdiff_t rows, ptrdiff_t cols,        \
    ptrdiff_t first, ptrdiff_t count, ptrdiff_t th, ptrdiff_t tw,             \
    const T* restrict bias, int relu, T* restrict scratch)                    \
{                                                                             \
    ptrdiff_t L = F * tiles, Ls = L + WG_PAD;                                 \
    /* y[(4 i + j) * Ls + f * tiles + s]: output row i, column j of tile s */ \
    T* restrict y = scratch;                                                  \
    /* bf[f * tiles + s]: bias[f], so that one loop runs over all of L */    \
    T* restrict bf = scratch + 16 * Ls;                                       \
    for (ptrdiff_t f = 0; f < F; f++)                                         \
        for (ptrdiff_t t = 0; t < tiles; t++) bf[f * tiles + t] = bias ? bias[f] : 0; \
    WG_IVDEP                                                                  \
    for (ptrdiff_t t = 0; t < L; t++) {                                       \
        const T* restrict c = m + t;                                          \
        /* A^T down each column k, then along the rows, and the bias */       \
        WG_AT(T, c[0], c[6 * ps], c[12 * ps], c[18 * ps], c[24 * ps], c[30 * ps], a) \
        WG_AT(T, c[ps], c[7 * ps], c[13 * ps], c[19 * ps], c[25 * ps], c[31 * ps], b) \
        WG_AT(T, c[2 * ps], c[8 * ps], c[14 * ps], c[20 * ps], c[26 * ps], c[32 * ps], e) \
        WG_AT(T, c[3 * ps], c[9 * ps], c[15 * ps], c[21 * ps], c[27 * ps], c[33 * ps], f) \
        WG_AT(T, c[4 * ps], c[10 * ps], c[16 * ps], c[22 * ps], c[28 * ps], c[34 * ps], g) \
        WG_AT(T, c[5 * ps], c[11 * ps], c[17 * ps], c[23 * ps], c[29 * ps], c[35 * ps], h) \
        T bt = bf[t];                                                         \
        T* restrict o = y + t;                                                \
        WG_AT(T, a0, b0, e0, f0, g0, h0, p)                                   \
        o[0] = CD_ADD_BIAS(p0, bt); o[Ls] = CD_ADD_BIAS(p1, bt);              \
        o[2 * Ls] = CD_ADD_BIAS(p2, bt); o[3 * Ls] = CD_ADD_BIAS(p3, bt);     \
        WG_AT(T, a1, b1, e1, f1, g1, h1, q)                                   \
        o[4 * Ls] = CD_ADD_BIAS(q0, bt); o[5 * Ls] = CD_ADD_BIAS(q1, bt);     \
        o[6 * Ls] = CD_ADD_BIAS(q2, bt); o[7 * Ls] = CD_ADD_BIAS(q3, bt);     \
        WG_AT(T, a2, b2, e2, f2, g2, h2, r)                                   \
        o[8 * Ls] = CD_ADD_BIAS(r0, bt); o[9 * Ls] = CD_ADD_BIAS(r1, bt);     \
        o[10 * Ls] = CD_ADD_BIAS(r2, bt); o[11 * Ls] = CD_ADD_BIAS(r3, bt);   \
        WG_AT(T, a3, b3, e3, f3, g3, h3, z)                                   \
        o[12 * Ls] = CD_ADD_BIAS(z0, bt); o[13 * Ls] = CD_ADD_BIAS(z1, bt);   \
        o[14 * Ls] = CD_ADD_BIAS(z2, bt); o[15 * Ls] = CD_ADD_BIAS(z3, bt);   \
    }                                                                         \
    ptrdiff_t plane = rows * cols, whole = cols / 4;  /* tiles whose 4 columns fit */ \
    for (ptrdiff_t f = 0; f < F; f++) {                                       \
        /* the sample and row of tiles of each row, counted on: a division  \
         * a row cost as much as the copy */                                  \
        ptrdiff_t n = first / th, ty = first % th;                            \
        for (ptrdiff_t r = 0; r < count; r++, ty++) {                        \
            if (ty == th) { n++; ty = 0; }                                    \
            T* restrict dst = out + n * sample + f * plane + 4 * ty * cols;   \
            const T* restrict a = y + f * tiles + r * tw;                     \
            for (ptrdiff_t i = 0; i < 4 && 4 * ty + i < rows; i++) {          \
                ptrdiff_t t = 0;                                              \
                WG_INTERLEAVE(T, dst, a, Ls, t, whole, relu)                  \
                for (; t < whole; t++) {                                      \
                    dst[4 * t] = WG_RELU(a[t]); dst[4 * t + 1] = WG_RELU(a[Ls + t]); \
                    dst[4 * t + 2] = WG_RELU(a[2 * Ls + t]);                  \
                    dst[4 * t + 3] = WG_RELU(a[3 * Ls + t]);                  \
                }                                                             \
                for (ptrdiff_t q = 4 * whole; q < cols; q++)                  \
                    dst[q] = WG_RELU(a[(q & 3) * Ls + (q >> 2)]);             \
                dst += cols;                                                  \
                a += 4 * Ls;                                                  \
            }                                                                 \
        }                                                                     \
    }                                                                         \
}                                                                             \
                                                                              \
/* V = A g A^T for ``count`` rows of tiles of the F output-gradient      \
 * planes of each sample (rows x cols each, ``sample`` values apart; zeros  \
 * past their edges), from row ``first`` of the batch's: v[p * ps + f L +  \
 * r * tw + t], L = count tw.  The rows split into their columns first,    \
 * then one loop over every (filter, tile).  ``scratch``: 16 (F L + WG_PAD)   \
 * values.                                                                    \
 * Returns whether a value read is out of range (WG_OUT_OF_RANGE). */      \
WG_CLONES RN_NO_MEMCPY static int wg_gradient_chunk_##SUFFIX(                 \
    const T* restrict g, ptrdiff_t F, ptrdiff_t sample, ptrdiff_t rows,       \
    ptrdiff_t cols, ptrdiff_t first, ptrdiff_t count, ptrdiff_t th,           \
    ptrdiff_t tw, T* restrict scratch, T* restrict v, ptrdiff_t ps)           \
{                                                                             \
    ptrdiff_t L = F * count * tw, Ls = L + WG_PAD, plane = rows * cols;       \
    /* e[(4 i + k) * Ls + f * count * tw + s]: row i, column k of filter f's  \
     * gradient on tile s */                                                  \
    T* restrict e = scratch;                                                  \
    int bad = 0;                                                              \
    for (ptrdiff_t f = 0; f < F; f++) {                                       \
        ptrdiff_t n = first / th, ty = first % th;                            \
        for (ptrdiff_t r = 0; r < count; r++, ty++) {                        \
            if (ty == th) { n++; ty = 0; }                                    \
            for (int i = 0; i < 4; i++)                                       \
                wg_split_row_##SUFFIX(g + n * sample + f * plane, rows, cols, 4 * ty + i, \
                                      tw, e + 4 * i * Ls + (f * count + r) * tw, Ls); \
        }                                                                     \
    }                                                                         \
    /* every value read, and zeros: a vectorised loop a plane (one a row      \
     * of 16 values cost as much as the split) */                             \
    for (int a = 0; a < 16; a++)                                              \
        for (ptrdiff_t k = 0; k < L; k++) bad |= WG_OUT_OF_RANGE(T, e[a * Ls + k]); \
    WG_IVDEP                                                                  \
    for (ptrdiff_t t = 0; t < L; t++) {                                       \
        const T* restrict c = e + t;                                          \
        /* A along each row i, then down the columns */                      \
        WG_A(T, c[0], c[Ls], c[2 * Ls], c[3 * Ls], a)                         \
        WG_A(T, c[4 * Ls], c[5 * Ls], c[6 * Ls], c[7 * Ls], b)                \
        WG_A(T, c[8 * Ls], c[9 * Ls], c[10 * Ls], c[11 * Ls], d)              \
        WG_A(T, c[12 * Ls], c[13 * Ls], c[14 * Ls], c[15 * Ls], f)            \
        T* restrict o = v + t;                                                \
        WG_A_DOWN(T, 0, p)                                                  \
        WG_A_DOWN(T, 1, q)                                                  \
        WG_A_DOWN(T, 2, w)                                                  \
        WG_A_DOWN(T, 3, z)                                                  \
        WG_A_DOWN(T, 4, h)                                                  \
        WG_A_DOWN(T, 5, k)                                                  \
    }                                                                         \
    return bad;                                                               \
}

/* The 36 matrices of a transformed weight lie F * C values apart (32 KiB on
 * a 64 -> 128 layer): the weight transform writes each of them in runs of
 * WG_RUN pairs, so that 36 streams a pair, all in one set of the cache, do
 * not evict one another; the gradient's back transform sums and reads them
 * WG_SUM pairs at a time.  Runs of 16 / 64 / 128 pairs, float32 64 -> 128,
 * ms: 0.24 / 0.13 / 0.12 (Intel Xeon). */
#define WG_RUN 64
#define WG_SUM 64

/* G applied to three values k0..k2, into w0..w5 */
#define WG_G(T, k0, k1, k2, w)                                                \
    T w##_s = (k0) + (k2), w##_h = (k0) * (T)0.25 + (k2);                       \
    T w##0 = (k0) * (T)0.25, w##1 = -(w##_s + (k1)) / 6;                       \
    T w##2 = -(w##_s - (k1)) / 6, w##3 = (w##_h + (k1) * (T)0.5) / 6;           \
    T w##4 = (w##_h - (k1) * (T)0.5) / 6, w##5 = (k2);

/* G^T applied to six values x0..x5, into c0..c2 */
#define WG_GT(T, x0, x1, x2, x3, x4, x5, c)                                   \
    T c##_a = (x1) + (x2), c##_b = (x1) - (x2);                                 \
    T c##_c = (x3) + (x4), c##_d = (x3) - (x4);                                 \
    T c##0 = (x0) * (T)0.25 + (c##_c * (T)0.25 - c##_a) / 6;                    \
    T c##1 = (c##_d * (T)0.5 - c##_b) / 6;                                      \
    T c##2 = (c##_c - c##_a) / 6 + (x5);

#define WG_WEIGHT(T, SUFFIX)                                                  \
/* G k G^T of each (filter, channel) pair of w (F, C, 3, 3), with         \
 * ``flipped`` of k flipped in both axes (the input gradient's), into      \
 * out[p * F * C + f * C + c], or with ``by_channel`` into out[p * C * F + \
 * c * F + f]: out's rows a (filters, or channels by_channel) from         \
 * ``first`` to ``last``.  Returns whether a value is out of range         \
 * (WG_OUT_OF_RANGE). */                                                   \
WG_CLONES static int wg_weight_##SUFFIX(                            \
    const T* restrict w, ptrdiff_t F, ptrdiff_t C, int flipped,               \
    int by_channel, ptrdiff_t first, ptrdiff_t last, T* restrict out)         \
{                                                                             \
    ptrdiff_t P = F * C;                                                      \
    /* runs along b, across a row (channels, or filters by_channel) */       \
    ptrdiff_t B = by_channel ? F : C;                                         \
    int bad = 0;                                                              \
    /* the run's kernels, their column transforms and their transforms, \
     * a pair's value at [.][bi]: the loops over the run vectorise (the    \
     * divisions by 6 a pair at a time took 150 cycles a pair) */          \
    T g[9][WG_RUN], r[18][WG_RUN], run[WG_POSITIONS][WG_RUN];                 \
    for (ptrdiff_t a = first; a < last; a++)                                  \
        for (ptrdiff_t b0 = 0; b0 < B; b0 += WG_RUN) {                        \
            ptrdiff_t nb = B - b0 < WG_RUN ? B - b0 : WG_RUN;                 \
            for (ptrdiff_t bi = 0; bi < nb; bi++) {                           \
                ptrdiff_t f = by_channel ? b0 + bi : a, c = by_channel ? a : b0 + bi; \
                const T* k = w + (f * C + c) * 9;                             \
                for (int i = 0; i < 9; i++) g[i][bi] = flipped ? k[8 - i] : k[i]; \
            }                                                                 \
            for (int i = 0; i < 9; i++)                                       \
                for (ptrdiff_t bi = 0; bi < nb; bi++)                         \
                    bad |= WG_OUT_OF_RANGE(T, g[i][bi]);                      \
            for (int j = 0; j < 3; j++)  /* G down column j: r[3 i + j] */    \
                for (ptrdiff_t bi = 0; bi < nb; bi++) {                       \
                    WG_G(T, g[j][bi], g[3 + j][bi], g[6 + j][bi], d)          \
                    r[j][bi] = d0; r[3 + j][bi] = d1; r[6 + j][bi] = d2;      \
                    r[9 + j][bi] = d3; r[12 + j][bi] = d4; r[15 + j][bi] = d5; \
                }                                                             \
            for (int i = 0; i < 6; i++)  /* then along row i */              \
                for (ptrdiff_t bi = 0; bi < nb; bi++) {                       \
                    WG_G(T, r[3 * i][bi], r[3 * i + 1][bi], r[3 * i + 2][bi], e) \
                    run[6 * i][bi] = e0; run[6 * i + 1][bi] = e1;             \
                    run[6 * i + 2][bi] = e2; run[6 * i + 3][bi] = e3;         \
                    run[6 * i + 4][bi] = e4; run[6 * i + 5][bi] = e5;         \
                }                                                             \
            for (int p = 0; p < WG_POSITIONS; p++)                            \
                for (ptrdiff_t bi = 0; bi < nb; bi++)                         \
                    out[p * P + a * B + b0 + bi] = run[p][bi];                \
        }                                                                     \
    return bad;                                                               \
}                                                                             \
                                                                              \
/* G^T X G of each (filter, channel) pair q = f C + c from ``first`` to    \
 * ``last``, X the sum of the ``parts`` partials x (parts, 36, F, C) added  \
 * in order, X[i][j] = x[., 6 i + j, f, c], into out (F, C, 3, 3).  The    \
 * sums of WG_SUM pairs at a time, each partial's 36 rows read along runs  \
 * of them (36 streams, all F C values apart, thrash the cache). */         \
WG_CLONES static void wg_weight_back_##SUFFIX(                      \
    const T* restrict x, ptrdiff_t parts, ptrdiff_t F, ptrdiff_t C,           \
    ptrdiff_t first, ptrdiff_t last, T* restrict out)                         \
{                                                                             \
    ptrdiff_t P = F * C;                                                      \
    T sum[WG_POSITIONS][WG_SUM], r[18][WG_SUM], o[9][WG_SUM];                 \
    for (ptrdiff_t q0 = first; q0 < last; q0 += WG_SUM) {                     \
        ptrdiff_t nq = last - q0 < WG_SUM ? last - q0 : WG_SUM;               \
        for (int p = 0; p < WG_POSITIONS; p++)                                \
            for (ptrdiff_t qi = 0; qi < nq; qi++) sum[p][qi] = x[p * P + q0 + qi]; \
        for (ptrdiff_t part = 1; part < parts; part++)                        \
            for (int p = 0; p < WG_POSITIONS; p++)                            \
                for (ptrdiff_t qi = 0; qi < nq; qi++)                         \
                    sum[p][qi] += x[(part * WG_POSITIONS + p) * P + q0 + qi]; \
        /* G^T down column j, r[6 i + j], then along row i, o[3 i + j]:   \
         * loops over the run, which vectorise (see wg_weight) */           \
        for (int j = 0; j < 6; j++)                                           \
            for (ptrdiff_t qi = 0; qi < nq; qi++) {                           \
                WG_GT(T, sum[j][qi], sum[6 + j][qi], sum[12 + j][qi],         \
                      sum[18 + j][qi], sum[24 + j][qi], sum[30 + j][qi], d)   \
                r[j][qi] = d0; r[6 + j][qi] = d1; r[12 + j][qi] = d2;         \
            }                                                                 \
        for (int i = 0; i < 3; i++)                                           \
            for (ptrdiff_t qi = 0; qi < nq; qi++) {                           \
                WG_GT(T, r[6 * i][qi], r[6 * i + 1][qi], r[6 * i + 2][qi],    \
                      r[6 * i + 3][qi], r[6 * i + 4][qi], r[6 * i + 5][qi], e) \
                o[3 * i][qi] = e0; o[3 * i + 1][qi] = e1; o[3 * i + 2][qi] = e2; \
            }                                                                 \
        for (ptrdiff_t qi = 0; qi < nq; qi++)                                 \
            for (int k = 0; k < 9; k++) out[(q0 + qi) * 9 + k] = o[k][qi];    \
    }                                                                         \
}

WG_WEIGHT(float, f32)
WG_WEIGHT(double, f64)
WG_LOOPS(float, f32)
WG_LOOPS(double, f64)

#endif /* CYCONV_WINOGRAD_LOOPS_H */
