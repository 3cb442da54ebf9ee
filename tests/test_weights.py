"""Weights through safetensors files: cyconv to cyconv, PyTorch to cyconv and
back, and every malformed or pickled file refused with a message."""

import json
import pickle
import zipfile

import numpy as np
import pytest

from cyconv import (
    BatchNormalization,
    Convolution,
    Dense,
    Flatten,
    MaxPooling,
    ReLU,
    Residual,
    Sequential,
)

safetensors_numpy = pytest.importorskip("safetensors.numpy")

from cyconv.weights import read_header, state_dict  # noqa: E402  (after the skip)


def small_network(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return Sequential([
        Convolution((3, 10, 9), 3, 4, padding=1, stride=(1, 2), dtype=dtype, rng=rng), ReLU(),
        MaxPooling(2), Convolution((4, 5, 2), (2, 1), 6, groups=2, dtype=dtype, rng=rng),
        Flatten(), Dense(6 * 4 * 2, 5, dtype=dtype, rng=rng),
    ])


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    for parameter in model.parameters():
        parameter.value[...] = rng.standard_normal(parameter.value.shape)
    return model


def weights_of(model):
    return [p.value.copy() for p in model.parameters()]


def write_safetensors(path, header, data=b"", header_size=None, pad_to=None):
    """A safetensors file byte by byte, for files safetensors would not write."""
    raw = json.dumps(header).encode()
    if pad_to is not None:
        raw = raw.ljust(pad_to, b" ")
    size = len(raw) if header_size is None else header_size
    path.write_bytes(size.to_bytes(8, "little") + raw + data)
    return path


# -- cyconv to cyconv -----------------------------------------------------------------

def test_round_trip(tmp_path):
    source = randomize(small_network(0), seed=1)
    path = tmp_path / "w.safetensors"
    source.save_weights(path)
    target = small_network(2)
    target.load_weights(path)
    for a, b in zip(weights_of(source), weights_of(target)):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(3).standard_normal((4, 3, 10, 9)).astype(np.float32)
    np.testing.assert_array_equal(target.predict(x), source.predict(x))


def test_names_are_pytorch_state_dict_names(tmp_path):
    model = small_network(0)
    assert list(state_dict(model)) == ["0.weight", "0.bias", "3.weight", "3.bias",
                                       "5.weight", "5.bias"]
    model.save_weights(tmp_path / "w.safetensors")
    stored = safetensors_numpy.load_file(tmp_path / "w.safetensors")
    assert stored["3.weight"].shape == (6, 2, 2, 1)   # (F, C // groups, kh, kw)
    assert stored["5.weight"].shape == (5, 48)        # (out, in), nn.Linear's
    np.testing.assert_array_equal(stored["5.weight"], model.layers[5].weights)


def test_a_float32_file_loads_into_a_float64_model(tmp_path):
    source = randomize(small_network(0), seed=1)
    source.save_weights(tmp_path / "w.safetensors")
    target = small_network(0, dtype=np.float64)
    target.load_weights(tmp_path / "w.safetensors")
    for a, b in zip(weights_of(source), weights_of(target)):
        assert b.dtype == np.float64
        np.testing.assert_array_equal(a.astype(np.float64), b)


def test_float16_and_float64_tensors_are_converted(tmp_path):
    weight = np.arange(6.0).reshape(2, 3)
    safetensors_numpy.save_file({"0.weight": weight.astype(np.float16),
                                 "0.bias": np.array([0.5, -1.0])}, tmp_path / "w.safetensors")
    model = Sequential([Dense(3, 2)])
    model.load_weights(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(model.layers[0].weights, weight.astype(np.float32))
    np.testing.assert_array_equal(model.layers[0].biases, [0.5, -1.0])


# -- tensors that do not fit ------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("3.bias"), r"missing 3\.bias"),
    (lambda t: t.update({"7.weight": np.zeros(2, np.float32)}), r"unexpected 7\.weight"),
    (lambda t: t.update({"5.weight": np.zeros((5, 47), np.float32)}),
     r"5\.weight has shape \(5, 47\), the model's is \(5, 48\)"),
    (lambda t: t.update({"0.bias": np.zeros(4, np.int32)}), r"0\.bias is I32, not float"),
])
def test_tensors_that_do_not_fit_are_named_and_nothing_changes(tmp_path, change, message):
    tensors = {k: v.copy() for k, v in state_dict(small_network(0)).items()}
    change(tensors)
    safetensors_numpy.save_file(tensors, tmp_path / "w.safetensors")
    model = small_network(1)
    before = weights_of(model)
    with pytest.raises(ValueError, match=message):
        model.load_weights(tmp_path / "w.safetensors")
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_every_problem_is_listed_at_once(tmp_path):
    safetensors_numpy.save_file({"0.weight": np.zeros((4, 3), np.float32),
                                 "1.weight": np.zeros(1, np.float32)}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match=r"missing 0\.bias; unexpected 1\.weight; "
                                         r"0\.weight has shape \(4, 3\)"):
        Sequential([Dense(3, 2)]).load_weights(tmp_path / "w.safetensors")


def test_bfloat16_gets_a_hint(tmp_path):
    path = write_safetensors(tmp_path / "w.safetensors", {
        "0.bias": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
        "0.weight": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [4, 16]}}, bytes(16))
    with pytest.raises(ValueError, match=r"0\.bias is BF16.*\.float\(\)"):
        Sequential([Dense(3, 2)]).load_weights(path)


# -- malformed files ----------------------------------------------------------------------

GOOD_HEADER = {"0.bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "0.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [8, 32]}}


def with_entry(name, **changes):
    header = json.loads(json.dumps(GOOD_HEADER))
    header[name].update(changes)
    return header


@pytest.mark.parametrize("header, data, header_size, message", [
    (GOOD_HEADER, bytes(32), 10**6, r"header size 1000000 exceeds"),
    (GOOD_HEADER, bytes(32), 2**64 - 1, r"header size \d+ exceeds"),
    (GOOD_HEADER, bytes(31), None, r"'0\.weight' has data_offsets \[8, 32\] outside the 31"),
    (GOOD_HEADER, bytes(40), None, r"8 bytes after the last tensor"),
    (with_entry("0.weight", data_offsets=[4, 28]), bytes(32), None, r"starts at byte 4"),
    (with_entry("0.weight", data_offsets=[12, 36]), bytes(36), None, r"starts at byte 12"),
    (with_entry("0.weight", data_offsets=[8, 28]), bytes(28), None,
     r"20 bytes do not hold a F32 tensor of shape \[2, 3\]"),
    (with_entry("0.weight", data_offsets=[32, 8]), bytes(32), None, r"data_offsets \[32, 8\]"),
    (with_entry("0.weight", shape=[2, -3]), bytes(32), None, r"bad shape \[2, -3\]"),
    (with_entry("0.weight", shape="2x3"), bytes(32), None, r"bad shape '2x3'"),
    (with_entry("0.weight", dtype="F128"), bytes(32), None, r"unknown dtype 'F128'"),
    (with_entry("0.weight", extra=1), bytes(32), None, r"exactly dtype, shape and data_offsets"),
    ([1, 2], b"", None, r"not a JSON object"),
])
def test_malformed_files_are_refused_before_reading(tmp_path, header, data, header_size,
                                                     message):
    path = write_safetensors(tmp_path / "w.safetensors", header, data, header_size)
    with pytest.raises(ValueError, match=message):
        Sequential([Dense(3, 2)]).load_weights(path)


@pytest.mark.parametrize("contents, message", [
    (b"", r"0 bytes, too short"),
    (b"\x05\x00\x00\x00\x00\x00\x00\x00{\xff\xfe}x", r"header is not JSON"),
    (b"\x04\x00\x00\x00\x00\x00\x00\x00{1:}", r"header is not JSON"),
])
def test_garbage_is_refused(tmp_path, contents, message):
    path = tmp_path / "w.safetensors"
    path.write_bytes(contents)
    with pytest.raises(ValueError, match=message):
        Sequential([Dense(3, 2)]).load_weights(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    Sequential([Dense(3, 2)]).save_weights(path)
    whole = path.read_bytes()
    for cut in (len(whole) - 1, len(whole) - 20, 30, 9):
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match="not a (valid )?safetensors file"):
            Sequential([Dense(3, 2)]).load_weights(path)


def test_a_header_size_whose_first_byte_is_a_pickles_is_still_safetensors(tmp_path):
    # 384 = 0x180: the file starts with 0x80, as a pickle does.
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = np.array([1, 2], np.float32).tobytes() + weight.tobytes()
    path = write_safetensors(tmp_path / "w.safetensors", GOOD_HEADER, data, pad_to=384)
    assert path.read_bytes()[0] == 0x80
    model = Sequential([Dense(3, 2)])
    model.load_weights(path)
    np.testing.assert_array_equal(model.layers[0].weights, weight)
    assert read_header(path) == GOOD_HEADER


# -- pickles are never opened ------------------------------------------------------------

class LeavesAMark:
    """Unpickling this creates a file: the proof that a pickle was run."""

    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return (open, (self.mark, "w"))


def test_a_pickle_is_refused_and_never_run(tmp_path):
    mark = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"0.weight": LeavesAMark(str(mark))}, protocol=4))
    with pytest.raises(ValueError, match=r"pickle.*can run any code.*"
                                         r"safetensors\.torch\.save_file\(model\.state_dict\(\)"):
        Sequential([Dense(3, 2)]).load_weights(path)
    assert not mark.exists()


def test_a_pytorch_zip_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as archive:   # the layout of torch.save's files
        archive.writestr("model/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("model/version", "3\n")
    with pytest.raises(ValueError, match=r"PyTorch checkpoint.*never unpickles"):
        Sequential([Dense(3, 2)]).load_weights(path)


def test_a_cyconv_model_file_points_to_load(tmp_path):
    path = tmp_path / "model.npz"
    Sequential([Dense(3, 2)]).save(path)
    with pytest.raises(ValueError, match=r"Sequential\.load"):
        Sequential([Dense(3, 2)]).load_weights(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        Sequential([Dense(3, 2)]).load_weights(tmp_path / "none.safetensors")


def test_without_safetensors_the_error_says_what_to_install(hide_package, tmp_path):
    hide_package("safetensors")
    for call in (Sequential([Dense(3, 2)]).save_weights,
                 Sequential([Dense(3, 2)]).load_weights):
        with pytest.raises(ImportError, match=r'pip install "cyconv\[safetensors\]"'):
            call(tmp_path / "w.safetensors")


# -- PyTorch ----------------------------------------------------------------------------------

@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors.torch")
    return torch


def assert_predicts_like(model, network, x, rtol=1e-5, atol=1e-5):
    """cyconv's predict equals the PyTorch network's eval-mode output."""
    import torch

    with torch.no_grad():
        expected = network.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=rtol, atol=atol)


def load_from_torch(model, network, path):
    """The network's state_dict through a safetensors file into model."""
    from safetensors.torch import save_file

    save_file(network.state_dict(), str(path))
    model.load_weights(path)


def load_into_torch(network, model, path):
    """model's weights through a safetensors file into the network, strictly."""
    from safetensors.torch import load_file

    model.save_weights(path)
    network.load_state_dict(load_file(str(path)), strict=True)


def torch_network(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, stride=(1, 2)), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, (2, 1), groups=2), nn.Flatten(), nn.Linear(6 * 4 * 2, 5),
    )


def test_pytorch_weights_load_and_predict_the_same(torch, tmp_path):
    torch.manual_seed(0)
    network = torch_network(torch)
    model = small_network(1)
    load_from_torch(model, network, tmp_path / "torch.safetensors")
    x = np.random.default_rng(0).standard_normal((6, 3, 10, 9)).astype(np.float32)
    assert_predicts_like(model, network, x, atol=1e-6)


def test_cyconv_weights_load_into_pytorch_strictly(torch, tmp_path):
    model = randomize(small_network(0), seed=4)
    for parameter in model.parameters():
        parameter.value *= 0.5
    network = torch_network(torch)
    load_into_torch(network, model, tmp_path / "cyconv.safetensors")
    x = np.random.default_rng(1).standard_normal((6, 3, 10, 9)).astype(np.float32)
    assert_predicts_like(model, network, x)


def test_a_nested_sequential_maps_as_in_pytorch(torch, tmp_path):
    nn = torch.nn
    torch.manual_seed(1)
    network = nn.Sequential(nn.Sequential(nn.Linear(5, 4), nn.ReLU()), nn.Linear(4, 3))
    model = Sequential([Sequential([Dense(5, 4), ReLU()]), Dense(4, 3)])
    assert list(state_dict(model)) == ["0.0.weight", "0.0.bias", "1.weight", "1.bias"]
    load_from_torch(model, network, tmp_path / "nested.safetensors")
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    assert_predicts_like(model, network, x, atol=1e-6)


def test_a_residual_block_maps_as_a_sequential_subclass_in_pytorch(torch, tmp_path):
    nn = torch.nn

    class TorchResidual(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x)

    torch.manual_seed(2)
    network = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        TorchResidual(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 1)),
        nn.Flatten(), nn.Linear(3 * 5 * 4, 2))
    model = Sequential([
        Convolution(kernel_size=3, depth=3, padding=1),
        Residual([Convolution(kernel_size=3, depth=3, padding=1), ReLU(),
                  Convolution(kernel_size=1, depth=3)]),
        Flatten(), Dense(output_size=2)], input_shape=(2, 5, 4))
    path = tmp_path / "residual.safetensors"
    load_from_torch(model, network, path)
    x = np.random.default_rng(3).standard_normal((3, 2, 5, 4)).astype(np.float32)
    assert_predicts_like(model, network, x)
    model.layers[1].layers[2].weight.value *= -1   # and back
    load_into_torch(network, model, path)
    assert_predicts_like(model, network, x)


def test_a_torch_save_file_is_refused_unopened(torch, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch_network(torch).state_dict(), path)
    with pytest.raises(ValueError, match=r"PyTorch checkpoint.*can run any code"):
        small_network(0).load_weights(path)


# -- batch normalisation ----------------------------------------------------------------

def batch_norm_network(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 5 * 4, 6), nn.BatchNorm1d(6))


def cyconv_batch_norm_network():
    return Sequential([Convolution(kernel_size=3, depth=4, padding=1), BatchNormalization(),
                       ReLU(), Flatten(), Dense(output_size=6), BatchNormalization()],
                      input_shape=(2, 5, 4))


def test_batch_norm_names(tmp_path):
    names = list(state_dict(cyconv_batch_norm_network()))
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                     "1.running_var", "1.num_batches_tracked", "4.weight", "4.bias",
                     "5.weight", "5.bias", "5.running_mean", "5.running_var",
                     "5.num_batches_tracked"]
    model = cyconv_batch_norm_network()
    model.save_weights(tmp_path / "w.safetensors")
    stored = safetensors_numpy.load_file(tmp_path / "w.safetensors")
    assert stored["1.num_batches_tracked"].dtype == np.int64
    assert stored["1.num_batches_tracked"].shape == ()


def test_a_trained_pytorch_batch_norm_network_loads(torch, tmp_path):
    torch.manual_seed(3)
    network = batch_norm_network(torch).train()
    with torch.no_grad():   # a few training-mode passes move the running statistics
        for _ in range(5):
            network(torch.randn(8, 2, 5, 4) * 3 + 1)
    model = cyconv_batch_norm_network()
    load_from_torch(model, network, tmp_path / "bn.safetensors")
    np.testing.assert_array_equal(model.layers[1].running_var.value,
                                  network[1].running_var.numpy())
    x = np.random.default_rng(4).standard_normal((5, 2, 5, 4)).astype(np.float32)
    assert_predicts_like(model, network, x, rtol=1e-4)


def test_a_trained_cyconv_batch_norm_network_loads_into_pytorch_strictly(torch, tmp_path):
    model = cyconv_batch_norm_network()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 2, 5, 4)).astype(np.float32)
    model.fit(x, rng.integers(0, 6, 64), epochs=2, batch_size=16, seed=0, verbose=False)
    network = batch_norm_network(torch)
    load_into_torch(network, model, tmp_path / "bn.safetensors")
    assert_predicts_like(model, network, x[:7], rtol=1e-4)
