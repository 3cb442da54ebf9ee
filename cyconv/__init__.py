"""cyconv: convolutional neural networks on the CPU.

Cython kernels for cross-correlation, convolution, padding and pooling,
forward and backward, in float32 and float64, parallel with OpenMP; thin
layers on top for training.
"""

from . import datasets, functional, losses, optimizers
from ._layer import Layer, Parameter
from ._threads import get_num_threads, set_num_threads
from .activations import ReLU, Sigmoid, Softmax, Tanh
from .layers import AveragePooling, Convolution, Dense, Flatten, MaxPooling, Reshape
from .model import Sequential
from .optimizers import SGD, Adam
from .signal import convolve2d, correlate2d

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AveragePooling",
    "Convolution",
    "Dense",
    "Flatten",
    "Layer",
    "MaxPooling",
    "Parameter",
    "ReLU",
    "Reshape",
    "SGD",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "convolve2d",
    "correlate2d",
    "datasets",
    "functional",
    "get_num_threads",
    "losses",
    "optimizers",
    "set_num_threads",
]
