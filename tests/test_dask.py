"""cyconv.dask on a local cluster of two worker processes: the same
predictions and scores as the model computes in this process."""

import numpy as np
import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
import dask.array as da  # noqa: E402

from cyconv import Convolution, Dense, Flatten, MaxPooling, ReLU, Sequential  # noqa: E402
from cyconv.dask import evaluate, predict  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def small_cnn(dtype):
    rng = np.random.default_rng(3)
    return Sequential([
        Convolution((2, 9, 9), 3, 4, dtype=dtype, rng=rng), ReLU(), MaxPooling(2),
        Flatten(), Dense(36, 5, dtype=dtype, rng=rng),
    ])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_on_workers_equals_predict_here(client, dtype):
    model = small_cnn(dtype)
    images = np.random.default_rng(0).standard_normal((53, 2, 9, 9)).astype(dtype)
    # Chunks cut also along a non-sample axis, in sizes that are not whole
    # batches: the dense layer's BLAS product may round differently with
    # another number of rows, so predict must form model.predict's batches.
    lazy = da.from_array(images, chunks=(17, 1, 9, 5))
    out = predict(model, lazy, batch_size=7)
    assert out.shape == (53, 5) and out.dtype == dtype
    assert all(size % 7 == 0 for size in out.chunks[0][:-1])
    computed = out.compute()
    assert computed.dtype == dtype
    np.testing.assert_array_equal(computed, model.predict(images, batch_size=7))
    # Chunks of whole batches are kept as they are.
    aligned = predict(model, da.from_array(images, chunks=(14, 2, 9, 9)), batch_size=7)
    assert aligned.chunks[0] == (14, 14, 14, 11)
    np.testing.assert_array_equal(aligned.compute(), model.predict(images, batch_size=7))
    np.testing.assert_array_equal(predict(model, lazy).compute(), model.predict(images))
    # Both workers took part.
    assert len(client.run(lambda: 1)) == 2


def test_model_enters_the_graph_once(client):
    model = small_cnn(np.float32)
    images = da.zeros((40, 2, 9, 9), dtype=np.float32, chunks=5)
    graph = dict(predict(model, images).__dask_graph__())
    holding_the_model = [key for key, task in graph.items() if model in _leaves(task)]
    assert len(holding_the_model) == 1


def _leaves(task):
    """Every object a task of the graph holds, whatever dask's task format."""
    stack, seen = [task], []
    while stack:
        item = stack.pop()
        seen.append(item)
        for name in ("args", "kwargs", "value"):
            inner = getattr(item, name, None)
            if isinstance(inner, dict):
                stack.extend(inner.values())
            elif isinstance(inner, (tuple, list)):
                stack.extend(inner)
            elif inner is not None and name == "value":
                stack.append(inner)
        if isinstance(item, (tuple, list)):
            stack.extend(item)
    return seen


def test_evaluate_on_workers_equals_evaluate_here(client):
    model = small_cnn(np.float64)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((45, 2, 9, 9))
    labels = rng.integers(0, 5, 45)
    scores = evaluate(model, da.from_array(images, chunks=10), labels, batch_size=4)
    expected = model.evaluate(images, labels)
    out = model.predict(images)
    # Independent reference for the accuracy: count the argmax hits.
    assert scores["accuracy"] == pytest.approx(np.mean(np.argmax(out, axis=1) == labels))
    assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-12)


def test_evaluate_with_a_loss_without_accuracy_and_mismatched_labels():
    model = Sequential([Dense(3, 1, dtype=np.float64, rng=0)])
    x = np.arange(12.0).reshape(4, 3)
    y = np.ones((4, 1))
    scores = evaluate(model, da.from_array(x, chunks=3), y, loss="mse")
    assert scores["loss"] == pytest.approx(np.mean((model.predict(x) - y) ** 2), rel=1e-12)
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate(model, da.from_array(x, chunks=3), np.ones(5))
    with pytest.raises(ValueError, match="batch"):
        predict(model, da.ones(3, chunks=2))
