"""A good pure-numpy implementation: what one writes without a compiler.

Convolution is im2col + one BLAS product: ``sliding_window_view`` gives the
windows without copying and ``tensordot`` lays them out as a matrix and
multiplies.  The weight gradient is the same product against the output
gradient; the input gradient multiplies the output gradient by the weights
into columns and adds each kernel tap's columns back at its offset (col2im,
``kh * kw`` strided additions).  Max pooling reshapes the 2x2 windows onto
their own axes.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pad(x, padding):
    if padding:
        return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    return x


def _windows(xp, kh, kw, stride):
    """(N, C, Hout, Wout, kh, kw) view of every window of the padded input."""
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def conv_forward(x, w, b, stride, padding):
    windows = _windows(_pad(x, padding), w.shape[2], w.shape[3], stride)
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, Hout, Wout, F)
    out += b
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def conv_backward(g, x, w, stride, padding):
    n, c, h, width = x.shape
    kh, kw = w.shape[2:]
    xp = _pad(x, padding)
    windows = _windows(xp, kh, kw, stride)
    ho, wo = g.shape[2:]
    grad_w = np.tensordot(g, windows, axes=([0, 2, 3], [0, 2, 3]))  # (F, C, kh, kw)
    grad_b = g.sum(axis=(0, 2, 3))
    columns = np.tensordot(g, w, axes=([1], [0]))  # (N, Hout, Wout, C, kh, kw)
    grad_xp = np.zeros(xp.shape, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            grad_xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += (
                columns[:, :, :, :, i, j].transpose(0, 3, 1, 2))
    grad_x = np.ascontiguousarray(grad_xp[:, :, padding:padding + h, padding:padding + width])
    return grad_x, grad_w, grad_b


def pool_forward(x):
    """2x2, stride 2, floor; returns the output and the argmax cache."""
    n, c, h, w = x.shape
    ho, wo = h // 2, w // 2
    windows = (x[:, :, :2 * ho, :2 * wo].reshape(n, c, ho, 2, wo, 2)
               .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ho, wo, 4))
    # argmax picks the first maximum in row-major order, as cyconv and
    # PyTorch do, so a tie sends the gradient to one element only.
    argmax = windows.argmax(axis=-1)
    out = np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0]
    return out, argmax


def pool_backward(g, x, argmax):
    n, c, h, w = x.shape
    ho, wo = g.shape[2:]
    spread = np.zeros((n, c, ho, wo, 4), dtype=g.dtype)
    np.put_along_axis(spread, argmax[..., None], g[..., None], axis=-1)
    grad_x = np.zeros_like(x)
    grad_x[:, :, :2 * ho, :2 * wo] = (spread.reshape(n, c, ho, wo, 2, 2)
                                     .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * ho, 2 * wo))
    return grad_x


def softmax_cross_entropy(logits, labels):
    """Mean loss over the batch and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = -np.log(probabilities[rows, labels]).mean()
    grad = probabilities
    grad[rows, labels] -= 1
    grad /= len(labels)
    return loss, grad


class LeNet:
    """The LeNet training step, batched, out of this module's pieces; a
    subclass may bring its own convolution and pooling functions (same
    signatures) and its own first-layer weight gradient."""

    conv_forward = staticmethod(conv_forward)
    conv_backward = staticmethod(conv_backward)
    pool_forward = staticmethod(pool_forward)
    pool_backward = staticmethod(pool_backward)

    def __init__(self, params, learning_rate):
        self.params = {name: value.copy() for name, value in params.items()}
        self.learning_rate = learning_rate

    def first_weight_gradient(self, g_z1, images):
        """Weight and bias gradients of the first convolution, whose input
        gradient nobody needs: the weight gradient alone is one product."""
        windows = _windows(images, 3, 3, 1)
        return (np.tensordot(g_z1, windows, axes=([0, 2, 3], [0, 2, 3])),
                g_z1.sum(axis=(0, 2, 3)))

    def train_step(self, images, labels):
        p = self.params
        z1 = self.conv_forward(images, p["conv1.w"], p["conv1.b"], 1, 0)
        a1 = np.maximum(z1, 0)
        m1, arg1 = self.pool_forward(a1)
        z2 = self.conv_forward(m1, p["conv2.w"], p["conv2.b"], 1, 0)
        a2 = np.maximum(z2, 0)
        m2, arg2 = self.pool_forward(a2)
        flat = m2.reshape(len(images), -1)
        logits = flat @ p["dense.w"].T + p["dense.b"]
        loss, g_logits = softmax_cross_entropy(logits, labels)

        grads = {"dense.w": g_logits.T @ flat, "dense.b": g_logits.sum(axis=0)}
        g_m2 = (g_logits @ p["dense.w"]).reshape(m2.shape)
        g_z2 = self.pool_backward(g_m2, a2, arg2) * (z2 > 0)
        g_m1, grads["conv2.w"], grads["conv2.b"] = self.conv_backward(
            g_z2, m1, p["conv2.w"], 1, 0)
        g_z1 = self.pool_backward(g_m1, a1, arg1) * (z1 > 0)
        grads["conv1.w"], grads["conv1.b"] = self.first_weight_gradient(g_z1, images)
        for name, grad in grads.items():
            p[name] -= self.learning_rate * grad
        return loss

    def parameters(self):
        return self.params
