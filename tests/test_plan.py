"""A container's planned pass (cyconv/nn/_plan.py): from its second call
with inputs of one kind, a model of Convolution -> ReLU -> MaxPooling
groups, Convolution -> ReLU pairs, Flatten and Dense runs checked stages,
and gives to the last bit what its layers give called one by one;
anything it was not planned for takes the general pass, with its checks
and errors."""

import copy
import pickle
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cyconv
from cyconv import Convolution, Dense, Dropout, Flatten, MaxPooling, ReLU, Sequential
from cyconv import _conv_winograd
from cyconv._conv import conv_geometry


def _lenet(dtype, shape=(1, 12, 12), depths=(4, 5), kernel=3, padding=0, bias=True,
           pool=2, outputs=3):
    layers = []
    for index, depth in enumerate(depths):
        layers += [Convolution(kernel_size=kernel, depth=depth, padding=padding, bias=bias,
                               dtype=dtype, rng=index + 1), ReLU(), MaxPooling(pool)]
    layers += [Flatten(), Dense(output_size=outputs, dtype=dtype, rng=9)]
    return Sequential(layers, input_shape=shape)


def _vgg(dtype, shape=(1, 12, 12), pooled=True, outputs=3):
    """Convolution -> ReLU pairs, before a pooling (VGG-like) or not."""
    layers = [Convolution(kernel_size=3, depth=4, padding=1, dtype=dtype, rng=1), ReLU(),
              Convolution(kernel_size=3, depth=5, dtype=dtype, rng=2), ReLU()]
    if pooled:
        layers += [MaxPooling(2)]
    layers += [Flatten(), Dense(output_size=outputs, dtype=dtype, rng=9)]
    return Sequential(layers, input_shape=shape)


def _planned(model):
    return model.__dict__.get("_planned_pass") is not None


def _planned_lenet():
    """A LeNet-like model that ran planned once, and its input."""
    model = _lenet(np.float32)
    x = np.zeros((2, 1, 12, 12), np.float32)
    model.forward(x)
    model.forward(x)
    assert _planned(model)
    return model, x


def _lenet_and_unplanned_twin():
    """A LeNet-like model, a copy that never plans, and an input for both."""
    model = _lenet(np.float32)
    general = copy.deepcopy(model)
    general.plan_passes = False
    return model, general, np.zeros((2, 1, 12, 12), np.float32)


def _one_by_one(layers, x, grad, learning_rate):
    """The tutorial's loop: each layer's forward, then each backward."""
    out = x
    for layer in layers:
        out = layer.forward(out)
    for layer in reversed(layers):
        grad = layer.backward(grad, learning_rate)
    return out, grad


def _assert_same(got, want):
    assert (got is None) == (want is None)
    if got is not None:
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def _assert_same_parameters(model, layers):
    mine = model.parameters()
    theirs = [p for layer in layers for p in layer.parameters()]
    for p, q in zip(mine, theirs, strict=True):
        _assert_same(p.value, q.value)
        _assert_same(p.grad, q.grad)


def _steps(model, shape, dtype, steps, learning_rate, seed=0, batch=3, single=False):
    """Train ``model`` and a copy of it run layer by layer side by side on
    the same data; check every result, bit for bit."""
    twin = copy.deepcopy(model)
    rng = np.random.default_rng(seed)
    planned = []
    for _ in range(steps):
        x = rng.standard_normal(shape if single else (batch,) + shape).astype(dtype)
        out = model.forward(x)
        planned.append(_planned(model))
        grad = rng.standard_normal(out.shape).astype(dtype)
        got_input_grad = model.backward(grad, learning_rate)
        want_out, want_input_grad = _one_by_one(
            twin.layers, x[np.newaxis] if single else x,
            grad[np.newaxis] if single else grad, learning_rate)
        if single:
            want_out = want_out[0]
            want_input_grad = None if want_input_grad is None else want_input_grad[0]
        _assert_same(out, want_out)
        _assert_same(got_input_grad, want_input_grad)
        _assert_same_parameters(model, twin.layers)
    return planned


STACKS = {
    "lenet": _lenet,
    "pairs and a triple": lambda dtype: _vgg(dtype, pooled=True),
    "pairs": lambda dtype: _vgg(dtype, pooled=False),
}
STAGES = {
    "lenet": ["_ConvReluPool"] * 2,
    "pairs and a triple": ["_ConvRelu", "_ConvReluPool"],
    "pairs": ["_ConvRelu"] * 2,
}


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("batch, single", [(1, False), (3, False), (1, True)])
@pytest.mark.parametrize("learning_rate, input_gradient", [(None, False), (0.05, True)])
def test_planned_steps_give_the_layers_results_bitwise(threads, dtype, stack, batch, single,
                                                       learning_rate, input_gradient):
    model = STACKS[stack](dtype)
    model.needs_input_gradient = input_gradient
    previous = cyconv.get_num_threads()
    cyconv.set_num_threads(threads)
    try:
        planned = _steps(model, (1, 12, 12), dtype, 4, learning_rate, batch=batch,
                         single=single)
    finally:
        cyconv.set_num_threads(previous)
    assert planned == [False, True, True, True]
    stages = [type(stage).__name__ for stage in model._planned_pass.stages]
    assert stages == STAGES[stack] + ["_Flatten", "_Dense"]
    if stack != "lenet":
        # what a pair's own calls keep
        conv, relu = model.layers[:2]
        assert relu.input is relu.output is conv.output and relu._kept
        assert (conv.output >= 0).all() and conv.output.shape == (batch, 4, 12, 12)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_pair_on_the_winograd_kernels_gives_the_layers_results_bitwise(threads):
    model = Sequential([Convolution(kernel_size=3, depth=32, padding=1, rng=1), ReLU(),
                        Convolution(kernel_size=3, depth=32, padding=1, rng=2), ReLU(),
                        MaxPooling(2), Flatten(), Dense(output_size=3, rng=3)],
                       input_shape=(32, 16, 16))
    model.needs_input_gradient = True
    geometry = conv_geometry((16, 32, 16, 16), (32, 32, 3, 3), 1, 1, 1, 1)
    assert all(_conv_winograd.use(geometry, op) for op in ("forward", "input", "weight"))
    previous = cyconv.get_num_threads()
    cyconv.set_num_threads(threads)
    try:
        planned = _steps(model, (32, 16, 16), np.float32, 3, 0.01, batch=16)
    finally:
        cyconv.set_num_threads(previous)
    assert planned == [False, True, True]
    assert type(model._planned_pass.stages[0]).__name__ == "_ConvRelu"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channels=st.integers(1, 3), size=st.integers(6, 15), depth=st.integers(1, 20),
       kernel=st.integers(1, 5), padding=st.integers(0, 2), pool=st.sampled_from([2, 3]),
       two=st.booleans(), batch=st.integers(1, 3), bias=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]),
       pair=st.sampled_from([None, 1, 3]))
def test_any_planned_stack_gives_the_layers_results_bitwise(channels, size, depth, kernel,
                                                            padding, pool, two, batch, bias,
                                                            dtype, pair):
    first = size + 2 * padding - kernel + 1
    assume(kernel <= size + 2 * padding and first >= pool)
    second = first // pool + 2 * padding - kernel + 1
    depths = (depth, 4) if two and second >= pool else (depth,)
    model = _lenet(dtype, (channels, size, size), depths, kernel, padding, bias, pool,
                   outputs=2)
    if pair is not None:
        # a Convolution -> ReLU pair first, of the same output shape
        model = Sequential([Convolution(kernel_size=pair, depth=channels, padding=pair // 2,
                                        bias=bias, dtype=dtype, rng=7), ReLU()] + model.layers,
                           input_shape=(channels, size, size))
    model.needs_input_gradient = True
    planned = _steps(model, (channels, size, size), dtype, 3, 0.01, batch=batch)
    assert planned == [False, True, True]


def test_non_finite_inputs_give_the_layers_results():
    # The direct kernels give up on non-finite input; the general products
    # take over inside the planned pass as they do outside it.
    model = _lenet(np.float32)
    model.needs_input_gradient = True
    twin = copy.deepcopy(model)
    x = np.random.default_rng(1).standard_normal((2, 1, 12, 12)).astype(np.float32)
    x[0, 0, 3, :3] = [np.nan, np.inf, -np.inf]
    for step in range(3):
        out = model.forward(x)
        got = model.backward(np.ones_like(out))
        want_out, want = _one_by_one(twin.layers, x, np.ones_like(out), None)
        assert _planned(model) == (step > 0)
        np.testing.assert_array_equal(out, want_out)
        np.testing.assert_array_equal(got, want)
        for p, q in zip(model.parameters(), twin.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)


def test_only_stacks_of_the_planned_layers_are_planned():
    x = np.zeros((2, 1, 12, 12), np.float32)

    def plans(model, fuse=True):
        model.fuse = fuse
        for _ in range(3):
            out = model.forward(x)
            model.backward(np.zeros_like(out))
        return _planned(model)

    assert plans(_lenet(np.float32))
    assert not plans(_lenet(np.float32), fuse=False)
    dropout = _lenet(np.float32)
    dropout._replace_layers(dropout.layers[:-1] + [Dropout(0.5), dropout.layers[-1]])
    assert not plans(dropout)
    no_dense = Sequential(_lenet(np.float32).layers[:6], input_shape=(1, 12, 12))
    assert not plans(no_dense)
    off = _lenet(np.float32)
    off.plan_passes = False
    assert not plans(off)


def test_inputs_of_each_kind_keep_their_own_plan():
    model = _lenet(np.float32)
    twin = copy.deepcopy(model)
    rng = np.random.default_rng(2)
    for batch in (2, 5, 2, 5, 2):
        x = rng.standard_normal((batch, 1, 12, 12))  # float64: converted
        _assert_same(model.forward(x), _one_by_one(twin.layers, x.astype(np.float32),
                                                   np.zeros((batch, 3), np.float32),
                                                   None)[0])
    assert len(model._plans) == 2
    x = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
    model.forward(x)
    assert _planned(model)
    # A weight replaced: the plans made for the old one go (they hold it).
    old = model.layers[-1].weight.value
    model.layers[-1].weight.value = old.copy()
    model.forward(x)
    assert len(model._plans) == 1
    assert not any(w[2][0] is old for p in model._plans.values() for w in p.watched
                   if type(w[0]).__name__ == "Parameter")


def test_a_replaced_weight_is_used_and_a_wrong_one_refused():
    model = _lenet(np.float32)
    model.needs_input_gradient = True
    _steps(model, (1, 12, 12), np.float32, 2, 0.01)
    conv = model.layers[3]
    conv.weight.value = np.random.default_rng(3).standard_normal(
        conv.weight.value.shape).astype(np.float32)
    assert _steps(model, (1, 12, 12), np.float32, 3, 0.01) == [False, True, True]
    # The same array with its shape set in place: refused by the checks,
    # as without a plan, never handed to the kernels.
    conv.weight.value.shape = (conv.weight.value.shape[0], -1)
    with pytest.raises(ValueError):
        model.forward(np.zeros((3, 1, 12, 12), np.float32))


def test_a_hyper_parameter_assigned_anew_takes_the_checked_path():
    model, x = _planned_lenet()
    model.layers[0].padding = (1, 1)  # a 12x12 output: the Dense no longer fits
    with pytest.raises(ValueError, match="expects input of shape"):
        model.forward(x)
    model.layers[0].padding = (0, 0)
    model.forward(x)
    model.layers[2].kernel_size = (2, 2)  # equal, but another object: checked again
    model.forward(x)
    assert not _planned(model)
    model.forward(x)
    assert _planned(model)


def test_a_thread_count_changed_plans_again():
    model = _lenet(np.float32)
    previous = cyconv.get_num_threads()
    try:
        for threads in (1, 2, 1):
            cyconv.set_num_threads(threads)
            assert _steps(model, (1, 12, 12), np.float32, 2, 0.01) == [False, True]
    finally:
        cyconv.set_num_threads(previous)


def test_a_layer_run_alone_before_backward_takes_the_general_backward():
    model = _lenet(np.float32)
    model.needs_input_gradient = True
    general = copy.deepcopy(model)
    general.plan_passes = False
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
    other = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    grad = rng.standard_normal((2, 3)).astype(np.float32)
    results = []
    for m in (model, general):
        m.forward(x)
        m.forward(x)
        m.layers[3].forward(other)  # the second convolution, on its own
        results.append((m.backward(grad), [p.grad for p in m.parameters()]))
        if m is model:
            assert not model._planned_pass.ran_last(model)
    _assert_same(results[0][0], results[1][0])
    for got, want in zip(results[0][1], results[1][1]):
        _assert_same(got, want)


def test_backward_in_another_thread_is_refused():
    model, x = _planned_lenet()
    errors = []

    def other():
        try:
            model.backward(np.zeros((2, 3), np.float32))
        except RuntimeError as exc:
            errors.append(exc)
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "another thread" in str(errors[0])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_a_planned_model_plans_anew_and_trains_alike(how):
    model = _lenet(np.float32)
    _steps(model, (1, 12, 12), np.float32, 2, 0.01)
    clone = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    assert "_plans" not in clone.__dict__ and "_planned_pass" not in clone.__dict__
    x = np.random.default_rng(5).standard_normal((3, 1, 12, 12)).astype(np.float32)
    for _ in range(3):
        outs = [m.forward(x) for m in (model, clone)]
        grads = [m.backward(np.ones_like(outs[0]), 0.01) for m in (model, clone)]
        _assert_same(outs[0], outs[1])
        assert grads == [None, None]
    assert _planned(clone)
    for p, q in zip(model.parameters(), clone.parameters()):
        _assert_same(p.value, q.value)


@pytest.mark.parametrize("gradient, learning_rate, error", [
    (np.zeros((2, 4), np.float32), None, ValueError),
    (np.zeros((2, 3), np.complex64), None, TypeError),
    (np.zeros((2, 3), np.float32), -1.0, ValueError),
    ("no", None, TypeError),
])
def test_bad_gradients_and_rates_get_the_general_errors(gradient, learning_rate, error):
    model, general, x = _lenet_and_unplanned_twin()
    messages = []
    for m in (model, general):
        m.forward(x)
        m.forward(x)
        with pytest.raises(error) as info:
            m.backward(gradient, learning_rate)
        messages.append(str(info.value))
    assert _planned(model) and messages[0] == messages[1]


def test_replaced_layers_drop_the_plans():
    model, _ = _planned_lenet()
    assert model._plans
    model._replace_layers(list(model.layers))
    assert "_plans" not in model.__dict__


def test_a_plan_takes_its_sizes_from_the_input_never_from_the_layers_caches():
    # Another thread's pass may rewrite the layers' caches between a
    # forward pass and its planning: a plan made then must still be the
    # input's, or a later call hands the kernels arrays of other sizes.
    from cyconv.nn import _plan
    model, _ = _planned_lenet()
    small, large = (np.ones((n, 1, 12, 12), np.float32) for n in (2, 7))
    model.forward(small)
    for layer in model.layers:  # the caches of a batch of 7, one layer at a time
        large = layer.forward(large)
    plan = _plan.plan(model, small, False)
    assert [stage.output_shape[0] for stage in plan.stages] == [2] * len(plan.stages)
    assert plan.stages[0].geometry.n == 2


def test_concurrent_passes_of_two_batch_sizes_keep_each_plan_its_own():
    def model():
        return Sequential([Convolution(kernel_size=3, depth=4, rng=1), ReLU(), MaxPooling(2),
                           Flatten(), Dense(output_size=3, rng=3)], input_shape=(1, 10, 10))
    reference = model()
    inputs = [np.random.default_rng(n).standard_normal((n, 1, 10, 10)).astype(np.float32)
              for n in (2, 7)]
    want = [reference.forward(x) for x in inputs]
    for _ in range(100):
        shared = model()
        barrier = threading.Barrier(2)

        def work(x):
            barrier.wait()
            shared.forward(x)
        threads = [threading.Thread(target=work, args=(x,)) for x in inputs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for _ in range(2):
            for x, w in zip(inputs, want):
                _assert_same(shared.forward(x), w)


def test_layers_of_two_dtypes_are_left_to_the_checked_pass():
    layers = [Convolution(kernel_size=3, depth=4, rng=1), ReLU(), MaxPooling(2),
              Convolution(kernel_size=3, depth=4, dtype=np.float64, rng=2), ReLU(),
              MaxPooling(2), Flatten(), Dense(output_size=2, dtype=np.float64, rng=3)]
    mixed = Sequential(layers, input_shape=(1, 14, 14))
    dense = Sequential([Dense(4, 5, dtype=np.float32, rng=1), Dense(5, 3, dtype=np.float64, rng=2)])
    for model, x in ((mixed, np.ones((2, 1, 14, 14), np.float32)),
                     (dense, np.ones((2, 4), np.float32))):
        outs = [model.forward(x) for _ in range(3)]
        assert not _planned(model)
        for out in outs:
            assert out.dtype == np.float64
            _assert_same(out, outs[0])


def test_plan_passes_turned_off_later_is_obeyed():
    model, x = _planned_lenet()
    model.plan_passes = False
    model.forward(x)
    assert not _planned(model)


def test_hyper_parameters_that_can_change_in_place_are_never_planned():
    model = _lenet(np.float32)
    pool = model.layers[2]
    pool.kernel_size, pool.stride, pool.padding = [2, 2], [2, 2], [0, 0]
    x = np.random.default_rng(6).standard_normal((2, 1, 12, 12)).astype(np.float32)
    model.forward(x)
    model.forward(x)
    assert not _planned(model)
    pool.kernel_size[:] = [3, 3]
    pool.padding[:] = [1, 1]  # the same output size
    twin = copy.deepcopy(model)
    twin.layers[2] = MaxPooling(3, stride=2, padding=1)
    _assert_same(model.forward(x), twin.forward(x))


@pytest.mark.parametrize("inner", [3, 7])
def test_an_inner_layer_without_its_input_gradient_is_left_to_the_checked_pass(inner):
    model, general, x = _lenet_and_unplanned_twin()
    errors = []
    for m in (model, general):
        m.layers[inner].needs_input_gradient = False
        m.forward(x)
        out = m.forward(x)
        with pytest.raises(TypeError) as info:
            m.backward(np.ones_like(out))
        errors.append(str(info.value))
    assert not _planned(model) and errors[0] == errors[1]


def test_a_model_given_its_input_shape_later_plans_again():
    model = Sequential([Flatten(), Dense(4, 3, rng=0)])
    x = np.ones((5, 4), np.float32)
    model.forward(x)
    model.forward(x)
    assert _planned(model)
    model.build((2, 2))
    with pytest.raises(ValueError, match="Flatten expects"):
        model.forward(x)
