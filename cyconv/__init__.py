"""cyconv: convolutional neural networks on the CPU.

Cython kernels for cross-correlation, convolution, padding and pooling,
forward and backward, in float32 and float64, parallel with OpenMP; thin
layers on top for training.
"""

import os
import sys

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

from . import datasets, functional, nn
from ._runtime import show_config
from ._threads import get_num_threads, set_num_threads
from .nn import (
    SGD,
    Adam,
    AdamW,
    AveragePooling,
    BatchNormalization,
    Buffer,
    Convolution,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling,
    Layer,
    LeakyReLU,
    MaxPooling,
    Parameter,
    ReLU,
    RMSprop,
    Reshape,
    Residual,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    losses,
    optimizers,
)
from .signal import convolve2d, correlate2d

# The training library moved into cyconv.nn; its old module names stay
# importable (``from cyconv.layers import Dense``, ``import cyconv.model``)
# as aliases rather than files, so that no two files define one class.
for _old, _new in (("layers", nn), ("activations", nn), ("model", nn),
                   ("losses", nn.losses), ("optimizers", nn.optimizers),
                   ("_layer", nn.layer)):
    sys.modules[f"{__name__}.{_old}"] = globals()[_old] = _new
del _old, _new

__version__ = "0.1.0"


def test(max_examples=50, verbose=True):
    """Check the installed compiled kernels against independent references,
    as ``numpy.test()`` does: a short hypothesis run of every public kernel
    in float32 and float64 (under a minute), printing what it checked.
    Needs hypothesis (``pip install 'cyconv[test]'``); ``cyconv selftest``
    does the same from the command line.

    Returns True when every check passes.

    Examples
    --------
    >>> import cyconv
    >>> cyconv.test(max_examples=2, verbose=False)
    True
    """
    from ._selftest import run

    return run(max_examples=max_examples, verbose=verbose)

__all__ = [
    "Adam",
    "AdamW",
    "AveragePooling",
    "BatchNormalization",
    "Buffer",
    "Convolution",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling",
    "Layer",
    "LeakyReLU",
    "MaxPooling",
    "Parameter",
    "RMSprop",
    "ReLU",
    "Reshape",
    "Residual",
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
    "nn",
    "optimizers",
    "set_num_threads",
    "show_config",
    "test",
]
