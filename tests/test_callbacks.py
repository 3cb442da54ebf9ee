"""fit's callbacks against Keras's and PyTorch's documented semantics,
replayed by hand on a logged sequence of values."""

import math
import os

import numpy as np
import pytest

from cyconv import SGD, Adam, Dense, ReLU, Sequential
from cyconv.nn.callbacks import (
    Callback,
    CosineAnnealingLR,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
    ReduceLROnPlateau,
    StepLR,
)


class Scripted(Callback):
    """Replaces the logged val_loss with a scripted sequence, so that the
    callbacks under test see known values."""

    def __init__(self, values, key="val_loss"):
        self.values, self.key = list(values), key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    return x, (x[:, 0] > 0).astype(np.int64)


def model(seed=0):
    return Sequential([Dense(4, 8, rng=seed, dtype=np.float64), ReLU(),
                       Dense(8, 2, rng=seed + 1, dtype=np.float64)])


def run(callbacks, epochs=10, **kwargs):
    m = model()
    x, y = data()
    history = m.fit(x, y, epochs=epochs, batch_size=8, seed=0, verbose=False,
                    validation_data=data(8, 1), callbacks=callbacks, **kwargs)
    return m, history


def keras_early_stopping(values, patience, min_delta=0.0, mode="min", baseline=None):
    """Keras 3's EarlyStopping.on_epoch_end, written out: the epoch at which
    training stops (None if it does not) and the best epoch."""
    delta = abs(min_delta) * (1 if mode == "max" else -1)
    op = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    best, best_epoch, wait = None, 0, 0
    for epoch, value in enumerate(values):
        wait += 1
        if best is None or op(value - delta, best):
            best, best_epoch = value, epoch
            if baseline is None or op(value - delta, baseline):
                wait = 0
            continue
        if wait >= patience and epoch > 0:
            return epoch, best_epoch
    return None, best_epoch


SEQUENCES = [
    [1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.85, 0.86, 0.87, 0.88],
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    [1.0, 0.99, 0.985, 0.984, 0.983, 0.982, 0.5, 0.49, 0.48, 0.47],
    [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4],
]


@pytest.mark.parametrize("values", SEQUENCES)
@pytest.mark.parametrize("patience, min_delta, baseline", [
    (0, 0, None), (1, 0, None), (2, 0, None), (2, 0.01, None), (3, 0.005, None),
    (2, 0, 0.95),
])
def test_early_stopping_stops_where_keras_would(values, patience, min_delta, baseline):
    stop = EarlyStopping(patience=patience, min_delta=min_delta, baseline=baseline)
    _, history = run([Scripted(values), stop])
    expected_stop, expected_best = keras_early_stopping(values, patience, min_delta,
                                                        baseline=baseline)
    assert len(history["loss"]) == (10 if expected_stop is None else expected_stop + 1)
    assert stop.stopped_epoch == (expected_stop or 0)
    assert stop.best_epoch == expected_best


def test_early_stopping_maximises_accuracies_and_restores_the_best_weights():
    values = [0.5, 0.7, 0.9, 0.8, 0.85, 0.6, 0.6]
    snapshots = []
    keep = LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(
        [p.value.copy() for p in m.parameters()]))
    stop = EarlyStopping(monitor="val_accuracy", patience=2, restore_best_weights=True)
    assert stop.mode == "max"
    m = model()
    x, y = data()
    m.fit(x, y, epochs=7, batch_size=8, seed=0, verbose=False, validation_data=data(8, 1),
          callbacks=[Scripted(values, "val_accuracy"), keep, stop])
    assert stop.stopped_epoch == 4 and stop.best_epoch == 2
    for now, best in zip(m.parameters(), snapshots[2]):
        np.testing.assert_array_equal(now.value, best)


def test_early_stopping_warns_when_what_it_monitors_is_not_logged():
    m = model()
    x, y = data()
    with pytest.warns(RuntimeWarning, match="'val_loss', which is not logged"):
        m.fit(x, y, epochs=2, verbose=False, callbacks=[EarlyStopping()])


def torch_plateau(values, lr, factor, patience, threshold, threshold_mode, cooldown, min_lr,
                  mode="min", eps=1e-8):
    """torch.optim.lr_scheduler.ReduceLROnPlateau.step, written out from its
    documentation: the learning rate after each epoch."""
    best = math.inf if mode == "min" else -math.inf
    bad = cooldown_counter = 0
    rates = []
    for value in values:
        if mode == "min" and threshold_mode == "rel":
            better = value < best * (1 - threshold)
        elif mode == "min":
            better = value < best - threshold
        elif threshold_mode == "rel":
            better = value > best * (1 + threshold)
        else:
            better = value > best + threshold
        if better:
            best, bad = value, 0
        else:
            bad += 1
        if cooldown_counter > 0:
            cooldown_counter -= 1
            bad = 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            if lr - new > eps:
                lr = new
            cooldown_counter, bad = cooldown, 0
        rates.append(lr)
    return rates


@pytest.mark.parametrize("values", SEQUENCES)
@pytest.mark.parametrize("factor, patience, threshold, threshold_mode, cooldown, min_lr", [
    (0.5, 0, 1e-4, "rel", 0, 0.0), (0.1, 1, 1e-4, "rel", 0, 0.0),
    (0.5, 1, 0.02, "abs", 1, 0.0), (0.5, 0, 0.0, "rel", 2, 0.03),
])
def test_reduce_on_plateau_follows_pytorch(values, factor, patience, threshold,
                                           threshold_mode, cooldown, min_lr):
    rates = []
    callback = ReduceLROnPlateau(factor=factor, patience=patience, threshold=threshold,
                                 threshold_mode=threshold_mode, cooldown=cooldown,
                                 min_lr=min_lr)
    record = LambdaCallback(on_epoch_end=lambda epoch, logs: rates.append(
        m.optimizer.learning_rate))
    m = model()
    x, y = data()
    m.fit(x, y, epochs=10, batch_size=8, seed=0, verbose=False, optimizer=SGD(0.1),
          validation_data=data(8, 1), callbacks=[Scripted(values), callback, record])
    expected = torch_plateau(values, 0.1, factor, patience, threshold, threshold_mode,
                             cooldown, min_lr)
    assert rates == pytest.approx(expected, rel=1e-12)


def test_step_and_cosine_schedules_set_each_epochs_rate():
    seen = []
    record = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["learning_rate"]))
    run([StepLR(3, gamma=0.5), record], epochs=7, optimizer=SGD(0.2))
    assert seen == pytest.approx([0.2 * 0.5 ** (e // 3) for e in range(7)], rel=1e-15)
    seen.clear()
    run([CosineAnnealingLR(5, eta_min=0.01), record], epochs=7, optimizer=Adam(0.1))
    cosine = [0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(7)]
    assert seen == pytest.approx(cosine, rel=1e-12)


def test_schedules_agree_with_torch():
    torch = pytest.importorskip("torch")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.3)
    schedulers = [(torch.optim.lr_scheduler.StepLR(optimizer, 2, gamma=0.3), StepLR(2, 0.3))]
    torch_rates = []
    for _ in range(6):
        torch_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedulers[0][0].step()
    assert [schedulers[0][1].rate(0.3, e) for e in range(6)] == pytest.approx(torch_rates)
    optimizer = torch.optim.SGD([parameter], lr=0.3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4, eta_min=0.05)
    torch_rates = []
    for _ in range(5):
        torch_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        cosine.step()
    ours = [CosineAnnealingLR(4, eta_min=0.05).rate(0.3, e) for e in range(5)]
    assert ours == pytest.approx(torch_rates)


def test_model_checkpoint_saves_every_epoch_or_only_the_best(tmp_path):
    values = [1.0, 0.8, 0.9, 0.7, 0.75]
    saved = []
    every = ModelCheckpoint(tmp_path / "every-{epoch:02d}.npz")
    best = ModelCheckpoint(tmp_path / "best.npz", save_best_only=True)
    watch = LambdaCallback(on_epoch_end=lambda epoch, logs: saved.append(
        os.path.getmtime(tmp_path / "best.npz") if (tmp_path / "best.npz").exists() else None))
    m, _ = run([Scripted(values), every, best, watch], epochs=5)
    assert sorted(os.listdir(tmp_path)) == ["best.npz"] + [f"every-0{e}.npz" for e in range(1, 6)]
    # best.npz holds the weights after epoch 4 (val_loss 0.7), as every-04 does.
    a, b = Sequential.load(tmp_path / "best.npz"), Sequential.load(tmp_path / "every-04.npz")
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.value, pb.value)
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_model_checkpoint_refuses_a_missing_directory_before_training(tmp_path):
    m = model()
    before = [p.value.copy() for p in m.parameters()]
    x, y = data()
    with pytest.raises(ValueError, match="no directory"):
        m.fit(x, y, verbose=False, callbacks=[ModelCheckpoint(tmp_path / "no" / "m.npz")])
    for p, value in zip(m.parameters(), before):
        np.testing.assert_array_equal(p.value, value)


def test_stop_training_from_a_batch_ends_the_epoch_there():
    class StopAfterTwo(Callback):
        def on_batch_end(self, batch, logs=None):
            self.batches = batch + 1
            if batch == 1:
                self.model.stop_training = True

    callback = StopAfterTwo()
    _, history = run([callback], epochs=5)
    assert callback.batches == 2 and len(history["loss"]) == 1


def test_hooks_are_called_in_keras_order():
    calls = []

    class Recorder(Callback):
        def on_train_begin(self, logs=None):
            calls.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            calls.append(f"epoch_begin {epoch}")

        def on_batch_end(self, batch, logs=None):
            calls.append(f"batch {batch}")

        def on_epoch_end(self, epoch, logs=None):
            calls.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, logs=None):
            calls.append("train_end")

    recorder = Recorder()
    m, _ = run([recorder], epochs=2)
    keys = sorted(["loss", "accuracy", "val_loss", "val_accuracy", "seconds", "learning_rate"])
    assert calls == ["train_begin", "epoch_begin 0", "batch 0", "batch 1", "batch 2", "batch 3",
                     f"epoch_end 0 {keys}", "epoch_begin 1", "batch 0", "batch 1", "batch 2",
                     "batch 3", f"epoch_end 1 {keys}", "train_end"]
    assert recorder.model is m and recorder.params == {"epochs": 2, "steps": 4}


@pytest.mark.parametrize("make, error, words", [
    (lambda: EarlyStopping(mode="up"), ValueError, "mode"),
    (lambda: EarlyStopping(patience=-1), ValueError, "patience"),
    (lambda: EarlyStopping(patience=1.5), TypeError, "patience"),
    (lambda: EarlyStopping(monitor=3), TypeError, "monitor"),
    (lambda: StepLR(0), ValueError, "step_size"),
    (lambda: CosineAnnealingLR(0), ValueError, "T_max"),
    (lambda: ReduceLROnPlateau(factor=1.0), ValueError, "factor"),
    (lambda: ReduceLROnPlateau(threshold_mode="x"), ValueError, "threshold_mode"),
    (lambda: LambdaCallback(on_epoch_end=3), TypeError, "callable"),
])
def test_bad_callback_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize("values", SEQUENCES)
def test_reduce_on_plateau_against_torch_itself(values):
    torch = pytest.importorskip("torch")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=1, threshold=0.02, threshold_mode="abs", cooldown=1)
    expected = []
    for value in values:
        scheduler.step(value)
        expected.append(optimizer.param_groups[0]["lr"])
    assert torch_plateau(values, 0.1, 0.5, 1, 0.02, "abs", 1, 0.0) == pytest.approx(expected)


def test_restore_best_weights_brings_back_buffers_too():
    from cyconv import BatchNormalization

    m = Sequential([Dense(4, 8, rng=0, dtype=np.float64), BatchNormalization(dtype=np.float64),
                    ReLU(), Dense(8, 2, rng=1, dtype=np.float64)])
    snapshots = []
    keep = LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(
        [a.value.copy() for a in m.parameters() + m.buffers()]))
    stop = EarlyStopping(patience=1, restore_best_weights=True)
    x, y = data()
    m.fit(x, y, epochs=6, batch_size=8, seed=0, verbose=False, validation_data=data(8, 1),
          callbacks=[Scripted([1.0, 0.5, 0.7, 0.8, 0.9, 1.0]), keep, stop])
    assert stop.best_epoch == 1 and len(snapshots) == 3
    for now, best in zip(m.parameters() + m.buffers(), snapshots[1]):
        np.testing.assert_array_equal(now.value, best)
