"""The model file format: a versioned ``.npz`` archive holding the
architecture as JSON and every layer's arrays, written atomically, read
without pickle."""

import inspect
import json
import os
import secrets

import numpy as np

from . import activations, conv, dense, optimizers, pooling, reshape
from .layer import check_dtype
from .losses import get_loss

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


def save(model, path, include_optimizer=False):
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
    training_header, training_arrays = training_entries(model, include_optimizer)
    header.update(training_header)
    arrays.update(training_arrays)
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
    _refuse_other_formats(path)
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
    expected |= restore_training(model, contents, path)
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


# The first bytes of files people mistake for a model, and what they are.
_OTHER_FORMATS = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras .h5 model?)"),
    (b"\x93NUMPY", "a .npy array, not a model"),
    (b"\x80", "a pickle (a PyTorch .pt file?); cyconv never unpickles"),
    (b"{", "JSON"),
    (b"[", "JSON"),
)


def _refuse_other_formats(path):
    """A clear word for a file that is not an .npz archive at all, rather
    than numpy's advice about allow_pickle."""
    try:
        with open(path, "rb") as stream:
            start = stream.read(64)
    except OSError:
        return  # np.load reports it, with the usual exception
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
                     shuffle_state=getattr(model, "shuffle_state", None))
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


def restore_training(model, contents, path):
    """Set on ``model`` what :func:`training_entries` saved; return the
    names of the entries it used."""
    if "training" not in contents:
        return set()
    try:
        state = json.loads(str(contents["training"]))
        if not isinstance(state, dict):
            raise ValueError("not a dict")
        if "loss" in state:
            model.loss = get_loss(state["loss"])
        used = {"training"}
        if "optimizer" in state:
            used |= _restore_optimizer(model, state, contents)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path} has an invalid training state: {exc}") from None
    return used


def _restore_optimizer(model, state, contents):
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
    used = set()
    for key, value in contents.items():
        if not key.startswith("optimizer."):
            continue
        index, _, name = key[len("optimizer."):].partition(".")
        parameter = parameters[int(index)]
        if value.ndim and (value.shape != parameter.value.shape
                           or value.dtype != parameter.value.dtype):
            raise ValueError(f"{key} is {value.dtype} {value.shape}, its parameter "
                             f"{parameter.value.dtype} {parameter.value.shape}")
        restored = value.item() if value.ndim == 0 else np.array(value)
        if name:
            optimizer.state.setdefault(parameter, {})[name] = restored
        else:
            optimizer.state[parameter] = restored
        used.add(key)
    seed, epoch = state["seed"], state["epoch"]
    if not isinstance(seed, int) or seed < 0 or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"bad seed {seed!r} or epoch {epoch!r}")
    shuffle_state = state.get("shuffle_state")
    if shuffle_state is not None:
        # Checked by numpy itself: the state of a PCG64 generator.
        np.random.default_rng().bit_generator.state = shuffle_state
    model.optimizer, model.seed, model.epoch = optimizer, seed, epoch
    model.shuffle_state = shuffle_state
    return used
