"""The layer protocol: training and evaluation modes, buffers, shape
inference, containers (Sequential, Residual), users' own layers saved and
loaded, and the model summary."""

import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyconv import (
    AveragePooling,
    Buffer,
    Convolution,
    Dense,
    Flatten,
    Layer,
    MaxPooling,
    Parameter,
    ReLU,
    Reshape,
    Residual,
    Sequential,
    Sigmoid,
    Tanh,
)
from cyconv.nn.serialization import FORMAT_VERSION
from cyconv.testing import check_layer_gradients

F64 = dict(dtype=np.float64)


def _modes(layer):
    """Every layer's mode, nested ones included, in a fixed order."""
    modes = [layer.training]
    for child in layer.children():
        modes.extend(_modes(child))
    return modes


# -- a layer of a user's own, with a parameter, a buffer and a mode ------------

class Shift(Layer):
    """Adds a learned per-feature offset; counts the samples it saw in
    training mode (a buffer); in evaluation mode also adds ``bonus``."""

    def __init__(self, features, bonus=0.0):
        super().__init__()
        self.features = features
        self.bonus = bonus
        self.offset = Parameter("offset", np.zeros(features))
        self.seen = Buffer("seen", np.zeros(1))
        self.modes_seen = []

    def parameters(self):
        return [self.offset]

    def buffers(self):
        return [self.seen]

    def build(self, input_shape):
        return input_shape

    def get_config(self):
        return {"features": self.features, "bonus": self.bonus}

    def forward(self, input):
        self.input = np.asarray(input, dtype=np.float64)
        self.modes_seen.append(self.training)
        if self.training:
            self.seen.value += len(self.input)
            return self.input + self.offset.value
        return self.input + self.offset.value + self.bonus

    def backward(self, output_gradient, learning_rate=None):
        grad = np.asarray(output_gradient, dtype=np.float64)
        self.offset.grad = grad.sum(axis=0)
        self.apply_learning_rate(learning_rate)
        return grad


def nested_model():
    return Sequential([
        Dense(3, 4, rng=0, **F64), Shift(4),
        Residual([Dense(4, 4, rng=1, **F64), Tanh(), Sequential([Shift(4, bonus=1.0)])]),
        Dense(4, 2, rng=2, **F64),
    ])


# -- modes ---------------------------------------------------------------------

def test_train_and_eval_reach_every_layer_and_return_the_layer():
    model = nested_model()
    assert all(_modes(model))                     # a new model trains
    assert model.eval() is model
    assert not any(_modes(model))
    assert model.train() is model and all(_modes(model))
    assert model.train(False) is model and not any(_modes(model))
    inner = model.layers[2]
    assert inner.train() is inner and all(_modes(inner)) and not model.training
    with pytest.raises(TypeError, match="mode must be True or False"):
        model.train("eval")


def test_fit_trains_and_predict_and_evaluate_evaluate_restoring_each_mode():
    model = nested_model()
    shifts = [model.layers[1], model.layers[2].layers[2].layers[0]]
    x = np.random.default_rng(0).standard_normal((6, 3))
    y = np.array([0, 1, 0, 1, 1, 0])
    for start in (True, False):
        model.train(start)
        model.layers[2].train(not start)           # a mixed state comes back whole
        before = _modes(model)
        model.fit(x, y, epochs=1, batch_size=3, verbose=False)
        assert all(all(shift.modes_seen) for shift in shifts)
        assert _modes(model) == before
        for shift in shifts:
            shift.modes_seen.clear()
        model.predict(x)
        model.evaluate(x, y)
        assert not any(any(shift.modes_seen) for shift in shifts)
        assert _modes(model) == before
        for shift in shifts:
            shift.modes_seen.clear()


def test_validation_inside_fit_evaluates_and_training_resumes():
    model = nested_model()
    shift = model.layers[1]
    x = np.random.default_rng(0).standard_normal((4, 3))
    y = np.array([0, 1, 0, 1])
    model.fit(x, y, epochs=2, batch_size=4, validation_data=(x, y), shuffle=False,
              verbose=False)
    # Per epoch: one training batch, then one validation batch.
    assert shift.modes_seen == [True, False, True, False]


def test_eval_mode_changes_the_output_of_a_layer_that_reads_it():
    model = Sequential([Shift(2, bonus=5.0)])
    x = np.zeros((1, 2))
    np.testing.assert_array_equal(model.predict(x), [[5.0, 5.0]])   # predict evaluates
    np.testing.assert_array_equal(model.forward(x), [[0.0, 0.0]])   # the model still trains


# -- buffers and users' own layers in files --------------------------------------

def test_buffers_are_listed_flat_and_in_order():
    model = nested_model()
    assert [b.name for b in model.buffers()] == ["seen", "seen"]
    assert model.buffers()[1] is model.layers[2].layers[2].layers[0].seen
    assert [p.name for p in model.parameters()] == [
        "weight", "bias", "offset", "weight", "bias", "offset", "weight", "bias"]


def test_custom_layers_buffers_and_nesting_round_trip(tmp_path):
    model = nested_model()
    x = np.random.default_rng(1).standard_normal((5, 3))
    model.fit(x, [0, 1, 1, 0, 1], epochs=2, batch_size=2, verbose=False)
    model.eval()
    path = tmp_path / "model.npz"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    assert {"layer1.seen.npy", "layer2.layer2.layer0.seen.npy",
            "layer2.layer0.weight.npy"} <= names
    loaded = Sequential.load(path, custom_layers={"Shift": Shift})
    assert loaded.training and all(_modes(loaded))             # loaded models train
    assert [type(layer) for layer in loaded.layers] == [Dense, Shift, Residual, Dense]
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.parameters() + model.buffers(),
                    loaded.parameters() + loaded.buffers()):
        assert a.name == b.name
        np.testing.assert_array_equal(a.value, b.value)
    assert loaded.buffers()[0].value[0] == 10                   # 2 epochs x 5 samples
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_an_unknown_layer_is_refused_by_name_and_never_imported(tmp_path):
    path = tmp_path / "model.npz"
    nested_model().save(path)
    with pytest.raises(ValueError, match="unknown layer type 'Shift'"):
        Sequential.load(path)
    with pytest.raises(ValueError, match="unknown layer type 'Shift'"):
        Sequential.load(path, custom_layers={"Other": Shift})
    with pytest.raises(TypeError, match="subclass of cyconv.Layer"):
        Sequential.load(path, custom_layers={"Shift": "tests.test_protocol.Shift"})
    with pytest.raises(ValueError, match="one of cyconv's own layers"):
        Sequential.load(path, custom_layers={"Dense": Shift})


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        contents = {name: archive[name] for name in archive.files}
    contents.update(changes)
    contents = {k: v for k, v in contents.items() if v is not None}
    with open(path, "wb") as stream:
        np.savez(stream, **contents)


@pytest.mark.parametrize("change, words", [
    ({"layer1.seen": None}, "no buffer 'layer1.seen'"),
    ({"layer2.layer2.layer0.seen": None}, "no buffer 'layer2.layer2.layer0.seen'"),
    ({"layer1.seen": np.zeros(2)}, r"layer1.seen is float64 \(2,\), the layer needs "
                                   r"float64 \(1,\)"),
    ({"layer1.seen": np.zeros(1, dtype=np.float32)}, "layer1.seen is float32"),
    ({"layer2.layer0.weight": np.zeros((4, 5))}, "layer2.layer0.weight is float64 "),
])
def test_missing_and_mismatched_buffers_are_refused_by_name(tmp_path, change, words):
    path = tmp_path / "model.npz"
    nested_model().save(path)
    _rewrite(path, **change)
    with pytest.raises(ValueError, match=words):
        Sequential.load(path, custom_layers={"Shift": Shift})


def test_version_1_files_are_still_read(tmp_path):
    model = Sequential([Convolution((1, 5, 5), 3, 2, rng=0), ReLU(), Flatten(),
                        Dense(18, 3, rng=1)])
    path = tmp_path / "v1.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        contents = {name: archive[name] for name in archive.files}
    del contents["input_shape"]
    contents["format_version"] = np.array(1)
    with open(path, "wb") as stream:
        np.savez(stream, **contents)
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5))
    np.testing.assert_array_equal(Sequential.load(path).predict(x), model.predict(x))
    assert FORMAT_VERSION == 2


def test_deeply_nested_architectures_are_refused_with_value_error(tmp_path):
    block = ReLU()
    for _ in range(63):
        block = Residual([block])
    Sequential([block])                               # 64 levels: allowed
    with pytest.raises(ValueError, match="at most 64 levels"):
        Sequential([Residual([block])])
    path = tmp_path / "deep.npz"
    Sequential([ReLU()]).save(path)
    for depth in (100, 100_000):                       # past json's own recursion limit too
        entry = '{"type": "ReLU", "config": {}}'
        architecture = ('{"type": "Residual", "config": {"layers": [' * depth + entry
                        + "]}}" * depth)
        _rewrite(path, architecture=np.array(f"[{architecture}]"))
        with pytest.raises(ValueError, match="invalid architecture.*(deep|nest)"):
            Sequential.load(path)


def test_a_layer_appears_only_once_in_a_model():
    relu = ReLU()
    with pytest.raises(ValueError, match="only once"):
        Sequential([relu, Tanh(), relu])
    with pytest.raises(ValueError, match="only once"):
        Sequential([relu, Residual([Tanh(), relu])])


def test_containers_take_cyconv_layers_only():
    class Duck:
        def forward(self, x):
            return x

        def backward(self, g, learning_rate=None):
            return g

    with pytest.raises(TypeError, match="not a cyconv.Layer"):
        Sequential([Duck()])
    with pytest.raises(TypeError, match="list of layers"):
        Residual(ReLU())


# -- Residual --------------------------------------------------------------------

def test_residual_forward_is_input_plus_body():
    rng = np.random.default_rng(0)
    conv = Convolution((2, 5, 5), 3, 2, padding=1, rng=1, **F64)
    block = Residual([conv, Tanh()])
    x = rng.standard_normal((3, 2, 5, 5))
    reference = Sequential([Convolution((2, 5, 5), 3, 2, padding=1, rng=1, **F64), Tanh()])
    np.testing.assert_allclose(block.forward(x), x + reference.forward(x), rtol=1e-15)
    assert block.layers[0] is conv and block.output_shape == (2, 5, 5)
    np.testing.assert_allclose(block.forward(x[0]), x[0] + reference.forward(x[0]),
                               rtol=1e-15)   # one sample


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_residual_gradients_match_finite_differences(batch, seed):
    rng = np.random.default_rng(seed)
    block = Residual([Convolution((2, 4, 4), 3, 2, padding=1, rng=rng, **F64), Tanh(),
                      Residual([Convolution((2, 4, 4), 3, 2, padding=1, rng=rng, **F64),
                                Sigmoid()])])
    errors = check_layer_gradients(block, rng.standard_normal((batch, 2, 4, 4)))
    assert sorted(errors) == ["0:weight", "1:bias", "2:weight", "3:bias", "input"]


def test_residual_inside_a_model_passes_gradients_through_both_paths():
    rng = np.random.default_rng(3)
    network = Sequential([Dense(3, 4, rng=rng, **F64),
                          Residual([Dense(4, 4, rng=rng, **F64), Tanh()]),
                          Dense(4, 2, rng=rng, **F64)])
    check_layer_gradients(network, rng.standard_normal((2, 3)))


def test_residual_shape_mismatch_is_refused_when_built():
    with pytest.raises(ValueError, match=r"maps samples of shape \(2, 5, 5\) to \(3, 3, 3\)"):
        Sequential([Residual([Convolution(kernel_size=3, depth=3)])], input_shape=(2, 5, 5))
    with pytest.raises(ValueError, match="same shape out as in"):
        Residual([Convolution((2, 5, 5), 3, 2)])
    block = Residual([Flatten()])                                   # shape unknown: at forward
    with pytest.raises(ValueError, match="same shape out as in"):
        block.forward(np.zeros((2, 3, 4)))


def test_residual_applies_a_learning_rate_to_its_body():
    block = Residual([Dense(2, 2, rng=0, **F64)])
    before = block.layers[0].weight.value.copy()
    block.forward(np.ones((1, 2)))
    block.backward(np.ones((1, 2)), learning_rate=0.5)
    np.testing.assert_allclose(block.layers[0].weight.value, before - 0.5)


# -- shape inference --------------------------------------------------------------

def test_inferred_sizes_give_the_explicit_model_at_the_same_seed():
    explicit = Sequential([
        Convolution((3, 12, 12), 3, 8, padding=1, rng=0), ReLU(), MaxPooling(2),
        Convolution((8, 6, 6), 3, 4, rng=1), ReLU(), AveragePooling(2), Flatten(),
        Dense(16, 10, rng=2), ReLU(), Dense(10, 3, rng=3),
    ])
    inferred = Sequential([
        Convolution(kernel_size=3, depth=8, padding=1, rng=0), ReLU(), MaxPooling(2),
        Convolution(kernel_size=3, depth=4, rng=1), ReLU(), AveragePooling(2), Flatten(),
        Dense(output_size=10, rng=2), ReLU(), Dense(output_size=3, rng=3),
    ], input_shape=(3, 12, 12))
    assert inferred.get_config() == explicit.get_config()
    for a, b in zip(explicit.parameters(), inferred.parameters()):
        np.testing.assert_array_equal(a.value, b.value)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12))
    np.testing.assert_array_equal(inferred.predict(x), explicit.predict(x))


def test_one_generator_shared_by_lazy_layers_draws_as_the_explicit_model():
    def build(lazy):
        rng = np.random.default_rng(7)
        if lazy:
            return Sequential([Convolution(kernel_size=3, depth=2, rng=rng), Flatten(),
                               Dense(output_size=2, rng=rng)], input_shape=(1, 5, 5))
        return Sequential([Convolution((1, 5, 5), 3, 2, rng=rng), Flatten(),
                           Dense(18, 2, rng=rng)])

    for a, b in zip(build(False).parameters(), build(True).parameters()):
        np.testing.assert_array_equal(a.value, b.value)


def test_the_first_layer_gives_the_input_shape_and_the_tutorial_form_works():
    model = Sequential([Convolution((1, 28, 28), 3, 5, 0), Sigmoid(),
                        Reshape((5, 26, 26), (5 * 26 * 26, 1)), Dense(output_size=100),
                        Sigmoid(), Dense(output_size=2), Sigmoid()])
    assert model.input_shape == (1, 28, 28)
    assert model.layers[3].weight.value.shape == (100, 5 * 26 * 26)
    assert model.output_shape == (2, 1)


def test_lazy_layers_nested_in_containers_are_inferred():
    model = Sequential([Convolution(kernel_size=3, depth=4, padding=1),
                        Residual([Convolution(kernel_size=3, depth=4, padding=1), ReLU(),
                                  Sequential([Convolution(kernel_size=1, depth=4)])]),
                        Flatten(), Dense(output_size=3)], input_shape=(2, 6, 6))
    inner = model.layers[1].layers[2].layers[0]
    assert inner.weight.value.shape == (4, 4, 1, 1)
    assert model.predict(np.zeros((2, 2, 6, 6))).shape == (2, 3)


def test_an_unbuilt_layer_says_how_to_build_it():
    for layer, x in ((Convolution(kernel_size=3, depth=2), np.zeros((1, 1, 5, 5))),
                     (Dense(output_size=3), np.zeros((1, 4)))):
        assert not layer.built and layer.parameters() == []
        with pytest.raises(RuntimeError, match="input_shape"):
            layer.forward(x)
    model = Sequential([Flatten(), Dense(output_size=3)])          # no input shape known
    assert not model.built
    with pytest.raises(RuntimeError, match=r"layer 1 \(Dense\).*input_shape"):
        model.predict(np.zeros((2, 4)))
    layer = Dense(output_size=3)
    assert layer.build((4,)) == (3,) and layer.built
    assert layer.forward(np.zeros((2, 4))).shape == (2, 3)


@pytest.mark.parametrize("make, words", [
    (lambda: Convolution(kernel_size=3), "needs kernel_size and depth"),
    (lambda: Convolution(depth=3), "needs kernel_size and depth"),
    (lambda: Dense(4), "needs output_size"),
    (lambda: Sequential([Convolution(kernel_size=3, depth=2)], input_shape=(5,)),
     r"layer 0 \(Convolution\) of Sequential: .*\(C, H, W\)"),
    (lambda: Sequential([Dense(output_size=2)], input_shape=(2, 3)),
     "put a Flatten before it"),
    (lambda: Sequential([Convolution((1, 8, 8), 3, 2), Flatten(), Dense(10, 3)]),
     r"layer 2 \(Dense\).*\(10,\), got \(72,\)"),
    (lambda: Sequential([Convolution((1, 8, 8), 3, 2), Convolution((3, 6, 6), 3, 2)]),
     r"expects samples of shape \(3, 6, 6\), got \(2, 6, 6\)"),
    (lambda: Sequential([ReLU()], input_shape=(0, 3)), "positive sizes"),
    (lambda: Sequential([MaxPooling(4)], input_shape=(1, 2, 2)), "larger than"),
])
def test_shapes_that_do_not_fit_are_refused_when_the_model_is_built(make, words):
    with pytest.raises((ValueError, TypeError), match=words):
        make()


# -- summary -----------------------------------------------------------------------

def test_summary_counts_parameters_by_hand():
    model = Sequential([
        Convolution(kernel_size=3, depth=8, padding=1), ReLU(), MaxPooling(2),
        Residual([Convolution(kernel_size=3, depth=8, padding=1, bias=False), ReLU()]),
        Flatten(), Dense(output_size=10),
    ], input_shape=(3, 8, 8))
    table = model.summary()
    lines = table.splitlines()
    conv1 = 8 * 3 * 3 * 3 + 8            # weights + biases
    conv2 = 8 * 8 * 3 * 3                # no bias
    dense = 8 * 4 * 4 * 10 + 10
    rows = {line.split()[1]: line for line in lines[2:-2]}
    assert lines[0].split() == ["Layer", "Output", "shape", "Parameters"]
    assert [line.split()[0] for line in lines[2:-2]] == [
        "0", "1", "2", "3", "3.0", "3.1", "4", "5"]
    assert rows["Residual"].split()[-1] == f"{conv2:,}"
    assert "(8, 4, 4)" in rows["Residual"]
    assert rows["Dense"].split()[-1] == f"{dense:,}" and "(10,)" in rows["Dense"]
    assert lines[-1].split() == ["Total", f"{conv1 + conv2 + dense:,}"]
    assert conv1 + conv2 + dense == sum(p.value.size for p in model.parameters())


def test_summary_lists_buffers_beside_and_unknown_shapes_as_question_marks():
    table = Sequential([Flatten(), Shift(4)]).summary().splitlines()
    assert table[0].split()[-1] == "Buffers"
    assert table[2].split()[:3] == ["0", "Flatten", "?"]
    assert table[-1].split() == ["Total", "4", "1"]


def test_summary_of_a_loaded_model_knows_its_shapes(tmp_path):
    model = Sequential([Flatten(), Dense(output_size=2)], input_shape=(2, 2))
    model.save(tmp_path / "m.npz")
    assert Sequential.load(tmp_path / "m.npz").summary() == model.summary()


def test_apply_learning_rate_is_the_tutorial_step():
    layer = Shift(2)
    layer.forward(np.ones((3, 2)))
    layer.backward(np.ones((3, 2)), learning_rate=0.1)
    np.testing.assert_allclose(layer.offset.value, [-0.3, -0.3])
    with pytest.raises(ValueError, match="learning_rate"):
        layer.apply_learning_rate(-1.0)


def test_get_config_of_containers_nests_json():
    config = nested_model().get_config()
    assert json.loads(json.dumps(config)) == config
    assert config["layers"][2]["type"] == "Residual"
    assert config["layers"][2]["config"]["layers"][2]["config"]["layers"][0] == {
        "type": "Shift", "config": {"features": 4, "bonus": 1.0}}


def test_a_single_sample_goes_forward_and_backward_through_a_model():
    model = Sequential([Convolution((1, 4, 4), 3, 2, rng=0, **F64), Flatten(),
                        Dense(8, 3, rng=1, **F64)])
    model.needs_input_gradient = True
    x = np.random.default_rng(0).standard_normal((1, 4, 4))
    assert model.forward(x).shape == (3,)
    grad = model.backward(np.ones(3))
    assert grad.shape == (1, 4, 4)
    batched = Sequential([Convolution((1, 4, 4), 3, 2, rng=0, **F64), Flatten(),
                          Dense(8, 3, rng=1, **F64)])
    batched.needs_input_gradient = True
    batched.forward(x[np.newaxis])
    np.testing.assert_array_equal(grad, batched.backward(np.ones((1, 3)))[0])
