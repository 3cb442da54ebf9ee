"""Weights to and from PyTorch, through safetensors files (never pickle).

A :class:`cyconv.Sequential` and a PyTorch ``nn.Sequential`` of the same
architecture, layer for layer, name their tensors alike: PyTorch's
``state_dict`` names ``"<index>.<tensor>"`` map to the cyconv layer at
position ``<index>``:

==================  =====================================================
cyconv layer        tensors (PyTorch module)
==================  =====================================================
Convolution         weight (F, C // groups, kh, kw), bias (nn.Conv2d)
Dense               weight (out, in), bias (nn.Linear)
BatchNormalization  weight (gamma), bias (beta), running_mean,
                    running_var, num_batches_tracked (nn.BatchNorm1d/2d)
Residual            its layers' tensors as ``"<index>.<j>.<tensor>"``
others              none (nn.ReLU, nn.MaxPool2d, nn.Flatten, ...)
==================  =====================================================

PyTorch has no residual block.  A ``Residual`` at position ``i`` takes the
names that a subclass of ``nn.Sequential`` whose ``forward`` returns
``x + super().forward(x)`` gets in PyTorch: its ``j``-th layer's weight is
``"i.j.weight"``.  A layer of your own maps its parameters by their names.

``num_batches_tracked`` is read and ignored (cyconv's BatchNormalization
uses a fixed momentum, for which PyTorch does not use it either) and
written as 0, an int64, so that ``load_state_dict(strict=True)`` finds
every tensor it expects.

Tensors are read in float16, float32 or float64 and converted to the
model's dtype, as PyTorch's ``load_state_dict`` does; any missing,
unexpected or misshapen tensor is a ValueError naming it.

Needs the optional ``safetensors`` package (``pip install
"cyconv[safetensors]"``), imported only when weights are read or written.

Examples
--------
From PyTorch (not run here: torch is not a dependency of cyconv)::

    # in PyTorch
    from safetensors.torch import save_file
    save_file(torch_model.state_dict(), "model.safetensors")

    # in cyconv, a Sequential of the same layers
    model.load_weights("model.safetensors")

and back: ``model.save_weights(path)``, then in PyTorch
``torch_model.load_state_dict(safetensors.torch.load_file(path))``.
"""

import json
import math
import os

import numpy as np

__all__ = ["load_weights", "save_weights", "state_dict"]

INSTALL_HINT = 'pip install "cyconv[safetensors]"'

# safetensors' own limit on the JSON header.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# The dtypes a weight may be stored in, with their safetensors names.
FLOAT_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
ITEM_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
              "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}

# PyTorch's names for the parameters cyconv names otherwise.
TORCH_NAMES = {"gamma": "weight", "beta": "bias"}
BATCHES_TRACKED = "num_batches_tracked"

PICKLE_REFUSED = (
    "{path} is {what}, not a safetensors file. cyconv never unpickles a file: "
    "unpickling can run any code the file's author chose. Convert it once, where you "
    "trust it, in PyTorch: safetensors.torch.save_file(model.state_dict(), "
    "'model.safetensors')")


def _import_safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError(
            f"reading and writing weights needs the safetensors package: {INSTALL_HINT}"
        ) from None
    return safetensors.numpy


def _has_buffers(layer):
    return callable(getattr(layer, "buffers", None))


def _tensors(layers, prefix=""):
    """``{state_dict name: (array, is_parameter)}`` of ``layers``, in order,
    containers' layers under their own index."""
    tensors = {}
    for index, layer in enumerate(layers):
        name = f"{prefix}{index}."
        children = getattr(layer, "layers", None)
        if children is not None:
            tensors.update(_tensors(children, name))
            continue
        for parameter in layer.parameters():
            tensors[name + TORCH_NAMES.get(parameter.name, parameter.name)] = parameter.value
        if _has_buffers(layer):
            for buffer in layer.buffers():
                tensors[name + buffer.name] = buffer.value
            if type(layer).__name__ == "BatchNormalization":
                tensors[name + BATCHES_TRACKED] = None  # written as 0, ignored on load
    return tensors


def state_dict(model):
    """The model's weights as PyTorch names them: ``{name: ndarray}``.

    The arrays are the model's own (not copies), except
    ``num_batches_tracked``, a new int64 0.

    Examples
    --------
    >>> from cyconv import Sequential, Convolution, ReLU, Flatten, Dense
    >>> from cyconv.weights import state_dict
    >>> model = Sequential([Convolution((1, 8, 8), 3, 4, rng=0), ReLU(), Flatten(),
    ...                     Dense(144, 10, rng=0)])
    >>> {name: array.shape for name, array in state_dict(model).items()}
    {'0.weight': (4, 1, 3, 3), '0.bias': (4,), '3.weight': (10, 144), '3.bias': (10,)}
    """
    return {name: np.zeros((), np.int64) if array is None else array
            for name, array in _tensors(model.layers).items()}


def save_weights(model, path):
    """Write ``model``'s weights to a safetensors file PyTorch reads.

    Examples
    --------
    >>> import os, tempfile
    >>> from safetensors.numpy import load_file
    >>> from cyconv import Sequential, Dense, ReLU
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> save_weights(Sequential([Dense(3, 2, rng=0), ReLU(), Dense(2, 1, rng=0)]), path)
    >>> sorted(load_file(path))
    ['0.bias', '0.weight', '2.bias', '2.weight']
    """
    st = _import_safetensors()
    # Not np.ascontiguousarray, which makes num_batches_tracked 1-D.
    tensors = {name: np.asarray(array, order="C") for name, array in state_dict(model).items()}
    # "format": "pt" is what PyTorch tools (transformers, ...) look for.
    st.save_file(tensors, os.fspath(path), metadata={"format": "pt"})


def load_weights(model, path):
    """Read weights from a safetensors file into ``model``, in place.

    Every tensor is checked before any is copied, so a file that does not
    fit leaves the model as it was.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For a pickle (``.pt``, ``.pth``, ``.bin``, ``.ckpt``: refused, see
        the message), a malformed safetensors file, or tensors that do not
        fit the model: missing, unexpected, misshapen or not floating point,
        each named.
    ImportError
        Without the safetensors package.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from cyconv import Sequential, Dense
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> save_weights(Sequential([Dense(3, 2, rng=0)]), path)
    >>> model = Sequential([Dense(3, 2, rng=1)])
    >>> load_weights(model, path)
    >>> np.array_equal(model.layers[0].weights, Dense(3, 2, rng=0).weights)
    True
    >>> load_weights(Sequential([Dense(3, 4)]), path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... does not fit the model: 0.weight has shape (2, 3), the model's is (4, 3); ...
    """
    st = _import_safetensors()
    path = os.fspath(path)
    header = read_header(path)
    expected = _tensors(model.layers)
    problems = []
    missing = [name for name in expected if name not in header]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    unexpected = [name for name in header if name not in expected]
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    for name, array in expected.items():
        entry = header.get(name)
        if entry is None:
            continue
        shape = tuple(entry["shape"])
        if array is None:  # num_batches_tracked
            if entry["dtype"] not in ("I64", "I32") or shape != ():
                problems.append(f"{name} is {entry['dtype']} {shape}, not an integer scalar")
        elif entry["dtype"] not in FLOAT_DTYPES:
            problems.append(f"{name} is {entry['dtype']}, not float16, float32 or float64"
                            + (" (convert bfloat16 with .float() in PyTorch)"
                               if entry["dtype"] == "BF16" else ""))
        elif shape != array.shape:
            problems.append(f"{name} has shape {shape}, the model's is {array.shape}")
    if problems:
        raise ValueError(f"{path} does not fit the model: {'; '.join(problems)}")
    try:
        loaded = st.load_file(path)
    except Exception as exc:  # safetensors' own checks, beyond read_header's
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    for name, array in expected.items():
        if array is not None:
            array[...] = loaded[name]


def read_header(path):
    """The tensors a safetensors file declares, ``{name: {"dtype", "shape",
    "data_offsets"}}``, after checking that its header is well formed and
    that every tensor lies within the file, so that nothing is read before
    the file is known to hold what it says.

    Examples
    --------
    >>> import os, tempfile
    >>> from cyconv import Sequential, Dense
    >>> from cyconv.weights import read_header, save_weights
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> save_weights(Sequential([Dense(3, 2, rng=0)]), path)
    >>> read_header(path)["0.weight"]
    {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [8, 32]}
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as stream:
        start = stream.read(9)
        _refuse_pickles(path, start)
        stream.seek(8)
        if len(start) < 9:
            raise ValueError(f"{path} is not a safetensors file: {size} bytes, too short "
                             f"for a header")
        header_size = int.from_bytes(start[:8], "little")
        if header_size > min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"{path} is not a safetensors file (truncated?): its header "
                             f"size {header_size} exceeds the {size - 8} bytes that follow "
                             f"(or safetensors' limit of {MAX_HEADER_BYTES})")
        raw = stream.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a safetensors file: its header is not JSON "
                         f"({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file: its header is not a JSON object")
    header.pop("__metadata__", None)
    _check_entries(path, header, size - 8 - header_size)
    return header


def _refuse_pickles(path, start):
    """Recognise PyTorch's files by their first bytes, whatever their name.
    A safetensors header is JSON, so its ninth byte is "{"; the first eight
    are its size, which may begin with any byte."""
    if start[8:9] == b"{":
        return
    if start.startswith(b"PK\x03\x04"):
        if path.lower().endswith(".npz"):
            raise ValueError(f"{path} is an .npz archive, not a safetensors file: a model "
                             f"saved by cyconv loads with Sequential.load")
        raise ValueError(PICKLE_REFUSED.format(
            path=path, what="a zip archive: a PyTorch checkpoint (torch.save), which holds "
                            "a pickle"))
    if start[:1] == b"\x80":  # the PROTO opcode that starts pickles since protocol 2
        raise ValueError(PICKLE_REFUSED.format(path=path, what="a pickle"))


def _check_entries(path, header, data_size):
    spans = []
    for name, entry in header.items():
        where = f"{path} is not a valid safetensors file: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{where} needs exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in ITEM_SIZES:
            raise ValueError(f"{where} has an unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            raise ValueError(f"{where} has a bad shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_count(n) for n in offsets)
                or not offsets[0] <= offsets[1] <= data_size):
            raise ValueError(f"{where} has data_offsets {offsets!r} outside the "
                             f"{data_size} bytes of data")
        if offsets[1] - offsets[0] != math.prod(shape) * ITEM_SIZES[dtype]:
            raise ValueError(f"{where}: {offsets[1] - offsets[0]} bytes do not hold a "
                             f"{dtype} tensor of shape {shape}")
        spans.append((offsets[0], offsets[1], name))
    # The tensors tile the data exactly: no overlap, no gap, nothing after.
    end = 0
    for begin, finish, name in sorted(spans):
        if begin != end:
            raise ValueError(f"{path} is not a valid safetensors file: tensor {name!r} starts "
                             f"at byte {begin} of the data, expected {end}")
        end = finish
    if end != data_size:
        raise ValueError(f"{path} is not a valid safetensors file: {data_size - end} bytes "
                         f"after the last tensor")


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
