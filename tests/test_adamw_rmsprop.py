"""AdamW and RMSprop against PyTorch's documented algorithms written out
element by element, and against torch.optim itself where it is installed."""

import math

import numpy as np
import pytest

from cyconv import AdamW, Parameter, RMSprop
from cyconv.optimizers import get_optimizer
from test_optimizers import parameter_with_gradients


def reference_adamw(value, grads, lr, beta1, beta2, eps, weight_decay):
    """torch.optim.AdamW's algorithm (amsgrad off), in plain Python floats."""
    value = [float(v) for v in value.ravel()]
    m = [0.0] * len(value)
    v = [0.0] * len(value)
    for t, grad in enumerate(grads, start=1):
        for i, g in enumerate(grad.ravel()):
            g = float(g)
            value[i] -= lr * weight_decay * value[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = v[i] / (1 - beta2 ** t)
            value[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return np.array(value)


def reference_rmsprop(value, grads, lr, alpha, eps, weight_decay, momentum, centered):
    """torch.optim.RMSprop's algorithm, in plain Python floats."""
    value = [float(v) for v in value.ravel()]
    square_avg = [0.0] * len(value)
    grad_avg = [0.0] * len(value)
    buffer = [0.0] * len(value)
    for grad in grads:
        for i, g in enumerate(grad.ravel()):
            g = float(g) + weight_decay * value[i]
            square_avg[i] = alpha * square_avg[i] + (1 - alpha) * g * g
            if centered:
                grad_avg[i] = alpha * grad_avg[i] + (1 - alpha) * g
                denominator = math.sqrt(square_avg[i] - grad_avg[i] ** 2) + eps
            else:
                denominator = math.sqrt(square_avg[i]) + eps
            if momentum > 0:
                buffer[i] = momentum * buffer[i] + g / denominator
                value[i] -= lr * buffer[i]
            else:
                value[i] -= lr * g / denominator
    return np.array(value)


def run(optimizer, parameter, grads):
    for grad in grads:
        parameter.grad = grad
        optimizer.step([parameter])
    return parameter.value


@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 0.3])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adamw_matches_reference(weight_decay, betas):
    parameter, grads = parameter_with_gradients(1, 8)
    expected = reference_adamw(parameter.value, grads, 0.05, *betas, 1e-8, weight_decay)
    value = run(AdamW(0.05, *betas, weight_decay=weight_decay), parameter, grads)
    np.testing.assert_allclose(value.ravel(), expected, rtol=1e-12, atol=1e-13)


def test_adamw_defaults_are_pytorchs():
    optimizer = AdamW()
    assert (optimizer.learning_rate, optimizer.beta1, optimizer.beta2, optimizer.epsilon,
            optimizer.weight_decay) == (0.001, 0.9, 0.999, 1e-8, 0.01)


def test_adamw_decay_is_decoupled_from_the_gradient():
    """With a zero gradient Adam's step is zero: only the decay moves the
    value, by exactly learning_rate * weight_decay of it each step."""
    parameter = Parameter("w", np.array([2.0, -4.0]))
    optimizer = AdamW(0.1, weight_decay=0.5)
    for _ in range(3):
        parameter.grad = np.zeros(2)
        optimizer.step([parameter])
    np.testing.assert_allclose(parameter.value, np.array([2.0, -4.0]) * 0.95 ** 3)


@pytest.mark.parametrize("momentum, centered, weight_decay", [
    (0.0, False, 0.0), (0.9, False, 0.0), (0.0, True, 0.0), (0.5, True, 0.1),
    (0.0, False, 0.05)])
def test_rmsprop_matches_reference(momentum, centered, weight_decay):
    parameter, grads = parameter_with_gradients(2, 8)
    expected = reference_rmsprop(parameter.value, grads, 0.01, 0.9, 1e-8, weight_decay,
                                 momentum, centered)
    optimizer = RMSprop(0.01, alpha=0.9, weight_decay=weight_decay, momentum=momentum,
                        centered=centered)
    np.testing.assert_allclose(run(optimizer, parameter, grads).ravel(), expected,
                               rtol=1e-12, atol=1e-13)


def test_rmsprop_defaults_are_pytorchs():
    optimizer = RMSprop()
    assert (optimizer.learning_rate, optimizer.alpha, optimizer.epsilon,
            optimizer.weight_decay, optimizer.momentum, optimizer.centered) == (
        0.01, 0.99, 1e-8, 0.0, 0.0, False)


@pytest.mark.parametrize("optimizer", [AdamW(0.1, weight_decay=0.0),
                                       RMSprop(0.01, momentum=0.5)])
def test_minimise_a_quadratic(optimizer):
    target = np.array([3.0, -2.0, 0.5])
    parameter = Parameter("w", np.zeros(3))
    for _ in range(500):
        parameter.grad = 2 * (parameter.value - target)
        optimizer.step([parameter])
    np.testing.assert_allclose(parameter.value, target, atol=5e-2)


@pytest.mark.parametrize("make", [lambda: AdamW(0.01), lambda: RMSprop(0.01, momentum=0.9,
                                                                        centered=True)])
def test_float32_parameters_stay_float32_and_are_updated_in_place(make):
    parameter, grads = parameter_with_gradients(4, 3, dtype=np.float32)
    array = parameter.value
    run(make(), parameter, grads)
    assert parameter.value is array and array.dtype == np.float32


def test_state_is_per_parameter():
    a, grads_a = parameter_with_gradients(5, 3)
    b, grads_b = parameter_with_gradients(6, 3, shape=(4,))
    alone = Parameter("a", a.value.copy())
    optimizer = RMSprop(0.01, centered=True, momentum=0.3)
    for ga, gb in zip(grads_a, grads_b):
        a.grad, b.grad = ga, gb
        optimizer.step([a, b])
    run(RMSprop(0.01, centered=True, momentum=0.3), alone, grads_a)
    np.testing.assert_array_equal(a.value, alone.value)


def test_by_name():
    assert type(get_optimizer("adamw")) is AdamW
    assert type(get_optimizer("RMSprop")) is RMSprop


@pytest.mark.parametrize("make, error, words", [
    (lambda: AdamW(-1.0), ValueError, "learning_rate"),
    (lambda: AdamW(beta2=1.0), ValueError, "beta2"),
    (lambda: AdamW(weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda: AdamW(epsilon="small"), TypeError, "epsilon"),
    (lambda: RMSprop(alpha=1.0), ValueError, r"alpha must be in \[0, 1\)"),
    (lambda: RMSprop(alpha=-0.5), ValueError, "alpha"),
    (lambda: RMSprop(momentum=1.5), ValueError, "momentum"),
    (lambda: RMSprop(epsilon=float("nan")), ValueError, "epsilon"),
    (lambda: RMSprop(centered=1), TypeError, "centered must be True or False"),
    (lambda: RMSprop(learning_rate=None), TypeError, "learning_rate"),
])
def test_bad_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, ours, theirs", [
    ("adamw", lambda: AdamW(0.01, 0.8, 0.99, 1e-6, weight_decay=0.1),
     lambda torch, p: torch.optim.AdamW(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                                        weight_decay=0.1)),
    ("rmsprop", lambda: RMSprop(0.01, alpha=0.9),
     lambda torch, p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9)),
    ("rmsprop-all", lambda: RMSprop(0.01, alpha=0.95, weight_decay=0.02, momentum=0.7,
                                    centered=True),
     lambda torch, p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, weight_decay=0.02,
                                          momentum=0.7, centered=True)),
])
def test_same_trajectory_as_torch(name, ours, theirs, dtype):
    torch = pytest.importorskip("torch")
    parameter, grads = parameter_with_gradients(7, 10, dtype=dtype)
    tensor = torch.tensor(parameter.value.copy(), requires_grad=True)
    optimizer = ours()
    torch_optimizer = theirs(torch, [tensor])
    for grad in grads:
        parameter.grad = grad
        optimizer.step([parameter])
        tensor.grad = torch.tensor(grad)
        torch_optimizer.step()
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(parameter.value, tensor.detach().numpy(), rtol=rtol,
                                   atol=rtol)
