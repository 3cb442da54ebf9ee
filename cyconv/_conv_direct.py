"""The direct convolution path (_kernels/_conv_direct.pyx): which
geometries it takes, and the buffers its kernels need.

The caller (_conv.py) has validated the arguments; every size the kernels
index with is derived here from the checked geometry.
"""

import numpy as np

from . import _runtime
from ._kernels import _conv_direct

def supports(geometry):
    """Whether the direct kernels can run this convolution: stride 1, one
    group, at most DIRECT_MAX_TAPS taps, a bounded padded copy, and (for the
    input gradient, which pads the output gradient by the kernel's span
    minus the padding) padding no larger than the dilated kernel's span."""
    kh, kw = geometry.kernel
    dh, dw = geometry.dilation
    span_h, span_w = dh * (kh - 1), dw * (kw - 1)
    padded = geometry.n * max(geometry.channels, geometry.filters) * (
        (geometry.height + span_h + geometry.pad_top + geometry.pad_bottom)
        * (geometry.width + span_w + geometry.pad_left + geometry.pad_right))
    return (geometry.stride == (1, 1) and geometry.groups == 1
            and kh * kw <= _runtime.DIRECT_MAX_TAPS
            and max(geometry.pad_top, geometry.pad_bottom) <= span_h
            and max(geometry.pad_left, geometry.pad_right) <= span_w
            and padded <= _runtime.DIRECT_MAX_PADDED)


def use(geometry):
    """Whether this convolution takes the direct path."""
    return _runtime.direct_wanted(geometry) and supports(geometry)


def _offsets(geometry, width, flipped=False):
    kh, kw = geometry.kernel
    dh, dw = geometry.dilation
    i = np.arange(kh)[:, None]
    j = np.arange(kw)[None, :]
    if flipped:
        i, j = kh - 1 - i, kw - 1 - j
    return np.ascontiguousarray((i * dh * width + j * dw).ravel(), dtype=np.intp)


def _padded(x4, top, left, height, width, reach, n_threads):
    """x4's planes copied into zeroed (height, width) planes at (top, left)."""
    stride = _conv_direct.plane_stride(height, width, reach)
    xp = np.zeros(x4.shape[:2] + (stride,), x4.dtype)
    _conv_direct.pad_planes(x4, xp, top, left, width, n_threads)
    return xp


def _correlate(xp, weight, bias, out, offsets, width, n_threads):
    rows = _conv_direct.round_up(out.shape[2] * width)
    wide = np.empty((n_threads, 4 * rows), out.dtype)
    _conv_direct.correlate(xp, weight, bias, out, offsets, width, wide,
                           _runtime.isa_code(), n_threads)


def forward(x4, weight, bias, geometry, n_threads):
    g = geometry
    width = g.padded_width
    xp = _padded(x4, g.pad_top, g.pad_left, g.padded_height, width,
                 g.dilation[1] * (g.kernel[1] - 1), n_threads)
    out = np.empty((g.n, g.filters, g.out_height, g.out_width), x4.dtype)
    _correlate(xp, weight, bias, out, _offsets(g, width), width, n_threads)
    return out


def grad_input(g4, weight, geometry, n_threads):
    """The correlation of the zero-padded output gradient with the flipped,
    transposed weights."""
    g = geometry
    (kh, kw), (dh, dw) = g.kernel, g.dilation
    height, width = g.height + dh * (kh - 1), g.width + dw * (kw - 1)
    gp = _padded(g4, dh * (kh - 1) - g.pad_top, dw * (kw - 1) - g.pad_left, height, width,
                 dw * (kw - 1), n_threads)
    grad_input = np.empty((g.n, g.channels, g.height, g.width), weight.dtype)
    transposed = np.ascontiguousarray(weight.transpose(1, 0, 2, 3))
    _correlate(gp, transposed, np.empty(0, weight.dtype), grad_input,
               _offsets(g, width, flipped=True), width, n_threads)
    return grad_input


def grad_weight(g4, x4, weight, geometry, n_threads):
    """Sums over runs of samples of g4 at x4's wide positions times x4's
    padded planes at each tap's offset, both channel-major with a plane of
    zeros after the last sample."""
    g = geometry
    width = g.padded_width
    stride = _conv_direct.packed_stride(g.padded_height, width)
    xp = np.zeros((g.channels, g.n + 1, stride), x4.dtype)
    _conv_direct.pad_planes(x4.transpose(1, 0, 2, 3), xp, g.pad_top, g.pad_left, width,
                            n_threads)
    gw = np.zeros((g.filters, g.n + 1, stride), x4.dtype)
    _conv_direct.pad_planes(g4.transpose(1, 0, 2, 3), gw, 0, 0, width, n_threads)
    taps = g.kernel[0] * g.kernel[1]
    per_part = max(-(-g.n // _runtime.DIRECT_WEIGHT_PARTS),
                   -(-_runtime.DIRECT_WEIGHT_RUN // stride))
    per_part = min(per_part, g.n)
    parts = -(-g.n // per_part)
    partials = np.empty((parts, g.filters, g.channels, taps), x4.dtype)
    workspace = np.empty((n_threads, taps * _conv_direct.LANE_VALUES_PER_TAP), x4.dtype)
    _conv_direct.weight_gradient(gw, xp, partials, _offsets(g, width), per_part, workspace,
                                 _runtime.isa_code(), n_threads)
    with np.errstate(invalid="ignore", over="ignore"):
        return partials.sum(axis=0).reshape(weight.shape)
