"""The "CNN from scratch" tutorial's method, the starting point cyconv is
measured against.

Its layers take one sample ``(C, H, W)`` at a time and loop over every
(filter, channel) pair with ``scipy.signal.correlate2d`` / ``convolve2d``;
its max pool is a Python loop over output positions.  The code below keeps
those loops as the tutorial writes them, with three changes that do not
change its cost but make its results comparable with the others:

* one bias per filter (PyTorch's convention) instead of one per output
  position;
* arrays are allocated in the input's dtype (the tutorial's ``np.zeros``
  default is float64), so that float32 is compared with float32;
* stride, which the tutorial lacks, is its straightforward extension:
  correlate at stride 1 and keep every ``stride``-th output; backward,
  spread the output gradient over the stride-1 grid with zeros between.

The batch functions run the per-sample code over the samples they are given;
the suite gives them a few samples and scales the time per sample.
"""

import numpy as np
from scipy import signal


def _pad(sample, padding):
    if padding > 0:
        return np.pad(sample, ((0, 0), (padding, padding), (padding, padding)), mode="constant")
    return sample


def conv_forward_sample(sample, kernels, biases, stride=1, padding=0):
    depth, input_depth = kernels.shape[:2]
    padded_input = _pad(sample, padding)
    full_h = padded_input.shape[1] - kernels.shape[2] + 1
    full_w = padded_input.shape[2] - kernels.shape[3] + 1
    output = np.empty((depth, full_h, full_w), dtype=sample.dtype)
    output[:] = biases[:, None, None]
    for i in range(depth):
        for j in range(input_depth):
            output[i] += signal.correlate2d(padded_input[j], kernels[i, j], mode="valid")
    if stride > 1:
        output = output[:, ::stride, ::stride]
    return output


def conv_backward_sample(output_gradient, sample, kernels, stride=1, padding=0):
    """Return (input_gradient, kernels_gradient, biases_gradient)."""
    depth, input_depth = kernels.shape[:2]
    padded_input = _pad(sample, padding)
    if stride > 1:
        full_h = padded_input.shape[1] - kernels.shape[2] + 1
        full_w = padded_input.shape[2] - kernels.shape[3] + 1
        spread = np.zeros((depth, full_h, full_w), dtype=output_gradient.dtype)
        spread[:, ::stride, ::stride] = output_gradient
        output_gradient = spread
    kernels_gradient = np.zeros(kernels.shape, dtype=sample.dtype)
    input_gradient = np.zeros(sample.shape, dtype=sample.dtype)
    for i in range(depth):
        for j in range(input_depth):
            kernels_gradient[i, j] = signal.correlate2d(padded_input[j], output_gradient[i], mode="valid")
            full_grad = signal.convolve2d(output_gradient[i], kernels[i, j], mode="full")
            if padding > 0:
                full_grad = full_grad[padding:-padding, padding:-padding]
            input_gradient[j] += full_grad
    return input_gradient, kernels_gradient, output_gradient.sum(axis=(1, 2))


def max_pool_forward_sample(sample, stride=2):
    depth, height, width = sample.shape
    output_h = height // stride
    output_w = width // stride
    output = np.zeros((depth, output_h, output_w), dtype=sample.dtype)
    for d in range(depth):
        for i in range(output_h):
            for j in range(output_w):
                region = sample[d, i * stride:(i + 1) * stride, j * stride:(j + 1) * stride]
                output[d, i, j] = np.max(region)
    return output


def max_pool_backward_sample(output_gradient, sample, stride=2):
    input_gradient = np.zeros(sample.shape, dtype=sample.dtype)
    depth, output_h, output_w = output_gradient.shape
    for d in range(depth):
        for i in range(output_h):
            for j in range(output_w):
                region = sample[d, i * stride:(i + 1) * stride, j * stride:(j + 1) * stride]
                mask = region == np.max(region)
                input_gradient[d, i * stride:(i + 1) * stride, j * stride:(j + 1) * stride] += (
                    output_gradient[d, i, j] * mask
                )
    return input_gradient


# Batch faces, one sample at a time as the tutorial trains.

def conv_forward(x, w, b, stride, padding):
    return np.stack([conv_forward_sample(sample, w, b, stride, padding) for sample in x])


def conv_backward(g, x, w, stride, padding):
    grad_x = np.empty_like(x)
    grad_w = np.zeros_like(w)
    grad_b = np.zeros(w.shape[0], dtype=x.dtype)
    for n in range(x.shape[0]):
        grad_x[n], gw, gb = conv_backward_sample(g[n], x[n], w, stride, padding)
        grad_w += gw
        grad_b += gb
    return grad_x, grad_w, grad_b


def pool_forward(x):
    return np.stack([max_pool_forward_sample(sample) for sample in x]), None


def pool_backward(g, x, cache):
    return np.stack([max_pool_backward_sample(g[n], x[n]) for n in range(x.shape[0])])


# The tutorial's layers, for the LeNet training step.

class Layer:
    def forward(self, input):
        raise NotImplementedError

    def backward(self, output_gradient, learning_rate):
        raise NotImplementedError


class Convolution(Layer):
    def __init__(self, kernels, biases):
        self.kernels = kernels.copy()
        self.biases = biases.copy()

    def forward(self, input):
        self.input = input
        return conv_forward_sample(input, self.kernels, self.biases)

    def backward(self, output_gradient, learning_rate):
        input_gradient, kernels_gradient, biases_gradient = conv_backward_sample(
            output_gradient, self.input, self.kernels)
        self.kernels -= learning_rate * kernels_gradient
        self.biases -= learning_rate * biases_gradient
        return input_gradient


class MaxPooling(Layer):
    def __init__(self, stride=2):
        self.stride = stride

    def forward(self, input):
        self.input = input
        return max_pool_forward_sample(input, self.stride)

    def backward(self, output_gradient, learning_rate):
        return max_pool_backward_sample(output_gradient, self.input, self.stride)


class ReLU(Layer):
    def forward(self, input):
        self.input = input
        return np.maximum(input, 0)

    def backward(self, output_gradient, learning_rate):
        return output_gradient * (self.input > 0)


class Reshape(Layer):
    def __init__(self, input_shape, output_shape):
        self.input_shape = input_shape
        self.output_shape = output_shape

    def forward(self, input):
        return np.reshape(input, self.output_shape)

    def backward(self, output_gradient, learning_rate):
        return np.reshape(output_gradient, self.input_shape)


class Dense(Layer):
    def __init__(self, weights, bias):
        self.weights = weights.copy()
        self.bias = bias.reshape(-1, 1).copy()

    def forward(self, input):
        self.input = input
        return np.dot(self.weights, self.input) + self.bias

    def backward(self, output_gradient, learning_rate):
        weights_gradient = np.dot(output_gradient, self.input.T)
        input_gradient = np.dot(self.weights.T, output_gradient)
        self.weights -= learning_rate * weights_gradient
        self.bias -= learning_rate * output_gradient
        return input_gradient


def softmax_cross_entropy(logits, label):
    """Loss and its gradient for one sample's (10, 1) column of logits."""
    shifted = logits - logits.max()
    probabilities = np.exp(shifted) / np.exp(shifted).sum()
    loss = -np.log(probabilities[label, 0])
    gradient = probabilities.copy()
    gradient[label, 0] -= 1
    return loss, gradient


class LeNet:
    """The tutorial's network and training loop: each sample is a forward
    pass, a backward pass and an immediate SGD update."""

    def __init__(self, params, learning_rate):
        self.learning_rate = learning_rate
        self.network = [
            Convolution(params["conv1.w"], params["conv1.b"]), ReLU(), MaxPooling(2),
            Convolution(params["conv2.w"], params["conv2.b"]), ReLU(), MaxPooling(2),
            Reshape((16, 5, 5), (400, 1)),
            Dense(params["dense.w"], params["dense.b"]),
        ]

    def train_step(self, images, labels):
        """One SGD step per sample; returns the mean loss."""
        total = 0.0
        for image, label in zip(images, labels):
            output = image
            for layer in self.network:
                output = layer.forward(output)
            loss, grad = softmax_cross_entropy(output, label)
            total += loss
            for layer in reversed(self.network):
                grad = layer.backward(grad, self.learning_rate)
        return total / len(labels)

    def parameters(self):
        conv1, conv2, dense = self.network[0], self.network[3], self.network[7]
        return {
            "conv1.w": conv1.kernels, "conv1.b": conv1.biases,
            "conv2.w": conv2.kernels, "conv2.b": conv2.biases,
            "dense.w": dense.weights, "dense.b": dense.bias.ravel(),
        }
