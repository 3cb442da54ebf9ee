"""cyconv.plot: every figure renders to a real, non-blank PNG of the
expected size, and the command line writes the two the README shows."""

import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib  # noqa: E402

from cyconv import Convolution, Dense, Flatten, MaxPooling, ReLU, Sequential  # noqa: E402
from cyconv import plot  # noqa: E402
from cyconv.cli import main  # noqa: E402


@pytest.fixture(autouse=True)
def agg_backend():
    previous = matplotlib.get_backend()
    matplotlib.use("Agg")
    yield
    matplotlib.use(previous)


def png_size(path):
    """(width, height) from the PNG header, read by hand."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def png_pixels(path):
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=float)


def assert_real_picture(path, size):
    assert png_size(path) == size
    pixels = png_pixels(path)
    assert pixels.shape == (size[1], size[0])
    # Not blank: many grey levels, and a fair share of non-white pixels.
    assert len(np.unique(pixels)) > 10
    assert np.mean(pixels < 250) > 0.02


def small_model():
    rng = np.random.default_rng(0)
    return Sequential([Convolution((1, 12, 12), 3, 6, rng=rng), ReLU(), MaxPooling(2),
                       Convolution((6, 5, 5), 3, 4, rng=rng), ReLU(), Flatten(),
                       Dense(36, 3, rng=rng)])


def test_training_curves(tmp_path):
    history = {"loss": [2.0, 1.1, 0.7, 0.5], "accuracy": [0.3, 0.6, 0.8, 0.85],
               "val_loss": [1.8, 1.2, 0.9, 0.8], "val_accuracy": [0.35, 0.55, 0.7, 0.75],
               "seconds": [1, 1, 1, 1]}
    figure = plot.plot_history(history, tmp_path / "curves.png")
    assert_real_picture(tmp_path / "curves.png", (800, 350))
    loss_axes = figure.axes[0]
    assert [line.get_label() for line in loss_axes.get_lines()] == ["training", "validation"]
    np.testing.assert_array_equal(loss_axes.get_lines()[1].get_ydata(), history["val_loss"])
    # A regression: no accuracy panel.
    plot.plot_history({"loss": [1.0, 0.5], "accuracy": [None, None]}, tmp_path / "r.png")
    assert png_size(tmp_path / "r.png") == (400, 350)


def test_first_layer_filters(tmp_path):
    model = small_model()
    figure = plot.plot_filters(model, tmp_path / "filters.png")
    assert len(figure.axes) == 6
    np.testing.assert_array_equal(figure.axes[5].get_images()[0].get_array(),
                                  model.layers[0].weight.value[5, 0])
    assert_real_picture(tmp_path / "filters.png", (300, 200))


def test_feature_maps_layer_by_layer(tmp_path):
    model = small_model()
    sample = np.random.default_rng(1).random((1, 12, 12))
    figure = plot.plot_feature_maps(model, sample, tmp_path / "maps.png", max_maps=4)
    rows = [axes.get_ylabel() for axes in figure.axes[::4]]
    assert rows == ["input", "Convolution", "ReLU", "MaxPooling", "Convolution", "ReLU"]
    shown = figure.axes[4].get_images()[0].get_array()   # first map of the first conv
    np.testing.assert_allclose(shown, model.layers[0].forward(sample)[0], rtol=1e-6)
    assert_real_picture(tmp_path / "maps.png", (400, 600))


def test_confusion_matrix(tmp_path):
    matrix = np.array([[50, 2, 0], [3, 40, 7], [0, 1, 60]])
    figure = plot.plot_confusion_matrix(matrix, tmp_path / "cm.png")
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert texts == [str(v) for v in matrix.ravel()]
    assert_real_picture(tmp_path / "cm.png", (500, 500))


@pytest.mark.parametrize("call, words", [
    (lambda: plot.plot_history({"accuracy": [1]}), "'loss'"),
    (lambda: plot.plot_history({"loss": []}), "empty"),
    (lambda: plot.plot_filters(Sequential([Dense(2, 2)])), "no Convolution"),
    (lambda: plot.plot_feature_maps(small_model(), np.zeros((12, 12))), "(C, H, W)"),
    (lambda: plot.plot_confusion_matrix(np.zeros((2, 3))), "square"),
    (lambda: plot.plot_confusion_matrix(np.eye(2), class_names=["a"]), "name 2 classes"),
])
def test_bad_arguments(call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value)


def test_the_command_line_writes_curves_and_a_confusion_matrix(tmp_path, capsys):
    model, curves, confusion = (tmp_path / name for name in ("m.npz", "c.png", "cm.png"))
    assert main(["train", "--epochs", "2", "--limit", "300", "--quiet", "-o", str(model),
                 "--plot", str(curves)]) == 0
    assert f"wrote the training curves to {curves}" in capsys.readouterr().out
    assert_real_picture(curves, (800, 350))
    assert main(["evaluate", str(model), "--plot", str(confusion)]) == 0
    assert_real_picture(confusion, (500, 500))


def test_a_plot_path_in_no_directory_fails_before_training(tmp_path, capsys):
    status = main(["train", "--epochs", "1", "-o", str(tmp_path / "m.npz"),
                   "--plot", str(tmp_path / "absent" / "c.png")])
    captured = capsys.readouterr()
    assert status == 1 and "no directory" in captured.err
    assert "epoch" not in captured.out and not (tmp_path / "m.npz").exists()


def test_without_matplotlib_the_message_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install 'cyconv\[plot\]'"):
        plot.plot_history({"loss": [1.0]})
