"""The workloads, their sizes, FLOP counts and inputs.

Every array is generated here from a fixed seed, so that every framework
computes on the same numbers and the results can be compared.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConvWorkload:
    """One convolution layer, and a 2x2/stride-2 max pool on its output."""

    key: str
    n: int
    channels: int
    height: int
    width: int
    filters: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dtype: str = "float32"
    # The tutorial's loops are timed on this many samples and scaled up.
    tutorial_samples: int = 2

    @property
    def label(self):
        return f"{self.key} {'f32' if self.dtype == 'float32' else 'f64'}"

    @property
    def x_shape(self):
        return (self.n, self.channels, self.height, self.width)

    @property
    def w_shape(self):
        return (self.filters, self.channels, self.kernel, self.kernel)

    @property
    def out_hw(self):
        def size(extent):
            return (extent + 2 * self.padding - self.kernel) // self.stride + 1
        return size(self.height), size(self.width)

    @property
    def out_shape(self):
        return (self.n, self.filters) + self.out_hw

    @property
    def pool_out_shape(self):
        ho, wo = self.out_hw
        return (self.n, self.filters, ho // 2, wo // 2)

    @property
    def shape_text(self):
        text = (f"x({self.n},{self.channels},{self.height},{self.width}) "
                f"{self.filters}x{self.kernel}x{self.kernel}")
        if self.stride != 1:
            text += f" s{self.stride}"
        if self.padding:
            text += f" p{self.padding}"
        return text

    def forward_flops(self):
        """Multiply-adds of the forward pass, counted as two FLOPs each."""
        ho, wo = self.out_hw
        return 2.0 * self.n * self.filters * ho * wo * self.channels * self.kernel ** 2

    def flops(self, op):
        """The forward pass; the backward pass is two products of the same
        size (input gradient and weight gradient); the bias sum is left out."""
        forward = self.forward_flops()
        return {"conv fwd": forward, "conv bwd": 2 * forward, "conv fwd+bwd": 3 * forward}.get(op)

    def inputs(self, seed=0):
        """x, weight, bias, the gradient of the conv output, the pool's input
        (shaped as the conv output) and the gradient of the pool output."""
        rng = np.random.default_rng(seed)
        dtype = np.dtype(self.dtype)
        fan_in = self.channels * self.kernel ** 2

        def normal(shape, scale=1.0):
            return (rng.standard_normal(shape) * scale).astype(dtype)

        return {
            "x": normal(self.x_shape),
            "w": normal(self.w_shape, np.sqrt(2.0 / fan_in)),
            "b": normal((self.filters,), 0.1),
            "g": normal(self.out_shape),
            # Continuous random values: no ties inside a pool window, so
            # every framework's choice of maximum is the same.
            "pool_x": normal(self.out_shape),
            "pool_g": normal(self.pool_out_shape),
        }


CONV_WORKLOADS = [
    ConvWorkload("W1a", 64, 1, 28, 28, 8, 3, tutorial_samples=4),
    ConvWorkload("W1a", 64, 1, 28, 28, 8, 3, dtype="float64", tutorial_samples=4),
    ConvWorkload("W1b", 64, 8, 13, 13, 16, 3, tutorial_samples=4),
    ConvWorkload("W2", 32, 32, 32, 32, 64, 3, padding=1, tutorial_samples=1),
    ConvWorkload("W3", 8, 64, 56, 56, 64, 3, padding=1, tutorial_samples=1),
    ConvWorkload("W3", 8, 64, 56, 56, 64, 3, padding=1, dtype="float64", tutorial_samples=1),
    ConvWorkload("W4", 32, 16, 32, 32, 32, 5, stride=2, padding=2, tutorial_samples=2),
    # The layers of the CIFAR-like network below.
    ConvWorkload("C1", 64, 3, 32, 32, 32, 3, padding=1, tutorial_samples=1),
    ConvWorkload("C2", 64, 32, 16, 16, 64, 3, padding=1, tutorial_samples=1),
    ConvWorkload("C3", 64, 64, 8, 8, 128, 3, padding=1, tutorial_samples=1),
]


@dataclass(frozen=True)
class LeNetWorkload:
    """conv 1->8 3x3, ReLU, max pool 2, conv 8->16 3x3, ReLU, max pool 2,
    dense 400->10, softmax cross-entropy, one plain SGD step, on 28x28."""

    batch: int
    tutorial_samples: int = 4
    dtype: str = "float32"
    learning_rate: float = 0.01
    # cyconv's layers called one by one, as the tutorial's loop calls them
    # (forward, then backward(grad, learning_rate)), rather than through
    # Sequential, which runs some pairs of layers as one.
    layer_by_layer: bool = False

    @property
    def key(self):
        return "LeNet"

    @property
    def label(self):
        return f"LeNet b{self.batch}" + (" layer by layer" if self.layer_by_layer else "")

    @property
    def shape_text(self):
        return f"x({self.batch},1,28,28)"

    def flops(self, op="step"):
        """Forward, plus twice the forward for the backward pass, except that
        nobody computes the gradient of the images."""
        conv1 = 2.0 * 8 * 26 * 26 * 1 * 9
        conv2 = 2.0 * 16 * 11 * 11 * 8 * 9
        dense = 2.0 * 400 * 10
        return self.batch * (2 * conv1 + 3 * conv2 + 3 * dense)

    def parameters(self, seed=1):
        """He-initialised parameters, in PyTorch's layouts."""
        rng = np.random.default_rng(seed)
        dtype = np.dtype(self.dtype)

        def he(shape, fan_in):
            return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)

        return {
            "conv1.w": he((8, 1, 3, 3), 9), "conv1.b": np.zeros(8, dtype),
            "conv2.w": he((16, 8, 3, 3), 72), "conv2.b": np.zeros(16, dtype),
            "dense.w": he((10, 400), 400), "dense.b": np.zeros(10, dtype),
        }

    def batch_data(self, seed=2):
        rng = np.random.default_rng(seed)
        images = rng.random((self.batch, 1, 28, 28)).astype(self.dtype)
        labels = rng.integers(0, 10, self.batch)
        return images, labels


LENET_WORKLOADS = [LeNetWorkload(64), LeNetWorkload(64, tutorial_samples=None, layer_by_layer=True),
                   LeNetWorkload(1, tutorial_samples=1)]

PARAMETER_NAMES = ["conv1.w", "conv1.b", "conv2.w", "conv2.b", "dense.w", "dense.b"]


@dataclass(frozen=True)
class CifarWorkload:
    """A CIFAR-like network on 3x32x32 images: three blocks of conv 3x3
    (padding 1; 32, 64, 128 filters), ReLU and 2x2 max pool, then dense
    2048->10, softmax cross-entropy, one plain SGD step.  No tutorial
    baseline: its per-sample loops would take minutes per step."""

    batch: int = 64
    dtype: str = "float32"
    learning_rate: float = 0.01
    # Each convolution (then without bias) followed by batch normalisation
    # in training mode, before its ReLU.
    batchnorm: bool = False
    tutorial_samples = None
    channels = (3, 32, 64, 128)

    @property
    def key(self):
        return "CIFAR"

    @property
    def label(self):
        return f"CIFAR{'-BN' if self.batchnorm else ''} b{self.batch}"

    @property
    def shape_text(self):
        return f"x({self.batch},3,32,32)"

    def flops(self, op="step"):
        """Forward, plus twice the forward for the backward pass, except the
        images' gradient."""
        total, size = 0.0, 32
        for i, (c, f) in enumerate(zip(self.channels, self.channels[1:])):
            conv = 2.0 * f * size * size * c * 9
            total += conv * (2 if i == 0 else 3)
            size //= 2
        return self.batch * (total + 3 * 2.0 * 2048 * 10)

    def parameters(self, seed=1):
        """He-initialised parameters, in PyTorch's layouts."""
        rng = np.random.default_rng(seed)
        dtype = np.dtype(self.dtype)
        out = {}
        for i, (c, f) in enumerate(zip(self.channels, self.channels[1:]), 1):
            out[f"conv{i}.w"] = (rng.standard_normal((f, c, 3, 3))
                                 * np.sqrt(2.0 / (9 * c))).astype(dtype)
            if self.batchnorm:
                out[f"bn{i}.gamma"] = rng.uniform(0.5, 1.5, f).astype(dtype)
                out[f"bn{i}.beta"] = rng.uniform(-0.1, 0.1, f).astype(dtype)
            else:
                out[f"conv{i}.b"] = np.zeros(f, dtype)
        out["dense.w"] = (rng.standard_normal((10, 2048)) * np.sqrt(2.0 / 2048)).astype(dtype)
        out["dense.b"] = np.zeros(10, dtype)
        return out

    def batch_data(self, seed=2):
        rng = np.random.default_rng(seed)
        images = rng.random((self.batch, 3, 32, 32)).astype(self.dtype)
        labels = rng.integers(0, 10, self.batch)
        return images, labels


CIFAR_WORKLOADS = [CifarWorkload(64), CifarWorkload(64, batchnorm=True)]

CIFAR_PARAMETER_NAMES = ["conv1.w", "conv1.b", "conv2.w", "conv2.b", "conv3.w", "conv3.b",
                         "dense.w", "dense.b"]
