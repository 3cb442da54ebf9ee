"""Input checks shared by every public function.

The compiled kernels run with bounds checks off and never raise, so all that
they may assume is established here: dtype, contiguity, number of axes and
every size and hyper-parameter that an index is computed from.
"""

import numbers
import operator

import numpy as np

_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(array, name):
    """Return the dtype cyconv computes ``array`` in.

    float32 and float64 are kept; bool and integers go to float64 (no silent
    overflow or truncation); anything else is refused.
    """
    dtype = array.dtype
    if dtype in _NATIVE:
        return dtype
    if dtype.kind == "f" and dtype.newbyteorder("=") in _NATIVE:
        return dtype.newbyteorder("=")  # big-endian data: converted, not refused
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(
        f"{name} must hold real numbers (float32, float64, integer or bool), "
        f"got dtype {dtype}"
    )


def as_array(value, name):
    """``np.asarray`` with a clear error for ragged or non-numeric input."""
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be an array-like of numbers: {exc}") from None
    return array


def as_float_arrays(*named):
    """Convert ``(value, name)`` pairs to C-contiguous arrays of one common
    float dtype (float64 when the inputs' dtypes differ).

    Returns the list of arrays, in order.
    """
    arrays = [as_array(value, name) for value, name in named]
    dtypes = {float_dtype(array, name) for array, (_, name) in zip(arrays, named)}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float64)
    return [np.ascontiguousarray(array, dtype=dtype) for array in arrays]


def check_ndim(array, name, ndims, layout):
    """Raise ValueError unless ``array.ndim`` is one of ``ndims``."""
    if array.ndim not in ndims:
        expected = " or ".join(str(n) for n in ndims)
        raise ValueError(
            f"{name} must have {expected} dimensions {layout}, "
            f"got shape {array.shape}"
        )


def check_nonempty(array, name):
    if array.size == 0:
        raise ValueError(f"{name} must not have an empty axis, got shape {array.shape}")


def as_int(value, name, minimum):
    """Return ``value`` as a Python int >= ``minimum``.

    bool and floats are refused, even integral ones, so that ``stride=1.5``
    or ``stride=True`` is reported rather than guessed at.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result}")
    return result


def as_pair(value, name, minimum):
    """Return ``value`` (an int or a pair of ints) as a ``(rows, cols)`` tuple."""
    if isinstance(value, numbers.Integral) or isinstance(value, np.integer):
        number = as_int(value, name, minimum)
        return number, number
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return as_int(items[0], name, minimum), as_int(items[1], name, minimum)


def check_choice(value, name, choices):
    """Raise ValueError unless ``value`` is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value
