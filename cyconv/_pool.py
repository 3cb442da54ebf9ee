"""Max and average pooling and their gradients: validation, PyTorch's output
size rules and output allocation around the compiled loops in
``_kernels/_pool.pyx``."""

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from . import _runtime
from ._kernels import _pool
from ._validation import (
    as_array,
    as_float_arrays,
    as_flag,
    as_kernel_array,
    as_int,
    as_pair,
    check_at_most,
    check_ndim,
    check_nonempty_except_batch,
)

_LAYOUT_X = "(N, C, H, W) or (C, H, W)"

# Below this many window elements per thread, a thread costs more to start
# than it saves (see _runtime.py).
MIN_WORK_PER_THREAD = _runtime.POOL_MIN_WORK_PER_THREAD

# How many pool_geometry results are remembered.
_GEOMETRIES_KEPT = 64

# The variant of the 2x2 kernels (_kernels/pool_tiles.h) that 2x2 stride-2
# max pooling runs, or None where the processor has neither AVX-512 nor
# AVX2: there the kernels with int64 indices measured faster than the
# portable variant, which the tests still check (by setting this).
PAIRS_ISA = _pool.PAIRS_ISAS[_pool.pairs_isa()] if _pool.pairs_isa() != "portable" else None

# Bytes kept after the codes of a forward pass, a vector's worth.  No
# kernel relies on them: the 2x2 backward and the blocked weight
# gradient's expansion read no byte past the codes, as a copied or
# unpickled model's codes have none (both tested at a guard page).
_CODES_SLACK = 15

# An empty (0, 0, 0) array tells the kernels not to record indices.
_NO_INDICES = np.empty((0, 0, 0), dtype=np.int64)

@dataclass(frozen=True)
class PoolGeometry:
    """Every size the kernels index with, checked once."""

    batched: bool
    channels_shape: tuple  # the axes before (H, W): (N, C) or (C,)
    height: int
    width: int
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    out_height: int
    out_width: int
    work: int  # window elements visited by one pass over every window

    @property
    def output_shape(self):
        return self.channels_shape + (self.out_height, self.out_width)

    @property
    def empty(self):
        """Whether there is nothing to compute: a batch of 0 samples."""
        return 0 in self.channels_shape

    @property
    def kernel_args(self):
        """(kh, kw, sh, sw, ph, pw) in the order the kernels take them."""
        return self.kernel + self.stride + self.padding

    @property
    def max_kernel_args(self):
        """(kh, kw, sh, sw, ph, pw, dh, dw) for the max pooling kernels."""
        return self.kernel_args + self.dilation

    @property
    def tiled(self):
        """Whether the windows tile the input (kernel == stride, no padding)
        for the kernel ``max_pool2d_tiles_forward``, with a whole window
        in each direction.  That keeps offsets
        within a window, up to W + 1, in integers as wide as a float32,
        hence the bound on the width."""
        return (self.kernel == self.stride and self.padding == (0, 0)
                and self.dilation == (1, 1) and self.width < 2**31 - 1
                # At least one whole window per row and column (ceil_mode
                # allows a kernel larger than the input).
                and self.kernel[0] <= self.height and self.kernel[1] <= self.width)

    @property
    def pairs(self):
        """Whether the 2x2 stride-2 kernels serve: tiled 2x2 windows, and a
        processor they are fast on (PAIRS_ISA)."""
        return self.tiled and self.kernel == (2, 2) and PAIRS_ISA is not None

    @cached_property
    def planes(self):
        """``(input_shape, input_planes, output_planes)``: the input's shape,
        and the (P, H, W) and (P, Hout, Wout) views the kernels take,
        computed once (at batch 1 building them costs more than pooling)."""
        count = 1
        for size in self.channels_shape:
            count *= size
        return (self.channels_shape + (self.height, self.width),
                (count, self.height, self.width), (count, self.out_height, self.out_width))

    def threads(self):
        """Threads worth starting for one pass over every window: one per
        MIN_WORK_PER_THREAD window elements, at most cyconv.get_num_threads().
        Each plane is one thread's, so the count never changes a result."""
        return _runtime.threads_for(self.work, MIN_WORK_PER_THREAD)


def _output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling output size along one axis (its
    ``pooling_output_shape``); below 1 where no window fits."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # Under ceil_mode the last window must start inside the input or its
    # left/top padding: one that would start in the right/bottom padding
    # would see nothing but padding, so it is dropped.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_geometry(x_shape, kernel_size, stride, padding, ceil_mode, dilation=1):
    """Check a pooling's arguments and return its :class:`PoolGeometry`.

    Training calls this with the same arguments over and over, so results
    are remembered, but only for arguments of exactly the types int, bool,
    None and pairs of ints: True and 2.0, equal to 1 and 2 but refused,
    never find a result remembered for those."""
    arguments = (kernel_size, stride, padding, ceil_mode, dilation)
    key = (x_shape,) + tuple(_exact(value) for value in arguments)
    if None in key:
        return _new_pool_geometry(x_shape, *arguments)
    geometry = _GEOMETRIES.get(key)
    if geometry is None:
        geometry = _new_pool_geometry(x_shape, *arguments)
        if len(_GEOMETRIES) >= _GEOMETRIES_KEPT:
            _GEOMETRIES.clear()
        _GEOMETRIES[key] = geometry
    return geometry


_GEOMETRIES = {}


def _exact(value):
    """``(value, its type)`` for an int, bool, None or pair of ints, else None."""
    kind = type(value)
    if kind is int or kind is bool or value is None:
        return value, kind
    if kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value, kind
    return None


def _new_pool_geometry(x_shape, kernel_size, stride, padding, ceil_mode, dilation):
    kernel = as_pair(kernel_size, "kernel_size", 1)
    # PyTorch's functional API takes an empty stride for the default too.
    default_stride = stride is None or (isinstance(stride, (tuple, list)) and not stride)
    stride = kernel if default_stride else as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    dilation = as_pair(dilation, "dilation", 1)
    ceil_mode = as_flag(ceil_mode, "ceil_mode")
    for name, pair in (("kernel_size", kernel), ("stride", stride), ("padding", padding),
                       ("dilation", dilation)):
        check_at_most(pair, name)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"padding must be at most half the kernel size: kernel_size {kernel} "
            f"allows padding up to {(kernel[0] // 2, kernel[1] // 2)}, got {padding}"
        )
    height, width = x_shape[-2:]
    out_height, out_width = (
        _output_size(size, kernel[axis], stride[axis], padding[axis], dilation[axis], ceil_mode)
        for axis, size in enumerate((height, width)))
    if out_height < 1 or out_width < 1:
        padded = (height + 2 * padding[0], width + 2 * padding[1])
        spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        dilated = f" (dilated: {spans})" if dilation != (1, 1) else ""
        ceil_would_fit = not ceil_mode and all(
            _output_size(size, kernel[axis], stride[axis], padding[axis], dilation[axis], True)
            >= 1 for axis, size in enumerate((height, width)))
        raise ValueError(
            f"kernel_size {kernel}{dilated} is larger than the padded input {padded}"
            + ("; ceil_mode=True would keep the one window that starts inside the input"
               if ceil_would_fit else ""))
    for axis, size, out in ((0, height, out_height), (1, width, out_width)):
        _check_windows_reach_input(size, out, kernel[axis], stride[axis], padding[axis],
                                   dilation[axis], "HW"[axis])
    planes = 1
    for size in x_shape[:-2]:
        planes *= size
    return PoolGeometry(
        batched=len(x_shape) == 4,
        channels_shape=tuple(x_shape[:-2]),
        height=height, width=width,
        kernel=kernel, stride=stride, padding=padding, dilation=dilation,
        out_height=out_height, out_width=out_width,
        work=planes * out_height * out_width * kernel[0] * kernel[1],
    )


def _check_windows_reach_input(size, out, kernel, stride, padding, dilation, axis):
    """Raise ValueError if a window along one axis reads only padding.

    Undilated windows always reach the input (padding is at most half the
    kernel, and the last window starts inside the input).  Dilated ones
    can step over it: the first element at or past 0 of a window starting
    at ``start < 0`` is ``start % dilation``, and the window reaches that
    far since padding <= kernel // 2.  PyTorch returns -inf for such a
    window, with an index outside it that its gradient then follows."""
    if dilation <= size:
        return  # start % dilation < size
    # Here the dilated span exceeds the input, so only a few windows fit.
    for o in range(min(out, -(-padding // stride))):
        start = o * stride - padding
        if start % dilation >= size:
            raise ValueError(
                f"with dilation {dilation} the window starting at {start} along {axis} "
                f"(size {size}, padding {padding}) holds only padding")


def _checked_x(x, extra=()):
    """The arrays as the kernels take them; x may have an empty batch axis,
    as in PyTorch, but no other empty axis."""
    arrays = as_float_arrays((x, "x"), *extra)
    x = arrays[0]
    check_ndim(x, "x", (3, 4), _LAYOUT_X)
    check_nonempty_except_batch(x, "x")
    return arrays


def _checked_grad_output(grad_output, geometry):
    if grad_output.shape != geometry.output_shape:
        raise ValueError(
            f"grad_output must have the shape of the pooling's output, "
            f"{geometry.output_shape}, got {grad_output.shape}"
        )


def _planes(array):
    """View a C-contiguous (..., H, W) array as (P, H, W)."""
    return array.reshape((-1,) + array.shape[-2:])


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, *,
               dilation=1, return_indices=False):
    """2-D max pooling over a batch of multi-channel images.

    The semantics of ``torch.nn.functional.max_pool2d`` on NCHW arrays.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
        Input images.  With one sample the result has no batch axis either.
        N may be 0 (an empty result); no other axis may.
    kernel_size : int or pair of ints
        Window height and width.  Every int-or-pair argument also takes one
        int in a sequence, ``(2,)``, as PyTorch does.
    stride : int or pair of ints, optional
        Step between windows; defaults to ``kernel_size`` (also when given
        as ``()``).  Smaller than the kernel, windows overlap.
    padding : int or pair of ints, default 0
        Rows and columns of -inf added on each side; at most half the kernel
        size on each axis, as in PyTorch.
    ceil_mode : bool, default False
        Round the number of windows up rather than down, so that a last
        partial window at the bottom or right is kept, as long as it starts
        inside the input or its top/left padding.  This also allows a
        kernel larger than the padded input where such a window exists.
    dilation : int or pair of ints, default 1, keyword-only
        Step between the elements of a window: a window reads rows
        ``h0, h0 + dh, ..., h0 + (kh - 1)*dh``.
    return_indices : bool, default False, keyword-only
        Also return where each maximum was found, for
        :func:`max_pool2d_backward`'s ``indices`` argument.

    Returns
    -------
    out : ndarray, shape (N, C, Hout, Wout) or (C, Hout, Wout)
        ``Hout = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1`` (with
        ``ceil_mode``, rounded up and then reduced by one if the last window
        would start in the bottom padding), likewise ``Wout``.  float32 for
        float32 input, else float64.
    indices : ndarray of int64, same shape as ``out``
        Only with ``return_indices``: the flat index ``h * W + w`` within its
        (H, W) plane of the element each output was taken from, as PyTorch
        returns them.

    Raises
    ------
    TypeError
        For complex, float16, object or other non-real input, or
        non-integer sizes.
    ValueError
        For a wrong number of axes, an empty axis other than the batch,
        sizes, strides or dilations below 1, padding above half the kernel,
        a (dilated) kernel larger than the padded input where no window
        fits, a size, stride, padding or dilation above 2**40, or a dilated
        window that would hold nothing but padding.

    Notes
    -----
    Each window's maximum is its first largest element in row-major order.
    NaN counts as larger than everything, so a window holding NaN gives NaN,
    taken from its first NaN (PyTorch's loop takes the last one; the value
    is the same, only ``indices`` and the gradient's position differ).

    A dilated window can step over the whole input and read only padding;
    PyTorch then returns -inf, with an index outside the window that its
    gradient follows.  cyconv refuses such arguments instead.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import max_pool2d
    >>> x = np.array([[[[1., 2., 0., 5.],
    ...                 [3., 4., 6., 1.],
    ...                 [0., 0., 1., 1.],
    ...                 [7., 0., 1., 2.]]]])
    >>> max_pool2d(x, 2)[0, 0]
    array([[4., 6.],
           [7., 2.]])
    >>> out, indices = max_pool2d(x, 2, return_indices=True)
    >>> indices[0, 0]
    array([[ 5,  6],
           [12, 15]])
    >>> max_pool2d(x, 3, stride=2, ceil_mode=True)[0, 0]
    array([[6., 6.],
           [7., 2.]])
    >>> max_pool2d(x, 2, stride=1, dilation=2)[0, 0]
    array([[1., 5.],
           [7., 4.]])
    """
    return_indices = as_flag(return_indices, "return_indices")
    (x,) = _checked_x(x)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, ceil_mode, dilation)
    out, indices = _max_pool(x, geometry, return_indices)
    return (out, indices) if return_indices else out


def _max_pool(x, geometry, return_indices):
    """Run the forward kernel: ``(out, indices)``, indices None unless asked for."""
    out = np.empty(geometry.output_shape, dtype=x.dtype)
    indices = np.empty(geometry.output_shape, dtype=np.int64) if return_indices else None
    indices_arg = _planes(indices) if return_indices else _NO_INDICES
    if geometry.empty:
        pass
    elif geometry.pairs:
        _max_pool_pairs(x, out, geometry, indices_arg)
    elif geometry.tiled:
        _pool.max_pool2d_tiles_forward(_planes(x), _planes(out), indices_arg,
                                       *geometry.kernel, geometry.threads())
    else:
        _pool.max_pool2d_forward(_planes(x), _planes(out), indices_arg,
                                 *geometry.max_kernel_args, geometry.threads())
    return out, indices


def _max_pool_pairs(x, out, geometry, indices=_NO_INDICES):
    """Run the 2x2 forward kernel into ``out`` (and the flat indices into
    ``indices``, a (P, Hout, Wout) view, when given); return the codes, a
    (P, Hout, Wout) array followed in memory by the slack the backward
    kernel reads."""
    _, input_planes, output_planes = geometry.planes
    codes = pairs_codes(geometry)
    _pool.max_pool2d_pairs_forward(x.reshape(input_planes), out.reshape(output_planes), codes,
                                   indices, PAIRS_ISA, geometry.threads())
    return codes


def pairs_codes(geometry):
    """An uninitialised (P, Hout, Wout) array for the 2x2 kernels' codes,
    followed in memory by the slack the backward kernel reads."""
    output_planes = geometry.planes[2]
    size = output_planes[0] * output_planes[1] * output_planes[2]
    return np.empty(size + _CODES_SLACK, dtype=np.uint8)[:size].reshape(output_planes)


def _max_pool_pairs_backward(grad_output, codes, pooled, geometry, isa):
    """The 2x2 backward kernel: the input gradient from the forward's codes,
    through ReLU's gradient too when ``pooled`` (the forward's output) is
    given."""
    input_shape, input_planes, output_planes = geometry.planes
    grad_input = np.empty(input_shape, dtype=grad_output.dtype)
    pooled = (pooled.reshape(output_planes) if pooled is not None
              else np.empty((0, 0, 0), dtype=grad_output.dtype))
    _pool.max_pool2d_pairs_backward(grad_output.reshape(output_planes), codes, pooled,
                                    grad_input.reshape(input_planes), isa, geometry.threads())
    return grad_input


def _checked_indices(indices, geometry, check_range=True):
    """Return ``indices`` as C-contiguous int64, each a flat index into its
    (H, W) plane.  Only the range can be checked cheaply; that it is the
    argmax of the right window is the caller's promise.

    ``check_range=False`` leaves the range of int64 indices to the caller
    (the backward kernel counts those out of range as it goes, for free);
    indices of other types are checked before conversion could wrap them."""
    indices = as_array(indices, "indices")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices must hold integers, got dtype {indices.dtype}")
    if indices.shape != geometry.output_shape:
        raise ValueError(
            f"indices must have the shape of the pooling's output, "
            f"{geometry.output_shape}, got {indices.shape}"
        )
    if check_range or indices.dtype != np.int64:
        _check_index_range(indices, geometry)
    return as_kernel_array(indices, np.int64)


def _check_index_range(indices, geometry):
    plane = geometry.height * geometry.width
    if indices.size == 0:  # an empty batch: nothing to check
        return
    if indices.min() < 0 or indices.max() >= plane:
        raise ValueError(
            f"indices must lie in [0, H*W) = [0, {plane}), "
            f"got values from {indices.min()} to {indices.max()}"
        )


def max_pool2d_backward(grad_output, x, kernel_size, stride=None, padding=0,
                        ceil_mode=False, *, dilation=1, indices=None):
    """Gradient of :func:`max_pool2d` with respect to its input.

    Each output's gradient goes to the element its window's maximum was
    taken from (the first largest, or the first NaN); elements that are the
    maximum of several overlapping windows collect the sum.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, Hout, Wout) or (C, Hout, Wout)
        Gradient of the loss with respect to ``max_pool2d``'s output.
    x, kernel_size, stride, padding, ceil_mode, dilation
        As given to :func:`max_pool2d`.
    indices : array_like of int, optional, keyword-only
        The ``indices`` that ``max_pool2d(..., return_indices=True)``
        returned for these same arguments.  Given, the maxima are not
        searched for again and ``x`` serves only for its shape and dtype.
        Only their range is checked: indices from other arguments give a
        wrong gradient, never a crash.

    Returns
    -------
    grad_input : ndarray
        Same shape as ``x``; float32 if ``x`` and ``grad_output`` both are,
        else float64.

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d`, and ValueError for a ``grad_output`` (or
        ``indices``) whose shape is not that of the output, or indices
        outside ``[0, H*W)``; TypeError for non-integer indices.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import max_pool2d, max_pool2d_backward
    >>> x = np.array([[[1., 3., 3.],
    ...                [0., 2., 1.]]])
    >>> max_pool2d_backward(np.array([[[10., 20.]]]), x, 2, stride=1)
    array([[[ 0., 30.,  0.],
            [ 0.,  0.,  0.]]])
    >>> out, indices = max_pool2d(x, 2, stride=1, return_indices=True)
    >>> max_pool2d_backward(np.array([[[10., 20.]]]), x, 2, stride=1, indices=indices)
    array([[[ 0., 30.,  0.],
            [ 0.,  0.,  0.]]])
    """
    x, grad_output = _checked_x(x, [(grad_output, "grad_output")])
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, ceil_mode, dilation)
    _checked_grad_output(grad_output, geometry)
    n_threads = geometry.threads()
    if indices is not None:
        indices = _checked_indices(indices, geometry, check_range=False)
    if geometry.empty:
        return np.zeros(x.shape, dtype=x.dtype)
    if indices is not None:
        pass
    elif geometry.pairs:
        out = np.empty(geometry.output_shape, dtype=x.dtype)
        codes = _max_pool_pairs(x, out, geometry)
        return _max_pool_pairs_backward(grad_output, codes, None, geometry, PAIRS_ISA)
    elif geometry.tiled:
        # The tiled forward pass finds the maxima faster than the search
        # below, and the scatter is cheap.
        _, indices = _max_pool(x, geometry, True)
    else:
        grad_input = np.zeros(x.shape, dtype=x.dtype)
        _pool.max_pool2d_backward(
            _planes(grad_output), _planes(x), _planes(grad_input),
            *geometry.max_kernel_args, n_threads,
        )
        return grad_input
    # The kernel writes every element (zero where no index points).
    grad_input = np.empty(x.shape, dtype=x.dtype)
    outside = _pool.max_pool2d_backward_indices(
        _planes(grad_output), _planes(indices), _planes(grad_input), n_threads,
    )
    if outside:
        _check_index_range(indices, geometry)  # raises
    return grad_input


class SavedMaxima(NamedTuple):
    """What :class:`cyconv.MaxPooling`'s forward pass keeps for its backward
    pass: where each window's maximum was, and the maxima themselves.

    Immutable as a frozen dataclass, for a third of its construction cost
    (made at every forward pass)."""

    geometry: PoolGeometry
    pooled: np.ndarray   # the forward's output, x at the maxima bit for bit
    # Either int64 flat indices into each plane, or for 2x2 tiles one byte
    # a window, 2*i + j for the winner's row i and column j in it (an
    # eighth of an index's bytes to write and read back), from the 2x2
    # kernels' variant ``isa``.
    indices: np.ndarray = None
    codes: np.ndarray = None
    isa: int = None


def max_pool2d_saving(x, kernel_size, stride=None, padding=0, ceil_mode=False, dilation=1):
    """:func:`max_pool2d` for the layer: ``(out, saved)``, ``saved`` a
    :class:`SavedMaxima` for :func:`max_pool2d_backward_saved`."""
    (x,) = _checked_x(x)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, ceil_mode, dilation)
    return max_pool2d_saving_checked(x, geometry)


def max_pool2d_saving_checked(x, geometry):
    """:func:`max_pool2d_saving` without its checks: ``x`` is an aligned
    C-contiguous float32 or float64 array of the shape ``geometry`` was
    made for, as :func:`max_pool2d_saving`'s checks leave it."""
    if geometry.pairs and not geometry.empty:
        out = np.empty(geometry.output_shape, dtype=x.dtype)
        return out, saved_pairs(geometry, out, _max_pool_pairs(x, out, geometry))
    out, indices = _max_pool(x, geometry, True)
    return out, SavedMaxima(geometry, out, indices=indices)


def saved_pairs(geometry, out, codes):
    """The :class:`SavedMaxima` of a 2x2 forward pass that gave ``out`` and
    ``codes`` (:func:`pairs_codes`), as :func:`max_pool2d_saving` keeps it."""
    return SavedMaxima(geometry, out, codes=codes, isa=PAIRS_ISA)


class PooledGradient(NamedTuple):
    """The output gradient of a layer followed by a ReLU and a 2x2 max
    pooling (stride 2) whose forward pass kept codes: held as that pooling's
    output gradient and what it kept, for a weight gradient that takes it
    so (the wide direct kernels, and the filter-blocked ones where
    _conv_direct._expands says), without writing the full gradient.  (Its
    codes may lack the 2x2 kernels' slack after a copy or pickle.)"""

    grad: np.ndarray       # the pooling's output gradient, checked by its layer
    saved: SavedMaxima     # its forward pass's, with codes

    def dense(self):
        """The gradient itself: ``max_pool2d_backward_saved(grad, saved,
        through_relu=True)``."""
        return max_pool2d_backward_saved(self.grad, self.saved, through_relu=True)

    def arrays(self):
        """``(grad, codes, pooled)`` as (N, C, Hout, Wout) arrays."""
        shape = self.saved.geometry.output_shape
        return (self.grad, self.saved.codes.reshape(shape),
                self.saved.pooled.reshape(shape))


def max_pool2d_backward_saved(grad_output, saved, through_relu=False):
    """The input gradient from what :func:`max_pool2d_saving` kept.

    ``grad_output`` has the output's shape and dtype (the layer checked
    them).  With ``through_relu``, ReLU's gradient on the pool's input is
    applied too, in the same pass: the result is bitwise
    ``relu_gradient(max_pool2d_backward(grad_output, ...), x)``, whatever
    ``x`` holds (only the elements some window chose are looked at, through
    the saved maxima)."""
    geometry = saved.geometry
    grad_output = as_kernel_array(grad_output, saved.pooled.dtype)
    shape = geometry.channels_shape + (geometry.height, geometry.width)
    if geometry.empty:
        return np.zeros(shape, dtype=grad_output.dtype)
    if saved.codes is not None:
        return _max_pool_pairs_backward(grad_output, saved.codes,
                                        saved.pooled if through_relu else None,
                                        geometry, saved.isa)
    # Every element is written (zero where no index points).
    grad_input = np.empty(shape, dtype=grad_output.dtype)
    arrays = _planes(grad_output), _planes(saved.indices)
    if through_relu:
        _pool.max_pool2d_backward_indices_relu(*arrays, _planes(saved.pooled),
                                               _planes(grad_input), geometry.threads())
    else:
        _pool.max_pool2d_backward_indices(*arrays, _planes(grad_input), geometry.threads())
    return grad_input


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling over a batch of multi-channel images.

    The semantics of ``torch.nn.functional.avg_pool2d`` on NCHW arrays.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
        Input images.  With one sample the result has no batch axis either.
    kernel_size, stride, padding, ceil_mode
        As for :func:`max_pool2d`, except that the padding holds zeros.
    count_include_pad : bool, default True
        Whether padding elements count in a window's divisor.
    divisor_override : int, optional
        Divide every window's sum by this nonzero int instead.

    Returns
    -------
    out : ndarray, shape (N, C, Hout, Wout) or (C, Hout, Wout)
        Sizes as for :func:`max_pool2d`; float32 for float32 input, else
        float64.

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d`; TypeError for a ``divisor_override`` that is
        not an int, ValueError for 0 or one beyond int64.

    Notes
    -----
    Each output is the sum of the input elements in its window divided by

    * with ``count_include_pad``, the size of the window clipped to the
      padded input: rows ``oh*sh - ph`` to ``min(oh*sh - ph + kh, H + ph)``,
      so that a ``ceil_mode`` window hanging past the bottom or right
      padding counts only what it covers, padding included;
    * without, the number of input elements in the window.

    or by ``divisor_override`` when given.  These are PyTorch's rules.  Sums
    are accumulated in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import avg_pool2d
    >>> x = np.arange(9.0).reshape(1, 3, 3)
    >>> avg_pool2d(x, 2, ceil_mode=True)
    array([[[2. , 3.5],
            [6.5, 8. ]]])
    >>> avg_pool2d(x, 2, padding=1)
    array([[[0.  , 0.75],
            [2.25, 6.  ]]])
    >>> avg_pool2d(x, 2, padding=1, count_include_pad=False)
    array([[[0. , 1.5],
            [4.5, 6. ]]])
    >>> avg_pool2d(x, 2, divisor_override=2)
    array([[[4.]]])
    """
    count_include_pad = as_flag(count_include_pad, "count_include_pad")
    divisor = check_divisor_override(divisor_override)
    (x,) = _checked_x(x)
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, ceil_mode)
    out = np.empty(geometry.output_shape, dtype=x.dtype)
    if not geometry.empty:
        _pool.avg_pool2d_forward(_planes(x), _planes(out), *geometry.kernel_args,
                                 count_include_pad, divisor, geometry.threads())
    return out


def check_divisor_override(value):
    """``divisor_override`` as the kernels take it: a float, 0 for None."""
    if value is None:
        return 0.0
    divisor = as_int(value, "divisor_override", -(2**63))
    if divisor == 0:
        raise ValueError("divisor_override must not be 0")
    if divisor >= 2**63:
        raise ValueError(f"divisor_override must be below 2**63, as in PyTorch, got {divisor}")
    return float(divisor)


def avg_pool2d_backward(grad_output, x, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Each output's gradient, divided by that window's divisor, is added to
    every input element of the window.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, Hout, Wout) or (C, Hout, Wout)
        Gradient of the loss with respect to ``avg_pool2d``'s output.
    x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to :func:`avg_pool2d`; ``x`` serves only for its shape and
        dtype.

    Returns
    -------
    grad_input : ndarray
        Same shape as ``x``; float32 if ``x`` and ``grad_output`` both are,
        else float64.

    Raises
    ------
    TypeError, ValueError
        As :func:`avg_pool2d`, and ValueError for a ``grad_output`` whose
        shape is not that of the output.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import avg_pool2d_backward
    >>> x = np.zeros((1, 3, 3))
    >>> avg_pool2d_backward(np.full((1, 2, 2), 4.0), x, 2, stride=1)
    array([[[1., 2., 1.],
            [2., 4., 2.],
            [1., 2., 1.]]])
    """
    count_include_pad = as_flag(count_include_pad, "count_include_pad")
    divisor = check_divisor_override(divisor_override)
    x, grad_output = _checked_x(x, [(grad_output, "grad_output")])
    geometry = pool_geometry(x.shape, kernel_size, stride, padding, ceil_mode)
    _checked_grad_output(grad_output, geometry)
    grad_input = np.zeros(x.shape, dtype=x.dtype)
    if not geometry.empty:
        _pool.avg_pool2d_backward(_planes(grad_output), _planes(grad_input),
                                  *geometry.kernel_args, count_include_pad, divisor,
                                  geometry.threads())
    return grad_input
