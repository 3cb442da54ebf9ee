"""conv2d and its gradients: validation, padding, output and workspace
allocation around the compiled paths, chosen per layer and operation by
the rules in _runtime.py:

* the Winograd kernels (_conv_winograd.py), for 3x3 stride-1 layers of
  many channels;
* the direct kernels (_conv_direct.py), wide or filter-blocked;
* the input gradient of stride-2 layers of large kernels as four stride-1
  ones on the direct kernels (_conv_phases.py);
* matrix products through BLAS for the rest: ``_kernels/_conv_shifted.pyx``
  for stride 1 and at least SHIFTED_MIN_CHANNELS channels per group (a
  product per kernel tap over a zero-padded copy of the sample), else
  ``_kernels/_conv.pyx`` (im2col / col2im).
"""

import functools
from dataclasses import dataclass

import numpy as np

from . import _conv_direct, _conv_phases, _conv_winograd, _relu, _runtime
from ._pool import PooledGradient
from ._blas import single_threaded_blas
from ._deferred import Deferred
from ._runtime import threads_for
from ._validation import (
    BLAS_INT_MAX,
    as_float_arrays,
    as_flag,
    as_int,
    as_pair,
    check_at_most,
    check_fits,
    check_ndim,
    check_nonempty,
    check_nonempty_except_batch,
)

# They import scipy.linalg (BLAS): not with cyconv, see _deferred.
_conv = Deferred("cyconv._kernels._conv")
_conv_shifted = Deferred("cyconv._kernels._conv_shifted")

# A thread's unrolled-input buffer holds at most this many values (4 MiB in
# float32); smaller buffers measured slower on 3x3 layers of 32-64 channels.
WORKSPACE_ELEMENTS = 1 << 20
# Rows of the weight gradient's matrix products: fewer (thinner products)
# measured slower, more leaves too few tasks to share among threads.
WEIGHT_BLOCK_TAPS = 256
# The weight gradient is summed in at most this many partial sums over runs
# of samples, so that threads can share small layers too.
WEIGHT_PARTS = 8

# Stride-1 layers with at least this many input channels per group run as
# shifted products (_conv_shifted.pyx): each product has as many inner terms
# as channels, and with one channel BLAS measured slower on them than on
# the unrolled input's kh*kw times longer ones (W1a: forward 0.40 vs 0.24
# ms); from 8 channels up they won (W1b: 0.29 vs 0.43 ms, W3: 16 vs 24 ms).
SHIFTED_MIN_CHANNELS = 8
# The weight gradient's shifted products are thin (Cg x Fg outputs with
# long inner sums); from 32 channels per group up, one product over the
# unrolled input measured faster (W2: 14.6 vs 17.7 ms, W3: 21.0 vs 22.7 ms),
# below it slower (W1b: 0.52 vs 0.36 ms).
SHIFTED_WEIGHT_MAX_CHANNELS = 16
# Each thread of the shifted products holds a padded copy of its sample; a
# sample larger than this many values (256 MiB in float32) takes the
# unrolled input instead, whose workspace is bounded.
SHIFTED_MAX_SAMPLE = 1 << 26
# A thread's wide output chunk in the shifted products holds at most this
# many values (64 KiB in float32); 4 to 16 times larger chunks measured up
# to 1.6x slower on W2 and W3, which then fall out of the L2 cache.
WIDE_ELEMENTS = 1 << 14

# Below this much work a thread is not worth starting (see _runtime.py).
MIN_MACS_PER_THREAD = _runtime.CONV_MIN_MACS_PER_THREAD

_LAYOUT_X = "(N, C, H, W) or (C, H, W)"
_LAYOUT_W = "(F, C // groups, kh, kw)"


@dataclass(frozen=True)
class ConvGeometry:
    """Every size the kernels index with, checked once."""

    batched: bool
    n: int
    channels: int
    height: int
    width: int
    filters: int
    kernel: tuple
    stride: tuple
    dilation: tuple
    groups: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    out_height: int
    out_width: int

    def __hash__(self):
        # Computed once: every call looks its geometry up in a few caches
        # (plans, routes), and hashing 16 fields each time showed up in a
        # batch-1 training step's profile.
        value = self.__dict__.get("_hash")
        if value is None:
            value = hash(tuple(self.__dict__[name] for name in self.__dataclass_fields__))
            object.__setattr__(self, "_hash", value)
        return value

    @property
    def output_shape(self):
        shape = (self.filters, self.out_height, self.out_width)
        return (self.n,) + shape if self.batched else shape

    @property
    def hyper(self):
        """Stride, dilation, top and left padding, groups as the kernels take them."""
        return (*self.stride, *self.dilation, self.pad_top, self.pad_left, self.groups)

    def threads(self):
        """Threads worth starting: one per MIN_MACS_PER_THREAD multiply-adds,
        at most cyconv.get_num_threads().  Starting a thread team costs more
        than a tiny layer (a single small image) takes to compute."""
        return threads_for(self.macs, MIN_MACS_PER_THREAD)

    @functools.cached_property
    def macs(self):
        """The forward pass's multiply-adds (asked at every call: kept)."""
        return self.n * self.filters * self.out_height * self.out_width * self.group_taps

    @property
    def group_taps(self):
        """Rows of the unrolled input of one group: (C // groups) * kh * kw."""
        return self.channels // self.groups * self.kernel[0] * self.kernel[1]

    @property
    def channels_per_block(self):
        """Input channels per weight-gradient task: blocks of equal size with
        about WEIGHT_BLOCK_TAPS taps each.  Depends on the shapes only, never
        on the thread count (determinism)."""
        group_channels = self.channels // self.groups
        blocks = -(-self.group_taps // WEIGHT_BLOCK_TAPS)
        return -(-group_channels // blocks)

    @property
    def samples_per_part(self):
        """Samples summed into each partial weight gradient."""
        return -(-self.n // WEIGHT_PARTS)

    def rows_per_chunk(self, taps):
        """Output rows unrolled at once, so that a thread's workspace holds at
        most WORKSPACE_ELEMENTS values (at least one row)."""
        return max(1, min(self.out_height, WORKSPACE_ELEMENTS // (taps * self.out_width)))

    # -- the shifted products (_conv_shifted.pyx) --

    @property
    def padded_height(self):
        return self.height + self.pad_top + self.pad_bottom

    @property
    def padded_width(self):
        return self.width + self.pad_left + self.pad_right

    @property
    def shifted(self):
        """Whether this layer runs as shifted products: stride 1, enough
        channels per group, padded planes that BLAS can index with C ints and
        a padded sample of bounded size."""
        plane = self.padded_height * self.padded_width
        return (self.stride == (1, 1)
                and self.channels // self.groups >= SHIFTED_MIN_CHANNELS
                and plane <= BLAS_INT_MAX
                and self.channels * plane <= SHIFTED_MAX_SAMPLE)

    @property
    def shifted_weight(self):
        """Whether the weight gradient, too, runs as shifted products."""
        return self.shifted and self.channels // self.groups <= SHIFTED_WEIGHT_MAX_CHANNELS

    @property
    def frame(self):
        """The padded plane, kernel, dilation and top-left padding as the
        shifted kernels take them."""
        return (self.padded_height, self.padded_width, *self.kernel, *self.dilation,
                self.pad_top, self.pad_left)

    def padded_workspace(self, n_threads, dtype):
        """One zero-padded sample per thread, with the zeros the last tap's
        shifted matrix reads past the last plane."""
        size = (self.channels * self.padded_height * self.padded_width
                + self.dilation[1] * (self.kernel[1] - 1))
        return np.empty((n_threads, size), dtype)

    def wide_rows(self):
        """Output rows per chunk of the shifted products' wide output."""
        per_row = self.filters // self.groups * self.padded_width
        chunks = -(-self.out_height // max(1, WIDE_ELEMENTS // per_row))
        return -(-self.out_height // chunks)  # chunks of equal size

    def tap_major(self, weight):
        """``weight`` (F, Cg, kh, kw) as (groups, taps, Fg, Cg), so that each
        tap's filters form one contiguous matrix."""
        f, cg, kh, kw = weight.shape
        return np.ascontiguousarray(
            weight.reshape(self.groups, f // self.groups, cg, kh * kw).transpose(0, 3, 1, 2))


def _all_finite(array):
    """True only if every value of ``array`` is finite (a sum that overflows
    to infinity also says False, which only costs the caller a slower path)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(array.sum()))



def _padding_amounts(padding, kernel, stride, dilation):
    """Return (top, bottom, left, right) for an int, a pair, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {stride}")
            # As in PyTorch: the extra row or column of an even kernel goes
            # at the bottom or right.
            total_h = dilation[0] * (kernel[0] - 1)
            total_w = dilation[1] * (kernel[1] - 1)
            return (total_h // 2, total_h - total_h // 2,
                    total_w // 2, total_w - total_w // 2)
        raise ValueError(f"padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    ph, pw = as_pair(padding, "padding", 0)
    return ph, ph, pw, pw


def conv_geometry(x_shape, w_shape, stride, padding, dilation, groups):
    """Check a convolution's arguments and return its :class:`ConvGeometry`.

    A training loop asks the same question every step, so answers are
    cached, but only for plain ints, tuples of them and strings: a cache
    key compares 1 == 1.0 == True, and those must not pass for each other.
    """
    if all(map(_plain, (stride, padding, dilation, groups))):
        return _cached_geometry(x_shape, w_shape, stride, padding, dilation, groups)
    return _geometry(x_shape, w_shape, stride, padding, dilation, groups)


def _plain(value):
    kind = type(value)
    return kind is int or kind is str or (
        kind is tuple and all(type(item) is int for item in value))


def _geometry(x_shape, w_shape, stride, padding, dilation, groups):
    batched = len(x_shape) == 4
    n, channels, height, width = x_shape if batched else (1,) + tuple(x_shape)
    filters, group_channels, kh, kw = w_shape
    stride = as_pair(stride, "stride", 1)
    dilation = as_pair(dilation, "dilation", 1)
    check_at_most(stride, "stride")
    check_at_most(dilation, "dilation")
    groups = as_int(groups, "groups", 1)
    if channels % groups or filters % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels ({channels}) "
            f"and the filters ({filters})"
        )
    if group_channels != channels // groups:
        raise ValueError(
            f"weight must have shape {_LAYOUT_W} = (F, {channels // groups}, kh, kw) "
            f"for {channels} input channels and groups={groups}, got {tuple(w_shape)}"
        )
    top, bottom, left, right = _padding_amounts(padding, (kh, kw), stride, dilation)
    # Also "same" padding, which grows with the dilation.
    check_at_most((top, bottom, left, right), "padding")
    span_h = dilation[0] * (kh - 1) + 1
    span_w = dilation[1] * (kw - 1) + 1
    padded_h = height + top + bottom
    padded_w = width + left + right
    if span_h > padded_h or span_w > padded_w:
        raise ValueError(
            f"the dilated kernel ({span_h}, {span_w}) is larger than the padded "
            f"input ({padded_h}, {padded_w})"
        )
    out_height = (padded_h - span_h) // stride[0] + 1
    out_width = (padded_w - span_w) // stride[1] + 1
    check_fits((n, filters, out_height, out_width), "conv2d's output")
    # The kernels hand one output plane, one group's taps and the filters (a
    # leading dimension of the weight gradient) to BLAS as matrix sizes and
    # strides: C ints.
    if out_height * out_width > BLAS_INT_MAX:
        raise ValueError(
            f"conv2d's output planes must have fewer than 2**31 pixels (its matrix "
            f"products index them with 32-bit ints), got {out_height} x {out_width}"
        )
    if group_channels * kh * kw > BLAS_INT_MAX or filters > BLAS_INT_MAX:
        raise ValueError(
            f"conv2d's weight must have fewer than 2**31 filters and fewer than "
            f"2**31 values per filter (C // groups * kh * kw), got {filters} filters "
            f"of {group_channels * kh * kw} values"
        )
    return ConvGeometry(
        batched=batched, n=n, channels=channels, height=height, width=width,
        filters=filters, kernel=(kh, kw), stride=stride, dilation=dilation,
        groups=groups, pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right,
        out_height=out_height, out_width=out_width,
    )


_cached_geometry = functools.lru_cache(maxsize=256)(_geometry)


def _checked_x_weight(x, weight, extra=()):
    arrays = as_float_arrays((x, "x"), (weight, "weight"), *extra)
    x, weight = arrays[0], arrays[1]
    check_ndim(x, "x", (3, 4), _LAYOUT_X)
    check_ndim(weight, "weight", (4,), _LAYOUT_W)
    check_nonempty_except_batch(x, "x")
    check_nonempty(weight, "weight")
    return arrays


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation over a batch of multi-channel images.

    The ``conv2d`` of deep learning (no kernel flip), with the semantics of
    ``torch.nn.functional.conv2d`` on NCHW arrays.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
        Input images.  With one sample the result has no batch axis either.
        N may be 0 (an empty result); no other axis may.
    weight : array_like, shape (F, C // groups, kh, kw)
        Filters.
    bias : array_like, shape (F,), optional
        Added to every output position of each filter.
    stride, dilation : int or pair of ints, default 1
        Step between windows, and between the taps of a window.  A pair
        argument also takes one int in a sequence, ``(2,)``, as PyTorch.
    padding : int, pair of ints, "valid" or "same", default 0
        Zeros added on each side of the rows and columns.  ``"same"``
        (stride 1 only) keeps the output as large as the input, putting the
        odd extra row or column at the bottom or right.
    groups : int, default 1
        Channels and filters are split into this many groups; each group of
        filters sees only its group of channels.

    Returns
    -------
    out : ndarray, shape (N, F, Hout, Wout) or (F, Hout, Wout)
        ``Hout = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1``, likewise ``Wout``.
        float32 if every input is float32, else float64.

    Raises
    ------
    TypeError
        For complex, float16, object or other non-real input.
    ValueError
        For wrong numbers of axes, mismatched channels or groups, bad
        hyper-parameters, or a kernel larger than the padded input.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import conv2d
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> conv2d(x, w)[0, 0]
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]])
    >>> conv2d(x, w, padding="same").shape
    (1, 1, 4, 4)
    """
    if bias is None:
        x, weight = _checked_x_weight(x, weight)
        bias = np.empty(0, dtype=x.dtype)
    else:
        x, weight, bias = _checked_x_weight(x, weight, [(bias, "bias")])
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"bias must have shape (F,) = ({weight.shape[0]},), got {bias.shape}"
            )
    geometry = conv_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    return conv2d_checked(x, weight, bias, geometry)


def conv2d_checked(x, weight, bias, geometry, relu=False):
    """conv2d on arguments already checked: C-contiguous, aligned arrays of
    one float dtype (bias possibly empty) and their geometry.  With
    ``relu``, max(conv2d + bias, 0) exactly as np.maximum(out, 0) after it
    (NaN stays NaN): in the direct kernels' store, else one in-place pass."""
    x4 = x if geometry.batched else x[np.newaxis]
    n_threads = geometry.threads()
    if geometry.n == 0:  # an empty batch, as PyTorch allows
        return np.empty(geometry.output_shape, dtype=x.dtype)
    if _conv_winograd.use(geometry, "forward"):
        out = _conv_winograd.forward(x4, weight, bias, geometry, n_threads, relu)
        if out is not None:
            return out if geometry.batched else out[0]
    if _conv_direct.use(geometry, "forward"):
        out = _conv_direct.forward(x4, weight, bias, geometry, n_threads, relu)
        return out if geometry.batched else out[0]
    out = np.empty((geometry.n,) + geometry.output_shape[-3:], dtype=x.dtype)
    if geometry.shifted:
        rows = geometry.wide_rows()
        wide = np.empty((n_threads, geometry.filters // geometry.groups * rows
                         * geometry.padded_width), x.dtype)
        with single_threaded_blas():
            _conv_shifted.conv2d_forward(
                x4, geometry.tap_major(weight), bias, out,
                geometry.padded_workspace(n_threads, x.dtype), wide, rows,
                *geometry.frame, n_threads)
    else:
        rows = geometry.rows_per_chunk(geometry.group_taps)
        workspace = np.empty((n_threads, geometry.group_taps * rows * geometry.out_width),
                             x.dtype)
        with single_threaded_blas():
            _conv.conv2d_forward(x4, weight, bias, out, workspace, rows,
                                 *geometry.hyper, n_threads)
    if relu:
        _relu.relu(out, out=out)
    return out if geometry.batched else out[0]


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1,
                    *, compute_grad_input=True):
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like, shape (N, F, Hout, Wout) or (F, Hout, Wout)
        Gradient of the loss with respect to ``conv2d``'s output.
    x, weight, stride, padding, dilation, groups
        As given to :func:`conv2d`.
    compute_grad_input : bool, default True
        False skips the input gradient (returned as None): the first layer
        of a network never needs it.

    Returns
    -------
    grad_input : ndarray or None
        Same shape as ``x``.
    grad_weight : ndarray
        Same shape as ``weight``.
    grad_bias : ndarray, shape (F,)
        Sum of ``grad_output`` over every axis but the filter axis.

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d`; also ValueError for a ``grad_output`` whose shape
        is not that of ``conv2d``'s output, and TypeError for a
        ``compute_grad_input`` other than True or False.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import conv2d_backward
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gw[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    >>> gb
    array([4.])
    """
    compute_grad_input = as_flag(compute_grad_input, "compute_grad_input")
    x, weight, grad_output = _checked_x_weight(x, weight, [(grad_output, "grad_output")])
    geometry = conv_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    if grad_output.shape != geometry.output_shape:
        raise ValueError(
            f"grad_output must have the shape of conv2d's output, "
            f"{geometry.output_shape}, got {grad_output.shape}"
        )
    return conv2d_backward_checked(grad_output, x, weight, geometry, compute_grad_input)


def conv2d_backward_checked(grad_output, x, weight, geometry, compute_grad_input):
    """conv2d_backward on arguments already checked, as conv2d_checked.
    ``grad_output`` may be a :class:`~cyconv._pool.PooledGradient` (of a
    batch): the weight gradient takes it as it is where its kernels can,
    the rest its dense() gradient."""
    if isinstance(grad_output, PooledGradient) and (compute_grad_input or not geometry.batched
                                                    or geometry.n == 0):
        grad_output = grad_output.dense()
    batched = geometry.batched
    if geometry.n == 0:
        return (np.zeros(x.shape, x.dtype) if compute_grad_input else None,
                np.zeros(weight.shape, x.dtype), np.zeros(weight.shape[0], x.dtype))
    x4 = x if batched else x[np.newaxis]
    g4 = grad_output if batched else grad_output[np.newaxis]
    n_threads = geometry.threads()

    passes = _conv_direct.backward_passes(geometry, x.dtype, n_threads, compute_grad_input)
    if passes is not None:
        gradients = direct_backward(passes, g4, x4, weight, compute_grad_input)
        if gradients is not None:
            grad_input, grad_weight, grad_bias = gradients
            if grad_input is not None and not batched:
                grad_input = grad_input[0]
            return grad_input, grad_weight, grad_bias
        # x or the weight not finite: the general way, which handles both
    grad_bias = np.empty(weight.shape[0], dtype=x.dtype)
    grad_weight, bias_done, g4 = _grad_weight(g4, x4, weight, geometry, n_threads, grad_bias)
    if not bias_done:
        workspace = np.empty((geometry.filters, geometry.out_height * geometry.out_width),
                             x.dtype)
        _conv.conv2d_backward_bias(_dense(g4), grad_bias, workspace, n_threads)

    grad_input = None
    if compute_grad_input:
        grad_input = _grad_input(g4, weight, x4.shape, geometry, n_threads)
        if not batched:
            grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


def direct_backward(passes, g4, x4, weight, compute_grad_input):
    """``(grad_input, grad_weight, grad_bias)`` of a batch by the direct
    kernels, ``passes`` = _conv_direct.backward_passes(...) (not None),
    their routes known from the last call: the calls of the general way
    without asking again.  None where x or the weight is not finite (the
    general way handles both)."""
    weight_pass, input_pass = passes
    grad_bias = np.empty(weight.shape[0], dtype=x4.dtype)
    grad_weight, bias_done = weight_pass(g4, x4, weight, grad_bias)
    if grad_weight is None or not bias_done:
        return None
    grad_input = None
    if compute_grad_input:
        grad_input = input_pass(g4, weight)
        if grad_input is None:
            return None
    return grad_input, grad_weight, grad_bias


def _grad_weight(g4, x4, weight, geometry, n_threads, grad_bias):
    """The weight gradient, whether it also wrote the bias gradient into
    ``grad_bias`` (the direct kernels do, bitwise as conv2d_backward_bias),
    and the output gradient as the products used it (a PooledGradient made
    dense there, once, and reused for the bias gradient)."""
    # Partial sums over runs of samples, which numpy then sums in one fixed
    # order: thread-count independent.
    # The direct kernels multiply zeros by x at the garbage positions:
    # exact only against finite x (they check), like the shifted products;
    # the Winograd transforms add the values of a window (they check).
    if _conv_winograd.use(geometry, "weight"):
        g4 = _dense(g4)
        grad_weight = _conv_winograd.grad_weight(g4, x4, geometry, n_threads)
        if grad_weight is not None:
            return grad_weight, False, g4
    if _conv_direct.use(geometry, "weight"):
        grad_weight, bias_done = _conv_direct.grad_weight(g4, x4, weight, geometry, n_threads,
                                                          grad_bias)
        if grad_weight is not None:
            return grad_weight, bias_done, g4
    g4 = _dense(g4)
    per_part = geometry.samples_per_part
    parts = -(-geometry.n // per_part)
    # Zero garbage in the shifted products is exact only against finite x.
    if geometry.shifted_weight and _all_finite(x4):
        f, cg, kh, kw = weight.shape
        fg = f // geometry.groups
        partials = np.zeros((parts, geometry.groups, kh * kw, fg, cg), x4.dtype)
        wide = np.empty((n_threads, fg * geometry.out_height * geometry.padded_width),
                        x4.dtype)
        with single_threaded_blas():
            _conv_shifted.conv2d_backward_weight(
                g4, x4, partials, geometry.padded_workspace(n_threads, x4.dtype), wide,
                per_part, geometry.wide_rows(), *geometry.frame, n_threads)
        # (groups, taps, Fg, Cg) back to (F, Cg, kh, kw)
        return np.ascontiguousarray(
            _sum_partials(partials).transpose(0, 2, 3, 1).reshape(weight.shape)), False, g4
    taps = geometry.kernel[0] * geometry.kernel[1]
    block = geometry.channels_per_block
    f, cg, kh, kw = weight.shape
    partials = np.zeros((parts, cg * kh * kw, f), dtype=x4.dtype)
    rows = geometry.rows_per_chunk(block * taps)
    workspace = np.empty((n_threads, block * taps * rows * geometry.out_width), x4.dtype)
    with single_threaded_blas():
        _conv.conv2d_backward_weight(g4, x4, partials, workspace, block, per_part, rows,
                                     kh, kw, *geometry.hyper, n_threads)
    # (Cg * kh * kw, F) back to (F, Cg, kh, kw)
    return np.ascontiguousarray(_sum_partials(partials).T.reshape(weight.shape)), False, g4


def _dense(g4):
    """The output gradient itself, of a PooledGradient too."""
    return g4.dense() if isinstance(g4, PooledGradient) else g4


def _sum_partials(partials):
    """Sum partial gradients over their first axis, in numpy's fixed order.
    Infinities of opposite signs in the partials make NaN, as in any sum,
    without numpy's warning."""
    with np.errstate(invalid="ignore", over="ignore"):
        return partials.sum(axis=0)


def _grad_input(g4, weight, x_shape, geometry, n_threads):
    # Zero garbage in the shifted products and the direct kernels' zero
    # padding of g4 are exact only against a finite weight (the direct
    # kernels check; the Winograd kernels check the weight and g4).
    if _conv_winograd.use(geometry, "input"):
        grad_input = _conv_winograd.grad_input(_dense(g4), weight, geometry, n_threads)
        if grad_input is not None:
            return grad_input
    if _conv_direct.use(geometry, "input"):
        grad_input = _conv_direct.grad_input(g4, weight, geometry, n_threads)
        if grad_input is not None:
            return grad_input
    if _conv_phases.use(geometry):
        grad_input = _conv_phases.grad_input(g4, weight, geometry, n_threads)
        if grad_input is not None:
            return grad_input
    if geometry.shifted and _all_finite(weight):
        grad_input = np.empty(x_shape, dtype=weight.dtype)
        rows = geometry.wide_rows()
        wide = np.empty((n_threads, geometry.filters // geometry.groups * rows
                         * geometry.padded_width), weight.dtype)
        with single_threaded_blas():
            _conv_shifted.conv2d_backward_input(
                g4, geometry.tap_major(weight), grad_input,
                geometry.padded_workspace(n_threads, weight.dtype), wide, rows,
                *geometry.frame, n_threads)
        return grad_input
    grad_input = np.zeros(x_shape, dtype=weight.dtype)
    rows = geometry.rows_per_chunk(geometry.group_taps)
    workspace = np.empty((n_threads, geometry.group_taps * rows * geometry.out_width),
                         weight.dtype)
    with single_threaded_blas():
        _conv.conv2d_backward_input(g4, weight, grad_input, workspace, rows, *geometry.hyper,
                                    n_threads)
    return grad_input
