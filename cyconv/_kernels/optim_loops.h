/* The optimizers' element-wise updates in one pass over each parameter,
 * compiled for AVX-512, AVX2 and the baseline at once (GCC's
 * target_clones, as relu_loops.h; elsewhere the baseline only).
 *
 * Each loop computes, element by element, the operations of the numpy
 * expressions in cyconv/nn/optimizers.py in their order, each rounded to
 * T as numpy rounds it (the module is built with -ffp-contract=off: no
 * fused multiply-add), so the results are the same bits; the scalars come
 * already rounded to T, as numpy rounds a Python float against an array
 * of T.  numpy made a temporary array a step (five for Adam) and a pass
 * over memory each: Adam's step on LeNet's 5,600 weights took 55 us,
 * more than a quarter of a batch-1 training step.
 */
#ifndef CYCONV_OPTIM_LOOPS_H
#define CYCONV_OPTIM_LOOPS_H

#include <math.h>
#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)\
    && defined(__GLIBC__)
#define OL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OL_CLONES
#endif

#define OL_LOOPS(T, SUFFIX, SQRT)                                             \
/* value -= learning_rate * grad */                                           \
OL_CLONES static void ol_sgd_##SUFFIX(T* restrict value,                      \
                                      const T* restrict grad, ptrdiff_t n,    \
                                      T learning_rate)                        \
{                                                                             \
    for (ptrdiff_t i = 0; i < n; i++)                                         \
        value[i] = value[i] - learning_rate * grad[i];                        \
}                                                                             \
                                                                              \
/* m *= beta1; m += (1 - beta1) * grad; v *= beta2;                          \
 * v += (1 - beta2) * (grad * grad); then                                    \
 * value -= learning_rate * (m / bias1) / (sqrt(v / bias2) + epsilon)        \
 * with bias1 = 1 - beta1**t, bias2 = 1 - beta2**t. */                       \
OL_CLONES static void ol_adam_##SUFFIX(                                       \
    T* restrict value, const T* restrict grad, T* restrict m, T* restrict v,  \
    ptrdiff_t n, T beta1, T rest1, T beta2, T rest2, T bias1, T bias2,        \
    T learning_rate, T epsilon)                                               \
{                                                                             \
    for (ptrdiff_t i = 0; i < n; i++) {                                       \
        T g = grad[i];                                                        \
        T mi = m[i] * beta1;                                                  \
        mi = mi + rest1 * g;                                                  \
        T vi = v[i] * beta2;                                                  \
        vi = vi + rest2 * (g * g);                                            \
        m[i] = mi;                                                            \
        v[i] = vi;                                                            \
        T step = learning_rate * (mi / bias1);                                \
        value[i] = value[i] - step / (SQRT(vi / bias2) + epsilon);            \
    }                                                                         \
}

OL_LOOPS(float, f32, sqrtf)
OL_LOOPS(double, f64, sqrt)

#endif /* CYCONV_OPTIM_LOOPS_H */
