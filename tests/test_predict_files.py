"""`cyconv predict` on picture files, and its output through a pipe."""

import subprocess
import sys

import numpy as np
import pytest

from cyconv import Sequential
from cyconv.cli import main
from cyconv.datasets import load_mnist_5k, prepare_images, read_image, write_idx

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "digits.npz"
    assert main(["train", "--epochs", "1", "--limit", "1000", "--quiet", "-o", str(path)]) == 0
    return path


def digit(index):
    images, labels = load_mnist_5k()
    return images[index], int(labels[index])


def test_read_image_inverts_a_dark_drawing_on_white_paper(tmp_path):
    image, _ = digit(0)
    light = tmp_path / "white-on-black.png"
    dark = tmp_path / "black-on-white.png"
    Image.fromarray(image).save(light)
    Image.fromarray(255 - image).save(dark)
    expected = prepare_images(image)[0]
    # Same size: no resampling, so the pixels come back exactly.
    np.testing.assert_allclose(read_image(light), expected, atol=1e-7)
    np.testing.assert_allclose(read_image(dark), expected, atol=1e-7)
    np.testing.assert_allclose(read_image(dark, invert=False), 1 - expected, atol=1e-7)


def test_read_image_makes_grey_resizes_and_fills_transparency_with_paper(tmp_path):
    # A black stroke on a transparent background, drawn big in colour.
    rgba = np.zeros((112, 84, 4), dtype=np.uint8)
    rgba[20:90, 38:46] = (0, 0, 0, 255)
    path = tmp_path / "stroke.png"
    Image.fromarray(rgba, "RGBA").save(path)
    x = read_image(path, size=(28, 21), dtype=np.float64)
    assert x.shape == (1, 28, 21) and x.dtype == np.float64
    # Transparent counts as white paper, so the drawing is inverted: black
    # border, light stroke.
    assert x[0, 0].max() == 0 and x[0, :, 0].max() == 0
    assert x[0, 14, 10] > 0.9
    # A JPEG in colour, lightly lossy.
    rgb = np.full((28, 28, 3), 255, dtype=np.uint8)
    rgb[5:23, 12:16] = (10, 10, 10)
    Image.fromarray(rgb, "RGB").save(tmp_path / "d.jpg", quality=95)
    y = read_image(tmp_path / "d.jpg")
    assert abs(float(y[0, 14, 13]) - 245 / 255) < 0.05 and float(y[0, 0, 0]) < 0.05


def test_predict_names_each_picture_and_agrees_with_the_model(model_path, tmp_path, capsys):
    model = Sequential.load(model_path)
    paths, expected = [], []
    for index, dark in ((0, False), (1500, True), (3200, False)):
        image, _ = digit(index)
        path = tmp_path / f"digit{index}.{'jpg' if index == 3200 else 'png'}"
        Image.fromarray(255 - image if dark else image).save(path)
        paths.append(str(path))
        expected.append(int(np.argmax(model.predict(read_image(path)[np.newaxis]))))
    npy = tmp_path / "two.npy"
    np.save(npy, np.stack([digit(7)[0], digit(8)[0]]))
    status = main(["predict", str(model_path), *paths, str(npy)])
    out, err = capsys.readouterr()
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["image", "digit", "probability"]
    assert [line.split()[0] for line in lines[1:]] == paths + [f"{npy}[0]", f"{npy}[1]"]
    assert [int(line.split()[1]) for line in lines[1:4]] == expected


def test_a_bad_picture_is_one_line(model_path, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["predict", str(model_path), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cyconv: error: {bad} is not a readable image") and err.count("\n") == 1


def test_without_pillow_the_message_says_what_to_install(model_path, tmp_path, capsys,
                                                         monkeypatch):
    path = tmp_path / "d.png"
    Image.fromarray(digit(0)[0]).save(path)
    monkeypatch.setitem(sys.modules, "PIL", None)   # import PIL now raises ImportError
    assert main(["predict", str(model_path), str(path)]) == 1
    assert "pip install 'cyconv[images]'" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(model_path, tmp_path):
    """`cyconv predict ... | head -1`: no "Broken pipe", no exit status 1."""
    images, _ = load_mnist_5k()
    many = tmp_path / "many-idx3-ubyte"
    write_idx(many, images)   # 5,000 lines, far more than a pipe holds
    process = subprocess.Popen(
        [sys.executable, "-m", "cyconv", "predict", str(model_path), str(many)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    first = process.stdout.readline()
    process.stdout.close()   # what `head -1` does after its line
    status = process.wait(timeout=300)
    err = process.stderr.read().decode()
    process.stderr.close()
    assert first.split() == [b"image", b"digit", b"probability"]
    assert err == ""
    # 128 + SIGPIPE, as a shell reports `cat` in `cat big | head -1`.
    assert status == 141
