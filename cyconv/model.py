"""Sequential: a stack of layers trained with a loss and an optimizer, saved
to and loaded from a versioned ``.npz`` file."""

import inspect
import json
import numbers
import os
import secrets
import sys
import time

import numpy as np

from . import activations, layers
from ._layer import check_dtype, check_learning_rate
from ._validation import as_array, float_dtype
from .losses import get_loss
from .optimizers import get_optimizer

__all__ = ["Sequential"]

FORMAT_NAME = "cyconv.Sequential"
FORMAT_VERSION = 1

# The layers a model file may name: cyconv's own, never a class chosen by
# the file (loading must not run arbitrary code).
LAYER_TYPES = {
    cls.__name__: cls
    for module in (layers, activations)
    for cls in (getattr(module, name) for name in module.__all__)
}


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _batches(count, batch_size, order=None):
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        yield (slice(start, stop) if order is None else order[start:stop]), stop - start


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
        x = self._input_array(x)
        y = as_array(y, "y")
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError("x and y must be arrays of samples, not scalars")
        if len(x) != len(y):
            raise ValueError(f"x and y must hold the same number of samples, got "
                             f"{len(x)} and {len(y)}")
        if len(x) == 0:
            raise ValueError("x must hold at least one sample")
        epochs = _positive_int(epochs, "epochs")
        batch_size = _positive_int(batch_size, "batch_size")
        loss = get_loss(loss)
        optimizer = get_optimizer(optimizer)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
        for hook, name in ((augment, "augment"), (learning_rate_schedule, "learning_rate_schedule")):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable, got {hook!r}")
        rng = np.random.default_rng(seed)
        parameters = self.parameters()
        history = {"loss": [], "accuracy": [], "seconds": []}
        if validation_data is not None:
            history.update(val_loss=[], val_accuracy=[])
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1, 2, False or True, got {verbose!r}")
        progress = _progress_bar(epochs * -(-len(x) // batch_size), verbose == 1)
        try:
            for epoch in range(epochs):
                start = time.perf_counter()
                if learning_rate_schedule is not None:
                    optimizer.learning_rate = check_learning_rate(learning_rate_schedule(epoch))
                order = rng.permutation(len(x)) if shuffle else None
                total_loss, total_correct, counted = 0.0, 0.0, 0
                for batch, size in _batches(len(x), batch_size, order):
                    xb, yb = x[batch], y[batch]
                    if augment is not None:
                        xb = augment(xb, rng)
                    out = self.forward(xb)
                    value, grad = loss.value_and_gradient(yb, out)
                    self.backward(grad)
                    optimizer.step(parameters)
                    total_loss += value * size
                    accuracy = loss.accuracy(yb, out)
                    if accuracy is not None:
                        total_correct += accuracy * size
                        counted += size
                    progress.update(1)
                    progress.set_postfix(loss=f"{value:.4f}", refresh=False)
                history["loss"].append(total_loss / len(x))
                history["accuracy"].append(total_correct / counted if counted else None)
                if validation_data is not None:
                    scores = self.evaluate(*validation_data, loss=loss, batch_size=256)
                    history["val_loss"].append(scores["loss"])
                    history["val_accuracy"].append(scores["accuracy"])
                history["seconds"].append(time.perf_counter() - start)
                if verbose:
                    progress.write(_epoch_line(epoch, epochs, history), file=sys.stdout)
        finally:
            progress.close()
        return history

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
        x = self._input_array(x)
        if self._is_single_sample(x):
            return self.forward(x)
        batch_size = _positive_int(batch_size, "batch_size")
        if len(x) == 0:
            raise ValueError("x must hold at least one sample")
        return np.concatenate([self.forward(x[batch])
                               for batch, _ in _batches(len(x), batch_size)])

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
        loss = get_loss(loss)
        out = self.predict(x, batch_size)
        y = as_array(y, "y")
        if len(out) != len(y):
            raise ValueError(f"x and y must hold the same number of samples, got "
                             f"{len(out)} and {len(y)}")
        return {"loss": loss(y, out), "accuracy": loss.accuracy(y, out)}

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
        architecture = []
        arrays = {}
        for index, layer in enumerate(self.layers):
            name = type(layer).__name__
            if LAYER_TYPES.get(name) is not type(layer):
                raise TypeError(f"cannot save layer {index}: {name} is not one of cyconv's "
                                f"layers ({', '.join(LAYER_TYPES)})")
            architecture.append({"type": name, "config": layer.get_config()})
            for parameter in layer.parameters():
                arrays[f"layer{index}.{parameter.name}"] = parameter.value
        header = {
            "format": np.array(FORMAT_NAME),
            "format_version": np.array(FORMAT_VERSION),
            "architecture": np.array(json.dumps(architecture)),
        }
        path = os.fspath(path)
        # A new name beside the destination, so that os.replace is a rename
        # within one file system; opened with "x" (not tempfile.mkstemp) so
        # that the model gets the usual permissions of the user's umask.
        temporary = os.path.join(os.path.dirname(os.path.abspath(path)),
                                 f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            with open(temporary, "xb") as stream:
                np.savez(stream, **header, **arrays)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
        _sync_directory(os.path.dirname(os.path.abspath(path)))

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
        path = os.fspath(path)
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with loaded:
                # Reading every array here checks every CRC, so a damaged
                # file fails now rather than halfway through building.
                contents = {name: loaded[name] for name in loaded.files}
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as exc:
            raise ValueError(f"{path} is not a readable cyconv model file "
                             f"(corrupt or truncated?): {exc}") from None
        if "format" not in contents:
            raise ValueError(f"{path} is not a cyconv model file (no 'format' entry)")
        return cls._from_contents(contents, path)

    @classmethod
    def _from_contents(cls, contents, path):
        def text(name):
            value = contents.get(name)
            if value is None or value.shape != () or value.dtype.kind != "U":
                raise ValueError(f"{path} is not a cyconv model file: bad {name!r} entry")
            return str(value)

        if text("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a cyconv model file (format {text('format')!r})")
        version = contents.get("format_version")
        if version is None or version.shape != () or version.dtype.kind not in "iu":
            raise ValueError(f"{path} is not a cyconv model file: bad 'format_version' entry")
        if int(version) != FORMAT_VERSION:
            raise ValueError(f"{path} has model format version {int(version)}; this cyconv "
                             f"reads version {FORMAT_VERSION}")
        try:
            architecture = json.loads(text("architecture"))
            built = [_build_layer(entry) for entry in architecture]
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path} has an invalid architecture: {exc}") from None
        model = cls(built)
        expected = set()
        for index, layer in enumerate(model.layers):
            for parameter in layer.parameters():
                key = f"layer{index}.{parameter.name}"
                expected.add(key)
                saved = contents.get(key)
                if saved is None:
                    raise ValueError(f"{path} does not fit its architecture: no weights {key!r}")
                if saved.shape != parameter.value.shape or saved.dtype != parameter.value.dtype:
                    raise ValueError(
                        f"{path} does not fit its architecture: {key} is {saved.dtype} "
                        f"{saved.shape}, the layer needs {parameter.value.dtype} "
                        f"{parameter.value.shape}")
                parameter.value[...] = saved
        extra = set(contents) - expected - {"format", "format_version", "architecture"}
        if extra:
            raise ValueError(f"{path} does not fit its architecture: unexpected arrays "
                             f"{sorted(extra)}")
        return model

    # -- other formats (optional extras, imported on use) ---------------------

    def to_onnx(self, path, input_shape=None):
        """Write the model as an ONNX graph for onnxruntime and other runtimes.

        Needs ``pip install "cyconv[onnx]"``; see :mod:`cyconv.onnx` for the
        operators each layer becomes.  The graph computes :meth:`predict`'s
        outputs (eval mode), in float32, for any batch size.

        Examples
        --------
        >>> import os, tempfile
        >>> from cyconv import Sequential, Dense
        >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
        >>> Sequential([Dense(3, 2, rng=0)]).to_onnx(path)
        >>> os.path.getsize(path) > 0
        True
        """
        from .onnx import export

        export(self, path, input_shape=input_shape)

    def load_weights(self, path):
        """Read weights saved from PyTorch (or :meth:`save_weights`) in a
        ``.safetensors`` file, by ``state_dict`` name: ``"<index>.weight"``
        and so on.  Needs ``pip install "cyconv[safetensors]"``; see
        :mod:`cyconv.weights`.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from cyconv import Sequential, Dense, ReLU
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> Sequential([Dense(3, 2, rng=0), ReLU()]).save_weights(path)
        >>> model = Sequential([Dense(3, 2, rng=1), ReLU()])
        >>> model.load_weights(path)
        >>> np.array_equal(model.layers[0].weights, Dense(3, 2, rng=0).weights)
        True
        """
        from .weights import load_weights

        load_weights(self, path)

    def save_weights(self, path):
        """Write the weights to a ``.safetensors`` file that PyTorch's
        ``load_state_dict`` takes for the same ``nn.Sequential`` (see
        :meth:`load_weights`)."""
        from .weights import save_weights

        save_weights(self, path)


def _sync_directory(directory):
    """Make the rename itself durable.  The file's bytes were synced before
    it was renamed; on POSIX the new name reaches the disk with the
    directory, which takes a sync of its own.  Without it, a power cut
    soon after save could bring back the previous model (never a broken
    one).  Best effort: the model is saved whatever this returns."""
    if os.name != "posix":
        return
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(descriptor)


def _build_layer(entry):
    if not isinstance(entry, dict) or set(entry) != {"type", "config"}:
        raise ValueError(f"each layer must be {{'type': ..., 'config': ...}}, got {entry!r}")
    layer_type = LAYER_TYPES.get(entry["type"])
    if layer_type is None:
        raise ValueError(f"unknown layer type {entry['type']!r}")
    config = entry["config"]
    if not isinstance(config, dict):
        raise ValueError(f"the config of a {entry['type']} layer must be a dict")
    if "dtype" in config:
        config = dict(config, dtype=check_dtype(config["dtype"]))
    if "rng" in inspect.signature(layer_type).parameters:
        # The weights are overwritten from the file: draw the initial ones
        # from a fixed source rather than from the global random state.
        config = dict(config, rng=0)
    return layer_type(**config)


def _epoch_line(epoch, epochs, history):
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {history['loss'][-1]:.4f}"]
    if history["accuracy"][-1] is not None:
        parts.append(f"accuracy {100 * history['accuracy'][-1]:.2f}%")
    if "val_loss" in history:
        parts.append(f"val_loss {history['val_loss'][-1]:.4f}")
        if history["val_accuracy"][-1] is not None:
            parts.append(f"val_accuracy {100 * history['val_accuracy'][-1]:.2f}%")
    parts.append(f"{history['seconds'][-1]:.1f} s")
    return "  ".join(parts)


class _NoProgress:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def write(self, line, file=None):
        print(line, file=file)

    def close(self):
        pass


def _progress_bar(total, verbose):
    if not verbose:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True)

