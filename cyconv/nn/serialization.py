"""The model file format: a versioned ``.npz`` archive holding the
architecture as JSON and every layer's arrays, written atomically, read
without pickle, checked before it is inflated.

Layout (version 2)
------------------
``format``          the string ``"cyconv.Sequential"``
``format_version``  the integer 2 (version 1 files, written before buffers,
                    containers and custom layers, are read too: they are the
                    same layout without those)
``architecture``    JSON: a list of ``{"type": name, "config": {...}}``, one
                    per layer; a container's config holds its layers' entries
                    in ``"layers"``
``input_shape``     the model's input shape (int array), when known
``layer{i}.{name}`` each parameter and buffer of layer ``i``; a container's
                    layers are ``layer{i}.layer{j}.{name}``, and so on

Loading reads the zip's directory and each array's ``.npy`` header first,
and compares the declared shapes, dtypes and sizes with what the
architecture's layers need (built with placeholders that take no memory)
before a byte of data is inflated.
"""

import errno
import hashlib
import inspect
import json
import math
import os
import secrets
import stat
import struct
import zipfile

import numpy as np

from .._validation import check_dtype
from . import optimizers
from .layer import Layer, placeholder_arrays
from .losses import get_loss

__all__ = ["save", "load", "check_target", "named_arrays", "builtin_layers",
           "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "cyconv.Sequential"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)

_HEADER_ENTRIES = ("format", "format_version", "architecture", "input_shape")

# Limits on what a file may declare, checked before anything is inflated.
# The architecture is JSON stored as UTF-32: 64 MiB is some 50,000 layers.
_MAX_ARCHITECTURE_BYTES = 64 * 2**20
_MAX_SMALL_ENTRY_BYTES = 4096
# Deflate cannot shrink data by more than about 1032:1; a member declaring
# more than this from its compressed size is a forgery.
_MAX_DEFLATE_RATIO = 1032
_DEFLATE_SLACK = 4096
# What a whole file may inflate to.  cyconv stores its arrays uncompressed
# and trained weights hardly compress, so a file that declares much more
# than its own size is a "zip bomb": highly compressible data meant to
# exhaust memory.  The allowance keeps small all-zero arrays (biases,
# fresh statistics) of a compressed file readable.
_MAX_INFLATION_RATIO = 64
_INFLATION_ALLOWANCE = 16 * 2**20
# zipfile turns every entry of the central directory into an object of a
# few hundred bytes before anything can be checked: a directory larger than
# this (some 40,000 arrays) is refused from the end record first.
_MAX_DIRECTORY_BYTES = 4 * 2**20
# Containers nest at most this deep (as cyconv.nn.containers.MAX_NESTING).
_MAX_NESTING = 64


# -- which classes a file may name ------------------------------------------------

def builtin_layers():
    """``{name: class}`` of cyconv's own layers, the only classes a model
    file may name besides the ``custom_layers`` given to :func:`load`.

    Every concrete :class:`~cyconv.nn.Layer` that :mod:`cyconv.nn` exports
    is one, so a new layer registers by being exported there.

    Examples
    --------
    >>> from cyconv.nn.serialization import builtin_layers
    >>> builtin_layers()["Dense"]
    <class 'cyconv.nn.dense.Dense'>
    """
    from .. import nn
    from .containers import Container

    abstract = (Layer, Container)
    return {name: cls for name, cls in ((name, getattr(nn, name)) for name in nn.__all__)
            if isinstance(cls, type) and issubclass(cls, Layer) and cls not in abstract}


def _layer_types(custom_layers):
    types = builtin_layers()
    if custom_layers is None:
        return types
    if not isinstance(custom_layers, dict):
        raise TypeError(f"custom_layers must be a dict {{'Name': LayerClass}}, "
                        f"got {custom_layers!r}")
    for name, cls in custom_layers.items():
        if not isinstance(name, str):
            raise TypeError(f"custom_layers' keys must be layer class names, got {name!r}")
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"custom_layers[{name!r}] must be a subclass of cyconv.Layer, "
                            f"got {cls!r}")
        if name in types and types[name] is not cls:
            raise ValueError(f"custom_layers[{name!r}]: {name} is one of cyconv's own layers")
    return dict(types, **custom_layers)


# -- what a model holds --------------------------------------------------------

def keyed_layers(model):
    """Yield ``(key, layer)`` for every layer of ``model``, nested ones
    included, depth first, each container before its own layers; the keys
    are those of the model file (``"layer2"``, ``"layer2.layer0"``)."""
    from .containers import Container

    # A stack of (prefix, remaining layers); nesting is bounded at build.
    stack = [("", iter(enumerate(model.layers)))]
    while stack:
        prefix, layers = stack[-1]
        item = next(layers, None)
        if item is None:
            stack.pop()
            continue
        index, layer = item
        key = f"{prefix}layer{index}"
        yield key, layer
        if isinstance(layer, Container):
            stack.append((key + ".", iter(enumerate(layer.layers))))


def named_arrays(model):
    """``[(key, Parameter or Buffer), ...]``: every array a model file
    stores, under its key in the file, in order.

    Examples
    --------
    >>> from cyconv import Dense, ReLU, Sequential
    >>> from cyconv.nn.serialization import named_arrays
    >>> [key for key, _ in named_arrays(Sequential([Dense(3, 2), ReLU(), Dense(2, 1)]))]
    ['layer0.weight', 'layer0.bias', 'layer2.weight', 'layer2.bias']
    """
    from .containers import Container

    named = []
    for key, layer in keyed_layers(model):
        if isinstance(layer, Container):
            continue
        names = set()
        for array in list(layer.parameters()) + list(layer.buffers()):
            if array.name in names:
                raise TypeError(f"cannot save {key} ({type(layer).__name__}): two of its "
                                f"arrays are named {array.name!r}")
            names.add(array.name)
            named.append((f"{key}.{array.name}", array))
    return named


def _describe(layer, builtins, where):
    """The layer's ``{"type", "config"}`` entry, checked to rebuild it."""
    from .containers import Container

    cls = type(layer)
    name = cls.__name__
    if not isinstance(layer, Layer):
        raise TypeError(f"cannot save {where}: {name} is not a cyconv.Layer")
    if name in builtins and builtins[name] is not cls:
        raise TypeError(f"cannot save {where}: {name} has the name of one of cyconv's "
                        f"layers; give your class another name")
    config = layer.get_config()
    if not isinstance(config, dict):
        raise TypeError(f"cannot save {where}: {name}.get_config() must return a dict, "
                        f"got {config!r}")
    if isinstance(layer, Container):
        config = dict(config, layers=[
            _describe(child, builtins, f"{where}.layer{index}")
            for index, child in enumerate(layer.layers)])
    else:
        try:
            inspect.signature(cls).bind(**config)
        except TypeError as exc:
            raise TypeError(
                f"cannot save {where}: {name}(**get_config()) would not rebuild it ({exc}); "
                f"define {name}.get_config() to return its constructor's arguments") from None
    return {"type": name, "config": config}


def _architecture_json(model):
    builtins = builtin_layers()
    entries = [_describe(layer, builtins, f"layer {index}")
               for index, layer in enumerate(model.layers)]
    try:
        return json.dumps(entries)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot save the model: a layer's get_config() is not JSON "
                        f"({exc})") from None


# -- saving ---------------------------------------------------------------------

def check_target(path):
    """Raise unless a model can be saved at ``path``: its directory must
    exist, and whatever stands there must be a regular file (never a
    directory, FIFO or device, which a save would otherwise replace).

    Returns the path's current mode bits, or None when nothing is there.
    Nothing is opened, so a FIFO cannot block the check.

    Examples
    --------
    >>> import os, tempfile
    >>> from cyconv.nn.serialization import check_target
    >>> folder = tempfile.mkdtemp()
    >>> check_target(os.path.join(folder, "model.npz")) is None   # nothing there yet
    True
    >>> check_target(folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    IsADirectoryError: [Errno 21] Is a directory: '...'
    """
    path = os.fspath(path)
    if not path:
        raise ValueError("cannot save a model to an empty path")
    try:
        status = os.stat(path)
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path) from None
        return None
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(f"cannot save a model to {path}: it is not a regular file "
                         f"(a FIFO, socket or device), which saving would replace")
    return stat.S_IMODE(status.st_mode)


def _temporary_name(path):
    """A new name beside ``path``, within the file system's limit on names."""
    directory, base = os.path.split(os.path.abspath(path))
    token = secrets.token_hex(6)
    name = f".{base}.{token}.tmp"
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    if len(os.fsencode(name)) > limit:
        digest = hashlib.sha256(os.fsencode(base)).hexdigest()[:16]
        name = f".{digest}.{token}.tmp"
    return os.path.join(directory, name)


def save(model, path, include_optimizer=False):
    """Write ``model`` (a :class:`cyconv.Sequential`) to ``path``; see
    :meth:`cyconv.Sequential.save`."""
    header = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION),
        "architecture": np.array(_architecture_json(model)),
    }
    if model.input_shape is not None:
        header["input_shape"] = np.array(model.input_shape, dtype=np.int64)
    arrays = {key: np.asarray(array.value) for key, array in named_arrays(model)}
    training_header, training_arrays = training_entries(model, include_optimizer)
    header.update(training_header)
    arrays.update(training_arrays)
    path = os.fspath(path)
    mode = check_target(path)
    # A new name beside the destination, so that os.replace is a rename
    # within one file system; opened with "x" (not tempfile.mkstemp) so
    # that a new model gets the usual permissions of the user's umask,
    # and a replaced one keeps the mode of the file it replaces.
    temporary = _temporary_name(path)
    try:
        with open(temporary, "xb") as stream:
            if mode is not None:
                os.fchmod(stream.fileno(), mode)
            np.savez(stream, **header, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and temporary in (exc.filename, exc.filename2):
            # The hidden name means nothing to the user: name their path.
            raise type(exc)(exc.errno, f"cannot save the model: {exc.strerror}",
                            path) from None
        raise
    _sync_directory(os.path.dirname(os.path.abspath(path)))


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


# -- loading --------------------------------------------------------------------

class _Corrupt(Exception):
    """Raised inside the reader; reported as 'not a readable cyconv model'."""


def load(cls, path, custom_layers=None):
    """Read a model written by :func:`save` as an instance of ``cls``; see
    :meth:`cyconv.Sequential.load`."""
    types = _layer_types(custom_layers)
    path = os.fspath(path)
    stream = _open_regular(path)
    try:
        with stream:
            _refuse_other_formats(stream, path)
            file_size = os.fstat(stream.fileno()).st_size
            _check_directory_size(stream, file_size)
            with zipfile.ZipFile(stream) as archive:
                members = _members(archive, file_size)
                return _read_model(cls, archive, members, types, path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except _Corrupt as exc:
        raise ValueError(f"{path} is not a readable cyconv model file "
                         f"(corrupt or truncated?): {exc}") from None
    except ValueError:
        raise
    except Exception as exc:  # zipfile, zlib, struct: all damage to the file
        raise ValueError(f"{path} is not a readable cyconv model file "
                         f"(corrupt or truncated?): {type(exc).__name__}: {exc}") from None


def _open_regular(path):
    """``path`` opened for reading, if it is a regular file.

    Checked before opening (opening a device can have effects of its own)
    and again on the open file, which is opened without blocking: a FIFO
    put in its place in between would otherwise wait for a writer."""
    _check_regular(os.stat(path), path)  # FileNotFoundError, PermissionError as they are
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        _check_regular(os.fstat(descriptor), path)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _check_regular(status, path):
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(f"{path} is not a cyconv model file: not a regular file")


def _check_directory_size(stream, file_size):
    """Refuse a zip whose central directory is larger than a model's, from
    its end record (the last 22 bytes, before a comment of up to 64 KiB),
    before zipfile parses the directory.  A damaged end record is left to
    zipfile to report."""
    tail_size = min(file_size, 22 + 0xFFFF)
    stream.seek(file_size - tail_size)
    tail = stream.read(tail_size)
    position = tail.rfind(b"PK\x05\x06")
    if position < 0 or len(tail) - position < 22:
        return
    (directory_size,) = struct.unpack_from("<I", tail, position + 12)
    # 0xFFFFFFFF defers to a ZIP64 record: a directory of 4 GiB or more.
    if directory_size > _MAX_DIRECTORY_BYTES:
        raise _Corrupt(f"its zip directory declares {directory_size} bytes, more than the "
                       f"{_MAX_DIRECTORY_BYTES} of any model's")
    stream.seek(0)


def _members(archive, file_size):
    """``{entry name: ZipInfo}``, each member's declared sizes checked
    against the file's real size and deflate's greatest ratio."""
    members = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise _Corrupt(f"unexpected member {info.filename!r}")
        name = info.filename[:-4]
        if name in members:
            raise _Corrupt(f"two members named {info.filename!r}")
        if info.header_offset + info.compress_size > file_size:
            raise _Corrupt(f"{info.filename} claims more bytes than the file holds")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise _Corrupt(f"{info.filename} is stored, but its sizes differ")
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + _DEFLATE_SLACK:
                raise _Corrupt(f"{info.filename} declares {info.file_size} bytes from "
                               f"{info.compress_size} compressed ones, more than deflate "
                               f"can give")
        else:
            raise _Corrupt(f"{info.filename} uses compression method {info.compress_type}; "
                           f"only stored and deflated members are read")
        members[name] = info
    declared = sum(info.file_size for info in members.values())
    if declared > _MAX_INFLATION_RATIO * file_size + _INFLATION_ALLOWANCE:
        raise _Corrupt(f"its members declare {declared} bytes from a file of {file_size}, "
                       f"more than {_MAX_INFLATION_RATIO} times its size: a compressed "
                       f"file too large to be a model's")
    return members


def _array_header(archive, info):
    """(shape, fortran_order, dtype, data offset) from a member's .npy
    header, inflating only the header."""
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise _Corrupt(f"{info.filename} has .npy format version {version}")
        offset = stream.tell()
    if dtype.hasobject:
        raise _Corrupt(f"{info.filename} holds Python objects, which are never unpickled")
    if info.file_size != offset + math.prod(shape) * dtype.itemsize:
        raise _Corrupt(f"{info.filename}'s size does not match its header")
    return shape, fortran_order, dtype


def _read_array(archive, info):
    """The member's array, inflated only now; its CRC is checked."""
    with archive.open(info) as stream:
        array = np.lib.format.read_array(stream, allow_pickle=False)
        if stream.read(1):  # also reaches the end, where zipfile checks the CRC
            raise _Corrupt(f"{info.filename} has data past its array")
    return array


def _small_entry(archive, members, name, kinds, limit):
    info = members.get(name)
    if info is None:
        return None
    if info.file_size > limit:
        raise ValueError(f"{name!r} entry of {info.file_size} bytes is larger than the "
                         f"{limit} a cyconv model file may have")
    shape, _, dtype = _array_header(archive, info)
    if dtype.kind not in kinds:
        return np.array(None, dtype=object)  # reported as a bad entry by the caller
    return _read_array(archive, info)


def _read_model(cls, archive, members, types, path):
    def entry(name, kinds, limit=_MAX_SMALL_ENTRY_BYTES):
        return _small_entry(archive, members, name, kinds, limit)

    def text(name, limit=_MAX_SMALL_ENTRY_BYTES):
        value = entry(name, "U", limit)
        if value is None or value.shape != () or value.dtype.kind != "U":
            raise ValueError(f"{path} is not a cyconv model file: bad {name!r} entry")
        return str(value)

    if "format" not in members:
        raise ValueError(f"{path} is not a cyconv model file (no 'format' entry)")
    if text("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a cyconv model file (format {text('format')!r})")
    version = entry("format_version", "iu")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(f"{path} is not a cyconv model file: bad 'format_version' entry")
    if int(version) not in _READABLE_VERSIONS:
        raise ValueError(f"{path} has model format version {int(version)}; this cyconv "
                         f"reads versions {', '.join(map(str, _READABLE_VERSIONS))}")
    input_shape = entry("input_shape", "iu")
    if input_shape is not None and (input_shape.ndim != 1 or input_shape.size > 64):
        raise ValueError(f"{path} is not a cyconv model file: bad 'input_shape' entry")
    try:
        architecture = json.loads(text("architecture", _MAX_ARCHITECTURE_BYTES))
        if not isinstance(architecture, list):
            raise ValueError("the architecture must be a list of layers")
        with placeholder_arrays():
            # No weights are drawn: the file's replace these placeholders.
            layers = [_build_layer(item, types, 1) for item in architecture]
            model = cls(layers, input_shape=None if input_shape is None
                        else tuple(int(size) for size in input_shape))
    except RecursionError:
        raise ValueError(f"{path} has an invalid architecture: nested too deeply") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} has an invalid architecture: {exc}") from None
    expected = named_arrays(model)
    for key, array in expected:
        info = members.get(key)
        if info is None:
            kind = "weights" if hasattr(array, "grad") else "buffer"
            raise ValueError(f"{path} does not fit its architecture: no {kind} {key!r}")
        shape, _, dtype = _array_header(archive, info)
        if shape != array.value.shape or dtype != array.value.dtype:
            raise ValueError(
                f"{path} does not fit its architecture: {key} is {dtype} {shape}, the "
                f"layer needs {array.value.dtype} {array.value.shape}")
    extra = (set(members) - {key for key, _ in expected} - set(_HEADER_ENTRIES)
             - training_member_names(members))
    if extra:
        raise ValueError(f"{path} does not fit its architecture: unexpected arrays "
                         f"{sorted(extra)}")
    # Every declared size is now known to be what the layers need: inflate.
    for key, array in expected:
        array.value = np.ascontiguousarray(_read_array(archive, members[key]))
    restore_training(model, archive, members, path)
    return model.train()


def _build_layer(entry, types, depth):
    from .containers import Container

    if depth > _MAX_NESTING:
        raise ValueError(f"containers nest more than {_MAX_NESTING} deep")
    if not isinstance(entry, dict) or set(entry) != {"type", "config"}:
        raise ValueError(f"each layer must be {{'type': ..., 'config': ...}}, got {entry!r}")
    name = entry["type"]
    layer_type = types.get(name) if isinstance(name, str) else None
    if layer_type is None:
        raise ValueError(f"unknown layer type {name!r} (cyconv's layers and the "
                         f"custom_layers given to load only)")
    config = entry["config"]
    if not isinstance(config, dict):
        raise ValueError(f"the config of a {name} layer must be a dict")
    if "dtype" in config:
        config = dict(config, dtype=check_dtype(config["dtype"]))
    if issubclass(layer_type, Container):
        children = config.get("layers")
        if not isinstance(children, list):
            raise ValueError(f"the config of a {name} layer must list its layers")
        config = dict(config, layers=[_build_layer(child, types, depth + 1)
                                      for child in children])
    return layer_type(**config)


# The first bytes of files people mistake for a model, and what they are.
_OTHER_FORMATS = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras .h5 model?)"),
    (b"\x93NUMPY", "a .npy array, not a model"),
    (b"\x80", "a pickle (a PyTorch .pt file?); cyconv never unpickles"),
    (b"{", "JSON"),
    (b"[", "JSON"),
)


def _refuse_other_formats(stream, path):
    """A clear word for a file that is not an .npz archive at all, rather
    than numpy's advice about allow_pickle.  Reads the first bytes of
    ``stream`` and puts it back at its start."""
    start = stream.read(64)
    stream.seek(0)
    if start.startswith(b"PK"):
        return
    what = next((name for magic, name in _OTHER_FORMATS if start.lstrip().startswith(magic)),
                "not an .npz archive")
    raise ValueError(f"{path} is not a readable cyconv model file: it looks like {what}. "
                     f"cyconv models are the .npz files that Sequential.save and "
                     f"`cyconv train` write")


def training_entries(model, include_optimizer):
    """The file entries of what fit remembers: the loss always (when
    known); with ``include_optimizer`` also the optimizer's type, settings
    and state (arrays named ``optimizer.<parameter index>[.<name>]``), the
    shuffling seed and random stream, and the epochs completed.  Returns
    (header, arrays)."""
    state = {}
    loss = getattr(model, "loss", None)
    if loss is not None and getattr(loss, "name", None):
        state["loss"] = loss.name
    arrays = {}
    if include_optimizer:
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise ValueError("include_optimizer=True needs a model trained by fit: this one "
                             "has no optimizer yet")
        settings = {k: v for k, v in vars(optimizer).items() if k != "state"}
        state.update(optimizer={"type": type(optimizer).__name__, "config": settings},
                     seed=model.seed, epoch=model.epoch,
                     shuffle_state=getattr(model, "shuffle_state", None),
                     generators={key: getattr(layer, name).bit_generator.state
                                 for key, layer, name in _layer_generators(model)})
        index = {id(p): i for i, p in enumerate(model.parameters())}
        for parameter, entry in optimizer.state.items():
            i = index.get(id(parameter))
            if i is None:
                continue  # a parameter of another model
            if isinstance(entry, dict):
                for name, value in entry.items():
                    arrays[f"optimizer.{i}.{name}"] = np.asarray(value)
            else:
                arrays[f"optimizer.{i}"] = np.asarray(entry)
    header = {"training": np.array(json.dumps(state))} if state else {}
    return header, arrays


def _optimizer_types():
    return {cls.__name__: cls for cls in vars(optimizers).values()
            if isinstance(cls, type) and issubclass(cls, optimizers.Optimizer)
            and cls is not optimizers.Optimizer}


# A training state is a little JSON: the optimizer's settings, a seed and a
# random generator's state.
_MAX_TRAINING_BYTES = 2**20


def training_member_names(members):
    """The members :func:`training_entries` writes."""
    return {name for name in members if name == "training" or name.startswith("optimizer.")}


def restore_training(model, archive, members, path):
    """Set on ``model`` what :func:`training_entries` saved."""
    if "training" not in members:
        if any(name.startswith("optimizer.") for name in members):
            raise ValueError(f"{path} has an optimizer's state but no training entry")
        return
    try:
        value = _small_entry(archive, members, "training", "U", _MAX_TRAINING_BYTES)
        if value is None or value.shape != () or value.dtype.kind != "U":
            raise ValueError("bad 'training' entry")
        state = json.loads(str(value))
        if not isinstance(state, dict):
            raise ValueError("not a dict")
        if "loss" in state:
            model.loss = get_loss(state["loss"])
        if "optimizer" in state:
            _restore_optimizer(model, state, archive, members)
        elif any(name.startswith("optimizer.") for name in members):
            raise ValueError("an optimizer's state without the optimizer")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path} has an invalid training state: {exc}") from None


def _restore_optimizer(model, state, archive, members):
    description = state["optimizer"]
    optimizer_type = _optimizer_types().get(description["type"])
    if optimizer_type is None:
        raise ValueError(f"unknown optimizer {description['type']!r}")
    settings = dict(description["config"])
    accepted = inspect.signature(optimizer_type).parameters
    optimizer = optimizer_type(**{k: v for k, v in settings.items() if k in accepted})
    for name, value in settings.items():
        if name not in accepted:
            setattr(optimizer, name, value)  # set as training went (initial_learning_rate)
    parameters = model.parameters()
    for key in sorted(name for name in members if name.startswith("optimizer.")):
        index, _, name = key[len("optimizer."):].partition(".")
        if not index.isdigit() or int(index) >= len(parameters):
            raise ValueError(f"{key} names no parameter of the model")
        parameter = parameters[int(index)]
        # The declared shape is checked before anything is inflated.
        shape, _, dtype = _array_header(archive, members[key])
        if shape and (shape != parameter.value.shape or dtype != parameter.value.dtype):
            raise ValueError(f"{key} is {dtype} {shape}, its parameter "
                             f"{parameter.value.dtype} {parameter.value.shape}")
        value = _read_array(archive, members[key])
        restored = value.item() if value.ndim == 0 else np.array(value)
        if name:
            optimizer.state.setdefault(parameter, {})[name] = restored
        else:
            optimizer.state[parameter] = restored
    seed, epoch = state["seed"], state["epoch"]
    if not isinstance(seed, int) or seed < 0 or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"bad seed {seed!r} or epoch {epoch!r}")
    shuffle_state = state.get("shuffle_state")
    if shuffle_state is not None:
        # Checked by numpy itself: the state of a PCG64 generator.
        np.random.default_rng().bit_generator.state = shuffle_state
    _restore_generators(model, state.get("generators", {}))
    model.optimizer, model.seed, model.epoch = optimizer, seed, epoch
    model.shuffle_state = shuffle_state


def _layer_generators(model):
    """``[(key, layer, attribute)]`` for every numpy Generator a layer holds
    (Dropout's masks come from one), so that a checkpoint resumes them."""
    found = []
    for key, layer in keyed_layers(model):
        for name, value in sorted(vars(layer).items()):
            if isinstance(value, np.random.Generator):
                found.append((f"{key}.{name}", layer, name))
    return found


_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def _restore_generators(model, saved):
    """Give each layer a generator in the state it was saved in (a loaded
    Dropout was built without its rng, so it gets one back here)."""
    if not isinstance(saved, dict):
        raise ValueError("bad generators entry")
    layers = {}
    stack = [("", model)]
    while stack:
        prefix, container = stack.pop()
        for index, layer in enumerate(getattr(container, "layers", [])):
            key = f"{prefix}layer{index}"
            layers[key] = layer
            stack.append((key + ".", layer))
    for key, state in saved.items():
        where, _, name = key.rpartition(".")
        if where not in layers or not name.isidentifier() or not isinstance(state, dict):
            raise ValueError(f"a random generator for {key!r}, which the model does not have")
        kind = state.get("bit_generator")
        if kind not in _BIT_GENERATORS:
            raise ValueError(f"unknown bit generator {kind!r}")
        generator = np.random.Generator(getattr(np.random, kind)())
        generator.bit_generator.state = state   # checked by numpy itself
        setattr(layers[where], name, generator)
