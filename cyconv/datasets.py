"""Data sets: the IDX file format, MNIST, and the bundled MNIST-5k.

MNIST-5k ships inside the package (``cyconv/data/mnist-5k/``, with its
README.md attribution): 5,000 digits of the MNIST training set, 500 of each
class, so that a network can be trained with nothing to download.
"""

import gzip
import math
import os
import stat
import struct
import zlib
from importlib import resources

import numpy as np

from ._images import read_image

__all__ = [
    "read_idx",
    "read_image",
    "write_idx",
    "load_mnist_5k",
    "load_mnist",
    "stratified_split",
    "prepare_images",
    "RandomShift",
]

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


# What read_idx accepts by default: 8 GiB of data, 170 times the full MNIST.
MAX_IDX_BYTES = 2**33

# Deflate's largest expansion: one 258-byte match per 2 bits, about 1032 to
# 1, and every gzip member costs at least 18 bytes of header and trailer.
# A header declaring more data than the compressed file could hold is
# refused before anything is inflated.
_DEFLATE_MAX_RATIO = 1032

# How much of the file is read, and inflated, at a time.
_CHUNK = 1 << 18


class _Reader:
    """A file's bytes, read on demand from an open binary stream.

    Plain files are read as asked.  gzip data (judged by content) are
    inflated only as far as asked, member after member (pigz and bgzip
    write several), so that a small file that inflates to gigabytes costs
    no more than the header says the data need."""

    def __init__(self, stream, path):
        self.stream = stream
        self.path = path
        info = os.fstat(stream.fileno())
        # The size of a regular file; None for a pipe or a device.
        self.size = info.st_size if stat.S_ISREG(info.st_mode) else None
        self.compressed = stream.peek(2)[:2] == _GZIP_MAGIC
        self.inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if self.compressed else None
        self.pending = b""  # compressed bytes read but not yet inflated

    def check_size(self, header, shape, data):
        """Raise ValueError, before any data are read, if ``data`` bytes
        (of the header's ``shape``) after a ``header``-byte header cannot be
        what the file holds."""
        if self.size is None:
            return
        if not self.compressed:
            if self.size < header + data:
                raise ValueError(f"{self.path}: truncated: the header's shape {shape} needs "
                                 f"{data} bytes of data, the file has {self.size - header}")
            if self.size > header + data:
                raise ValueError(f"{self.path}: more bytes than the header's shape {shape} "
                                 f"allows ({data} bytes of data, the file has "
                                 f"{self.size - header})")
        elif data + header > _DEFLATE_MAX_RATIO * self.size:
            raise ValueError(f"{self.path}: the header's shape {shape} needs {data} bytes of "
                             f"data, more than a {self.size}-byte gzip file can inflate to")

    def read(self, size):
        """Up to ``size`` more bytes (fewer only at the end of the data)."""
        buffer = bytearray(size)
        return bytes(buffer[:self.read_into(memoryview(buffer))])

    def read_into(self, buffer):
        """Fill the writable byte ``buffer`` with the next bytes; return how
        many there were (fewer than its length only at the end of the data)."""
        size, got = len(buffer), 0
        while got < size:
            if not self.compressed:
                count = self.stream.readinto(buffer[got:])
                if not count:
                    break
                got += count
                continue
            if self.inflate.eof and not self._next_member():
                break
            if not self.pending:
                self.pending = self.stream.read(_CHUNK)
                if not self.pending:
                    raise ValueError(f"{self.path}: corrupt or truncated gzip data "
                                     f"(the compressed stream ends early)")
            try:
                data = self.inflate.decompress(self.pending, min(size - got, _CHUNK))
            except zlib.error as exc:
                raise ValueError(f"{self.path}: corrupt or truncated gzip data ({exc})") from None
            # At the end of a member, what follows it is in unused_data
            # (and, when the output was full too, in unconsumed_tail again).
            self.pending = b"" if self.inflate.eof else self.inflate.unconsumed_tail
            buffer[got:got + len(data)] = data
            got += len(data)
        return got

    def _next_member(self):
        """Start inflating the next gzip member; False at the end of the
        file.  Zero bytes after the last member (padding some tools add)
        are ignored, as the gzip module does; anything else is refused."""
        self.pending = self.inflate.unused_data + self.pending
        while len(self.pending) < 2:
            more = self.stream.read(_CHUNK)
            if not more:
                break
            self.pending += more
        if not self.pending:
            return False
        if self.pending.startswith(_GZIP_MAGIC):
            self.inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            return True
        while not self.pending.strip(b"\0"):
            self.pending = self.stream.read(_CHUNK)
            if not self.pending:
                return False
        raise ValueError(f"{self.path}: unexpected bytes after the gzip data")


def read_idx(path, max_bytes=MAX_IDX_BYTES):
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    The header is checked before any data are read: its declared size
    against ``max_bytes`` and the file's size (or, for gzip, the most the
    file could inflate to), so that a corrupt or hostile header costs no
    memory.  gzip data are inflated only up to the declared size; files
    of several gzip members (as pigz and bgzip write) are read whole.

    Parameters
    ----------
    path : str or path-like
    max_bytes : int, default 2**33
        The most data (after the header, once inflated) to accept.

    Returns
    -------
    array : ndarray
        In the file's element type (uint8 for MNIST), native byte order,
        shaped as the header says.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the magic number is not an IDX one, the header declares more
        than ``max_bytes`` of data, or the data are shorter or longer than
        the header's dimensions say (truncated or corrupt).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from cyconv.datasets import read_idx, write_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
    >>> write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    >>> read_idx(path)
    array([3, 1, 4], dtype=uint8)
    """
    path = os.fspath(path)
    if isinstance(max_bytes, (bool, np.bool_)) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"max_bytes must be an int, got {max_bytes!r}")
    with open(path, "rb") as stream:
        return _read_idx(_Reader(stream, path), path, int(max_bytes))


def _read_idx(reader, path, max_bytes):
    data = reader.read(4)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data)
    if zero != 0 or code not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic number 0x{data.hex()})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares no dimensions")
    header = 4 + 4 * ndim
    data += reader.read(header - 4)
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_bytes:
        raise ValueError(f"{path}: the header's shape {shape} declares {expected} bytes of "
                         f"data, more than max_bytes={max_bytes}")
    reader.check_size(header, shape, expected)
    # Read straight into the array: the data are held once.
    array = np.empty(shape, dtype=dtype)
    got = reader.read_into(memoryview(array.reshape(-1).view(np.uint8)))
    if got < expected:
        raise ValueError(f"{path}: truncated: the header's shape {shape} needs {expected} "
                         f"bytes of data, the file has {got}")
    # One byte more than the header allows is enough to refuse the file.
    if reader.read(1):
        raise ValueError(f"{path}: more bytes than the header's shape {shape} allows")
    if not dtype.isnative:
        array.byteswap(inplace=True)  # to this machine's order, in place
    return array.view(dtype.newbyteorder("="))


def write_idx(path, array, compress=None):
    """Write ``array`` as an IDX file, the inverse of :func:`read_idx`.

    Parameters
    ----------
    path : str or path-like
    array : array_like
        uint8, int8, int16, int32, float32 or float64, at least one axis.
    compress : bool, optional
        gzip the file; by default, when ``path`` ends in ``.gz``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from cyconv.datasets import read_idx, write_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "images-idx3-ubyte")
    >>> write_idx(path, np.zeros((2, 28, 28), dtype=np.uint8))
    >>> read_idx(path).shape
    (2, 28, 28)
    """
    path = os.fspath(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"IDX cannot hold dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    if max(array.shape) >= 2**32:
        raise ValueError(f"IDX sizes are 32-bit: every axis must be shorter than 2**32, "
                         f"got shape {array.shape}")
    payload = (struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
               + array.astype(_IDX_TYPES[code], copy=False).tobytes())
    if compress is None:
        compress = os.fsdecode(path).endswith(".gz")  # path may be bytes
    if compress:
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as stream:
        stream.write(payload)


def _check_digits(images, labels, where):
    if images.ndim != 3:
        raise ValueError(f"{where}: images must have shape (N, rows, cols), got {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must have shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels")
    if labels.dtype.kind not in "iu":
        # 2.7 or NaN is no digit, and converting it to one would guess.
        raise ValueError(f"{where}: labels must be integers (digits 0 to 9), "
                         f"got an IDX file of {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{where}: labels must be digits 0 to 9, got values from "
                         f"{labels.min()} to {labels.max()}")
    return images, labels


def load_mnist_5k():
    """Return the bundled MNIST-5k digits: ``(images, labels)``.

    Returns
    -------
    images : ndarray of uint8, shape (5000, 28, 28)
        Grey levels 0 to 255.
    labels : ndarray of uint8, shape (5000,)
        500 of each digit, sorted by label: shuffle (or use
        :func:`stratified_split`) before splitting.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.datasets import load_mnist_5k
    >>> images, labels = load_mnist_5k()
    >>> images.shape, images.dtype
    ((5000, 28, 28), dtype('uint8'))
    >>> np.bincount(labels)
    array([500, 500, 500, 500, 500, 500, 500, 500, 500, 500])
    """
    folder = resources.files("cyconv") / "data" / "mnist-5k"
    with resources.as_file(folder / "images-idx3-ubyte.gz") as images_path, \
            resources.as_file(folder / "labels-idx1-ubyte.gz") as labels_path:
        return _check_digits(read_idx(images_path), read_idx(labels_path), "MNIST-5k")


_MNIST_FILES = {
    "train": ("train-images", "train-labels"),
    "test": ("t10k-images", "t10k-labels"),
}


def _find_idx(directory, stem, suffix):
    # Both the original names (train-images-idx3-ubyte) and the common
    # re-packaging with a dot (train-images.idx3-ubyte), gzipped or not.
    names = [f"{stem}{sep}{suffix}{gz}" for sep in ("-", ".") for gz in (".gz", "")]
    for name in names:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"no {stem} file in {directory} (looked for {', '.join(names)})")


def load_mnist(directory, split="train"):
    """Load the full MNIST from its four IDX files in ``directory``.

    Parameters
    ----------
    directory : str or path-like
        Holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
        optionally ``.gz`` (or named ``train-images.idx3-ubyte`` and so on).
    split : {"train", "test"}, default "train"
        The 60,000 training digits or the 10,000 test digits.

    Returns
    -------
    images : ndarray of uint8, shape (N, 28, 28)
    labels : ndarray of uint8, shape (N,)

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from cyconv.datasets import load_mnist, write_idx
    >>> folder = tempfile.mkdtemp()
    >>> write_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"),
    ...           np.zeros((3, 28, 28), dtype=np.uint8))
    >>> write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"),
    ...           np.array([7, 2, 1], dtype=np.uint8))
    >>> images, labels = load_mnist(folder, "test")
    >>> images.shape, labels
    ((3, 28, 28), array([7, 2, 1], dtype=uint8))
    """
    directory = os.fsdecode(os.fspath(directory))  # bytes joined with str names fail
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory: {directory}")
    images_stem, labels_stem = _MNIST_FILES[split]
    images = read_idx(_find_idx(directory, images_stem, "idx3-ubyte"))
    labels = read_idx(_find_idx(directory, labels_stem, "idx1-ubyte"))
    return _check_digits(images, labels, f"MNIST {split} set in {directory}")


def stratified_split(labels, test_size, seed=0):
    """Split sample indices into train and test sets with the same class
    proportions.

    Parameters
    ----------
    labels : array_like, shape (N,)
        Class of each sample.
    test_size : int or float
        Number of test samples, or a fraction of N in (0, 1).
    seed : int, default 0
        Seed of the random choice within each class.

    Returns
    -------
    train_index, test_index : ndarray of int
        Disjoint, together every index once, each in random order.  Each
        class gets its share of the test set by largest remainder, so the
        sizes add up exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.datasets import stratified_split
    >>> labels = np.repeat([0, 1], 10)
    >>> train, test = stratified_split(labels, 0.2)
    >>> len(train), len(test), np.bincount(labels[test]).tolist()
    (16, 4, [2, 2])
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must have shape (N,) with N > 0, got {labels.shape}")
    n = labels.size
    if isinstance(test_size, (bool, np.bool_)):
        raise TypeError(f"test_size must be an int or a float, got {test_size!r}")
    if isinstance(test_size, (int, np.integer)):
        count = int(test_size)
    elif isinstance(test_size, (float, np.floating)) and 0 < test_size < 1:
        count = int(round(test_size * n))
    else:
        raise ValueError(f"test_size must be an int or a fraction in (0, 1), got {test_size!r}")
    if not 0 < count < n:
        raise ValueError(f"test_size must leave both sets non-empty: {count} of {n} samples")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    shares = counts * count / n
    quotas = np.floor(shares).astype(int)
    # Hand the remaining places to the largest remainders (ties: lower class).
    leftover = count - quotas.sum()
    quotas[np.argsort(-(shares - quotas), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    train, test = [], []
    for position in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == position))
        test.append(members[:quotas[position]])
        train.append(members[quotas[position]:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def prepare_images(images, dtype=np.float32):
    """Grey-level images to network input: a channel axis and values in [0, 1].

    Parameters
    ----------
    images : array_like, shape (N, H, W), (H, W) or (N, 1, H, W)
        Integers are taken as 0-255 grey levels and divided by 255; floats
        are taken as already scaled.
    dtype : float32 or float64

    Returns
    -------
    ndarray, shape (N, 1, H, W)

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.datasets import prepare_images
    >>> x = prepare_images(np.full((2, 28, 28), 255, dtype=np.uint8))
    >>> x.shape, x.dtype, float(x.max())
    ((2, 1, 28, 28), dtype('float32'), 1.0)
    """
    array = np.asarray(images)
    if array.dtype.kind not in "biuf" or array.dtype == np.float16:
        raise TypeError(f"images must hold integers or float32/float64, got {array.dtype}")
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), (H, W) or (N, 1, H, W), "
                         f"got {np.shape(images)}")
    scaled = array.astype(dtype)
    if array.dtype.kind in "biu":
        scaled /= 255
    return scaled[:, np.newaxis]


class RandomShift:
    """Data augmentation: move each image by a random whole number of pixels.

    Every image of a batch ``(N, C, H, W)`` is shifted by its own offsets
    in ``[-max_shift, max_shift]`` along each axis, zeros filling the
    border: a network trained on a few thousand digits then generalises
    noticeably better.  Pass it as ``augment`` to
    :meth:`cyconv.Sequential.fit`.

    Parameters
    ----------
    max_shift : int, default 1

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.datasets import RandomShift
    >>> image = np.zeros((1, 1, 3, 3))
    >>> image[0, 0, 1, 1] = 1
    >>> shifted = RandomShift(1)(image, np.random.default_rng(3))
    >>> int(shifted.sum()), shifted.shape
    (1, (1, 1, 3, 3))
    """

    def __init__(self, max_shift=1):
        if isinstance(max_shift, (bool, np.bool_)) or not isinstance(max_shift, (int, np.integer)):
            raise TypeError(f"max_shift must be an int, got {max_shift!r}")
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift = int(max_shift)

    def __repr__(self):
        return f"RandomShift({self.max_shift})"

    def __call__(self, images, rng):
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"RandomShift expects a batch (N, C, H, W), got {images.shape}")
        m = self.max_shift
        if m == 0:
            return images
        n, _, height, width = images.shape
        # A shift by the image's size or more leaves only zeros, as does
        # that size: the padding need not be wider, whatever max_shift is.
        mh, mw = min(m, height), min(m, width)
        down = np.clip(rng.integers(0, 2 * m + 1, n) - m, -mh, mh)
        right = np.clip(rng.integers(0, 2 * m + 1, n) - m, -mw, mw)
        # Output pixel (r, c) of an image shifted by (dy, dx) is input pixel
        # (r + dy, c + dx), or zero outside the image: one block copy for
        # all the images of each shift drawn (gathering every pixel through
        # index arrays took a sixth of a training step of the bundled
        # digits' LeNet at batch 32).
        shifted = np.zeros(images.shape, images.dtype)
        shift = (down + mh) * (2 * mw + 1) + (right + mw)
        for key in np.unique(shift).tolist():
            dy, dx = key // (2 * mw + 1) - mh, key % (2 * mw + 1) - mw
            which = np.flatnonzero(shift == key)
            shifted[which, :, max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)] = \
                images[which, :, max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
        return shifted
