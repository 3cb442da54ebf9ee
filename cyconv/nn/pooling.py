"""Max and average pooling layers over the last two axes of a batch
``(N, C, H, W)`` or one sample ``(C, H, W)``."""

import numpy as np

from .. import functional
from .._pool import (
    PooledGradient,
    check_divisor_override,
    max_pool2d_backward_saved,
    max_pool2d_saving,
    max_pool2d_saving_checked,
    pool_geometry,
)
from .._validation import _NATIVE, as_flag, as_kernel_array, as_pair, check_at_most
from .layer import (
    Layer,
    array_kind,
    as_float_input,
    as_layer_input,
    check_gradient_shape,
    check_unused_learning_rate,
)

__all__ = ["MaxPooling", "AveragePooling", "GlobalAveragePooling"]


def _batched(x, sample_ndim, layer, layout):
    """Return (x with a batch axis, whether it had one)."""
    if x.ndim == sample_ndim + 1:
        return x, True
    if x.ndim == sample_ndim:
        return x[np.newaxis], False
    raise ValueError(f"{layer} expects input of shape {layout}, got {x.shape}")


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
        self.ceil_mode = as_flag(ceil_mode, "ceil_mode")

    def _sample_shape(self, input_shape):
        """``input_shape`` as a tuple (C, H, W), or None when unknown."""
        if input_shape is None:
            return None
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} expects samples of shape (C, H, W), "
                             f"got {input_shape}")
        return input_shape

    def build(self, input_shape):
        input_shape = self._sample_shape(input_shape)
        if input_shape is None:
            return None
        geometry = pool_geometry(input_shape, self.kernel_size, self.stride, self.padding,
                                 self.ceil_mode, getattr(self, "dilation", 1))
        return (input_shape[0], geometry.out_height, geometry.out_width)

    def _pool_arguments(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode)

    def get_config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), ceil_mode=self.ceil_mode)

    def forward(self, input):
        return self._forward(input)

    def _forward(self, input):
        x = as_float_input(input)
        x4, self._had_batch = _batched(x, 3, type(self).__name__, "(N, C, H, W) or (C, H, W)")
        self.input = x
        self._input4 = x4
        out = self._pool(x4)
        self.output = out if self._had_batch else out[0]
        return self.output

    def backward(self, output_gradient, learning_rate=None):
        return self._backward(output_gradient, learning_rate, self._input_gradient)

    def _backward(self, output_gradient, learning_rate, input_gradient):
        """backward's checks and batch axis around ``input_gradient``, a
        function of the 4-D output gradient."""
        self._require_forward()
        check_unused_learning_rate(learning_rate)
        grad = as_layer_input(output_gradient, self.output.dtype, "output_gradient")
        check_gradient_shape(grad, self.output.shape, type(self).__name__)
        if not self.needs_input_gradient:
            return None
        g4 = grad if self._had_batch else grad[np.newaxis]
        grad_input = input_gradient(g4)
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
        self._saved = None  # what forward keeps for backward
        self._checked = None  # see _remember

    # A training loop pools inputs of one shape every step, and the checks
    # give the same answer every time.  As Convolution does, the layer keeps
    # the geometry of the last input that passed them as it was (an aligned
    # C-contiguous float32 or float64 ndarray), with its shape, dtype, layout
    # and the very hyper-parameter objects it was checked with, and skips
    # the checks while all of those still hold: any other input, or a
    # hyper-parameter assigned anew, takes the checked path, with its errors.

    def _arguments(self):
        return self.kernel_size, self.stride, self.padding, self.ceil_mode, self.dilation

    def _remember(self, input):
        kind = array_kind(input)
        arguments = self._arguments()
        # Identity is compared, so only immutable values may be kept.
        ready = (kind is not None and kind[1] in _NATIVE and kind[2] and self.input is input
                 and all(type(a) is tuple and all(type(v) is int for v in a)
                         for a in arguments[:3] + arguments[4:])
                 and type(arguments[3]) is bool)
        self._checked = ((kind, arguments, self._saved.geometry, self._had_batch)
                         if ready else None)

    def _require_forward(self):
        # After a pass fused with the layers before (see forward) the input
        # is None; backward reads only the output and the saved maxima.
        if self.output is None:
            super()._require_forward()

    def forward(self, input, *, _pooled=None):
        # _pooled: ``(output, saved)`` of this layer's pass over ``input``,
        # computed with the layers before it (see Container.forward), which
        # never made ``input``'s values: ``input`` is then None (backward
        # reads only the output and the saved maxima).
        if _pooled is not None:
            self.input = self._input4 = None
            self._had_batch = True
            self.output, self._saved = _pooled
            return self.output
        checked = getattr(self, "_checked", None)
        if checked is not None and array_kind(input) == checked[0]:
            arguments = checked[1]
            if (self.kernel_size is arguments[0] and self.stride is arguments[1]
                    and self.padding is arguments[2] and self.ceil_mode is arguments[3]
                    and self.dilation is arguments[4]):
                batched = checked[3]
                x4 = input if batched else input[np.newaxis]
                self.input = input
                self._input4 = x4
                self._had_batch = batched
                out, self._saved = max_pool2d_saving_checked(x4, checked[2])
                self.output = out if batched else out[0]
                return self.output
        output = self._forward(input)
        self._remember(input)
        return output

    def _pool_arguments(self):
        return dict(super()._pool_arguments(), dilation=self.dilation)

    def get_config(self):
        return dict(super().get_config(), dilation=list(self.dilation))

    def _pool(self, x4):
        # The positions of the maxima are kept so that backward need not
        # search every window again.
        out, self._saved = max_pool2d_saving(x4, **self._pool_arguments())
        return out

    def _input_gradient(self, g4):
        return max_pool2d_backward_saved(g4, self._saved)

    def _input_gradient_through_relu(self, output_gradient):
        """The gradient ``relu.backward(self.backward(output_gradient))``
        for a :class:`~cyconv.ReLU` layer ``relu`` whose output was this
        layer's input, bit for bit, in one pass over the input gradient.

        For a model's ReLU -> MaxPooling pair (or a convolution that applied
        ReLU itself): the chain's gradient without the ReLU layer's pass.
        Checks as :meth:`backward` does (no learning rate).  ReLU's gradient
        is taken as that of the elements this layer's input holds,
        ``grad * (input > 0)``: 0 at 0 and at NaN, multiplied by exactly 1
        or 0 so that -0.0 and NaN gradients come out as ReLU's backward
        gives them.  As ReLU's input and output are positive at the same
        places, that is ReLU's own rule.  The input's values are read
        through this layer's output, so that must not have been changed in
        place since the forward pass.

        Examples
        --------
        >>> import numpy as np
        >>> from cyconv import MaxPooling, ReLU
        >>> relu, pool = ReLU(), MaxPooling(2)
        >>> x = np.array([[[-1., -2., 3., 0.],
        ...                [-3., -4., 0., 0.]]])
        >>> y = pool.forward(relu.forward(x))
        >>> g = np.array([[[5., 7.]]])
        >>> pool._input_gradient_through_relu(g)
        array([[[0., 0., 7., 0.],
                [0., 0., 0., 0.]]])
        >>> relu.backward(pool.backward(g))
        array([[[0., 0., 7., 0.],
                [0., 0., 0., 0.]]])
        """
        return self._backward(output_gradient, None, self._input_gradient_through_relu4)

    def _input_gradient_through_relu4(self, g4):
        return max_pool2d_backward_saved(g4, self._saved, through_relu=True)

    def _pooled_gradient(self, output_gradient):
        """:meth:`_input_gradient_through_relu` as a
        :class:`~cyconv._pool.PooledGradient`, not yet computed: for a
        layer before the ReLU whose weight gradient takes it so (checked
        as backward checks; a batch, 2x2 windows with codes)."""
        return self._backward(output_gradient, None, lambda g4: PooledGradient(
            as_kernel_array(g4, self._saved.pooled.dtype), self._saved))


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
        self.count_include_pad = as_flag(count_include_pad, "count_include_pad")
        check_divisor_override(divisor_override)
        self.divisor_override = None if divisor_override is None else int(divisor_override)

    def _pool_arguments(self):
        return dict(super()._pool_arguments(), count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override)

    def get_config(self):
        return dict(super().get_config(), count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override)


class GlobalAveragePooling(_Pooling):
    """The mean of each channel over its whole plane: ``(N, C, H, W)`` to
    ``(N, C)``, or one sample ``(C, H, W)`` to ``(C,)``, as
    ``torch.nn.AdaptiveAvgPool2d(1)`` followed by flattening.

    Its gradient spreads each channel's gradient evenly, ``grad / (H * W)``,
    over the plane.  Sums are accumulated in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import GlobalAveragePooling
    >>> pool = GlobalAveragePooling()
    >>> pool.forward(np.arange(8.0).reshape(1, 2, 2, 2))
    array([[1.5, 5.5]])
    >>> pool.backward(np.array([[4.0, 8.0]]))[0, 1]
    array([[2., 2.],
           [2., 2.]])
    """

    def __init__(self):
        Layer.__init__(self)  # no window: the whole plane is one

    def get_config(self):
        return {}

    def build(self, input_shape):
        input_shape = self._sample_shape(input_shape)
        return None if input_shape is None else input_shape[:1]

    def _pool(self, x4):
        if x4.size == 0:
            raise ValueError(f"GlobalAveragePooling expects no empty axis, got {x4.shape}")
        return functional.avg_pool2d(x4, x4.shape[2:])[:, :, 0, 0]

    def _input_gradient(self, g4):
        planes = g4.reshape(g4.shape + (1, 1))
        return functional.avg_pool2d_backward(planes, self._input4, self._input4.shape[2:])
