/* The two elementwise rules every store of the kernels applies, in one
 * place so that every loop, vector or scalar, gives the same bits.
 */
#ifndef CYCONV_STORE_RULES_H
#define CYCONV_STORE_RULES_H

/* max(v, 0) as np.maximum: v where "not <= 0" (above 0, or NaN: kept,
 * payload too), +0.0 elsewhere (-0.0 included).  One comparison, no
 * branch: a store that asked "> 0 or NaN" branched on each value's sign,
 * which half the values of a layer's output mispredict; vector loops
 * compile it to a compare and a blend. */
#define CD_RELU(v) (!((v) <= 0) ? (v) : 0)

/* v + b, with v's NaN (quietened) where both are NaN, as x86 gives for the
 * addition in that order: the compiler may put an addition's operands
 * either way round (GCC does, to fold a load), so the NaN is chosen here,
 * not by the instruction: v + v where v is NaN.  One addition of a
 * selected operand, not a choice between two additions: GCC 12 leaves
 * the latter scalar where it cannot mask (AVX2; the Winograd output
 * transform ran at a third of its speed), and blends the former. */
#define CD_ADD_BIAS(v, b) ((v) + ((v) != (v) ? (v) : (b)))

/* ReLU's gradient factor for a forward value x: 1 where x > 0, else 0,
 * to be multiplied in as one product.  Written as a choice between two
 * products instead, GCC 12 leaves it a (mispredicted) branch where it
 * cannot mask: AVX2 and the baseline. */
#define CD_RELU_FACTOR(T, x) ((x) > 0 ? (T)1 : (T)0)

#endif /* CYCONV_STORE_RULES_H */
