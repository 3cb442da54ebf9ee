"""ReLU's gradient through its compiled kernel, ``_kernels/_relu.pyx``."""

import numpy as np

from ._kernels import _relu
from . import _runtime

# Below this many elements a second thread costs more than it saves.
MIN_ELEMENTS_PER_THREAD = _runtime.RELU_MIN_ELEMENTS_PER_THREAD


def relu_gradient(grad, x):
    """``grad * (x > 0)``, bit for bit, for two float arrays of one shape and dtype."""
    grad = np.ascontiguousarray(grad)
    x = np.ascontiguousarray(x)
    out = np.empty_like(grad)
    threads = _runtime.threads_for(grad.size, MIN_ELEMENTS_PER_THREAD)
    _relu.relu_backward(grad.reshape(-1), x.reshape(-1), out.reshape(-1), threads)
    return out
