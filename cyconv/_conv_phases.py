"""The input gradient of a stride-2 convolution as four stride-1 ones, on
the direct kernels.

At stride 2 (no dilation), input row ``2 Y + a`` of a phase ``a`` (0 or 1)
is reached only by the kernel rows ``ky = 2 u + r`` of one parity, ``r =
(a + pad_top) mod 2``, from output row ``Y + q - u``, ``q = (a + pad_top)
// 2``: the rows of each phase are the input gradient of a stride-1
convolution whose kernel is the weight's rows ``r, r + 2, ...`` and whose
top padding is ``q`` (its bottom padding makes its output as tall as the
layer's).  So with the columns: the four phases ``(a, b)`` are four
stride-1 input gradients with the sub-kernels ``weight[:, :, r::2, s::2]``,
which the direct kernels compute, each written to ``gx[:, :, a::2, b::2]``
(the rows and columns no window reaches, zero).
The products path instead writes every tap's products into unrolled
columns and adds them back at a stride of 2 (_conv._grad_input).  The rule
(_runtime.PHASES_MIN_KERNEL) takes kernels of at least 4 x 4, where the
phases' sub-kernels are large enough for the direct kernels to pay.

The caller (_conv.py) has validated the arguments; every size here is
derived from its geometry, and a phase geometry is made only where the
stride-1 kernels read inside what the layer's own geometry bounds.
"""

import dataclasses
import functools

import numpy as np

from . import _conv_direct, _runtime
from ._deferred import Deferred
from ._runtime import threads_for

# Its module imports scipy.linalg (BLAS): not with cyconv, see _deferred.
_conv = Deferred("cyconv._kernels._conv")


def _axis(phase, pad, kernel, size, out):
    """Along one axis, phase ``phase`` of a stride-2 layer: ``(first tap,
    taps, rows, top padding, bottom padding)`` of its stride-1 convolution,
    whose rows are the input rows ``phase, phase + 2, ...`` that some
    window reaches (the bottom padding that makes its output as tall as
    the layer's would be negative where the last ones are never reached:
    those are left out, and their gradient is zero)."""
    first, top = (phase + pad) % 2, (phase + pad) // 2
    taps = len(range(first, kernel, 2))
    rows = len(range(phase, size, 2))
    bottom = out - rows - top + taps - 1
    if bottom < 0:
        rows, bottom = rows + bottom, 0
    return first, taps, rows, top, bottom


@functools.lru_cache(maxsize=256)
def _phases(geometry):
    """``((a, b, first_row_tap, first_column_tap, geometry), ...)`` for the
    four phases of a stride-2 layer the stride-1 kernels can run (every
    phase with a tap and a row reached, and its padding less than its
    taps, as the direct input gradient pads by taps - 1 - padding), else
    None."""
    g = geometry
    if g.stride != (2, 2) or g.dilation != (1, 1) or g.groups != 1 or g.n == 0:
        return None
    found = []
    for a in range(2):
        r, kh, rows, top, bottom = _axis(a, g.pad_top, g.kernel[0], g.height, g.out_height)
        for b in range(2):
            s, kw, cols, left, right = _axis(b, g.pad_left, g.kernel[1], g.width, g.out_width)
            if not (kh >= 1 and kw >= 1 and rows >= 1 and cols >= 1
                    and 0 <= top < kh and 0 <= bottom < kh and 0 <= left < kw
                    and 0 <= right < kw):
                return None
            found.append((a, b, r, s, dataclasses.replace(
                g, batched=True, height=rows, width=cols, kernel=(kh, kw), stride=(1, 1),
                pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right)))
    return tuple(found)


def use(geometry):
    """Whether this layer's input gradient takes the phases: a stride-2
    layer of a kernel of at least PHASES_MIN_KERNEL taps a side, whose four
    phases all take the direct kernels."""
    if min(geometry.kernel) < _runtime.PHASES_MIN_KERNEL:
        return False
    found = _phases(geometry)
    return found is not None and all(_conv_direct.use(p[4], "input") for p in found)


def grad_input(g4, weight, geometry, n_threads):
    """The input gradient of a batch (``use(geometry)`` holds), or None
    where the weight is not finite (the direct kernels check; the caller
    takes the products, which handle it)."""
    g = geometry
    planes = g.n * g.channels
    parts = []
    # in the order (0, 0), (0, 1), (1, 0), (1, 1)
    for a, b, r, s, phase in _phases(geometry):
        part = _conv_direct.grad_input(g4, np.ascontiguousarray(weight[:, :, r::2, s::2]),
                                       phase, n_threads)
        if part is None:
            return None
        # at most the phase's rows and columns of the input, as
        # interleave_phases reads them
        if (part.shape != (g.n, g.channels, phase.height, phase.width)
                or phase.height > (g.height + 1 - a) // 2
                or phase.width > (g.width + 1 - b) // 2):
            raise RuntimeError(f"phase ({a}, {b}) of {g} has shape {part.shape}")
        parts.append(part.reshape(planes, part.shape[2], part.shape[3]))
    grad = np.empty((g.n, g.channels, g.height, g.width), weight.dtype)
    # a copy, a load and a store an element: threads as for ReLU's gradient
    _conv.interleave_phases(*parts, grad.reshape(planes, g.height, g.width),
                            threads_for(grad.size, _runtime.RELU_MIN_ELEMENTS_PER_THREAD))
    return grad
