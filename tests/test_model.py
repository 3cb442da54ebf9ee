"""Sequential: training, reproducibility, save/load and damaged model files."""

import json
import os
import zipfile

import numpy as np
import pytest

import cyconv
from cyconv import (
    SGD,
    Adam,
    AveragePooling,
    Convolution,
    Dense,
    Flatten,
    Layer,
    MaxPooling,
    ReLU,
    Reshape,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)
from cyconv.datasets import RandomShift
from cyconv.nn.serialization import FORMAT_VERSION


def bars_data(n=96, seed=0):
    """Tiny images, 8 x 8: class 0 has a bright row, class 1 a bright column."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8)).astype(np.float32) * 0.3
    y = rng.integers(0, 2, n)
    where = rng.integers(1, 7, n)
    x[y == 0, 0, where[y == 0], :] = 1.0
    x[y == 1, 0, :, where[y == 1]] = 1.0
    return x, y


def small_cnn(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return Sequential([
        Convolution((1, 8, 8), 3, 4, padding=1, dtype=dtype, rng=rng), ReLU(),
        MaxPooling(2),
        Convolution((4, 4, 4), 3, 4, dtype=dtype, rng=rng), ReLU(),
        Flatten(), Dense(16, 2, dtype=dtype, rng=rng),
    ])


def every_layer_model():
    rng = np.random.default_rng(3)
    return Sequential([
        Convolution((2, 9, 9), (3, 2), 4, padding="same", padding_mode="reflect", rng=rng,
                    dtype=np.float64),
        Tanh(),
        AveragePooling(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        Convolution((4, 5, 5), 3, 4, stride=2, dilation=1, groups=2, bias=False, rng=rng,
                    dtype=np.float64),
        ReLU(), MaxPooling(kernel_size=2, stride=1),
        Reshape((4, 1, 1), (4,)), Dense(4, 6, rng=rng, dtype=np.float64), Sigmoid(),
        Flatten(), Dense(6, 3, bias=False, rng=rng, dtype=np.float64), Softmax(),
    ])


# -- training ----------------------------------------------------------------

def test_fit_learns_and_reports_history():
    x, y = bars_data()
    model = small_cnn()
    history = model.fit(x, y, epochs=8, batch_size=16, optimizer=Adam(0.01), seed=0,
                        validation_data=bars_data(48, seed=1), verbose=False)
    assert set(history) == {"loss", "accuracy", "seconds", "val_loss", "val_accuracy"}
    assert all(len(values) == 8 for values in history.values())
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] >= 0.9
    scores = model.evaluate(*bars_data(48, seed=1))
    assert scores["accuracy"] == history["val_accuracy"][-1]
    assert scores["loss"] == pytest.approx(history["val_loss"][-1])


def test_fit_with_sgd_mse_and_one_hot_targets():
    x, y = bars_data()
    model = small_cnn()
    history = model.fit(x, np.eye(2)[y], epochs=10, batch_size=8, loss="mse",
                        optimizer=SGD(0.05, momentum=0.9), seed=1, verbose=False)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] >= 0.9


def test_fit_prints_progress_and_epoch_lines(capsys):
    x, y = bars_data(32)
    small_cnn().fit(x, y, epochs=2, batch_size=16, seed=0, verbose=True,
                    validation_data=(x, y))
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2") and "accuracy" in lines[0] and "val_loss" in lines[0]
    assert "batch" in captured.err   # tqdm's bar


def _train_once(threads, seed=5):
    cyconv.set_num_threads(threads)
    try:
        x, y = bars_data(64)
        model = small_cnn(seed)
        history = model.fit(x, y, epochs=2, batch_size=16, seed=seed, verbose=False,
                            augment=RandomShift(1),
                            learning_rate_schedule=lambda epoch: 0.01 / (epoch + 1))
        return model, history
    finally:
        cyconv.set_num_threads(None)


def test_training_is_reproducible_bit_for_bit_at_one_and_two_threads():
    (one, h1), (two, h2), (again, h3) = _train_once(1), _train_once(2), _train_once(2)
    for a, b, c in zip(one.parameters(), two.parameters(), again.parameters()):
        np.testing.assert_array_equal(a.value, b.value)
        np.testing.assert_array_equal(b.value, c.value)
    assert h1["loss"] == h2["loss"] == h3["loss"]
    other, _ = _train_once(1, seed=6)
    assert not np.array_equal(other.parameters()[0].value, one.parameters()[0].value)


def test_float64_model_trains_in_float64():
    x, y = bars_data(32)
    model = small_cnn(dtype=np.float64)
    model.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=False)
    assert model.dtype == np.float64
    assert all(p.value.dtype == np.float64 for p in model.parameters())
    assert model.predict(x).dtype == np.float64


def test_learning_rate_schedule_sets_the_optimizer():
    x, y = bars_data(16)
    optimizer = Adam(1.0)
    seen = []
    small_cnn().fit(x, y, epochs=3, batch_size=16, optimizer=optimizer, verbose=False,
                    learning_rate_schedule=lambda e: seen.append(e) or 0.1 ** (e + 1))
    assert seen == [0, 1, 2] and optimizer.learning_rate == pytest.approx(1e-3)


def test_predict_single_sample_and_batches():
    model = small_cnn()
    x, _ = bars_data(10)
    batch = model.predict(x, batch_size=3)
    assert batch.shape == (10, 2)
    np.testing.assert_allclose(model.predict(x[4]), batch[4], rtol=1e-6)
    np.testing.assert_allclose(model.forward(x), batch, rtol=1e-6)


@pytest.mark.parametrize("call, error, words", [
    (lambda m, x, y: m.fit(x, y[:-1], verbose=False), ValueError, "same number of samples"),
    (lambda m, x, y: m.fit(x, 3, verbose=False), ValueError, "not scalars"),
    (lambda m, x, y: m.fit(x, y, verbose="loud"), ValueError, "verbose must be"),
    (lambda m, x, y: m.fit(x, y, epochs=0, verbose=False), ValueError, "epochs must be >= 1"),
    (lambda m, x, y: m.fit(x, y, batch_size=2.5, verbose=False), TypeError, "batch_size"),
    (lambda m, x, y: m.fit(x, y, loss="hinge", verbose=False), ValueError, "loss must be"),
    (lambda m, x, y: m.fit(x, y, optimizer="lbfgs", verbose=False), ValueError, "optimizer"),
    (lambda m, x, y: m.fit(x, y, validation_data=x, verbose=False), ValueError, "pair"),
    (lambda m, x, y: m.fit(x, y, augment=3, verbose=False), TypeError, "augment"),
    (lambda m, x, y: m.fit(x.astype(complex), y, verbose=False), TypeError, "real numbers"),
    (lambda m, x, y: m.fit(x, y + 5, verbose=False), ValueError, r"in \[0, 2\)"),
    (lambda m, x, y: m.evaluate(x, y[:3]), ValueError, "same number of samples"),
    (lambda m, x, y: m.predict(x[:, :, :4]), ValueError, "Convolution expects"),
])
def test_bad_fit_arguments(call, error, words):
    x, y = bars_data(8)
    with pytest.raises(error, match=words):
        call(small_cnn(), x, y)


def test_sequential_needs_layers():
    with pytest.raises(ValueError, match="at least one layer"):
        Sequential([])
    with pytest.raises(TypeError, match="no forward and backward"):
        Sequential([ReLU(), "relu"])


# -- save and load -------------------------------------------------------------

def test_save_load_round_trip_every_layer(tmp_path):
    model = every_layer_model()
    x = np.random.default_rng(0).standard_normal((3, 2, 9, 9))
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Sequential.load(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [layer.get_config() for layer in loaded.layers] == \
           [layer.get_config() for layer in model.layers]
    for a, b in zip(model.parameters(), loaded.parameters()):
        assert a.value.dtype == b.value.dtype
        np.testing.assert_array_equal(a.value, b.value)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.layers[0].needs_input_gradient is False


def test_a_trained_model_predicts_the_same_after_loading(tmp_path):
    x, y = bars_data(32)
    model = small_cnn()
    model.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=False)
    model.save(tmp_path / "trained.npz")
    np.testing.assert_array_equal(Sequential.load(tmp_path / "trained.npz").predict(x),
                                  model.predict(x))


def test_save_leaves_no_temporary_file_and_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    small_cnn(0).save(path)
    before = path.read_bytes()
    assert os.listdir(tmp_path) == ["model.npz"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777   # the umask's
    plain.unlink()

    def failing_savez(stream, **arrays):
        stream.write(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        small_cnn(1).save(path)
    assert path.read_bytes() == before   # the old model survives
    assert os.listdir(tmp_path) == ["model.npz"]


def test_layers_that_would_not_load_back_cannot_be_saved(tmp_path):
    class Dense(Layer):  # named like one of cyconv's layers
        def forward(self, input):
            return 2 * input

    class Scale(Layer):  # takes an argument its get_config does not give
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

    with pytest.raises(TypeError, match="name of one of cyconv's layers"):
        Sequential([Dense()]).save(tmp_path / "m.npz")
    with pytest.raises(TypeError, match=r"Scale\(\*\*get_config\(\)\) would not rebuild it"):
        Sequential([Scale(2.0)]).save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.npz"
    small_cnn().save(path)
    with np.load(path, allow_pickle=False) as archive:
        contents = {name: archive[name] for name in archive.files}
    return path, contents


def rewrite(path, contents, **changes):
    contents = dict(contents, **changes)
    contents = {k: v for k, v in contents.items() if v is not None}
    with open(path, "wb") as stream:
        np.savez(stream, **contents)


def test_truncated_files_are_rejected(saved):
    path, _ = saved
    data = path.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:size])
        with pytest.raises(ValueError, match="not a readable cyconv model"):
            Sequential.load(path)


def test_corrupted_bytes_are_rejected(saved):
    path, _ = saved
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("layer0.weight.npy")
    # Flip a byte in the middle of the stored weights: the CRC catches it.
    data[info.header_offset + 30 + len(info.filename) + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a readable cyconv model"):
        Sequential.load(path)


def test_other_files_are_rejected(tmp_path):
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    for path in (npy, text, other):
        with pytest.raises(ValueError, match="cyconv model"):
            Sequential.load(path)
    with pytest.raises(FileNotFoundError):
        Sequential.load(tmp_path / "missing.npz")


def test_pickled_objects_are_never_loaded(saved):
    path, contents = saved
    with open(path, "wb") as stream:
        np.savez(stream, **dict(contents, architecture=np.array([{"type": "ReLU"}],
                                                                 dtype=object)))
    with pytest.raises(ValueError, match="not a readable cyconv model"):
        Sequential.load(path)


@pytest.mark.parametrize("change, words", [
    (dict(format_version=np.array(FORMAT_VERSION + 1)), f"format version {FORMAT_VERSION + 1}"),
    (dict(format_version=np.array("1")), "bad 'format_version'"),
    (dict(format=np.array("keras")), "format 'keras'"),
    (dict(architecture=np.array("[{")), "invalid architecture"),
    (dict(architecture=np.array('[{"type": "Evil", "config": {}}]')), "unknown layer type"),
    (dict(architecture=np.array('[{"type": "ReLU", "config": {"x": 1}}]')),
     "invalid architecture"),
    (dict(architecture=None), "bad 'architecture'"),
    (dict(**{"layer0.weight": np.zeros((4, 1, 2, 2), dtype=np.float32)}),
     "does not fit its architecture"),
    (dict(**{"layer0.weight": np.zeros((4, 1, 3, 3), dtype=np.float64)}),
     "does not fit its architecture"),
    (dict(**{"layer6.weight": None}), "no weights 'layer6.weight'"),
    (dict(**{"layer9.weight": np.zeros(2)}), "unexpected arrays"),
])
def test_wrong_versions_and_mismatched_architectures_are_rejected(saved, change, words):
    path, contents = saved
    rewrite(path, contents, **change)
    with pytest.raises(ValueError, match=words):
        Sequential.load(path)


def test_architecture_is_json_in_the_file(saved):
    _, contents = saved
    architecture = json.loads(str(contents["architecture"]))
    assert [entry["type"] for entry in architecture] == [
        "Convolution", "ReLU", "MaxPooling", "Convolution", "ReLU", "Flatten", "Dense"]
    assert int(contents["format_version"]) == FORMAT_VERSION


def test_a_model_without_parameters_keeps_the_input_precision():
    model = Sequential([ReLU(), Flatten()])
    assert model.dtype is None
    assert model.predict(np.ones((2, 3, 3))).dtype == np.float64
    assert model.predict(np.ones((2, 3, 3), dtype=np.float32)).dtype == np.float32
    assert small_cnn(dtype=np.float32).predict(np.ones((1, 1, 8, 8))).dtype == np.float32
