"""fit as Keras and PyTorch users expect it: validation_split, everything
checked before the first weight changes, exact resumption from a
checkpoint, the loss remembered, and no silent traps."""

import json
import warnings

import numpy as np
import pytest

from cyconv import (
    SGD,
    Adam,
    Convolution,
    Dense,
    Flatten,
    MaxPooling,
    ReLU,
    Sequential,
    Softmax,
)
from cyconv.datasets import RandomShift, load_mnist_5k, prepare_images
from cyconv.nn.callbacks import ModelCheckpoint, StepLR


def cnn(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return Sequential([Convolution((1, 8, 8), 3, 4, rng=rng, dtype=dtype), ReLU(),
                       MaxPooling(2), Flatten(), Dense(36, 3, rng=rng, dtype=dtype)])


def images(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8))
    y = rng.integers(0, 3, n)
    x[np.arange(n), 0, 2 * y + 1, :] += 1.0   # a bright row per class
    return x, y


def parameters(model):
    return [p.value.copy() for p in model.parameters()]


def assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# -- validation_split ------------------------------------------------------------

def test_validation_split_keeps_the_last_samples_aside_as_keras_does():
    x, y = images(50)
    a, b = cnn(), cnn()
    history = a.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=False, validation_split=0.2)
    # floor(50 * 0.8) = 40 to train on, the last 10 to validate.
    expected = b.fit(x[:40], y[:40], epochs=2, batch_size=8, seed=0, verbose=False,
                     validation_data=(x[40:], y[40:]))
    assert history["val_loss"] == expected["val_loss"]
    assert history["loss"] == expected["loss"]
    assert_same(parameters(a), parameters(b))


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(validation_split=1.0), ValueError, r"in \[0, 1\)"),
    (dict(validation_split=-0.1), ValueError, r"in \[0, 1\)"),
    (dict(validation_split="half"), TypeError, "validation_split"),
    (dict(validation_split=0.99), ValueError, "each needs at least one"),
    (dict(validation_split=0.2, validation_data=images(5)), ValueError, "not both"),
])
def test_bad_validation_split(kwargs, error, words):
    x, y = images(20)
    with pytest.raises(error, match=words):
        cnn().fit(x, y, verbose=False, **kwargs)


# -- nothing changes before everything is checked ---------------------------------

BAD_BEFORE_TRAINING = [
    (dict(validation_data=(np.zeros((4, 1, 8, 7)), [0, 1, 2, 0])), "validation_data's samples"),
    (dict(validation_data=(np.zeros((4, 1, 8, 8)), [0, 1, 2])), "same number of samples"),
    (dict(validation_data=(np.zeros((4, 1, 8, 8)), [0, 1, 2, 3])), r"validation y .*\[0, 3\)"),
    (dict(validation_data=(np.zeros((4, 1, 8, 8)), np.zeros((4, 2)))), "validation y"),
    (dict(validation_data=(np.zeros((0, 1, 8, 8)), [])), "at least one"),
    (dict(validation_data=(np.zeros((4, 1, 8, 8)), [0, 1, 2, 0]), callbacks=[3]),
     "callback 3"),
    (dict(initial_epoch=2, epochs=2), "initial_epoch"),
    (dict(seed=-1), "seed"),
    (dict(callbacks=[ModelCheckpoint("/nonexistent-folder/m.npz")]), "no directory"),
]


@pytest.mark.parametrize("kwargs, words", BAD_BEFORE_TRAINING)
def test_bad_arguments_fail_before_the_first_weight_changes(kwargs, words):
    x, y = images(20)
    model = cnn()
    before = parameters(model)
    with pytest.raises((ValueError, TypeError), match=words):
        model.fit(x, y, epochs=kwargs.pop("epochs", 2), verbose=False, **kwargs)
    assert_same(parameters(model), before)


def test_a_bad_label_anywhere_in_y_fails_before_training():
    x, y = images(20)
    y[-1] = 3   # in the last batch, among 3 classes
    model = cnn()
    before = parameters(model)
    with pytest.raises(ValueError, match=r"y does not fit .*\[0, 3\)"):
        model.fit(x, y, batch_size=4, verbose=False)
    assert_same(parameters(model), before)


# -- resuming ----------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", [lambda: Adam(0.01), lambda: SGD(0.05, momentum=0.9)])
def test_four_epochs_equal_two_then_save_load_and_two_more(tmp_path, optimizer):
    x, y = images(40)
    kwargs = dict(batch_size=8, verbose=False, validation_split=0.25,
                  augment=RandomShift(1), callbacks=[StepLR(1, gamma=0.7)])
    straight = cnn()
    history = straight.fit(x, y, epochs=4, optimizer=optimizer(), seed=5, **kwargs)

    first = cnn()
    first.fit(x, y, epochs=2, optimizer=optimizer(), seed=5, **kwargs)
    path = tmp_path / "checkpoint.npz"
    first.save(path, include_optimizer=True)
    resumed = Sequential.load(path)
    assert resumed.epoch == 2 and type(resumed.optimizer) is type(first.optimizer)
    rest = resumed.fit(x, y, epochs=4, optimizer=resumed.optimizer,
                       initial_epoch=resumed.epoch, **kwargs)
    assert rest["loss"] == history["loss"][2:]
    assert rest["val_loss"] == history["val_loss"][2:]
    assert_same(parameters(resumed), parameters(straight))


def test_model_checkpoint_with_the_optimizer_resumes_exactly(tmp_path):
    x, y = images(30)
    straight = cnn()
    straight.fit(x, y, epochs=3, batch_size=6, seed=1, verbose=False)
    interrupted = cnn()
    checkpoint = ModelCheckpoint(tmp_path / "last.npz", monitor="loss", include_optimizer=True)
    interrupted.fit(x, y, epochs=3, batch_size=6, seed=1, verbose=False, callbacks=[checkpoint])
    # As if the run had died after its second epoch: resume from a copy saved then.
    second = cnn()
    second.fit(x, y, epochs=2, batch_size=6, seed=1, verbose=False,
               callbacks=[ModelCheckpoint(tmp_path / "two.npz", monitor="loss",
                                          include_optimizer=True)])
    model = Sequential.load(tmp_path / "two.npz")
    model.fit(x, y, epochs=3, batch_size=6, optimizer=model.optimizer,
              initial_epoch=model.epoch, verbose=False)
    assert_same(parameters(model), parameters(straight))
    assert_same(parameters(Sequential.load(tmp_path / "last.npz")), parameters(straight))


def test_optimizer_state_round_trips_exactly(tmp_path):
    x, y = images(20)
    model = cnn(dtype=np.float32)
    model.fit(x, y, epochs=1, batch_size=5, optimizer=Adam(0.02, weight_decay=0.01), seed=0,
              verbose=False)
    model.save(tmp_path / "m.npz", include_optimizer=True)
    loaded = Sequential.load(tmp_path / "m.npz")
    assert vars(loaded.optimizer).keys() == vars(model.optimizer).keys()
    assert loaded.optimizer.weight_decay == 0.01 and loaded.optimizer.learning_rate == 0.02
    for p, q in zip(model.parameters(), loaded.parameters()):
        a, b = model.optimizer.state[p], loaded.optimizer.state[q]
        assert a["t"] == b["t"] == 4 and type(b["t"]) is int
        np.testing.assert_array_equal(a["m"], b["m"])
        np.testing.assert_array_equal(a["v"], b["v"])
        assert b["m"].dtype == np.float32 and b["m"].flags.writeable


def test_a_checkpoint_needs_a_trained_model(tmp_path):
    with pytest.raises(ValueError, match="no optimizer yet"):
        cnn().save(tmp_path / "m.npz", include_optimizer=True)


# -- the loss is remembered ----------------------------------------------------------

def test_evaluate_defaults_to_the_loss_fit_used_and_the_file_keeps_it(tmp_path):
    x, y = images(30)
    targets = np.eye(3)[y]
    model = cnn()
    history = model.fit(x, targets, epochs=2, loss="mse", optimizer=SGD(0.05), seed=0,
                        verbose=False, validation_data=(x, targets))
    scores = model.evaluate(x, targets)
    expected = float(np.mean((model.predict(x) - targets) ** 2))
    assert scores["loss"] == pytest.approx(expected, rel=1e-12)
    assert scores["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-12)
    model.save(tmp_path / "m.npz")
    assert Sequential.load(tmp_path / "m.npz").evaluate(x, targets)["loss"] == \
        pytest.approx(expected, rel=1e-12)
    # Without fit, the default stays softmax cross-entropy.
    assert cnn().evaluate(x, y)["loss"] > 0


# -- silent traps ------------------------------------------------------------------

def test_a_final_softmax_with_softmax_cross_entropy_is_refused_with_the_reason():
    x, y = images(10)
    model = Sequential(cnn().layers + [Softmax()])
    before = parameters(model)
    with pytest.raises(ValueError, match="softmax itself.*twice.*Remove the last Softmax"):
        model.fit(x, y, verbose=False)
    assert_same(parameters(model), before)
    with pytest.raises(ValueError, match="twice"):
        model.evaluate(x, y)
    # With another loss it is a fine model.
    model.fit(x, np.eye(3)[y], loss="mse", verbose=False)


def test_raw_pixels_get_a_warning_naming_prepare_images():
    digits, labels = load_mnist_5k()
    raw = digits[:16, np.newaxis]   # uint8, 0-255
    model = Sequential([Flatten(), Dense(784, 10, rng=0)])
    with pytest.warns(UserWarning, match=r"up to 255.*prepare_images") as caught:
        model.fit(raw, labels[:16], verbose=False)
    assert len(caught) == 1 and caught[0].filename == __file__
    with pytest.warns(UserWarning, match="prepare_images"):
        model.predict(raw.astype(np.float32))   # a float copy of raw pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(prepare_images(digits[:16]), labels[:16], verbose=False)
        model.predict(np.arange(12.0).reshape(3, 4) @ np.ones((4, 784)) / 784)


@pytest.mark.parametrize("shape, words", [
    ((5, 8, 8), r"got x of shape \(5, 8, 8\)\. .*x\[:, np\.newaxis\]"),
    ((5, 8, 8, 1), r"got x of shape \(5, 8, 8, 1\)\. .*channels-last.*transpose\(0, 3, 1, 2\)"),
    ((5, 2, 8, 8), r"got x of shape \(5, 2, 8, 8\)"),
])
def test_shape_errors_name_the_users_shape_and_how_to_fix_it(shape, words):
    model = cnn()
    for call in (lambda x: model.fit(x, np.zeros(len(x), int), verbose=False),
                 model.predict):
        with pytest.raises(ValueError, match=words) as info:
            call(np.zeros(shape))
        assert "(1, 5, 8, 8)" not in str(info.value)   # not a shape cyconv made


def test_an_input_shape_given_channels_last_is_explained():
    with pytest.raises(ValueError, match=r"\(28, 28, 1\) looks channels-last.*\(1, 28, 28\)"):
        Convolution((28, 28, 1), 3, 8)
    model = Sequential([Flatten(), Dense(64, 2)])
    with pytest.raises(ValueError, match="Flatten"):
        Sequential([Dense(64, 2)]).predict(np.zeros((3, 8, 8)))
    assert model.predict(np.zeros((3, 8, 8))).shape == (3, 2)


@pytest.mark.parametrize("content, words", [
    (b"\x89HDF\r\n\x1a\n" + bytes(100), "HDF5"),
    (json.dumps({"class_name": "Sequential"}).encode(), "JSON"),
    (b"\x80\x04\x95", "pickle"),
    (b"just text", "not an .npz archive"),
])
def test_a_file_of_another_format_is_named_as_such(tmp_path, content, words):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        Sequential.load(path)
    message = str(info.value)
    assert words in message and "not a readable cyconv model file" in message
    assert "allow_pickle" not in message


def test_dropout_and_batchnorm_models_resume_exactly_too(tmp_path):
    from cyconv import BatchNormalization, Dropout

    def model():
        rng = np.random.default_rng(3)
        return Sequential([Convolution((1, 8, 8), 3, 4, rng=rng, dtype=np.float64),
                           BatchNormalization(dtype=np.float64), ReLU(), MaxPooling(2),
                           Flatten(), Dropout(0.3, rng=7), Dense(36, 3, rng=rng,
                                                                 dtype=np.float64)],
                          input_shape=(1, 8, 8))

    x, y = images(30)
    straight = model()
    straight.fit(x, y, epochs=4, batch_size=6, optimizer=Adam(0.01), seed=2, verbose=False)
    first = model()
    first.fit(x, y, epochs=2, batch_size=6, optimizer=Adam(0.01), seed=2, verbose=False)
    first.save(tmp_path / "c.npz", include_optimizer=True)
    resumed = Sequential.load(tmp_path / "c.npz")
    resumed.fit(x, y, epochs=4, batch_size=6, optimizer=resumed.optimizer,
                initial_epoch=resumed.epoch, verbose=False)
    assert_same(parameters(resumed), parameters(straight))
    assert_same([b.value for b in resumed.buffers()], [b.value for b in straight.buffers()])
