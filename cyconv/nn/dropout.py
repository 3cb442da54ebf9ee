"""Dropout: random zeroing in training mode, the identity in eval mode."""

import numpy as np

from .._validation import as_real
from .layer import (
    ShapePreserving,
    as_float_input,
    as_layer_input,
    check_gradient_shape,
    check_unused_learning_rate,
    random_source,
)

__all__ = ["Dropout"]


class Dropout(ShapePreserving):
    """Inverted dropout, as ``torch.nn.Dropout``.

    In training mode each element is zeroed with probability ``rate`` and
    the others are scaled by ``1 / (1 - rate)``, so that the expected output
    is the input and eval mode needs no rescaling: there the layer is the
    identity.  ``backward`` applies the same mask and scale to the gradient.

    Parameters
    ----------
    rate : float in [0, 1], default 0.5
        The probability of zeroing an element.  At 1 every element is
        zeroed (and the gradient too), as in PyTorch.
    rng : None, int or numpy Generator, optional, keyword-only
        Source of the masks: an int seed makes them reproducible; None draws
        from numpy's global random state (so ``np.random.seed`` works).

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Dropout
    >>> layer = Dropout(0.5, rng=0)
    >>> out = layer.forward(np.ones((2, 4)))
    >>> sorted(set(out.ravel().tolist()))   # zeroed, or scaled by 1 / (1 - 0.5)
    [0.0, 2.0]
    >>> bool(np.all(layer.backward(np.ones((2, 4))) == out))   # the same mask
    True
    >>> layer.eval().forward(np.ones((2, 4)))
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """

    def __init__(self, rate=0.5, *, rng=None):
        super().__init__()
        self.rate = as_real(rate, "rate", maximum=1.0)
        self._rng = random_source(rng)
        self._mask = None

    def get_config(self):
        return {"rate": self.rate}

    def forward(self, input):
        x = as_float_input(input)
        self.input = x
        if not self.training or self.rate == 0:
            self._mask = None
            self.output = x
            return x
        # The kept elements are the draws at or above the rate, so that a
        # rate of 0 keeps all and of 1 none; the mask holds the scale.
        keep = self._rng.random(x.shape) >= self.rate
        scale = 0.0 if self.rate == 1 else 1.0 / (1.0 - self.rate)
        self._mask = keep * x.dtype.type(scale)
        self.output = x * self._mask
        return self.output

    def backward(self, output_gradient, learning_rate=None):
        self._require_forward()
        check_unused_learning_rate(learning_rate)
        grad = as_layer_input(output_gradient, self.output.dtype, "output_gradient")
        check_gradient_shape(grad, self.output.shape, "Dropout")
        if not self.needs_input_gradient:
            return None
        return grad if self._mask is None else grad * self._mask
