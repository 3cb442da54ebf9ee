"""PyTorch on the CPU, called the way a framework calls it internally.

Forward passes run under ``no_grad`` and backward passes call the ATen
backward operators directly (``convolution_backward``,
``max_pool2d_with_indices_backward``), which take the same inputs as cyconv's
``conv2d_backward`` and ``max_pool2d_backward``: neither side pays for an
autograd graph in the layer workloads.  The LeNet step is the ordinary
``nn.Sequential`` + ``CrossEntropyLoss`` + ``optim.SGD`` loop, autograd
included, as a user writes it.

Inputs are converted to tensors once, outside the timed calls.
"""

try:
    import torch
    from torch import nn
except ImportError:
    torch = None

available = torch is not None


def to_tensor(array):
    return torch.from_numpy(array)


def to_numpy(tensor):
    return tensor.detach().numpy()


def conv_forward(x, w, b, stride, padding):
    with torch.no_grad():
        return torch.nn.functional.conv2d(x, w, b, stride=stride, padding=padding)


def conv_backward(g, x, w, stride, padding):
    return torch.ops.aten.convolution_backward(
        g, x, w, [w.shape[0]], [stride, stride], [padding, padding], [1, 1],
        False, [0, 0], 1, [True, True, True])


def pool_forward(x):
    with torch.no_grad():
        return torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True)


def pool_backward(g, x, indices):
    return torch.ops.aten.max_pool2d_with_indices_backward(
        g, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)


class LeNet:
    names = ["conv1.w", "conv1.b", "conv2.w", "conv2.b", "dense.w", "dense.b"]

    @staticmethod
    def layers():
        return [nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(400, 10)]

    def __init__(self, params, learning_rate):
        self.model = nn.Sequential(*self.layers())
        if params["conv1.w"].dtype.name == "float64":
            self.model.double()
        with torch.no_grad():
            for (name, value), parameter in zip(self._layout(params), self.model.parameters()):
                parameter.copy_(torch.from_numpy(value))
        self.loss = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=learning_rate)

    def _layout(self, params):
        return [(name, params[name]) for name in self.names]

    def prepare(self, images, labels):
        return torch.from_numpy(images), torch.from_numpy(labels).long()

    def train_step(self, images, labels):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model(images), labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def parameters(self):
        return {name: p.detach().numpy().copy()
                for name, p in zip(self.names, self.model.parameters())}


class CifarNet(LeNet):
    """The CIFAR-like network of workloads.CifarWorkload."""

    names = ["conv1.w", "conv1.b", "conv2.w", "conv2.b", "conv3.w", "conv3.b",
             "dense.w", "dense.b"]

    @staticmethod
    def layers():
        return [nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(2048, 10)]


class CifarBNNet(LeNet):
    """The CIFAR-like network with batch normalisation (training mode)."""

    names = [f"{kind}{i}.{name}" for i in (1, 2, 3)
             for kind, name in (("conv", "w"), ("bn", "gamma"), ("bn", "beta"))
             ] + ["dense.w", "dense.b"]

    @staticmethod
    def layers():
        out = []
        for c, f in ((3, 32), (32, 64), (64, 128)):
            out += [nn.Conv2d(c, f, 3, padding=1, bias=False), nn.BatchNorm2d(f), nn.ReLU(),
                    nn.MaxPool2d(2)]
        return out + [nn.Flatten(), nn.Linear(2048, 10)]
