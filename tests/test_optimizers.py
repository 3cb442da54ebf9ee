"""SGD and Adam against straightforward per-element references."""

import math

import numpy as np
import pytest

from cyconv import SGD, Adam, Parameter
from cyconv.optimizers import get_optimizer


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
