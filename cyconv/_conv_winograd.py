"""The Winograd path (_kernels/_conv_winograd.pyx): F(4x4, 3x3) for 3x3,
stride-1 convolutions of many channels, whose direct kernels already run
at the processor's peak of multiply-adds; which geometries it takes
(_runtime.winograd_wanted), whether its products run on BLAS or on the
blocked direct kernels (_runtime.winograd_blocked_products), the
transforms of the weight, and buffers.

The caller (_conv.py) has validated the arguments.  Each operation returns
None where a value it read is not finite or exceeds 2^44 in magnitude
(2^492 in float64): the transforms would turn an infinity into NaN where
the direct sum keeps it, and could overflow where it does not.  The caller
then takes the other paths.
"""

import functools

import numpy as np

from . import _runtime
from ._blas import single_threaded_blas
from ._deferred import Deferred

# Its products call BLAS through scipy.linalg: imported at the first use
# (see _deferred.py).
_conv_winograd = Deferred("cyconv._kernels._conv_winograd")

# Winograd's F(4x4, 3x3): outputs = A^T [(G w G^T) * (B^T d B)] A (the
# matrices: winograd_loops.h), over TILE x TILE blocks of outputs
# ("tiles"), each transformed into POSITIONS = 6 x 6 values; the buffers'
# matrices lie MATRIX_PAD values apart.  Those sizes are read from the
# compiled module, so that the buffers made here are the ones its kernels
# index.


def supports(geometry):
    """Whether the F(4x4, 3x3) kernels compute this convolution's three
    operations: a 3x3 kernel, stride 1, no dilation, one group, padding of
    at most 2 (the input gradient pads the output gradient by 2 minus it),
    and a batch."""
    g = geometry
    return (g.kernel == (3, 3) and g.stride == (1, 1) and g.dilation == (1, 1)
            and g.groups == 1 and g.n > 0
            and max(g.pad_top, g.pad_bottom, g.pad_left, g.pad_right) <= 2)


def use(geometry, operation):
    """Whether ``operation`` ("forward", "input", "weight") of this
    convolution takes the Winograd path."""
    return _use(geometry, operation, _runtime.choices())


@functools.lru_cache(maxsize=256)
def _use(geometry, operation, choices):
    # asked at every call, the same every step; the rule's choices are part
    # of the key (tests and benchmarks change them)
    return supports(geometry) and _runtime.winograd_wanted(geometry, operation)


def _pair_threads(weight):
    """Threads for a transform of the weight's (filter, channel) pairs."""
    return _runtime.threads_for(weight.shape[0] * weight.shape[1],
                                _runtime.WINOGRAD_MIN_PAIRS_PER_THREAD)


def _transformed(weight, flipped=False, by_channel=False):
    """G w G^T of each (filter, channel) pair of ``weight`` (F, C, 3, 3), as
    36 matrices (36, F, C), or ``by_channel`` (36, C, F); with ``flipped``
    of the weight flipped.  None where a value is out of range."""
    f, c = weight.shape[:2]
    positions = _conv_winograd.POSITIONS
    out = np.empty((positions, c, f) if by_channel else (positions, f, c), weight.dtype)
    in_range = _conv_winograd.transform_weight(weight, out, flipped, by_channel,
                                               _pair_threads(weight))
    return out if in_range else None


def _rows(tiles_per_row, tiles):
    """Rows of tiles a chunk: about ``tiles`` tiles, so that its matrices
    stay in cache, and where up to twice that many make it so,
    a multiple of 16 tiles (the blocked products' blocks, none part
    empty)."""
    rows = max(1, -(-tiles // tiles_per_row))
    for more in range(rows, 2 * rows + 1):
        if more * tiles_per_row % 16 == 0:
            return more
    return rows


def _buffers(n_threads, channels, filters, out_width, dtype, tiles):
    """``(rows, u, m, scratch)``: the rows of tiles a chunk (about
    ``tiles`` tiles), and each thread's matrices of a chunk's transformed
    input (36 x channels) and products or transformed output gradient (36
    x filters), MATRIX_PAD values apart, their rows of
    tiles rounded up to whole blocks of 16 (zeros at first: what the
    blocked products read past a chunk's tiles is finite), and its
    scratch, large enough for a tile-major U too (the sizes
    _conv_winograd.pyx's kernels index)."""
    tw = -(-out_width // _conv_winograd.TILE)
    rows = _rows(tw, tiles)
    width = -(-rows * tw // 16) * 16
    positions, pad = _conv_winograd.POSITIONS, _conv_winograd.MATRIX_PAD
    return (rows, np.zeros((n_threads, positions * (channels * width + pad)), dtype),
            np.empty((n_threads, positions * (filters * width + pad)), dtype),
            np.empty((n_threads, max((4 * rows + 2) * (4 * tw + 2) * channels,
                                     24 * (rows + 1) * tw + 4 * tw + 4,
                                     17 * (filters * width + pad))), dtype))


def _correlate(x4, transformed, bias, out_shape, pad_top, pad_left, n_threads, relu, blocked):
    """The forward kernel on planes x4, into a new array of ``out_shape``,
    or None (a value of x4 out of range); its products ``blocked`` or by
    BLAS (see _runtime.winograd_blocked_products)."""
    out = np.empty(out_shape, x4.dtype)
    rows, u, m, scratch = _buffers(n_threads, x4.shape[1], out_shape[1], out_shape[3],
                                   x4.dtype, _runtime.WINOGRAD_TILES)
    with single_threaded_blas():
        in_range = _conv_winograd.forward(x4, transformed, bias, out, u, m, scratch, pad_top,
                                          pad_left, rows, relu, _runtime.isa_code(), blocked,
                                          n_threads)
    return out if in_range else None


def forward(x4, weight, bias, geometry, n_threads, relu=False):
    """conv2d's output (with ``relu`` max(output, 0) as np.maximum), or
    None where a value of x4 or the weight is out of range."""
    g = geometry
    blocked = _runtime.winograd_blocked_products()
    # the blocked products read W_p^T (C x F), BLAS W_p
    transformed = _transformed(weight, by_channel=blocked)
    if transformed is None:
        return None
    return _correlate(x4, transformed, bias, (g.n, g.filters, g.out_height, g.out_width),
                      g.pad_top, g.pad_left, n_threads, relu, blocked)


def grad_input(g4, weight, geometry, n_threads):
    """The input gradient: the correlation of the output gradient, padded
    by 2 minus the padding, with the weight flipped and transposed; or
    None where a value is out of range."""
    g = geometry
    blocked = _runtime.winograd_blocked_products()
    # the flipped weight transposed: W_p (C x F) for BLAS, W_p^T for the
    # blocked products
    transformed = _transformed(weight, flipped=True, by_channel=not blocked)
    if transformed is None:
        return None
    return _correlate(g4, transformed, np.empty(0, weight.dtype),
                      (g.n, g.channels, g.height, g.width), 2 - g.pad_top, 2 - g.pad_left,
                      n_threads, False, blocked)


def grad_weight(g4, x4, geometry, n_threads):
    """The weight gradient, G^T (sum over tiles of V_p U_p^T) G, or None
    where a value of x4 or g4 is out of range."""
    g = geometry
    dtype = x4.dtype
    # parts of whole samples, as the direct path's, and of at least
    # WINOGRAD_MIN_PART_TILES tiles each: each part's partial, 36 x F x C
    # values, is written and read again when the parts are added, a cost
    # its tiles' products have to outweigh
    parts = max(1, min(_runtime.DIRECT_WEIGHT_PARTS,
                       _runtime.winograd_tiles(g) // _runtime.WINOGRAD_MIN_PART_TILES))
    per_part = -(-g.n // parts)
    partials = np.empty((-(-g.n // per_part), _conv_winograd.POSITIONS, g.filters, g.channels),
                        dtype)
    rows, u, v, scratch = _buffers(n_threads, g.channels, g.filters, g.out_width, dtype,
                                   _runtime.WINOGRAD_WEIGHT_TILES)
    # the blocked products take channels in whole blocks (16 float, 8 double)
    blocked = _runtime.winograd_blocked_products() and g.channels % (64 // dtype.itemsize) == 0
    with single_threaded_blas():
        in_range = _conv_winograd.grad_weight(g4, x4, partials, u, v, scratch, g.pad_top,
                                              g.pad_left, rows, per_part,
                                              _runtime.winograd_tile_major(), blocked,
                                              _runtime.isa_code(), n_threads)
    if not in_range:
        return None
    # the partials added in order of the parts, as the direct path adds its
    out = np.empty((g.filters, g.channels, 3, 3), dtype)
    _conv_winograd.weight_from_partials(partials, out, _pair_threads(out))
    return out
