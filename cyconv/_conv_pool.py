"""A convolution, its ReLU and 2x2 max pooling with stride 2 in one pass
(_kernels/_conv_pool.pyx): which geometries it takes, and its buffers.

For a model's Convolution -> ReLU -> MaxPooling(2) (see
cyconv.nn.containers): the pooled output and what MaxPooling's backward
pass keeps, bit for bit those of the three layers run one by one, without
writing the convolution's output (four times the pooled one) and reading
it back.  That holds where the convolution alone takes the direct path (whose two
families compute every value by the same chain of fused multiply-adds as
the kernel here), not the Winograd one, and the pooling alone the 2x2 kernels
with one-byte codes; the caller (Convolution's forward) has checked the
arrays, and the geometry is checked here.
"""

import functools

import numpy as np

from . import _conv_direct, _conv_winograd, _pool, _runtime
from ._kernels import _conv_direct as _direct_kernels
from ._kernels import _conv_pool
from ._kernels._views import typed_view
from ._scratch import Scratch

# Windows of the fused pooling: kernel, stride, padding, dilation.
_WINDOWS = ((2, 2), (2, 2), (0, 0), (1, 1))


def pool_geometry(geometry, kernel_size, stride, padding, ceil_mode, dilation):
    """The :class:`~cyconv._pool.PoolGeometry` that ``MaxPooling(kernel_size,
    stride, padding, ceil_mode, dilation)`` has on the output of the
    convolution of ``geometry``, where the fused pass gives that layer's
    results and the measured rule wants it (_runtime.conv_pool_wanted);
    else None.

    Its windows must tile the convolution's output without cutting any
    short (2x2, stride 2, no padding, no dilation; under ``ceil_mode`` an
    even output), for the 2x2 kernels whose codes the pooling's backward
    pass reads."""
    if (kernel_size, stride, padding, dilation) != _WINDOWS or type(ceil_mode) is not bool:
        return None
    return _pool_geometry(geometry, ceil_mode, _runtime.choices(), _pool.PAIRS_ISA)


@functools.lru_cache(maxsize=64)
def _pool_geometry(g, ceil_mode, choices, pairs_isa):
    # Asked at every call of a fused model, the same every step; the rule's
    # choices and the pooling variant are part of the key (tests change them).
    if not (g.batched and g.n > 0 and g.stride == (1, 1) and g.groups == 1
            and g.out_height >= 2 and g.out_width >= 2
            and _conv_direct.use(g, "forward") and not _conv_winograd.use(g, "forward")
            and _runtime.conv_pool_wanted(g)):
        return None
    pooled = _pool.pool_geometry((g.n, g.filters, g.out_height, g.out_width), *_WINDOWS[:3],
                                 ceil_mode, _WINDOWS[3])
    if not (pooled.pairs and 2 * pooled.out_height <= g.out_height
            and 2 * pooled.out_width <= g.out_width):
        return None
    return pooled


def forward(x4, weight, bias, geometry, pooled):
    """``(out, saved)``: 2x2 max pooling of max(conv2d(x4, weight) + bias, 0)
    (bias possibly empty), and the :class:`~cyconv._pool.SavedMaxima` that
    MaxPooling's forward pass would keep, for ``pooled`` =
    pool_geometry(geometry, ...) (not None)."""
    return _pass(geometry, pooled, x4.dtype, geometry.threads())(x4, weight, bias)


def _pass(g, pooled, dtype, n_threads):
    """forward's ``run(x4, weight, bias)`` for this geometry, pooling, dtype
    and thread count, with its sizes worked out at the first call and kept
    with the plan (as _conv_direct's passes)."""
    plan = _conv_direct._plan(g)
    key = ("pooled pass", pooled.out_height, pooled.out_width, dtype.char, n_threads,
           _runtime.choices())
    run = plan.routes.get(key)
    if run is not None:
        return run
    setup = _setup(g, plan, pooled, dtype, n_threads)
    shape = pooled.output_shape
    if setup is None:
        # The filter-blocked forward pass pools its tiles as it stores them.
        blocked = _conv_direct.forward_pass(g, dtype, n_threads, True)

        def run(x4, weight, bias):
            out = np.empty(shape, dtype)
            codes = _pool.pairs_codes(pooled)
            blocked(x4, weight, bias, out, codes.reshape(shape))
            return out, _pool.saved_pairs(pooled, out, codes)
    else:
        runs, padded, wide, isa = setup
        kernel = _conv_direct._of_dtype(_conv_pool.forward, dtype)
        taps = (typed_view(plan.offsets), plan.stride, g.pad_top, g.pad_left, plan.width, runs,
                isa, n_threads)
        scratch = Scratch([padded, wide], dtype)

        def run(x4, weight, bias):
            out = np.empty(shape, dtype)
            codes = _pool.pairs_codes(pooled)
            kernel(x4, weight, bias, out, codes, *scratch.views(), *taps)
            return out, _pool.saved_pairs(pooled, out, codes)
    plan.routes[key] = run
    return run


def _setup(g, plan, pooled, dtype, n_threads):
    """None where the filter-blocked forward pass runs, else what the fused
    wide kernel takes besides the arrays: (runs, shape of the padded
    copies, shape of the wide rows, variant code); worked out at the first
    call and kept with the plan, as _conv_direct._setup."""
    key = ("pooled", pooled.out_height, dtype.char, n_threads, _runtime.choices())
    if key in plan.routes:
        return plan.routes[key]
    setup = None
    if not _conv_direct._blocked(g, "forward"):
        isa = _runtime.isa_code()
        block = _conv_pool.filter_block(isa)
        blocks = -(-g.filters // block)
        # A sample per task, or with fewer samples than threads, its filter
        # blocks split (the values do not depend on it).
        runs = max(1, min(blocks, -(-n_threads // g.n)))
        setup = (runs, (n_threads, g.channels * plan.stride),
                 (n_threads, block * _direct_kernels.round_up(2 * pooled.out_height * plan.width)),
                 isa)
    plan.routes[key] = setup
    return setup
