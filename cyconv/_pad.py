"""pad2d and its adjoint: validation, the per-mode index maps, and output
allocation around the compiled loops in ``_kernels/_pad.pyx``."""

import numbers

import numpy as np

from ._kernels import _pad
from ._threads import get_num_threads
from ._validation import as_float_arrays, as_int, check_choice, check_fits, few_items, is_int

MODES = ("constant", "reflect", "symmetric", "edge", "wrap")
# Convolution's padding_mode names (PyTorch's) and the pad2d mode each is;
# "zeros" is the convolution's own zero padding, no pad2d call.  ONNX's Pad
# operator names its modes as pad2d does.
CONV_PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge",
                      "circular": "wrap"}


def _padding_amounts(padding):
    """Return (top, bottom, left, right) for an int, a pair or four ints."""
    if is_int(padding):
        amount = as_int(padding, "padding", 0)
        return amount, amount, amount, amount
    expected = "an int, a pair (ph, pw) or four ints (top, bottom, left, right)"
    if isinstance(padding, (bool, np.bool_)):
        raise TypeError(f"padding must be {expected}, got {padding!r}")
    items = few_items(padding, "padding", expected, 4)
    if len(items) not in (2, 4):
        raise ValueError(f"padding must be {expected}, got {padding!r}")
    amounts = tuple(as_int(item, "padding", 0) for item in items)
    if len(amounts) == 2:
        return amounts[0], amounts[0], amounts[1], amounts[1]
    return amounts


def _check_mode_limits(mode, size, before, after, axis):
    """Refuse padding that numpy's modes would only reach by repeating the
    reflection or wrap several times."""
    if before == 0 and after == 0:
        return
    largest = max(before, after)
    where = f"{axis} {size} with padding ({before}, {after})"
    if mode == "reflect" and largest >= size:
        raise ValueError(f"mode='reflect' needs padding smaller than the axis it pads: {where}")
    if mode in ("symmetric", "wrap") and largest > size:
        raise ValueError(f"mode={mode!r} needs padding no larger than the axis it pads: {where}")
    if mode == "edge" and size == 0:
        raise ValueError(f"mode='edge' cannot pad an empty axis: {where}")


def _source_indices(size, before, after, mode):
    """For each position along a padded axis, the input position it copies,
    or -1 for the constant.  Within the limits of :func:`_check_mode_limits`
    one reflection or wrap always lands inside ``[0, size)``."""
    position = np.arange(-before, size + after, dtype=np.intp)
    inside = (position >= 0) & (position < size)
    if mode == "constant":
        return np.where(inside, position, -1)
    if mode == "edge":
        return np.clip(position, 0, size - 1)
    if mode == "wrap":
        return position % size if size else position
    if mode == "reflect":  # the edge element is the mirror: 2 1 | 0 1 2 | 1 0
        mirrored = np.where(position < 0, -position, 2 * (size - 1) - position)
    else:  # symmetric, the edge element repeated: 1 0 | 0 1 2 | 2 1
        mirrored = np.where(position < 0, -position - 1, 2 * size - 1 - position)
    return np.where(inside, position, mirrored)


def _checked_padding(padding, mode, height, width):
    check_choice(mode, "mode", MODES)
    top, bottom, left, right = _padding_amounts(padding)
    _check_mode_limits(mode, height, top, bottom, "height")
    _check_mode_limits(mode, width, left, right, "width")
    return top, bottom, left, right


def _checked_array(array, name):
    (array,) = as_float_arrays((array, name))
    if array.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., H, W), got shape {array.shape}"
        )
    return array


def pad2d(x, padding, mode="constant", value=0.0):
    """Pad the last two axes of an array, with numpy's modes.

    The same result as ``np.pad`` padding only the last two axes (in the
    float dtype cyconv computes in), within the limits below.

    Parameters
    ----------
    x : array_like, at least 2 dimensions (..., H, W)
        Every leading axis (batch, channels, ...) is carried through.
    padding : int, pair of ints or four ints
        An int pads all four sides alike; ``(ph, pw)`` pads ``ph`` rows at
        the top and at the bottom and ``pw`` columns at the left and at the
        right; ``(top, bottom, left, right)`` sets each side.  Note the
        order: rows first, unlike ``torch.nn.functional.pad``'s
        ``(left, right, top, bottom)``.
    mode : {"constant", "reflect", "symmetric", "edge", "wrap"}
        As in ``np.pad``: ``value`` everywhere; the mirror image without
        repeating the edge (``2 1 | 0 1 2 | 1 0``); with it
        (``1 0 | 0 1 2 | 2 1``); the edge repeated; the other end of the
        axis (``1 2 | 0 1 2 | 0 1``).
    value : real number, default 0.0
        The constant of mode ``"constant"``; any other mode refuses a
        non-zero value.

    Returns
    -------
    out : ndarray, shape (..., top + H + bottom, left + W + right)
        float32 for float32 input, else float64.

    Raises
    ------
    TypeError
        For complex, float16, object or other non-real input, or a padding
        that is not made of ints.
    ValueError
        For fewer than 2 axes, negative padding, an unknown mode, a
        padding beyond the mode's limit, or an output too large to be an
        array at all.
    MemoryError
        For an output that could be an array but does not fit in memory.

    Notes
    -----
    Where numpy would reflect or wrap several times over, pad2d refuses:
    ``"reflect"`` needs each padding smaller than the size of the axis it
    pads, ``"symmetric"`` and ``"wrap"`` no larger, and ``"edge"`` a
    non-empty axis.  ``"constant"`` has no limit.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import pad2d
    >>> x = np.array([[1., 2., 3.],
    ...               [4., 5., 6.]])
    >>> pad2d(x, (0, 2), mode="reflect")
    array([[3., 2., 1., 2., 3., 2., 1.],
           [6., 5., 4., 5., 6., 5., 4.]])
    >>> pad2d(x, (1, 0, 0, 1), value=-1)
    array([[-1., -1., -1., -1.],
           [ 1.,  2.,  3., -1.],
           [ 4.,  5.,  6., -1.]])
    >>> pad2d(np.ones((8, 3, 28, 28)), 2, mode="edge").shape
    (8, 3, 32, 32)
    """
    x = _checked_array(x, "x")
    height, width = x.shape[-2:]
    top, bottom, left, right = _checked_padding(padding, mode, height, width)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a real number, got {value!r}")
    value = float(value)
    if mode != "constant" and value != 0:
        raise ValueError(f"value is only used by mode='constant', got value={value} "
                         f"with mode={mode!r}")
    shape = x.shape[:-2] + (top + height + bottom, left + width + right)
    check_fits(shape, "pad2d's output")
    if x.size == 0:
        # Nothing to copy: the limits left only the constant (or nothing).
        return np.full(shape, value, dtype=x.dtype)
    out = np.empty(shape, dtype=x.dtype)
    _pad.pad2d_forward(
        x.reshape(-1, height, width), out.reshape((-1,) + shape[-2:]),
        _source_indices(height, top, bottom, mode),
        _source_indices(width, left, right, mode),
        left, value, get_num_threads(),
    )
    return out


def pad2d_backward(grad, padding, mode="constant"):
    """Adjoint of :func:`pad2d`: the gradient with respect to its input.

    Each element of ``x`` receives the gradient of its own place in the
    padded array plus that of every border element copied from it;
    constant borders copy nothing, and their gradient is dropped.

    Parameters
    ----------
    grad : array_like, shape (..., top + H + bottom, left + W + right)
        Gradient of the loss with respect to ``pad2d``'s output.
    padding, mode
        As given to :func:`pad2d`.

    Returns
    -------
    grad_input : ndarray, shape (..., H, W)
        float32 for float32 ``grad``, else float64.

    Raises
    ------
    TypeError, ValueError
        As :func:`pad2d` (the limits apply to the unpadded sizes), and
        ValueError where ``grad``'s last two axes are smaller than the
        padding.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import pad2d_backward
    >>> pad2d_backward(np.ones((1, 7)), (0, 2), mode="reflect")
    array([[2., 3., 2.]])
    >>> pad2d_backward(np.ones((1, 6)), (0, 2), mode="edge")
    array([[3., 3.]])
    >>> pad2d_backward(np.ones((3, 3)), 1)
    array([[1.]])
    """
    grad = _checked_array(grad, "grad")
    check_choice(mode, "mode", MODES)
    top, bottom, left, right = _padding_amounts(padding)
    padded_height, padded_width = grad.shape[-2:]
    height, width = padded_height - top - bottom, padded_width - left - right
    if height < 0 or width < 0:
        raise ValueError(
            f"grad's last two axes {grad.shape[-2:]} are smaller than the padding "
            f"(top={top}, bottom={bottom}, left={left}, right={right})"
        )
    _checked_padding(padding, mode, height, width)
    shape = grad.shape[:-2] + (height, width)
    if 0 in shape:
        return np.zeros(shape, dtype=grad.dtype)
    grad_input = np.empty(shape, dtype=grad.dtype)
    _pad.pad2d_backward(
        grad.reshape((-1,) + grad.shape[-2:]), grad_input.reshape(-1, height, width),
        _source_indices(height, top, bottom, mode),
        _source_indices(width, left, right, mode),
        top, left, get_num_threads(),
    )
    return grad_input
