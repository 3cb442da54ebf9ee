"""Slow, independent float64 references for :mod:`cyconv.selftest`: built
from ``scipy.signal``, ``np.pad`` and numpy's sliding windows, sharing
nothing with the compiled kernels they check.

Backward passes are checked by adjoint identities (see _selftest.py), so
only max pooling's gradient, which is not linear, has a reference here.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    """``x`` (N, C, H, W), ``weight`` (F, C // groups, kh, kw), padding
    (ph, pw): pad with np.pad, spread the kernel's taps apart by the
    dilation, correlate each (sample, filter, channel) plane with
    scipy.signal.correlate2d and keep every stride-th output."""
    x = np.pad(np.asarray(x, np.float64),
               ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    weight = np.asarray(weight, np.float64)
    filters, group_channels, kh, kw = weight.shape
    dilated = np.zeros((filters, group_channels, dilation[0] * (kh - 1) + 1,
                        dilation[1] * (kw - 1) + 1))
    dilated[:, :, ::dilation[0], ::dilation[1]] = weight
    per_group = filters // groups
    planes = []
    for sample in x:
        maps = []
        for f in range(filters):
            first = (f // per_group) * group_channels
            total = sum(signal.correlate2d(sample[first + c], dilated[f, c], mode="valid")
                        for c in range(group_channels))
            maps.append(total[::stride[0], ::stride[1]])
        planes.append(maps)
    out = np.array(planes, dtype=np.float64)
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def _output_size(size, kernel, stride, padding, ceil_mode):
    """PyTorch's pooling output size."""
    span = size + 2 * padding - kernel
    count = -(-span // stride) + 1 if ceil_mode else span // stride + 1
    if ceil_mode and (count - 1) * stride >= size + padding:
        count -= 1
    return count


def _pool_windows(x, kernel_size, stride, padding, ceil_mode, fill):
    """The pooling windows of ``x``, (N, C, Hout, Wout, kh, kw), after padding
    with ``fill`` and, with ceil_mode, as much more of it on the bottom and
    right as the last windows overhang."""
    x = np.asarray(x, np.float64)
    sizes = [_output_size(x.shape[2 + axis], kernel_size[axis], stride[axis], padding[axis],
                          ceil_mode) for axis in (0, 1)]
    extra = [max(0, (sizes[axis] - 1) * stride[axis] + kernel_size[axis]
                 - x.shape[2 + axis] - 2 * padding[axis]) for axis in (0, 1)]
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0] + extra[0]),
                        (padding[1], padding[1] + extra[1])), constant_values=fill)
    windows = sliding_window_view(padded, kernel_size, axis=(2, 3))
    return windows[:, :, ::stride[0], ::stride[1]][:, :, :sizes[0], :sizes[1]]


def max_pool2d(x, kernel_size, stride, padding, ceil_mode):
    return _pool_windows(x, kernel_size, stride, padding, ceil_mode, -np.inf).max(axis=(4, 5))


def max_pool2d_backward(grad_output, x, kernel_size, stride, padding, ceil_mode):
    """Each window's gradient to its first maximal element, row-major."""
    x = np.asarray(x, np.float64)
    positions = np.arange(x[0, 0].size, dtype=np.float64).reshape(x.shape[2:])
    values = _pool_windows(x, kernel_size, stride, padding, ceil_mode, -np.inf)
    where = _pool_windows(np.broadcast_to(positions, x.shape), kernel_size, stride, padding,
                          ceil_mode, -1)
    n, c, oh, ow = values.shape[:4]
    flat_values = values.reshape(n, c, oh, ow, -1)
    first = np.argmax(flat_values, axis=-1)   # argmax picks the first maximum
    chosen = np.take_along_axis(where.reshape(n, c, oh, ow, -1), first[..., None], -1)[..., 0]
    grad = np.zeros((n, c, x[0, 0].size))
    for i in range(n):
        for j in range(c):
            np.add.at(grad[i, j], chosen[i, j].astype(np.int64).ravel(),
                      np.asarray(grad_output, np.float64)[i, j].ravel())
    return grad.reshape(x.shape)


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Window sums over counts: with ``count_include_pad`` the cells within
    the padded input, otherwise the input's own; never the overhang."""
    x = np.asarray(x, np.float64)
    sums = _pool_windows(x, kernel_size, stride, padding, ceil_mode, 0.0).sum(axis=(4, 5))
    if count_include_pad:
        inside = np.pad(np.ones(x.shape[2:]), ((padding[0],) * 2, (padding[1],) * 2),
                        constant_values=1.0)
        cells = np.broadcast_to(inside, x.shape[:2] + inside.shape)
        counts = _pool_windows(cells, kernel_size, stride, (0, 0), ceil_mode, 0.0)
        # Windows over the padded grid start at 0, not -padding.
        counts = counts.sum(axis=(4, 5))[:, :, :sums.shape[2], :sums.shape[3]]
    else:
        counts = _pool_windows(np.ones(x.shape), kernel_size, stride, padding, ceil_mode,
                               0.0).sum(axis=(4, 5))
    return sums / counts


def pad2d(x, padding, mode, value=0.0):
    """np.pad over the last two axes; padding (top, bottom, left, right)."""
    top, bottom, left, right = padding
    widths = [(0, 0)] * (np.ndim(x) - 2) + [(top, bottom), (left, right)]
    if mode == "constant":
        return np.pad(np.asarray(x, np.float64), widths, mode="constant", constant_values=value)
    return np.pad(np.asarray(x, np.float64), widths, mode=mode)


def relu_gradient(grad, x):
    return np.where(np.asarray(x) > 0, np.asarray(grad, np.float64), 0.0)


def batch_norm(x, gamma, beta, mean, var, eps):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` over axis 1, for the
    per-channel ``mean`` and ``var`` given."""
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    x = np.asarray(x, np.float64)
    return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
            * np.asarray(gamma, np.float64).reshape(shape) + np.asarray(beta, np.float64)
            .reshape(shape))


def batch_statistics(x):
    """Each channel's mean and biased variance over every axis but 1."""
    axes = (0,) + tuple(range(2, np.ndim(x)))
    x = np.asarray(x, np.float64)
    return x.mean(axis=axes), x.var(axis=axes)


def batch_norm_backward(grad_output, x, gamma, mean, var, eps, training):
    """(grad_input, grad_gamma, grad_beta) by PyTorch's documented formulas:
    in training mode the batch statistics depend on x too."""
    axes = (0,) + tuple(range(2, np.ndim(x)))
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    g = np.asarray(grad_output, np.float64)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (np.asarray(x, np.float64) - mean.reshape(shape)) * invstd.reshape(shape)
    grad_beta = g.sum(axis=axes)
    grad_gamma = (g * xhat).sum(axis=axes)
    scale = (np.asarray(gamma, np.float64) * invstd).reshape(shape)
    if not training:
        return scale * g, grad_gamma, grad_beta
    count = g.size // g.shape[1]
    return (scale * (g - grad_beta.reshape(shape) / count
                     - xhat * grad_gamma.reshape(shape) / count), grad_gamma, grad_beta)
