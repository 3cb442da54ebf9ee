"""SGD and Adam against straightforward per-element references."""

import math
from unittest import mock

import numpy as np
import pytest

from cyconv import SGD, Adam, Parameter
from cyconv.nn import optimizers
from cyconv.optimizers import get_optimizer
from reference import awkward_values


def parameter_with_gradients(seed, steps, shape=(3, 2), dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (Parameter("w", rng.standard_normal(shape).astype(dtype)),
            [rng.standard_normal(shape).astype(dtype) for _ in range(steps)])


def reference_sgd(value, grads, lr, momentum, weight_decay, nesterov):
    """PyTorch's SGD, element by element in plain Python floats."""
    value = [float(v) for v in value.ravel()]
    velocity = [None] * len(value)
    for grad in grads:
        for i, g in enumerate(grad.ravel()):
            g = float(g) + weight_decay * value[i]
            if momentum:
                velocity[i] = g if velocity[i] is None else momentum * velocity[i] + g
                g = g + momentum * velocity[i] if nesterov else velocity[i]
            value[i] -= lr * g
    return np.array(value)


def reference_adam(value, grads, lr, beta1, beta2, eps, weight_decay):
    value = [float(v) for v in value.ravel()]
    m = [0.0] * len(value)
    v = [0.0] * len(value)
    for t, grad in enumerate(grads, start=1):
        for i, g in enumerate(grad.ravel()):
            g = float(g) + weight_decay * value[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = v[i] / (1 - beta2 ** t)
            value[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return np.array(value)


@pytest.mark.parametrize("momentum, weight_decay, nesterov", [
    (0.0, 0.0, False), (0.9, 0.0, False), (0.5, 0.01, False), (0.9, 0.001, True)])
def test_sgd_matches_reference(momentum, weight_decay, nesterov):
    parameter, grads = parameter_with_gradients(0, 5)
    expected = reference_sgd(parameter.value, grads, 0.1, momentum, weight_decay, nesterov)
    optimizer = SGD(0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    for grad in grads:
        parameter.grad = grad
        optimizer.step([parameter])
    np.testing.assert_allclose(parameter.value.ravel(), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_matches_reference(weight_decay):
    parameter, grads = parameter_with_gradients(1, 6)
    expected = reference_adam(parameter.value, grads, 0.01, 0.9, 0.999, 1e-8, weight_decay)
    optimizer = Adam(0.01, weight_decay=weight_decay)
    for grad in grads:
        parameter.grad = grad
        optimizer.step([parameter])
    np.testing.assert_allclose(parameter.value.ravel(), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("optimizer", [SGD(0.1, momentum=0.9), Adam(0.1)])
def test_optimizers_minimise_a_quadratic(optimizer):
    target = np.array([3.0, -2.0, 0.5])
    parameter = Parameter("w", np.zeros(3))
    for _ in range(300):
        parameter.grad = 2 * (parameter.value - target)
        optimizer.step([parameter])
    np.testing.assert_allclose(parameter.value, target, atol=1e-2)


def test_state_is_per_parameter_and_updates_are_in_place():
    a, grads_a = parameter_with_gradients(2, 3)
    b, grads_b = parameter_with_gradients(3, 3, shape=(4,))
    array_a = a.value
    optimizer = Adam(0.01)
    alone = Parameter("a", a.value.copy())
    for ga, gb in zip(grads_a, grads_b):
        a.grad, b.grad = ga, gb
        optimizer.step([a, b])
    solo = Adam(0.01)
    for ga in grads_a:
        alone.grad = ga
        solo.step([alone])
    assert a.value is array_a
    np.testing.assert_array_equal(a.value, alone.value)


def test_float32_parameters_stay_float32():
    for optimizer in (SGD(0.1, momentum=0.9, weight_decay=0.01), Adam(0.01)):
        parameter, grads = parameter_with_gradients(4, 2, dtype=np.float32)
        for grad in grads:
            parameter.grad = grad
            optimizer.step([parameter])
        assert parameter.value.dtype == np.float32


def test_parameters_without_gradient_are_left_alone():
    parameter = Parameter("w", np.ones(2))
    SGD(1.0).step([parameter])
    np.testing.assert_array_equal(parameter.value, [1.0, 1.0])


def test_learning_rate_can_change_between_steps():
    parameter = Parameter("w", np.zeros(1))
    optimizer = SGD(1.0)
    parameter.grad = np.ones(1)
    optimizer.step([parameter])
    optimizer.learning_rate = 0.5
    optimizer.step([parameter])
    np.testing.assert_array_equal(parameter.value, [-1.5])


@pytest.mark.parametrize("make, error, words", [
    (lambda: SGD(-0.1), ValueError, "learning_rate"),
    (lambda: SGD(0.1, momentum=1.0), ValueError, "momentum"),
    (lambda: SGD(0.1, nesterov=True), ValueError, "nesterov"),
    (lambda: SGD("fast"), TypeError, "learning_rate"),
    (lambda: Adam(beta1=1.5), ValueError, "beta1"),
    (lambda: Adam(weight_decay=float("inf")), ValueError, "weight_decay"),
    (lambda: get_optimizer("adagrad"), ValueError, "optimizer must be"),
])
def test_bad_optimizer_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_mismatched_gradient_shape():
    parameter = Parameter("w", np.zeros(3))
    parameter.grad = np.zeros(2)
    with pytest.raises(ValueError, match="gradient of w"):
        Adam().step([parameter])


def test_get_optimizer():
    assert isinstance(get_optimizer("adam"), Adam)
    assert isinstance(get_optimizer("SGD"), SGD)
    optimizer = SGD()
    assert get_optimizer(optimizer) is optimizer


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_skips_missing_gradients_and_refuses_misshapen_ones(momentum):
    parameter, (grad,) = parameter_with_gradients(2, 1, dtype=np.float32)
    idle = Parameter("b", np.ones(2, dtype=np.float32))
    before = parameter.value.copy()
    parameter.grad = grad
    SGD(0.25, momentum=momentum).step([idle, parameter])
    # Each element as float32 arithmetic gives it: value - float32(0.25 * grad).
    expected = [np.float32(v) - np.float32(0.25) * np.float32(g)
                for v, g in zip(before.ravel(), grad.ravel())]
    np.testing.assert_array_equal(parameter.value.ravel(), np.array(expected, np.float32))
    assert parameter.value.dtype == np.float32
    np.testing.assert_array_equal(idle.value, [1, 1])
    parameter.grad = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"gradient of w has shape \(2, 3\), its value \(3, 2\)"):
        SGD(0.25, momentum=momentum).step([parameter])



def test_a_subclass_of_sgd_updates_its_own_way():
    """Plain SGD's step skips the per-parameter calls of the base class; a
    subclass that overrides them still has them called."""
    calls = []

    class Clipped(SGD):
        def _update(self, parameter, grad):
            calls.append(parameter.name)
            super()._update(parameter, np.clip(grad, -1, 1))

    parameter = Parameter("w", np.zeros(3))
    parameter.grad = np.array([-5.0, 0.5, 5.0])
    Clipped(0.5).step([parameter])
    assert calls == ["w"]
    np.testing.assert_array_equal(parameter.value, [0.5, -0.25, -0.5])


def test_plain_sgd_updates_in_order_and_stops_at_a_misshapen_gradient():
    """Plain SGD's one compiled call for all parameters leaves to numpy
    those whose arrays it does not take, in their turn, and an error
    leaves the parameters after it as they were, as one at a time does."""
    rng = np.random.default_rng(8)
    holder = np.zeros((4, 6), np.float32)
    values = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(5)]
    holder[:, ::2] = values[2]
    params = [Parameter(name, value) for name, value in zip("abcde", values)]
    params[2].value = holder[:, ::2]  # strided: numpy's expression
    params.insert(1, Parameter("skipped", np.ones(2, np.float32)))
    for p in params[2:]:
        p.grad = rng.standard_normal((4, 3)).astype(np.float32)
    params[0].grad = rng.standard_normal((4, 3)).astype(np.float32)
    params[4].grad = np.ones((3, 4), np.float32)  # misshapen: "d"
    before = [p.value.copy() for p in params]
    with pytest.raises(ValueError, match=r"gradient of d has shape \(3, 4\)"):
        SGD(0.5).step(params)
    for p, start in zip(params, before):
        if p.name in "abc":
            expected = start - np.float32(0.5) * p.grad
            assert p.value.tobytes() == np.ascontiguousarray(expected).tobytes()
        else:  # skipped, d (refused) and e (after it)
            assert p.value.tobytes() == start.tobytes()


def test_plain_sgd_keeps_the_base_class_step_where_it_must():
    """Plain SGD's one compiled call is skipped, and the base class's step
    runs, for an ``_update`` set on the instance, a rate numpy computes in
    float64 and parameters given as an iterable other than a list (read
    one at a time, as before); the compiled call refuses a negative start."""
    from cyconv._kernels import _optim

    calls = []
    sgd = SGD(0.5)
    sgd._update = lambda parameter, grad: calls.append(parameter.name)
    parameter = Parameter("w", np.zeros(3, np.float32))
    parameter.grad = np.ones(3, np.float32)
    sgd.step([parameter])
    assert calls == ["w"] and not parameter.value.any()

    def parameters():
        yield parameter
        raise RuntimeError("the second parameter")

    with pytest.raises(RuntimeError, match="second"):
        SGD(0.5).step(parameters())
    np.testing.assert_array_equal(parameter.value, [-0.5, -0.5, -0.5])  # the first one ran
    rate = np.float32(0.25)
    sgd = SGD(0.5)
    sgd.learning_rate = rate
    sgd.step([parameter])
    assert parameter.value.dtype == np.float32
    np.testing.assert_array_equal(parameter.value, np.float32(-0.5) - rate * np.float32(1))
    with pytest.raises(ValueError, match="start"):
        _optim.sgd_parameters([parameter], -1, 0.5)

# -- the compiled updates (_kernels/_optim.pyx) against numpy's expressions --

def numpy_sgd(value, grads, lr):
    """SGD's step as numpy computes it, the expression the compiled update
    replaces (float32 rounding after each operation included)."""
    value = value.copy()
    with np.errstate(all="ignore"):
        for grad in grads:
            value -= lr * grad
    return value


def numpy_adam(value, grads, lr, beta1, beta2, eps):
    """Adam's step as numpy computes it (see numpy_sgd)."""
    value, m, v = value.copy(), np.zeros_like(value), np.zeros_like(value)
    with np.errstate(all="ignore"):
        for t, grad in enumerate(grads, start=1):
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * (grad * grad)
            m_hat = m / (1 - beta1 ** t)
            v_hat = v / (1 - beta2 ** t)
            value -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (33, 5), (16, 3, 3, 3)])
def test_compiled_updates_are_numpys_expressions_to_the_bit(dtype, shape):
    rng = np.random.default_rng(sum(shape) + np.dtype(dtype).itemsize)
    start = awkward_values(rng, shape, dtype)
    grads = [awkward_values(rng, shape, dtype) * 0.1 for _ in range(3)]
    # (plain SGD updates a model's parameters in one compiled call, which
    # returns the index of the first it leaves: here none)
    for name, optimizer, expected, done in (
            ("sgd_parameters", SGD(0.07), numpy_sgd(start, grads, 0.07), 1),
            ("adam", Adam(0.003, beta1=0.8, beta2=0.95, epsilon=1e-6),
             numpy_adam(start, grads, 0.003, 0.8, 0.95, 1e-6), True)):
        p = Parameter("w", start.copy())
        compiled, answers = getattr(optimizers._optim, name), []
        with mock.patch.object(optimizers._optim, name,
                               lambda *a: answers.append(compiled(*a)) or answers[-1]):
            for grad in grads:
                p.grad = grad
                optimizer.step([p])
        assert answers == [done] * len(grads)  # the compiled update ran
        assert p.value.dtype == dtype
        np.testing.assert_array_equal(p.value.view(f"u{p.value.itemsize}"),
                                      expected.view(f"u{expected.itemsize}"))


@pytest.mark.parametrize("case", ["strided value", "float64 gradient", "numpy float rate",
                                  "gradient is the value", "byte-swapped value",
                                  "byte-swapped gradient"])
def test_updates_numpy_runs_take_numpys_casts(case):
    """Arrays or settings the compiled update does not take run numpy's
    expressions, casts included (a float64 gradient or rate makes numpy
    compute in float64); so do arrays not in the native byte order, whose
    type number is float32's all the same."""
    rng = np.random.default_rng(3)
    value = rng.standard_normal((6, 4)).astype(np.float32)
    grad = rng.standard_normal((6, 4)).astype(np.float32)
    lr = 0.05
    if case == "strided value":
        holder = np.zeros((6, 8), np.float32)
        holder[:, ::2] = value
        value = holder[:, ::2]
    elif case == "float64 gradient":
        grad = grad.astype(np.float64) / 3
    elif case == "numpy float rate":
        lr = np.float64(0.05)
    elif case == "byte-swapped value":
        value = value.astype(value.dtype.newbyteorder())
    elif case == "byte-swapped gradient":
        grad = grad.astype(grad.dtype.newbyteorder())
    for name, make, numpy_step in (
            ("sgd", lambda: SGD(0.05), numpy_sgd),
            ("adam", lambda: Adam(0.05),
             lambda v, g, r: numpy_adam(v, g, r, 0.9, 0.999, 1e-8))):
        p = Parameter("w", value.copy() if case != "strided value" else value)
        start = p.value.copy()
        g = p.value if case == "gradient is the value" else grad
        expected = numpy_step(start, [start.copy() if g is p.value else g], lr)
        optimizer = make()
        optimizer.learning_rate = lr
        p.grad = g
        compiled, answers = getattr(optimizers._optim, name), []
        # plain SGD's call for all parameters, which must leave this one
        whole, left = optimizers._optim.sgd_parameters, []
        with mock.patch.object(optimizers._optim, name,
                               lambda *a: answers.append(compiled(*a)) or answers[-1]), \
                mock.patch.object(optimizers._optim, "sgd_parameters",
                                  lambda ps, start, r: left.append((start, whole(ps, start, r)))
                                  or left[-1][1]), \
                np.errstate(all="ignore"):
            optimizer.step([p])
        assert not any(answers)  # numpy's expressions ran
        assert all(start == stop for start, stop in left)  # never the compiled update
        np.testing.assert_array_equal(p.value, expected.astype(np.float32))
        if case == "strided value":
            value = holder[:, ::2]
            value[...] = start


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_with_a_learning_rate_steps_as_numpys_expression(dtype):
    """The tutorial's ``backward(grad, learning_rate)`` step, compiled, is
    ``value -= learning_rate * grad`` to the bit."""
    from cyconv import Dense
    rng = np.random.default_rng(5)
    layer = Dense(7, 3, dtype=dtype, rng=1)
    x = rng.standard_normal((4, 7)).astype(dtype)
    g = awkward_values(rng, (4, 3), dtype)
    layer.forward(x)
    start = [p.value.copy() for p in layer.parameters()]
    with mock.patch.object(optimizers._optim, "sgd", wraps=optimizers._optim.sgd) as update:
        layer.backward(g, 0.3)
    assert update.call_count == 2
    for p, before in zip(layer.parameters(), start):
        np.testing.assert_array_equal(p.value, numpy_sgd(before, [p.grad], 0.3))
