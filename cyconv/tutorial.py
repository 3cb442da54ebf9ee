"""The "CNN from scratch" tutorial's own names, so that its scripts run on
cyconv with only their imports changed.

The tutorial spreads its code over ``dense.py``, ``convolutional.py``,
``reshape.py``, ``activations.py``, ``losses.py`` and ``network.py``; here
they are in one place:

- layers: ``Dense``, ``Convolutional`` (cyconv's :class:`~cyconv.Convolution`),
  ``Reshape``, ``Sigmoid``, ``Tanh``, ``Softmax``, ``ReLU``, ``MaxPooling``;
- losses: ``mse``, ``mse_prime``, ``binary_cross_entropy``,
  ``binary_cross_entropy_prime`` (the same means as the tutorial's);
- ``to_categorical(y)``, Keras's one-hot helper that the tutorial imports;
- ``train(network, loss, loss_prime, x_train, y_train, epochs, learning_rate)``
  and ``predict(network, input)``: its loop, one sample at a time, each
  layer's ``backward(grad, learning_rate)`` taking a plain gradient step.

The network is a list of layers, as in the tutorial, or a
:class:`~cyconv.Sequential`.  One difference: cyconv's ``Convolutional``
learns one bias per filter, where the tutorial's learns one per output pixel.

Examples
--------
The tutorial's XOR network:

>>> import numpy as np
>>> from cyconv.tutorial import Dense, Tanh, mse, mse_prime, train, predict
>>> np.random.seed(0)
>>> X = np.reshape([[0, 0], [0, 1], [1, 0], [1, 1]], (4, 2, 1)).astype(float)
>>> Y = np.reshape([[0], [1], [1], [0]], (4, 1, 1)).astype(float)
>>> network = [Dense(2, 3, dtype=np.float64), Tanh(), Dense(3, 1, dtype=np.float64), Tanh()]
>>> train(network, mse, mse_prime, X, Y, epochs=1000, learning_rate=0.1, verbose=False)
>>> [round(float(predict(network, x)[0, 0])) for x in X]
[0, 1, 1, 0]
"""

import numpy as np

from .nn import Convolution, Dense, MaxPooling, ReLU, Reshape, Sigmoid, Softmax, Tanh
from .nn.layer import check_learning_rate
from .nn.losses import binary_cross_entropy, binary_cross_entropy_prime, mse, mse_prime

__all__ = [
    "Convolutional",
    "Dense",
    "MaxPooling",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "binary_cross_entropy",
    "binary_cross_entropy_prime",
    "mse",
    "mse_prime",
    "predict",
    "to_categorical",
    "train",
]

#: The tutorial's name for :class:`cyconv.Convolution`.
Convolutional = Convolution


def _layers(network):
    layers = getattr(network, "layers", network)
    try:
        layers = list(layers)
    except TypeError:
        raise TypeError(f"network must be a list of layers or a Sequential, "
                        f"got {type(network).__name__}") from None
    for index, layer in enumerate(layers):
        if not (callable(getattr(layer, "forward", None))
                and callable(getattr(layer, "backward", None))):
            raise TypeError(f"layer {index} ({layer!r}) has no forward and backward methods")
    return layers


def to_categorical(y, num_classes=None):
    """One-hot rows for integer class labels, as ``keras.utils.to_categorical``.

    Examples
    --------
    >>> from cyconv.tutorial import to_categorical
    >>> to_categorical([0, 2, 1])
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]], dtype=float32)
    """
    labels = np.asarray(y)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class labels, got dtype {labels.dtype}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"y must be in [0, {num_classes}), got values from {labels.min()} "
                         f"to {labels.max()}")
    return np.eye(num_classes, dtype=np.float32)[labels]


def predict(network, input):
    """Run ``input`` through every layer of ``network`` in turn.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.tutorial import Dense, predict
    >>> layer = Dense(2, 1, dtype=np.float64)
    >>> layer.weight.value[...] = [[1.0, 2.0]]
    >>> predict([layer], np.array([[1.0], [1.0]]))
    array([[3.]])
    """
    output = input
    for layer in _layers(network):
        output = layer.forward(output)
    return output


def train(network, loss, loss_prime, x_train, y_train, epochs=1000, learning_rate=0.01,
          verbose=True):
    """The tutorial's training loop: for each sample in turn, forward, the
    loss, and backward through every layer with ``learning_rate`` (plain
    gradient descent, one sample at a time).

    Parameters
    ----------
    network : list of layers or Sequential
    loss, loss_prime : callable
        ``loss(y_true, y_pred)`` and its gradient with respect to ``y_pred``.
    x_train, y_train : sequences of samples
    epochs : int, default 1000
    learning_rate : float, default 0.01
    verbose : bool, default True
        Print ``"{epoch}/{epochs}, error={mean loss}"`` after each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.tutorial import Dense, mse, mse_prime, train
    >>> layer = Dense(1, 1, dtype=np.float64, rng=0)
    >>> train([layer], mse, mse_prime, [[1.0]], [[2.0]], epochs=3,
    ...       learning_rate=0.1)  # doctest: +ELLIPSIS
    1/3, error=...
    2/3, error=...
    3/3, error=...
    """
    layers = _layers(network)
    check_learning_rate(learning_rate)
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train and y_train must hold the same number of samples, got "
                         f"{len(x_train)} and {len(y_train)}")
    if len(x_train) == 0:
        raise ValueError("x_train must hold at least one sample")
    for epoch in range(epochs):
        error = 0.0
        for x, y in zip(x_train, y_train):
            output = predict(layers, x)
            error += loss(y, output)
            grad = loss_prime(y, output)
            for layer in reversed(layers):
                grad = layer.backward(grad, learning_rate)
        error /= len(x_train)
        if verbose:
            print(f"{epoch + 1}/{epochs}, error={error}")
