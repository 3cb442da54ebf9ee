"""Optimizers: apply the gradients that ``backward`` stored in each
:class:`~cyconv.Parameter`.

An optimizer keeps its state (momentum, moment estimates) per parameter
object, so one optimizer serves one model for the whole of its training.
Updates are in place and keep each parameter's dtype.
"""

import numpy as np

from .._kernels import _optim
from .._validation import as_real

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "get_optimizer"]


def descend(value, grad, rate):
    """``value -= rate * grad`` in place: in one compiled pass, bit for bit
    that expression, where the arrays suit it and ``rate`` is a Python
    float (see _kernels/_optim.pyx); else the expression itself."""
    if not (type(rate) is float and _optim.sgd(value, grad, rate)):
        value -= rate * grad


class Optimizer:
    """Base class: ``step(parameters)`` updates every parameter that has a
    gradient.

    Parameters
    ----------
    learning_rate : float
    weight_decay : float, default 0
        L2 penalty: ``weight_decay * value`` is added to each gradient.
    """

    def __init__(self, learning_rate, weight_decay=0.0):
        self.learning_rate = as_real(learning_rate, "learning_rate")
        self.weight_decay = as_real(weight_decay, "weight_decay")
        self.state = {}

    def step(self, parameters):
        """Update each :class:`~cyconv.Parameter` in ``parameters`` in place."""
        for parameter in parameters:
            if parameter.grad is None:
                continue
            if parameter.grad.shape != parameter.value.shape:
                raise ValueError(f"gradient of {parameter.name} has shape "
                                 f"{parameter.grad.shape}, its value {parameter.value.shape}")
            self._update(parameter, self._decayed_gradient(parameter))

    def _decayed_gradient(self, parameter):
        """The gradient with the L2 penalty's added, as most optimizers take
        weight decay (AdamW decouples it instead)."""
        if self.weight_decay:
            return parameter.grad + self.weight_decay * parameter.value
        return parameter.grad

    def _update(self, parameter, grad):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "state")
        return f"{type(self).__name__}({fields})"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    ``velocity = momentum * velocity + grad``, then
    ``value -= learning_rate * velocity`` (PyTorch's formulation; with
    ``nesterov`` the step uses ``grad + momentum * velocity``).

    Parameters
    ----------
    learning_rate : float, default 0.01
    momentum : float in [0, 1), default 0
    weight_decay : float, default 0
    nesterov : bool, default False

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import SGD, Parameter
    >>> p = Parameter("w", np.array([1.0, 2.0]))
    >>> p.grad = np.array([1.0, -1.0])
    >>> optimizer = SGD(learning_rate=0.1, momentum=0.9)
    >>> optimizer.step([p]); p.value
    array([0.9, 2.1])
    >>> optimizer.step([p]); p.value   # momentum: the second step is 1.9 times larger
    array([0.71, 2.29])
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(learning_rate, weight_decay)
        self.momentum = as_real(momentum, "momentum", upper=1)
        if nesterov and not self.momentum:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = bool(nesterov)

    def step(self, parameters):
        rate = self.learning_rate
        if (self.momentum or self.weight_decay or type(self) is not SGD
                or "_update" in self.__dict__ or type(parameters) is not list
                or type(rate) is not float):
            return super().step(parameters)
        # Plain descent, a model's parameters in one compiled call where
        # their arrays suit (a batch-1 LeNet step updates six parameters of
        # a few hundred values: a Python call a parameter cost as much as
        # the updates), in order; not for subclasses, which may update
        # otherwise, nor for a rate numpy would compute in float64.
        i = _optim.sgd_parameters(parameters, 0, rate)
        while i < len(parameters):
            super().step(parameters[i:i + 1])  # one the compiled call left
            i = _optim.sgd_parameters(parameters, i + 1, rate)

    def _update(self, parameter, grad):
        if self.momentum:
            velocity = self.state.get(parameter)
            if velocity is None:
                velocity = self.state[parameter] = np.array(grad, dtype=parameter.value.dtype)
            else:
                velocity *= self.momentum
                velocity += grad
            grad = grad + self.momentum * velocity if self.nesterov else velocity
        descend(parameter.value, grad, self.learning_rate)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with bias-corrected moment estimates.

    Parameters
    ----------
    learning_rate : float, default 0.001
    beta1, beta2 : float in [0, 1), default 0.9 and 0.999
    epsilon : float, default 1e-8
    weight_decay : float, default 0
        L2 penalty added to the gradient (as in ``torch.optim.Adam``).

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Adam, Parameter
    >>> p = Parameter("w", np.array([1.0, 1.0]))
    >>> p.grad = np.array([100.0, -1.0])
    >>> Adam(learning_rate=0.1).step([p])
    >>> p.value   # the first step is learning_rate per element, whatever the scale
    array([0.9, 1.1])
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.beta1 = as_real(beta1, "beta1", upper=1)
        self.beta2 = as_real(beta2, "beta2", upper=1)
        self.epsilon = as_real(epsilon, "epsilon")

    def _update(self, parameter, grad):
        state = self.state.get(parameter)
        if state is None:
            zeros = np.zeros_like(parameter.value)
            state = self.state[parameter] = {"t": 0, "m": zeros, "v": zeros.copy()}
        state["t"] += 1
        m, v, t = state["m"], state["v"], state["t"]
        lr, beta1, beta2, epsilon = self.learning_rate, self.beta1, self.beta2, self.epsilon
        # The expressions below in one pass, bit for bit, where the arrays
        # suit (see _kernels/_optim.pyx) and the settings are Python floats.
        if (type(lr) is float and type(beta1) is float and type(beta2) is float
                and type(epsilon) is float
                and _optim.adam(parameter.value, grad, m, v, beta1, 1 - beta1, beta2, 1 - beta2,
                                1 - beta1 ** t, 1 - beta2 ** t, lr, epsilon)):
            return
        m *= self.beta1
        m += (1 - self.beta1) * grad
        v *= self.beta2
        v += (1 - self.beta2) * (grad * grad)
        m_hat = m / (1 - self.beta1 ** t)
        v_hat = v / (1 - self.beta2 ** t)
        parameter.value -= self.learning_rate * m_hat / (np.sqrt(v_hat) + self.epsilon)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as
    ``torch.optim.AdamW``.

    Each step first shrinks the parameter,
    ``value *= 1 - learning_rate * weight_decay``, and then takes Adam's
    step on the gradient alone, so that the decay is not rescaled by the
    moment estimates as an L2 penalty in :class:`Adam` would be.

    Parameters
    ----------
    learning_rate : float, default 0.001
    beta1, beta2 : float in [0, 1), default 0.9 and 0.999
    epsilon : float, default 1e-8
    weight_decay : float, default 0.01
        PyTorch's default.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import AdamW, Parameter
    >>> p = Parameter("w", np.array([1.0, 1.0]))
    >>> p.grad = np.array([100.0, -1.0])
    >>> AdamW(learning_rate=0.1, weight_decay=0.5).step([p])
    >>> p.value   # shrunk by 5%, then Adam's step of 0.1 per element
    array([0.85, 1.05])
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=0.01):
        super().__init__(learning_rate, beta1, beta2, epsilon, weight_decay)

    def _decayed_gradient(self, parameter):
        if self.weight_decay:
            parameter.value *= 1 - self.learning_rate * self.weight_decay
        return parameter.grad


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012) with PyTorch's update rule
    (``torch.optim.RMSprop``).

    ``square_avg = alpha * square_avg + (1 - alpha) * grad**2``; with
    ``centered``, also ``grad_avg = alpha * grad_avg + (1 - alpha) * grad``
    and ``square_avg - grad_avg**2`` in its place below;
    ``step = grad / (sqrt(square_avg) + epsilon)``; with momentum,
    ``buffer = momentum * buffer + step`` is the step; then
    ``value -= learning_rate * step``.  Every average starts at zero.

    Parameters
    ----------
    learning_rate : float, default 0.01
    alpha : float in [0, 1), default 0.99
        Smoothing constant of the averages.
    epsilon : float, default 1e-8
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    momentum : float in [0, 1), default 0
    centered : bool, default False
        Divide by an estimate of the gradient's variance rather than of its
        second moment.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import RMSprop, Parameter
    >>> p = Parameter("w", np.array([1.0, 1.0]))
    >>> p.grad = np.array([100.0, -1.0])
    >>> RMSprop(learning_rate=0.01, alpha=0.75).step([p])
    >>> p.value   # the first step is learning_rate / sqrt(1 - alpha) per element
    array([0.98, 1.02])
    """

    def __init__(self, learning_rate=0.01, alpha=0.99, epsilon=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False):
        super().__init__(learning_rate, weight_decay)
        self.alpha = as_real(alpha, "alpha", upper=1)
        self.epsilon = as_real(epsilon, "epsilon")
        self.momentum = as_real(momentum, "momentum", upper=1)
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"centered must be True or False, got {centered!r}")
        self.centered = bool(centered)

    def _update(self, parameter, grad):
        state = self.state.get(parameter)
        if state is None:
            state = self.state[parameter] = {
                name: np.zeros_like(parameter.value) for name in ("square_avg", "grad_avg",
                                                                   "buffer")}
        square_avg = state["square_avg"]
        square_avg *= self.alpha
        square_avg += (1 - self.alpha) * (grad * grad)
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg *= self.alpha
            grad_avg += (1 - self.alpha) * grad
            denominator = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            denominator = np.sqrt(square_avg)
        denominator += self.epsilon
        step = grad / denominator
        if self.momentum:
            buffer = state["buffer"]
            buffer *= self.momentum
            buffer += step
            step = buffer
        parameter.value -= self.learning_rate * step


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get_optimizer(optimizer):
    """Return an :class:`Optimizer` for a name (default settings) or an instance.

    Examples
    --------
    >>> from cyconv.optimizers import get_optimizer
    >>> get_optimizer("adam").learning_rate
    0.001
    >>> get_optimizer("rmsprop")
    RMSprop(learning_rate=0.01, weight_decay=0.0, alpha=0.99, epsilon=1e-08, momentum=0.0, centered=False)
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        return _BY_NAME[optimizer.lower()]()
    names = ", ".join(repr(name) for name in _BY_NAME)
    raise ValueError(f"optimizer must be a cyconv Optimizer or one of {names}, "
                     f"got {optimizer!r}")
