"""cyconv: convolutional neural networks on the CPU.

Cython kernels for cross-correlation, convolution, padding and pooling,
forward and backward, in float32 and float64, parallel with OpenMP; thin
layers on top for training.
"""

import sys

# Importing cyconv leaves the process as it was: no environment variable
# and no allocator setting changes.  (Arrays allocated inside cyconv's own
# calls reuse freed memory through a numpy handler of their own, current
# only during those calls: see _memory.py.)
from . import datasets, functional, nn
from ._memory import release_memory
from ._runtime import get_winograd, set_winograd, show_config
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
    fold_batch_norm,
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
    "fold_batch_norm",
    "functional",
    "get_num_threads",
    "get_winograd",
    "losses",
    "nn",
    "optimizers",
    "release_memory",
    "set_num_threads",
    "set_winograd",
    "show_config",
    "test",
]
