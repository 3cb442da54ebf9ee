"""The training loop behind :meth:`cyconv.Sequential.fit`, ``evaluate`` and
``predict``: mini-batches, callbacks, validation, the progress bar and the
per-epoch lines.

Everything fit is given is checked before the first weight changes: a
mistake found after an epoch would leave a half-trained model behind.
"""

import contextlib
import math
import numbers
import sys
import threading
import time
import warnings

import numpy as np

from .. import _memory
from .._autothreads import ThreadChooser
from .._validation import as_array, as_int
from ._hints import shape_hint
from .activations import Softmax
from .callbacks import check_callbacks
from .layer import check_learning_rate
from .losses import SoftmaxCrossEntropy, get_loss
from .optimizers import get_optimizer

__all__ = ["fit", "predict", "evaluate", "modes"]


@contextlib.contextmanager
def modes(model, training):
    """Run a block with ``model`` in training (True) or evaluation mode,
    then give every one of its layers back the mode it had.

    Threads that predict with one model at once share one evaluation
    block: the modes come back when the last of them leaves it.  (Training
    while another thread predicts with the same model is not supported:
    give each training thread its own model.)
    """
    lock = model.__dict__.get("_modes_lock") or model.__dict__.setdefault(
        "_modes_lock", threading.Lock())
    with lock:
        frames = model.__dict__.setdefault("_modes_frames", [])
        if frames and frames[-1]["training"] == training:
            frame = frames[-1]
            frame["users"] += 1
        else:
            frame = {"training": training, "users": 1, "saved": _modes_of(model)}
            frames.append(frame)
            model.train(training)
    try:
        yield
    finally:
        with lock:
            frame["users"] -= 1
            if frame["users"] == 0:
                for layer, mode in frame["saved"]:
                    layer.training = mode
                frames.remove(frame)


def _modes_of(model):
    pending, modes = [model], []
    while pending:
        layer = pending.pop()
        modes.append((layer, layer.training))
        pending.extend(layer.children())
    return modes


def batches(count, batch_size, order=None):
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        yield (slice(start, stop) if order is None else order[start:stop]), stop - start


def fit(model, x, y, epochs=1, batch_size=32, loss="softmax_cross_entropy", optimizer="adam",
        validation_data=None, shuffle=True, seed=None, verbose=True, augment=None,
        learning_rate_schedule=None, validation_split=0.0, callbacks=None, initial_epoch=0,
        distributed=False, comm=None):
    """Train ``model`` (a :class:`cyconv.Sequential`) on ``(x, y)``; see
    :meth:`cyconv.Sequential.fit`."""
    x, y = _training_arrays(model, x, y)
    epochs = as_int(epochs, "epochs", 1)
    batch_size = as_int(batch_size, "batch_size", 1)
    initial_epoch = _initial_epoch(initial_epoch, epochs)
    loss = get_loss(loss)
    check_loss_fits_model(model, loss)
    optimizer = get_optimizer(optimizer)
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2, False or True, got {verbose!r}")
    for hook, name in ((augment, "augment"), (learning_rate_schedule, "learning_rate_schedule")):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable, got {hook!r}")
    x, y, validation = _validation_arrays(model, x, y, validation_data, validation_split)
    callbacks = check_callbacks(callbacks)
    if seed is not None:
        _shuffle_seed(seed)  # its type and sign, before any rank talks to another
    _check_targets(model, loss, x, y, "x", "y")
    if validation is not None:
        _check_targets(model, loss, *validation, "validation x", "validation y")
    parallel = None
    if distributed:  # data parallel over MPI: one seed and rank 0's weights everywhere
        from ..distributed import DataParallel

        parallel = DataParallel(model, comm)
        seed = parallel.agree(seed, samples=len(x), batch_size=batch_size, epochs=epochs,
                              shuffle=bool(shuffle), initial_epoch=initial_epoch)
        parallel.broadcast()
        if not parallel.is_root:
            verbose = 0  # rank 0 alone prints
    seed = _shuffle_seed(seed)
    rng = _shuffle_generator(model, seed, initial_epoch)

    parameters = model.parameters()
    history = {"loss": [], "accuracy": [], "seconds": []}
    if validation is not None:
        history.update(val_loss=[], val_accuracy=[])
    steps = -(-len(x) // batch_size)
    # What the model remembers of its training (Keras keeps the first two
    # too): evaluate's default loss, the optimizer a checkpoint saves, and
    # the seed, epoch and random stream that let training resume where it
    # stopped.
    model.loss, model.optimizer, model.seed = loss, optimizer, seed
    model.stop_training = False
    # Callbacks run on every rank (their logs are the same everywhere), but
    # only rank 0 writes files.
    model.writes_files = parallel is None or parallel.is_root
    for callback in callbacks:
        callback.set_model(model)
        callback.set_params({"epochs": epochs, "steps": steps})
    progress = progress_bar((epochs - initial_epoch) * steps, verbose == 1)
    with modes(model, True), _closing(progress), ThreadChooser() as threads:
        for callback in callbacks:
            callback.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            logs = _epoch(model, x, y, validation, epoch, batch_size, loss, optimizer,
                          parameters, rng, shuffle, augment, learning_rate_schedule,
                          callbacks, progress, threads, parallel)
            for key, value in logs.items():
                if key in history:
                    history[key].append(value)
            model.epoch = epoch + 1
            model.shuffle_state = rng.bit_generator.state
            if verbose:
                progress.write(_epoch_line(epoch, epochs, history), file=sys.stdout)
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        for callback in callbacks:
            callback.on_train_end({})
    return history


@contextlib.contextmanager
def _closing(progress):
    try:
        yield progress
    finally:
        progress.close()


def _epoch(model, x, y, validation, epoch, batch_size, loss, optimizer, parameters, rng,
           shuffle, augment, learning_rate_schedule, callbacks, progress, threads,
           parallel=None):
    """One pass over ``(x, y)``; returns the epoch's logs.  With ``parallel``
    (a :class:`cyconv.distributed.DataParallel`), every rank walks the same
    global batches and computes its slice of each."""
    start = time.perf_counter()
    if learning_rate_schedule is not None:
        optimizer.learning_rate = check_learning_rate(learning_rate_schedule(epoch))
    for callback in callbacks:
        callback.on_epoch_begin(epoch, {})
    learning_rate = optimizer.learning_rate
    order = rng.permutation(len(x)) if shuffle else None
    total_loss, total_correct, counted, seen = 0.0, 0.0, 0, 0
    for step, (batch, size) in enumerate(batches(len(x), batch_size, order)):
        with _memory.reusing():  # a new batch of the same size every step
            xb, yb = x[batch], y[batch]
        if augment is not None:
            xb = augment(xb, rng)
        value, out, yb, size = threads.run(
            lambda: _step(model, loss, optimizer, parameters, xb, yb, size, parallel), size)
        total_loss += value * size
        seen += size
        accuracy = loss.accuracy(yb, out) if size else None
        if accuracy is not None:
            total_correct += accuracy * size
            counted += size
        progress.update(1)
        progress.set_postfix(loss=f"{value:.4f}", refresh=False)
        for callback in callbacks:
            callback.on_batch_end(step, {"loss": value, "size": size})
        if model.stop_training:
            break
    if parallel is not None:  # every rank's share of the epoch
        total_loss, total_correct, counted, seen = parallel.sum(
            (total_loss, total_correct, counted, seen))
    logs = {"loss": total_loss / seen,
            "accuracy": total_correct / counted if counted else None}
    if validation is not None:
        x_val, y_val = validation
        if parallel is None:
            scores = _scores(model, _outputs(model, x_val), y_val, loss)
        else:
            from ..distributed import evaluate

            scores = evaluate(model, x_val, y_val, loss, 256, parallel.comm)
        logs.update(val_loss=scores["loss"], val_accuracy=scores["accuracy"])
    logs["seconds"] = time.perf_counter() - start
    logs["learning_rate"] = learning_rate
    return logs


def _step(model, loss, optimizer, parameters, xb, yb, size, parallel):
    """One training step: ``(loss value, output, targets, samples)``."""
    # The same arrays every step, the loss's and the optimizer's too: their
    # memory is kept for the next (see cyconv/_memory.py).
    with _memory.reusing():
        if parallel is None:
            out = model.forward(xb)
            value, grad = loss.value_and_gradient(yb, out)
            model.backward(grad)
        else:  # this rank's slice; gradients and buffers averaged over ranks
            value, out, yb, size = parallel.forward_backward(model, loss, xb, yb)
        optimizer.step(parameters)
    return value, out, yb, size


def _shuffle_generator(model, seed, initial_epoch):
    """The random source of shuffling and augmentation.  Resuming at the
    epoch the model has reached (``initial_epoch == model.epoch``), it
    continues the stream the model kept (``model.shuffle_state``, saved in
    a checkpoint), so that the resumed run draws what an uninterrupted one
    would have; otherwise it starts from ``seed``."""
    rng = np.random.default_rng(seed)
    state = getattr(model, "shuffle_state", None)
    if initial_epoch and state is not None and initial_epoch == getattr(model, "epoch", None):
        rng.bit_generator.state = state
    return rng


def _shuffle_seed(seed):
    if seed is None:
        # A fresh seed, kept as model.seed for the record.
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None or a non-negative int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be None or a non-negative int, got {seed!r}")
    return int(seed)


def _initial_epoch(initial_epoch, epochs):
    if isinstance(initial_epoch, (bool, np.bool_)) or not isinstance(initial_epoch,
                                                                     numbers.Integral):
        raise TypeError(f"initial_epoch must be an int, got {initial_epoch!r}")
    if not 0 <= initial_epoch < epochs:
        raise ValueError(f"initial_epoch must be in [0, epochs) = [0, {epochs}) (epochs "
                         f"counts from the start, as in Keras), got {initial_epoch!r}")
    return int(initial_epoch)


def _training_arrays(model, x, y):
    x, y = _samples(model, x, y)
    check_input_shape(model, x, "x", batch=True)
    return x, y


def _samples(model, x, y, prefix=""):
    """``x`` in the model's dtype and ``y`` as an array, checked to hold
    the same, non-zero number of samples."""
    x_name, y_name = f"{prefix}x", f"{prefix}y"
    raw = as_array(x, x_name)
    warn_if_unscaled(raw, x_name)
    x = model._input_array(raw, x_name)
    y = as_array(y, y_name)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{x_name} and {y_name} must be arrays of samples, not scalars")
    if len(x) != len(y):
        raise ValueError(f"{x_name} and {y_name} must hold the same number of samples, got "
                         f"{len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{x_name} must hold at least one sample")
    return x, y


def _validation_arrays(model, x, y, validation_data, validation_split):
    """(x, y, (x_val, y_val) or None); ``validation_split`` keeps the last
    fraction of the samples (before any shuffling) aside, as Keras does."""
    if isinstance(validation_split, (bool, np.bool_)) or not isinstance(validation_split,
                                                                        numbers.Real):
        raise TypeError(f"validation_split must be a number in [0, 1), got "
                        f"{validation_split!r}")
    if not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if validation_split:
        if validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        split_at = int(math.floor(len(x) * (1 - validation_split)))
        if split_at in (0, len(x)):
            raise ValueError(f"validation_split={validation_split} of {len(x)} samples leaves "
                             f"{split_at} to train on and {len(x) - split_at} to validate; "
                             f"each needs at least one")
        return x[:split_at], y[:split_at], (x[split_at:], y[split_at:])
    if validation_data is None:
        return x, y, None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (x_val, y_val)")
    x_val, y_val = _samples(model, *validation_data, prefix="validation ")
    if x_val.shape[1:] != x.shape[1:]:
        raise ValueError(f"validation_data's samples have shape {x_val.shape[1:]}, the "
                         f"training samples {x.shape[1:]}")
    return x, y, (x_val, y_val)


def _check_targets(model, loss, x, y, x_name, y_name):
    """Check every target against the model's output: a wrong label (10
    among 10 classes) or shape fails now, not at the batch that holds it.
    The output's shape comes from the model's shape inference, or where
    that is unknown (layers of users' own), from one sample run through
    in eval mode."""
    shape = getattr(model, "output_shape", None)
    if shape is not None:
        out = np.zeros((1,) + tuple(shape), dtype=model.dtype or x.dtype)
    else:
        try:
            out = _outputs(model, x[:1])
        except ValueError as exc:
            raise ValueError(f"{x_name} does not fit the model: {exc}") from None
    try:
        loss.value_and_gradient(y, np.broadcast_to(out, (len(y),) + out.shape[1:]))
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{y_name} does not fit the model's output of shape "
                        f"{(len(y),) + out.shape[1:]} and the loss {loss!r}: {exc}") from None


def check_loss_fits_model(model, loss):
    """Refuse a final Softmax with softmax cross-entropy, which applies
    softmax itself: the model would apply it twice."""
    if isinstance(loss, SoftmaxCrossEntropy) and isinstance(model.layers[-1], Softmax):
        raise ValueError(
            "the model ends with a Softmax layer and the loss is softmax cross-entropy, "
            "which applies softmax itself: it would be applied twice (a wrong loss, and "
            "squashed gradients that train slowly). Remove the last Softmax: the model then "
            "gives logits, whose argmax is the class and cyconv.Softmax().forward(logits) "
            "the probabilities")


# Raw pixels reach 255; smaller integers are likelier counts or codes.
RAW_PIXEL_MAXIMUM = 32


def warn_if_unscaled(array, name):
    """Warn about what look like raw 0-255 pixels: integers reaching 32 or
    more, or floats that are whole numbers from 0 to 255 reaching 32."""
    if array.dtype.kind not in "iuf" or array.size == 0 or array.ndim < 2:
        return
    high = np.max(array)
    if not high >= RAW_PIXEL_MAXIMUM:
        return
    if array.dtype.kind == "f" and not (high <= 255 and np.min(array) >= 0
                                        and np.array_equal(array, np.round(array))):
        return
    warnings.warn(
        f"{name} holds {array.dtype} values up to {high:g}: raw 0-255 pixels? The network "
        f"would see them unscaled and train badly; scale them to [0, 1] first, e.g. with "
        f"cyconv.datasets.prepare_images(images)", UserWarning, stacklevel=_user_stacklevel())


def _user_stacklevel():
    """The stacklevel of the first caller outside cyconv, so that a warning
    names the user's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("cyconv."):
        frame, level = frame.f_back, level + 1
    return level


def check_input_shape(model, x, name="x", batch=False):
    """Check ``x`` against the first layer's sample shape, naming the shape
    the user passed and how to fix the usual mistakes (channels last, no
    channel axis)."""
    first = model.layers[0]
    sample = getattr(model, "input_shape", None) or getattr(first, "input_shape", None)
    if sample is None:
        return
    sample = tuple(sample)
    if x.shape[1:] == sample or (not batch and x.shape == sample):
        return
    dims = ", ".join(map(str, sample))
    accepted = f"(N, {dims})" if batch else f"(N, {dims}) or {sample}"
    raise ValueError(f"{type(first).__name__} expects input of shape {accepted}, got {name} "
                     f"of shape {x.shape}.{shape_hint(x.shape, sample)}")


def predict(model, x, batch_size=256):
    """``model``'s output for ``x``, in evaluation mode; see
    :meth:`cyconv.Sequential.predict`."""
    raw = as_array(x, "x")
    warn_if_unscaled(raw, "x")
    x = model._input_array(raw)
    check_input_shape(model, x)
    return _outputs(model, x, batch_size)


def _outputs(model, x, batch_size=256):
    """predict, in evaluation mode, for an ``x`` already converted and checked."""
    with modes(model, False):
        if model._is_single_sample(x):
            return model.forward(x)
        batch_size = as_int(batch_size, "batch_size", 1)
        if len(x) == 0:
            raise ValueError("x must hold at least one sample")
        return np.concatenate([model.forward(x[batch])
                               for batch, _ in batches(len(x), batch_size)])


def evaluate(model, x, y, loss=None, batch_size=256, distributed=False, comm=None):
    """Loss and accuracy of ``model`` on ``(x, y)``; see :meth:`cyconv.Sequential.evaluate`."""
    loss = evaluation_loss(model, loss)
    if distributed:
        from ..distributed import evaluate

        return evaluate(model, x, y, loss, batch_size, comm)
    return _scores(model, model.predict(x, batch_size), y, loss)


def evaluation_loss(model, loss=None):
    """The :class:`~cyconv.losses.Loss` to score ``model`` with: ``loss``,
    or when None the one the model was trained with (as Keras's compiled
    loss), else softmax cross-entropy; checked against the model."""
    if loss is None:
        loss = getattr(model, "loss", None) or "softmax_cross_entropy"
    loss = get_loss(loss)
    check_loss_fits_model(model, loss)
    return loss


def _scores(model, out, y, loss):
    y = as_array(y, "y")
    if len(out) != len(y):
        raise ValueError(f"x and y must hold the same number of samples, got "
                         f"{len(out)} and {len(y)}")
    return {"loss": loss(y, out), "accuracy": loss.accuracy(y, out)}


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
    def update(model, n):
        pass

    def set_postfix(model, **kwargs):
        pass

    def write(model, line, file=None):
        print(line, file=file)

    def close(model):
        pass


def progress_bar(total, verbose):
    if not verbose:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True)
