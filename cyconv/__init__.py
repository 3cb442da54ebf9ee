"""cyconv: convolutional neural networks on the CPU.

Cython kernels for cross-correlation, convolution, padding and pooling,
forward and backward, in float32 and float64, parallel with OpenMP; thin
layers on top for training.
"""

import os

# GNU OpenMP makes a thread that reaches the end of a parallel loop spin for
# a long while before it sleeps.  cyconv's loops are short (often well under
# a millisecond), so when another program keeps a core busy, the spinning
# thread takes the very core its late teammate needs: one epoch of
# `cyconv train` took 7.0 s on two threads against 0.8 s on one.  A shorter
# spin (read by libgomp when it loads, so set before any kernel is imported)
# brought that to 1.3 s and cost 10% on an idle machine.  A user's own
# OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from ._malloc import keep_freed_memory

# Freed arrays are kept for the next training step (see _malloc.py).
keep_freed_memory()

from . import datasets, functional, losses, optimizers
from ._layer import Layer, Parameter
from ._runtime import show_config
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
    "show_config",
]
