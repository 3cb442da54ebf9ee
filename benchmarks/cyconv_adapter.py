"""cyconv's side of every workload, using only what the installed cyconv
provides.

Each face is None where the function it needs does not exist, and the suite
reports that workload as "n/a" rather than timing a stand-in.
"""

import functools
import inspect

import cyconv
from cyconv import functional as F

import baselines_numpy


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


class FunctionalLeNet(baselines_numpy.LeNet):
    """The LeNet step out of cyconv.functional calls, for a cyconv without
    layer classes: convolutions and pools in cyconv, the rest in numpy."""

    how = "cyconv.functional conv2d/max_pool2d; ReLU, dense, loss and SGD in numpy"

    conv_forward = staticmethod(conv_forward)
    conv_backward = staticmethod(conv_backward)
    pool_forward = staticmethod(pool_forward)
    pool_backward = staticmethod(pool_backward)

    def first_weight_gradient(self, g_z1, images):
        _, grad_w, grad_b = F.conv2d_backward(g_z1, images, self.params["conv1.w"],
                                              compute_grad_input=False)
        return grad_w, grad_b


_LAYER_NAMES = ("Sequential", "Convolution", "MaxPooling", "ReLU", "Flatten", "Dense", "SGD")
HAS_LAYERS = (all(hasattr(cyconv, name) for name in _LAYER_NAMES)
              and hasattr(getattr(cyconv, "losses", None), "SoftmaxCrossEntropy"))


class LayersLeNet:
    """The LeNet step as a cyconv user writes it, the loop of
    ``Sequential.fit``: forward, loss and its gradient, backward, optimizer
    step."""

    how = ("cyconv.Sequential([Convolution, ReLU, MaxPooling, Convolution, ReLU, MaxPooling, "
           "Flatten, Dense]); losses.SoftmaxCrossEntropy; SGD.step")

    names = ["conv1.w", "conv1.b", "conv2.w", "conv2.b", "dense.w", "dense.b"]

    @staticmethod
    def layers(kw):
        return [
            cyconv.Convolution((1, 28, 28), 3, 8, **kw), cyconv.ReLU(), cyconv.MaxPooling(2),
            cyconv.Convolution((8, 13, 13), 3, 16, **kw), cyconv.ReLU(), cyconv.MaxPooling(2),
            cyconv.Flatten(), cyconv.Dense(400, 10, **kw),
        ]

    def __init__(self, params, learning_rate):
        dtype = params["conv1.w"].dtype
        kw = {"dtype": dtype} if _accepts(cyconv.Dense, "dtype") else {}
        self.model = cyconv.Sequential(self.layers(kw))
        self.params = self.model.parameters()
        names = self.names
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


class LayerByLayerLeNet(LayersLeNet):
    """The LeNet step as the tutorial's loop runs it: each layer's forward,
    then each layer's backward(grad, learning_rate), no Sequential."""

    how = ("the layers of LayersLeNet called one by one: forward, then "
           "backward(grad, learning_rate)")

    def train_step(self, images, labels):
        out = images
        for layer in self.model.layers:
            out = layer.forward(out)
        value, grad = self.loss.value_and_gradient(labels, out)
        for layer in reversed(self.model.layers):
            grad = layer.backward(grad, self.optimizer.learning_rate)
        return value


class LayersCifar(LayersLeNet):
    """The CIFAR-like network of workloads.CifarWorkload, built the same way."""

    how = ("cyconv.Sequential([3 x (Convolution 3x3 padding 1, ReLU, MaxPooling), Flatten, "
           "Dense]); losses.SoftmaxCrossEntropy; SGD.step")
    names = ["conv1.w", "conv1.b", "conv2.w", "conv2.b", "conv3.w", "conv3.b",
             "dense.w", "dense.b"]

    @staticmethod
    def layers(kw):
        return [
            cyconv.Convolution((3, 32, 32), 3, 32, padding=1, **kw), cyconv.ReLU(),
            cyconv.MaxPooling(2),
            cyconv.Convolution((32, 16, 16), 3, 64, padding=1, **kw), cyconv.ReLU(),
            cyconv.MaxPooling(2),
            cyconv.Convolution((64, 8, 8), 3, 128, padding=1, **kw), cyconv.ReLU(),
            cyconv.MaxPooling(2),
            cyconv.Flatten(), cyconv.Dense(2048, 10, **kw),
        ]


class LayersCifarBN(LayersLeNet):
    """The CIFAR-like network with batch normalisation, as
    baselines_torch.CifarBNNet builds it."""

    how = ("cyconv.Sequential([3 x (Convolution 3x3 padding 1 no bias, BatchNormalization, "
           "ReLU, MaxPooling), Flatten, Dense]); losses.SoftmaxCrossEntropy; SGD.step")
    names = [f"{kind}{i}.{name}" for i in (1, 2, 3)
             for kind, name in (("conv", "w"), ("bn", "gamma"), ("bn", "beta"))
             ] + ["dense.w", "dense.b"]

    @staticmethod
    def layers(kw):
        out = []
        for c, f, size in ((3, 32, 32), (32, 64, 16), (64, 128, 8)):
            out += [cyconv.Convolution((c, size, size), 3, f, padding=1, bias=False, **kw),
                    cyconv.BatchNormalization(**kw), cyconv.ReLU(), cyconv.MaxPooling(2)]
        return out + [cyconv.Flatten(), cyconv.Dense(2048, 10, **kw)]


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
