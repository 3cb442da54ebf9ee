"""Pictures of a model and its training, with matplotlib (``pip install
'cyconv[plot]'``): training curves, the first layer's filters, a sample's
feature maps layer by layer, and a confusion matrix.

Every function returns a :class:`matplotlib.figure.Figure` and, given a
``path``, also writes it there (the format follows the extension: ``.png``,
``.svg``, ``.pdf``).  Figures are built without :mod:`matplotlib.pyplot`, so
they change no global state, open no window and work on a machine without a
display; show one in a notebook by leaving it as a cell's value.

Examples
--------
>>> from cyconv.plot import plot_history
>>> figure = plot_history({"loss": [1.0, 0.5, 0.3], "accuracy": [0.6, 0.8, 0.9]})
>>> [axes.get_title() for axes in figure.axes]
['loss', 'accuracy']
"""

import math

import numpy as np

__all__ = ["plot_history", "plot_filters", "plot_feature_maps", "plot_confusion_matrix"]

DPI = 100


def _figure(width, height):
    """A figure of ``width`` x ``height`` inches, detached from pyplot."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("cyconv.plot needs matplotlib: pip install 'cyconv[plot]' "
                          "(or pip install matplotlib)") from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _finish(figure, path):
    if path is not None:
        figure.savefig(path, dpi=DPI)
    return figure


def plot_history(history, path=None):
    """Training curves: the loss and, where recorded, the accuracy, per epoch,
    with their validation counterparts.

    Parameters
    ----------
    history : dict of lists
        What :meth:`cyconv.Sequential.fit` returns: ``"loss"`` and optionally
        ``"accuracy"``, ``"val_loss"``, ``"val_accuracy"``.
    path : str or path-like, optional
        Where to write the figure.

    Returns
    -------
    matplotlib.figure.Figure
        8 x 3.5 inches (800 x 350 pixels as PNG) with two panels, or 4 x 3.5
        with the loss alone.

    Examples
    --------
    >>> from cyconv.plot import plot_history
    >>> figure = plot_history({"loss": [0.9, 0.4], "val_loss": [1.0, 0.6]})
    >>> len(figure.axes), figure.get_size_inches().tolist()
    (1, [4.0, 3.5])
    """
    if not isinstance(history, dict) or "loss" not in history:
        raise ValueError("history must be a dict with a 'loss' list, as fit() returns")
    losses = _series(history, "loss")
    if not losses:
        raise ValueError("history['loss'] is empty: nothing to plot")
    panels = [("loss", "loss")]
    accuracy = _series(history, "accuracy")
    if any(value is not None for value in accuracy):
        panels.append(("accuracy", "accuracy"))
    figure = _figure(4.0 * len(panels), 3.5)
    for axes, (key, title) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for name, style in ((key, "-o"), (f"val_{key}", "--s")):
            values = _series(history, name)
            if values and any(value is not None for value in values):
                epochs = np.arange(1, len(values) + 1)
                series = np.array([np.nan if v is None else v for v in values], dtype=float)
                axes.plot(epochs, series, style, markersize=3,
                          label="training" if name == key else "validation")
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend()
    return _finish(figure, path)


def _series(history, name):
    values = history.get(name)
    if values is None:
        return []
    try:
        return list(values)
    except TypeError:
        raise ValueError(f"history[{name!r}] must be a list of numbers, got {values!r}") from None


def _first_convolution(model):
    layers = getattr(model, "layers", [model])
    for layer in layers:
        if type(layer).__name__ == "Convolution":
            return layer
    raise ValueError("the model has no Convolution layer whose filters could be shown")


def _grid(count):
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def plot_filters(model, path=None):
    """The first convolution's filters as a grid of images, one per
    (filter, input channel), on one grey scale centred on zero.

    Parameters
    ----------
    model : Sequential or Convolution
    path : str or path-like, optional

    Returns
    -------
    matplotlib.figure.Figure
        A square figure, 1 inch per tile across.

    Examples
    --------
    >>> from cyconv import Convolution
    >>> from cyconv.plot import plot_filters
    >>> figure = plot_filters(Convolution((1, 8, 8), 3, 4, rng=0))
    >>> len(figure.axes)
    4
    """
    weights = np.asarray(_first_convolution(model).weight.value, dtype=np.float64)
    filters, channels = weights.shape[:2]
    tiles = weights.reshape(filters * channels, *weights.shape[2:])
    rows, columns = _grid(len(tiles))
    figure = _figure(max(2.0, float(columns)), max(2.0, float(rows)))
    limit = float(np.max(np.abs(tiles))) or 1.0
    for index, (axes, tile) in enumerate(zip(figure.subplots(rows, columns, squeeze=False).flat,
                                             tiles)):
        axes.imshow(tile, cmap="gray", vmin=-limit, vmax=limit, interpolation="nearest")
        axes.set_title(f"{index // channels}" if channels == 1
                       else f"{index // channels}.{index % channels}", fontsize=7)
    for axes in figure.axes:
        axes.set_axis_off()
    for axes in figure.axes[len(tiles):]:
        figure.delaxes(axes)
    return _finish(figure, path)


def plot_feature_maps(model, sample, path=None, max_maps=8):
    """One sample's way through the model, in evaluation mode: a row per
    layer whose output is an image (``(C, H, W)``), showing up to
    ``max_maps`` channels.

    Parameters
    ----------
    model : Sequential
    sample : array_like, shape (C, H, W)
        One input, as the model takes it (no batch axis).
    path : str or path-like, optional
    max_maps : int, default 8

    Returns
    -------
    matplotlib.figure.Figure
        ``max_maps`` inches wide (at most the widest row), 1 inch per row.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Sequential, Convolution, ReLU, MaxPooling
    >>> from cyconv.plot import plot_feature_maps
    >>> model = Sequential([Convolution((1, 8, 8), 3, 2, rng=0), ReLU(), MaxPooling(2)])
    >>> figure = plot_feature_maps(model, np.ones((1, 8, 8)))
    >>> [axes.get_ylabel() for axes in figure.axes[::2]]
    ['input', 'Convolution', 'ReLU', 'MaxPooling']
    """
    if isinstance(max_maps, bool) or not isinstance(max_maps, int) or max_maps < 1:
        raise ValueError(f"max_maps must be a positive int, got {max_maps!r}")
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"model must be a Sequential, got {type(model).__name__}")
    x = np.asarray(sample)
    if x.ndim != 3:
        raise ValueError(f"sample must be one input of shape (C, H, W), got {x.shape}")
    from .nn.training import modes

    rows = [("input", x)]
    out = x[np.newaxis].astype(model.dtype or np.float64)
    with modes(model, False):   # as predict sees it: Dropout off, BatchNorm's statistics
        for layer in layers:
            out = layer.forward(out)
            if out.ndim == 4:
                rows.append((type(layer).__name__, out[0]))
    columns = min(max_maps, max(len(maps) for _, maps in rows))
    figure = _figure(max(2.0, float(columns)), float(len(rows)))
    grid = figure.subplots(len(rows), columns, squeeze=False)
    for (name, maps), row in zip(rows, grid):
        for channel, axes in enumerate(row):
            axes.set_xticks([])
            axes.set_yticks([])
            if channel < len(maps) and channel < max_maps:
                axes.imshow(maps[channel], cmap="viridis", interpolation="nearest")
            else:
                axes.set_frame_on(False)
        row[0].set_ylabel(name, fontsize=7)
    return _finish(figure, path)


def plot_confusion_matrix(matrix, path=None, class_names=None):
    """A confusion matrix as a heat map with its counts written in.

    Parameters
    ----------
    matrix : array_like, shape (K, K)
        Rows: true class, columns: predicted class, as
        :func:`cyconv.metrics.confusion_matrix` returns it.
    path : str or path-like, optional
    class_names : list of str, optional
        Tick labels; the class numbers by default.

    Returns
    -------
    matplotlib.figure.Figure
        5 x 5 inches (500 x 500 pixels as PNG).

    Examples
    --------
    >>> from cyconv.plot import plot_confusion_matrix
    >>> figure = plot_confusion_matrix([[5, 1], [0, 7]], class_names=["cat", "dog"])
    >>> figure.axes[0].get_xlabel()
    'predicted'
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise ValueError(f"matrix must be square (K, K), got shape {matrix.shape}")
    if matrix.dtype.kind not in "biuf":
        raise TypeError(f"matrix must hold counts, got dtype {matrix.dtype}")
    size = len(matrix)
    names = [str(c) for c in range(size)] if class_names is None else list(map(str, class_names))
    if len(names) != size:
        raise ValueError(f"class_names must name {size} classes, got {len(names)}")
    figure = _figure(5.0, 5.0)
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues", interpolation="nearest")
    threshold = matrix.max() / 2 if matrix.max() > 0 else 1
    if size <= 20:
        for (row, column), value in np.ndenumerate(matrix):
            text = f"{value:g}" if matrix.dtype.kind == "f" else str(value)
            axes.text(column, row, text, ha="center", va="center", fontsize=7,
                      color="white" if value > threshold else "black")
    axes.set_xticks(range(size), names, fontsize=7)
    axes.set_yticks(range(size), names, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    return _finish(figure, path)
