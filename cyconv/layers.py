"""Layers with a shape of their own: convolution, pooling, dense, reshaping.

Each is a thin wrapper: hyper-parameters, parameters, what the backward pass
needs from the forward one, and calls into :mod:`cyconv.functional`.  Every
layer takes a batch ``(N, ...)`` or one sample (no batch axis).
"""

import math

import numpy as np

from . import functional
from ._conv import _padding_amounts, conv_geometry
from ._layer import (
    Layer,
    Parameter,
    as_float_input,
    as_layer_input,
    as_shape,
    check_dtype,
    check_gradient_shape,
    check_unused_learning_rate as _check_unused_learning_rate,
    he_normal,
)
from ._matmul import matmul
from ._pool import check_divisor_override
from ._validation import as_int, as_pair, check_at_most, check_choice, check_fits

__all__ = [
    "Convolution",
    "MaxPooling",
    "AveragePooling",
    "Dense",
    "Reshape",
    "Flatten",
]

# PyTorch's names for the border of a convolution, and numpy's (pad2d's).
_PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _batched(x, sample_ndim, layer, layout):
    """Return (x with a batch axis, whether it had one)."""
    if x.ndim == sample_ndim + 1:
        return x, True
    if x.ndim == sample_ndim:
        return x[np.newaxis], False
    raise ValueError(f"{layer} expects input of shape {layout}, got {x.shape}")


class _WeightAndBias(Layer):
    """A layer whose parameters are ``weight`` and an optional ``bias``."""

    @property
    def biases(self):
        return None if self.bias is None else self.bias.value

    def parameters(self):
        return [self.weight] if self.bias is None else [self.weight, self.bias]


class Convolution(_WeightAndBias):
    """2-D convolution (cross-correlation) layer, NCHW, one bias per filter.

    Parameters
    ----------
    input_shape : tuple of 3 ints
        ``(C, H, W)`` of one sample.
    kernel_size : int or pair of ints
        Height and width of the filters.
    depth : int
        Number of filters, the output's channels.
    padding : int, pair of ints, "valid" or "same", default 0
        Border added on each side of the rows and columns.
    stride, dilation : int or pair of ints, default 1
    groups : int, default 1
        Channels and filters split into this many independent groups.
    bias : bool, default True
        Learn one bias per filter.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, default "zeros"
        What fills the border (PyTorch's names).
    dtype : float32 or float64, default float32
        Precision of the parameters and of the computation.
    rng : None, int or numpy Generator, optional
        Source of the He-initialised weights, ``N(0, 2 / fan_in)``.  None uses
        numpy's global state (``np.random.seed``); pass one Generator to all
        the layers of a model for a reproducible start.

    Attributes
    ----------
    output_shape : tuple
        ``(depth, Hout, Wout)`` of one sample.
    kernels, biases : ndarray
        The filters ``(depth, C // groups, kh, kw)`` and biases ``(depth,)``
        (the tutorial's names).

    Examples
    --------
    The tutorial's layer: 5 filters of 3 x 3 over a 28 x 28 grey image.

    >>> import numpy as np
    >>> from cyconv import Convolution
    >>> layer = Convolution((1, 28, 28), 3, 5, rng=0)
    >>> layer.output_shape
    (5, 26, 26)
    >>> image = np.random.default_rng(1).random((1, 28, 28))
    >>> out = layer.forward(image)
    >>> out.shape, out.dtype
    ((5, 26, 26), dtype('float32'))
    >>> grad = layer.backward(np.ones_like(out), learning_rate=0.01)
    >>> grad.shape
    (1, 28, 28)

    A batch works the same way:

    >>> layer.forward(np.zeros((8, 1, 28, 28))).shape
    (8, 5, 26, 26)
    """

    def __init__(self, input_shape, kernel_size, depth, padding=0, stride=1, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, dtype=np.float32, rng=None):
        super().__init__()
        self.input_shape = as_shape(input_shape, "input_shape", 3)
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.depth = as_int(depth, "depth", 1)
        self.groups = as_int(groups, "groups", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.dilation = as_pair(dilation, "dilation", 1)
        self.padding = padding if isinstance(padding, str) else as_pair(padding, "padding", 0)
        self.padding_mode = check_choice(padding_mode, "padding_mode", tuple(_PADDING_MODES))
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.dtype = check_dtype(dtype)
        channels = self.input_shape[0]
        self.kernels_shape = (self.depth, max(1, channels // self.groups)) + self.kernel_size
        # Checks groups, padding and that the kernel fits, with conv2d's messages.
        geometry = conv_geometry(self.input_shape, self.kernels_shape, self.stride,
                                 self.padding, self.dilation, self.groups)
        self.output_shape = geometry.output_shape
        self._border = None
        if _PADDING_MODES[self.padding_mode] is not None:
            top, bottom, left, right = _padding_amounts(
                self.padding, self.kernel_size, self.stride, self.dilation)
            if max(top, bottom) >= self.input_shape[1] or max(left, right) >= self.input_shape[2]:
                raise ValueError(
                    f"padding_mode={self.padding_mode!r} needs padding smaller than the "
                    f"input ({self.input_shape[1]}, {self.input_shape[2]})")
            self._border = (top, bottom, left, right)
        fan_in = self.kernels_shape[1] * self.kernel_size[0] * self.kernel_size[1]
        check_fits(self.kernels_shape, "Convolution's kernels")
        self.weight = Parameter("weight", he_normal(rng, self.kernels_shape, fan_in, self.dtype))
        self.bias = Parameter("bias", np.zeros(self.depth, dtype=self.dtype)) if bias else None

    @property
    def kernels(self):
        return self.weight.value

    def get_config(self):
        return dict(input_shape=list(self.input_shape), kernel_size=list(self.kernel_size),
                    depth=self.depth,
                    padding=self.padding if isinstance(self.padding, str) else list(self.padding),
                    stride=list(self.stride), dilation=list(self.dilation), groups=self.groups,
                    bias=self.bias is not None, padding_mode=self.padding_mode,
                    dtype=self.dtype.name)

    def _conv_arguments(self):
        padding = 0 if self._border is not None else self.padding
        return dict(stride=self.stride, padding=padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, input):
        x = as_layer_input(input, self.dtype)
        if x.shape[-3:] != self.input_shape or x.ndim not in (3, 4):
            raise ValueError(
                f"Convolution expects input of shape (N, {', '.join(map(str, self.input_shape))})"
                f" or {self.input_shape}, got {x.shape}")
        self.input = x
        if self._border is not None:
            x = functional.pad2d(x, self._border, mode=_PADDING_MODES[self.padding_mode])
        self._padded_input = x
        self.output = functional.conv2d(x, self.weight.value, self.biases,
                                        **self._conv_arguments())
        return self.output

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        grad = as_layer_input(output_gradient, self.dtype, "output_gradient")
        check_gradient_shape(grad, self.output.shape, "Convolution")
        grad_input, grad_weight, grad_bias = functional.conv2d_backward(
            grad, self._padded_input, self.weight.value, **self._conv_arguments(),
            compute_grad_input=self.needs_input_gradient)
        if grad_input is not None and self._border is not None:
            grad_input = functional.pad2d_backward(
                grad_input, self._border, mode=_PADDING_MODES[self.padding_mode])
        self.weight.grad = grad_weight
        if self.bias is not None:
            self.bias.grad = grad_bias
        self._descend(learning_rate)
        return grad_input


class _Pooling(Layer):
    """Shared by the pooling layers: hyper-parameters and the batch axis;
    subclasses supply ``_pool`` and ``_input_gradient`` on 4-D arrays."""

    def __init__(self, kernel_size=None, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        # The tutorial's MaxPooling(stride=s) pools s x s windows: the window
        # follows the stride unless given.
        if kernel_size is None:
            kernel_size = 2 if stride is None else stride
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"ceil_mode must be True or False, got {ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)

    def _pool_arguments(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode)

    def get_config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), ceil_mode=self.ceil_mode)

    def forward(self, input):
        x = as_float_input(input)
        x4, self._had_batch = _batched(x, 3, type(self).__name__, "(N, C, H, W) or (C, H, W)")
        self.input = x
        self._input4 = x4
        out = self._pool(x4)
        self.output = out if self._had_batch else out[0]
        return self.output

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        _check_unused_learning_rate(learning_rate)
        grad = as_layer_input(output_gradient, self._input4.dtype, "output_gradient")
        check_gradient_shape(grad, self.output.shape, type(self).__name__)
        if not self.needs_input_gradient:
            return None
        g4 = grad if self._had_batch else grad[np.newaxis]
        grad_input = self._input_gradient(g4)
        return grad_input if self._had_batch else grad_input[0]


class MaxPooling(_Pooling):
    """2-D max pooling over the last two axes.

    Parameters
    ----------
    kernel_size : int or pair of ints, optional
        Window size; defaults to ``stride``, or 2 when neither is given, so
        that ``MaxPooling(stride=2)`` is the tutorial's layer.
    stride : int or pair of ints, optional
        Step between windows; defaults to ``kernel_size``.
    padding : int or pair of ints, default 0
        Implicit -inf border.
    ceil_mode : bool, default False
        Round the output size up rather than down.
    dilation : int or pair of ints, default 1
        Step between the elements of a window, as in
        :func:`cyconv.functional.max_pool2d`.

    Notes
    -----
    The gradient of a window goes to its first maximal element in row-major
    order (see :func:`cyconv.functional.max_pool2d_backward`).

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import MaxPooling
    >>> pool = MaxPooling(stride=2)
    >>> x = np.arange(16.0).reshape(1, 4, 4)
    >>> pool.forward(x)
    array([[[ 5.,  7.],
            [13., 15.]]])
    >>> pool.backward(np.ones((1, 2, 2)))[0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """

    def __init__(self, kernel_size=None, stride=None, padding=0, ceil_mode=False, dilation=1):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = as_pair(dilation, "dilation", 1)
        check_at_most(self.dilation, "dilation")

    def _pool_arguments(self):
        return dict(super()._pool_arguments(), dilation=self.dilation)

    def get_config(self):
        return dict(super().get_config(), dilation=list(self.dilation))

    def _pool(self, x4):
        # The positions of the maxima are kept so that backward need not
        # search every window again.
        out, self._indices = functional.max_pool2d(x4, **self._pool_arguments(),
                                                   return_indices=True)
        return out

    def _input_gradient(self, g4):
        return functional.max_pool2d_backward(g4, self._input4, **self._pool_arguments(),
                                              indices=self._indices)


class AveragePooling(_Pooling):
    """2-D average pooling over the last two axes.

    Parameters
    ----------
    kernel_size, stride, padding, ceil_mode
        As for :class:`MaxPooling` (zero padding).
    count_include_pad : bool, default True
        Whether padded zeros count in a window's average.
    divisor_override : int, optional
        Divide every window's sum by this nonzero int instead.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import AveragePooling
    >>> pool = AveragePooling(2)
    >>> pool.forward(np.arange(16.0).reshape(1, 1, 4, 4))
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0, 0]
    array([0.25, 0.25, 0.25, 0.25])
    """

    def _pool(self, x4):
        return functional.avg_pool2d(x4, **self._pool_arguments())

    def _input_gradient(self, g4):
        return functional.avg_pool2d_backward(g4, self._input4, **self._pool_arguments())

    def __init__(self, kernel_size=None, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise TypeError(f"count_include_pad must be True or False, got {count_include_pad!r}")
        self.count_include_pad = bool(count_include_pad)
        check_divisor_override(divisor_override)
        self.divisor_override = None if divisor_override is None else int(divisor_override)

    def _pool_arguments(self):
        return dict(super()._pool_arguments(), count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override)

    def get_config(self):
        return dict(super().get_config(), count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override)


class Dense(_WeightAndBias):
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


class _Rearrangement(Layer):
    """A layer that only changes the shape of its input: its gradient is the
    output gradient in the input's shape."""

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        _check_unused_learning_rate(learning_rate)
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
