"""The direct convolution path (_kernels/_conv_direct.pyx): which
geometries it takes, and the buffers its kernels need.

The caller (_conv.py) has validated the arguments; every size the kernels
index with is derived here from the checked geometry, once per geometry
(a training loop asks for the same few every step).
"""

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import _conv_winograd, _runtime
from ._kernels import _conv_direct
from ._kernels._views import typed_view
from ._pool import PooledGradient
from ._scratch import Scratch


def supports(geometry):
    """Whether the direct kernels can run all three operations of this
    convolution: stride 1, one group, at most DIRECT_MAX_TAPS taps, a
    bounded padded copy, and (for the input gradient, which pads the output
    gradient by the kernel's span minus the padding) padding no larger than
    the dilated kernel's span."""
    return _plan(geometry) is not None and geometry.stride == (1, 1)


def supports_operation(geometry, operation):
    """Whether the direct kernels can run ``operation`` of this
    convolution: as supports(), and at other strides the filter-blocked
    forward pass and weight gradient (their planes are read at a stride;
    the input gradient of a strided layer is no correlation)."""
    if _plan(geometry) is None:
        return False
    return geometry.stride == (1, 1) or (
        operation != "input" and _runtime.direct_family(geometry, operation) == "blocked")


def _route(geometry, operation):
    """``(direct, blocked)``: whether ``operation`` takes the direct path,
    and on which family; asked several times a call and the same every
    step, so kept with the geometry's plan."""
    plan = _plan(geometry)
    if plan is None:
        return False, False
    key = (operation, _runtime.choices())
    route = plan.routes.get(key)
    if route is None:
        route = plan.routes[key] = (
            _runtime.direct_wanted(geometry, operation)
            and supports_operation(geometry, operation),
            _runtime.direct_family(geometry, operation) == "blocked")
    return route


def use(geometry, operation):
    """Whether ``operation`` ("forward", "input", "weight") of this
    convolution takes the direct path."""
    return _route(geometry, operation)[0]


def _blocked(geometry, operation):
    """Whether ``operation`` runs on the filter-blocked kernels rather than
    the wide ones (see _runtime.direct_family)."""
    return _route(geometry, operation)[1]


def _block(dtype):
    """Filters per block of the filter-blocked kernels: 64 bytes."""
    return 64 // np.dtype(dtype).itemsize


def _packed_shape(g, dtype, transposed=False):
    """The shape of the weight (F, C, kh, kw) as blocks of filters (FB, C,
    kh*kw, B), or ``transposed`` as blocks of channels (CB, F, kh*kw, B),
    zero-padded to whole blocks: what pack_blocks writes (compiled:
    numpy's zero-fill, copy and transpose took 2-3x longer, 194 against 57
    us for 128 x 64 x 3 x 3 float32 filters, AMD EPYC Zen 3)."""
    block = _block(dtype)
    outer, inner = (g.channels, g.filters) if transposed else (g.filters, g.channels)
    return (-(-outer // block), inner, g.kernel[0] * g.kernel[1], block)


@dataclass(frozen=True)
class _Plan:
    """Sizes and tap offsets of one geometry's three operations."""

    offsets: np.ndarray          # forward and weight gradient: tap -> offset
    width: int                   # values per row of the padded input planes
    stride: int                  # values per padded input plane (forward)
    grad_offsets: np.ndarray     # input gradient: flipped taps
    grad_top: int                # where the output gradient sits in its planes
    grad_left: int
    grad_width: int
    grad_stride: int
    row_taps: np.ndarray         # filter-blocked forward: each output row's taps
    grad_row_taps: np.ndarray    # ...and input gradient's (see _row_taps)
    edge_taps: tuple             # filter-blocked forward: (first, last) column's
    grad_edge_taps: tuple        # ...and input gradient's (see _column_taps)
    packed_stride: int           # weight gradient: values per plane of a run
    samples_per_part: int
    parts: int
    chunk: int                   # samples per call: bounds the padded copies
    # The rule's answers for this geometry (see _route), and what is
    # derived from the plan once (see _weight_runs).
    routes: dict = field(default_factory=dict, compare=False, repr=False)

    def chunks(self, n):
        """Slices of the batch, each at most ``chunk`` samples and starting
        at a multiple of samples_per_part (so each holds whole parts)."""
        return [slice(first, min(n, first + self.chunk)) for first in range(0, n, self.chunk)]


def _row_taps(out_rows, kernel, read_row, data_top, data_rows):
    """(out_rows, 2): for each output row, the range [t0, t1) of taps (in
    the order of the offsets: rows of the kernel, then columns) whose
    kernel row i reads input row ``read_row(row, i)`` of the padded planes
    within the data, rows data_top to data_top + data_rows; the other taps
    read padding rows only.  (read_row is monotonic in i, so the taps that
    remain are one range.)"""
    kh, kw = kernel
    ranges = []
    for row in range(out_rows):
        inside = [i for i in range(kh) if data_top <= read_row(row, i) < data_top + data_rows]
        ranges.append((inside[0] * kw, (inside[-1] + 1) * kw) if inside else (0, 0))
    taps = np.array(ranges, np.intc).reshape(out_rows, 2)
    taps.flags.writeable = False
    return taps


def _column_taps(out_cols, kernel, read_col, data_left, data_cols):
    """``(first, last)``: bit masks of the taps (in the order of the
    offsets) whose kernel column j reads column ``read_col(col, j)`` of the
    padded planes outside the data, columns data_left to data_left +
    data_cols, at the first and the last output column: padding, whose
    zeros the filter-blocked kernels add rather than multiply."""
    kh, kw = kernel
    if kh * kw > 64:  # a tap a bit of the kernels' 64-bit masks: none past that
        return 0, 0
    masks = []
    for col in (0, out_cols - 1):
        outside = [j for j in range(kw)
                   if not data_left <= read_col(col, j) < data_left + data_cols]
        masks.append(sum(1 << (i * kw + j) for i in range(kh) for j in outside))
    return tuple(masks)


def _offsets(kernel, dilation, width, flipped=False):
    (kh, kw), (dh, dw) = kernel, dilation
    i = np.arange(kh)[:, None]
    j = np.arange(kw)[None, :]
    if flipped:
        i, j = kh - 1 - i, kw - 1 - j
    offsets = np.ascontiguousarray((i * dh * width + j * dw).ravel(), dtype=np.intp)
    offsets.flags.writeable = False
    return offsets


@functools.lru_cache(maxsize=256)
def _plan(g):
    (kh, kw), (dh, dw) = g.kernel, g.dilation
    span_h, span_w = dh * (kh - 1), dw * (kw - 1)
    # Rows share their zero columns: a row's right padding is the next
    # row's left padding (reads past a row's data land there), so a row
    # holds the data and the wider of the two paddings only.  Fewer garbage
    # positions: 8x8 with padding 1 computes 9 positions per output row,
    # not 10.
    width = g.width + max(g.pad_left, g.pad_right)
    grad_height = g.height + span_h
    grad_width = g.out_width + span_w - min(g.pad_left, g.pad_right)
    stride = _conv_direct.plane_stride(g.padded_height, width, span_w)
    grad_stride = _conv_direct.plane_stride(grad_height, grad_width, span_w)
    # The wide weight gradient reads each run of planes at every tap's
    # offset, up to span_h * width + span_w past its last position: the
    # plane of zeros after the last sample must reach that far (with wide
    # padding on narrow planes the offset exceeds a plane).
    packed = max(_conv_direct.packed_stride(g.padded_height, width),
                 _conv_direct.round_up(span_h * width + span_w))
    per_part = max(-(-g.n // _runtime.DIRECT_WEIGHT_PARTS),
                   -(-_runtime.DIRECT_WEIGHT_RUN // packed))
    per_part = max(1, min(per_part, g.n))  # at least 1: an empty batch has no runs
    # Samples per call, in whole parts, so that no padded copy exceeds
    # DIRECT_MAX_PADDED values (the weight gradient's copies hold one
    # sample more).
    per_sample = max(g.channels, g.filters) * max(stride, grad_stride)
    chunk = (_runtime.DIRECT_MAX_PADDED // per_sample - 1) // per_part * per_part
    if not (g.groups == 1 and kh * kw <= _runtime.DIRECT_MAX_TAPS
            and max(g.pad_top, g.pad_bottom) <= span_h
            and max(g.pad_left, g.pad_right) <= span_w
            and chunk > 0):
        return None
    return _Plan(
        offsets=_offsets(g.kernel, g.dilation, width), width=width,
        stride=stride,
        grad_offsets=_offsets(g.kernel, g.dilation, grad_width, flipped=True),
        grad_top=span_h - g.pad_top, grad_left=span_w - g.pad_left, grad_width=grad_width,
        grad_stride=grad_stride,
        row_taps=_row_taps(g.out_height, g.kernel, lambda r, i: r * g.stride[0] + i * dh,
                           g.pad_top, g.height),
        grad_row_taps=_row_taps(g.height, g.kernel, lambda r, i: r + (kh - 1 - i) * dh,
                                span_h - g.pad_top, g.out_height),
        edge_taps=_column_taps(g.out_width, g.kernel, lambda c, j: c * g.stride[1] + j * dw,
                               g.pad_left, g.width),
        grad_edge_taps=_column_taps(g.width, g.kernel, lambda c, j: c + (kw - 1 - j) * dw,
                                    span_w - g.pad_left, g.out_width),
        packed_stride=packed, samples_per_part=per_part, parts=-(-g.n // per_part),
        chunk=chunk,
    )


def _pads(g):
    """Whether the convolution pads its input."""
    return (g.pad_top, g.pad_bottom, g.pad_left, g.pad_right) != (0, 0, 0, 0)


def input_planes(x4, geometry, plan, n_threads=None, scratch=None):
    """``(planes, copy)``: the planes the filter-blocked forward pass and
    weight gradient read x4 from.  A layer without padding reads x4 where
    it lies, viewed (N, C, H * W) (copy False), if it is C-contiguous,
    aligned and writeable (the kernels' memoryviews are): these kernels
    read single values at each output pixel's taps, all inside the plane
    there, so they need no zeros around it or after it.  Else scratch
    planes that the kernel pads x4 into (copy True): ``scratch`` where
    given, else a new array, (N, C, plan.stride), or given ``n_threads``
    (the forward pass, which pads each sample in the task that reads it),
    (n_threads, C, plan.stride).  The copy was a tenth of a LeNet second
    layer's weight gradient."""
    g = geometry
    flags = x4.flags
    if not _pads(g) and flags.c_contiguous and flags.aligned and flags.writeable:
        return x4.reshape(x4.shape[0], g.channels, g.height * g.width), False
    if scratch is not None:
        return scratch, True
    count = x4.shape[0] if n_threads is None else n_threads
    return np.empty((count, g.channels, plan.stride), x4.dtype), True


class _Setup(NamedTuple):
    """What the kernel calls of one operation take besides the arrays, for
    one geometry, dtype, thread count and set of the rule's choices."""

    blocked: bool   # the filter-blocked family, else the wide one
    parts: list     # slices of the batch, a kernel call each (see _Plan.chunks)
    scratch: tuple  # shape of the threads' tiles (blocked) or wide rows
    isa: int        # the kernels' code of the variant


def _setup(g, plan, operation, dtype, n_threads):
    """The _Setup of ``operation`` ("forward", "input", "weight"), worked
    out at its first call and kept with the plan: at batch 1, working it
    out at every call took as long as the kernels' arithmetic."""
    key = (operation, dtype.char, n_threads, _runtime.choices())
    setup = plan.routes.get(key)
    if setup is None:
        blocked = _blocked(g, operation)
        if operation == "weight":
            # the wide weight gradient's register tiles (the blocked one's
            # buffers follow _weight_runs)
            scratch = (n_threads, len(plan.offsets) * _conv_direct.LANE_VALUES_PER_TAP)
        else:
            rows, columns, width = ((g.out_height, g.out_width, plan.width)
                                    if operation == "forward"
                                    else (g.height, g.width, plan.grad_width))
            # each thread's position-major output tile, or wide output of
            # one block of filters
            scratch = ((n_threads, rows * columns * _conv_direct.tile_blocks() * _block(dtype))
                       if blocked else (n_threads, 4 * _conv_direct.round_up(rows * width)))
        setup = plan.routes[key] = _Setup(blocked, plan.chunks(g.n), scratch,
                                          _runtime.isa_code())
    return setup


def forward(x4, weight, bias, geometry, n_threads, relu=False):
    """conv2d's output, and with ``relu`` max(output, 0) as np.maximum."""
    return forward_pass(geometry, x4.dtype, n_threads, relu)(x4, weight, bias)


def forward_pooled(x4, weight, bias, geometry, out, codes, n_threads):
    """Into ``out`` and ``codes`` (N, F, Hp, Wp): the 2x2 max pooling
    (stride 2, whole windows) of max(conv2d's output, 0) and its winners'
    codes, computed by the filter-blocked forward pass, which pools in its
    store (the caller checked that this geometry's forward pass takes it, at
    stride 1)."""
    forward_pass(geometry, x4.dtype, n_threads, True)(x4, weight, bias, out, codes)


def forward_pass(g, dtype, n_threads, relu):
    """``run(x4, weight, bias)``: conv2d's output of this geometry in
    ``dtype`` on ``n_threads`` (with ``relu``, max(output, 0)), with what
    does not change from call to call worked out at the first call and
    kept with the plan (as input_pass); on the filter-blocked kernels also
    ``run(x4, weight, bias, out, codes)``, which pools (see
    forward_pooled)."""
    plan = _plan(g)
    key = ("forward pass", dtype.char, n_threads, relu, _runtime.choices())
    run = plan.routes.get(key)
    if run is not None:
        return run
    setup = _setup(g, plan, "forward", dtype, n_threads)
    shape = (g.n, g.filters, g.out_height, g.out_width)
    parts = _whole_or(setup.parts, g.n)
    padded = (n_threads, g.channels, plan.stride)
    if setup.blocked:
        kernel = _of_dtype(_conv_direct.forward_blocked, dtype)
        pack = _of_dtype(_conv_direct.pack_blocks, dtype)
        taps = (typed_view(plan.offsets), typed_view(plan.row_taps), *plan.edge_taps,
                g.pad_top, g.pad_left, plan.width, g.out_width, *g.stride, relu, setup.isa,
                n_threads)
        packed_shape = _packed_shape(g, dtype)
        # the padded planes where the layer pads (see input_planes)
        scratch = Scratch([setup.scratch] + ([padded] if _pads(g) else []), dtype)

        def run(x4, weight, bias, out=None, codes=_NO_CODES):
            if out is None:
                out = np.empty(shape, dtype)
            tiles, *planes = scratch.views()
            # new at each call, not kept: Python runs between the packing
            # and the kernels (a collection's callbacks, say), where a
            # nested call of this pass would pack its weight into kept arrays
            packed = np.empty(packed_shape, dtype)
            pack(weight, packed, False)
            planes = planes[0] if planes else None
            for part in parts:
                if part is None:
                    kernel(x4, packed, bias, out, codes,
                           *input_planes(x4, g, plan, n_threads, planes), tiles, *taps)
                else:
                    x_part = x4[part]
                    kernel(x_part, packed, bias, out[part], codes[part],
                           *input_planes(x_part, g, plan, n_threads, planes), tiles, *taps)
            return out
    else:
        kernel = _of_dtype(_conv_direct.forward, dtype)
        taps = (typed_view(plan.offsets), g.pad_top, g.pad_left, plan.width, relu, setup.isa,
                n_threads)
        scratch = Scratch([padded, setup.scratch], dtype)

        def run(x4, weight, bias):
            out = np.empty(shape, dtype)
            planes, rows = scratch.views()
            for part in parts:
                kernel(x4 if part is None else x4[part], weight, bias,
                       out if part is None else out[part], planes, rows, *taps)
            return out
    plan.routes[key] = run
    return run


def grad_input(g4, weight, geometry, n_threads):
    """The input gradient, or None where the weight is not finite."""
    return input_pass(geometry, weight.dtype, n_threads)(g4, weight)


def input_pass(g, dtype, n_threads):
    """``run(g4, weight)``: grad_input of this geometry in ``dtype`` on
    ``n_threads``, with everything that does not change from call to call
    (routes, sizes, the kernel of the dtype) worked out at the first call
    and kept with the plan."""
    plan = _plan(g)
    key = ("input pass", dtype.char, n_threads, _runtime.choices())
    run = plan.routes.get(key)
    if run is not None:
        return run
    setup = _setup(g, plan, "input", dtype, n_threads)
    shape = (g.n, g.channels, g.height, g.width)
    padded = (n_threads, g.filters, plan.grad_stride)
    parts = _whole_or(setup.parts, g.n)
    if setup.blocked:
        kernel = _of_dtype(_conv_direct.backward_input_blocked, dtype)
        pack = _of_dtype(_conv_direct.pack_blocks, dtype)
        taps = (typed_view(plan.grad_offsets), typed_view(plan.grad_row_taps),
                *plan.grad_edge_taps, plan.grad_top, plan.grad_left, plan.grad_width, setup.isa,
                n_threads)
        packed_shape = _packed_shape(g, dtype, transposed=True)
        scratch = Scratch([padded, setup.scratch], dtype)

        def run(g4, weight):
            planes, tiles = scratch.views()
            packed = np.empty(packed_shape, dtype)  # not kept (see forward_pass)
            if not pack(weight, packed, True):
                return None  # a weight that is not finite
            grad_input = np.empty(shape, dtype)
            for part in parts:
                kernel(g4 if part is None else g4[part], packed,
                       grad_input if part is None else grad_input[part], planes, tiles, *taps)
            return grad_input
    else:
        kernel = _of_dtype(_conv_direct.backward_input, dtype)
        taps = (typed_view(plan.grad_offsets), plan.grad_top, plan.grad_left, plan.grad_width,
                setup.isa, n_threads)
        scratch = Scratch([padded, setup.scratch], dtype)

        def run(g4, weight):
            grad_input = np.empty(shape, dtype)
            planes, rows = scratch.views()
            transposed = np.ascontiguousarray(weight.transpose(1, 0, 2, 3))
            for part in parts:
                if not kernel(g4 if part is None else g4[part], transposed,
                              grad_input if part is None else grad_input[part], planes, rows,
                              *taps):
                    return None
            return grad_input
    plan.routes[key] = run
    return run


def grad_weight(g4, x4, weight, geometry, n_threads, grad_bias):
    """``(grad_weight, bias_done)``: the weight gradient, or None where x is
    not finite; and whether the bias gradient was written into
    ``grad_bias`` from the same pass over g4 (else the caller sums it:
    where x is not finite).  See weight_pass."""
    return weight_pass(geometry, x4.dtype, n_threads)(g4, x4, weight, grad_bias)


def weight_pass(g, dtype, n_threads):
    """``run(g4, x4, weight, grad_bias)``: grad_weight of this geometry in
    ``dtype`` on ``n_threads``, with what does not change from call to call
    worked out at the first call and kept with the plan (as input_pass).

    The wide kernels sum over runs of samples of g4 at x4's wide positions
    times x4's padded planes at each tap's offset, both channel-major with
    a plane of zeros after the last sample, and the bias gradient from the
    same pass over g4; the filter-blocked ones as _weight_blocked_pass says."""
    plan = _plan(g)
    key = ("weight pass", dtype.char, n_threads, _runtime.choices(),
           _runtime.BLOCKED_WEIGHT_RUN, _runtime.BLOCKED_WEIGHT_SPLIT_PAIRS)
    run = plan.routes.get(key)
    if run is not None:
        return run
    setup = _setup(g, plan, "weight", dtype, n_threads)
    if setup.blocked:
        run = plan.routes[key] = _weight_blocked_pass(g, plan, dtype, n_threads)
        return run
    kernel = _of_dtype(_conv_direct.backward_weight, dtype)
    partials_shape = (plan.parts, g.filters, g.channels, len(plan.offsets))
    sums_shape = (g.filters, g.out_height * g.out_width)
    parts = _whole_or(setup.parts, g.n)
    layout = (typed_view(plan.offsets), g.pad_top, g.pad_left, plan.width,
              plan.samples_per_part)
    rows = (g.out_height, g.out_width)
    # a dense output gradient: no codes, no pooled output, no plane to expand
    # it into (the transposed views of empty arrays are empty)
    no_pooling = (_NO_CODES, typed_view(np.empty((0, 0, 0, 0), dtype)), 0,
                  typed_view(np.empty((0, 0), dtype)))
    # Each part's padded planes of the output gradient and x, with a plane of
    # zeros after the last sample: kept with the rest where the batch is one
    # part, else made for each part.
    whole = parts == [None]
    scratch = Scratch([setup.scratch, (n_threads, g.out_height * g.out_width)]
                      + ([_padded_planes(g, plan, g.n, g.filters),
                          _padded_planes(g, plan, g.n, g.channels)] if whole else []), dtype)

    def run(g4, x4, weight, grad_bias):
        workspace, dense, *planes = scratch.views()
        # A PooledGradient is expanded a plane at a time in each thread's
        # scratch (dense) as the rows are copied; a dense gradient is copied
        # as it is.
        pooling = isinstance(g4, PooledGradient)
        if pooling:
            pairs_isa = g4.saved.isa
            g4, codes, pooled = g4.arrays()
        else:
            codes, pooled, pairs_isa, dense = no_pooling
        partials = np.empty(partials_shape, dtype)
        # The bias gradient's per-pixel sums, kept as the output gradient is
        # copied (carried from one chunk to the next, so chunks change nothing).
        pixel_sums = np.zeros(sums_shape, dtype)
        for part in parts:
            if part is None:
                g_part, x_part, codes_part, pooled_part = g4, x4, codes, pooled
                n, first = g.n, 0
                gw, xp = planes
            else:
                g_part, x_part, codes_part, pooled_part = (
                    g4[part], x4[part], codes[part], pooled[part])
                n, first = part.stop - part.start, part.start // plan.samples_per_part
                gw = np.empty(_padded_planes(g, plan, n, g.filters), dtype)
                xp = np.empty(_padded_planes(g, plan, n, g.channels), dtype)
            if pooling:
                codes_part = codes_part.transpose(1, 0, 2, 3)
                pooled_part = pooled_part.transpose(1, 0, 2, 3)
            # The last run also sums the bias gradient's per-pixel sums.
            if not kernel(
                    g_part.transpose(1, 0, 2, 3), x_part.transpose(1, 0, 2, 3), gw, xp,
                    partials[first:first - (-n // plan.samples_per_part)], *layout, workspace,
                    x_part, pixel_sums, setup.isa, n_threads, codes_part, pooled_part, dense,
                    pairs_isa, *rows, grad_bias if part is parts[-1] else grad_bias[:0]):
                return None, False
        if not parts:  # an empty batch: zeros
            _conv_direct.sum_pixels(pixel_sums, grad_bias)
        if plan.parts == 1:
            return partials.reshape(weight.shape), True
        with np.errstate(invalid="ignore", over="ignore"):
            return partials.sum(axis=0).reshape(weight.shape), True

    plan.routes[key] = run
    return run


def _padded_planes(g, plan, n, planes):
    """The shape of the wide weight gradient's padded copies of ``n``
    samples' ``planes`` planes each (filters of the output gradient,
    channels of x), channel-major, with a plane of zeros after the last
    sample."""
    return (planes, n + 1, plan.packed_stride)


def backward_passes(g, dtype, n_threads, compute_grad_input):
    """``(weight_pass, input_pass)`` where both gradients wanted take the
    direct kernels (``input_pass`` None without the input gradient), else
    None: asked at every backward call and the same every step, so kept
    with the plan (as the passes themselves)."""
    plan = _plan(g)
    if plan is None:
        return None
    key = ("backward passes", dtype.char, n_threads, compute_grad_input, _runtime.choices(),
           _runtime.BLOCKED_WEIGHT_RUN, _runtime.BLOCKED_WEIGHT_SPLIT_PAIRS)
    passes = plan.routes.get(key, False)
    if passes is False:
        operations = ("weight", "input") if compute_grad_input else ("weight",)
        direct = all(use(g, op) and not _conv_winograd.use(g, op) for op in operations)
        passes = plan.routes[key] = (
            (weight_pass(g, dtype, n_threads),
             input_pass(g, dtype, n_threads) if compute_grad_input else None)
            if direct else None)
    return passes


def _whole_or(parts, n):
    """The parts of a batch of ``n`` as the passes loop over them: [None]
    for one part that is the whole batch (its arrays passed as they are,
    not sliced)."""
    if len(parts) == 1 and parts[0].start == 0 and parts[0].stop == n:
        return [None]
    return parts


def _of_dtype(kernel, dtype):
    """The float or double version of a fused-type kernel: called directly,
    it skips Cython's choice among them at every call, which inspects each
    typed argument.  (A function that is not fused-typed, a test's spy say,
    is its own version.)"""
    versions = getattr(kernel, "__signatures__", None)
    if versions is None:
        return kernel
    return versions["float" if dtype.char == "f" else "double"]


# Codes of no 2x2 pooling: the wide weight gradient's output gradient is dense.
_NO_CODES = typed_view(np.empty((0, 0, 0, 0), np.uint8))


def _expands(g, windows, group_rows):
    """Whether the filter-blocked weight gradient, summing rows in groups
    of ``group_rows``, expands the gradient of a 2x2 pooling of geometry
    ``windows`` as it copies it: where the rule wants it, the windows tile
    the plane, and each group of rows holds whole windows."""
    return (_runtime.blocked_expands_pooled() and windows.out_height == g.out_height // 2
            and windows.out_width == g.out_width // 2
            and (group_rows % 2 == 0 or group_rows >= g.out_height))


@dataclass(frozen=True)
class _WeightRuns:
    """How the filter-blocked weight gradient of one geometry and dtype
    splits its work (see _weight_runs); the same every call."""

    block: int        # filters per block
    blocks: int
    run_rows: int     # output rows a run sums
    run_samples: int  # samples a run sums (planes smaller than a run)
    chunk: int        # samples a call
    split: bool       # each group of rows its own partial gradient
    group_rows: int
    acc_shape: tuple
    sums_shape: tuple
    tile_values: int  # each thread's position-major copy of a run


def _weight_runs(g, plan, dtype):
    """The geometry's _WeightRuns in ``dtype``, computed once and kept with
    its plan (a batch-1 step asked these a dozen questions each call), for
    the tuned constants they follow (tests change them)."""
    key = ("weight runs", dtype.char, _runtime.BLOCKED_WEIGHT_RUN,
           _runtime.BLOCKED_WEIGHT_SPLIT_PAIRS)
    runs = plan.routes.get(key)
    if runs is not None:
        return runs
    f, c, (kh, kw) = g.filters, g.channels, g.kernel
    block = _block(dtype)
    blocks = -(-f // block)
    positions = g.out_height * g.out_width
    # Runs of whole rows, or of whole samples for planes smaller than a run;
    # batch chunks of whole runs, so that chunking changes no sum.
    run = _runtime.BLOCKED_WEIGHT_RUN
    run_rows = max(1, run // g.out_width) if positions > run else g.out_height
    run_samples = 1 if positions > run else run // positions
    chunk = max(run_samples, plan.chunk // run_samples * run_samples)
    # Layers with few (filter block, channel) pairs sum each run of rows
    # into its own partial gradient, so that threads can share them too.
    split = positions > run and _runtime.blocked_weight_split(blocks, c)
    group_rows = run_rows if split else max(1, g.out_height)
    runs = plan.routes[key] = _WeightRuns(
        block=block, blocks=blocks, run_rows=run_rows, run_samples=run_samples, chunk=chunk,
        split=split, group_rows=group_rows,
        acc_shape=(-(-g.out_height // group_rows) if split else 1, blocks, c, kh * kw, block),
        sums_shape=(blocks, positions * block),
        tile_values=run_samples * _conv_direct.tile_blocks() * positions * block)
    return runs


def _weight_blocked_pass(g, plan, dtype, n_threads):
    """weight_pass's ``run`` on the filter-blocked kernels: running sums per
    (group of rows, filter block, channel, tap), carried from one chunk of
    the batch to the next, so that the chunks change nothing, then added
    over the groups in order; and the bias gradient, into ``grad_bias``,
    from per-pixel running sums kept in the same pass over the output
    gradient.  A PooledGradient ``g4`` whose windows tile the plane is
    expanded as each block of its rows is copied, on AVX-512 (see
    _runtime.blocked_expands_pooled); else it is made dense first."""
    runs = _weight_runs(g, plan, dtype)
    kernel = _of_dtype(_conv_direct.backward_weight_blocked, dtype)
    isa = _runtime.isa_code()
    f, c, (kh, kw) = g.filters, g.channels, g.kernel
    chunks = _whole_or([slice(first, min(g.n, first + runs.chunk))
                        for first in range(0, g.n, runs.chunk)], g.n)
    no_pooling = (_NO_CODES, typed_view(np.empty((0, 0, 0, 0), dtype)))
    taps = (typed_view(plan.offsets), typed_view(plan.row_taps), g.pad_top, g.pad_left,
            plan.width, *g.stride, runs.run_rows, runs.run_samples, runs.group_rows, isa,
            n_threads)
    # each thread's copy of a run of samples' output gradient, position-major;
    # and where the batch is one chunk and the layer pads, the padded planes
    # (see input_planes)
    padded = chunks == [None] and _pads(g)
    scratch = Scratch([(n_threads, runs.tile_values)]
                      + ([(g.n, c, plan.stride)] if padded else []), dtype)

    def run(g4, x4, weight, grad_bias):
        codes, pooled = no_pooling
        if isinstance(g4, PooledGradient):
            if _expands(g, g4.saved.geometry, runs.group_rows):
                g4, codes, pooled = g4.arrays()
            else:
                g4 = g4.dense()
        acc = np.zeros(runs.acc_shape, dtype)
        sums = np.zeros(runs.sums_shape, dtype)
        gt, *planes = scratch.views()
        for part in chunks:
            if part is None:
                kernel(g4, codes, pooled, g.out_width, x4, gt,
                       *input_planes(x4, g, plan, scratch=planes[0] if planes else None), acc,
                       sums, *taps, grad_bias)
                continue
            # The last chunk also sums the bias gradient's per-pixel sums.
            x_part = x4[part]
            kernel(g4[part], codes[part], pooled[part], g.out_width, x_part, gt,
                   *input_planes(x_part, g, plan), acc, sums, *taps,
                   grad_bias if part.stop == g.n else grad_bias[:0])
        if g.n == 0:  # an empty batch: zeros
            _conv_direct.sum_positions(sums, grad_bias)
        total = acc[0]
        if len(acc) > 1:
            with np.errstate(invalid="ignore", over="ignore"):
                for partial in acc[1:]:  # in order of the groups
                    total = total + partial
        # (FB, C, taps, B) back to (F, C, kh, kw)
        return np.ascontiguousarray(
            total.transpose(0, 3, 1, 2).reshape(runs.blocks * runs.block, c, kh, kw)[:f]), True

    return run
