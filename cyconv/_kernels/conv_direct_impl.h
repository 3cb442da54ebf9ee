/* One instantiation of the direct convolution microkernels, included by
 * conv_direct.h once per (instruction set, element type).  The includer
 * defines:
 *   CD_T        element type (float or double)
 *   CD_V        vector type; CD_VL its lanes
 *   CD_LANES    virtual lanes of the weight gradient (64 bytes of CD_T): the
 *               same on every instruction set, so that every variant sums
 *               the same partial sums in the same order
 *   CD_NF, CD_NV   forward register tile: filters x vectors of positions
 *   CD_WF, CD_WT   weight-gradient register tile: filters x taps
 *   CD_ZERO(), CD_LOAD(p), CD_STORE(p, v), CD_BCAST(p), CD_FMA(a, b, c),
 *   CD_ADD(a, b)   vector operations
 *   CD_SUFFIX   name suffix, e.g. avx2_f32
 *   CD_ATTR     function attributes (target ISA)
 * and this file undefines them all but the tiles and CD_ATTR, which the
 * includer keeps for both element types.
 * Every sum is a chain of fused multiply-adds in one fixed order (channels,
 * then taps; samples, then positions, then lanes), on every variant: the
 * portable variant calls fmaf/fma, so results agree bitwise across variants.
 */

#define CD_CAT_(a, b) a##_##b
#define CD_CAT(a, b) CD_CAT_(a, b)
#define CD_NAME(name) CD_CAT(name, CD_SUFFIX)

/* out[k * ofs + p] (+)= sum_c sum_t w[k * wfs + c * nt + t] * x[c * xcs + p + offs[t]]
 * for k < NF and p < NV * CD_VL: stored if first, else added to out. */
static inline __attribute__((always_inline)) CD_ATTR void CD_NAME(cd_fwd_tile)(
    const CD_T* x, ptrdiff_t xcs, int C, const ptrdiff_t* offs, int nt,
    const CD_T* w, ptrdiff_t wfs, CD_T* out, ptrdiff_t ofs, int first, const int NF,
    const int NV)
{
    CD_V acc[4][8];
#pragma GCC unroll 4
    for (int k = 0; k < NF; k++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc[k][v] = CD_ZERO();
    for (int c = 0; c < C; c++) {
        const CD_T* xc = x + c * xcs;
        const CD_T* wc = w + (ptrdiff_t)c * nt;
        for (int t = 0; t < nt; t++) {
            const CD_T* xp = xc + offs[t];
            CD_V xv[8];
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) xv[v] = CD_LOAD(xp + v * CD_VL);
#pragma GCC unroll 4
            for (int k = 0; k < NF; k++) {
                CD_V wb = CD_BCAST(wc + k * wfs + t);
#pragma GCC unroll 8
                for (int v = 0; v < NV; v++) acc[k][v] = CD_FMA(wb, xv[v], acc[k][v]);
            }
        }
    }
    if (first) {
#pragma GCC unroll 4
        for (int k = 0; k < NF; k++)
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) CD_STORE(out + k * ofs + v * CD_VL, acc[k][v]);
    } else {
#pragma GCC unroll 4
        for (int k = 0; k < NF; k++)
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++)
                CD_STORE(out + k * ofs + v * CD_VL,
                         CD_ADD(CD_LOAD(out + k * ofs + v * CD_VL), acc[k][v]));
    }
}

typedef void (*CD_NAME(cd_fwd_fn))(const CD_T*, ptrdiff_t, int, const ptrdiff_t*, int,
                                   const CD_T*, ptrdiff_t, CD_T*, ptrdiff_t, int);

#define CD_FWD_DEF(F_, V_) \
    static CD_ATTR void CD_NAME(CD_CAT(cd_fwd, F_##_##V_))( \
        const CD_T* x, ptrdiff_t xcs, int C, const ptrdiff_t* offs, int nt, \
        const CD_T* w, ptrdiff_t wfs, CD_T* out, ptrdiff_t ofs, int first) \
    { CD_NAME(cd_fwd_tile)(x, xcs, C, offs, nt, w, wfs, out, ofs, first, F_, V_); }

/* Filters 1..4 (CD_NF is 4 everywhere), vectors 1..8 (CD_NV at most 8). */
#define CD_FWD_ROW(F_) CD_FWD_DEF(F_, 1) CD_FWD_DEF(F_, 2) CD_FWD_DEF(F_, 3) \
    CD_FWD_DEF(F_, 4) CD_FWD_DEF(F_, 5) CD_FWD_DEF(F_, 6) CD_FWD_DEF(F_, 7) CD_FWD_DEF(F_, 8)
CD_FWD_ROW(1) CD_FWD_ROW(2) CD_FWD_ROW(3) CD_FWD_ROW(4)
#undef CD_FWD_ROW
#undef CD_FWD_DEF

#define CD_FWD_PTR(F_, V_) CD_NAME(CD_CAT(cd_fwd, F_##_##V_))
#define CD_FWD_ROWP(F_) {0, CD_FWD_PTR(F_, 1), CD_FWD_PTR(F_, 2), CD_FWD_PTR(F_, 3), \
    CD_FWD_PTR(F_, 4), CD_FWD_PTR(F_, 5), CD_FWD_PTR(F_, 6), CD_FWD_PTR(F_, 7), CD_FWD_PTR(F_, 8)}
static const CD_NAME(cd_fwd_fn) CD_NAME(cd_fwd_table)[5][9] = {
    {0}, CD_FWD_ROWP(1), CD_FWD_ROWP(2), CD_FWD_ROWP(3), CD_FWD_ROWP(4)};
#undef CD_FWD_ROWP
#undef CD_FWD_PTR

/* The wide output of nf <= CD_NF filters over positions [0, L):
 * out[k * ofs + p], p < L rounded up to CD_VL (the caller leaves room). */
static CD_ATTR void CD_NAME(cd_forward_rows)(
    const CD_T* x, ptrdiff_t xcs, int C, const ptrdiff_t* offs, int nt,
    const CD_T* w, ptrdiff_t wfs, int nf, CD_T* out, ptrdiff_t ofs, ptrdiff_t L)
{
    /* Tiles of nearly equal width: 13 vectors make tiles of 5, 4 and 4
     * rather than 6, 6 and an inefficient 1. */
    ptrdiff_t vectors = (L + CD_VL - 1) / CD_VL;
    ptrdiff_t tiles = (vectors + CD_NV - 1) / CD_NV;
    /* Channels in chunks of about CD_CHUNK_TAPS taps, each chunk's sum a
     * chain of fused multiply-adds, the chunk sums then added in order: the
     * rounding error of a chain grows with its length, and one chain over
     * 64 channels x 9 taps measured 4x the error of the matrix products. */
    int chunk = (CD_CHUNK_TAPS + nt - 1) / nt;
    ptrdiff_t p = 0;
    for (ptrdiff_t i = 0; i < tiles; i++) {
        int nv = (int)((vectors + tiles - i - 1) / (tiles - i));
        for (int c0 = 0; c0 < C; c0 += chunk)
            CD_NAME(cd_fwd_table)[nf][nv](x + p + c0 * xcs, xcs, C - c0 < chunk ? C - c0 : chunk,
                                          offs, nt, w + (ptrdiff_t)c0 * nt, wfs, out + p, ofs,
                                          c0 == 0);
        p += (ptrdiff_t)nv * CD_VL;
        vectors -= nv;
    }
}

/* Weight gradient: lanes[(k * nt + t) * CD_LANES + l] += sum over p = q *
 * CD_LANES + l < L of g[k * gfs + p] * x[p + offs[t]], for k < NF, t < NT.
 * L is a multiple of CD_LANES. */
#define CD_VPL (CD_LANES / CD_VL)
/* Each vector of the CD_LANES virtual lanes is one pass over the run, so
 * that the whole register file holds one vector's tile (AVX2 float: lanes
 * 0-7, then lanes 8-15). */
static inline __attribute__((always_inline)) CD_ATTR void CD_NAME(cd_wgt_tile)(
    const CD_T* g, ptrdiff_t gfs, const CD_T* x, const ptrdiff_t* offs, ptrdiff_t L,
    CD_T* lanes, int nt, const int NF, const int NT)
{
    for (int s = 0; s < CD_VPL; s++) {
        CD_V acc[4][6];
#pragma GCC unroll 4
        for (int k = 0; k < NF; k++)
#pragma GCC unroll 6
            for (int t = 0; t < NT; t++)
                acc[k][t] = CD_LOAD(lanes + (k * nt + t) * CD_LANES + s * CD_VL);
        for (ptrdiff_t p = s * CD_VL; p < L; p += CD_LANES) {
            CD_V gv[4];
#pragma GCC unroll 4
            for (int k = 0; k < NF; k++) gv[k] = CD_LOAD(g + k * gfs + p);
#pragma GCC unroll 6
            for (int t = 0; t < NT; t++) {
                CD_V xv = CD_LOAD(x + p + offs[t]);
#pragma GCC unroll 4
                for (int k = 0; k < NF; k++) acc[k][t] = CD_FMA(gv[k], xv, acc[k][t]);
            }
        }
#pragma GCC unroll 4
        for (int k = 0; k < NF; k++)
#pragma GCC unroll 6
            for (int t = 0; t < NT; t++)
                CD_STORE(lanes + (k * nt + t) * CD_LANES + s * CD_VL, acc[k][t]);
    }
}

typedef void (*CD_NAME(cd_wgt_fn))(const CD_T*, ptrdiff_t, const CD_T*, const ptrdiff_t*,
                                   ptrdiff_t, CD_T*, int);
#define CD_WGT_DEF(F_, T_) \
    static CD_ATTR void CD_NAME(CD_CAT(cd_wgt, F_##_##T_))( \
        const CD_T* g, ptrdiff_t gfs, const CD_T* x, const ptrdiff_t* offs, ptrdiff_t L, \
        CD_T* lanes, int nt) \
    { CD_NAME(cd_wgt_tile)(g, gfs, x, offs, L, lanes, nt, F_, T_); }
/* Filters 1..4, taps 1..6. */
#define CD_WGT_ROW(F_) CD_WGT_DEF(F_, 1) CD_WGT_DEF(F_, 2) CD_WGT_DEF(F_, 3) \
    CD_WGT_DEF(F_, 4) CD_WGT_DEF(F_, 5) CD_WGT_DEF(F_, 6)
CD_WGT_ROW(1) CD_WGT_ROW(2) CD_WGT_ROW(3) CD_WGT_ROW(4)
#undef CD_WGT_ROW
#undef CD_WGT_DEF
#define CD_WGT_PTR(F_, T_) CD_NAME(CD_CAT(cd_wgt, F_##_##T_))
#define CD_WGT_ROWP(F_) {0, CD_WGT_PTR(F_, 1), CD_WGT_PTR(F_, 2), CD_WGT_PTR(F_, 3), \
    CD_WGT_PTR(F_, 4), CD_WGT_PTR(F_, 5), CD_WGT_PTR(F_, 6)}
static const CD_NAME(cd_wgt_fn) CD_NAME(cd_wgt_table)[5][7] = {
    {0}, CD_WGT_ROWP(1), CD_WGT_ROWP(2), CD_WGT_ROWP(3), CD_WGT_ROWP(4)};
#undef CD_WGT_ROWP
#undef CD_WGT_PTR

/* All taps of nf <= CD_WF filters against one input channel plane. */
static CD_ATTR void CD_NAME(cd_weight_rows)(
    const CD_T* g, ptrdiff_t gfs, int nf, const CD_T* x, const ptrdiff_t* offs, int nt,
    ptrdiff_t L, CD_T* lanes)
{
    int t = 0;
    for (; t + CD_WT <= nt; t += CD_WT)
        CD_NAME(cd_wgt_table)[nf][CD_WT](g, gfs, x, offs + t, L, lanes + t * CD_LANES, nt);
    if (t < nt)
        CD_NAME(cd_wgt_table)[nf][nt - t](g, gfs, x, offs + t, L, lanes + t * CD_LANES, nt);
}

#undef CD_VPL
#undef CD_NAME
#undef CD_CAT
#undef CD_CAT_
#undef CD_T
#undef CD_V
#undef CD_VL
#undef CD_LANES
#undef CD_ZERO
#undef CD_LOAD
#undef CD_STORE
#undef CD_BCAST
#undef CD_FMA
#undef CD_ADD
#undef CD_SUFFIX
