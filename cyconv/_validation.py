"""Input checks shared by every public function.

The compiled kernels run with bounds checks off and never raise, so all that
they may assume is established here: dtype, contiguity, number of axes and
every size and hyper-parameter that an index is computed from.
"""

import itertools
import math
import numbers
import operator
import sys

import numpy as np

_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))

# Sizes, strides, dilations and paddings beyond this describe no array that
# fits in memory; refusing them keeps every index the kernels compute far
# from overflowing Py_ssize_t.
LARGEST = 2**40

# numpy's own limit on the number of axes of an array.
MAX_NDIM = 64

# The matrix products go through BLAS, whose sizes and strides are C ints.
BLAS_INT_MAX = 2**31 - 1


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
    """Convert ``(value, name)`` pairs to aligned C-contiguous arrays of one
    common float dtype (float64 when the inputs' dtypes differ).

    Returns the list of arrays, in order.
    """
    arrays = [as_array(value, name) for value, name in named]
    dtypes = {float_dtype(array, name) for array, (_, name) in zip(arrays, named)}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float64)
    return [as_kernel_array(array, dtype) for array in arrays]


def as_kernel_array(array, dtype):
    """``array`` as the kernels read it: C-contiguous, of ``dtype``, and
    aligned.  numpy passes a contiguous view at an odd address (into a
    bytes buffer, say) through unchanged, and loading a double from there
    is undefined behaviour in C, whatever x86 lets it get away with."""
    # Not np.ascontiguousarray: it turns a scalar into shape (1,), which
    # then passes for a bias of one filter and misreports shapes in errors.
    array = np.asarray(array, dtype=dtype, order="C")
    return array if array.flags.aligned else array.copy()


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


def check_nonempty_except_batch(array, name):
    """Raise ValueError for an empty axis, other than the batch axis of a
    4-D (N, C, H, W) array: PyTorch returns empty results for a batch of 0
    samples (the last shard of a data set split across workers may be
    empty)."""
    if 0 in (array.shape[1:] if array.ndim == 4 else array.shape):
        raise ValueError(f"{name} must not have an empty axis other than the batch axis, "
                         f"got shape {array.shape}")


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


def is_int(value):
    """Whether ``value`` is an int to cyconv: anything ``operator.index``
    takes (Python and numpy integers, 0-d integer arrays), bools aside."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def few_items(value, name, expected, most):
    """The items of ``value``, a sequence or other iterable of at most
    ``most`` items, as a tuple.

    At most ``most + 1`` items are drawn, so that an endless iterator
    (``itertools.count()``, a generator) is refused at once instead of
    filling memory.  Strings and bytes, iterable but never a list of
    numbers, are refused too."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    try:
        iterator = iter(value)
    except TypeError:
        raise TypeError(f"{name} must be {expected}, got {value!r}") from None
    items = tuple(itertools.islice(iterator, most + 1))
    if len(items) > most:
        raise ValueError(f"{name} must be {expected}, got more than {most} items "
                         f"({type(value).__name__})")
    return items


def as_pair(value, name, minimum):
    """Return ``value`` as a ``(rows, cols)`` tuple: an int, a pair of ints,
    or one int in a sequence (``(2,)``), as PyTorch accepts them."""
    if is_int(value):
        number = as_int(value, name, minimum)
        return number, number
    expected = "an int or a pair of ints"
    items = few_items(value, name, expected, 2)
    if not items:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    if len(items) == 1:
        number = as_int(items[0], name, minimum)
        return number, number
    return as_int(items[0], name, minimum), as_int(items[1], name, minimum)


def check_choice(value, name, choices):
    """Raise ValueError unless ``value`` is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value


def check_at_most(pair, name, largest=LARGEST):
    """Raise ValueError if any number of ``pair`` is above ``largest``."""
    if max(pair) > largest:
        raise ValueError(f"{name} must be at most 2**{largest.bit_length() - 1}, got {pair}")


def check_fits(shape, what):
    """Raise ValueError, before anything is allocated, if an array of
    ``shape`` (in float64) could not exist in any address space: numpy would
    otherwise refuse in its own words, or not at all where a product of
    sizes wraps around first."""
    if math.prod(shape) * 8 > sys.maxsize:
        raise ValueError(f"{what} would have shape {tuple(shape)}, too large for an array")


def as_flag(value, name):
    """Return ``value`` as a bool; only True, False and numpy bools are
    accepted, so that a misplaced positional argument is reported."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)

def check_learning_rate(learning_rate):
    """Return ``learning_rate`` as a finite float >= 0."""
    return as_real(learning_rate, "learning_rate")


def check_dtype(dtype):
    """Return ``dtype`` as a numpy dtype, float32 or float64 only."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if resolved not in _NATIVE:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved



def as_shape(value, name, ndim=None):
    """A tuple of positive ints, of length ``ndim`` when given."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    try:
        # At most one entry more than any shape may have: an endless
        # iterator is refused rather than read until memory runs out.
        items = tuple(itertools.islice(iter(value), MAX_NDIM + 1))
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}") from None
    if len(items) > MAX_NDIM:
        raise ValueError(f"{name} must have at most {MAX_NDIM} entries, got {value!r}")
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
        if item < 1:
            raise ValueError(f"{name} must hold positive sizes, got {value!r}")
    if ndim is not None and len(items) != ndim:
        raise ValueError(f"{name} must have {ndim} entries, got {value!r}")
    if not items:
        raise ValueError(f"{name} must not be empty")
    return tuple(int(item) for item in items)


def as_real(value, name, minimum=0.0, upper=None, *, maximum=None):
    """Return ``value`` as a finite float >= ``minimum`` (no lower bound
    when None), < ``upper`` when given and <= ``maximum`` when given;
    bools and non-numbers are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if (not np.isfinite(value) or (minimum is not None and value < minimum)
            or (upper is not None and value >= upper)
            or (maximum is not None and value > maximum)):
        low = "finite" if minimum is None else f"finite and >= {minimum:g}"
        if upper is not None:
            bound = f"in [{minimum:g}, {upper:g})"
        elif maximum is not None:
            bound = f"in [{minimum:g}, {maximum:g}]"
        else:
            bound = low
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value
