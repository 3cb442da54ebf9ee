"""Helpers for property-testing convolution and pooling code, cyconv's own or
yours: hypothesis strategies for valid configurations, and random arrays.

Needs ``hypothesis`` (``pip install cyconv[test]``).

Examples
--------
>>> from hypothesis import given
>>> from cyconv.testing import conv2d_configs
>>> @given(conv2d_configs())
... def test_output_shape(config):
...     assert config.output_shape[0] == config.x_shape[0]
>>> test_output_shape()
"""

from dataclasses import dataclass

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "cyconv.testing needs hypothesis: pip install 'cyconv[test]'"
    ) from exc


@dataclass(frozen=True)
class Conv2dConfig:
    """A valid set of arguments for ``cyconv.functional.conv2d``."""

    x_shape: tuple
    weight_shape: tuple
    stride: tuple
    padding: object  # (ph, pw) or "same"
    dilation: tuple
    groups: int

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding,
                    dilation=self.dilation, groups=self.groups)

    @property
    def output_shape(self):
        n, _, h, w = self.x_shape
        f, _, kh, kw = self.weight_shape
        if self.padding == "same":
            return (n, f, h, w)
        ph, pw = self.padding
        hout = (h + 2 * ph - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wout = (w + 2 * pw - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return (n, f, hout, wout)


@st.composite
def conv2d_configs(draw, max_batch=3, max_group_channels=3, max_groups=3,
                   max_kernel=4, max_stride=3, max_dilation=2, max_padding=2,
                   max_extra_size=8):
    """Strategy for :class:`Conv2dConfig`: any batch, channels, groups,
    non-square kernels, stride, dilation and padding whose output is not
    empty, including 1-pixel inputs and outputs."""
    groups = draw(st.integers(1, max_groups))
    channels = groups * draw(st.integers(1, max_group_channels))
    filters = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    dilation = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    if draw(st.integers(0, 4)) == 0:
        stride, padding = (1, 1), "same"
        pads = ((dilation[0] * (kh - 1)) // 2, (dilation[1] * (kw - 1)) // 2)
    else:
        stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
        padding = (draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding)))
        pads = padding
    sizes = []
    for k, d, p in zip((kh, kw), dilation, pads):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)
        sizes.append(draw(st.integers(smallest, smallest + max_extra_size)))
    n = draw(st.integers(1, max_batch))
    return Conv2dConfig(
        x_shape=(n, channels, sizes[0], sizes[1]),
        weight_shape=(filters, channels // groups, kh, kw),
        stride=stride, padding=padding, dilation=dilation, groups=groups,
    )


@dataclass(frozen=True)
class Pool2dConfig:
    """A valid set of arguments for ``cyconv.functional.max_pool2d`` /
    ``avg_pool2d``, with PyTorch's rules: padding at most half the kernel,
    and with ``ceil_mode`` no window that starts in the right or bottom
    padding."""

    x_shape: tuple
    kernel_size: tuple
    stride: tuple
    padding: tuple
    ceil_mode: bool

    @property
    def kwargs(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride,
                    padding=self.padding, ceil_mode=self.ceil_mode)

    @property
    def output_shape(self):
        sizes = []
        for size, k, s, p in zip(self.x_shape[-2:], self.kernel_size, self.stride, self.padding):
            span = size + 2 * p - k
            out = (-(-span // s) if self.ceil_mode else span // s) + 1
            if self.ceil_mode and (out - 1) * s >= size + p:
                out -= 1
            sizes.append(out)
        return tuple(self.x_shape[:-2]) + tuple(sizes)


@st.composite
def pool2d_configs(draw, max_batch=3, max_channels=3, max_kernel=4, max_stride=4,
                   max_extra_size=8):
    """Strategy for :class:`Pool2dConfig`, overlapping windows (stride <
    kernel) and gaps (stride > kernel) included."""
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    sizes = []
    for k, p in zip(kernel, padding):
        smallest = max(1, k - 2 * p)
        sizes.append(draw(st.integers(smallest, smallest + max_extra_size)))
    shape = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)), *sizes)
    return Pool2dConfig(x_shape=shape, kernel_size=kernel, stride=stride,
                        padding=padding, ceil_mode=draw(st.booleans()))


def random_arrays(draw, shapes, dtype=np.float64, ties=False):
    """Draw a seed and return standard-normal arrays of ``shapes``.

    With ``ties`` the values come from a handful of integers, so that equal
    values (tied maxima) are common.  Drawing a seed rather than every element
    keeps large examples cheap; hypothesis still replays failures exactly.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if ties:
        return [rng.integers(-2, 3, size=shape).astype(dtype) for shape in shapes]
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]
