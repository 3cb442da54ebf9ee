"""The training library: layers, containers, losses, optimizers, the fit
loop and the model file format.

Every name here is also at the top level of :mod:`cyconv`.

Examples
--------
>>> from cyconv import nn
>>> model = nn.Sequential([nn.Dense(4, 3, rng=0), nn.ReLU(), nn.Dense(3, 2, rng=1)])
>>> len(model.parameters())
4
"""

from . import losses, optimizers
from .activations import ReLU, Sigmoid, Softmax, Tanh
from .containers import Container, Residual, Sequential
from .conv import Convolution
from .dense import Dense
from .layer import Buffer, Layer, Parameter
from .models import lenet
from .optimizers import SGD, Adam
from .pooling import AveragePooling, MaxPooling
from .reshape import Flatten, Reshape

__all__ = [
    "Adam",
    "AveragePooling",
    "Buffer",
    "Container",
    "Convolution",
    "Dense",
    "Flatten",
    "Layer",
    "MaxPooling",
    "Parameter",
    "ReLU",
    "Reshape",
    "Residual",
    "SGD",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "lenet",
    "losses",
    "optimizers",
]
