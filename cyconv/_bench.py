"""``cyconv bench``: how fast cyconv's kernels run on this machine.

It times cyconv alone, on the layer shapes of the benchmark suite, and
reports medians and GFLOP/s.  The comparisons with PyTorch, numpy and the
tutorial's loops live in the source tree's ``benchmarks/``, which is not
installed.
"""

import time
from dataclasses import dataclass

import numpy as np

from . import functional as F


@dataclass(frozen=True)
class Layer:
    """A convolution followed by 2x2 max pooling of its output."""

    name: str
    n: int
    channels: int
    size: int
    filters: int
    kernel: int
    stride: int = 1
    padding: int = 0

    @property
    def out_size(self):
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    def flops(self):
        """Of the forward pass; a multiply-add counts as two."""
        return (2.0 * self.n * self.filters * self.out_size ** 2
                * self.channels * self.kernel ** 2)

    def __str__(self):
        text = (f"{self.name} x({self.n},{self.channels},{self.size},{self.size}) "
                f"{self.filters}x{self.kernel}x{self.kernel}")
        if self.stride != 1:
            text += f" s{self.stride}"
        if self.padding:
            text += f" p{self.padding}"
        return text


LAYERS = [
    Layer("W1a", 64, 1, 28, 8, 3),
    Layer("W1b", 64, 8, 13, 16, 3),
    Layer("W2", 32, 32, 32, 64, 3, padding=1),
    Layer("W3", 8, 64, 56, 64, 3, padding=1),
    Layer("W4", 32, 16, 32, 32, 5, stride=2, padding=2),
]


def median_seconds(call, budget):
    """Median time of ``call`` after one warm-up call, over at least 3
    calls and about ``budget`` seconds."""
    call()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget:
        before = time.perf_counter()
        call()
        times.append(time.perf_counter() - before)
    return float(np.median(times))


def layer_calls(layer, dtype, seed=0):
    """(operation, callable, FLOPs or None) for one layer."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((layer.n, layer.channels, layer.size, layer.size)).astype(dtype)
    w = rng.standard_normal((layer.filters, layer.channels, layer.kernel,
                             layer.kernel)).astype(dtype)
    b = rng.standard_normal(layer.filters).astype(dtype)
    kw = dict(stride=layer.stride, padding=layer.padding)
    out = F.conv2d(x, w, b, **kw)
    g = rng.standard_normal(out.shape).astype(dtype)
    pooled, indices = F.max_pool2d(out, 2, return_indices=True)
    gp = rng.standard_normal(pooled.shape).astype(dtype)
    return [
        ("conv forward", lambda: F.conv2d(x, w, b, **kw), layer.flops()),
        ("conv backward", lambda: F.conv2d_backward(g, x, w, **kw), 2 * layer.flops()),
        ("max pool forward+backward",
         lambda: F.max_pool2d_backward(gp, out, 2,
                                       indices=F.max_pool2d(out, 2, return_indices=True)[1]),
         None),
    ]


def training_step_call(build_network, batch, dtype, seed=0):
    """One SGD step of ``build_network(dtype, rng)`` on a random batch of
    28x28 digits: forward, softmax cross-entropy, backward, update."""
    from .nn.losses import SoftmaxCrossEntropy
    from .nn.optimizers import SGD

    rng = np.random.default_rng(seed)
    model = build_network(dtype, rng)
    images = rng.random((batch, 1, 28, 28)).astype(dtype)
    labels = rng.integers(0, 10, batch)
    loss, optimizer = SoftmaxCrossEntropy(), SGD(0.01)
    parameters = model.parameters()

    def step():
        _, grad = loss.value_and_gradient(labels, model.forward(images))
        model.backward(grad)
        optimizer.step(parameters)

    return step
