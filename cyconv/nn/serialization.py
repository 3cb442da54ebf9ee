"""The model file format: a versioned ``.npz`` archive holding the
architecture as JSON and every layer's arrays, written atomically, read
without pickle."""

import inspect
import json
import os
import secrets

import numpy as np

from . import activations, conv, dense, pooling, reshape
from .layer import check_dtype

__all__ = ["save", "load", "FORMAT_NAME", "FORMAT_VERSION", "LAYER_TYPES"]

FORMAT_NAME = "cyconv.Sequential"
FORMAT_VERSION = 1

# The layers a model file may name: cyconv's own, never a class chosen by
# the file (loading must not run arbitrary code).
LAYER_TYPES = {
    cls.__name__: cls
    for module in (conv, pooling, dense, reshape, activations)
    for cls in (getattr(module, name) for name in module.__all__)
}


def save(model, path):
    """Write ``model`` (a :class:`cyconv.Sequential`) to ``path``; see
    :meth:`cyconv.Sequential.save`."""
    architecture = []
    arrays = {}
    for index, layer in enumerate(model.layers):
        name = type(layer).__name__
        if LAYER_TYPES.get(name) is not type(layer):
            raise TypeError(f"cannot save layer {index}: {name} is not one of cyconv's "
                            f"layers ({', '.join(LAYER_TYPES)})")
        architecture.append({"type": name, "config": layer.get_config()})
        for parameter in layer.parameters():
            arrays[f"layer{index}.{parameter.name}"] = parameter.value
    header = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION),
        "architecture": np.array(json.dumps(architecture)),
    }
    path = os.fspath(path)
    # A new name beside the destination, so that os.replace is a rename
    # within one file system; opened with "x" (not tempfile.mkstemp) so
    # that the model gets the usual permissions of the user's umask.
    temporary = os.path.join(os.path.dirname(os.path.abspath(path)),
                             f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as stream:
            np.savez(stream, **header, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _sync_directory(os.path.dirname(os.path.abspath(path)))


def load(cls, path):
    """Read a model written by :func:`save` as an instance of ``cls``; see
    :meth:`cyconv.Sequential.load`."""
    path = os.fspath(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with loaded:
            # Reading every array here checks every CRC, so a damaged
            # file fails now rather than halfway through building.
            contents = {name: loaded[name] for name in loaded.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable cyconv model file "
                         f"(corrupt or truncated?): {exc}") from None
    if "format" not in contents:
        raise ValueError(f"{path} is not a cyconv model file (no 'format' entry)")
    return _from_contents(cls, contents, path)


def _from_contents(cls, contents, path):
    def text(name):
        value = contents.get(name)
        if value is None or value.shape != () or value.dtype.kind != "U":
            raise ValueError(f"{path} is not a cyconv model file: bad {name!r} entry")
        return str(value)

    if text("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a cyconv model file (format {text('format')!r})")
    version = contents.get("format_version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(f"{path} is not a cyconv model file: bad 'format_version' entry")
    if int(version) != FORMAT_VERSION:
        raise ValueError(f"{path} has model format version {int(version)}; this cyconv "
                         f"reads version {FORMAT_VERSION}")
    try:
        architecture = json.loads(text("architecture"))
        built = [_build_layer(entry) for entry in architecture]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} has an invalid architecture: {exc}") from None
    model = cls(built)
    expected = set()
    for index, layer in enumerate(model.layers):
        for parameter in layer.parameters():
            key = f"layer{index}.{parameter.name}"
            expected.add(key)
            saved = contents.get(key)
            if saved is None:
                raise ValueError(f"{path} does not fit its architecture: no weights {key!r}")
            if saved.shape != parameter.value.shape or saved.dtype != parameter.value.dtype:
                raise ValueError(
                    f"{path} does not fit its architecture: {key} is {saved.dtype} "
                    f"{saved.shape}, the layer needs {parameter.value.dtype} "
                    f"{parameter.value.shape}")
            parameter.value[...] = saved
    extra = set(contents) - expected - {"format", "format_version", "architecture"}
    if extra:
        raise ValueError(f"{path} does not fit its architecture: unexpected arrays "
                         f"{sorted(extra)}")
    return model


def _sync_directory(directory):
    """Make the rename itself durable.  The file's bytes were synced before
    it was renamed; on POSIX the new name reaches the disk with the
    directory, which takes a sync of its own.  Without it, a power cut
    soon after save could bring back the previous model (never a broken
    one).  Best effort: the model is saved whatever this returns."""
    if os.name != "posix":
        return
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(descriptor)


def _build_layer(entry):
    if not isinstance(entry, dict) or set(entry) != {"type", "config"}:
        raise ValueError(f"each layer must be {{'type': ..., 'config': ...}}, got {entry!r}")
    layer_type = LAYER_TYPES.get(entry["type"])
    if layer_type is None:
        raise ValueError(f"unknown layer type {entry['type']!r}")
    config = entry["config"]
    if not isinstance(config, dict):
        raise ValueError(f"the config of a {entry['type']} layer must be a dict")
    if "dtype" in config:
        config = dict(config, dtype=check_dtype(config["dtype"]))
    if "rng" in inspect.signature(layer_type).parameters:
        # The weights are overwritten from the file: draw the initial ones
        # from a fixed source rather than from the global random state.
        config = dict(config, rng=0)
    return layer_type(**config)
