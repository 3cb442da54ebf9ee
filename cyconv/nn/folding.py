"""Batch normalisation folded into the layer before it, for inference.

In eval mode a :class:`BatchNormalization` is an affine map per channel,
``y * scale + shift`` with ``scale = gamma / sqrt(running_var + eps)`` and
``shift = beta - running_mean * scale``; after a :class:`Convolution` or
:class:`Dense` layer it can be applied to that layer's weight and bias
instead, so that inference makes one pass where it made two (and a
Convolution, BatchNormalization, ReLU becomes a Convolution that stores
its ReLU, see :class:`Container`).
"""

import copy

import numpy as np

from .containers import Container, Sequential
from .conv import Convolution
from .dense import Dense
from .layer import Parameter
from .normalization import BatchNormalization

__all__ = ["fold_batch_norm"]

# Exact types, as the containers' fusions: a subclass may compute
# something else.
_FOLDS_INTO = (Convolution, Dense)


def fold_batch_norm(model):
    """A copy of ``model`` for inference, with every BatchNormalization
    that follows a Convolution or Dense layer folded into that layer.

    Each such pair becomes one layer of the first one's type, whose weight
    and bias are (computed in float64, then rounded to the layer's dtype)::

        scale  = gamma / sqrt(running_var + eps)
        weight = weight * scale          (per output channel)
        bias   = (bias - running_mean) * scale + beta

    (a layer created with ``bias=False`` gets one).  The copy computes
    what ``model`` computes in eval mode, up to rounding: the folded
    weights are rounded once, where the model rounds the layer's output
    and the normalisation's.  It is returned in eval mode; ``model`` is
    not changed.  Layers nested in :class:`Residual` blocks and inner
    containers are folded too; a BatchNormalization after any other layer
    stays as it is.  A :class:`Sequential` copy keeps its loss but no
    optimizer state (its parameters are not the model's).

    Parameters
    ----------
    model : Container
        A built model (:class:`Sequential` or :class:`Residual`).

    Returns
    -------
    Container
        The folded copy, of ``model``'s type.

    Raises
    ------
    TypeError
        If ``model`` is not a container.
    ValueError
        If a layer to fold is not built yet, or a running variance plus
        ``eps`` is not positive and finite (the normalisation divides by
        its square root).

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Sequential, Convolution, BatchNormalization, ReLU
    >>> from cyconv.nn import fold_batch_norm
    >>> model = Sequential([Convolution((1, 6, 6), 3, 4, rng=0), BatchNormalization(),
    ...                     ReLU()], input_shape=(1, 6, 6))
    >>> model.layers[1].running_var.value[:] = 4.0   # as training leaves them
    >>> folded = fold_batch_norm(model)
    >>> [type(layer).__name__ for layer in folded.layers]
    ['Convolution', 'ReLU']
    >>> x = np.random.default_rng(1).random((2, 1, 6, 6), dtype=np.float32)
    >>> bool(np.allclose(folded.predict(x), model.eval().predict(x), rtol=1e-5, atol=1e-6))
    True
    """
    if not isinstance(model, Container):
        raise TypeError(f"fold_batch_norm takes a model (Sequential or Residual), "
                        f"got {type(model).__name__}")
    folded = copy.deepcopy(model)
    changed = False
    # A list, not recursion, as every walk over a model.
    pending = [folded]
    while pending:
        container = pending.pop()
        layers = _folded_layers(container)
        if layers is not None:
            container._replace_layers(layers)
            changed = True
        pending.extend(layer for layer in container.layers if isinstance(layer, Container))
    if changed and isinstance(folded, Sequential):
        folded.optimizer = None
    return folded.eval()


def _folded_layers(container):
    """The container's layers with each foldable pair made one (folding
    the copy's layers in place), or None where there is none."""
    layers, result, i = container.layers, [], 0
    while i < len(layers):
        layer = layers[i]
        if (type(layer) in _FOLDS_INTO and i + 1 < len(layers)
                and type(layers[i + 1]) is BatchNormalization):
            _fold(layer, layers[i + 1], f"layers {i} and {i + 1} of {type(container).__name__}")
            i += 2
        else:
            i += 1
        result.append(layer)
    return result if len(result) < len(layers) else None


def _fold(layer, norm, where):
    if layer.weight is None or norm.gamma is None:
        raise ValueError(f"{where} ({type(layer).__name__}, BatchNormalization) are not built "
                         f"yet: give the model its input shape, or run it once, before folding")
    variance = norm.running_var.value.astype(np.float64) + norm.eps
    if not (np.all(np.isfinite(variance)) and np.all(variance > 0)):
        raise ValueError(f"{where}: BatchNormalization's running_var + eps must be positive "
                         f"and finite to fold it")
    scale = norm.gamma.value.astype(np.float64) / np.sqrt(variance)
    weight = layer.weight.value
    # along the output channels: axis 0 of (F, C, kh, kw) and of (out, in)
    per_channel = scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    weight[...] = weight.astype(np.float64) * per_channel
    bias = 0.0 if layer.bias is None else layer.bias.value.astype(np.float64)
    mean = norm.running_mean.value.astype(np.float64)
    folded_bias = ((bias - mean) * scale + norm.beta.value.astype(np.float64)).astype(weight.dtype)
    if layer.bias is None:
        layer._has_bias = True
        layer.bias = Parameter("bias", folded_bias)
    else:
        layer.bias.value[...] = folded_bias
