"""The tutorial's own names: its MNIST 0-vs-1 script, ported by changing
only its imports and where the digits come from, trains as it should."""

import contextlib
import io
import re
import textwrap

import numpy as np
import pytest

from cyconv import SGD, Sequential
from cyconv.datasets import load_mnist_5k, prepare_images, stratified_split
from cyconv.tutorial import (
    Convolutional,
    Dense,
    Reshape,
    Sigmoid,
    binary_cross_entropy,
    binary_cross_entropy_prime,
    mse,
    mse_prime,
    predict,
    to_categorical,
    train,
)

# The tutorial's mnist_conv.py.  Changed: the imports (the tutorial's files
# and Keras's to_categorical become cyconv.tutorial; `np_utils.` is gone
# from the one call) and the loading of the digits (the bundled MNIST-5k,
# split in two, rather than Keras's download).
MNIST_CONV = textwrap.dedent('''
    import numpy as np
    from cyconv.datasets import load_mnist_5k, stratified_split

    from cyconv.tutorial import Dense, Convolutional, Reshape, Sigmoid
    from cyconv.tutorial import binary_cross_entropy, binary_cross_entropy_prime
    from cyconv.tutorial import train, predict, to_categorical

    def preprocess_data(x, y, limit):
        zero_index = np.where(y == 0)[0][:limit]
        one_index = np.where(y == 1)[0][:limit]
        all_indices = np.hstack((zero_index, one_index))
        all_indices = np.random.permutation(all_indices)
        x, y = x[all_indices], y[all_indices]
        x = x.reshape(len(x), 1, 28, 28)
        x = x.astype("float32") / 255
        y = to_categorical(y)
        y = y.reshape(len(y), 2, 1)
        return x, y

    # the bundled MNIST-5k: 4,000 digits to train on, 1,000 others to test
    images, labels = load_mnist_5k()
    train_index, test_index = stratified_split(labels, 1000, seed=0)
    (x_train, y_train) = images[train_index], labels[train_index]
    (x_test, y_test) = images[test_index], labels[test_index]
    x_train, y_train = preprocess_data(x_train, y_train, 100)
    x_test, y_test = preprocess_data(x_test, y_test, 100)

    # neural network
    network = [
        Convolutional((1, 28, 28), 3, 5),
        Sigmoid(),
        Reshape((5, 26, 26), (5 * 26 * 26, 1)),
        Dense(5 * 26 * 26, 100),
        Sigmoid(),
        Dense(100, 2),
        Sigmoid()
    ]

    # train
    train(
        network,
        binary_cross_entropy,
        binary_cross_entropy_prime,
        x_train,
        y_train,
        epochs=20,
        learning_rate=0.1
    )

    # test
    for x, y in zip(x_test, y_test):
        output = predict(network, x)
        print(f"pred: {np.argmax(output)}, true: {np.argmax(y)}")
''')


def test_the_tutorials_mnist_conv_script_trains_to_98_percent():
    np.random.seed(0)   # the script draws its weights and order from numpy's global state
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(MNIST_CONV, {"__name__": "mnist_conv"})
    lines = output.getvalue().splitlines()
    errors = [float(re.match(r"\d+/20, error=(.*)", line).group(1)) for line in lines[:20]]
    assert errors[-1] < errors[0]
    pairs = [re.match(r"pred: (\d), true: (\d)", line).groups() for line in lines[20:]]
    assert len(pairs) == 200
    accuracy = np.mean([p == t for p, t in pairs])
    assert accuracy >= 0.98, accuracy


def test_reshape_to_columns_then_dense_works_inside_a_sequential():
    """The tutorial's layers, batched: Reshape gives (N, n, 1) and Dense
    takes it, forward and backward, as the one-sample loop does."""
    rng = np.random.default_rng(0)
    layers = [Convolutional((1, 6, 6), 3, 2, dtype=np.float64, rng=rng), Sigmoid(),
              Reshape((2, 4, 4), (32, 1)), Dense(32, 3, dtype=np.float64, rng=rng), Sigmoid()]
    model = Sequential(layers)
    x = rng.random((4, 1, 6, 6))
    batched = model.forward(x)
    assert batched.shape == (4, 3, 1)
    for sample, out in zip(x, batched):
        np.testing.assert_allclose(predict(layers, sample), out, rtol=1e-12)
    # The gradients of the batch are the sum of the one-sample gradients.
    grad = rng.random((4, 3, 1))
    model.forward(x)
    model.backward(grad)
    batch_weight_grad = layers[3].weight.grad.copy()
    total = np.zeros_like(batch_weight_grad)
    for sample, g in zip(x, grad):
        predict(layers, sample)
        for layer in reversed(layers):
            g = layer.backward(g)
        total += layers[3].weight.grad
    np.testing.assert_allclose(batch_weight_grad, total, rtol=1e-10)


def test_a_sequential_of_the_tutorials_layers_fits_column_targets():
    images, labels = load_mnist_5k()
    chosen = np.random.default_rng(1).permutation(np.flatnonzero(labels <= 1))[:300]
    x = prepare_images(images[chosen])
    y = to_categorical(labels[chosen]).reshape(-1, 2, 1)
    rng = np.random.default_rng(0)
    model = Sequential([Convolutional((1, 28, 28), 3, 5, rng=rng), Sigmoid(),
                        Reshape((5, 26, 26), (5 * 26 * 26, 1)), Dense(5 * 26 * 26, 100, rng=rng),
                        Sigmoid(), Dense(100, 2, rng=rng), Sigmoid()])
    history = model.fit(x[:200], y[:200], epochs=3, batch_size=8, loss="binary_cross_entropy",
                        optimizer=SGD(0.5), seed=0, verbose=False)
    assert history["accuracy"][-1] is not None
    predictions = np.argmax(model.predict(x[200:])[:, :, 0], axis=1)
    assert np.mean(predictions == labels[chosen][200:]) >= 0.95


def test_train_and_predict_take_a_sequential_and_refuse_what_is_not_a_network():
    model = Sequential([Dense(2, 1, dtype=np.float64, rng=0)])
    train(model, mse, mse_prime, np.ones((3, 2)), np.ones((3, 1)), epochs=2, verbose=False)
    assert predict(model, np.ones(2)).shape == (1,)
    with pytest.raises(TypeError, match="no forward and backward"):
        train([object()], mse, mse_prime, [1.0], [1.0], epochs=1)
    with pytest.raises(ValueError, match="same number of samples"):
        train(model, mse, mse_prime, np.ones((3, 2)), np.ones((2, 1)), epochs=1)
    assert Convolutional.__name__ == "Convolution"
    assert binary_cross_entropy([1.0], [0.5]) == pytest.approx(np.log(2))
    np.testing.assert_allclose(binary_cross_entropy_prime([1.0], [0.5]), [-2.0])
