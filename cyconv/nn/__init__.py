"""The training library: layers, containers, losses, optimizers, the fit
loop and the model file format.

Every name here but ``Container``, ``lenet`` and ``small_resnet`` is also
at the top level of :mod:`cyconv`.

Examples
--------
>>> from cyconv import nn
>>> model = nn.Sequential([nn.Dense(4, 3, rng=0), nn.ReLU(), nn.Dense(3, 2, rng=1)])
>>> len(model.parameters())
4
"""

from . import losses, optimizers
from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .containers import Container, Residual, Sequential
from .conv import Convolution
from .dense import Dense
from .dropout import Dropout
from .folding import fold_batch_norm
from .layer import Buffer, Layer, Parameter
from .models import lenet, small_resnet
from .normalization import BatchNormalization
from .optimizers import SGD, Adam, AdamW, RMSprop
from .pooling import AveragePooling, GlobalAveragePooling, MaxPooling
from .reshape import Flatten, Reshape

__all__ = [
    "Adam",
    "AdamW",
    "AveragePooling",
    "BatchNormalization",
    "Buffer",
    "Container",
    "Convolution",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling",
    "Layer",
    "LeakyReLU",
    "MaxPooling",
    "Parameter",
    "RMSprop",
    "ReLU",
    "Reshape",
    "Residual",
    "SGD",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "fold_batch_norm",
    "lenet",
    "losses",
    "optimizers",
    "small_resnet",
]
