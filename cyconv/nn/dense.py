"""The fully connected layer."""

import numpy as np

from .._matmul import matmul
from .._validation import as_int, check_fits
from .layer import (
    Parameter,
    WeightAndBias,
    as_layer_input,
    check_dtype,
    check_gradient_shape,
    he_normal,
)

__all__ = ["Dense"]


class Dense(WeightAndBias):
    """Fully connected layer: ``output = input @ weights.T + bias``.

    Parameters
    ----------
    input_size, output_size : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : None, int or numpy Generator, optional
        Source of the He-initialised weights, as for :class:`Convolution`.

    Notes
    -----
    Takes a batch ``(N, input_size)``, one sample ``(input_size,)``, or the
    tutorial's column vector ``(input_size, 1)`` (for ``input_size > 1``),
    and returns the output in the same layout.

    Attributes
    ----------
    weights : ndarray, shape (output_size, input_size)
    biases : ndarray, shape (output_size,) or None

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Dense
    >>> layer = Dense(3, 2, dtype=np.float64, rng=0)
    >>> layer.weight.value[...] = [[1, 0, 0], [0, 1, 1]]
    >>> layer.forward([[1.0, 2.0, 3.0]])
    array([[1., 5.]])
    >>> layer.backward([[1.0, 1.0]])
    array([[1., 1., 1.]])
    >>> layer.weight.grad
    array([[1., 2., 3.],
           [1., 2., 3.]])
    >>> layer.forward(np.ones((3, 1))).shape   # a column vector, as in the tutorial
    (2, 1)
    """

    def __init__(self, input_size, output_size, bias=True, *, dtype=np.float32, rng=None):
        super().__init__()
        self.input_size = as_int(input_size, "input_size", 1)
        self.output_size = as_int(output_size, "output_size", 1)
        self.input_shape = (self.input_size,)
        self.output_shape = (self.output_size,)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.dtype = check_dtype(dtype)
        check_fits((self.output_size, self.input_size), "Dense's weights")
        self.weight = Parameter("weight", he_normal(
            rng, (self.output_size, self.input_size), self.input_size, self.dtype))
        self.bias = Parameter("bias", np.zeros(self.output_size, dtype=self.dtype)) if bias else None

    @property
    def weights(self):
        return self.weight.value

    def get_config(self):
        return dict(input_size=self.input_size, output_size=self.output_size,
                    bias=self.bias is not None, dtype=self.dtype.name)

    def forward(self, input):
        x = as_layer_input(input, self.dtype)
        n = self.input_size
        if x.ndim == 2 and x.shape[1] == n:
            x2, self._layout = x, "batch"
        elif x.shape == (n,):
            x2, self._layout = x[np.newaxis], "vector"
        elif x.shape == (n, 1):
            x2, self._layout = x.T, "column"
        else:
            raise ValueError(f"Dense expects input of shape (N, {n}), ({n},) or ({n}, 1), "
                             f"got {x.shape}")
        self.input = x
        self._input2 = x2
        out = matmul(x2, self.weight.value.T)
        if self.bias is not None:
            out += self.bias.value
        self.output = self._restore(out)
        return self.output

    def _restore(self, array2):
        if self._layout == "vector":
            return array2[0]
        if self._layout == "column":
            return array2.T
        return array2

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        grad = as_layer_input(output_gradient, self.dtype, "output_gradient")
        check_gradient_shape(grad, self.output.shape, "Dense")
        g2 = {"batch": grad, "vector": grad.reshape(1, -1), "column": grad.T}[self._layout]
        grad_input = None
        if self.needs_input_gradient:
            grad_input = self._restore(matmul(g2, self.weight.value))
        self.weight.grad = matmul(g2.T, self._input2)
        if self.bias is not None:
            self.bias.grad = g2.sum(axis=0)
        self._descend(learning_rate)
        return grad_input
