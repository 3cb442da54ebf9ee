"""Reading ordinary image files (PNG, JPEG, ...) as network input, with
Pillow (``pip install 'cyconv[images]'``)."""

import os

import numpy as np

# A file whose outermost ring of pixels is on average lighter than this
# (out of 255) is taken as a dark drawing on a light background.
LIGHT_BORDER = 127.5

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_image_file(path):
    """Whether ``path``'s extension names an image format Pillow reads."""
    return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading image files needs Pillow: pip install 'cyconv[images]' "
                          "(or pip install Pillow)") from None
    return Image


def read_image(path, size=(28, 28), invert="auto", dtype=np.float32):
    """One image file as a grey ``(1, H, W)`` network input in [0, 1],
    in MNIST's convention: a light drawing on a black background.

    The image is converted to grey levels (transparent pixels count as
    white paper), resized to ``size`` (bilinear; the whole picture is
    scaled, so crop a digit tightly for MNIST-like framing), and scaled
    to [0, 1].

    Parameters
    ----------
    path : str or path-like
        Any format Pillow reads: PNG, JPEG, BMP, GIF, TIFF, WebP.
    size : pair of ints, default (28, 28)
        ``(H, W)`` of the result.
    invert : "auto", bool, default "auto"
        ``"auto"`` inverts the image when the mean of its border pixels is
        lighter than mid-grey (above 127.5 of 255): a dark pen on white
        paper becomes MNIST's white digit on black.  True or False decide.
    dtype : float32 or float64

    Returns
    -------
    ndarray, shape (1, H, W)

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from cyconv.datasets import read_image
    >>> drawing = np.full((56, 56), 255, dtype=np.uint8)   # white paper
    >>> drawing[10:46, 24:32] = 0                           # a black stroke
    >>> path = os.path.join(tempfile.mkdtemp(), "one.png")
    >>> Image.fromarray(drawing).save(path)
    >>> x = read_image(path)
    >>> x.shape, float(x[0, 0, 0]), float(x[0, 14, 14])     # inverted: black border
    ((1, 28, 28), 0.0, 1.0)
    """
    Image = _pillow()
    if invert != "auto" and not isinstance(invert, (bool, np.bool_)):
        raise ValueError(f"invert must be 'auto', True or False, got {invert!r}")
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair of ints (H, W), got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            grey = image.convert("L").resize((width, height), Image.Resampling.BILINEAR)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # Pillow raises several kinds for a bad file
        raise ValueError(f"{path} is not a readable image: {exc}") from None
    pixels = np.asarray(grey, dtype=np.float64)
    if invert == "auto":
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        invert = bool(border.mean() > LIGHT_BORDER)
    if invert:
        pixels = 255.0 - pixels
    return (pixels / 255.0).astype(dtype)[np.newaxis]
