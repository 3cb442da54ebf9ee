"""Layers that only change the shape of each sample: Reshape and Flatten."""

import math

from .._validation import as_shape
from .layer import Layer, as_float_input, check_gradient_shape, check_unused_learning_rate

__all__ = ["Reshape", "Flatten"]


class _Rearrangement(Layer):
    """A layer that only changes the shape of its input: its gradient is the
    output gradient in the input's shape."""

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        check_unused_learning_rate(learning_rate)
        grad = as_float_input(output_gradient, "output_gradient")
        check_gradient_shape(grad, self.output.shape, type(self).__name__)
        return grad.reshape(self.input.shape) if self.needs_input_gradient else None


class Reshape(_Rearrangement):
    """Reshape each sample from ``input_shape`` to ``output_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Reshape
    >>> layer = Reshape((2, 3, 3), (18, 1))   # the tutorial's column vector
    >>> layer.forward(np.zeros((2, 3, 3))).shape
    (18, 1)
    >>> layer.forward(np.zeros((5, 2, 3, 3))).shape
    (5, 18, 1)
    >>> layer.backward(np.zeros((5, 18, 1))).shape
    (5, 2, 3, 3)
    """

    def __init__(self, input_shape, output_shape):
        super().__init__()
        self.input_shape = as_shape(input_shape, "input_shape")
        self.output_shape = as_shape(output_shape, "output_shape")
        if math.prod(self.input_shape) != math.prod(self.output_shape):
            raise ValueError(f"cannot reshape {self.input_shape} ({math.prod(self.input_shape)} "
                             f"values) to {self.output_shape} ({math.prod(self.output_shape)})")

    def get_config(self):
        return dict(input_shape=list(self.input_shape), output_shape=list(self.output_shape))

    def build(self, input_shape):
        if input_shape is not None and tuple(input_shape) != self.input_shape:
            raise ValueError(f"Reshape expects samples of shape {self.input_shape}, "
                             f"got {tuple(input_shape)}")
        return self.output_shape

    def forward(self, input):
        x = as_float_input(input)
        if x.shape == self.input_shape:
            self.output = x.reshape(self.output_shape)
        elif x.shape[1:] == self.input_shape:
            self.output = x.reshape((x.shape[0],) + self.output_shape)
        else:
            raise ValueError(f"Reshape expects input of shape (N, *{self.input_shape}) or "
                             f"{self.input_shape}, got {x.shape}")
        self.input = x
        return self.output


class Flatten(_Rearrangement):
    """Flatten each sample of a batch ``(N, ...)`` to ``(N, features)``.

    Parameters
    ----------
    input_shape : tuple of ints, optional
        The shape of one sample.  Needed only to flatten a single sample
        without a batch axis: without it every input is taken as a batch.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Flatten
    >>> Flatten().forward(np.zeros((4, 3, 5, 5))).shape
    (4, 75)
    >>> Flatten((3, 5, 5)).forward(np.zeros((3, 5, 5))).shape
    (75,)
    """

    def __init__(self, input_shape=None):
        super().__init__()
        self.input_shape = None if input_shape is None else as_shape(input_shape, "input_shape")

    def get_config(self):
        return dict(input_shape=None if self.input_shape is None else list(self.input_shape))

    def build(self, input_shape):
        if input_shape is None:
            return None if self.input_shape is None else (math.prod(self.input_shape),)
        input_shape = tuple(input_shape)
        if self.input_shape is not None and input_shape != self.input_shape:
            raise ValueError(f"Flatten expects samples of shape {self.input_shape}, "
                             f"got {input_shape}")
        return (math.prod(input_shape),)

    def forward(self, input):
        x = as_float_input(input)
        if self.input_shape is not None and x.shape == self.input_shape:
            self.output = x.reshape(-1)
        elif self.input_shape is not None and x.shape[1:] != self.input_shape:
            raise ValueError(f"Flatten expects input of shape (N, *{self.input_shape}) or "
                             f"{self.input_shape}, got {x.shape}")
        elif x.ndim < 2:
            raise ValueError(f"Flatten expects a batch (N, ...) with at least 2 dimensions, "
                             f"got shape {x.shape}")
        else:
            # Not reshape(N, -1): with N = 0 numpy cannot infer the -1.
            self.output = x.reshape(x.shape[0], math.prod(x.shape[1:]))
        self.input = x
        return self.output
