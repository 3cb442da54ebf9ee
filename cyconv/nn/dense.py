"""The fully connected layer."""

import numpy as np

from .._matmul import affine, matmul, sum_rows
from .._validation import as_int, check_dtype, check_fits
from .layer import WeightAndBias, as_layer_input, check_gradient_shape

__all__ = ["Dense"]


class Dense(WeightAndBias):
    """Fully connected layer: ``output = input @ weights.T + bias``.

    Parameters
    ----------
    input_size : int, optional
        Left out (``Dense(output_size=10)``), it is inferred when a
        container with a known input shape builds the layer.
    output_size : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : None, int or numpy Generator, optional
        Source of the He-initialised weights, as for :class:`Convolution`.

    Notes
    -----
    Takes a batch ``(N, input_size)``, one sample ``(input_size,)``, or the
    tutorial's column vector ``(input_size, 1)`` (for ``input_size > 1``),
    or a batch of them ``(N, input_size, 1)``, and returns the output in the
    same layout.

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
    >>> from cyconv import Sequential, Flatten
    >>> model = Sequential([Flatten(), Dense(output_size=4, rng=0)], input_shape=(2, 3, 3))
    >>> model.layers[1].weight.value.shape
    (4, 18)
    """

    def __init__(self, input_size=None, output_size=None, bias=True, *, dtype=np.float32,
                 rng=None):
        super().__init__()
        if output_size is None:
            raise TypeError("Dense needs output_size (Dense(input_size, output_size, ...))")
        self.output_size = as_int(output_size, "output_size", 1)
        self.dtype = check_dtype(dtype)
        self._defer_parameters(bias, rng)
        self.input_size = self.input_shape = self.output_shape = None
        if input_size is not None:
            self._allocate(as_int(input_size, "input_size", 1))

    def _allocate(self, input_size):
        check_fits((self.output_size, input_size), "Dense's weights")
        self.input_size = input_size
        self.input_shape = (input_size,)
        self.output_shape = (self.output_size,)
        self._allocate_parameters((self.output_size, input_size), input_size)

    def build(self, input_shape):
        """Samples of ``(input_size,)``, or the tutorial's columns ``(input_size, 1)``."""
        if input_shape is None:
            return self.output_shape
        input_shape = tuple(input_shape)
        column = len(input_shape) == 2 and input_shape[1] == 1
        if len(input_shape) != 1 and not column:
            raise ValueError(f"Dense expects samples of shape (input_size,) or "
                             f"(input_size, 1), got {input_shape}; put a Flatten before it")
        if not self.built:
            self._allocate(input_shape[0])
        elif input_shape[0] != self.input_size:
            raise ValueError(f"Dense expects samples of shape ({self.input_size},), "
                             f"got {input_shape}")
        return (self.output_size, 1) if column else self.output_shape

    @property
    def weights(self):
        return self.weight.value

    def get_config(self):
        return dict(input_size=self.input_size, output_size=self.output_size,
                    bias=self._has_bias, dtype=self.dtype.name)

    def forward(self, input):
        self._require_built()
        x = as_layer_input(input, self.dtype)
        n = self.input_size
        if x.ndim == 2 and x.shape[1] == n:
            x2, self._layout = x, "batch"
        elif x.shape == (n,):
            x2, self._layout = x[np.newaxis], "vector"
        elif x.shape == (n, 1):
            x2, self._layout = x.T, "column"
        elif x.ndim == 3 and x.shape[1:] == (n, 1):
            # A batch of the tutorial's column vectors, as Reshape((C, H, W),
            # (n, 1)) gives inside a Sequential.
            x2, self._layout = x[:, :, 0], "columns"
        else:
            raise ValueError(f"Dense expects input of shape (N, {n}), ({n},) or ({n}, 1) "
                             f"(or a batch of columns (N, {n}, 1)), got {x.shape}")
        self.input = x
        self._input2 = x2
        out = affine(x2, self.weight.value, None if self.bias is None else self.bias.value)
        self.output = self._restore(out)
        return self.output

    def _restore(self, array2):
        if self._layout == "vector":
            return array2[0]
        if self._layout == "column":
            return array2.T
        if self._layout == "columns":
            return array2[:, :, np.newaxis]
        return array2

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        grad = as_layer_input(output_gradient, self.dtype, "output_gradient")
        check_gradient_shape(grad, self.output.shape, "Dense")
        layout = self._layout
        if layout == "batch":
            g2 = grad
        elif layout == "vector":
            g2 = grad.reshape(1, -1)
        elif layout == "column":
            g2 = grad.T
        else:
            g2 = grad[..., 0]
        grad_input = None
        if self.needs_input_gradient:
            grad_input = self._restore(matmul(g2, self.weight.value))
        self.weight.grad = matmul(g2.T, self._input2)
        if self.bias is not None:
            self.bias.grad = sum_rows(g2)
        self.apply_learning_rate(learning_rate)
        return grad_input
