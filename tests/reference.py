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


def conv_output_size(size, before, after, kernel, stride, dilation):
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def _tap_reads(size, before, tap, stride, dilation, count):
    """For one kernel tap along one axis: the input positions its outputs
    read, and which of them lie inside the input (the rest read padding).
    Padding is never materialised, so any amount of it costs nothing."""
    positions = np.arange(count) * stride + tap * dilation - before
    inside = (positions >= 0) & (positions < size)
    return np.where(inside, positions, 0), inside


def _conv_taps(x_shape, w_shape, stride, sides, dilation):
    """Yield (i, j, rows, cols, mask) for every tap: ``x[..., rows][..., cols]``
    masked by ``mask`` is what the tap meets, (Hout, Wout)."""
    top, bottom, left, right = sides
    height, width = x_shape[2:]
    _, _, kh, kw = w_shape
    out_h = conv_output_size(height, top, bottom, kh, stride[0], dilation[0])
    out_w = conv_output_size(width, left, right, kw, stride[1], dilation[1])
    for i in range(kh):
        rows, row_in = _tap_reads(height, top, i, stride[0], dilation[0], out_h)
        for j in range(kw):
            cols, col_in = _tap_reads(width, left, j, stride[1], dilation[1], out_w)
            yield i, j, rows, cols, np.outer(row_in, col_in)


def conv2d(x, weight, bias, stride, sides, dilation, groups):
    """x (N, C, H, W), weight (F, C // groups, kh, kw), bias (F,) or None,
    sides (top, bottom, left, right).  Returns (N, F, Hout, Wout)."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    f_count, group_channels, kh, kw = weight.shape
    out = None
    per_group = f_count // groups
    for i, j, rows, cols, mask in _conv_taps(x.shape, weight.shape, stride, sides, dilation):
        # (N, C, Hout, Wout): what this tap meets, zero where it meets padding.
        met = np.where(mask, x[:, :, rows][:, :, :, cols], 0.0)
        if out is None:
            out = np.zeros((x.shape[0], f_count) + mask.shape)
        for f in range(f_count):
            first = (f // per_group) * group_channels
            for c in range(group_channels):
                out[:, f] += weight[f, c, i, j] * met[:, first + c]
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def conv2d_backward(grad_output, x, weight, stride, sides, dilation, groups):
    """(grad_input, grad_weight, grad_bias) of :func:`conv2d`."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    grad_output = np.asarray(grad_output, np.float64)
    f_count, group_channels, kh, kw = weight.shape
    grad_input = np.zeros(x.shape)  # C order: its planes reshape to views
    grad_weight = np.zeros_like(weight)
    per_group = f_count // groups
    n, width = x.shape[0], x.shape[3]
    for i, j, rows, cols, mask in _conv_taps(x.shape, weight.shape, stride, sides, dilation):
        met = np.where(mask, x[:, :, rows][:, :, :, cols], 0.0)
        # Flat input positions this tap reads, for scattering its gradient.
        flat = (rows[:, None] * width + cols[None, :])[mask]
        for f in range(f_count):
            first = (f // per_group) * group_channels
            for c in range(group_channels):
                grad_weight[f, c, i, j] = np.sum(grad_output[:, f] * met[:, first + c])
                contribution = weight[f, c, i, j] * grad_output[:, f]
                for sample in range(n):
                    np.add.at(grad_input[sample, first + c].reshape(-1), flat,
                              contribution[sample][mask])
    return grad_input, grad_weight, grad_output.sum(axis=(0, 2, 3))


def pool_output_size(size, kernel, stride, padding, ceil_mode, dilation=1):
    """PyTorch's rule (pooling_output_shape), written out independently of
    cyconv's: below 1 where no window fits."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    count = (span + stride - 1) // stride + 1 if ceil_mode else span // stride + 1
    if ceil_mode and (count - 1) * stride >= size + padding:
        count -= 1
    return count


def _windows(height, width, kernel, stride, padding, ceil_mode, dilation=(1, 1)):
    """Yield ((oh, ow), rows, cols, padded count): the input rows and
    columns a window covers, and how many cells it covers within the padded
    input (padding included, overhang past it excluded)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    out_h = pool_output_size(height, kh, sh, ph, ceil_mode, dh)
    out_w = pool_output_size(width, kw, sw, pw, ceil_mode, dw)
    for oh in range(out_h):
        all_rows = range(oh * sh - ph, oh * sh - ph + (kh - 1) * dh + 1, dh)
        rows = [h for h in all_rows if 0 <= h < height]
        padded_rows = [h for h in all_rows if -ph <= h < height + ph]
        for ow in range(out_w):
            all_cols = range(ow * sw - pw, ow * sw - pw + (kw - 1) * dw + 1, dw)
            cols = [w for w in all_cols if 0 <= w < width]
            padded_cols = [w for w in all_cols if -pw <= w < width + pw]
            yield (oh, ow), rows, cols, len(padded_rows) * len(padded_cols)


def _pool_out_shape(shape, kernel, stride, padding, ceil_mode, dilation=(1, 1)):
    return tuple(shape[:-2]) + tuple(
        pool_output_size(shape[-2 + a], kernel[a], stride[a], padding[a], ceil_mode,
                         dilation[a])
        for a in range(2))


def max_pool2d(x, kernel, stride, padding, ceil_mode, dilation=(1, 1)):
    """(out, indices): each window's first largest input element in
    row-major order, NaN larger than everything (np.argmax's rule)."""
    x = np.asarray(x, np.float64)
    shape = _pool_out_shape(x.shape, kernel, stride, padding, ceil_mode, dilation)
    out = np.empty(shape)
    indices = np.empty(shape, dtype=np.int64)
    width = x.shape[-1]
    for lead in np.ndindex(*x.shape[:-2]):
        plane = x[lead]
        for (oh, ow), rows, cols, _ in _windows(*x.shape[-2:], kernel, stride, padding,
                                                ceil_mode, dilation):
            window = plane[np.ix_(rows, cols)]
            r, c = np.unravel_index(np.argmax(window), window.shape)
            out[lead + (oh, ow)] = window[r, c]
            indices[lead + (oh, ow)] = rows[r] * width + cols[c]
    return out, indices


def max_pool2d_backward(grad_output, x, kernel, stride, padding, ceil_mode, dilation=(1, 1)):
    _, indices = max_pool2d(x, kernel, stride, padding, ceil_mode, dilation)
    return max_pool2d_backward_indices(grad_output, indices, np.shape(x))


def max_pool2d_backward_indices(grad_output, indices, x_shape):
    grad_output = np.asarray(grad_output, np.float64)
    grad = np.zeros(tuple(x_shape[:-2]) + (x_shape[-2] * x_shape[-1],))
    for index in np.ndindex(*grad_output.shape):
        grad[index[:-2] + (indices[index],)] += grad_output[index]
    return grad.reshape(x_shape)


def _pool_divisor(rows, cols, padded, count_include_pad, divisor_override):
    if divisor_override is not None:
        return divisor_override
    return padded if count_include_pad else len(rows) * len(cols)


def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad,
               divisor_override=None):
    x = np.asarray(x, np.float64)
    out = np.empty(_pool_out_shape(x.shape, kernel, stride, padding, ceil_mode))
    for lead in np.ndindex(*x.shape[:-2]):
        plane = x[lead]
        for (oh, ow), rows, cols, padded in _windows(*x.shape[-2:], kernel, stride, padding,
                                                     ceil_mode):
            divisor = _pool_divisor(rows, cols, padded, count_include_pad, divisor_override)
            out[lead + (oh, ow)] = plane[np.ix_(rows, cols)].sum() / divisor
    return out


def avg_pool2d_backward(grad_output, x_shape, kernel, stride, padding, ceil_mode,
                        count_include_pad, divisor_override=None):
    grad_output = np.asarray(grad_output, np.float64)
    grad = np.zeros(x_shape)
    for lead in np.ndindex(*x_shape[:-2]):
        for (oh, ow), rows, cols, padded in _windows(*x_shape[-2:], kernel, stride, padding,
                                                     ceil_mode):
            divisor = _pool_divisor(rows, cols, padded, count_include_pad, divisor_override)
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
    planes = grad.reshape((int(np.prod(grad.shape[:-2])),) + grad.shape[-2:])
    out = np.zeros((planes.shape[0], height * width))
    inside = source >= 0
    for p in range(planes.shape[0]):
        np.add.at(out[p], source[inside], planes[p][inside])
    return out.reshape(grad.shape[:-2] + (height, width))


def channel_view(vector, ndim):
    return np.asarray(vector, np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def reduced_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """PyTorch's batch norm over axis 1.  Returns (out, new_running_mean,
    new_running_var), all float64; the running statistics are not changed
    in place."""
    x = np.asarray(x, np.float64)
    if training:
        mean = x.mean(axis=reduced_axes(x))
        var = x.var(axis=reduced_axes(x))
        count = x.size // x.shape[1]
        unbiased = x.var(axis=reduced_axes(x), ddof=1)
        if running_mean is not None:
            running_mean = (1 - momentum) * running_mean + momentum * mean
            running_var = (1 - momentum) * running_var + momentum * unbiased
        assert count > 1
    else:
        mean, var = running_mean, running_var
    xhat = (x - channel_view(mean, x.ndim)) / np.sqrt(channel_view(var, x.ndim) + eps)
    out = xhat * channel_view(gamma, x.ndim) + channel_view(beta, x.ndim)
    return out, running_mean, running_var


def batch_norm_backward(grad, x, gamma, running_mean, running_var, training, eps):
    """The textbook gradient, each term written out in float64, with gamma
    factored out as PyTorch's kernel has it (so that an infinite gamma
    gives an infinite gradient, not inf - inf)."""
    x = np.asarray(x, np.float64)
    grad = np.asarray(grad, np.float64)
    axes = reduced_axes(x)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - channel_view(mean, x.ndim)) * channel_view(invstd, x.ndim)
    grad_beta = grad.sum(axis=axes)
    grad_gamma = (grad * xhat).sum(axis=axes)
    scale = channel_view(np.asarray(gamma, np.float64) * invstd, x.ndim)
    if not training:
        return scale * grad, grad_gamma, grad_beta
    count = x.size // x.shape[1]
    grad_input = scale / count * (
        count * grad
        - channel_view(grad_beta, x.ndim)
        - xhat * channel_view(grad_gamma, x.ndim))
    return grad_input, grad_gamma, grad_beta


# Rounding tolerance per dtype, relative to the sum of the magnitudes of the
# terms of each output (see assert_close).
RTOL = {np.float32: 3e-5, np.float64: 1e-12}


def assert_close(actual, expected, magnitude, dtype):
    """|actual - expected| within a rounding bound proportional to the sum of
    the magnitudes of the terms (``magnitude``), as for any dot product."""
    assert actual.dtype == dtype
    assert actual.shape == expected.shape
    bound = RTOL[dtype] * (magnitude + 1)
    excess = np.abs(actual - expected) - bound
    assert np.all(excess <= 0), f"max excess {excess.max()}"


def awkward_values(rng, shape, dtype):
    """Normal values with NaN, infinities, signed zeros, subnormals and
    huge values sprinkled in, the values where a rounding or an operation
    order would show."""
    a = rng.standard_normal(shape).astype(dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, tiny, -3 * tiny,
                         np.finfo(dtype).max / 4, 1e-30], dtype)
    flat = a.reshape(-1)
    where = rng.choice(flat.size, size=min(flat.size, 2 * specials.size), replace=False)
    flat[where] = rng.choice(specials, size=where.size)
    return a
