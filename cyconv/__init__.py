"""cyconv: convolutional neural networks on the CPU.

Cython kernels for cross-correlation, convolution, padding and pooling,
forward and backward, in float32 and float64, parallel with OpenMP; thin
layers on top for training.
"""

from . import functional
from ._threads import get_num_threads, set_num_threads
from .signal import convolve2d, correlate2d

__version__ = "0.1.0"

__all__ = [
    "convolve2d",
    "correlate2d",
    "functional",
    "get_num_threads",
    "set_num_threads",
]
