"""Inference over a Dask array of images: the model runs where the chunks are.

``predict`` maps :meth:`Sequential.predict` over the chunks of a dask array
along its first axis; ``evaluate`` scores each chunk and sums the scores.
The model enters the task graph once, as one task of its own, so a
``dask.distributed`` cluster sends it to each worker once, however many
chunks that worker computes.

The results are ``model.predict(images, batch_size)``'s, bit for bit: a
dense layer's matrix product is BLAS's, whose rounding may depend on how
many samples one product holds, so the chunks are cut at whole batches
(rechunked where they are not) and every batch is one that
``model.predict`` would form.

Needs the optional extra ``cyconv[dask]`` (``pip install "cyconv[dask]"``).
The functions run on the workers are this module's, so the workers need
cyconv installed, as they would for any library.
"""

import numpy as np

__all__ = ["evaluate", "predict"]

INSTALL_HINT = 'pip install "cyconv[dask]"'


def _dask():
    try:
        import dask
        import dask.array
    except ImportError as exc:
        raise ImportError(f"cyconv.dask needs dask: {INSTALL_HINT}") from exc
    return dask


def _sample_chunks(images):
    """``images`` as a dask array cut along the first axis only."""
    dask = _dask()
    array = images if isinstance(images, dask.array.Array) else dask.array.asarray(images)
    if array.ndim < 2:
        raise ValueError(f"images must be a batch (N, ...) of samples, got shape {array.shape}")
    return array.rechunk({axis: -1 for axis in range(1, array.ndim)})


def _whole_batches(images, batch_size):
    """``images`` rechunked, where needed, so that every chunk but the last
    holds a whole number of batches of ``batch_size``."""
    sizes = images.chunks[0]
    if all(size % batch_size == 0 for size in sizes[:-1]):
        return images
    batches = max(1, round(float(np.median(sizes)) / batch_size))
    return images.rechunk({0: batches * batch_size})


def _predict_chunk(chunk, model, batch_size):
    if len(chunk) == 0:
        return np.zeros((0,) + model.predict(np.zeros((1,) + chunk.shape[1:])).shape[1:],
                        dtype=model.dtype)
    return model.predict(chunk, batch_size=batch_size)


def predict(model, images, batch_size=256):
    """``model.predict`` over a dask array of images, lazily.

    Parameters
    ----------
    model : Sequential
    images : dask.array.Array or array_like, shape (N, ...)
        Chunked along the first axis (other axes are joined into one
        chunk; chunks are cut at whole batches, see above).
    batch_size : int, default 256
        Samples per forward pass.

    Returns
    -------
    dask.array.Array, shape (N, ...)
        The outputs, chunked along the first axis; call
        ``.compute()`` for a numpy array.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from cyconv import Sequential, Dense
    >>> from cyconv.dask import predict
    >>> model = Sequential([Dense(4, 3, rng=0)])
    >>> images = da.from_array(np.ones((10, 4), dtype=np.float32), chunks=4)
    >>> out = predict(model, images, batch_size=4)
    >>> out.chunks
    ((4, 4, 2), (3,))
    >>> np.array_equal(out.compute(), model.predict(np.ones((10, 4), dtype=np.float32), 4))
    True
    """
    dask = _dask()
    from ._validation import as_int

    batch_size = as_int(batch_size, "batch_size", 1)
    images = _whole_batches(_sample_chunks(images), batch_size)
    # One sample on the client gives the output's shape and dtype.
    sample = model.predict(np.zeros((1,) + images.shape[1:], dtype=images.dtype))
    shipped = dask.delayed(model, pure=True)
    run = dask.delayed(_predict_chunk, pure=True)
    return dask.array.concatenate([
        dask.array.from_delayed(run(chunk, shipped, batch_size),
                                shape=(count,) + sample.shape[1:], dtype=sample.dtype)
        for chunk, count in zip(images.to_delayed().ravel(), images.chunks[0])
    ])


def evaluate(model, images, labels, loss=None, batch_size=256):
    """Loss and accuracy of ``model`` over dask arrays of images and labels.

    Each chunk is scored where it lies; only four numbers per chunk come
    back.

    Returns
    -------
    dict
        ``{"loss": float, "accuracy": float or None}``, as
        :meth:`Sequential.evaluate` gives on the whole data set.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from cyconv import Sequential, Dense
    >>> from cyconv.dask import evaluate
    >>> model = Sequential([Dense(2, 2, dtype=np.float64)])
    >>> model.layers[0].weight.value[...] = np.eye(2)
    >>> x = da.from_array(np.array([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]]), chunks=2)
    >>> evaluate(model, x, np.array([0, 1, 1]))["accuracy"]
    0.6666666666666666
    """
    dask = _dask()
    from .distributed import score_sums, scores_from_sums
    from .nn.training import evaluation_loss

    loss = evaluation_loss(model, loss)  # by default the one the model was trained with
    images = _sample_chunks(images)
    labels = labels if isinstance(labels, dask.array.Array) else dask.array.asarray(labels)
    if labels.ndim == 0 or len(labels) != len(images):
        raise ValueError(f"labels must hold one entry per image ({len(images)}), got shape "
                         f"{labels.shape}")
    labels = labels.rechunk((images.chunks[0],) + tuple((n,) for n in labels.shape[1:]))
    shipped = dask.delayed(model, pure=True)
    score = dask.delayed(score_sums, pure=True)
    rows = [score(shipped, chunk, chunk_labels, loss, batch_size)
            for chunk, chunk_labels in zip(images.to_delayed().ravel(),
                                           labels.to_delayed().ravel())]
    return scores_from_sums(np.sum(dask.compute(*rows), axis=0), "images")
