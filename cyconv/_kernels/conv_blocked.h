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

#include "conv_direct.h"

/* ---- portable: scalars (a block is 16 or 8 of them) ---- */
#define CB_ATTR
#define CB_PMAX1 1
#define CB_PMAX2 0
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
#define CB_SUFFIX portable_f64
#include "conv_blocked_impl.h"

#undef CB_ATTR
#undef CB_PMAX1
#undef CB_PMAX2
#undef CB_TMAX1
#undef CB_TMAX2

#if CD_X86
/* ---- AVX2 + FMA: a block is two ymm; 16 registers hold tiles of 6
 * positions (or taps) x 1 block (12 accumulators) ---- */
#define CB_ATTR __attribute__((target("avx2,fma")))
#define CB_PMAX1 6
#define CB_PMAX2 0
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
#define CB_SUFFIX avx2_f64
#include "conv_blocked_impl.h"
#undef CB_ATTR
#undef CB_PMAX1
#undef CB_PMAX2
#undef CB_TMAX1
#undef CB_TMAX2

/* ---- AVX-512F: a block is one zmm; 32 registers hold tiles of 24
 * accumulators: 24 positions (or taps) x 1 block, or 12 x 2 ---- */
#define CB_ATTR __attribute__((target("avx512f")))
#define CB_PMAX1 24
#define CB_PMAX2 12
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
#define CB_SUFFIX avx512_f64
#include "conv_blocked_impl.h"
#undef CB_ATTR
#undef CB_PMAX1
#undef CB_PMAX2
#undef CB_TMAX1
#undef CB_TMAX2
#endif /* CD_X86 */

/* Blocks of filters per forward and weight-gradient tile: 2 where the
 * register file holds two. */
static int cb_blocks(int isa) { return isa == CD_ISA_AVX512 ? 2 : 1; }

static void cb_forward_rows_f32(int isa, const float* x, ptrdiff_t xcs, int C,
    const ptrdiff_t* offs, int nt, const float* w, ptrdiff_t wbs, int nb, float* out,
    ptrdiff_t ldo, int rows, int width, ptrdiff_t wp, int chunk)
{ CD_DISPATCH(cb_forward_rows, f32, isa,
              (x, xcs, C, offs, nt, w, wbs, nb, out, ldo, rows, width, wp, chunk)); }
static void cb_forward_rows_f64(int isa, const double* x, ptrdiff_t xcs, int C,
    const ptrdiff_t* offs, int nt, const double* w, ptrdiff_t wbs, int nb, double* out,
    ptrdiff_t ldo, int rows, int width, ptrdiff_t wp, int chunk)
{ CD_DISPATCH(cb_forward_rows, f64, isa,
              (x, xcs, C, offs, nt, w, wbs, nb, out, ldo, rows, width, wp, chunk)); }
static void cb_weight_rows_f32(int isa, const float* g, ptrdiff_t ldg, int nb,
    const float* x, const ptrdiff_t* offs, int nt, int rows, int width, ptrdiff_t wp,
    int run_rows, float* acc, ptrdiff_t accbs)
{ CD_DISPATCH(cb_weight_rows, f32, isa,
              (g, ldg, nb, x, offs, nt, rows, width, wp, run_rows, acc, accbs)); }
static void cb_weight_rows_f64(int isa, const double* g, ptrdiff_t ldg, int nb,
    const double* x, const ptrdiff_t* offs, int nt, int rows, int width, ptrdiff_t wp,
    int run_rows, double* acc, ptrdiff_t accbs)
{ CD_DISPATCH(cb_weight_rows, f64, isa,
              (g, ldg, nb, x, offs, nt, rows, width, wp, run_rows, acc, accbs)); }

static void cb_position_major_f32(int isa, const float* g, ptrdiff_t P, int F, float* gt,
                                  ptrdiff_t ld)
{ CD_DISPATCH(cb_position_major, f32, isa, (g, P, F, gt, ld)); }
static void cb_position_major_f64(int isa, const double* g, ptrdiff_t P, int F, double* gt,
                                  ptrdiff_t ld)
{ CD_DISPATCH(cb_position_major, f64, isa, (g, P, F, gt, ld)); }

#endif /* CYCONV_CONV_BLOCKED_H */
