/* Filter-blocked direct convolution microkernels: vectorised over blocks
 * of 16 float (8 double) filters rather than over output positions, so that
 * small planes waste no lanes.  Each input value is broadcast against a
 * block of weights packed (blocks, C, taps, 16); the output is a
 * position-major tile (positions, filters) that the caller transposes to
 * NCHW.  One variant per instruction set, as in conv_direct.h (whose
 * CD_X86 and dispatch conventions this follows); the loops and threading
 * are in _conv_direct.pyx.
 */
#ifndef CYCONV_CONV_BLOCKED_H
#define CYCONV_CONV_BLOCKED_H

#include <stdint.h>
#include <string.h>

#include "conv_direct.h"

/* ---- portable: scalars (a block is 16 or 8 of them) ---- */
#define CB_ATTR
#define CB_PMAX1 1
#define CB_PMAX2 0
#define CB_PMAX3 0
#define CB_TMAX1 6
#define CB_TMAX2 0

#define CB_T float
#define CB_V float
#define CB_VL 1
#define CB_B 16
#define CB_FMA(a, b, c) fmaf(a, b, c)
#define CB_ZERO() 0
#define CB_LOAD(p) (*(p))
#define CB_STORE(p, v) (*(p) = (v))
#define CB_BCAST(p) (*(p))
#define CB_ADD(a, b) ((a) + (b))
#define CB_MUL(a, b) ((a) * (b))
#define CB_SIGN_ZERO(v) ((v) * 0.0f)
#define CB_SUFFIX portable_f32
#include "conv_blocked_impl.h"

#define CB_T double
#define CB_V double
#define CB_VL 1
#define CB_B 8
#define CB_FMA(a, b, c) fma(a, b, c)
#define CB_ZERO() 0
#define CB_LOAD(p) (*(p))
#define CB_STORE(p, v) (*(p) = (v))
#define CB_BCAST(p) (*(p))
#define CB_ADD(a, b) ((a) + (b))
#define CB_MUL(a, b) ((a) * (b))
#define CB_SIGN_ZERO(v) ((v) * 0.0)
#define CB_SUFFIX portable_f64
#include "conv_blocked_impl.h"

#undef CB_ATTR
#undef CB_PMAX1
#undef CB_PMAX2
#undef CB_PMAX3
#undef CB_TMAX1
#undef CB_TMAX2

#if CD_X86
/* ---- AVX2 + FMA: a block is two ymm; 16 registers hold tiles of 6
 * positions (or taps) x 1 block (12 accumulators) ---- */
#define CB_ATTR __attribute__((target("avx2,fma")))
#define CB_PMAX1 6
#define CB_PMAX2 0
#define CB_PMAX3 0
#define CB_TMAX1 6
#define CB_TMAX2 0

#define CB_T float
#define CB_V __m256
#define CB_VL 8
#define CB_B 16
#define CB_ZERO() _mm256_setzero_ps()
#define CB_LOAD(p) _mm256_loadu_ps(p)
#define CB_STORE(p, v) _mm256_storeu_ps(p, v)
#define CB_BCAST(p) _mm256_broadcast_ss(p)
#define CB_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define CB_ADD(a, b) _mm256_add_ps(a, b)
#define CB_MUL(a, b) _mm256_mul_ps(a, b)
#define CB_SIGN_ZERO(v) _mm256_and_ps(v, _mm256_set1_ps(-0.0f))
#define CB_SUFFIX avx2_f32
#include "conv_blocked_impl.h"

#define CB_T double
#define CB_V __m256d
#define CB_VL 4
#define CB_B 8
#define CB_ZERO() _mm256_setzero_pd()
#define CB_LOAD(p) _mm256_loadu_pd(p)
#define CB_STORE(p, v) _mm256_storeu_pd(p, v)
#define CB_BCAST(p) _mm256_broadcast_sd(p)
#define CB_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define CB_ADD(a, b) _mm256_add_pd(a, b)
#define CB_MUL(a, b) _mm256_mul_pd(a, b)
#define CB_SIGN_ZERO(v) _mm256_and_pd(v, _mm256_set1_pd(-0.0))
#define CB_SUFFIX avx2_f64
#include "conv_blocked_impl.h"
#undef CB_ATTR
#undef CB_PMAX1
#undef CB_PMAX2
#undef CB_PMAX3
#undef CB_TMAX1
#undef CB_TMAX2

/* ---- AVX-512F: a block is one zmm; 32 registers hold tiles of 24
 * accumulators: 24 positions (or taps) x 1 block, or 12 x 2 ---- */
#define CB_ATTR __attribute__((target("avx512f")))
#define CB_PMAX1 24
#define CB_PMAX2 12
#define CB_PMAX3 8
#define CB_TMAX1 24
#define CB_TMAX2 12

#define CB_T float
#define CB_V __m512
#define CB_VL 16
#define CB_B 16
#define CB_ZERO() _mm512_setzero_ps()
#define CB_LOAD(p) _mm512_loadu_ps(p)
#define CB_STORE(p, v) _mm512_storeu_ps(p, v)
#define CB_BCAST(p) _mm512_set1_ps(*(p))
#define CB_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define CB_ADD(a, b) _mm512_add_ps(a, b)
#define CB_MUL(a, b) _mm512_mul_ps(a, b)
#define CB_SIGN_ZERO(v) _mm512_castsi512_ps(_mm512_and_si512( \
    _mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN)))
#define CB_SUFFIX avx512_f32
#include "conv_blocked_impl.h"

#define CB_T double
#define CB_V __m512d
#define CB_VL 8
#define CB_B 8
#define CB_ZERO() _mm512_setzero_pd()
#define CB_LOAD(p) _mm512_loadu_pd(p)
#define CB_STORE(p, v) _mm512_storeu_pd(p, v)
#define CB_BCAST(p) _mm512_set1_pd(*(p))
#define CB_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define CB_ADD(a, b) _mm512_add_pd(a, b)
#define CB_MUL(a, b) _mm512_mul_pd(a, b)
#define CB_SIGN_ZERO(v) _mm512_castsi512_pd(_mm512_and_si512( \
    _mm512_castpd_si512(v), _mm512_set1_epi64(INT64_MIN)))
#define CB_SUFFIX avx512_f64
#include "conv_blocked_impl.h"
#undef CB_ATTR
#undef CB_PMAX1
#undef CB_PMAX2
#undef CB_PMAX3
#undef CB_TMAX1
#undef CB_TMAX2
#endif /* CD_X86 */

/* Blocks of filters per weight-gradient tile: 2 where the register file
 * holds two. */
static int cb_blocks(int isa) { return isa == CD_ISA_AVX512 ? 2 : 1; }
/* ...and per forward tile, over rows of ``width`` pixels and ``blocks``
 * blocks in all: 3 on AVX-512 at stride 1 for rows of at most 8 pixels
 * (8 x 3 accumulators rather than 8 x 2), unless that leaves one block
 * alone; at most CB_MAX_TILE_BLOCKS. */
#define CB_MAX_TILE_BLOCKS 3
static int cb_forward_blocks(int isa, int width, int blocks, int strided)
{
    if (isa == CD_ISA_AVX512 && !strided && width <= 8 && blocks >= 3 && blocks % 3 != 1)
        return 3;
    return cb_blocks(isa);
}

static void cb_forward_rows_f32(int isa, const float* x, ptrdiff_t xcs, int C,
    const ptrdiff_t* offs, int nt, const float* w, ptrdiff_t wbs, int nb, float* out,
    ptrdiff_t ldo, int rows, int width, ptrdiff_t wp, ptrdiff_t sw, int chunk,
    const int* row_taps, unsigned long long first_taps, unsigned long long last_taps,
    int accumulate)
{ CD_DISPATCH(cb_forward_rows, f32, isa,
              (x, xcs, C, offs, nt, w, wbs, nb, out, ldo, rows, width, wp, sw, chunk, row_taps,
               first_taps, last_taps, accumulate)); }
static void cb_forward_rows_f64(int isa, const double* x, ptrdiff_t xcs, int C,
    const ptrdiff_t* offs, int nt, const double* w, ptrdiff_t wbs, int nb, double* out,
    ptrdiff_t ldo, int rows, int width, ptrdiff_t wp, ptrdiff_t sw, int chunk,
    const int* row_taps, unsigned long long first_taps, unsigned long long last_taps,
    int accumulate)
{ CD_DISPATCH(cb_forward_rows, f64, isa,
              (x, xcs, C, offs, nt, w, wbs, nb, out, ldo, rows, width, wp, sw, chunk, row_taps,
               first_taps, last_taps, accumulate)); }
static void cb_weight_rows_f32(int isa, const float* g, ptrdiff_t gbs, int nb,
    const float* x, const ptrdiff_t* offs, int nt, int rows, int width, ptrdiff_t wp,
    ptrdiff_t sw, int run_rows, int samples, ptrdiff_t gns, ptrdiff_t xns, float* acc,
    ptrdiff_t accbs, const int* row_taps)
{ CD_DISPATCH(cb_weight_rows, f32, isa,
              (g, gbs, nb, x, offs, nt, rows, width, wp, sw, run_rows, samples, gns, xns, acc,
               accbs, row_taps)); }
static void cb_weight_rows_f64(int isa, const double* g, ptrdiff_t gbs, int nb,
    const double* x, const ptrdiff_t* offs, int nt, int rows, int width, ptrdiff_t wp,
    ptrdiff_t sw, int run_rows, int samples, ptrdiff_t gns, ptrdiff_t xns, double* acc,
    ptrdiff_t accbs, const int* row_taps)
{ CD_DISPATCH(cb_weight_rows, f64, isa,
              (g, gbs, nb, x, offs, nt, rows, width, wp, sw, run_rows, samples, gns, xns, acc,
               accbs, row_taps)); }

/* the moves between layouts around these kernels */
#include "conv_blocked_moves.h"

#endif /* CYCONV_CONV_BLOCKED_H */
