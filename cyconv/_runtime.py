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


def threads_for(work, min_work_per_thread):
    """Threads worth starting for ``work`` units: one per
    ``min_work_per_thread``, at least 1, at most cyconv.get_num_threads().
    The count never changes a result, only the speed."""
    return max(1, min(get_num_threads(), int(work) // min_work_per_thread))


# -- direct convolution ----------------------------------------------------

# The variant of the direct convolution's microkernels this processor runs:
# "avx512", "avx2" or "portable" (detected at import; see conv_direct.h).
DETECTED_ISA = _conv_direct.detected_isa()

# Which operations take the direct path, per microkernel variant: where it
# measured faster than (or as fast as) the BLAS products.  Zen 4, GCC 12,
# scipy's OpenBLAS (which runs its AVX-512 kernels there), 1 thread, best of
# interleaved runs, ms, direct / products, batch 64:
#   AVX-512 variant   forward      weight grad   input grad
#     W1a 1->8 3x3    0.14 / 0.20  0.22 / 0.22   0.20 / 0.17
#     W1b 8->16 3x3   0.25 / 0.33  0.37 / 0.37   0.30 / 0.31
#     1->6 5x5 p2     0.21 / 0.49  0.36 / 0.54   0.33 / 0.43
#     6->16 5x5       0.44 / 0.69  0.71 / 0.81   0.64 / 0.78
#   and on the CIFAR-like layers and W2/W3 about 0.7-1.0 overall.
#   AVX2 variant (on the same Zen 4): forward 0.16, 0.26, 0.24, 0.45 ms
#   (faster than the products), weight gradient 0.29, 0.57, 0.39, 1.04 and
#   input gradient 0.23, 0.34, 0.41, 0.79 (slower or even).
# Not measured on an AVX2-only processor (Zen 3), where the products run
# OpenBLAS's AVX2 kernels: there the AVX2 variant takes the forward pass
# only, the choice that measured no slower than the products on any layer.
# The portable variant takes nothing: it exists for other processors'
# correctness and for tests.
DIRECT_OPERATIONS = {
    "avx512": ("forward", "input", "weight"),
    "avx2": ("forward",),
}
DIRECT_ISAS = tuple(DIRECT_OPERATIONS)

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

_state = {"isa": DETECTED_ISA, "direct": "auto", "family": None}


def isa():
    """The variant the direct kernels run now (the detected one unless a
    test chose another)."""
    return _state["isa"]


def isa_code():
    return _conv_direct.isa_code(_state["isa"])


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
    _state["direct"] = mode
    _state["family"] = family
    if isa is not None:
        _state["isa"] = isa
    try:
        yield
    finally:
        _state.update(saved)


def available_isas():
    """The microkernel variants this processor runs, best last."""
    order = ("portable", "avx2", "avx512")
    return order[: order.index(DETECTED_ISA) + 1]


def direct_wanted(geometry, operation):
    """Whether ``operation`` ("forward", "input" or "weight" gradient) of a
    convolution that the direct kernels can run (see _conv_direct.supports)
    should: the measured rule, DIRECT_OPERATIONS.  The same for every
    stride-1 layer the direct kernels take: they won on all that were
    measured, small and large."""
    mode = _state["direct"]
    if mode != "auto":
        return mode == "always"
    return operation in DIRECT_OPERATIONS.get(_state["isa"], ())


def direct_family(geometry, operation):
    """Which family of direct kernels runs ``operation`` of a convolution
    that takes the direct path: "blocked" (vectorised over blocks of
    filters, conv_blocked.h) or "wide" (over output positions,
    conv_direct.h).  Both give bitwise the same forward pass and input
    gradient."""
    if _state["family"] is not None:
        return _state["family"]
    return "blocked"


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
        "direct convolution" (which layers take it), "threads" and
        "openmp".

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
    direct = (", ".join(operations[op] for op in DIRECT_OPERATIONS[DETECTED_ISA])
              + f" of stride-1, one-group layers with kernels up to {DIRECT_MAX_TAPS} taps; "
              "the rest by BLAS products" if DETECTED_ISA in DIRECT_ISAS
              else "off (no vectorised variant for this processor): BLAS products")
    info = {
        "direct convolution kernels": DETECTED_ISA,
        "direct convolution kernel variants": ", ".join(available_isas()),
        "direct convolution": direct,
        "threads": get_num_threads(),
        "openmp": openmp_enabled(),
    }
    if mode == "dicts":
        return info
    for key, value in info.items():
        print(f"{key}: {value}")
    return None
