"""The training loop behind :meth:`cyconv.Sequential.fit`, ``evaluate`` and
``predict``: mini-batches, the progress bar and the per-epoch lines."""

import contextlib
import sys
import threading
import time

import numpy as np

from .._validation import as_array, as_int
from .layer import check_learning_rate
from .losses import get_loss
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
        learning_rate_schedule=None):
    """Train ``model`` (a :class:`cyconv.Sequential`) on ``(x, y)``; see
    :meth:`cyconv.Sequential.fit`."""
    x = model._input_array(x)
    y = as_array(y, "y")
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("x and y must be arrays of samples, not scalars")
    if len(x) != len(y):
        raise ValueError(f"x and y must hold the same number of samples, got "
                         f"{len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError("x must hold at least one sample")
    epochs = as_int(epochs, "epochs", 1)
    batch_size = as_int(batch_size, "batch_size", 1)
    loss = get_loss(loss)
    optimizer = get_optimizer(optimizer)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val)")
    for hook, name in ((augment, "augment"), (learning_rate_schedule, "learning_rate_schedule")):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable, got {hook!r}")
    rng = np.random.default_rng(seed)
    parameters = model.parameters()
    history = {"loss": [], "accuracy": [], "seconds": []}
    if validation_data is not None:
        history.update(val_loss=[], val_accuracy=[])
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2, False or True, got {verbose!r}")
    progress = progress_bar(epochs * -(-len(x) // batch_size), verbose == 1)
    with modes(model, True):
        try:
            for epoch in range(epochs):
                start = time.perf_counter()
                if learning_rate_schedule is not None:
                    optimizer.learning_rate = check_learning_rate(learning_rate_schedule(epoch))
                order = rng.permutation(len(x)) if shuffle else None
                total_loss, total_correct, counted = 0.0, 0.0, 0
                for batch, size in batches(len(x), batch_size, order):
                    xb, yb = x[batch], y[batch]
                    if augment is not None:
                        xb = augment(xb, rng)
                    out = model.forward(xb)
                    value, grad = loss.value_and_gradient(yb, out)
                    model.backward(grad)
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
                    scores = model.evaluate(*validation_data, loss=loss, batch_size=256)
                    history["val_loss"].append(scores["loss"])
                    history["val_accuracy"].append(scores["accuracy"])
                history["seconds"].append(time.perf_counter() - start)
                if verbose:
                    progress.write(_epoch_line(epoch, epochs, history), file=sys.stdout)
        finally:
            progress.close()
    return history



def predict(model, x, batch_size=256):
    """``model``'s output for ``x``, in evaluation mode; see
    :meth:`cyconv.Sequential.predict`."""
    x = model._input_array(x)
    with modes(model, False):
        if model._is_single_sample(x):
            return model.forward(x)
        batch_size = as_int(batch_size, "batch_size", 1)
        if len(x) == 0:
            raise ValueError("x must hold at least one sample")
        return np.concatenate([model.forward(x[batch])
                               for batch, _ in batches(len(x), batch_size)])


def evaluate(model, x, y, loss="softmax_cross_entropy", batch_size=256):
    """Loss and accuracy of ``model`` on ``(x, y)``; see :meth:`cyconv.Sequential.evaluate`."""
    loss = get_loss(loss)
    out = model.predict(x, batch_size)
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

