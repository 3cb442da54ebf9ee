"""ReLU and its gradient through their compiled kernels, ``_kernels/_relu.pyx``."""

import numpy as np

from . import _runtime
from ._kernels import _relu
from ._validation import as_kernel_array

# Below this many elements a second thread costs more than it saves.
MIN_ELEMENTS_PER_THREAD = _runtime.RELU_MIN_ELEMENTS_PER_THREAD


def relu(x, out=None):
    """``np.maximum(x, 0)``, bit for bit (NaN kept, -0.0 becomes +0.0), for a
    float32 or float64 array, into ``out`` when given: an aligned,
    C-contiguous array of x's shape and dtype, which may be ``x`` itself."""
    x = as_kernel_array(x, x.dtype)
    out = _output(out, x)
    threads = _runtime.threads_for(x.size, MIN_ELEMENTS_PER_THREAD)
    _relu.relu_forward(x.reshape(-1), out.reshape(-1), threads)
    return out


def relu_gradient(grad, x, out=None):
    """``grad * (x > 0)``, bit for bit, for two float arrays of one shape and
    dtype, into ``out`` when given (as for :func:`relu`; it may be ``grad``)."""
    if x.shape != grad.shape or x.dtype != grad.dtype:
        # (the kernel runs over x's length, writing as many values)
        raise ValueError(f"grad and x must have one shape and dtype, got {grad.shape} "
                         f"{grad.dtype} and {x.shape} {x.dtype}")
    grad = as_kernel_array(grad, grad.dtype)
    x = as_kernel_array(x, x.dtype)
    out = _output(out, grad)
    threads = _runtime.threads_for(grad.size, MIN_ELEMENTS_PER_THREAD)
    _relu.relu_backward(grad.reshape(-1), x.reshape(-1), out.reshape(-1), threads)
    return out


def _output(out, like):
    """``out``, checked against ``like``, or a new array like it."""
    if out is None:
        return np.empty_like(like)
    if (not isinstance(out, np.ndarray) or out.shape != like.shape or out.dtype != like.dtype
            or not out.flags.c_contiguous or not out.flags.aligned or not out.flags.writeable):
        raise ValueError(f"out must be a writeable, aligned, C-contiguous array of shape "
                         f"{like.shape} and dtype {like.dtype}")
    return out
