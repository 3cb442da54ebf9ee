/* Register-tiled direct convolution microkernels, one variant per
 * instruction set, chosen at run time (the package is built without
 * -march=native):
 *   CD_ISA_AVX512  AVX-512F: 32 zmm registers, 16 floats / 8 doubles a vector
 *   CD_ISA_AVX2    AVX2 + FMA: 16 ymm registers, 8 floats / 4 doubles
 *   CD_ISA_PORTABLE  plain C with fmaf/fma: any processor, and the reference
 *                  the vector variants are tested against (bitwise)
 * Intrinsics live in a header rather than in the .pyx because each variant
 * needs GCC's target attribute on its functions, which Cython cannot emit.
 * Only the microkernels are here; the loops over samples, filter blocks and
 * channels, and the threading, are in _conv_direct.pyx.
 */
#ifndef CYCONV_CONV_DIRECT_H
#define CYCONV_CONV_DIRECT_H

#include <math.h>
#include <stddef.h>

#define CD_ISA_PORTABLE 0
#define CD_ISA_AVX2 1
#define CD_ISA_AVX512 2

/* Taps per chain of fused multiply-adds in the forward kernel (see
 * cd_forward_rows): 8 channels of 3x3, 3 of 5x5. */
#define CD_CHUNK_TAPS 64

#include "store_rules.h"  /* CD_RELU, CD_ADD_BIAS */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CD_X86 1
#include <immintrin.h>
#else
#define CD_X86 0
#endif

/* ---- portable: scalars, fused multiply-adds through the C library ---- */
#define CD_ATTR
#define CD_NF 4
#define CD_NV 8
#define CD_WF 1
#define CD_WT 1

#define CD_T float
#define CD_V float
#define CD_LANES 16
#define CD_FMA(a, b, c) fmaf(a, b, c)
#define CD_VL 1
#define CD_ZERO() 0
#define CD_LOAD(p) (*(p))
#define CD_STORE(p, v) (*(p) = (v))
#define CD_BCAST(p) (*(p))
#define CD_ADD(a, b) ((a) + (b))
#define CD_SUFFIX portable_f32
#include "conv_direct_impl.h"

#define CD_T double
#define CD_V double
#define CD_LANES 8
#define CD_FMA(a, b, c) fma(a, b, c)
#define CD_VL 1
#define CD_ZERO() 0
#define CD_LOAD(p) (*(p))
#define CD_STORE(p, v) (*(p) = (v))
#define CD_BCAST(p) (*(p))
#define CD_ADD(a, b) ((a) + (b))
#define CD_SUFFIX portable_f64
#include "conv_direct_impl.h"

#undef CD_ATTR
#undef CD_NF
#undef CD_NV
#undef CD_WF
#undef CD_WT

#if CD_X86
/* ---- AVX2 + FMA: 16 registers; tiles of 4 filters x 3 vectors (12
 * accumulators) and, for the weight gradient, 3 filters x 4 taps (12) ---- */
#define CD_ATTR __attribute__((target("avx2,fma")))
#define CD_NF 4
#define CD_NV 3
#define CD_WF 3
#define CD_WT 4

#define CD_T float
#define CD_V __m256
#define CD_VL 8
#define CD_LANES 16
#define CD_ZERO() _mm256_setzero_ps()
#define CD_LOAD(p) _mm256_loadu_ps(p)
#define CD_STORE(p, v) _mm256_storeu_ps(p, v)
#define CD_BCAST(p) _mm256_broadcast_ss(p)
#define CD_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define CD_ADD(a, b) _mm256_add_ps(a, b)
#define CD_SUFFIX avx2_f32
#include "conv_direct_impl.h"

#define CD_T double
#define CD_V __m256d
#define CD_VL 4
#define CD_LANES 8
#define CD_ZERO() _mm256_setzero_pd()
#define CD_LOAD(p) _mm256_loadu_pd(p)
#define CD_STORE(p, v) _mm256_storeu_pd(p, v)
#define CD_BCAST(p) _mm256_broadcast_sd(p)
#define CD_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define CD_ADD(a, b) _mm256_add_pd(a, b)
#define CD_SUFFIX avx2_f64
#include "conv_direct_impl.h"
#undef CD_ATTR
#undef CD_NF
#undef CD_NV
#undef CD_WF
#undef CD_WT

/* ---- AVX-512F: 32 registers; tiles of 4 filters x 6 vectors (24
 * accumulators) and 4 filters x 5 taps (20 accumulators) ---- */
#define CD_ATTR __attribute__((target("avx512f")))
#define CD_NF 4
#define CD_NV 6
#define CD_WF 4
#define CD_WT 5

#define CD_T float
#define CD_V __m512
#define CD_VL 16
#define CD_LANES 16
#define CD_ZERO() _mm512_setzero_ps()
#define CD_LOAD(p) _mm512_loadu_ps(p)
#define CD_STORE(p, v) _mm512_storeu_ps(p, v)
#define CD_BCAST(p) _mm512_set1_ps(*(p))
#define CD_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define CD_ADD(a, b) _mm512_add_ps(a, b)
#define CD_SUFFIX avx512_f32
#include "conv_direct_impl.h"

#define CD_T double
#define CD_V __m512d
#define CD_VL 8
#define CD_LANES 8
#define CD_ZERO() _mm512_setzero_pd()
#define CD_LOAD(p) _mm512_loadu_pd(p)
#define CD_STORE(p, v) _mm512_storeu_pd(p, v)
#define CD_BCAST(p) _mm512_set1_pd(*(p))
#define CD_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define CD_ADD(a, b) _mm512_add_pd(a, b)
#define CD_SUFFIX avx512_f64
#include "conv_direct_impl.h"
#undef CD_ATTR
#undef CD_NF
#undef CD_NV
#undef CD_WF
#undef CD_WT
#endif /* CD_X86 */

/* The best variant this processor runs. */
static int cd_detect_isa(void)
{
#if CD_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return CD_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CD_ISA_AVX2;
#endif
    return CD_ISA_PORTABLE;
}

/* Register tile widths of each variant: filters per forward tile, filters
 * per weight-gradient tile. */
static int cd_forward_filters(int isa) { (void)isa; return 4; }
static int cd_weight_filters(int isa)
{
    return isa == CD_ISA_AVX512 ? 4 : isa == CD_ISA_AVX2 ? 3 : 1;
}

#if CD_X86
#define CD_DISPATCH(name, type, isa, args) do { \
    if ((isa) == CD_ISA_AVX512) name##_avx512_##type args; \
    else if ((isa) == CD_ISA_AVX2) name##_avx2_##type args; \
    else name##_portable_##type args; } while (0)
#else
#define CD_DISPATCH(name, type, isa, args) name##_portable_##type args
#endif

static void cd_forward_rows_f32(int isa, const float* x, ptrdiff_t xcs, int C,
    const ptrdiff_t* offs, int nt, const float* w, ptrdiff_t wfs, int nf, float* out,
    ptrdiff_t ofs, ptrdiff_t L)
{ CD_DISPATCH(cd_forward_rows, f32, isa, (x, xcs, C, offs, nt, w, wfs, nf, out, ofs, L)); }
static void cd_forward_rows_f64(int isa, const double* x, ptrdiff_t xcs, int C,
    const ptrdiff_t* offs, int nt, const double* w, ptrdiff_t wfs, int nf, double* out,
    ptrdiff_t ofs, ptrdiff_t L)
{ CD_DISPATCH(cd_forward_rows, f64, isa, (x, xcs, C, offs, nt, w, wfs, nf, out, ofs, L)); }
static void cd_weight_rows_f32(int isa, const float* g, ptrdiff_t gfs, int nf,
    const float* x, const ptrdiff_t* offs, int nt, ptrdiff_t L, float* lanes)
{ CD_DISPATCH(cd_weight_rows, f32, isa, (g, gfs, nf, x, offs, nt, L, lanes)); }
static void cd_weight_rows_f64(int isa, const double* g, ptrdiff_t gfs, int nf,
    const double* x, const ptrdiff_t* offs, int nt, ptrdiff_t L, double* lanes)
{ CD_DISPATCH(cd_weight_rows, f64, isa, (g, gfs, nf, x, offs, nt, L, lanes)); }

#endif /* CYCONV_CONV_DIRECT_H */
