/* One instantiation of the filter-blocked direct convolution microkernels,
 * included by conv_blocked.h once per (instruction set, element type).  The
 * includer defines:
 *   CB_T        element type (float or double)
 *   CB_V        vector type; CB_VL its lanes
 *   CB_B        filters per block: 64 bytes of CB_T (16 floats, 8 doubles)
 *               on every instruction set, so that every variant computes
 *               the same sums (a block is 1 zmm, 2 ymm or 16 scalars)
 *   CB_PMAX1, CB_PMAX2, CB_PMAX3  forward tile: most positions with 1, 2 or
 *               3 blocks (0: no such tile)
 *   CB_TMAX1, CB_TMAX2  weight-gradient tile: most taps with 1 or 2 blocks
 *   CB_ZERO(), CB_LOAD(p), CB_STORE(p, v), CB_BCAST(p), CB_FMA(a, b, c),
 *   CB_ADD(a, b), CB_MUL(a, b)   vector operations
 *   CB_SIGN_ZERO(v)   v * 0 for finite v: the zero with v's sign, by a
 *               bitwise and (no multiply)
 *   CB_SUFFIX   name suffix, e.g. avx512_f32
 *   CB_ATTR     function attributes (target ISA)
 * and this file undefines the element-type ones.
 * Each forward value is one chain of fused multiply-adds over a chunk's
 * channels, then taps, the chunk sums added in order (as cd_forward_rows
 * does: the same operations, so the two families agree bitwise); each
 * weight-gradient value a chain over one run of output rows, the run sums
 * added in order of samples and runs.  No order depends on the tile, the
 * instruction set or the thread count.
 */

#define CB_CAT_(a, b) a##_##b
#define CB_CAT(a, b) CB_CAT_(a, b)
#define CB_NAME(name) CB_CAT(name, CB_SUFFIX)
#define CB_VPB (CB_B / CB_VL)

/* acc += the terms of taps ta <= t < tb of channel c that multiply padding
 * (+0): their sum, w * 0 added in order from the first (see below). */
#define CB_FWD_ZEROS(ta, tb) do { \
    CB_V z[3][CB_VPB]; \
    _Pragma("GCC unroll 3") \
    for (int b = 0; b < NB; b++) \
        _Pragma("GCC unroll 16") \
        for (int s = 0; s < CB_VPB; s++) { \
            z[b][s] = CB_MUL(CB_LOAD(wc + b * wbs + (ta) * CB_B + s * CB_VL), CB_ZERO()); \
            for (int t = (ta) + 1; t < (tb); t++) \
                z[b][s] = CB_ADD(z[b][s], CB_MUL(CB_LOAD(wc + b * wbs + t * CB_B + s * CB_VL), \
                                                 CB_ZERO())); \
        } \
    _Pragma("GCC unroll 3") \
    for (int b = 0; b < NB; b++) \
        _Pragma("GCC unroll 24") \
        for (int q = 0; q < P; q++) \
            _Pragma("GCC unroll 16") \
            for (int s = 0; s < CB_VPB; s++) acc[b][q][s] = CB_ADD(acc[b][q][s], z[b][s]); \
} while (0)

/* acc of position Q += this tap's weights times x there (cb_fwd_tile) */
#define CB_FWD_MULTIPLY_ADD(Q) do { \
    CB_V xb = CB_BCAST(xq + (Q) * step); \
    _Pragma("GCC unroll 3") \
    for (int b = 0; b < NB; b++) \
        _Pragma("GCC unroll 16") \
        for (int s = 0; s < CB_VPB; s++) \
            acc[b][Q][s] = CB_FMA(wv[b][s], xb, acc[b][Q][s]); \
} while (0)

/* ...or += w * 0, its product with a padding column (see cb_fwd_tile). */
#define CB_FWD_SIGN_ZEROS(Q) do { \
    _Pragma("GCC unroll 3") \
    for (int b = 0; b < NB; b++) \
        _Pragma("GCC unroll 16") \
        for (int s = 0; s < CB_VPB; s++) \
            acc[b][Q][s] = CB_ADD(acc[b][Q][s], CB_SIGN_ZERO(wv[b][s])); \
} while (0)

/* out[q * ldo + b * CB_B + l] (+)= sum_c sum_t w[b * wbs + (c * nt + t) * CB_B + l]
 * * x[c * xcs + q * sw + offs[t]], for q < P positions and b < NB blocks:
 * stored if first, else added to out.  Taps whose bit is set in ``lm``
 * (``rm``) read a padding column at the first (last) position: there the
 * multiply-add of that zero, fma(w, +0, acc) = acc + w * 0 exactly, is
 * done as that add, in its place in the chain, with w * 0 taken from w's
 * sign bit (the weights are finite where the caller sets bits): the same
 * bits, on the adder rather than the multiply-add pipes.  The taps outside t0 <= t < t1 read
 * only padding (+0), so their terms are the signed zeros w * 0: each
 * channel's run of them is added as one value, the sum of those zeros
 * (-0 only if all are; NaN for a non-finite w), which leaves every chain
 * bitwise as the multiply-adds would (adding a zero changes a nonzero sum
 * not at all, and a zero sum as the zeros' signs say), on the adder
 * rather than the multiply-add pipes.  SW is the column stride sw when
 * known at compile time (1), else 0. */
static inline __attribute__((always_inline)) CB_ATTR void CB_NAME(cb_fwd_tile)(
    const CB_T* x, ptrdiff_t xcs, int C, const ptrdiff_t* offs, int nt,
    const CB_T* w, ptrdiff_t wbs, CB_T* out, ptrdiff_t ldo, int first, ptrdiff_t sw,
    int t0, int t1, unsigned long long lm, unsigned long long rm, const int P, const int NB,
    const int SW)
{
    const ptrdiff_t step = SW ? SW : sw;
    CB_V acc[3][24][CB_VPB];
#pragma GCC unroll 3
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 24
        for (int q = 0; q < P; q++)
#pragma GCC unroll 16
            for (int s = 0; s < CB_VPB; s++) acc[b][q][s] = CB_ZERO();
    for (int c = 0; c < C; c++) {
        const CB_T* xc = x + c * xcs;
        const CB_T* wc = w + (ptrdiff_t)c * nt * CB_B;
        if (t0 > 0) CB_FWD_ZEROS(0, t0);
        const CB_T* wt = wc + (ptrdiff_t)t0 * CB_B;
        for (ptrdiff_t t = t0; t < t1; t++, wt += CB_B) {
            const CB_T* xq = xc + offs[t];
            CB_V wv[3][CB_VPB];
#pragma GCC unroll 3
            for (int b = 0; b < NB; b++)
#pragma GCC unroll 16
                for (int s = 0; s < CB_VPB; s++)
                    wv[b][s] = CB_LOAD(wt + b * wbs + s * CB_VL);
            if (((lm | rm) >> t) & 1) {
                /* the first or last position adds its padding column's
                 * zero instead (see above; a lone position, either's) */
                const int za = (int)((lm >> t) & 1) | (P == 1 && ((rm >> t) & 1));
                const int zb = P > 1 && ((rm >> t) & 1);
#pragma GCC unroll 24
                for (int q = 0; q < P; q++) {
                    if ((q == 0 && za) || (q == P - 1 && zb))
                        CB_FWD_SIGN_ZEROS(q);
                    else
                        CB_FWD_MULTIPLY_ADD(q);
                }
            } else {
#pragma GCC unroll 24
                for (int q = 0; q < P; q++) CB_FWD_MULTIPLY_ADD(q);
            }
        }
        if (t1 < nt) CB_FWD_ZEROS(t1, nt);
    }
#pragma GCC unroll 3
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 24
        for (int q = 0; q < P; q++)
#pragma GCC unroll 16
            for (int s = 0; s < CB_VPB; s++) {
                CB_T* o = out + q * ldo + b * CB_B + s * CB_VL;
                CB_STORE(o, first ? acc[b][q][s] : CB_ADD(CB_LOAD(o), acc[b][q][s]));
            }
}

#define CB_FWD_ARGS const CB_T* x, ptrdiff_t xcs, int C, const ptrdiff_t* offs, int nt, \
    const CB_T* w, ptrdiff_t wbs, CB_T* out, ptrdiff_t ldo, int first, ptrdiff_t sw, int t0, \
    int t1, unsigned long long lm, unsigned long long rm
#define CB_FWD_PASS x, xcs, C, offs, nt, w, wbs, out, ldo, first, sw, t0, t1, lm, rm
#define CB_FWD_CASE(P_, NB_) case P_: CB_NAME(cb_fwd_tile)(CB_FWD_PASS, P_, NB_, 1); break;
/* a tile size this variant's registers do not hold: never called */
#define CB_FWD_UNUSED (void)x; (void)xcs; (void)C; (void)offs; (void)nt; (void)w; \
    (void)wbs; (void)out; (void)ldo; (void)first; (void)sw; (void)t0; (void)t1; (void)lm; \
    (void)rm; (void)P
#define CB_FWD_CASES(P_, NB_) case P_: CB_NAME(cb_fwd_tile)(CB_FWD_PASS, P_, NB_, 0); break;

static CB_ATTR void CB_NAME(cb_fwd_nb1)(CB_FWD_ARGS, int P)
{
    switch (P) {
    CB_FWD_CASE(1, 1)
#if CB_PMAX1 > 1
    CB_FWD_CASE(2, 1) CB_FWD_CASE(3, 1) CB_FWD_CASE(4, 1) CB_FWD_CASE(5, 1)
    CB_FWD_CASE(6, 1)
#endif
#if CB_PMAX1 > 6
    CB_FWD_CASE(7, 1) CB_FWD_CASE(8, 1) CB_FWD_CASE(9, 1) CB_FWD_CASE(10, 1)
    CB_FWD_CASE(11, 1) CB_FWD_CASE(12, 1) CB_FWD_CASE(13, 1) CB_FWD_CASE(14, 1)
    CB_FWD_CASE(15, 1) CB_FWD_CASE(16, 1) CB_FWD_CASE(17, 1) CB_FWD_CASE(18, 1)
    CB_FWD_CASE(19, 1) CB_FWD_CASE(20, 1) CB_FWD_CASE(21, 1) CB_FWD_CASE(22, 1)
    CB_FWD_CASE(23, 1) CB_FWD_CASE(24, 1)
#endif
    default: break;
    }
}

static CB_ATTR void CB_NAME(cb_fwd_nb2)(CB_FWD_ARGS, int P)
{
#if CB_PMAX2 > 0
    switch (P) {
    CB_FWD_CASE(1, 2) CB_FWD_CASE(2, 2) CB_FWD_CASE(3, 2) CB_FWD_CASE(4, 2)
    CB_FWD_CASE(5, 2) CB_FWD_CASE(6, 2) CB_FWD_CASE(7, 2) CB_FWD_CASE(8, 2)
    CB_FWD_CASE(9, 2) CB_FWD_CASE(10, 2) CB_FWD_CASE(11, 2) CB_FWD_CASE(12, 2)
    default: break;
    }
#else
    CB_FWD_UNUSED;
#endif
}

/* Three blocks, for rows of at most CB_PMAX3 pixels (stride 1 only). */
static CB_ATTR void CB_NAME(cb_fwd_nb3)(CB_FWD_ARGS, int P)
{
#if CB_PMAX3 > 0
    switch (P) {
    CB_FWD_CASE(1, 3) CB_FWD_CASE(2, 3) CB_FWD_CASE(3, 3) CB_FWD_CASE(4, 3)
    CB_FWD_CASE(5, 3) CB_FWD_CASE(6, 3) CB_FWD_CASE(7, 3) CB_FWD_CASE(8, 3)
    default: break;
    }
#else
    CB_FWD_UNUSED;
#endif
}

/* Strided layers (sw > 1), at most 12 positions a tile. */
static CB_ATTR void CB_NAME(cb_fwd_strided_nb1)(CB_FWD_ARGS, int P)
{
    switch (P) {
    CB_FWD_CASES(1, 1)
#if CB_PMAX1 > 1
    CB_FWD_CASES(2, 1) CB_FWD_CASES(3, 1) CB_FWD_CASES(4, 1) CB_FWD_CASES(5, 1)
    CB_FWD_CASES(6, 1)
#endif
#if CB_PMAX1 > 6
    CB_FWD_CASES(7, 1) CB_FWD_CASES(8, 1) CB_FWD_CASES(9, 1) CB_FWD_CASES(10, 1)
    CB_FWD_CASES(11, 1) CB_FWD_CASES(12, 1)
#endif
    default: break;
    }
}

static CB_ATTR void CB_NAME(cb_fwd_strided_nb2)(CB_FWD_ARGS, int P)
{
#if CB_PMAX2 > 0
    switch (P) {
    CB_FWD_CASES(1, 2) CB_FWD_CASES(2, 2) CB_FWD_CASES(3, 2) CB_FWD_CASES(4, 2)
    CB_FWD_CASES(5, 2) CB_FWD_CASES(6, 2) CB_FWD_CASES(7, 2) CB_FWD_CASES(8, 2)
    CB_FWD_CASES(9, 2) CB_FWD_CASES(10, 2) CB_FWD_CASES(11, 2) CB_FWD_CASES(12, 2)
    default: break;
    }
#else
    CB_FWD_UNUSED;
#endif
}
#undef CB_FWD_UNUSED
#undef CB_FWD_ZEROS
#undef CB_FWD_SIGN_ZEROS
#undef CB_FWD_MULTIPLY_ADD
#undef CB_FWD_CASES
#undef CB_FWD_CASE
#undef CB_FWD_PASS
#undef CB_FWD_ARGS

/* Output rows of nb blocks (nb <= 2, and 1 where CB_PMAX2 is 0; 3 at
 * stride 1 on rows of at most CB_PMAX3 pixels, see cb_forward_blocks):
 * out[(r * width + q) * ldo + k] for r < rows, q < width, from input rows
 * r * wp on, columns q * sw; each row in tiles of nearly equal width.
 * Channels in chunks of ``chunk``, the outer loop: a chunk's weights stay in
 * L1 across rows.  Row r multiply-adds taps row_taps[2 r] <= t <
 * row_taps[2 r + 1] (the others read padding rows only: their signed zeros
 * are added, see cb_fwd_tile), or all of them if row_taps is NULL.  The
 * taps in first_taps (last_taps) read a padding column at a row's first
 * (last) pixel: there their zeros are added too (0 where a weight is not
 * finite, or to multiply every zero).  The first chunk's sums are stored
 * in out, or with ``accumulate`` added to it, as the later chunks' are. */
static CB_ATTR void CB_NAME(cb_forward_rows)(
    const CB_T* x, ptrdiff_t xcs, int C, const ptrdiff_t* offs, int nt,
    const CB_T* w, ptrdiff_t wbs, int nb, CB_T* out, ptrdiff_t ldo, int rows, int width,
    ptrdiff_t wp, ptrdiff_t sw, int chunk, const int* row_taps,
    unsigned long long first_taps, unsigned long long last_taps, int accumulate)
{
    int pmax = nb == 1 ? CB_PMAX1 : nb == 2 ? CB_PMAX2 : CB_PMAX3;
    if (sw != 1 && pmax > 12) pmax = 12;
    int tiles = (width + pmax - 1) / pmax;
    for (int c0 = 0; c0 < C; c0 += chunk) {
        int cn = C - c0 < chunk ? C - c0 : chunk;
        int first = c0 == 0 && !accumulate;
        const CB_T* wc = w + (ptrdiff_t)c0 * nt * CB_B;
        for (int r = 0; r < rows; r++) {
            const CB_T* xr = x + c0 * xcs + r * wp;
            CB_T* outr = out + (ptrdiff_t)r * width * ldo;
            int t0 = row_taps ? row_taps[2 * r] : 0, t1 = row_taps ? row_taps[2 * r + 1] : nt;
            int q0 = 0;
            for (int i = 0; i < tiles; i++) {
                int p = (width - q0 + tiles - i - 1) / (tiles - i);
                const CB_T* xq = xr + q0 * sw;
                CB_T* oq = outr + q0 * ldo;
                unsigned long long lm = q0 == 0 ? first_taps : 0;
                unsigned long long rm = q0 + p == width ? last_taps : 0;
                if (nb == 3)
                    CB_NAME(cb_fwd_nb3)(xq, xcs, cn, offs, nt, wc, wbs, oq, ldo, first, sw,
                                        t0, t1, lm, rm, p);
                else if (sw == 1 && nb == 1)
                    CB_NAME(cb_fwd_nb1)(xq, xcs, cn, offs, nt, wc, wbs, oq, ldo, first, sw,
                                        t0, t1, lm, rm, p);
                else if (sw == 1)
                    CB_NAME(cb_fwd_nb2)(xq, xcs, cn, offs, nt, wc, wbs, oq, ldo, first, sw,
                                        t0, t1, lm, rm, p);
                else if (nb == 1)
                    CB_NAME(cb_fwd_strided_nb1)(xq, xcs, cn, offs, nt, wc, wbs, oq, ldo,
                                                first, sw, t0, t1, lm, rm, p);
                else
                    CB_NAME(cb_fwd_strided_nb2)(xq, xcs, cn, offs, nt, wc, wbs, oq, ldo,
                                                first, sw, t0, t1, lm, rm, p);
                q0 += p;
            }
        }
    }
}

/* One output row of the weight-gradient tile below: its columns' output
 * gradient times the tile's taps, those for which KEEP holds (see
 * cb_wgt_tile for why leaving the others out is exact here). */
#define CB_WGT_COLUMNS(KEEP) \
    for (int col = 0; col < width; col++) { \
        CB_V gv[2][CB_VPB]; \
        _Pragma("GCC unroll 2") \
        for (int b = 0; b < NB; b++) \
            _Pragma("GCC unroll 16") \
            for (int s = 0; s < CB_VPB; s++) \
                gv[b][s] = CB_LOAD(gr + col * CB_B + b * gbs + s * CB_VL); \
        _Pragma("GCC unroll 24") \
        for (int t = 0; t < NT; t++) { \
            if (!(KEEP)) continue; \
            CB_V xb = CB_BCAST(xr + col * sw + o[t]); \
            _Pragma("GCC unroll 2") \
            for (int b = 0; b < NB; b++) \
                _Pragma("GCC unroll 16") \
                for (int s = 0; s < CB_VPB; s++) \
                    a[b][t][s] = CB_FMA(gv[b][s], xb, a[b][t][s]); \
        } \
    }

/* Weight gradient of NB blocks x NT taps against one channel of
 * ``samples`` samples (g and x advancing by gns and xns values a sample):
 * acc[b * accbs + t * CB_B + l] += sum over each run of run_rows output
 * rows of g[b * gbs + (r * width + col) * CB_B + l] * x[r * wp + col * sw +
 * offs[t]], one chain per run; with several samples, run_rows covers the
 * plane and the run all of them (small planes make longer runs).  With
 * row_taps (given only for a finite g), output row r leaves out the taps
 * outside row_taps[2 r] - t0 <= t < row_taps[2 r + 1] - t0, which read
 * padding rows only: their terms g * 0 are signed zeros, which can change
 * a chain only from -0 to +0, and every chain is then added to acc, which
 * starts at +0 and never holds -0 (two floats sum to zero only exactly,
 * +0; a nonzero sum of two floats never rounds to zero), so the result is
 * the same either way. */
static inline __attribute__((always_inline)) CB_ATTR void CB_NAME(cb_wgt_tile)(
    const CB_T* g, ptrdiff_t gbs, const CB_T* x, const ptrdiff_t* offs, int rows,
    int width, ptrdiff_t wp, ptrdiff_t sw, int run_rows, int samples, ptrdiff_t gns,
    ptrdiff_t xns, CB_T* acc, ptrdiff_t accbs, const int* row_taps, int t0, const int NB,
    const int NT)
{
    ptrdiff_t o[24];
#pragma GCC unroll 24
    for (int t = 0; t < NT; t++) o[t] = offs[t];
    for (int r0 = 0; r0 < rows; r0 += run_rows) {
        int r1 = rows - r0 < run_rows ? rows : r0 + run_rows;
        CB_V a[2][24][CB_VPB];
#pragma GCC unroll 2
        for (int b = 0; b < NB; b++)
#pragma GCC unroll 24
            for (int t = 0; t < NT; t++)
#pragma GCC unroll 16
                for (int s = 0; s < CB_VPB; s++) a[b][t][s] = CB_ZERO();
        for (ptrdiff_t i = 0; i < samples * (ptrdiff_t)(r1 - r0); i++) {
            int r = r0 + (int)(i % (r1 - r0));
            const CB_T* gr = g + (i / (r1 - r0)) * gns + (ptrdiff_t)r * width * CB_B;
            const CB_T* xr = x + (i / (r1 - r0)) * xns + r * wp;
            int lo = row_taps ? row_taps[2 * r] - t0 : 0;
            int hi = row_taps ? row_taps[2 * r + 1] - t0 : NT;
            /* a border row (lo > 0 or hi < NT): the same chains, some taps
             * left out; the other rows without the test */
            if (lo > 0 || hi < NT)
                CB_WGT_COLUMNS(t >= lo && t < hi)
            else
                CB_WGT_COLUMNS(1)
        }
#pragma GCC unroll 2
        for (int b = 0; b < NB; b++)
#pragma GCC unroll 24
            for (int t = 0; t < NT; t++)
#pragma GCC unroll 16
                for (int s = 0; s < CB_VPB; s++) {
                    CB_T* p = acc + b * accbs + t * CB_B + s * CB_VL;
                    CB_STORE(p, CB_ADD(CB_LOAD(p), a[b][t][s]));
                }
    }
}

#define CB_WGT_ARGS const CB_T* g, ptrdiff_t gbs, const CB_T* x, const ptrdiff_t* offs, \
    int rows, int width, ptrdiff_t wp, ptrdiff_t sw, int run_rows, int samples, \
    ptrdiff_t gns, ptrdiff_t xns, CB_T* acc, ptrdiff_t accbs, const int* row_taps, int t0
#define CB_WGT_PASS g, gbs, x, offs, rows, width, wp, sw, run_rows, samples, gns, xns, acc, \
    accbs, row_taps, t0
#define CB_WGT_CASE(T_, NB_) case T_: CB_NAME(cb_wgt_tile)(CB_WGT_PASS, NB_, T_); break;

static CB_ATTR void CB_NAME(cb_wgt_nb1)(CB_WGT_ARGS, int NT)
{
    switch (NT) {
    CB_WGT_CASE(1, 1) CB_WGT_CASE(2, 1) CB_WGT_CASE(3, 1) CB_WGT_CASE(4, 1)
    CB_WGT_CASE(5, 1) CB_WGT_CASE(6, 1)
#if CB_TMAX1 > 6
    CB_WGT_CASE(7, 1) CB_WGT_CASE(8, 1) CB_WGT_CASE(9, 1) CB_WGT_CASE(10, 1)
    CB_WGT_CASE(11, 1) CB_WGT_CASE(12, 1)
#endif
#if CB_TMAX1 > 12
    CB_WGT_CASE(13, 1) CB_WGT_CASE(14, 1) CB_WGT_CASE(15, 1) CB_WGT_CASE(16, 1)
    CB_WGT_CASE(17, 1) CB_WGT_CASE(18, 1) CB_WGT_CASE(19, 1) CB_WGT_CASE(20, 1)
    CB_WGT_CASE(21, 1) CB_WGT_CASE(22, 1) CB_WGT_CASE(23, 1) CB_WGT_CASE(24, 1)
#endif
    default: break;
    }
}

static CB_ATTR void CB_NAME(cb_wgt_nb2)(CB_WGT_ARGS, int NT)
{
#if CB_TMAX2 > 0
    switch (NT) {
    CB_WGT_CASE(1, 2) CB_WGT_CASE(2, 2) CB_WGT_CASE(3, 2) CB_WGT_CASE(4, 2)
    CB_WGT_CASE(5, 2) CB_WGT_CASE(6, 2) CB_WGT_CASE(7, 2) CB_WGT_CASE(8, 2)
    CB_WGT_CASE(9, 2) CB_WGT_CASE(10, 2) CB_WGT_CASE(11, 2) CB_WGT_CASE(12, 2)
    default: break;
    }
#else
    (void)g; (void)gbs; (void)x; (void)offs; (void)rows; (void)width; (void)wp; (void)sw;
    (void)run_rows; (void)samples; (void)gns; (void)xns; (void)acc; (void)accbs; (void)NT;
    (void)row_taps; (void)t0;
#endif
}
#undef CB_WGT_CASE
#undef CB_WGT_COLUMNS
#undef CB_WGT_PASS
#undef CB_WGT_ARGS

/* Every tap of nb blocks (nb <= 2, and 1 where CB_TMAX2 is 0) against one
 * channel of a run of samples, in groups of nearly equal numbers of taps;
 * with row_taps (non-NULL only for a finite g), row r's taps outside
 * row_taps[2 r] <= t < row_taps[2 r + 1] left out. */
static CB_ATTR void CB_NAME(cb_weight_rows)(
    const CB_T* g, ptrdiff_t gbs, int nb, const CB_T* x, const ptrdiff_t* offs, int nt,
    int rows, int width, ptrdiff_t wp, ptrdiff_t sw, int run_rows, int samples,
    ptrdiff_t gns, ptrdiff_t xns, CB_T* acc, ptrdiff_t accbs, const int* row_taps)
{
    int tmax = nb == 1 ? CB_TMAX1 : CB_TMAX2;
    int groups = (nt + tmax - 1) / tmax;
    int t0 = 0;
    for (int i = 0; i < groups; i++) {
        int n = (nt - t0 + groups - i - 1) / (groups - i);
        if (nb == 1)
            CB_NAME(cb_wgt_nb1)(g, gbs, x, offs + t0, rows, width, wp, sw, run_rows, samples,
                                gns, xns, acc + t0 * CB_B, accbs, row_taps, t0, n);
        else
            CB_NAME(cb_wgt_nb2)(g, gbs, x, offs + t0, rows, width, wp, sw, run_rows, samples,
                                gns, xns, acc + t0 * CB_B, accbs, row_taps, t0, n);
        t0 += n;
    }
}

#undef CB_VPB
#undef CB_NAME
#undef CB_CAT
#undef CB_CAT_
#undef CB_T
#undef CB_V
#undef CB_VL
#undef CB_B
#undef CB_ZERO
#undef CB_LOAD
#undef CB_STORE
#undef CB_BCAST
#undef CB_FMA
#undef CB_ADD
#undef CB_MUL
#undef CB_SIGN_ZERO
#undef CB_SUFFIX
