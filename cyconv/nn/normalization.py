"""Batch normalisation: a layer over the compiled loops of
:func:`cyconv.functional.batch_norm`."""

import numpy as np

from .. import _norm
from .._validation import as_int, as_real, check_dtype
from .layer import (
    Buffer,
    Layer,
    Parameter,
    as_layer_input,
    check_gradient_shape,
    initial_array,
)

__all__ = ["BatchNormalization"]

_LAYOUT = "(N, C, H, W), (N, C), or one sample (C, H, W) or (C,)"


class BatchNormalization(Layer):
    """Batch normalisation over axis 1, as ``torch.nn.BatchNorm1d`` and
    ``BatchNorm2d``.

    ``output = (input - mean) / sqrt(var + eps) * gamma + beta`` per channel
    (per feature for ``(N, C)`` input).  In training mode ``mean`` and
    ``var`` are the batch's (the variance biased), and the running
    estimates are updated,
    ``running = (1 - momentum) * running + momentum * batch_statistic``
    with the batch's unbiased variance; in eval mode the running estimates
    are used.  Forward and backward are compiled loops, one pass per
    statistic, whose results do not depend on the thread count.

    Parameters
    ----------
    num_features : int, optional
        The number of channels C.  Inside a :class:`cyconv.Sequential` whose
        input shape is known it may be left out: it is inferred when the
        model is built.
    momentum : float in [0, 1], default 0.1
    eps : float >= 0, default 1e-5
    dtype : float32 or float64, default float32, keyword-only

    Attributes
    ----------
    gamma, beta : Parameter, shape (C,)
        Scale (ones) and shift (zeros): PyTorch's ``weight`` and ``bias``.
    running_mean, running_var : Buffer, shape (C,)
        Zeros and ones at first; saved with the model.

    Notes
    -----
    Training mode needs more than one value per channel (a batch of one
    ``(1, C)`` has no variance), as in PyTorch.  A single sample
    ``(C, H, W)`` or ``(C,)`` is treated as a batch of one.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import BatchNormalization
    >>> layer = BatchNormalization(2, dtype=np.float64)
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> layer.forward(x).round(4)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> layer.running_mean.value, layer.running_var.value
    (array([0.2, 2. ]), array([ 1.1, 20.9]))
    >>> grad_input = layer.backward(np.array([[1.0, 0.0], [0.0, 0.0]]))
    >>> layer.gamma.grad.round(4), layer.beta.grad
    (array([-1.,  0.]), array([1., 0.]))
    >>> layer.eval().forward(x).round(2)   # normalised by the running statistics
    array([[0.76, 1.75],
           [2.67, 6.12]])
    """

    def __init__(self, num_features=None, momentum=0.1, eps=1e-5, *, dtype=np.float32):
        super().__init__()
        self.momentum = as_real(momentum, "momentum", maximum=1.0)
        self.eps = as_real(eps, "eps")
        self.dtype = check_dtype(dtype)
        self.num_features = None
        self.gamma = self.beta = self.running_mean = self.running_var = None
        self.built = False
        if num_features is not None:
            self._allocate(as_int(num_features, "num_features", 1))

    def _allocate(self, num_features):
        self.num_features = num_features
        self.gamma = Parameter("gamma", initial_array(num_features, self.dtype, 1.0))
        self.beta = Parameter("beta", initial_array(num_features, self.dtype, 0.0))
        self.running_mean = Buffer("running_mean", initial_array(num_features, self.dtype, 0.0))
        self.running_var = Buffer("running_var", initial_array(num_features, self.dtype, 1.0))
        self.built = True

    def build(self, input_shape):
        """Samples of ``(C, H, W)`` or ``(C,)``: C is ``num_features``."""
        if input_shape is None:
            return None
        input_shape = tuple(input_shape)
        if len(input_shape) not in (1, 3):
            raise ValueError(f"BatchNormalization expects samples of shape (C, H, W) or (C,), "
                             f"got {input_shape}")
        if not self.built:
            self._allocate(input_shape[0])
        elif input_shape[0] != self.num_features:
            raise ValueError(f"BatchNormalization({self.num_features}) expects samples with "
                             f"{self.num_features} channels, got {input_shape}")
        return input_shape

    def parameters(self):
        return [] if self.gamma is None else [self.gamma, self.beta]

    def buffers(self):
        return [] if self.running_mean is None else [self.running_mean, self.running_var]

    def get_config(self):
        return dict(num_features=self.num_features, momentum=self.momentum, eps=self.eps,
                    dtype=self.dtype.name)

    def forward(self, input, *, _relu=False):
        # _relu: a model runs this layer and a ReLU after it as one (see
        # Container.forward); ``output`` then holds the ReLU's output.
        self._require_built()
        x = as_layer_input(input, self.dtype)
        if x.ndim not in (1, 2, 3, 4):
            raise ValueError(f"BatchNormalization expects input of shape {_LAYOUT}, "
                             f"got {x.shape}")
        self._had_batch = x.ndim in (2, 4)
        batch = x if self._had_batch else x[np.newaxis]
        if batch.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNormalization({self.num_features}) expects {self.num_features} "
                f"channels on axis {1 if self._had_batch else 0}, got input of shape {x.shape}")
        self._training_pass = self.training
        out, self._mean, self._invstd = _norm.batch_norm_forward(
            batch, self.gamma.value, self.beta.value, self.running_mean.value,
            self.running_var.value, self._training_pass, self.momentum, self.eps, relu=_relu)
        self.input = x
        self._batch = batch
        self.output = out if self._had_batch else out[0]
        return self.output

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        grad = as_layer_input(output_gradient, self.dtype, "output_gradient")
        check_gradient_shape(grad, self.output.shape, "BatchNormalization")
        grad_input, self.gamma.grad, self.beta.grad = _norm.batch_norm_backward_saved(
            grad if self._had_batch else grad[np.newaxis], self._batch, self.gamma.value,
            self._mean, self._invstd, self._training_pass)
        self.apply_learning_rate(learning_rate)
        if not self.needs_input_gradient:
            return None
        return grad_input if self._had_batch else grad_input[0]
