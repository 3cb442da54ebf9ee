"""Model files as an attacker or an unlucky user meets them: save targets
that are not regular files, modes and long names kept, errors that name
the user's path, and loading that checks sizes before it inflates or
allocates anything (zip bombs, forged huge layers)."""

import errno
import io
import json
import os
import signal
import stat
import tracemalloc
import zipfile

import numpy as np
import pytest

from cyconv import Dense, ReLU, Sequential
from cyconv.nn import serialization

MiB = 2**20


def small_model():
    return Sequential([Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1)])


@pytest.fixture
def alarm():
    """Fail rather than hang: a test that would block on a FIFO gets
    SIGALRM after 20 seconds."""
    if not hasattr(signal, "SIGALRM"):
        pytest.skip("needs SIGALRM")

    def timeout(signum, frame):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _npy_bytes(array):
    stream = io.BytesIO()
    np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)
    return stream.getvalue()


def _header(architecture, version=2):
    return {"format": np.array("cyconv.Sequential"), "format_version": np.array(version),
            "architecture": np.array(json.dumps(architecture))}


def _write_zip(path, members, compression=zipfile.ZIP_STORED):
    """``members``: name -> array or raw bytes (written as they are)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in members.items():
            data = content if isinstance(content, bytes) else _npy_bytes(content)
            archive.writestr(name + ".npy", data)


def _peak_while(call):
    """(result or exception, peak bytes traced by tracemalloc during call)."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - returned for the test to judge
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- save targets ----------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_saving_over_a_fifo_is_refused_without_blocking(tmp_path, alarm):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=f"{fifo}.*not a regular file"):
        small_model().save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)          # still the FIFO
    assert os.listdir(tmp_path) == ["model.npz"]        # no temporary left
    with pytest.raises(ValueError, match="not a regular file"):
        Sequential.load(fifo)                            # nor read (it would block)


def test_saving_over_a_device_or_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        small_model().save(os.devnull)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        small_model().save(tmp_path)
    with pytest.raises(IsADirectoryError):
        Sequential.load(tmp_path)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_saving_again_keeps_the_mode_of_the_file_it_replaces(tmp_path, mode):
    path = tmp_path / "private.npz"
    small_model().save(path)
    os.chmod(path, mode)
    small_model().save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    Sequential.load(path)


def test_a_new_file_gets_the_umask_mode(tmp_path):
    previous = os.umask(0o077)
    try:
        small_model().save(tmp_path / "new.npz")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o600


def test_the_longest_legal_name_saves_and_loads(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    path = tmp_path / ("m" * (limit - 4) + ".npz")
    model = small_model()
    model.save(path)
    assert os.listdir(tmp_path) == [path.name]
    loaded = Sequential.load(path)
    np.testing.assert_array_equal(loaded.parameters()[0].value, model.parameters()[0].value)


def test_errors_name_the_users_path_not_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"

    def refusing_open(name, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", name)

    monkeypatch.setattr(serialization, "open", refusing_open, raising=False)
    with pytest.raises(PermissionError) as caught:
        small_model().save(path)
    assert caught.value.filename == str(path)
    assert ".tmp" not in str(caught.value) and str(path) in str(caught.value)


def test_a_missing_directory_or_an_empty_path_is_refused_before_writing(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        small_model().save(tmp_path / "missing" / "model.npz")
    with pytest.raises(ValueError, match="empty path"):
        small_model().save("")
    with pytest.raises(ValueError, match="empty path"):
        serialization.check_target("")


# -- loading checks before it inflates or allocates ---------------------------------

def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """128 MiB of zeros, deflated to about 130 KiB, declared for a layer
    that really needs 128 MiB: refused from the sizes in the zip's
    directory, with a few MiB traced at most."""
    path = tmp_path / "bomb.npz"
    architecture = [{"type": "Dense", "config": {"input_size": 4096, "output_size": 8192,
                                                 "bias": False, "dtype": "float32"}}]
    _write_zip(path, dict(_header(architecture),
                          **{"layer0.weight": np.zeros((8192, 4096), np.float32)}),
               compression=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 256 * 1024
    result, peak = _peak_while(lambda: Sequential.load(path))
    assert isinstance(result, ValueError), result
    assert str(path) in str(result) and "64 times its size" in str(result)
    assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB traced"


def test_a_bomb_in_an_array_the_model_does_not_need_is_never_inflated(tmp_path):
    path = tmp_path / "extra.npz"
    small_model().save(path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("layer9.weight.npy", _npy_bytes(np.zeros(16 * MiB, np.uint8)))
    result, peak = _peak_while(lambda: Sequential.load(path))
    assert isinstance(result, ValueError) and "unexpected arrays" in str(result), result
    assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB traced"


@pytest.mark.parametrize("weights", ["missing", "header only", "wrong shape"])
def test_a_tiny_file_declaring_a_huge_dense_allocates_nothing(tmp_path, weights):
    """A file of under a kilobyte declaring a 400 MB Dense layer is
    refused without the layer's weights ever being allocated or drawn."""
    path = tmp_path / "forged.npz"
    architecture = [{"type": "Dense", "config": {"input_size": 100_000, "output_size": 1000,
                                                 "bias": True, "dtype": "float32"}}]
    members = _header(architecture)
    if weights == "header only":
        members["layer0.weight"] = _npy_bytes(np.zeros((1000, 100_000), np.float32))[:128]
    elif weights == "wrong shape":
        members["layer0.weight"] = np.zeros((2, 2), np.float32)
    _write_zip(path, members, compression=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 1024
    state = np.random.get_state()[1].copy()
    result, peak = _peak_while(lambda: Sequential.load(path))
    assert isinstance(result, ValueError), result
    assert str(path) in str(result)
    assert peak < 2 * MiB, f"{peak / MiB:.1f} MiB traced"
    np.testing.assert_array_equal(np.random.get_state()[1], state)   # nothing drawn


def test_a_forged_size_beyond_what_deflate_can_give_is_refused(tmp_path):
    path = tmp_path / "forged.npz"
    small_model().save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        # The central directory, written on close, declares the forgery.
        info = archive.getinfo("layer0.weight.npy")
        info.file_size = info.compress_size * 2000
    with pytest.raises(ValueError, match=f"{path}.*more than deflate can give"):
        Sequential.load(path)


def test_loading_allocates_the_weights_once_and_draws_nothing(tmp_path):
    model = Sequential([Dense(1500, 1000, rng=0), ReLU(), Dense(1000, 10, rng=1)])
    path = tmp_path / "model.npz"
    model.save(path)
    nbytes = sum(p.value.nbytes for p in model.parameters())
    state = np.random.get_state()[1].copy()
    loaded, peak = _peak_while(lambda: Sequential.load(path))
    assert isinstance(loaded, Sequential), loaded
    # Drawing He weights in float64 first, as building used to, takes 3x.
    assert peak < 1.3 * nbytes, f"{peak / nbytes:.2f} x the weights traced"
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    for a, b in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(a.value, b.value)
        assert b.value.flags.writeable and b.value.flags.c_contiguous


def test_loaded_arrays_are_writable_and_train(tmp_path):
    path = tmp_path / "model.npz"
    small_model().save(path)
    model = Sequential.load(path)
    x = np.random.default_rng(0).standard_normal((8, 3))
    before = [p.value.copy() for p in model.parameters()]
    model.fit(x, np.arange(8) % 2, epochs=1, batch_size=4, verbose=False)
    assert any(not np.array_equal(a, p.value) for a, p in zip(before, model.parameters()))


def test_compressed_files_of_real_weights_still_load(tmp_path):
    model = small_model()
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        contents = {name: archive[name] for name in archive.files}
    np.savez_compressed(path, **contents)
    loaded = Sequential.load(path)
    for a, b in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(a.value, b.value)


def test_object_arrays_and_other_compressions_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    small_model().save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name[:-4]: archive.read(name) for name in archive.namelist()}
    _write_zip(path, members, compression=zipfile.ZIP_BZIP2)
    with pytest.raises(ValueError, match="compression method 12"):
        Sequential.load(path)
    stream = io.BytesIO()
    np.lib.format.write_array(stream, np.array([1, "a"], dtype=object), allow_pickle=True)
    _write_zip(path, dict(members, **{"layer0.weight": stream.getvalue()}))
    with pytest.raises(ValueError, match="never unpickled"):
        Sequential.load(path)


def test_a_zip_directory_larger_than_a_models_is_refused_before_it_is_parsed(tmp_path):
    """zipfile builds an object per directory entry before anything else
    can look at them; the directory's size in the end record comes first."""
    path = tmp_path / "many.npz"
    small_model().save(path)
    with zipfile.ZipFile(path, "a") as archive:
        for index in range(4500):
            archive.writestr(f"{index:01000d}.npy", b"")
    result, peak = _peak_while(lambda: Sequential.load(path))
    assert isinstance(result, ValueError) and "zip directory declares" in str(result), result
    assert peak < 2 * MiB, f"{peak / MiB:.1f} MiB traced"
