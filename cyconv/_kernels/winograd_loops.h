/* The transforms of Winograd's F(2x2, 3x3) convolution (Lavin and Gray,
 * 2016), one row of tiles at a time, between the planes of NCHW arrays and
 * the (16, channels, tiles) matrices whose products _conv_winograd.pyx
 * takes with BLAS.  A tile is the 4x4 input window of a 2x2 block of
 * outputs; tiles of a row are 2 columns apart, so each row is first split
 * into its even and odd columns, and every loop over the tiles of a row
 * runs over unit strides (vectorised by the compiler).
 *
 *   input:          U = B^T d B    (d: 4x4 window of the zero-padded input)
 *   output:         Y = A^T M A    (M: 4x4 product, Y: the 2x2 outputs)
 *   output's adjoint: V = A g A^T  (g: 2x2 output gradient)
 *
 * with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] and
 * A^T = [1 1 1 0; 0 1 -1 -1]: additions only, so every instruction-set
 * clone gives the same bits.  Position p = 4 i + j of a transform goes to
 * row p of its matrix, ``ps`` values apart.
 */
#ifndef CYCONV_WINOGRAD_LOOPS_H
#define CYCONV_WINOGRAD_LOOPS_H

#include <stddef.h>

#include "run_loops.h"
#include "store_rules.h"

/* The loops over the tiles of a row write 16 rows of a matrix, ps values
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
 * value above sqrt(max) / 1024 (2^54 in float, 2^502 in double), whose
 * sums and products in the transforms could overflow where the direct
 * sum does not (and an overflow times a zero weight is NaN).  Two
 * negated comparisons, each true for NaN, or-ed as integers (not &&,
 * whose branch GCC 12 kept scalar: a fifth of the input transform). */
#define WG_LIMIT(T) ((T)(sizeof(T) == sizeof(float) ? 0x1p54 : 0x1p502))
#define WG_OUT_OF_RANGE(T, v) (!((v) <= WG_LIMIT(T)) | !((v) >= -WG_LIMIT(T)))

/* inlined into each clone of its callers */
#if defined(__GNUC__)
#define WG_INLINE __attribute__((always_inline)) inline
#else
#define WG_INLINE inline
#endif

/* One row of a window, d B: x0..x3 (x = a, b, c, d for rows 0..3) from
 * its four columns, R[t], R[S + t], R[2 S + t], R[3 S + t]. */
#define WG_ROW(T, R, S, x)                                                    \
    T x##0 = R[t] - R[2 * S + t], x##1 = R[S + t] + R[2 * S + t];             \
    T x##2 = R[2 * S + t] - R[S + t], x##3 = R[S + t] - R[3 * S + t];
/* B^T down column j: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 */
#define WG_COLUMN(j, r0, r1, r2, r3)                                          \
    v[(0 + j) * ps + t] = r0 - r2; v[(4 + j) * ps + t] = r1 + r2;             \
    v[(8 + j) * ps + t] = r2 - r1; v[(12 + j) * ps + t] = r1 - r3;

/* U = B^T d B of tile t, from the rows R0..R3 (WG_ROW) into v */
#define WG_INPUT_TILE(T)                                                      \
    WG_ROW(T, R0, S, a) WG_ROW(T, R1, S, b) WG_ROW(T, R2, S, c) WG_ROW(T, R3, S, d) \
    WG_COLUMN(0, a0, b0, c0, d0) WG_COLUMN(1, a1, b1, c1, d1)                 \
    WG_COLUMN(2, a2, b2, c2, d2) WG_COLUMN(3, a3, b3, c3, d3)

/* One row i of a window, d B: x0..x3 (x = a, b, c, d for rows 0..3) from
 * its four columns, channel ch of w0[(i * width + j) * C]. */
#define WG_TILE_ROW(T, i, x)                                                       \
    T x##0 = w0[((i) * width) * C + ch] - w0[((i) * width + 2) * C + ch];       \
    T x##1 = w0[((i) * width + 1) * C + ch] + w0[((i) * width + 2) * C + ch];   \
    T x##2 = w0[((i) * width + 2) * C + ch] - w0[((i) * width + 1) * C + ch];   \
    T x##3 = w0[((i) * width + 1) * C + ch] - w0[((i) * width + 3) * C + ch];
/* B^T down column j: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 */
#define WG_TILE_COLUMN(j, r0, r1, r2, r3)                                          \
    v[(0 + j) * ps + ch] = r0 - r2; v[(4 + j) * ps + ch] = r1 + r2;             \
    v[(8 + j) * ps + ch] = r2 - r1; v[(12 + j) * ps + ch] = r1 - r3;

#define WG_LOOPS(T, SUFFIX)                                                   \
/* Row ``row`` of an output-gradient plane (rows x cols) split into       \
 * even[t] and odd[t], t < n (columns 2 t and 2 t + 1), zeros past its     \
 * edges.  Returns whether a value of the row is out of range              \
 * (WG_OUT_OF_RANGE). */                                                   \
WG_INLINE static int wg_split_row_##SUFFIX(                                   \
    const T* restrict plane, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t row,   \
    ptrdiff_t n, T* restrict even, T* restrict odd)                           \
{                                                                             \
    int bad = 0;                                                              \
    if (row >= rows) {                                                        \
        for (ptrdiff_t t = 0; t < n; t++) { even[t] = 0; odd[t] = 0; }        \
        return bad;                                                           \
    }                                                                         \
    const T* src = plane + row * cols;                                        \
    ptrdiff_t pairs = cols / 2 < n ? cols / 2 : n;  /* both columns inside */ \
    for (ptrdiff_t t = 0; t < pairs; t++) {                                   \
        even[t] = src[2 * t];                                                 \
        odd[t] = src[2 * t + 1];                                              \
    }                                                                         \
    for (ptrdiff_t t = pairs; t < n; t++) {  /* an odd row's last column */  \
        even[t] = 2 * t < cols ? src[2 * t] : 0;                              \
        odd[t] = 0;                                                           \
    }                                                                         \
    /* the row itself, in a loop of its own (vectorised, as rn_all_finite) */ \
    for (ptrdiff_t q = 0; q < cols; q++) bad |= WG_OUT_OF_RANGE(T, src[q]);   \
    return bad;                                                               \
}                                                                             \
                                                                              \
/* U for ``count`` rows of tiles of one channel, from row ``first`` of the \
 * batch's (th rows of tiles a sample, tw tiles a row): u[p * ps + r * tw  \
 * + t], the windows of row r starting at row 2 ty - top and column -left  \
 * of its sample's plane (zero padding around; planes ``sample`` values     \
 * apart).  Each padded row the chunk reads is copied once into ``row``     \
 * and split four ways, columns 2 t, 2 t + 1, 2 t + 2 and 2 t + 3, into     \
 * arrays of the even and of the odd padded rows: then every tile of a run  \
 * of rows of tiles reads each of its 16 values at its own index, and one   \
 * vectorised loop transforms the run.  With ``bl`` > 1 the tiles go in    \
 * blocks of bl, ``bs`` values apart: tile i to u[p * ps + (i / bl) * bs +  \
 * i % bl] (the blocked products' layout); bl = bs = 1 is the plain row.   \
 * ``scratch``: 8 (count + 1) tw + 2 tw + 2 values.  Returns whether a     \
 * value read is out of range (WG_OUT_OF_RANGE). */                        \
RN_CLONES RN_NO_MEMCPY static int wg_input_chunk_##SUFFIX(                                 \
    const T* restrict x, ptrdiff_t sample, ptrdiff_t rows, ptrdiff_t cols,    \
    ptrdiff_t first, ptrdiff_t count, ptrdiff_t th, ptrdiff_t top,            \
    ptrdiff_t left, ptrdiff_t tw, T* restrict scratch, T* restrict u,         \
    ptrdiff_t ps, ptrdiff_t bl, ptrdiff_t bs)                                 \
{                                                                             \
    ptrdiff_t S = (count + 1) * tw;   /* values of each split array */        \
    T* restrict row = scratch;                                                \
    T* restrict split = scratch + 2 * tw + 2;                                 \
    /* copied columns: q - left inside the plane */                           \
    ptrdiff_t lo = left, hi = cols + left < 2 * tw + 2 ? cols + left : 2 * tw + 2; \
    int bad = 0;                                                              \
    for (ptrdiff_t done = 0; done < count;) {                                 \
        ptrdiff_t n = (first + done) / th, ty0 = (first + done) % th;         \
        ptrdiff_t run = th - ty0 < count - done ? th - ty0 : count - done;    \
        const T* plane = x + n * sample;                                      \
        for (ptrdiff_t j = 0; j < 2 * run + 2; j++) {                         \
            ptrdiff_t at = 2 * ty0 + j - top;                                 \
            for (ptrdiff_t q = 0; q < 2 * tw + 2; q++) row[q] = 0;            \
            if (at >= 0 && at < rows) {                                       \
                const T* src = plane + at * cols;                             \
                for (ptrdiff_t q = lo; q < hi; q++) row[q] = src[q - left];   \
                for (ptrdiff_t q = 0; q < cols; q++) bad |= WG_OUT_OF_RANGE(T, src[q]); \
            }                                                                 \
            T* restrict a = split + 4 * (j & 1) * S + (j >> 1) * tw;          \
            for (ptrdiff_t t = 0; t < tw; t++) {                              \
                a[t] = row[2 * t];                                            \
                a[S + t] = row[2 * t + 1];                                    \
                a[2 * S + t] = row[2 * t + 2];                                \
                a[3 * S + t] = row[2 * t + 3];                                \
            }                                                                 \
        }                                                                     \
        /* padded rows 2 ty + i: i = 0, 2 even (the second a row of tiles    \
         * further), i = 1, 3 odd */                                          \
        /* in pieces that stay within a block of tiles */                    \
        for (ptrdiff_t s = 0; s < run * tw;) {                                \
            ptrdiff_t i = done * tw + s, lane = i % bl;                       \
            ptrdiff_t piece = bl - lane < run * tw - s ? bl - lane : run * tw - s; \
            if (bl == 1) piece = run * tw - s;                                \
            const T* restrict R0 = split + s;      const T* restrict R1 = split + 4 * S + s; \
            const T* restrict R2 = split + tw + s; const T* restrict R3 = split + 4 * S + tw + s; \
            T* restrict v = u + (i / bl) * bs + lane;                         \
            /* a whole block of 16 floats in straight-line vectors */         \
            if (piece == 16) {                                                \
                WG_IVDEP                                                      \
                for (ptrdiff_t t = 0; t < 16; t++) { WG_INPUT_TILE(T) }       \
            } else {                                                          \
                WG_IVDEP                                                      \
                for (ptrdiff_t t = 0; t < piece; t++) { WG_INPUT_TILE(T) }    \
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
 * 2 ty - top and column -left of their sample's planes (zero padding      \
 * around; planes rows x cols).  The padded rows a run of rows of tiles    \
 * reads are first gathered channels last, scratch[(j * width + q) * C +   \
 * c]: then the loop over the channels of a tile runs over unit strides    \
 * (vectorised however small the planes; a loop over the tiles of a row    \
 * ran a few lanes wide on 8x8 and 16x16 planes).  With ``bl`` < C the     \
 * channels go in blocks of bl, ``bs`` values apart: u[p * ps + (c / bl)   \
 * * bs + tile * bl + c % bl] (the blocked products' layout; bl = C is the \
 * plain one).  ``scratch``: (2 count + 2) (2 tw + 2) C values.  Returns   \
 * whether a value read is out of range (WG_OUT_OF_RANGE). */              \
RN_CLONES RN_NO_MEMCPY static int wg_input_tiles_##SUFFIX(                    \
    const T* restrict x, ptrdiff_t C, ptrdiff_t rows, ptrdiff_t cols,         \
    ptrdiff_t first, ptrdiff_t count, ptrdiff_t th, ptrdiff_t top,            \
    ptrdiff_t left, ptrdiff_t tw, T* restrict scratch, T* restrict u,         \
    ptrdiff_t ps, ptrdiff_t bl, ptrdiff_t bs)                                 \
{                                                                             \
    ptrdiff_t plane = rows * cols, width = 2 * tw + 2;                        \
    int bad = 0;                                                              \
    for (ptrdiff_t done = 0; done < count;) {                                 \
        ptrdiff_t n = (first + done) / th, ty0 = (first + done) % th;         \
        ptrdiff_t run = th - ty0 < count - done ? th - ty0 : count - done;    \
        const T* xs = x + n * C * plane;                                      \
        for (ptrdiff_t j = 0; j < 2 * run + 2; j++) {                         \
            ptrdiff_t at = 2 * ty0 + j - top;                                 \
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
        for (ptrdiff_t k = 0; k < (2 * run + 2) * width * C; k++)             \
            bad |= WG_OUT_OF_RANGE(T, scratch[k]);                            \
        for (ptrdiff_t r = 0; r < run; r++) {                                 \
            for (ptrdiff_t t = 0; t < tw; t++) {                              \
                const T* restrict w0 = scratch + (2 * r * width + 2 * t) * C; \
                for (ptrdiff_t k0 = 0; k0 < C; k0 += bl) {                    \
                    /* v[.. + ch] is channel ch of this tile, ch in the block */ \
                    T* restrict v = u + (k0 / bl) * bs + ((done + r) * tw + t) * bl - k0; \
                    ptrdiff_t k1 = C - k0 < bl ? C : k0 + bl;                 \
                    WG_IVDEP                                                  \
                    for (ptrdiff_t ch = k0; ch < k1; ch++) {                  \
                        WG_TILE_ROW(T, 0, a) WG_TILE_ROW(T, 1, b) WG_TILE_ROW(T, 2, c) WG_TILE_ROW(T, 3, d) \
                        WG_TILE_COLUMN(0, a0, b0, c0, d0) WG_TILE_COLUMN(1, a1, b1, c1, d1) \
                        WG_TILE_COLUMN(2, a2, b2, c2, d2) WG_TILE_COLUMN(3, a3, b3, c3, d3) \
                    }                                                         \
                }                                                             \
            }                                                                 \
        }                                                                     \
        done += run;                                                          \
    }                                                                         \
    return bad;                                                               \
}                                                                             \
                                                                              \
/* Y = A^T M A for ``count`` rows of tiles of one output plane per sample   \
 * (rows x cols, ``sample`` values apart), from row ``first`` of the        \
 * batch's, from m[p * ps + r * tw + t]: rows 2 ty and 2 ty + 1 (those    \
 * inside the plane) written, plus ``bias``, with ``relu`` max(., 0) as     \
 * np.maximum.  ``scratch``: 4 count tw values. */                          \
RN_CLONES RN_NO_MEMCPY static void wg_output_chunk_##SUFFIX(                               \
    const T* restrict m, ptrdiff_t ps, T* restrict out, ptrdiff_t sample,     \
    ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t first, ptrdiff_t count,         \
    ptrdiff_t th, ptrdiff_t tw, T bias, int relu, T* restrict scratch)        \
{                                                                             \
    ptrdiff_t L = count * tw;                                                 \
    T* restrict y0 = scratch;                                                 \
    T* restrict y1 = scratch + 2 * L;                                         \
    WG_IVDEP                                                                  \
    for (ptrdiff_t t = 0; t < L; t++) {                                       \
        /* A^T down the columns: s (row 0), w (row 1) */                      \
        T s0 = m[t] + m[4 * ps + t] + m[8 * ps + t];                          \
        T s1 = m[ps + t] + m[5 * ps + t] + m[9 * ps + t];                     \
        T s2 = m[2 * ps + t] + m[6 * ps + t] + m[10 * ps + t];                \
        T s3 = m[3 * ps + t] + m[7 * ps + t] + m[11 * ps + t];                \
        T w0 = m[4 * ps + t] - m[8 * ps + t] - m[12 * ps + t];                \
        T w1 = m[5 * ps + t] - m[9 * ps + t] - m[13 * ps + t];                \
        T w2 = m[6 * ps + t] - m[10 * ps + t] - m[14 * ps + t];               \
        T w3 = m[7 * ps + t] - m[11 * ps + t] - m[15 * ps + t];               \
        /* then along the rows, and the bias */                               \
        y0[2 * t] = CD_ADD_BIAS(s0 + s1 + s2, bias);                          \
        y0[2 * t + 1] = CD_ADD_BIAS(s1 - s2 - s3, bias);                      \
        y1[2 * t] = CD_ADD_BIAS(w0 + w1 + w2, bias);                          \
        y1[2 * t + 1] = CD_ADD_BIAS(w1 - w2 - w3, bias);                      \
    }                                                                         \
    /* the sample and row of tiles of each row, counted on: a division a    \
     * row cost as much as the copy */                                        \
    ptrdiff_t n = first / th, ty = first % th;                                \
    for (ptrdiff_t r = 0; r < count; r++, ty++) {                            \
        if (ty == th) { n++; ty = 0; }                                        \
        T* restrict dst = out + n * sample + 2 * ty * cols;                   \
        const T* restrict a = y0 + 2 * r * tw;                                \
        const T* restrict b = y1 + 2 * r * tw;                                \
        int second = 2 * ty + 1 < rows;                                       \
        if (relu) {                                                           \
            for (ptrdiff_t q = 0; q < cols; q++) dst[q] = CD_RELU(a[q]);      \
            if (second)                                                       \
                for (ptrdiff_t q = 0; q < cols; q++) dst[cols + q] = CD_RELU(b[q]); \
        } else {                                                              \
            for (ptrdiff_t q = 0; q < cols; q++) dst[q] = a[q];               \
            if (second)                                                       \
                for (ptrdiff_t q = 0; q < cols; q++) dst[cols + q] = b[q];    \
        }                                                                     \
    }                                                                         \
}                                                                             \
                                                                              \
/* V = A g A^T for ``count`` rows of tiles of one output-gradient plane     \
 * per sample (rows x cols, ``sample`` values apart; zeros past its edges), \
 * from row ``first`` of the batch's: v[p * ps + r * tw + t].  ``scratch``: \
 * 4 count tw values.  Returns whether a value read is out of range (WG_OUT_OF_RANGE). */       \
RN_CLONES RN_NO_MEMCPY static int wg_gradient_chunk_##SUFFIX(                              \
    const T* restrict g, ptrdiff_t sample, ptrdiff_t rows, ptrdiff_t cols,    \
    ptrdiff_t first, ptrdiff_t count, ptrdiff_t th, ptrdiff_t tw,             \
    T* restrict scratch, T* restrict v, ptrdiff_t ps)                         \
{                                                                             \
    ptrdiff_t L = count * tw;                                                 \
    T* restrict e0 = scratch; T* restrict o0 = scratch + L;                   \
    T* restrict e1 = scratch + 2 * L; T* restrict o1 = scratch + 3 * L;       \
    int bad = 0;                                                              \
    ptrdiff_t n = first / th, ty = first % th;                                \
    for (ptrdiff_t r = 0; r < count; r++, ty++) {                            \
        if (ty == th) { n++; ty = 0; }                                        \
        ptrdiff_t at = r * tw;                                                \
        bad |= wg_split_row_##SUFFIX(g + n * sample, rows, cols, 2 * ty, tw,       \
                                     e0 + at, o0 + at)                        \
            | wg_split_row_##SUFFIX(g + n * sample, rows, cols, 2 * ty + 1, tw,  \
                                    e1 + at, o1 + at);                        \
    }                                                                         \
    WG_IVDEP                                                                  \
    for (ptrdiff_t t = 0; t < L; t++) {                                       \
        /* A g: rows g0, g0 + g1, g0 - g1, -g1 (each an even, odd pair), */   \
        /* then g A^T along each: p, p + q, p - q, -q */                      \
        T p0 = e0[t], q0 = o0[t];                                             \
        T p1 = e0[t] + e1[t], q1 = o0[t] + o1[t];                             \
        T p2 = e0[t] - e1[t], q2 = o0[t] - o1[t];                             \
        T p3 = -e1[t], q3 = -o1[t];                                           \
        v[t] = p0; v[ps + t] = p0 + q0; v[2 * ps + t] = p0 - q0; v[3 * ps + t] = -q0; \
        v[4 * ps + t] = p1; v[5 * ps + t] = p1 + q1;                          \
        v[6 * ps + t] = p1 - q1; v[7 * ps + t] = -q1;                         \
        v[8 * ps + t] = p2; v[9 * ps + t] = p2 + q2;                          \
        v[10 * ps + t] = p2 - q2; v[11 * ps + t] = -q2;                       \
        v[12 * ps + t] = p3; v[13 * ps + t] = p3 + q3;                        \
        v[14 * ps + t] = p3 - q3; v[15 * ps + t] = -q3;                       \
    }                                                                         \
    return bad;                                                               \
}

/* The 16 matrices of a transformed weight lie F * C values apart (32 KiB on
 * a 64 -> 128 layer): the weight transform writes each of them in runs of
 * WG_RUN pairs, so that 16 streams a pair, all in one set of the cache, do
 * not evict one another (4x faster); the gradient's back transform sums
 * and reads them WG_SUM pairs at a time. */
#define WG_RUN 16
#define WG_SUM 128

#define WG_WEIGHT(T, SUFFIX)                                                  \
/* G k G^T of each (filter, channel) pair of w (F, C, 3, 3), with         \
 * ``flipped`` of k flipped in both axes (the input gradient's), into      \
 * out[p * F * C + f * C + c], or with ``by_channel`` into out[p * C * F + \
 * c * F + f]: out's rows a (filters, or channels by_channel) from         \
 * ``first`` to ``last``.  G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].  \
 * Returns whether a value is out of range (WG_OUT_OF_RANGE). */           \
RN_CLONES static int wg_weight_##SUFFIX(                                      \
    const T* restrict w, ptrdiff_t F, ptrdiff_t C, int flipped,               \
    int by_channel, ptrdiff_t first, ptrdiff_t last, T* restrict out)         \
{                                                                             \
    const T half = (T)0.5;                                                    \
    ptrdiff_t P = F * C;                                                      \
    /* runs along b, across a row (channels, or filters by_channel) */       \
    ptrdiff_t B = by_channel ? F : C;                                         \
    int bad = 0;                                                              \
    T run[16][WG_RUN];                                                        \
    for (ptrdiff_t a = first; a < last; a++)                                  \
        for (ptrdiff_t b0 = 0; b0 < B; b0 += WG_RUN) {                        \
            ptrdiff_t nb = B - b0 < WG_RUN ? B - b0 : WG_RUN;                 \
            for (ptrdiff_t bi = 0; bi < nb; bi++) {                           \
                ptrdiff_t f = by_channel ? b0 + bi : a, c = by_channel ? a : b0 + bi; \
                const T* k = w + (f * C + c) * 9;                             \
                T g[3][3], r[4][3];                                           \
                for (int i = 0; i < 9; i++) {                                 \
                    g[i / 3][i % 3] = flipped ? k[8 - i] : k[i];              \
                    bad |= WG_OUT_OF_RANGE(T, k[i]);                          \
                }                                                             \
                for (int j = 0; j < 3; j++) {                                 \
                    T outer = g[0][j] + g[2][j];                              \
                    r[0][j] = g[0][j];                                        \
                    r[1][j] = (outer + g[1][j]) * half;                       \
                    r[2][j] = (outer - g[1][j]) * half;                       \
                    r[3][j] = g[2][j];                                        \
                }                                                             \
                for (int i = 0; i < 4; i++) {                                 \
                    T outer = r[i][0] + r[i][2];                              \
                    run[4 * i][bi] = r[i][0];                                 \
                    run[4 * i + 1][bi] = (outer + r[i][1]) * half;            \
                    run[4 * i + 2][bi] = (outer - r[i][1]) * half;            \
                    run[4 * i + 3][bi] = r[i][2];                             \
                }                                                             \
            }                                                                 \
            for (int p = 0; p < 16; p++)                                      \
                for (ptrdiff_t bi = 0; bi < nb; bi++)                         \
                    out[p * P + a * B + b0 + bi] = run[p][bi];                \
        }                                                                     \
    return bad;                                                               \
}                                                                             \
                                                                              \
/* G^T X G of each (filter, channel) pair q = f C + c from ``first`` to    \
 * ``last``, X the sum of the ``parts`` partials x (parts, 16, F, C) added  \
 * in order, X[i][j] = x[., 4 i + j, f, c], into out (F, C, 3, 3).  The    \
 * sums of WG_SUM pairs at a time, each partial's 16 rows read along runs  \
 * of them (16 parts of 16 streams, all 32 KiB apart, thrashed the cache). */ \
RN_CLONES static void wg_weight_back_##SUFFIX(                                \
    const T* restrict x, ptrdiff_t parts, ptrdiff_t F, ptrdiff_t C,           \
    ptrdiff_t first, ptrdiff_t last, T* restrict out)                         \
{                                                                             \
    const T half = (T)0.5;                                                    \
    ptrdiff_t P = F * C;                                                      \
    T sum[16][WG_SUM];                                                        \
    for (ptrdiff_t q0 = first; q0 < last; q0 += WG_SUM) {                     \
        ptrdiff_t nq = last - q0 < WG_SUM ? last - q0 : WG_SUM;               \
        for (int p = 0; p < 16; p++)                                          \
            for (ptrdiff_t qi = 0; qi < nq; qi++) sum[p][qi] = x[p * P + q0 + qi]; \
        for (ptrdiff_t part = 1; part < parts; part++)                        \
            for (int p = 0; p < 16; p++)                                      \
                for (ptrdiff_t qi = 0; qi < nq; qi++)                         \
                    sum[p][qi] += x[(part * 16 + p) * P + q0 + qi];           \
        for (ptrdiff_t qi = 0; qi < nq; qi++) {                               \
            T r[3][4];                                                        \
            for (int j = 0; j < 4; j++) {                                     \
                T inner = (sum[4 + j][qi] + sum[8 + j][qi]) * half;           \
                r[0][j] = sum[j][qi] + inner;                                 \
                r[1][j] = (sum[4 + j][qi] - sum[8 + j][qi]) * half;           \
                r[2][j] = inner + sum[12 + j][qi];                            \
            }                                                                 \
            T* o = out + (q0 + qi) * 9;                                       \
            for (int i = 0; i < 3; i++) {                                     \
                T inner = (r[i][1] + r[i][2]) * half;                         \
                o[3 * i] = r[i][0] + inner;                                   \
                o[3 * i + 1] = (r[i][1] - r[i][2]) * half;                    \
                o[3 * i + 2] = inner + r[i][3];                               \
            }                                                                 \
        }                                                                     \
    }                                                                         \
}

WG_WEIGHT(float, f32)
WG_WEIGHT(double, f64)
WG_LOOPS(float, f32)
WG_LOOPS(double, f64)

#endif /* CYCONV_WINOGRAD_LOOPS_H */
