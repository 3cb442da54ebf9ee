"""IDX files, the bundled MNIST-5k, the full-MNIST loader, splitting and
augmentation."""

import gzip
import hashlib
import re
import struct
import tracemalloc
from importlib import resources

import numpy as np
import pytest

from cyconv.datasets import (
    RandomShift,
    load_mnist,
    load_mnist_5k,
    prepare_images,
    read_idx,
    stratified_split,
    write_idx,
)

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", IDX_DTYPES)
@pytest.mark.parametrize("name", ["data-idx", "data-idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / name
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")


def test_idx_layout_is_the_published_one(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.array([7, 2], dtype=np.uint8))
    assert path.read_bytes() == b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x07\x02"
    write_idx(path, np.array([[1]], dtype=np.int16))
    assert path.read_bytes() == b"\x00\x00\x0b\x02" + struct.pack(">II", 1, 1) + b"\x00\x01"


def test_gzip_is_recognised_by_content_not_by_name(tmp_path):
    path = tmp_path / "images.idx"   # no .gz
    write_idx(path, np.ones((2, 2), dtype=np.uint8), compress=True)
    np.testing.assert_array_equal(read_idx(path), np.ones((2, 2)))


def idx_bytes(array):
    path_bytes = struct.pack(">HBB", 0, 0x08, array.ndim)
    path_bytes += struct.pack(f">{array.ndim}I", *array.shape)
    return path_bytes + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("content, words", [
    (b"", "not an IDX file"),
    (b"\x00\x00", "not an IDX file"),
    (b"PK\x03\x04rest", "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "magic number 0x00000701"),
    (b"\x00\x00\x08\x00", "no dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", "truncated IDX header"),
    (idx_bytes(np.zeros((3, 4, 4)))[:-5], r"truncated: .*\(3, 4, 4\) needs 48 bytes"),
    (idx_bytes(np.zeros((3, 4, 4))) + b"\x00", "more bytes than the header"),
    (gzip.compress(idx_bytes(np.zeros((3, 4, 4))) + b"\x00"), "more bytes than the header"),
    (gzip.compress(idx_bytes(np.zeros((3, 4, 4))))[:-12], "corrupt or truncated gzip"),
    (b"\x1f\x8b" + b"\x00" * 20, "corrupt or truncated gzip"),
])
def test_damaged_idx_files_give_clear_errors(tmp_path, content, words):
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=words):
        read_idx(path)


def test_truncated_gzip_of_a_truncated_file(tmp_path):
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 4, 4)))[:-3]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    """A header for 10 bytes, then 64 MiB of zeros that gzip packs into
    ~64 KiB: refused after inflating no more than the header allows."""
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(10)) + bytes(64 << 20)))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more bytes than the header"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated to read a 10-byte IDX file"


def test_a_header_declaring_more_than_the_file_holds_is_refused_before_reading(tmp_path):
    # 2**32-1 x 2**32-1 x 255 float64s (beyond 2**63 bytes), then a few
    # bytes: refused from the header alone, plain or gzipped, whatever
    # max_bytes allows; within max_bytes, from the file's size.
    huge = struct.pack(">HBB3I", 0, 0x0E, 3, 2**32 - 1, 2**32 - 1, 255) + bytes(16)
    big = struct.pack(">HBB1I", 0, 0x08, 1, 2**30) + bytes(16)
    for name, content, words in (
            ("huge", huge, r"declares \d+ bytes of data, more than max_bytes=8589934592"),
            ("huge.gz", gzip.compress(huge), r"more than max_bytes"),
            ("big", big, r"truncated: the header's shape \(1073741824,\) needs 1073741824 "
                         r"bytes of data, the file has 16"),
            ("big.gz", gzip.compress(big), r"more than a \d+-byte gzip file can inflate to")):
        path = tmp_path / name
        path.write_bytes(content)
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=words):
                read_idx(path, max_bytes=2**63 if name.startswith("big") else 2**33)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, (name, peak)
    with pytest.raises(ValueError, match="more than max_bytes=10"):
        read_idx(_written(tmp_path / "small", np.zeros(11, np.uint8)), max_bytes=10)
    np.testing.assert_array_equal(
        read_idx(_written(tmp_path / "small", np.zeros(10, np.uint8)), max_bytes=10),
        np.zeros(10, np.uint8))
    for bad in (None, 1.5, True):
        with pytest.raises(TypeError, match="max_bytes must be an int"):
            read_idx(tmp_path / "small", max_bytes=bad)


def _written(path, array):
    write_idx(path, array)
    return path


def test_devices_and_pipes_are_read_only_as_far_as_the_header_allows(tmp_path):
    # /dev/zero never ends: its first four bytes are no IDX magic number.
    with pytest.raises(ValueError, match=r"not an IDX file \(magic number 0x00000000\)"):
        read_idx("/dev/zero")
    # A pipe has no size to check against: its data are read as declared.
    import os
    import threading
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    array = np.arange(12, dtype=np.int16).reshape(3, 4)

    def feed():
        with open(fifo, "wb") as stream:
            stream.write(_idx_of(array))

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        np.testing.assert_array_equal(read_idx(fifo), array)
    finally:
        writer.join(10)


def _idx_of(array):
    return (struct.pack(f">HBB{array.ndim}I", 0, 0x0B, array.ndim, *array.shape)
            + array.astype(">i2").tobytes())


@pytest.mark.parametrize("dtype", IDX_DTYPES)
def test_multi_member_gzip_files_are_read_whole(tmp_path, dtype):
    # pigz and bgzip write concatenated gzip members; gzip -d reads them as
    # one stream, and so must read_idx.  Members split anywhere: inside the
    # header, inside an element, with an empty member between.
    array = (np.arange(5 * 7 * 3) - 9).reshape(5, 7, 3).astype(dtype)
    path = tmp_path / "whole-idx"
    write_idx(path, array, compress=False)
    raw = path.read_bytes()
    for cuts in ([3], [5, 5, 40], [len(raw) // 2, len(raw) - 1], list(range(1, len(raw), 17))):
        pieces = [raw[a:b] for a, b in zip([0] + cuts, cuts + [len(raw)])]
        joined = tmp_path / "members.gz"
        joined.write_bytes(b"".join(gzip.compress(piece) for piece in pieces))
        np.testing.assert_array_equal(read_idx(joined), array)
        assert gzip.decompress(joined.read_bytes()) == raw  # the format is what gzip reads
    # Zero padding after the last member is ignored, as gzip does; other
    # trailing bytes are refused, as is a member past the declared data.
    (tmp_path / "padded.gz").write_bytes(gzip.compress(raw) + bytes(100))
    np.testing.assert_array_equal(read_idx(tmp_path / "padded.gz"), array)
    (tmp_path / "garbage.gz").write_bytes(gzip.compress(raw) + b"garbage")
    with pytest.raises(ValueError, match="unexpected bytes after the gzip data"):
        read_idx(tmp_path / "garbage.gz")
    (tmp_path / "longer.gz").write_bytes(gzip.compress(raw) + gzip.compress(b"x"))
    with pytest.raises(ValueError, match="more bytes than the header"):
        read_idx(tmp_path / "longer.gz")


def test_reading_holds_the_data_once(tmp_path):
    array = np.arange(4 << 20, dtype=np.int32)  # 16 MiB, byte-swapped on reading
    plain = _written(tmp_path / "plain-idx", array)
    packed = tmp_path / "packed-idx.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    for path in (plain, packed):
        tracemalloc.start()
        try:
            result = read_idx(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(result, array)
        assert result.flags.writeable and result.dtype == np.int32
        assert peak < array.nbytes + (2 << 20), (path.name, peak)


def test_missing_idx_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nothing")


def test_write_idx_refuses_what_idx_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="cannot hold dtype"):
        write_idx(tmp_path / "x", np.zeros(2, dtype=np.uint16))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))


# -- MNIST-5k ------------------------------------------------------------------

def test_mnist_5k_is_bundled_with_its_attribution():
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.min() == 0
    folder = resources.files("cyconv") / "data" / "mnist-5k"
    readme = (folder / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme
    # The files are the ones the README describes, byte for byte.
    for name, digest in re.findall(r"- (\S+\.gz) ([0-9a-f]{64})", readme):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_mnist_5k_digits_look_like_digits():
    images, labels = load_mnist_5k()
    # The mean "1" is a thin vertical stroke: more ink in the centre column
    # band than in the side bands, unlike the mean "0", a ring.
    ones = images[labels == 1].mean(axis=0)
    zeros = images[labels == 0].mean(axis=0)
    assert ones[:, 12:16].mean() > 3 * ones[:, 4:8].mean()
    assert zeros[14, 14] < zeros[14, 7]


# -- full MNIST from a directory ---------------------------------------------

def write_mnist(folder, split, count, images_name=None, labels_name=None, labels=None):
    prefix = "train" if split == "train" else "t10k"
    rng = np.random.default_rng(0)
    write_idx(folder / (images_name or f"{prefix}-images-idx3-ubyte.gz"),
              rng.integers(0, 256, (count, 28, 28)).astype(np.uint8))
    write_idx(folder / (labels_name or f"{prefix}-labels-idx1-ubyte.gz"),
              rng.integers(0, 10, count).astype(np.uint8) if labels is None else labels)


def test_load_mnist_both_splits_and_name_variants(tmp_path):
    write_mnist(tmp_path, "train", 12)
    write_mnist(tmp_path, "test", 5, "t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte")
    images, labels = load_mnist(tmp_path)
    assert images.shape == (12, 28, 28) and labels.shape == (12,)
    images, labels = load_mnist(str(tmp_path), split="test")
    assert images.shape == (5, 28, 28)


@pytest.mark.parametrize("setup, error, words", [
    (lambda d: None, FileNotFoundError, "no train-images file"),
    (lambda d: write_mnist(d, "train", 4, labels=np.zeros(3, np.uint8)), ValueError,
     "4 images but 3 labels"),
    (lambda d: write_mnist(d, "train", 2, labels=np.array([1, 10], np.uint8)), ValueError,
     "digits 0 to 9"),
    (lambda d: write_mnist(d, "train", 2, labels=np.zeros((2, 1), np.uint8)), ValueError,
     r"labels must have shape \(N,\)"),
    (lambda d: write_mnist(d, "train", 2, labels=np.array([2.7, 1.0], np.float32)), ValueError,
     r"labels must be integers \(digits 0 to 9\), got an IDX file of float32"),
    (lambda d: write_mnist(d, "train", 2, labels=np.array([np.nan, 1.0])), ValueError,
     r"labels must be integers"),
    (lambda d: write_mnist(d, "train", 2, labels=np.array([1, -1], np.int8)), ValueError,
     "digits 0 to 9"),
])
def test_load_mnist_errors(tmp_path, setup, error, words):
    setup(tmp_path)
    with pytest.raises(error, match=words):
        load_mnist(tmp_path)


def test_load_mnist_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_mnist(tmp_path / "absent")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_mnist(tmp_path, "validation")


# -- splitting, preparing, augmenting ------------------------------------------

def test_stratified_split_of_mnist_5k():
    _, labels = load_mnist_5k()
    train, test = stratified_split(labels, 1000, seed=0)
    assert len(train) == 4000 and len(test) == 1000
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(5000))
    assert np.bincount(labels[test]).tolist() == [100] * 10
    again = stratified_split(labels, 1000, seed=0)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 1000, seed=1)[1], test)


def test_stratified_split_with_uneven_classes_adds_up_exactly():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 4)
    train, test = stratified_split(labels, 0.3, seed=3)
    assert len(test) == 4 and len(train) == 9
    counts = np.bincount(labels[test], minlength=3)
    assert counts.tolist() == [2, 1, 1]   # shares 2.15, 0.62, 1.23 by largest remainder


@pytest.mark.parametrize("test_size, error", [(0, ValueError), (10, ValueError),
                                              (1.5, ValueError), (True, TypeError),
                                              ("half", ValueError)])
def test_stratified_split_bad_sizes(test_size, error):
    with pytest.raises(error, match="test_size"):
        stratified_split(np.arange(10) % 2, test_size)


def test_prepare_images():
    grey = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = prepare_images(grey)
    assert x.shape == (1, 1, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], [[0, 1], [0.2, 0.4]], rtol=1e-6)
    assert prepare_images(grey[0], np.float64).shape == (1, 1, 2, 2)
    assert prepare_images(x).shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(prepare_images(np.full((1, 2, 2), 0.5)), 0.5)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        prepare_images(np.zeros(5))
    with pytest.raises(TypeError, match="integers or float32/float64"):
        prepare_images(np.zeros((2, 2), dtype=complex))


def test_random_shift_moves_each_image_by_at_most_max_shift():
    rng = np.random.default_rng(0)
    images = np.zeros((200, 1, 9, 9))
    images[:, 0, 4, 4] = 1.0
    shifted = RandomShift(2)(images, rng)
    assert shifted.shape == images.shape
    rows, cols = np.nonzero(shifted[:, 0].sum(axis=2))[1], np.nonzero(shifted[:, 0].sum(axis=1))[1]
    assert set(rows - 4) == set(range(-2, 3)) and set(cols - 4) == set(range(-2, 3))
    assert np.all(shifted.sum(axis=(1, 2, 3)) == 1)
    # An image shifted by (dy, dx) is np.roll of the original with zeros
    # coming in: check one against that.
    picture = rng.random((1, 2, 6, 5))
    moved = RandomShift(1)(picture, np.random.default_rng(7))
    candidates = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            padded = np.pad(picture, ((0, 0), (0, 0), (1, 1), (1, 1)))
            candidates.append(padded[:, :, 1 + dy:7 + dy, 1 + dx:6 + dx])
    assert any(np.array_equal(moved, c) for c in candidates)


def test_random_shift_is_reproducible_and_checks_arguments():
    images = np.random.default_rng(0).random((4, 1, 5, 5))
    a = RandomShift(1)(images, np.random.default_rng(3))
    b = RandomShift(1)(images, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert RandomShift(0)(images, np.random.default_rng(0)) is images
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(TypeError, match="max_shift"):
        RandomShift(1.5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RandomShift(1)(images[0], np.random.default_rng(0))


def test_random_shift_beyond_the_image_size_costs_no_more_than_the_image(tmp_path):
    # A shift of 2**40 pixels moved nothing but asked np.pad for 2**41
    # rows: now every shift past the image's size is that size (zeros).
    images = np.arange(2 * 16.0).reshape(2, 1, 4, 4) + 1
    shifted = RandomShift(2**40)(images, np.random.default_rng(0))
    assert shifted.shape == images.shape
    for before, after in zip(images, shifted):
        moved = [after[0] == np.roll(np.roll(before[0], r, 0), c, 1)
                 for r in range(-4, 5) for c in range(-4, 5)]
        assert not after.any() or any(m.all() for m in moved)
    # Within the image, the draws and results are what they always were.
    small = RandomShift(2)(images, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    rows, cols = rng.integers(0, 5, 2) - 2, rng.integers(0, 5, 2) - 2
    for image, out, r, c in zip(images, small, rows, cols):
        padded = np.pad(image[0], 2)
        np.testing.assert_array_equal(out[0], padded[2 + r:6 + r, 2 + c:6 + c])


def test_paths_may_be_bytes(tmp_path):
    folder = bytes(tmp_path)
    write_idx(folder + b"/t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    write_idx(folder + b"/t10k-labels-idx1-ubyte.gz", np.array([3, 4], np.uint8))
    assert (tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"
    images, labels = load_mnist(folder, "test")
    assert images.shape == (2, 28, 28) and labels.tolist() == [3, 4]
    with pytest.raises(TypeError, match="expected str, bytes or os.PathLike"):
        read_idx(3)


def test_write_idx_refuses_sizes_beyond_32_bits(tmp_path):
    huge = np.broadcast_to(np.uint8(0), (2**32,))  # no memory behind it
    with pytest.raises(ValueError, match=r"shorter than 2\*\*32"):
        write_idx(tmp_path / "huge", huge)
    assert not (tmp_path / "huge").exists()


@pytest.mark.parametrize("max_shift", [1, 2, 3, 7, 2**40])
@pytest.mark.parametrize("shape", [(32, 1, 28, 28), (5, 3, 4, 7), (1, 2, 1, 1), (0, 1, 5, 5)])
def test_random_shift_is_the_gather_from_a_zero_padded_batch(max_shift, shape):
    """Against the straightforward formulation: pad with zeros, then pick
    each image's rows and columns at its drawn offsets (the same draws)."""
    images = np.random.default_rng(1).random(shape).astype(np.float32) - 0.5
    n, _, height, width = shape
    m = max_shift
    mh, mw = min(m, height), min(m, width)
    draws = np.random.default_rng(9)
    padded = np.pad(images, ((0, 0), (0, 0), (mh, mh), (mw, mw)))
    rows = np.clip(draws.integers(0, 2 * m + 1, n) - m, -mh, mh)[:, None] + mh + np.arange(height)
    cols = np.clip(draws.integers(0, 2 * m + 1, n) - m, -mw, mw)[:, None] + mw + np.arange(width)
    expected = padded[np.arange(n)[:, None, None, None], np.arange(shape[1])[None, :, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]]
    shifted = RandomShift(max_shift)(images, np.random.default_rng(9))
    assert shifted.dtype == images.dtype and shifted.flags.c_contiguous
    np.testing.assert_array_equal(shifted, expected)
