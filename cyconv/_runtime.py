"""Tuned constants and the run-time choices made from them.

Every constant that was tuned by timing says on which processor and with
which compiler it was measured.  cyconv runs on two machine kinds in
particular:

* "Zen 4": a 2-core AMD EPYC virtual machine with AVX-512 (avx512f/bw/dq/vl),
  GCC 12, scipy's OpenBLAS, shared with other jobs (noisy: best or median of
  interleaved runs);
* "Zen 3": a 2-core AMD EPYC with AVX2 and FMA, no AVX-512.

The direct-convolution constants below were measured on Zen 4 only (its
AVX2 variant included); the thread constants came from earlier tuning on
two cores.  A rule not measured on one kind says so.
"""

import contextlib

from ._kernels import _conv_direct
from ._kernels._threads import openmp_enabled
from ._threads import get_num_threads
from ._validation import as_flag

# -- threads ---------------------------------------------------------------
# Below this much work per thread, a thread is not worth starting (about
# 20-50 us of work: starting a team costs more than a tiny layer takes).
# Each in its caller's unit; the callers keep a module-level alias, read at
# each call.

# conv2d: multiply-adds.
CONV_MIN_MACS_PER_THREAD = 1 << 17
# Pooling: window elements (measured with 2x2 pooling: a second thread
# already paid from about 8000 elements).
POOL_MIN_WORK_PER_THREAD = 1 << 14
# ReLU's gradient: elements.
RELU_MIN_ELEMENTS_PER_THREAD = 1 << 16
# correlate2d / convolve2d: output values times kernel values.
CORRELATE_MIN_WORK_PER_THREAD = 1 << 17
# Batch normalisation: elements (a few flops each, like ReLU's gradient).
BATCHNORM_MIN_ELEMENTS_PER_THREAD = 1 << 15
# The Winograd path's transforms of a weight or its gradient: (filter,
# channel) pairs, about 15 ns each (Zen 4: 0.115 ms for 128 x 64 pairs).
WINOGRAD_MIN_PAIRS_PER_THREAD = 1 << 11


def threads_for(work, min_work_per_thread):
    """Threads worth starting for ``work`` units: one per
    ``min_work_per_thread``, at least 1, at most cyconv.get_num_threads().
    The count never changes a result, only the speed."""
    return max(1, min(get_num_threads(), int(work) // min_work_per_thread))


# -- direct convolution ----------------------------------------------------

# The variant of the direct convolution's microkernels this processor runs:
# "avx512", "avx2" or "portable" (detected at import; see conv_direct.h).
DETECTED_ISA = _conv_direct.detected_isa()

# Which operations take the direct path, per microkernel variant, and on
# which of its two kernel families: "blocked" (conv_blocked.h, vectorised
# over blocks of 16 float / 8 double filters) where blocked_suits() says
# the geometry suits it, else "wide" (conv_direct.h, vectorised over output
# positions) if the variant's WIDE_OPERATIONS name the operation, else the
# BLAS products.
#
# The wide kernels, measured against the BLAS products when they were
# written: Zen 4, GCC 12, scipy's OpenBLAS (which runs its AVX-512 kernels
# there), 1 thread, best of interleaved runs, ms, direct / products, batch 64:
#   AVX-512 variant   forward      weight grad   input grad
#     W1a 1->8 3x3    0.14 / 0.20  0.22 / 0.22   0.20 / 0.17
#     W1b 8->16 3x3   0.25 / 0.33  0.37 / 0.37   0.30 / 0.31
#     1->6 5x5 p2     0.21 / 0.49  0.36 / 0.54   0.33 / 0.43
#     6->16 5x5       0.44 / 0.69  0.71 / 0.81   0.64 / 0.78
#   and on the CIFAR-like layers and W2/W3 about 0.7-1.0 overall.
#   AVX2 variant (on the same Zen 4): forward 0.16, 0.26, 0.24, 0.45 ms
#   (faster than the products), weight gradient 0.29, 0.57, 0.39, 1.04 and
#   input gradient 0.23, 0.34, 0.41, 0.79 (slower or even).
# Those products ran OpenBLAS's AVX-512 kernels, which a processor that
# runs the AVX2 variant lacks.  Against OpenBLAS's AVX2 kernels
# (OPENBLAS_CORETYPE=Haswell, as `benchmarks/run.py --isa avx2` runs; same
# Zen 4, 1 thread, median of 21 calls of each operation alone, ms, wide /
# products) the AVX2 variant wins or ties every input gradient and the
# weight gradients the rule gives it:
#                     input grad     weight grad
#     W1a 1->8 3x3    0.25 / 0.37    0.30 / 0.42
#     W1b 8->16 3x3   0.36 / 1.00    (blocked)
#     1->6 5x5 p2     0.41 / 0.59    0.40 / 0.89
#     6->16 5x5       0.75 / 0.89    (blocked)
#     C1 3->32 p1     1.93 / 2.76    (products: 32 filters; 3.55 / 3.07)
#     W2 32->64 p1    19.6 / 24.6    (products; 25.6 / 16.4)
#     W3 64->64 p1    27.2 / 27.3    (products; 35.3 / 23.6)
# so it takes the three operations, as the AVX-512 variant does (the
# LeNet training step at batch 64, every party restricted to AVX2: 3.0 ->
# 2.0-2.2 ms, 1.95 in that suite's AVX2 run at c36603f).  Checked on an AVX2-only
# Zen 3 (GCC 12, OpenBLAS's Haswell kernels, 1 thread, min of 25
# interleaved calls, ms, the rule's choice / blocked / wide / products,
# forward, input and weight gradient): W1a 1->8 0.23 / 0.39 / 0.23 / 0.51,
# 0.30 / 1.52 / 0.29 / 0.47, 0.34 / 0.39 / 0.35 / 0.58; W1b 8->16 0.34 /
# 0.34 / 0.35 / 0.92, 0.44 / 0.80 / 0.43 / 1.23, 0.36 / 0.36 / 0.70 / 0.97;
# C1 3->32 2.12 / 2.65 / 2.17 / 3.68, 4.77 / 9.06 / 2.69 / 3.35, 2.59 /
# 2.70 / 4.06 / 4.32: the rule's choice or within noise of the best,
# but C1's input gradient, the wide kernel both ways, ran 2 ms slower
# after the blocked weight gradient than after the wide one (a cache
# effect, not pursued: running it first measured no better).  The portable variant takes
# nothing: it exists for other processors' correctness and for tests.
# Checked on an Intel Xeon with AVX-512 (GCC 12, OpenBLAS's SkylakeX
# kernels, 1 thread, median of 15 interleaved calls, ms, the rule's choice
# / blocked / wide / products, forward, weight gradient, input gradient,
# batch 64): W1a 1->8 0.15 / 0.32 / 0.15 / 0.21, 0.26 / 0.23 / 0.27 / 0.26,
# 0.16 / 0.87 / 0.15 / 0.15; W1b 8->16 0.18 / 0.16 / 0.22 / 0.31, 0.19 /
# 0.19 / 0.38 / 0.36, 0.20 / 0.39 / 0.23 / 0.23; C1 3->32 1.19 / 1.34 /
# 1.15 / 1.63, 1.49 / 1.49 / 2.01 / 2.08, 1.27 / 4.58 / 1.33 / 1.46; 6->16
# 5x5 0.27 / 0.25 / 0.33 / 0.69, 0.28 / 0.26 / 0.68 / 0.82, 0.45 / 0.94 /
# 0.48 / 0.78; 16->32 16x16 p1 (direct there since Winograd's AVX-512
# rule) 1.22 / 1.14 / 1.12 / 1.48, 1.20 / 1.21 / 2.25 / 2.01, 1.34 / 1.30
# / 1.15 / 1.43: the rule's choice is the fastest or within 15% of it.
WIDE_OPERATIONS = {
    "avx512": ("forward", "input", "weight"),
    "avx2": ("forward", "input", "weight"),
}
# The filter-blocked kernels, 3x3 layers (padding 1 unless said), Zen 4,
# 1 thread, min of 25 interleaved runs, ms: blocked / wide / BLAS products
# / torch 2.13 (oneDNN), float32, batch 64 unless said:
#   AVX-512 variant      forward               input grad            weight grad
#     W1b 8->16 13x13 p0   0.21/0.26/0.34/0.26   0.52/0.33/0.32/0.57   0.23/0.40/0.37/0.34
#     C1 3->32 32x32       1.75/1.50/2.05/1.89   5.84/1.99/1.96/7.29   2.33/2.76/1.75/2.06
#     C2 32->64 16x16      6.22/6.31/7.00/5.78   6.31/6.34/7.12/5.61   6.45/8.38/8.51/6.36
#     C3 64->128 8x8       5.79/6.92/7.14/4.99   6.12/7.09/7.21/4.96   6.45/9.28/8.08/5.70
#     W2 32->64 32x32 b32  12.4/12.3/13.5/11.7   12.6/12.7/13.5/12.3   13.4/15.5/17.7/14.3
#     W3 64->64 56x56 b8   18.3/17.9/19.1/17.2   18.3/18.2/19.1/17.6   19.1/20.4/23.4/19.8
# (C2's input gradient: the two families tie, within the runs' noise.)
# In float64 the blocked kernels measured as fast or faster on every layer
# (W3 forward 40 against 52 ms); the rule does not look at the dtype.
# The AVX2 variant on the same Zen 4 (an AVX-512 processor running the
# AVX2 code; not measured on an AVX2-only one): blocked / BLAS products
#     C2 32->64 16x16      6.34 / 7.12           6.65 / 7.16           7.96 / 8.83
#     C3 64->128 8x8       6.37 / 7.27           6.73 / 7.20           8.45 / 8.43
#     W2 32->64 32x32 b32  (wide)                (products)            19.41 / 17.80
#     W3 64->64 56x56 b8   (wide)                (products)            24.50 / 23.36
# so the AVX2 variant takes the input and weight gradients too, on the
# blocked kernels, where blocked_suits() with AVX2's limits holds: small
# planes.
# Strided layers: only the blocked kernels read planes at a stride, for the
# forward pass and weight gradient (the input gradient of a strided layer
# is no correlation: products).  W4 16->32 5x5 stride 2 padding 2, 32x32,
# batch 32, blocked / products / torch, ms: AVX-512 variant forward
# 2.15 / 4.07 / 2.01, weight gradient 2.18 / 3.51 / 2.21; AVX2 variant (same
# Zen 4) forward 2.27 / 4.04, weight gradient 2.35 / 3.53.
# ...but at stride 2 the input gradient is four stride-1 ones, one per
# phase (even or odd rows and columns) of the input, each with the taps of
# one parity (_conv_phases.py): taken by kernels of at least
# PHASES_MIN_KERNEL taps a side.  Intel Xeon (AVX-512; GCC 12, OpenBLAS's
# SkylakeX kernels), float32, median of 20 interleaved calls, ms, phases /
# products, 1 thread (2 threads), padding (k - 1) / 2:
#   W4 16->32 5x5 32x32 b32      2.27 / 3.24  (1.20 / 1.78)
#   32->64 5x5 16x16 b64         3.82 / 5.91  (2.11 / 3.06)
#   64->64 5x5 8x8 b64           2.65 / 4.75  (1.48 / 2.51)
#   8->16 5x5 28x28 b64          1.13 / 1.68  (0.65 / 0.92)
#   16->32 7x7 32x32 b32         3.75 / 6.29  (1.96 / 3.28)
#   16->32 4x4 32x32 b32 p1      1.72 / 2.14  (0.88 / 1.17)
# and with the AVX2 variant on the same processor, with OpenBLAS's Haswell
# kernels (not an AVX2-only processor), 16->32 4x4 2.21 / 2.42 (1.19 /
# 1.32).  3x3 kernels, whose phases have 1 to 4 taps, win on AVX-512 but
# on large planes or few channels (32->64 16x16 b64 1.97 / 2.29 (1.07 /
# 1.23), 16->32 32x32 b64 2.40 / 2.76, 64->128 16x16 b32 3.29 / 3.59, but
# 64->64 56x56 b8 5.29 / 4.75 (2.67 / 2.56), 8->16 28x28 b64 0.71 / 0.65)
# and lose with the AVX2 variant (32->64 3.10 / 2.53 (1.69 / 1.42),
# 64->128 5.30 / 4.16, 64->64 56x56 7.05 / 6.07): they keep the products.
# Before the phases came to be put together in one compiled pass (numpy's
# strided copies, serial), the AVX2 variant won or tied but one layer: W4 3.29
# / 3.46 (1.80 / 1.81), 32->64 5x5 6.95 / 6.76 (3.70 / 3.32), 64->64 5x5
# 3.74 / 4.98 (2.26 / 2.61), 8->16 5x5 1.68 / 1.97 (1.09 / 1.06), 32->32
# 6x6 2.22 / 3.14 (1.55 / 1.85), 16->32 7x7 5.06 / 6.63 (3.10 / 3.44),
# 64->64 7x7 56x56 b8 28.4 / 31.2 (15.2 / 15.9).
PHASES_MIN_KERNEL = 4
BLOCKED_OPERATIONS = {
    "avx512": ("forward", "input", "weight"),
    "avx2": ("forward", "input", "weight"),
}
# blocked_suits(): the forward pass and input gradient take the blocked
# kernels with at least BLOCKED_MIN_OUTPUTS output channels (fewer waste
# most of a block's lanes: C1's input gradient, 3 channels, measured 3x
# slower) on planes of at most BLOCKED_MAX_PLANE pixels (on larger ones the
# wide kernels waste few lanes and measured faster: W2, W3)...
BLOCKED_MIN_OUTPUTS = 16
BLOCKED_MAX_PLANE = 256
# ...and the weight gradient with at least BLOCKED_MIN_WEIGHT_TAPS input
# channels x taps per filter (with fewer, the copy of the output gradient
# into blocks is a large share of the work), on any plane with AVX-512 and
# on planes of at most BLOCKED_MAX_PLANE pixels with AVX2.
BLOCKED_MIN_WEIGHT_TAPS = 64
# With fewer (first layers), the AVX-512 variant still takes them at stride
# 1 for at least BLOCKED_FEW_TAPS_MIN_FILTERS filters on output planes of
# more than BLOCKED_WEIGHT_RUN pixels, where the runs of rows give threads
# their tasks (see BLOCKED_WEIGHT_SPLIT_PAIRS).  Zen 4, float32, batch 64, 3x3
# padding 1 unless said, ms, blocked / products / torch 2.13; 1 thread:
# median of 30 interleaved runs, 2 threads: min (the other jobs' load):
#                               1 thread             2 threads
#   C1 3->32 32x32              1.81 / 2.39 / 2.12   0.93 / 1.06 / 1.11
#   3->64 32x32                 3.69 / 8.01 / 4.33   1.74 / 3.87 / 2.19
#   3->32 64x64 batch 16        1.61 / 4.00 / 2.11   1.08 / 2.03 / 1.04
#   1->32 28x28                 0.56 / 0.63          0.51 / 0.48
#   C1 float64                  3.37 / 5.05          2.12 / 2.93
# but 3->20 32x32 1.55 / 1.38 (12 of 32 lanes idle), and at stride 2 (the
# products read a quarter of the planes): C1 (16x16 output: one run a
# sample, no split) 0.39 / 0.52 at 1 thread, 0.53 / 0.35 at 2; 3->32 on
# 64x64, batch 32 (32x32 output, split) 1.18 / 1.18 and 0.74 / 0.63.
# The AVX2 variant takes them too (on its own rule it gave them to the
# products, OpenBLAS restricted to AVX2): same Zen 4, AVX2 variant, ms,
# blocked / products, median of 9 calls, 1 thread (2 threads):
#   C1 3->32 32x32              2.06 / 3.43          1.11 / 1.70
#   3->64 32x32                 4.38 / 8.32          2.16 / 3.40
#   3->32 64x64 batch 16        1.79 / 3.28          0.99-1.34 / 1.70
#   1->32 28x28                 0.59 / 1.37          0.33 / 0.70
#   C1 float64                  3.68 / 6.62          1.88 / 2.96
#   3->32 5x5 padding 2         3.90 / 6.39          2.02 / 3.02
# Not measured on an AVX2-only processor.
BLOCKED_FEW_TAPS_MIN_FILTERS = 32
# Otherwise the wide weight gradient takes at most this many filters: it
# won or tied with 6 and 8 (the LeNet layers above) but lost with 32 (C1:
# 2.76 ms against the products' 1.75 in the table above).
WIDE_WEIGHT_MAX_FILTERS = 16

# Largest kernel (taps) the direct path takes: 7x7.  Its weight gradient
# keeps one register tile per tap chunk, and wider kernels were not measured.
DIRECT_MAX_TAPS = 49

# Largest padded copy (values) the direct path makes at once: 16 Mi values
# (64 MiB in float32); larger batches run in chunks of whole samples, and a
# layer whose weight-gradient run of samples alone exceeds it takes the
# matrix products, whose workspace is bounded.
DIRECT_MAX_PADDED = 1 << 24

# The direct weight gradient sums runs of samples into partial gradients,
# added in a fixed order afterwards (so the thread count never changes a
# result): at most this many runs, so that threads can share small layers...
DIRECT_WEIGHT_PARTS = 8
# ...and runs of at least this many wide positions: each run ends with a
# reduction of the register tile's lanes, which on 8x8 planes with runs of
# 8 samples (900 positions) cost a third of the time (Zen 4).
DIRECT_WEIGHT_RUN = 4096

# The filter-blocked weight gradient sums each value in runs of whole
# output rows of about this many pixels, each run one chain of fused
# multiply-adds, the runs then added in order: a bounded chain, as the
# wide kernels' lanes.
BLOCKED_WEIGHT_RUN = 256
# Below this many (filter block, channel) pairs (blocks of 64 bytes of
# filters, whatever the variant: the same pairs on each), a layer whose
# planes hold several runs of rows sums each run into its own partial
# gradient, the partials then added in order: tasks for several threads on
# first layers (3 channels x 2 blocks: C1).  Not the thread count: the sums
# must not depend on it.  Zen 4, float32, batch 64, ms, split / not split;
# 2 threads (min of 20-40 interleaved runs, the other jobs' load): C1
# 0.93 / 1.45, 3->32 64x64 batch 16 1.08 / 1.44, 3->32 5x5 2.16 / 2.82;
# 1 thread (median): C1 1.81 / 1.81, 3->64 3.69 / 3.65, but 8->16 28x28
# 1.66 / 1.51 and 3->32 5x5 4.34 / 4.09 (a copy and a call a run of rows
# rather than a plane; copying a task's rows at once measured 1.31 / 1.25
# and 3.64 / 3.55 on a busier machine).
BLOCKED_WEIGHT_SPLIT_PAIRS = 16

# The Winograd path (_conv_winograd.py) cuts its batch into chunks of rows
# of tiles (4x4 blocks of outputs), about this many tiles a chunk: its 36
# products, (F x C) @ (C x tiles), then run from cache.  The forward pass
# (and input gradient) hardly minds between 16 and 64; the weight
# gradient, which adds each chunk's products to its part's sum, prefers
# more.  Zen 3, float32, 1 thread, fastest of 11 interleaved calls, ms,
# 16 / 32 / 48 / 64 / 96 tiles:
#   forward  C2 4.54 / 4.58 / 5.00 / 5.17 / 4.76, C3 5.36 / 4.83 / 4.96 /
#            5.07 / 6.42, W2 9.79 / 9.21 / 9.16 / 8.72 / 10.54, W3 11.54 /
#            11.52 / 12.00 / 10.98 / 10.98
#   weight   C2 5.97 / 5.65 / 5.95 / 5.46 / 5.38, C3 7.14 / 5.80 / 5.59 /
#            6.26 / 5.62, W2 14.48 / 12.99 / 12.80 / 11.81 / 14.46, W3
#            12.67 / 12.49 / 12.90 / 12.88 / 12.08
WINOGRAD_TILES = 32
WINOGRAD_WEIGHT_TILES = 64
# The Winograd weight gradient sums parts of the batch (whole samples)
# into partials as the direct path does, at most DIRECT_WEIGHT_PARTS, each
# of at least this many tiles: its partials, 36 x F x C values, are read
# again when added.  Zen 3, float32, fastest of 11 interleaved calls, ms,
# 2 / 4 / 8 parts, 1 thread: C2 (1024 tiles) 7.04 / 6.71 / 6.75, C3 (256)
# 5.01 / 5.45 / 7.21, W3 (1568) 11.14 / 11.15 / 12.02; 2 threads: C2 3.32 /
# 3.42 / 3.50, C3 3.64 / 3.85 / 4.62, W3 9.10 / 9.17 / 8.25.
WINOGRAD_MIN_PART_TILES = 128
# It takes layers of at least so many channels and filters (the
# products' inner dimension, (F x C) @ (C x tiles)) in batches of at least
# so many tiles (4x4 blocks of outputs), per variant and operation: any
# (channels, tiles) pair of WINOGRAD_MIN_SIZES that the layer reaches.
# On the AVX2 and portable variants, 16 channels and 32 tiles; AVX2-only Zen 3,
# float32, fastest of 9 interleaved calls, ms, the direct kernels (by
# their rule) / Winograd, forward, input gradient, weight gradient, 1
# thread (2 threads), padding 1, batch 64 unless said:
#   C2 32->64 16x16          13.6 / 6.7, 13.4 / 7.3, 9.9 / 6.4
#   C3 64->128 8x8           10.1 / 5.4, 9.5 / 4.4, 11.1 / 5.3
#   C3 batch 16 (64 tiles)   2.37 / 1.70, 2.45 / 1.44, 2.56 / 1.37
#                            (1.37 / 1.00, 1.39 / 0.73, 1.30 / 1.33)
#   C3 batch 8 (32 tiles)    1.21 / 1.13, 1.09 / 0.95, 1.36 / 0.89
#                            (1.18 / 0.96, 1.18 / 0.80, 1.05 / 0.90)
#   16->16 16x16             1.41 / 1.17, 1.36 / 1.11, 1.36 / 1.25
#                            (1.08 / 0.76, 1.19 / 0.70, 1.03 / 0.82)
#   16->32 14x14             2.18 / 2.10, 2.59 / 1.79, 1.98 / 2.07
#                            (1.84 / 1.46, 1.86 / 1.13, 1.53 / 1.46)
#   16->32 32x32 batch 32    5.14 / 3.84, 5.99 / 2.94, 9.43 / 4.19
#                            (3.11 / 2.44, 3.83 / 1.82, 6.11 / 2.75)
#   24->48 16x16             6.53 / 3.33, 7.57 / 3.39, 6.87 / 5.05
# but 8->16 13x13 padding 0: 0.71 / 1.04, 0.83 / 1.30, 0.60 / 1.05.  One
# rule serves the three operations there.
# The AVX-512 variant's direct kernels, twice as wide, win more: by these
# figures Winograd took layers from 32 channels and 256 tiles, and for the
# forward pass and input gradient from 64 channels and 128 tiles (see
# below for the rule now).  Intel Xeon (AVX-512, family 6 model
# 167 as its virtual machine reports it; GCC 12, scipy's OpenBLAS with its
# SkylakeX kernels), float32, padding 1, median of 15 interleaved calls,
# ms, direct / Winograd, forward, input gradient, weight gradient, 1
# thread (2 threads):
#   16->32 16x16 b64 (1024)  1.12 / 1.35, 1.24 / 1.16, 1.21 / 1.45
#   16->32 16x16 b16 (256)   0.29 / 0.37, 0.29 / 0.31, 0.30 / 0.39
#                            (0.19 / 0.26, 0.17 / 0.21, 0.21 / 0.27)
#   32->32 16x16 b16 (256)   0.51 / 0.51, 0.50 / 0.45, 0.49 / 0.51
#                            (0.35 / 0.37, 0.32 / 0.33, 0.37 / 0.37)
#   32->32 16x16 b64 (1024)  2.01 / 1.67, 2.18 / 1.70, 2.06 / 1.91
#   32->64 8x8 b32 (128)     0.57 / 0.56, 0.54 / 0.60, 0.58 / 0.63
#                            (0.35 / 0.41, 0.30 / 0.42, 0.37 / 0.71)
#   32->64 16x16 b16 (256)   1.05 / 0.76, 1.06 / 0.89, 1.08 / 0.88
#                            (0.63 / 0.54, 0.57 / 0.58, 0.65 / 0.60)
#   64->64 8x8 b16 (64)      0.58 / 0.58, 0.53 / 0.59, 0.58 / 0.52
#                            (0.35 / 0.39, 0.31 / 0.34, 0.35 / 0.54)
#   64->64 8x8 b32 (128)     1.12 / 0.92, 1.12 / 0.94, 1.12 / 0.90
#                            (0.60 / 0.55, 0.57 / 0.52, 0.68 / 0.94)
#   64->128 8x8 b8 (32)      0.59 / 0.77, 0.56 / 0.80, 0.60 / 0.63
#   64->128 8x8 b32 (128)    2.02 / 1.66, 2.10 / 1.77, 2.26 / 1.61
#                            (1.28 / 0.94, 1.25 / 1.08, 1.33 / 1.63)
#   128->128 8x8 b32 (128)   4.12 / 2.80, 4.12 / 2.88, 4.29 / 2.95
#                            (2.37 / 1.74, 2.41 / 1.50, 2.45 / 2.99)
#   C2, C3, W2, W3           Winograd 1.3-1.9x faster in every operation
# (the weight gradient of 128 tiles is one part, on one thread: it loses
# at 2 threads).  Since the transforms' scratch planes no longer share a
# set of the cache and the weight's transforms vectorise (7db3f6d,
# 3942a3a), Winograd wins from 64 channels at 64 tiles for the forward
# pass and input gradient, and from 16 channels at 1024 tiles for all
# three: the same machine, 1 thread (2 threads):
#   64->64 8x8 b16 (64)      0.58 / 0.44, 0.54 / 0.42, 0.63 / 0.42
#                            (0.32 / 0.30, 0.28 / 0.30, 0.36 / 0.43)
#   64->128 8x8 b16 (64)     1.02 / 0.70, 1.11 / 0.82, 1.20 / 0.72
#                            (0.68 / 0.45, 0.58 / 0.52, 0.69 / 0.70)
#   64->128 8x8 b8 (32)      0.54 / 0.42, 0.50 / 0.57, 0.56 / 0.40
#                            (0.40 / 0.44, 0.35 / 0.51, 0.40 / 0.44)
#   16->32 16x16 b64 (1024)  1.29 / 1.16, 1.38 / 1.16, 1.36 / 1.30
#                            (0.68 / 0.67, 0.66 / 0.64, 0.75 / 0.76)
#   16->32 16x16 b16 (256)   0.33 / 0.31, 0.32 / 0.33, 0.32 / 0.36
#   32->32 8x8 b32 (128)     0.34 / 0.36, 0.31 / 0.33, 0.35 / 0.31
#                            (0.20 / 0.22, 0.16 / 0.18, 0.20 / 0.33)
#   64->64 8x8 b32 (128)     weight gradient 1.20 / 0.70 (0.70 / 0.74)
# The input gradient of 64 channels at 64 tiles loses a little at 2
# threads (64->64 above) and wins at 1 and with more filters.  The AVX-512
# variant on a Zen 4 has not run F(4x4, 3x3) yet; with F(2x2, 3x3), which
# this path ran before, its crossover lay at 32 channels and 512 2x2 blocks.
_FEW_SIZES = {operation: ((16, 32),) for operation in ("forward", "input", "weight")}
WINOGRAD_MIN_SIZES = {
    "avx512": {"forward": ((16, 1024), (32, 256), (64, 64)),
               "input": ((16, 1024), (32, 256), (64, 64)),
               "weight": ((16, 1024), (32, 256))},
    "avx2": dict(_FEW_SIZES),
    "portable": dict(_FEW_SIZES),
}

# The weight gradient's products, dW_p += U_p V_p^T summed over tiles, on
# these variants write U tile-major (_conv_winograd.pyx), which OpenBLAS's
# AVX-512 kernels multiply faster: median ms, planar U / tile-major, Zen 4,
# 1 thread, C2 6.5 / 5.3, C3 5.7 / 4.3, W2 13.5 / 12.4 (the direct kernels
# beat the planar layout on C2 and W2).  With its Haswell kernels (AVX2)
# the planar U stays faster: C2 6.7 / 6.9, W2 13.6 / 15.9, W3 15.9 / 16.9
# (C3 5.5 / 5.3).  (Measured with F(2x2, 3x3), which this path ran before.)
WINOGRAD_TILE_MAJOR_ISAS = ("avx512",)

# The forward pass's (and input gradient's) products, M_p = W_p @ U_p, on
# these variants by the blocked direct kernels (U written in their blocks
# of 16 tiles, _conv_winograd.pyx), elsewhere by BLAS.  OpenBLAS packs
# both operands of each of these small products anew (K = C = 32 to 128);
# the blocked kernels read U as the input transform writes it.  Zen 3,
# float32, 1 thread, min of 15 interleaved calls, ms, BLAS / blocked, with
# F(2x2, 3x3), which this path ran before: forward C2 7.7 / 6.2, C3 6.9 /
# 6.6, W2 16.7 / 13.6, W3 20.6 / 17.0; input gradient C2 9.5 / 7.3, C3
# 8.2 / 6.9, W2 19.4 / 14.4, W3 21.0 / 16.6.  The weight gradient's
# products too, dW_p = V_p @ U_p^T summed over tiles, where the channels
# fill whole blocks (U then tile-major in blocks of channels, each chunk
# added by the kernel's store): C2 9.4 / 7.8, C3 7.1 / 6.3, W2 18.0 /
# 17.7, W3 21.8 / 20.1.  With F(4x4, 3x3), the CIFAR-like training step
# (batch 64, median and fastest of 13 interleaved steps, ms): 1 thread
# 58.7 and 43.4 / 56.0 and 39.0, 2 threads 39.0 and 34.2 / 36.1 and 32.6.
# The portable variant's scalar loops are 40x slower than BLAS; AVX-512
# keeps BLAS, measured there, until the blocked products are.
WINOGRAD_BLOCKED_PRODUCT_ISAS = ("avx2",)

_state = {"isa": DETECTED_ISA, "direct": "auto", "family": None, "winograd": "auto",
          "winograd_allowed": True}


def _set_state(**changes):
    """Change _state, and what is derived from it: every change goes
    through here.  (A batch-1 training step asked choices() and
    isa_code() 18 times: they return what was derived at the last change
    rather than derive it anew.)"""
    global _choices, _isa_code
    _state.update(changes)
    _choices = (_state["direct"], _state["isa"], _state["family"], _state["winograd"],
                _state["winograd_allowed"])
    _isa_code = _conv_direct.isa_code(_state["isa"])


_set_state()


def choices():
    """What the rules of the direct and Winograd paths depend on besides
    the geometry: the direct mode, variant and family, the Winograd mode
    (tests and benchmarks change them) and whether the user allows
    Winograd (set_winograd); the key of their caches."""
    return _choices


def isa():
    """The variant the direct kernels run now (the detected one unless a
    test chose another)."""
    return _state["isa"]


def isa_code():
    """The kernels' code of that variant."""
    return _isa_code


@contextlib.contextmanager
def direct_convolution(mode="auto", isa=None, family=None):
    """Inside the block, convolutions take the direct path always ("always",
    where the geometry allows it), never ("never") or by the measured rule
    ("auto"), with microkernel variant ``isa`` (default: the detected one;
    "portable", "avx2" or "avx512" if this processor runs it).  For tests
    and benchmarks; not thread-safe."""
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"mode must be 'auto', 'always' or 'never', got {mode!r}")
    if isa is not None and isa not in available_isas():
        raise ValueError(f"this processor runs {available_isas()}, not {isa!r}")
    if family not in (None, "wide", "blocked"):
        raise ValueError(f"family must be None, 'wide' or 'blocked', got {family!r}")
    saved = dict(_state)
    _set_state(direct=mode, family=family, isa=_state["isa"] if isa is None else isa)
    try:
        yield
    finally:
        _set_state(**saved)


@contextlib.contextmanager
def winograd_convolution(mode="auto"):
    """Inside the block, the convolutions the Winograd kernels can run take
    them always ("always"), never ("never") or by the measured rule
    ("auto", and only while the direct path's mode is "auto" too, so that
    tests forcing the direct path test it).  For tests and benchmarks; not
    thread-safe."""
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"mode must be 'auto', 'always' or 'never', got {mode!r}")
    saved = _state["winograd"]
    _set_state(winograd=mode)
    try:
        yield
    finally:
        _set_state(winograd=saved)


def set_winograd(allowed):
    """Allow or forbid Winograd convolution, for every layer of the process.

    Where it is allowed (the default), 3x3 stride-1 layers with enough
    channels, filters and outputs take Winograd's F(4x4, 3x3) algorithm,
    where it measured faster: from 16 channels and filters and 32 4x4
    blocks of outputs a batch with AVX2, with AVX-512 from 16 and 1024,
    32 and 256, or (but for the weight gradient) 64 and 64
    (``show_config`` says which on this machine).  It spends 36
    multiplications on 16 outputs where the direct kernels spend 144, and
    pays in rounding: float32 results lie within about 1e-5 of the largest
    output's magnitude, against 3e-7 for the direct kernels.  Forbid it for
    the direct kernels' rounding everywhere, at their speed.

    Parameters
    ----------
    allowed : bool
        Whether layers may take the Winograd kernels.

    Raises
    ------
    TypeError
        For anything but a bool.

    Notes
    -----
    Like ``set_num_threads``, a setting of the whole process, read at each
    call: change it between calls, not while another thread convolves.
    Results are bitwise identical whatever the thread count either way.

    Examples
    --------
    >>> import cyconv
    >>> cyconv.set_winograd(False)
    >>> cyconv.get_winograd()
    False
    >>> cyconv.show_config(mode="dicts")["winograd convolution"]
    'off (cyconv.set_winograd(False))'
    >>> cyconv.set_winograd(True)
    """
    _set_state(winograd_allowed=as_flag(allowed, "allowed"))


def get_winograd():
    """Whether layers may take the Winograd kernels (see ``set_winograd``).

    Examples
    --------
    >>> import cyconv
    >>> cyconv.get_winograd()
    True
    """
    return _state["winograd_allowed"]


def winograd_wanted(geometry, operation):
    """Whether ``operation`` of a convolution the Winograd kernels can run
    (_conv_winograd.supports) should: always, never, or by the measured
    rule (see WINOGRAD_MIN_SIZES), on the variant running now, where
    the user allows it (set_winograd)."""
    mode = _state["winograd"]
    if mode != "auto":
        return mode == "always"
    if _state["direct"] != "auto" or not _state["winograd_allowed"]:
        return False
    channels, tiles = min(geometry.channels, geometry.filters), winograd_tiles(geometry)
    return any(channels >= least_channels and tiles >= least_tiles
               for least_channels, least_tiles in WINOGRAD_MIN_SIZES[_state["isa"]][operation])


def winograd_tiles(geometry):
    """The 4x4 blocks of outputs (tiles) of the Winograd path in a batch,
    which its rules count (WINOGRAD_MIN_SIZES, WINOGRAD_MIN_PART_TILES)."""
    g = geometry
    return g.n * -(-g.out_height // 4) * -(-g.out_width // 4)


def winograd_tile_major():
    """Whether the Winograd weight gradient writes its transformed input
    tile-major (see WINOGRAD_TILE_MAJOR_ISAS), on the variant running now."""
    return _state["isa"] in WINOGRAD_TILE_MAJOR_ISAS


def winograd_blocked_products():
    """Whether the Winograd forward products run on the blocked direct
    kernels (see WINOGRAD_BLOCKED_PRODUCT_ISAS), on the variant running
    now."""
    return _state["isa"] in WINOGRAD_BLOCKED_PRODUCT_ISAS


def available_isas():
    """The microkernel variants this processor runs, best last."""
    order = ("portable", "avx2", "avx512")
    return order[: order.index(DETECTED_ISA) + 1]


def blocked_suits(geometry, operation, isa):
    """Whether the filter-blocked kernels suit ``operation`` of this
    geometry on variant ``isa`` (see BLOCKED_MIN_OUTPUTS and after)."""
    g = geometry
    if g.stride != (1, 1) and operation == "input":
        return False
    if operation == "weight":
        taps = g.channels * g.kernel[0] * g.kernel[1]
        plane = g.out_height * g.out_width
        first_layer = (taps < BLOCKED_MIN_WEIGHT_TAPS and g.stride == (1, 1)
                       and g.filters >= BLOCKED_FEW_TAPS_MIN_FILTERS
                       and plane > BLOCKED_WEIGHT_RUN)
        if isa == "avx2":
            return (taps >= BLOCKED_MIN_WEIGHT_TAPS and plane <= BLOCKED_MAX_PLANE) or first_layer
        return taps >= BLOCKED_MIN_WEIGHT_TAPS or first_layer
    outputs, plane = ((g.filters, g.out_height * g.out_width) if operation == "forward"
                      else (g.channels, g.height * g.width))
    return outputs >= BLOCKED_MIN_OUTPUTS and plane <= BLOCKED_MAX_PLANE


def blocked_expands_pooled():
    """Whether the filter-blocked weight gradient takes a pooling's
    gradient (a PooledGradient) as it is, expanding it as it copies it
    (cb_position_major_pooled), rather than the full gradient made first:
    on AVX-512, whose copy has a vector variant (elsewhere it is the
    portable loop), or where a test forces the direct path.  The
    CIFAR-like first layer's weight gradient with the pooling's backward
    pass, Zen 4, batch 64, median of 40 interleaved runs, expanded / made
    dense first: 1.87 / 2.24 ms at 1 thread, 1.49 / 2.77 at 2."""
    return _state["isa"] == "avx512" or _state["direct"] == "always"


def blocked_weight_split(blocks, channels):
    """Whether the filter-blocked weight gradient of ``blocks`` blocks of
    filters and ``channels`` channels sums each run of rows into its own
    partial gradient (see BLOCKED_WEIGHT_SPLIT_PAIRS)."""
    return blocks * channels < BLOCKED_WEIGHT_SPLIT_PAIRS


def direct_choice(geometry, operation):
    """The measured rule for ``operation`` ("forward", "input" or "weight"
    gradient) of a convolution the direct kernels can run (see
    _conv_direct.supports), on the variant running now: "blocked", "wide",
    or None for the BLAS products."""
    isa = _state["isa"]
    if (operation in BLOCKED_OPERATIONS.get(isa, ())
            and blocked_suits(geometry, operation, isa)):
        return "blocked"
    if (operation in WIDE_OPERATIONS.get(isa, ()) and geometry.stride == (1, 1)
            and not (operation == "weight" and geometry.filters > WIDE_WEIGHT_MAX_FILTERS)):
        return "wide"
    return None


def direct_wanted(geometry, operation):
    """Whether ``operation`` of a convolution the direct kernels can run
    should: always, never, or by the measured rule (direct_choice)."""
    mode = _state["direct"]
    if mode != "auto":
        return mode == "always"
    return direct_choice(geometry, operation) is not None


def direct_family(geometry, operation):
    """Which family of direct kernels runs ``operation`` of a convolution
    that takes the direct path: "blocked" (vectorised over blocks of
    filters, conv_blocked.h) or "wide" (over output positions,
    conv_direct.h).  Both give bitwise the same forward pass and input
    gradient."""
    if _state["family"] is not None:
        return _state["family"]
    if geometry.stride != (1, 1):
        return "blocked"  # the only family that reads planes at a stride
    # Also where a test forces the direct path on a variant the rule
    # leaves out (the portable one): the family AVX-512 would take.
    return "blocked" if blocked_suits(geometry, operation, "avx512") else "wide"


def conv_pool_wanted(geometry):
    """Whether a Convolution -> ReLU -> MaxPooling(2) whose convolution
    takes the direct path runs as one pass (cyconv/_conv_pool.py): where
    the forward pass alone would take the wide kernels, which the fused
    pass runs (figures below), by the rule or where a test forces them;
    where it takes the filter-blocked ones, whose store then pools its
    tiles, on AVX-512 and AVX2 (vector stores of their own) or where a test
    forces the direct path (the portable variant's store is a scalar loop:
    the pooling's own pass is faster than pooling there, figures below)."""
    if direct_family(geometry, "forward") == "wide":
        return True
    return _state["isa"] in ("avx512", "avx2") or _state["direct"] == "always"


# The fused pass against the convolution (with its ReLU) then the 2x2
# pooling, Zen 4, batch 64, ms, fused / one by one; 1 thread: median of 200
# interleaved runs; 2 threads: min of 200 (the medians were the other
# jobs' on the shared cores):
#                             AVX-512 float32                 float64        AVX2 float32
#                             1 thread       2 threads        1 thread       1 thread
#   LeNet 1->8 3x3 28x28      0.158 / 0.243  0.101 / 0.151    0.298 / 0.397  0.157 / 0.241
#   CIFAR 3->32 3x3 p1 32x32  1.51 / 2.03    1.05 / 1.53      3.13 / 5.08    1.58 / 2.28
#   LeNet 8->16 3x3 13x13     0.277 / 0.261  0.177 / 0.156    0.451 / 0.471  0.271 / 0.275
# (the last on the filter-blocked forward pass one by one).  The blocked
# forward pass (small planes, many filters) is about as fast as the fused
# wide one and the pooling together: those layers pool in the blocked
# store instead.  The CIFAR-like training step (batch 64, Zen 4, median of
# 12 interleaved runs, ms), its second and third layers pooling in the
# blocked store / apart:
#   AVX-512 float32, 1 thread   40.40 / 41.41
#   AVX-512 float32, 2 threads  23.02 / 23.30
#   AVX2 float32, 1 thread      51-52 / 49-50 with the portable pooled store
#                               (58.9 / 52.7 before its ReLU pass was made
#                               contiguous); 53.2 / 53.0 (7 runs each, the
#                               machine busier) with AVX2's own
# and the LeNet training step (batch 64, AVX2 variant, every party
# restricted to AVX2, its second layer pooling in AVX2's blocked store /
# apart, medians of 4 interleaved runs): 1 thread 1.71 / 1.82 ms, 2
# threads 1.14 / 1.14-1.34.


def _winograd_sizes():
    """WINOGRAD_MIN_SIZES of the variant running now, in words."""
    names = {"forward": "forward pass", "input": "input gradient", "weight": "weight gradient"}
    groups = {}
    for operation, sizes in WINOGRAD_MIN_SIZES[_state["isa"]].items():
        groups.setdefault(sizes, []).append(names[operation])
    words = [" or ".join(f"{channels} channels and filters in batches of at least {tiles} 4x4"
                         " blocks of outputs" for channels, tiles in sizes) for sizes in groups]
    if len(groups) == 1:
        return "at least " + words[0]
    return "; ".join(" and ".join(operations) + ": at least " + text
                     for operations, text in zip(groups.values(), words))


def show_config(mode="stdout"):
    """Say which kernels this machine runs.

    Parameters
    ----------
    mode : {"stdout", "dicts"}, default "stdout"
        Print one line per item, or return them as a dict.

    Returns
    -------
    dict or None
        With ``mode="dicts"``: "direct convolution kernels" (the microkernel
        variant this processor runs: "avx512", "avx2" or "portable"),
        "direct convolution" (which layers take it), "winograd
        convolution" (which layers take Winograd's F(4x4, 3x3)), "threads"
        and "openmp".

    Raises
    ------
    ValueError
        For another ``mode``.

    Examples
    --------
    >>> import cyconv
    >>> info = cyconv.show_config(mode="dicts")
    >>> info["direct convolution kernels"] in ("avx512", "avx2", "portable")
    True
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    operations = {"forward": "forward", "input": "input gradient",
                  "weight": "weight gradient"}
    wide = WIDE_OPERATIONS.get(DETECTED_ISA, ())
    blocked = BLOCKED_OPERATIONS.get(DETECTED_ISA, ())
    ops = [op for op in ("forward", "input", "weight") if op in wide + blocked]
    how = ("filter-blocked or by output positions, as the rule finds faster"
           if all(op in wide and op in blocked for op in ops) else
           "; ".join(f"{operations[op]} " + ("filter-blocked" if op not in wide else
                                             "by output positions" if op not in blocked else
                                             "either") for op in ops))
    direct = (", ".join(operations[op] for op in ops)
              + f" ({how}) of stride-1, one-group layers with kernels up to {DIRECT_MAX_TAPS}"
              " taps, strided forward passes and weight gradients (filter-blocked), and"
              f" stride-2 input gradients of kernels of {PHASES_MIN_KERNEL}x{PHASES_MIN_KERNEL}"
              " or more as four stride-1 ones (where each is padded less than its taps);"
              " the rest by BLAS products" if ops
              else "off (no vectorised variant for this processor): BLAS products")
    winograd = ("off (cyconv.set_winograd(False))" if not get_winograd() else
                "F(4x4, 3x3) for 3x3 stride-1 layers (" + _winograd_sizes()
                + "); products by "
                + ("the blocked direct kernels (the weight gradient's where the channels fill"
                   " whole blocks of 16 floats or 8 doubles), the rest by BLAS"
                   if winograd_blocked_products() else "BLAS"))
    info = {
        "direct convolution kernels": DETECTED_ISA,
        "direct convolution kernel variants": ", ".join(available_isas()),
        "direct convolution": direct,
        "winograd convolution": winograd,
        "threads": get_num_threads(),
        "openmp": openmp_enabled(),
    }
    if mode == "dicts":
        return info
    for key, value in info.items():
        print(f"{key}: {value}")
    return None
