"""Sequential: a stack of layers trained with a loss and an optimizer, saved
to and loaded from a versioned ``.npz`` file.

The training loop lives in :mod:`cyconv.nn.training`, the file format in
:mod:`cyconv.nn.serialization`; this module is the network itself."""

import numpy as np

from .._validation import as_array, float_dtype
from . import serialization, training

__all__ = ["Sequential"]


class Sequential:
    """Layers applied one after another, with a training loop.

    Parameters
    ----------
    layers : list of Layer
        The first layer's ``needs_input_gradient`` is set to False: no one
        needs the gradient with respect to the model's input, and skipping
        it saves a convolution's most expensive backward product.

    Examples
    --------
    Train a small classifier of 4 x 4 images: is the bright pixel on the
    left or the right?

    >>> import numpy as np
    >>> from cyconv import Sequential, Convolution, ReLU, Flatten, Dense
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((64, 1, 4, 4)) * 0.1
    >>> y = rng.integers(0, 2, 64)
    >>> x[np.arange(64), 0, rng.integers(0, 4, 64), 3 * y] = 1.0
    >>> model = Sequential([
    ...     Convolution((1, 4, 4), 3, 4, padding=1, rng=rng), ReLU(),
    ...     Flatten(), Dense(64, 2, rng=rng),
    ... ])
    >>> history = model.fit(x, y, epochs=20, batch_size=16, loss="softmax_cross_entropy",
    ...                     optimizer="adam", seed=0, verbose=False)
    >>> history["accuracy"][-1]
    1.0
    >>> model.predict(x[:3]).shape
    (3, 2)
    """

    def __init__(self, layers):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for index, layer in enumerate(layers):
            if not (callable(getattr(layer, "forward", None))
                    and callable(getattr(layer, "backward", None))):
                raise TypeError(f"layer {index} ({layer!r}) has no forward and backward methods")
        self.layers = layers
        layers[0].needs_input_gradient = False

    def __repr__(self):
        inner = ",\n".join(f"    {layer!r}" for layer in self.layers)
        return f"Sequential([\n{inner},\n])"

    # -- the network ------------------------------------------------------

    def parameters(self):
        """Every layer's trainable parameters, in order."""
        return [p for layer in self.layers
                for p in (layer.parameters() if hasattr(layer, "parameters") else [])]

    @property
    def dtype(self):
        """The dtype of the parameters (None when there are none)."""
        parameters = self.parameters()
        return parameters[0].value.dtype if parameters else None

    def _input_array(self, x, name="x"):
        """``x`` in the dtype the model computes in: its parameters', or
        without parameters, the package's dtype policy."""
        array = as_array(x, name)
        policy = float_dtype(array, name)
        return np.asarray(array, dtype=self.dtype or policy)

    def _is_single_sample(self, x):
        sample_shape = getattr(self.layers[0], "input_shape", None)
        return sample_shape is not None and x.ndim == len(sample_shape)

    def forward(self, input):
        """Run every layer's ``forward``; a single sample gets a single output."""
        x = self._input_array(input, "input")
        single = self._is_single_sample(x)
        out = x[np.newaxis] if single else x
        for layer in self.layers:
            out = layer.forward(out)
        return out[0] if single else out

    def backward(self, output_gradient, learning_rate=None):
        """Run every layer's ``backward`` in reverse (see :meth:`Layer.backward`).

        Returns None: the first layer does not compute its input gradient.
        """
        grad = output_gradient
        for layer in reversed(self.layers):
            grad = layer.backward(grad, learning_rate)
        return grad

    # -- training and inference --------------------------------------------

    def fit(self, x, y, epochs=1, batch_size=32, loss="softmax_cross_entropy",
            optimizer="adam", validation_data=None, shuffle=True, seed=None, verbose=True,
            augment=None, learning_rate_schedule=None):
        """Train the model on ``(x, y)`` by mini-batch gradient descent.

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Inputs, cast to the model's dtype.
        y : array_like, shape (N, ...)
            Targets, as the loss wants them (integer labels for
            ``"softmax_cross_entropy"``).
        epochs, batch_size : int
        loss : str or cyconv.losses.Loss, default "softmax_cross_entropy"
            ``"softmax_cross_entropy"`` (the last layer gives logits),
            ``"binary_cross_entropy"`` or ``"mse"``.
        optimizer : str or cyconv.optimizers.Optimizer, default "adam"
            ``"adam"``, ``"sgd"`` (default settings) or an instance.
        validation_data : tuple (x_val, y_val), optional
            Evaluated after every epoch.
        shuffle : bool, default True
            Visit the samples in a new random order every epoch.
        seed : int, optional
            Seed of the shuffling.  With a seed (and layers built from a
            seeded ``rng``) training is reproducible bit for bit, whatever
            :func:`cyconv.set_num_threads` says.
        verbose : {1, 2, 0} or bool, default True
            1 or True: a progress bar (stderr) and one line per epoch
            (stdout); 2: only the lines; 0 or False: silence.
        augment : callable, optional
            ``augment(x_batch, rng)`` returns a transformed training batch
            (see :class:`cyconv.datasets.RandomShift`); ``rng`` is the
            seeded Generator that also shuffles.
        learning_rate_schedule : callable, optional
            ``learning_rate_schedule(epoch)`` (from 0) gives the optimizer's
            learning rate for that epoch.

        Returns
        -------
        history : dict of lists
            Per epoch: ``"loss"``, ``"accuracy"``, ``"seconds"``, and
            ``"val_loss"``, ``"val_accuracy"`` with validation data.
            Accuracies are None where the loss has no notion of class.
        """
        return training.fit(self, x, y, epochs, batch_size, loss, optimizer, validation_data,
                            shuffle, seed, verbose, augment, learning_rate_schedule)

    def predict(self, x, batch_size=256):
        """Return the last layer's output for ``x`` (a batch or one sample).

        With a softmax cross-entropy model these are logits: ``argmax``
        gives the class, :class:`cyconv.Softmax` the probabilities.

        Examples
        --------
        >>> import numpy as np
        >>> from cyconv import Sequential, Dense, Softmax
        >>> model = Sequential([Dense(3, 2, rng=0), Softmax()])
        >>> model.predict(np.ones((5, 3))).shape
        (5, 2)
        >>> model.predict(np.ones(3)).shape   # one sample
        (2,)
        """
        return training.predict(self, x, batch_size)

    def evaluate(self, x, y, loss="softmax_cross_entropy", batch_size=256):
        """Return ``{"loss": float, "accuracy": float or None}`` on ``(x, y)``.

        Examples
        --------
        >>> import numpy as np
        >>> from cyconv import Sequential, Dense
        >>> model = Sequential([Dense(2, 2, dtype=np.float64)])
        >>> model.layers[0].weight.value[...] = np.eye(2)
        >>> model.evaluate(np.array([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]]), [0, 1, 1])["accuracy"]
        0.6666666666666666
        """
        return training.evaluate(self, x, y, loss, batch_size)

    # -- files --------------------------------------------------------------

    def save(self, path):
        """Write the architecture and weights to ``path`` (an ``.npz`` file).

        The file is written beside its destination and renamed over it, so
        an interrupted save never leaves a half-written model behind.  Only
        cyconv's built-in layers can be saved.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from cyconv import Sequential, Dense, ReLU
        >>> model = Sequential([Dense(3, 2, rng=0), ReLU()])
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> model.save(path)
        >>> again = Sequential.load(path)
        >>> np.array_equal(again.layers[0].weights, model.layers[0].weights)
        True
        """
        serialization.save(self, path)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is corrupt or truncated, not a cyconv model, of
            another format version, or its weights do not fit its
            architecture.
        """
        return serialization.load(cls, path)
