"""Ready-made networks."""

import numpy as np

from .._validation import as_int, as_shape
from .activations import ReLU
from .containers import Sequential
from .conv import Convolution
from .dense import Dense
from .pooling import MaxPooling
from .reshape import Flatten

__all__ = ["lenet"]


def lenet(input_shape=(1, 28, 28), classes=10, *, dtype=np.float32, rng=None):
    """A LeNet-style classifier: two convolution + ReLU + max-pool stages,
    then a small dense classifier giving ``classes`` logits.

    ``cyconv train`` trains it on MNIST (98.0% held-out accuracy on the
    bundled digits with its defaults).

    Parameters
    ----------
    input_shape : tuple of 3 ints, default (1, 28, 28)
        ``(C, H, W)`` of one image; H and W at least 10.
    classes : int, default 10
    dtype : float32 or float64
    rng : None, int or numpy Generator
        Source of the initial weights (a fresh unseeded Generator for None).

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.nn import lenet
    >>> model = lenet(rng=0)
    >>> model.predict(np.zeros((2, 1, 28, 28))).shape
    (2, 10)
    >>> model.output_shapes[5]    # after the second pooling
    (32, 5, 5)
    """
    input_shape = as_shape(input_shape, "input_shape", 3)
    classes = as_int(classes, "classes", 1)
    # One Generator for every layer, drawn from in order.
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return Sequential([
        Convolution(kernel_size=3, depth=16, dtype=dtype, rng=rng),
        ReLU(),
        MaxPooling(2),
        Convolution(kernel_size=3, depth=32, dtype=dtype, rng=rng),
        ReLU(),
        MaxPooling(2),
        Flatten(),
        Dense(output_size=128, dtype=dtype, rng=rng),
        ReLU(),
        Dense(output_size=classes, dtype=dtype, rng=rng),
    ], input_shape=input_shape)
