"""Callbacks: code that :meth:`cyconv.Sequential.fit` calls as training
goes, with Keras's names and semantics, and learning-rate schedules with
PyTorch's formulas.

A callback subclasses :class:`Callback` and overrides what it needs.  fit
sets ``callback.model`` (the model, whose ``optimizer`` attribute is the
optimizer in use) and ``callback.params`` (``epochs``, ``steps``) before
``on_train_begin``, and stops after the current batch once a callback sets
``model.stop_training = True``.

Examples
--------
Random labels: the validation loss soon stops falling.

>>> import numpy as np
>>> from cyconv import Sequential, Dense, ReLU, Adam
>>> from cyconv.nn.callbacks import EarlyStopping
>>> rng = np.random.default_rng(0)
>>> x, y = rng.standard_normal((64, 4)), rng.integers(0, 2, 64)
>>> model = Sequential([Dense(4, 32, rng=0), ReLU(), Dense(32, 2, rng=1)])
>>> stop = EarlyStopping(patience=2, restore_best_weights=True)
>>> history = model.fit(x, y, epochs=50, validation_split=0.25, optimizer=Adam(0.01),
...                     seed=0, verbose=False, callbacks=[stop])
>>> len(history["loss"]), stop.best_epoch    # stopped after 9 epochs; the 7th was best
(9, 6)
"""

import math
import os
import sys
import warnings

import numpy as np

from .layer import check_learning_rate

__all__ = [
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "StepLR",
    "CosineAnnealingLR",
    "ReduceLROnPlateau",
    "LambdaCallback",
]


class Callback:
    """Base class: every hook does nothing.

    Attributes
    ----------
    model : Sequential
        Set by ``fit`` before training begins.
    params : dict
        ``{"epochs": ..., "steps": ...}`` (steps: batches per epoch).

    Examples
    --------
    >>> from cyconv.nn.callbacks import Callback
    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         print(f"epoch {epoch}: {logs['loss']:.2f}")
    """

    model = None
    params = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        """Before the first epoch."""

    def on_train_end(self, logs=None):
        """After the last epoch, or after ``stop_training``."""

    def on_epoch_begin(self, epoch, logs=None):
        """Before epoch ``epoch`` (counted from 0)."""

    def on_epoch_end(self, epoch, logs=None):
        """After epoch ``epoch``; ``logs`` holds its ``loss``, ``accuracy``,
        ``val_loss``, ``val_accuracy`` (with validation data), ``seconds``
        and ``learning_rate``."""

    def on_batch_end(self, batch, logs=None):
        """After each gradient step; ``logs`` holds the batch's ``loss`` and
        ``size``."""


class LambdaCallback(Callback):
    """A callback from plain functions, as Keras's ``LambdaCallback``.

    Examples
    --------
    >>> from cyconv.nn.callbacks import LambdaCallback
    >>> seen = []
    >>> callback = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    >>> callback.on_epoch_end(3, {}); seen
    [3]
    """

    def __init__(self, on_train_begin=None, on_train_end=None, on_epoch_begin=None,
                 on_epoch_end=None, on_batch_end=None):
        hooks = dict(on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_batch_end=on_batch_end)
        for name, hook in hooks.items():
            if hook is not None:
                if not callable(hook):
                    raise TypeError(f"{name} must be callable, got {hook!r}")
                setattr(self, name, hook)


def _check_mode(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        # Keras's rule: accuracies (and AUC) grow, everything else shrinks.
        return "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    return mode


def _check_monitor(monitor):
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"monitor must be the name of a logged quantity, got {monitor!r}")
    return monitor


def _non_negative_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _non_negative(value, name):
    value = _finite(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _finite(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _monitored(logs, monitor, who):
    value = (logs or {}).get(monitor)
    if value is None:
        available = ", ".join(sorted(k for k, v in (logs or {}).items() if v is not None))
        warnings.warn(f"{who} monitors {monitor!r}, which is not logged (available: "
                      f"{available}); pass validation_data or validation_split to fit for "
                      f"the val_ quantities", RuntimeWarning, stacklevel=3)
        return None
    return float(value)


def _weights(model):
    """A copy of every array that training changes: parameters and buffers."""
    arrays = [p.value for p in model.parameters()]
    arrays += [b.value for b in getattr(model, "buffers", lambda: [])()]
    return [np.array(a, copy=True) for a in arrays]


def _set_weights(model, saved):
    arrays = [p.value for p in model.parameters()]
    arrays += [b.value for b in getattr(model, "buffers", lambda: [])()]
    for array, value in zip(arrays, saved):
        array[...] = value


class EarlyStopping(Callback):
    """Stop training when a monitored quantity has stopped improving
    (Keras's ``EarlyStopping``).

    Parameters
    ----------
    monitor : str, default "val_loss"
    min_delta : float, default 0
        A change smaller than this is no improvement.
    patience : int, default 0
        Epochs without improvement after which training stops.
    verbose : int, default 0
        1 prints when training stops and when weights are restored.
    mode : {"auto", "min", "max"}, default "auto"
        "auto" maximises quantities whose name contains "acc", minimises
        the others.
    baseline : float, optional
        Training stops unless the quantity beats this within ``patience``
        epochs.
    restore_best_weights : bool, default False
        At the end of training, put back the parameters (and buffers) of
        the best epoch.
    start_from_epoch : int, default 0
        Epochs of warm-up during which nothing is monitored.

    Attributes
    ----------
    stopped_epoch : int
        The epoch (from 0) at which training stopped; 0 if it did not.
    best, best_epoch

    Examples
    --------
    >>> from cyconv.nn.callbacks import EarlyStopping
    >>> stop = EarlyStopping(monitor="val_accuracy", patience=3)
    >>> stop.mode
    'max'
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        self.monitor = _check_monitor(monitor)
        self.mode = _check_mode(mode, monitor)
        self.min_delta = abs(_finite(min_delta, "min_delta"))
        self.patience = _non_negative_int(patience, "patience")
        self.verbose = verbose
        self.baseline = None if baseline is None else _finite(baseline, "baseline")
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = _non_negative_int(start_from_epoch, "start_from_epoch")
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _is_improvement(self, value, reference):
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored(logs, self.monitor, "EarlyStopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # The first epoch's weights, in case no epoch ever improves.
            self.best_weights = _weights(self.model)
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _weights(self.model)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"restoring the weights of the best epoch, {self.best_epoch + 1}")
            _set_weights(self.model, self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model after every epoch, or only when it is the best so far
    (Keras's ``ModelCheckpoint``), each save atomic (a file is replaced
    whole or not at all).

    Parameters
    ----------
    path : str or path-like
        May hold ``{epoch}`` (from 1) and logged quantities, formatted as
        Keras does: ``"model-{epoch:02d}-{val_loss:.2f}.npz"``.
    monitor : str, default "val_loss"
    verbose : int, default 0
    save_best_only : bool, default False
        Save only when the monitored quantity improves on every earlier epoch.
    mode : {"auto", "min", "max"}, default "auto"
    include_optimizer : bool, default False
        Also save the optimizer's state and the epoch, so that training can
        resume exactly (see :meth:`cyconv.Sequential.save`).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from cyconv import Sequential, Dense
    >>> from cyconv.nn.callbacks import ModelCheckpoint
    >>> folder = tempfile.mkdtemp()
    >>> model = Sequential([Dense(3, 2, rng=0)])
    >>> checkpoint = ModelCheckpoint(os.path.join(folder, "m-{epoch}.npz"), monitor="loss")
    >>> _ = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=2, verbose=False,
    ...               callbacks=[checkpoint])
    >>> sorted(os.listdir(folder))
    ['m-1.npz', 'm-2.npz']
    """

    def __init__(self, path, monitor="val_loss", verbose=0, save_best_only=False, mode="auto",
                 include_optimizer=False):
        self.path = os.fspath(path)
        self.monitor = _check_monitor(monitor)
        self.mode = _check_mode(mode, monitor)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.include_optimizer = bool(include_optimizer)
        self.best = None

    def on_train_begin(self, logs=None):
        self.best = None
        # Fail before training rather than after the first epoch.
        directory = os.path.dirname(os.path.abspath(self._path(0, {}, check=False)))
        if not os.path.isdir(directory):
            raise ValueError(f"ModelCheckpoint cannot save to {self.path}: no directory "
                             f"{directory}")

    def _path(self, epoch, logs, check=True):
        try:
            return self.path.format(epoch=epoch + 1, **(logs or {}))
        except (KeyError, IndexError, ValueError) as exc:
            if not check:
                return self.path
            raise ValueError(f"ModelCheckpoint's path {self.path!r} names something not "
                             f"logged: {exc}") from None

    def on_epoch_end(self, epoch, logs=None):
        path = self._path(epoch, logs)
        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if current is None:
                return
            better = (self.best is None or (current < self.best if self.mode == "min"
                                            else current > self.best))
            if not better:
                return
            if self.verbose:
                print(f"epoch {epoch + 1}: {self.monitor} improved to {current:.5g}; "
                      f"saving the model to {path}", file=sys.stdout)
            self.best = current
        elif self.verbose:
            print(f"epoch {epoch + 1}: saving the model to {path}", file=sys.stdout)
        self.model.save(path, include_optimizer=self.include_optimizer)


class _Schedule(Callback):
    """A learning-rate schedule: the rate of each epoch is a formula of the
    optimizer's first rate (kept as ``optimizer.initial_learning_rate``,
    PyTorch's ``initial_lr``, so that a resumed run continues the same
    schedule)."""

    def _base(self):
        optimizer = self.model.optimizer
        if getattr(optimizer, "initial_learning_rate", None) is None:
            optimizer.initial_learning_rate = optimizer.learning_rate
        return optimizer.initial_learning_rate

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = check_learning_rate(self.rate(self._base(), epoch))


class StepLR(_Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs:
    ``lr = initial_lr * gamma ** (epoch // step_size)`` (PyTorch's ``StepLR``).

    Examples
    --------
    >>> from cyconv.nn.callbacks import StepLR
    >>> [StepLR(2, gamma=0.5).rate(1.0, epoch) for epoch in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, step_size, gamma=0.1):
        self.step_size = _positive_int(step_size, "step_size")
        self.gamma = _non_negative(gamma, "gamma")

    def rate(self, base, epoch):
        return base * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    """Cosine annealing from the initial rate down to ``eta_min`` over
    ``T_max`` epochs (PyTorch's ``CosineAnnealingLR``, its closed form):
    ``lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    Examples
    --------
    >>> from cyconv.nn.callbacks import CosineAnnealingLR
    >>> [round(CosineAnnealingLR(4).rate(1.0, epoch), 4) for epoch in range(5)]
    [1.0, 0.8536, 0.5, 0.1464, 0.0]
    """

    def __init__(self, T_max, eta_min=0.0):  # noqa: N803 - PyTorch's names
        self.T_max = _positive_int(T_max, "T_max")
        self.eta_min = _non_negative(eta_min, "eta_min")

    def rate(self, base, epoch):
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * epoch
                                                                   / self.T_max)) / 2


class ReduceLROnPlateau(Callback):
    """Divide the learning rate when a monitored quantity has stopped
    improving (PyTorch's ``ReduceLROnPlateau``, stepped once per epoch).

    Parameters
    ----------
    monitor : str, default "val_loss"
    mode : {"auto", "min", "max"}, default "auto"
    factor : float in [0, 1), default 0.1
        ``new_lr = max(lr * factor, min_lr)``.
    patience : int, default 10
        Epochs without improvement tolerated; the rate drops after
        ``patience + 1`` of them.
    threshold : float, default 1e-4
    threshold_mode : {"rel", "abs"}, default "rel"
        An improvement beats the best by a factor ``1 - threshold`` ("rel",
        minimising) or by ``threshold`` ("abs").
    cooldown : int, default 0
        Epochs to wait after a reduction before counting again.
    min_lr : float, default 0
    eps : float, default 1e-8
        A reduction smaller than this is not made.
    verbose : int, default 0

    Examples
    --------
    >>> from cyconv.nn.callbacks import ReduceLROnPlateau
    >>> ReduceLROnPlateau(factor=0.5, patience=1).factor
    0.5
    """

    def __init__(self, monitor="val_loss", mode="auto", factor=0.1, patience=10,
                 threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8,
                 verbose=0):
        self.monitor = _check_monitor(monitor)
        self.mode = _check_mode(mode, monitor)
        self.factor = _finite(factor, "factor")
        if not 0 <= self.factor < 1:
            raise ValueError(f"factor must be in [0, 1), got {factor!r}")
        self.patience = _non_negative_int(patience, "patience")
        self.threshold = _finite(threshold, "threshold")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.threshold_mode = threshold_mode
        self.cooldown = _non_negative_int(cooldown, "cooldown")
        self.min_lr = _finite(min_lr, "min_lr")
        self.eps = _finite(eps, "eps")
        self.verbose = verbose
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _is_better(self, value):
        if self.mode == "min":
            bound = (self.best * (1 - self.threshold) if self.threshold_mode == "rel"
                     else self.best - self.threshold)
            return value < bound
        bound = (self.best * (1 + self.threshold) if self.threshold_mode == "rel"
                 else self.best + self.threshold)
        return value > bound

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored(logs, self.monitor, "ReduceLROnPlateau")
        if current is None:
            return
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            optimizer = self.model.optimizer
            old = optimizer.learning_rate
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                optimizer.learning_rate = new
                if self.verbose:
                    print(f"epoch {epoch + 1}: learning rate reduced to {new:.4g}")
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0


def check_callbacks(callbacks):
    """``callbacks`` as a list of objects with every hook fit calls."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(f"callbacks must be a list of Callback objects, got "
                        f"{callbacks!r}") from None
    hooks = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
             "on_batch_end")
    for callback in callbacks:
        missing = [hook for hook in hooks if not callable(getattr(callback, hook, None))]
        if missing:
            raise TypeError(f"callback {callback!r} has no {', '.join(missing)}: subclass "
                            f"cyconv.nn.callbacks.Callback")
    return callbacks

