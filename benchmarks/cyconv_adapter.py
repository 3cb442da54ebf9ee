"""cyconv's side of every workload, using only what the installed cyconv
provides.

Each face is None where the function it needs does not exist, and the suite
reports that workload as "n/a" rather than timing a stand-in.
"""

import functools
import inspect

import numpy as np

import cyconv
from cyconv import functional as F


def _accepts(fn, keyword):
    try:
        return keyword in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


HAS_CONV = hasattr(F, "conv2d") and hasattr(F, "conv2d_backward")
HAS_POOL = hasattr(F, "max_pool2d") and hasattr(F, "max_pool2d_backward")
# Where the forward pass can hand its argmax to the backward pass, use it, as
# PyTorch does; otherwise the backward pass finds the maxima again.
POOL_INDICES = (HAS_POOL and _accepts(F.max_pool2d, "return_indices")
                and _accepts(F.max_pool2d_backward, "indices"))


def conv_forward(x, w, b, stride, padding):
    return F.conv2d(x, w, b, stride=stride, padding=padding)


def conv_backward(g, x, w, stride, padding):
    return F.conv2d_backward(g, x, w, stride=stride, padding=padding)


def pool_forward(x):
    if POOL_INDICES:
        return F.max_pool2d(x, 2, return_indices=True)
    return F.max_pool2d(x, 2), None


def pool_backward(g, x, indices):
    if indices is not None:
        return F.max_pool2d_backward(g, x, 2, indices=indices)
    return F.max_pool2d_backward(g, x, 2)


if not HAS_CONV:
    conv_forward = conv_backward = None
if not HAS_POOL:
    pool_forward = pool_backward = None


def _softmax_cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = -np.log(probabilities[rows, labels]).mean()
    probabilities[rows, labels] -= 1
    probabilities /= len(labels)
    return loss, probabilities


class FunctionalLeNet:
    """The LeNet step out of cyconv.functional calls, for a cyconv without
    layer classes: convolutions and pools in cyconv, the rest in numpy."""

    how = "cyconv.functional conv2d/max_pool2d; ReLU, dense, loss and SGD in numpy"

    def __init__(self, params, learning_rate):
        self.params = {name: value.copy() for name, value in params.items()}
        self.learning_rate = learning_rate

    def train_step(self, images, labels):
        p = self.params
        z1 = F.conv2d(images, p["conv1.w"], p["conv1.b"])
        a1 = np.maximum(z1, 0)
        m1, i1 = pool_forward(a1)
        z2 = F.conv2d(m1, p["conv2.w"], p["conv2.b"])
        a2 = np.maximum(z2, 0)
        m2, i2 = pool_forward(a2)
        flat = m2.reshape(len(images), -1)
        logits = flat @ p["dense.w"].T + p["dense.b"]
        loss, g_logits = _softmax_cross_entropy(logits, labels)
        grads = {"dense.w": g_logits.T @ flat, "dense.b": g_logits.sum(axis=0)}
        g_m2 = (g_logits @ p["dense.w"]).reshape(m2.shape)
        g_z2 = pool_backward(g_m2, a2, i2) * (z2 > 0)
        g_m1, grads["conv2.w"], grads["conv2.b"] = F.conv2d_backward(g_z2, m1, p["conv2.w"])
        g_z1 = pool_backward(g_m1, a1, i1) * (z1 > 0)
        _, grads["conv1.w"], grads["conv1.b"] = F.conv2d_backward(
            g_z1, images, p["conv1.w"], compute_grad_input=False)
        for name, grad in grads.items():
            p[name] -= self.learning_rate * grad
        return loss

    def parameters(self):
        return self.params


_LAYER_NAMES = ("Sequential", "Convolution", "MaxPooling", "ReLU", "Flatten", "Dense", "SGD")
HAS_LAYERS = (all(hasattr(cyconv, name) for name in _LAYER_NAMES)
              and hasattr(getattr(cyconv, "losses", None), "SoftmaxCrossEntropy"))


class LayersLeNet:
    """The LeNet step as a cyconv user writes it, the loop of
    ``Sequential.fit``: forward, loss and its gradient, backward, optimizer
    step."""

    how = ("cyconv.Sequential([Convolution, ReLU, MaxPooling, Convolution, ReLU, MaxPooling, "
           "Flatten, Dense]); losses.SoftmaxCrossEntropy; SGD.step")

    def __init__(self, params, learning_rate):
        dtype = params["conv1.w"].dtype
        kw = {"dtype": dtype} if _accepts(cyconv.Dense, "dtype") else {}
        self.model = cyconv.Sequential([
            cyconv.Convolution((1, 28, 28), 3, 8, **kw), cyconv.ReLU(), cyconv.MaxPooling(2),
            cyconv.Convolution((8, 13, 13), 3, 16, **kw), cyconv.ReLU(), cyconv.MaxPooling(2),
            cyconv.Flatten(), cyconv.Dense(400, 10, **kw),
        ])
        self.params = self.model.parameters()
        names = ["conv1.w", "conv1.b", "conv2.w", "conv2.b", "dense.w", "dense.b"]
        if [tuple(p.value.shape) for p in self.params] != [params[n].shape for n in names]:
            raise TypeError("cyconv's LeNet parameters are not laid out as PyTorch's")
        for parameter, name in zip(self.params, names):
            parameter.value[...] = params[name]
        self.names = names
        self.loss = cyconv.losses.SoftmaxCrossEntropy()
        self.optimizer = cyconv.SGD(learning_rate)

    def train_step(self, images, labels):
        out = self.model.forward(images)
        value, grad = self.loss.value_and_gradient(labels, out)
        self.model.backward(grad)
        self.optimizer.step(self.params)
        return value

    def parameters(self):
        return {name: p.value for name, p in zip(self.names, self.params)}


@functools.lru_cache(maxsize=None)
def _layers_work():
    """Whether this cyconv's layers build the LeNet and take a step."""
    from workloads import LeNetWorkload

    workload = LeNetWorkload(2)
    try:
        images, labels = workload.batch_data()
        LayersLeNet(workload.parameters(), 0.01).train_step(images, labels)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def lenet_class():
    """The best LeNet step this cyconv can run, or None."""
    if HAS_LAYERS and _layers_work():
        return LayersLeNet
    if HAS_CONV and HAS_POOL:
        return FunctionalLeNet
    return None


def describe():
    """What of cyconv the suite found, for the report."""
    return {
        "version": getattr(cyconv, "__version__", "?"),
        "conv2d": HAS_CONV,
        "max_pool2d": HAS_POOL,
        "max_pool2d indices": POOL_INDICES,
        "lenet": getattr(lenet_class(), "how", None),
    }
