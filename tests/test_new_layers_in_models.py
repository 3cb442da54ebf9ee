"""The new layers inside models: sizes inferred, modes followed by fit,
predict and evaluate, save/load round trips that keep BatchNormalization's
buffers, and the optimizers by name."""

import numpy as np
import pytest

from cyconv import (
    AdamW,
    BatchNormalization,
    Convolution,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling,
    LeakyReLU,
    MaxPooling,
    ReLU,
    Residual,
    RMSprop,
    Sequential,
)
from cyconv.nn.serialization import builtin_layers


def _model(rng=0, dtype=np.float32):
    return Sequential([
        Convolution(kernel_size=3, depth=4, padding=1, dtype=dtype, rng=rng),
        BatchNormalization(dtype=dtype), LeakyReLU(0.1),
        Residual([Convolution(kernel_size=3, depth=4, padding=1, dtype=dtype, rng=rng + 1),
                  BatchNormalization(dtype=dtype)]),
        ReLU(), MaxPooling(2), GlobalAveragePooling(), Dropout(0.25, rng=rng + 2),
        Dense(output_size=3, dtype=dtype, rng=rng + 3),
    ], input_shape=(2, 6, 6))


def _data(seed=0, count=24):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, 2, 6, 6)), rng.integers(0, 3, count)


def test_sizes_are_inferred_and_summarised():
    model = _model()
    norms = [model.layers[1], model.layers[3].layers[1]]
    assert [layer.num_features for layer in norms] == [4, 4]
    assert model.predict(_data()[0][:5]).shape == (5, 3)
    summary = model.summary()
    for name in ("BatchNormalization", "GlobalAveragePooling", "Dropout", "LeakyReLU"):
        assert name in summary
    assert "(4,)" in summary  # global average pooling's output
    # gamma and beta of two layers of 4 channels, among the parameters.
    assert sum(p.value.size for p in model.parameters()
               if p.name in ("gamma", "beta")) == 16
    assert [b.name for b in model.buffers()] == ["running_mean", "running_var"] * 2


def test_every_new_layer_is_registered_for_files():
    layers = builtin_layers()
    for cls in (BatchNormalization, Dropout, GlobalAveragePooling, LeakyReLU):
        assert layers[cls.__name__] is cls


def test_fit_updates_running_statistics_and_predict_uses_them():
    x, y = _data()
    model = _model()
    norm = model.layers[1]
    model.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=False)
    assert model.training  # fit restores the mode it found
    assert not np.array_equal(norm.running_mean.value, np.zeros(4))
    mean_before = norm.running_mean.value.copy()
    first = model.predict(x)
    np.testing.assert_array_equal(model.predict(x), first)  # eval: no dropout, no update
    np.testing.assert_array_equal(norm.running_mean.value, mean_before)
    model.evaluate(x, y)
    np.testing.assert_array_equal(norm.running_mean.value, mean_before)
    # By hand in eval mode: the same as predict.
    model.eval()
    np.testing.assert_allclose(model.forward(x), first, rtol=1e-6)


def test_save_and_load_keep_buffers_modes_and_predictions(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=False, optimizer=AdamW(0.01))
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Sequential.load(path)
    assert loaded.training
    for ours, theirs in zip(model.buffers(), loaded.buffers()):
        assert ours.name == theirs.name
        np.testing.assert_array_equal(ours.value, theirs.value)
    for ours, theirs in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(ours.value, theirs.value)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.layers[7].rate == 0.25 and loaded.layers[2].negative_slope == 0.1
    # The loaded model trains on: its buffers are its own, writable arrays.
    loaded.fit(x, y, epochs=1, batch_size=8, seed=1, verbose=False)
    assert not np.array_equal(loaded.layers[1].running_var.value, model.layers[1].running_var.value)


def test_a_file_with_a_running_statistic_missing_is_refused(tmp_path):
    model = _model()
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    dropped = [name for name in arrays if name.endswith("running_var")][0]
    del arrays[dropped]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match="running_var"):
        Sequential.load(tmp_path / "broken.npz")


def test_dropout_follows_the_model_mode():
    x = np.ones((4, 2, 6, 6))
    model = _model()
    dropout = model.layers[7]
    model.eval()
    assert not dropout.training
    model.train()
    assert dropout.training


@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop", AdamW(0.01), RMSprop(0.001)])
def test_fit_with_the_new_optimizers_lowers_the_loss(optimizer):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = Sequential([Dense(4, 8, rng=0), BatchNormalization(8), ReLU(), Dense(8, 2, rng=1)])
    history = model.fit(x, y, epochs=15, batch_size=16, optimizer=optimizer, seed=0,
                        verbose=False)
    assert history["loss"][-1] < history["loss"][0]


def test_batch_norm_after_dense_in_float64_trains_and_checks_gradients():
    from cyconv.testing import check_layer_gradients

    model = Sequential([Dense(3, 4, dtype=np.float64, rng=0),
                        BatchNormalization(dtype=np.float64), LeakyReLU(),
                        Flatten(), Dense(output_size=2, dtype=np.float64, rng=1)],
                       input_shape=(3,))
    model.layers[0].needs_input_gradient = True
    model.needs_input_gradient = True
    check_layer_gradients(model, np.random.default_rng(2).standard_normal((5, 3)))


def test_seeded_training_with_dropout_and_batch_norm_is_reproducible():
    x, y = _data(3)
    first, second = _model(rng=7), _model(rng=7)
    for model in (first, second):
        model.fit(x, y, epochs=2, batch_size=8, seed=4, verbose=False, optimizer=RMSprop(0.01))
    for a, b in zip(first.parameters() + first.buffers(), second.parameters() + second.buffers()):
        np.testing.assert_array_equal(a.value, b.value)
