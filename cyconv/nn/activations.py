"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh and Softmax.

Element-wise numpy expressions (ReLU's gradient a compiled kernel); they
keep their input's float dtype (float32 or float64; integers compute in
float64) and take any shape.
"""

import numpy as np

from .._relu import relu, relu_gradient
from .._validation import as_real
from .layer import (
    ShapePreserving,
    as_float_input,
    as_layer_input,
    check_gradient_shape,
    check_unused_learning_rate,
)

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax"]


class _Activation(ShapePreserving):
    """An element-wise function whose derivative follows from its input and
    output, so that backward needs only what forward cached."""

    def forward(self, input):
        self.input = as_float_input(input)
        self.output = self._function(self.input)
        return self.output

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        check_unused_learning_rate(learning_rate)
        grad = as_layer_input(output_gradient, self.output.dtype, "output_gradient")
        check_gradient_shape(grad, self.output.shape, type(self).__name__)
        if not self.needs_input_gradient:
            return None
        return self._input_gradient(grad)


class ReLU(_Activation):
    """Rectified linear unit, ``max(x, 0)``; its gradient at 0 is taken as 0.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import ReLU
    >>> relu = ReLU()
    >>> relu.forward(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    >>> relu.backward(np.array([5.0, 5.0, 5.0]))
    array([0., 0., 5.])
    """

    def forward(self, input, *, _applied=False, _kept=True):
        # _applied: the layer before already stored max(x, 0) (a Convolution
        # run with it as one, see Container.forward): take its output as
        # both input and output.  Backward is unchanged: max(x, 0) > 0
        # exactly where x > 0.  _kept=False: that output was not even
        # computed (the MaxPooling after this layer ran fused too, and
        # applies this layer's gradient in its own backward pass): input
        # and output are None, and backward refuses to run.
        self._kept = _kept
        if not _kept:
            self.input = self.output = None
            return None
        if _applied:
            self.input = self.output = input
            return input
        return super().forward(input)

    def _function(self, x):
        return relu(x)  # np.maximum(x, 0), bit for bit, in one compiled pass

    def _require_forward(self):
        if not self.__dict__.get("_kept", True):
            raise RuntimeError(
                "ReLU.backward after a forward pass its model ran fused with the "
                "Convolution before and the MaxPooling after it, which never computed "
                "this layer's input or output: run the model's backward instead, or "
                "run forward again first (this layer's own, or the model's with "
                "fuse = False)")
        super()._require_forward()

    def _input_gradient(self, grad):
        return relu_gradient(grad, self.input)


class LeakyReLU(_Activation):
    """Leaky rectified linear unit: ``x`` where ``x > 0``, else
    ``negative_slope * x``, as ``torch.nn.LeakyReLU``.

    Parameters
    ----------
    negative_slope : float, default 0.01
        The slope for ``x <= 0``; also the gradient taken at 0.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import LeakyReLU
    >>> layer = LeakyReLU(0.1)
    >>> layer.forward(np.array([-2.0, 0.0, 3.0]))
    array([-0.2,  0. ,  3. ])
    >>> layer.backward(np.array([1.0, 1.0, 1.0]))
    array([0.1, 0.1, 1. ])
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = as_real(negative_slope, "negative_slope", None)

    def get_config(self):
        return {"negative_slope": self.negative_slope}

    def _function(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def _input_gradient(self, grad):
        return np.where(self.input > 0, grad, grad * grad.dtype.type(self.negative_slope))


class Sigmoid(_Activation):
    """Logistic function ``1 / (1 + exp(-x))``, without overflow for large |x|.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Sigmoid
    >>> s = Sigmoid()
    >>> s.forward(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    >>> s.backward(np.ones(3))
    array([0.  , 0.25, 0.  ])
    """

    def _function(self, x):
        # Imported here: scipy.special takes ~35 ms to import, a tenth of
        # `import cyconv`, and few networks use a sigmoid.
        from scipy.special import expit

        return expit(x)

    def _input_gradient(self, grad):
        s = self.output
        return grad * s * (1 - s)


class Tanh(_Activation):
    """Hyperbolic tangent.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Tanh
    >>> t = Tanh()
    >>> t.forward(np.array([0.0]))
    array([0.])
    >>> t.backward(np.array([3.0]))
    array([3.])
    """

    def _function(self, x):
        return np.tanh(x)

    def _input_gradient(self, grad):
        return grad * (1 - self.output ** 2)


class Softmax(_Activation):
    """Softmax over the last axis, so that each sample's outputs sum to one.

    A ``(K, 1)`` column (K > 1), the tutorial's layout for one sample, is
    normalised down its column instead.  For training a classifier, prefer a
    last layer of logits with :func:`cyconv.losses.softmax_cross_entropy`,
    which fuses the two and stays accurate for large logits.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Softmax
    >>> s = Softmax()
    >>> s.forward(np.array([[0.0, 0.0], [1000.0, 0.0]]))
    array([[0.5, 0.5],
           [1. , 0. ]])
    >>> s.backward(np.array([[1.0, 0.0], [0.0, 1.0]]))
    array([[ 0.25, -0.25],
           [ 0.  ,  0.  ]])
    """

    def _axis(self, x):
        return 0 if x.ndim == 2 and x.shape[1] == 1 and x.shape[0] > 1 else -1

    def _function(self, x):
        axis = self._axis(x)
        if x.size == 0:  # np.max has nothing to reduce: nothing to normalise
            return x.copy()
        # Shifting by the maximum keeps exp from overflowing.
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)

    def _input_gradient(self, grad):
        s = self.output
        # The Jacobian diag(s) - s s^T applied without forming it.
        return s * (grad - np.sum(grad * s, axis=self._axis(s), keepdims=True))
