"""Slow, obviously correct float64 twins of cyconv's public functions.

They share nothing with the package: loops over kernel taps and pooling
windows, ``np.pad`` and ``scipy.signal``.  Hyper-parameters come already
normalised (pairs of ints, padding as four sides), so that a test decides
for itself what the arguments mean.  NaN and infinities flow through them as
through any sum or maximum, which is what cyconv documents.
"""

import numpy as np
from scipy import signal

correlate2d = signal.correlate2d
convolve2d = signal.convolve2d


def _tap_slices(i, j, dilation, stride, out_shape):
    """Rows and columns of the padded input that tap (i, j) meets."""
    (dh, dw), (sh, sw), (hout, wout) = dilation, stride, out_shape
    return (slice(i * dh, i * dh + sh * (hout - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (wout - 1) + 1, sw))


def conv_output_size(size, before, after, kernel, stride, dilation):
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def conv2d(x, weight, bias, stride, sides, dilation, groups):
    """x (N, C, H, W), weight (F, C // groups, kh, kw), bias (F,) or None,
    sides (top, bottom, left, right).  Returns (N, F, Hout, Wout)."""
    top, bottom, left, right = sides
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    weight = np.asarray(weight, np.float64)
    f_count, group_channels, kh, kw = weight.shape
    out_shape = (conv_output_size(x.shape[2], top, bottom, kh, stride[0], dilation[0]),
                 conv_output_size(x.shape[3], left, right, kw, stride[1], dilation[1]))
    out = np.zeros((x.shape[0], f_count) + out_shape)
    per_group = f_count // groups
    for f in range(f_count):
        first = (f // per_group) * group_channels
        for c in range(group_channels):
            for i in range(kh):
                for j in range(kw):
                    rows, cols = _tap_slices(i, j, dilation, stride, out_shape)
                    out[:, f] += weight[f, c, i, j] * xp[:, first + c, rows, cols]
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def conv2d_backward(grad_output, x, weight, stride, sides, dilation, groups):
    """(grad_input, grad_weight, grad_bias) of :func:`conv2d`."""
    top, bottom, left, right = sides
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    weight = np.asarray(weight, np.float64)
    grad_output = np.asarray(grad_output, np.float64)
    f_count, group_channels, kh, kw = weight.shape
    out_shape = grad_output.shape[2:]
    grad_xp = np.zeros_like(xp)
    grad_weight = np.zeros_like(weight)
    per_group = f_count // groups
    for f in range(f_count):
        first = (f // per_group) * group_channels
        for c in range(group_channels):
            for i in range(kh):
                for j in range(kw):
                    rows, cols = _tap_slices(i, j, dilation, stride, out_shape)
                    grad_xp[:, first + c, rows, cols] += weight[f, c, i, j] * grad_output[:, f]
                    grad_weight[f, c, i, j] = np.sum(grad_output[:, f] * xp[:, first + c, rows, cols])
    height, width = x.shape[2:]
    grad_input = grad_xp[:, :, top:top + height, left:left + width]
    return grad_input, grad_weight, grad_output.sum(axis=(0, 2, 3))


def pool_output_size(size, kernel, stride, padding, ceil_mode):
    """PyTorch's rule, written out independently of cyconv's."""
    span = size + 2 * padding - kernel
    count = (span + stride - 1) // stride + 1 if ceil_mode else span // stride + 1
    if ceil_mode and (count - 1) * stride >= size + padding:
        count -= 1
    return count


def _windows(height, width, kernel, stride, padding, ceil_mode):
    """Yield ((oh, ow), rows, cols, padded count): the input rows and
    columns a window covers, and how many cells it covers within the padded
    input (padding included, overhang past it excluded)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out_h = pool_output_size(height, kh, sh, ph, ceil_mode)
    out_w = pool_output_size(width, kw, sw, pw, ceil_mode)
    for oh in range(out_h):
        all_rows = range(oh * sh - ph, oh * sh - ph + kh)
        rows = [h for h in all_rows if 0 <= h < height]
        padded_rows = [h for h in all_rows if -ph <= h < height + ph]
        for ow in range(out_w):
            all_cols = range(ow * sw - pw, ow * sw - pw + kw)
            cols = [w for w in all_cols if 0 <= w < width]
            padded_cols = [w for w in all_cols if -pw <= w < width + pw]
            yield (oh, ow), rows, cols, len(padded_rows) * len(padded_cols)


def _pool_out_shape(shape, kernel, stride, padding, ceil_mode):
    return tuple(shape[:-2]) + tuple(
        pool_output_size(shape[-2 + a], kernel[a], stride[a], padding[a], ceil_mode)
        for a in range(2))


def max_pool2d(x, kernel, stride, padding, ceil_mode):
    """(out, indices): each window's first largest input element in
    row-major order, NaN larger than everything (np.argmax's rule)."""
    x = np.asarray(x, np.float64)
    shape = _pool_out_shape(x.shape, kernel, stride, padding, ceil_mode)
    out = np.empty(shape)
    indices = np.empty(shape, dtype=np.int64)
    width = x.shape[-1]
    for lead in np.ndindex(*x.shape[:-2]):
        plane = x[lead]
        for (oh, ow), rows, cols, _ in _windows(*x.shape[-2:], kernel, stride, padding,
                                                ceil_mode):
            window = plane[np.ix_(rows, cols)]
            r, c = np.unravel_index(np.argmax(window), window.shape)
            out[lead + (oh, ow)] = window[r, c]
            indices[lead + (oh, ow)] = rows[r] * width + cols[c]
    return out, indices


def max_pool2d_backward(grad_output, x, kernel, stride, padding, ceil_mode):
    _, indices = max_pool2d(x, kernel, stride, padding, ceil_mode)
    return max_pool2d_backward_indices(grad_output, indices, np.shape(x))


def max_pool2d_backward_indices(grad_output, indices, x_shape):
    grad_output = np.asarray(grad_output, np.float64)
    grad = np.zeros(tuple(x_shape[:-2]) + (x_shape[-2] * x_shape[-1],))
    for index in np.ndindex(*grad_output.shape):
        grad[index[:-2] + (indices[index],)] += grad_output[index]
    return grad.reshape(x_shape)


def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad):
    x = np.asarray(x, np.float64)
    out = np.empty(_pool_out_shape(x.shape, kernel, stride, padding, ceil_mode))
    for lead in np.ndindex(*x.shape[:-2]):
        plane = x[lead]
        for (oh, ow), rows, cols, padded in _windows(*x.shape[-2:], kernel, stride, padding,
                                                     ceil_mode):
            divisor = padded if count_include_pad else len(rows) * len(cols)
            out[lead + (oh, ow)] = plane[np.ix_(rows, cols)].sum() / divisor
    return out


def avg_pool2d_backward(grad_output, x_shape, kernel, stride, padding, ceil_mode,
                        count_include_pad):
    grad_output = np.asarray(grad_output, np.float64)
    grad = np.zeros(x_shape)
    for lead in np.ndindex(*x_shape[:-2]):
        for (oh, ow), rows, cols, padded in _windows(*x_shape[-2:], kernel, stride, padding,
                                                     ceil_mode):
            divisor = padded if count_include_pad else len(rows) * len(cols)
            grad[lead][np.ix_(rows, cols)] += grad_output[lead + (oh, ow)] / divisor
    return grad


def _pad_widths(ndim, sides):
    top, bottom, left, right = sides
    return [(0, 0)] * (ndim - 2) + [(top, bottom), (left, right)]


def pad2d(x, sides, mode, value=0.0):
    x = np.asarray(x, np.float64)
    if mode == "constant":
        return np.pad(x, _pad_widths(x.ndim, sides), mode="constant", constant_values=value)
    return np.pad(x, _pad_widths(x.ndim, sides), mode=mode)


def pad2d_backward(grad, sides, mode):
    """The transpose of np.pad: pad a map of flat input positions the same
    way, then add each padded cell's gradient to the position it holds."""
    grad = np.asarray(grad, np.float64)
    top, bottom, left, right = sides
    height = grad.shape[-2] - top - bottom
    width = grad.shape[-1] - left - right
    positions = np.arange(height * width).reshape(height, width)
    if mode == "constant":
        source = np.pad(positions, _pad_widths(2, sides), constant_values=-1)
    else:
        source = np.pad(positions, _pad_widths(2, sides), mode=mode)
    planes = grad.reshape((-1,) + grad.shape[-2:])
    out = np.zeros((planes.shape[0], height * width))
    inside = source >= 0
    for p in range(planes.shape[0]):
        np.add.at(out[p], source[inside], planes[p][inside])
    return out.reshape(grad.shape[:-2] + (height, width))
