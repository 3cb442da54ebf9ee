"""End to end: a network with BatchNorm, Dropout, residual blocks and global
average pooling (cyconv.nn.small_resnet) learns the bundled digits within
a small budget, and its trained state survives a save/load round trip."""

import numpy as np
import pytest

from cyconv import Adam, BatchNormalization, Dropout, GlobalAveragePooling, Residual, Sequential
from cyconv.datasets import load_mnist_5k, prepare_images, stratified_split
from cyconv.nn import small_resnet


def _walk(layers):
    for layer in layers:
        yield layer
        yield from _walk(layer.children())


def test_small_resnet_holds_every_new_kind_of_layer():
    kinds = {type(layer) for layer in _walk(small_resnet(rng=0).layers)}
    assert {BatchNormalization, Dropout, GlobalAveragePooling, Residual} <= kinds


def test_learns_the_digits_within_a_small_budget(tmp_path):
    """1,000 digits, 3 epochs (about 2 s on two cores): eval-mode held-out
    accuracy of 75% to 87% over seeds 0 to 6 (chance is 10%, the full run
    reaches 98%); 60% leaves room for other BLAS libraries' rounding."""
    images, labels = load_mnist_5k()
    train, test = stratified_split(labels, 1000, seed=0)
    x = prepare_images(images, np.float32)
    y = labels.astype(np.int64)
    x_train, y_train = x[train[:1000]], y[train[:1000]]
    x_test, y_test = x[test[:500]], y[test[:500]]
    model = small_resnet(width=8, rng=0)
    history = model.fit(x_train, y_train, epochs=3, batch_size=32, optimizer=Adam(0.01),
                        seed=0, verbose=False,
                        learning_rate_schedule=lambda epoch: 0.01 * 0.5 ** epoch)
    assert history["loss"][-1] < 0.75 * history["loss"][0]
    scores = model.evaluate(x_test, y_test)
    assert scores["accuracy"] >= 0.6, scores
    assert model.training  # evaluate restored training mode

    path = tmp_path / "resnet.npz"
    model.save(path)
    loaded = Sequential.load(path)
    assert loaded.evaluate(x_test, y_test) == scores
    norms = [layer for layer in _walk(loaded.layers) if isinstance(layer, BatchNormalization)]
    assert len(norms) == 6
    assert all(not np.array_equal(layer.running_var.value, np.ones(layer.num_features))
               for layer in norms)


@pytest.mark.parametrize("make, error, words", [
    (lambda: small_resnet(width=0), ValueError, "width must be >= 1"),
    (lambda: small_resnet(dropout=1.5), ValueError, r"rate must be in \[0, 1\]"),
    (lambda: small_resnet((1, 3, 3)), ValueError, "larger than the padded input"),
    (lambda: small_resnet((28, 28)), ValueError, "input_shape must have 3 entries"),
])
def test_bad_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make()
