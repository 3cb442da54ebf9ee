"""The convolution layer.

A thin wrapper: hyper-parameters, parameters, what the backward pass needs
from the forward one, and calls into :mod:`cyconv.functional`.  It takes a
batch ``(N, C, H, W)`` or one sample ``(C, H, W)``.
"""

import numpy as np

from .. import _conv, _conv_pool, functional
from .._conv import _padding_amounts, conv_geometry
from .._pad import CONV_PADDING_MODES
from .._pool import PooledGradient
from .._relu import relu
from .._validation import as_int, as_pair, as_shape, check_choice, check_dtype, check_fits
from ._hints import input_shape_hint
from .layer import WeightAndBias, array_kind, as_layer_input, check_gradient_shape

__all__ = ["Convolution"]


class Convolution(WeightAndBias):
    """2-D convolution (cross-correlation) layer, NCHW, one bias per filter.

    Parameters
    ----------
    input_shape : tuple of 3 ints, optional
        ``(C, H, W)`` of one sample.  Left out (``Convolution(kernel_size=3,
        depth=8)``), it is inferred when a container with a known input
        shape builds the layer; until then the layer has no parameters.
    kernel_size : int or pair of ints
        Height and width of the filters (required).
    depth : int
        Number of filters, the output's channels (required).
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

    Without ``input_shape``, the layer takes its sizes from the model:

    >>> from cyconv import Sequential
    >>> model = Sequential([Convolution(kernel_size=3, depth=4, rng=0)], input_shape=(2, 8, 8))
    >>> model.layers[0].weight.value.shape
    (4, 2, 3, 3)
    """

    def __init__(self, input_shape=None, kernel_size=None, depth=None, padding=0, stride=1,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, dtype=np.float32,
                 rng=None):
        super().__init__()
        if kernel_size is None or depth is None:
            raise TypeError("Convolution needs kernel_size and depth "
                            "(Convolution(input_shape, kernel_size, depth, ...))")
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.depth = as_int(depth, "depth", 1)
        self.groups = as_int(groups, "groups", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.dilation = as_pair(dilation, "dilation", 1)
        self.padding = padding if isinstance(padding, str) else as_pair(padding, "padding", 0)
        self.padding_mode = check_choice(padding_mode, "padding_mode", tuple(CONV_PADDING_MODES))
        self.dtype = check_dtype(dtype)
        self._defer_parameters(bias, rng)
        self.input_shape = self.output_shape = self.kernels_shape = None
        if input_shape is not None:
            self.build(as_shape(input_shape, "input_shape", 3))

    def build(self, input_shape):
        if input_shape is None:
            return self.output_shape
        input_shape = tuple(input_shape)
        if self.built:
            if input_shape != self.input_shape:
                raise ValueError(f"Convolution expects samples of shape {self.input_shape}, "
                                 f"got {input_shape}")
            return self.output_shape
        if len(input_shape) != 3:
            raise ValueError(f"Convolution expects samples of shape (C, H, W), got {input_shape}")
        channels = input_shape[0]
        kernels_shape = (self.depth, max(1, channels // self.groups)) + self.kernel_size
        # Checks groups, padding and that the kernel fits, with conv2d's messages.
        try:
            geometry = conv_geometry(input_shape, kernels_shape, self.stride,
                                     self.padding, self.dilation, self.groups)
        except ValueError as exc:
            hint = input_shape_hint(input_shape)
            if not hint:
                raise
            raise ValueError(f"{exc}.{hint}") from None
        border = None
        if CONV_PADDING_MODES[self.padding_mode] is not None:
            top, bottom, left, right = _padding_amounts(
                self.padding, self.kernel_size, self.stride, self.dilation)
            if max(top, bottom) >= input_shape[1] or max(left, right) >= input_shape[2]:
                raise ValueError(
                    f"padding_mode={self.padding_mode!r} needs padding smaller than the "
                    f"input ({input_shape[1]}, {input_shape[2]})")
            border = (top, bottom, left, right)
        fan_in = kernels_shape[1] * self.kernel_size[0] * self.kernel_size[1]
        check_fits(kernels_shape, "Convolution's kernels")
        self.input_shape, self.kernels_shape = input_shape, kernels_shape
        self.output_shape = geometry.output_shape
        self._border = border
        self._allocate_parameters(kernels_shape, fan_in)
        return self.output_shape

    @property
    def kernels(self):
        return self.weight.value

    def get_config(self):
        return dict(input_shape=None if self.input_shape is None else list(self.input_shape),
                    kernel_size=list(self.kernel_size),
                    depth=self.depth,
                    padding=self.padding if isinstance(self.padding, str) else list(self.padding),
                    stride=list(self.stride), dilation=list(self.dilation), groups=self.groups,
                    bias=self._has_bias, padding_mode=self.padding_mode,
                    dtype=self.dtype.name)

    def _conv_arguments(self):
        padding = 0 if self._border is not None else self.padding
        return dict(stride=self.stride, padding=padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, input, *, _relu=False, _max_pool=None):
        # _relu: max(output, 0) applied as the output is stored, for a model
        # that runs this layer and a ReLU after it as one (see
        # Container.forward); ``output`` then holds the ReLU's output.
        # _max_pool (with _relu): the arguments of a MaxPooling after that
        # ReLU, for a model that runs the three as one; the call then
        # returns (output, pooled): pooled None, or where the fused pass
        # ran, the pooling's (output, saved maxima); ``output`` is then
        # None, for it was never computed (backward takes its shape from
        # _output_shape).
        self._require_built()
        x = as_layer_input(input, self.dtype)
        if x.shape[-3:] != self.input_shape or x.ndim not in (3, 4):
            raise ValueError(
                f"Convolution expects input of shape (N, {', '.join(map(str, self.input_shape))})"
                f" or {self.input_shape}, got {x.shape}")
        self.input = x
        if self._border is not None:
            x = functional.pad2d(x, self._border, mode=CONV_PADDING_MODES[self.padding_mode])
        self._padded_input = x
        weight, bias = self.weight.value, self.biases
        geometry = self._checked_geometry(x, weight, bias)
        if geometry is None:
            out = functional.conv2d(x, weight, bias, **self._conv_arguments())
            self._remember(x, weight, bias)
            if _relu:
                relu(out, out=out)
        else:
            bias = np.empty(0, x.dtype) if bias is None else bias
            pooled = None if _max_pool is None else _conv_pool.pool_geometry(
                geometry, *_max_pool)
            if pooled is not None:
                self.output = None
                self._output_shape = geometry.output_shape
                return None, _conv_pool.forward(x, weight, bias, geometry, pooled)
            out = _conv.conv2d_checked(x, weight, bias, geometry, relu=_relu)
        self.output = out
        return out if _max_pool is None else (out, None)

    # A training loop calls a layer with the same shapes every step; conv2d's
    # checks then give the same answer every time.  The layer keeps the
    # geometry of its last call, and the kinds of arrays it was checked for,
    # and skips the checks while they still hold: a new shape, dtype or
    # memory layout (a parameter replaced, say) takes the checked path again,
    # with its errors.

    def _key(self, x, weight, bias):
        return (array_kind(x), array_kind(weight),
                None if bias is None else array_kind(bias), self._conv_arguments())

    def _remember(self, x, weight, bias):
        key = self._key(x, weight, bias)
        kinds = [kind for kind, array in zip(key, (x, weight, bias)) if array is not None]
        ready = all(kind is not None and kind[1] == self.dtype and kind[2] for kind in kinds)
        self._checked = (key, conv_geometry(x.shape, weight.shape, **key[3])) if ready else None

    def _checked_geometry(self, x, weight, bias):
        checked = getattr(self, "_checked", None)
        if checked is not None and checked[0] == self._key(x, weight, bias):
            return checked[1]
        return None

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        x, weight = self._padded_input, self.weight.value
        geometry = self._checked_geometry(x, weight, self.biases)
        shape = self._output_shape if self.output is None else self.output.shape
        if isinstance(output_gradient, PooledGradient):
            # From a model that ran a ReLU and a 2x2 max pooling after this
            # layer as one (see Container.backward), whose layers checked
            # it: the gradient held as the pooling's, which the weight
            # gradient's kernels may take as it is.  Its shape is checked
            # as a full gradient's would be (this layer may have run on
            # another batch since).
            grad, fits = output_gradient, geometry is not None and geometry.batched
            pooled = output_gradient.saved.geometry
            if not fits or (pooled.channels_shape + (pooled.height, pooled.width)
                            != geometry.output_shape):
                grad, fits = output_gradient.dense(), False
                check_gradient_shape(grad, shape, "Convolution")
        else:
            grad = as_layer_input(output_gradient, self.dtype, "output_gradient")
            check_gradient_shape(grad, shape, "Convolution")
            flags = grad.flags
            fits = (geometry is not None and grad.dtype == x.dtype and flags.c_contiguous
                    and flags.aligned)
        if fits and self.needs_input_gradient in (True, False):
            grad_input, grad_weight, grad_bias = _conv.conv2d_backward_checked(
                grad, x, weight, geometry, self.needs_input_gradient)
        else:
            if isinstance(grad, PooledGradient):
                grad = grad.dense()
            grad_input, grad_weight, grad_bias = functional.conv2d_backward(
                grad, x, weight, **self._conv_arguments(),
                compute_grad_input=self.needs_input_gradient)
        if grad_input is not None and self._border is not None:
            grad_input = functional.pad2d_backward(
                grad_input, self._border, mode=CONV_PADDING_MODES[self.padding_mode])
        self.weight.grad = grad_weight
        if self.bias is not None:
            self.bias.grad = grad_bias
        self.apply_learning_rate(learning_rate)
        return grad_input
