"""What to tell a user whose input has the wrong shape: their own shape,
and how to fix the usual mistakes (channels last, no channel axis)."""

import math

__all__ = ["shape_hint", "input_shape_hint"]


def shape_hint(shape, sample_shape):
    """A sentence on how to turn an array of ``shape`` into samples of
    ``sample_shape`` (cyconv's channels-first ``(C, H, W)``), or ""."""
    shape, sample = tuple(shape), tuple(sample_shape)
    if len(sample) == 3:
        channels, height, width = sample
        if len(shape) == 4 and shape[1:] == (height, width, channels):
            return (f" It looks channels-last (N, H, W, C); cyconv takes channels first "
                    f"(N, C, H, W): pass x.transpose(0, 3, 1, 2).")
        if len(shape) == 3 and shape == (height, width, channels):
            return (f" It looks like one channels-last image (H, W, C); cyconv takes "
                    f"(C, H, W): pass x.transpose(2, 0, 1).")
        if channels == 1 and len(shape) == 3 and shape[1:] == (height, width):
            return (" It looks like a batch of grey images without a channel axis: pass "
                    "x[:, np.newaxis] (or cyconv.datasets.prepare_images(images), which "
                    "also scales 0-255 pixels to [0, 1]).")
    if len(sample) == 1 and len(shape) >= 3 and math.prod(shape[1:]) == sample[0]:
        return (f" Flatten each sample first: x.reshape(len(x), {sample[0]}), or put a "
                f"Flatten() layer first.")
    return ""


def input_shape_hint(input_shape):
    """A sentence for an ``input_shape`` that looks channels-last, or ""."""
    shape = tuple(input_shape)
    if len(shape) == 3 and shape[2] in (1, 3, 4) and shape[0] > 4 and shape[1] > 4:
        return (f" input_shape is (C, H, W), channels first; {shape} looks channels-last "
                f"(H, W, C): use {(shape[2], shape[0], shape[1])}.")
    return ""
