"""A container's planned pass: its layers' forward and backward for one
kind of input, with every check and route worked out once.

A training loop calls a model with inputs of one shape, dtype and layout
step after step, and every layer's checks then give the same answer every
time.  At batch 1 those checks, and the container's choice of which
layers run as one, cost three times the arithmetic.  So after a forward
pass through :meth:`Container.forward` (whose checks passed), the
container plans the next ones: for each group of layers it ran (a
Convolution, ReLU and MaxPooling as one; a Convolution storing its ReLU;
a Flatten; a Dense), a stage that calls the kernels that pass chose, with
the arrays and sizes it found, and leaves every layer's attributes as the
layer's own call would.
The stages' sizes come from the input's shape and the layers'
hyper-parameters and parameters, checked as the layers check them; never
from what the layers cached, which another thread's pass may be rewriting.

A plan holds only while what it was made for does: the same layers in
the same order, the same input kind, thread count and kernel choices,
and in each layer the same hyper-parameter objects, flags and parameter
arrays (the same objects, of the same shape, dtype and layout).  Each call
asks (:func:`_guards.unchanged`, compiled); anything else takes the
general pass, with its checks and errors, and plans again.  The backward
pass is planned too where the last forward was the plan's and no layer
ran on its own since (each layer's own forward takes away the plan's
mark); else the general backward runs, reading the same layer attributes.

Only models made entirely of such groups, in one dtype, ending with a
Dense, are planned (LeNet- and VGG-like stacks), with hyper-parameters of
immutable types and every layer but the first wanting its input gradient;
anything else keeps the general pass for the whole container.  Results
are bitwise those of the general pass: the stages call the same kernels
with the same arguments.  One difference in what the layers keep: the
general pass runs a triple as one from the convolution's second call
with an input of one shape, a plan from its first call after planning,
even where the batch size alternates (the triple's full output, its
ReLU's and its pooling's ``input``, is then None as always after a fused
pass).
"""

import math

import numpy as np

from .. import _conv, _conv_direct, _conv_pool, _pool, _runtime
from .._kernels import _guards
from .._matmul import affine, matmul, sum_rows
from .._pool import PooledGradient, max_pool2d_backward_saved, max_pool2d_saving_checked
from .._relu import relu_gradient
from .._threads import get_num_threads
from .._validation import as_kernel_array
from .activations import ReLU
from .conv import Convolution
from .dense import Dense
from .layer import (_cache_lock, _refuse_owner, array_kind, as_layer_input,
                    check_gradient_shape, check_unused_learning_rate)
from .pooling import MaxPooling
from .reshape import Flatten


# Plans a container keeps, one per kind of input (a training set's last
# short batch, the batches of predict): more are dropped, all at once.
MAX_PLANS = 8


def keep(container, x4, single):
    """After a forward pass through the general path, which completed in
    this thread: plan the next ones with inputs like this one."""
    plans = container.__dict__.get("_plans") or {}
    kind = array_kind(x4[0] if single else x4)
    current = plans.get(kind)
    if current is not None and current.holds(container):
        return  # a caller's input of another dtype or layout, converted
    # Plans that no longer hold are dropped with it (they keep arrays alive,
    # a replaced weight say), and the rest if there are too many.  A new
    # dict is put in place, never one another thread may be reading changed.
    kept = {k: p for k, p in plans.items() if k != kind and p.holds(container)}
    if len(kept) >= MAX_PLANS:
        kept = {}
    new = plan(container, x4, single)
    if new is not None:
        kept[kind] = new
    container._plans = kept


def plan(container, x4, single):
    """The :class:`Plan` of ``container`` for inputs like ``x4`` (the
    batch its last forward pass ran on; ``single``: the caller gave one
    sample), or None where it has layers no stage covers.

    Every size comes from ``x4``'s shape and the layers' hyper-parameters
    and parameters, checked here as the layers check them, each read once
    and watched as it was read; never from what the layers cached, which
    another thread's pass may be rewriting meanwhile."""
    layers = list(container.layers)
    input_shape = container.input_shape
    kind = array_kind(x4)
    # The kernels take aligned C-contiguous arrays, as the layers' own
    # remembered checks want them.
    if not (container.fuse is True and x4.ndim >= 2 and x4.shape[0] > 0 and kind[2]):
        return None
    groups = _groups(layers)
    # The last stage's output goes to the caller, never read again by a
    # fused pass (as Container.forward fuses), and only the Dense stage
    # checks the caller's gradient.
    if groups is None or groups[-1][0] is not _Dense:
        return None
    stages = []
    ran_as_one = set()
    shape, dtype = x4.shape, x4.dtype
    for stage_type, start, group in groups:
        try:
            stage = stage_type.make(*group, shape=shape, dtype=dtype, first=start == 0)
        except (ValueError, TypeError):
            return None  # the checked pass gives the errors
        if stage is None:
            return None
        if getattr(stage, "pooled", False):
            ran_as_one.add(start + 2)
        stages.append(stage)
        shape = stage.output_shape
    return Plan(layers, input_shape, single, stages, frozenset(ran_as_one))


def _groups(layers):
    """``[(stage type, index of its first layer, its layers)]`` covering
    ``layers``, or None: by the layers' types alone, asked first."""
    groups = []
    i = 0
    while i < len(layers):
        kinds = tuple(type(layer) for layer in layers[i:i + 3])
        if kinds == (Convolution, ReLU, MaxPooling):
            groups.append((_ConvReluPool, i, layers[i:i + 3]))
            i += 3
        elif kinds[:2] == (Convolution, ReLU):
            groups.append((_ConvRelu, i, layers[i:i + 2]))
            i += 2
        elif kinds[0] is Flatten:
            groups.append((_Flatten, i, layers[i:i + 1]))
            i += 1
        elif kinds[0] is Dense:
            groups.append((_Dense, i, layers[i:i + 1]))
            i += 1
        else:
            return None
    return groups


def _watched(entries):
    """``(obj, name, value)`` entries as :func:`_guards.unchanged` takes
    them: grouped by object, read from the instance's ``__dict__`` where
    every name is there and no descriptor of the class answers for it."""
    groups = {}
    for obj, name, value in entries:
        groups.setdefault(id(obj), (obj, []))[1].append((name, value))
    watched = []
    for obj, pairs in groups.values():
        names = tuple(name for name, _ in pairs)
        state = getattr(obj, "__dict__", None)
        in_dict = state is not None and all(
            name in state and not hasattr(type(getattr(type(obj), name, None)), "__set__")
            for name in names)
        watched.append((obj, names, tuple(value for _, value in pairs), in_dict))
    return tuple(watched)


def _weight_constants():
    # The filter-blocked weight gradient's tuned constants, which its passes
    # were made with (tests change them).
    return _runtime.BLOCKED_WEIGHT_RUN, _runtime.BLOCKED_WEIGHT_SPLIT_PAIRS


class Plan:
    """The planned pass of one container for one kind of input."""

    def __init__(self, layers, input_shape, single, stages, ran_as_one):
        self.layers = layers
        self.input_shape = input_shape
        self.all_layers = tuple(self.layers)
        self.single = single
        self.stages = stages
        self.ran_as_one = ran_as_one
        self.threads = get_num_threads()
        self.choices = _runtime.choices()
        self.pairs_isa = _pool.PAIRS_ISA
        self.weight_constants = _weight_constants()
        self.watched = _watched(w for stage in stages for w in stage.watched)
        self.arrays = tuple((array, array_kind(array)) for stage in stages
                            for array in stage.arrays)

    def holds(self, container):
        """Whether the plan still fits ``container``'s layers and settings."""
        return (container.layers == self.layers and container.fuse is True
                and container.plan_passes is True and container.input_shape is self.input_shape
                and get_num_threads() == self.threads and _runtime.choices() is self.choices
                and _pool.PAIRS_ISA == self.pairs_isa
                and _weight_constants() == self.weight_constants
                and _guards.unchanged(self.watched, self.arrays))

    def forward(self, container, input):
        x = input[np.newaxis] if self.single else input
        for stage in self.stages:
            x = _guards.planned_forward(stage.layers, stage.locks, self, stage.forward, x)
        container._single = self.single
        container._ran_as_one = self.ran_as_one
        return x[0] if self.single else x

    def ran_last(self, container):
        """Whether the last forward pass was this plan's, in this thread,
        no layer ran on its own since, and the plan still holds."""
        return _guards.planned_intact(self.all_layers, self) and self.holds(container)

    def backward(self, output_gradient, learning_rate):
        grad = output_gradient[np.newaxis] if self.single else output_gradient
        stages = self.stages
        # The caller's gradient is checked by the last stage as its layer
        # checks it; each stage hands the next one a C-contiguous array of
        # the model's dtype.
        for stage in reversed(stages):
            grad = _guards.planned_backward(stage.layers, stage.locks, _refuse_owner,
                                            stage.backward, grad, learning_rate)
        return grad[0] if self.single and grad is not None else grad


def _ints(value, count=2):
    # Hyper-parameters are watched by identity: only immutable values.
    return type(value) is tuple and len(value) == count and all(type(v) is int for v in value)


class _Stage:
    """What every stage has: its layers and their locks, and what it was
    planned for, read once: ``watched``, ``(obj, name, value)`` entries,
    and ``arrays``, the parameter arrays (see Plan.holds)."""

    def __init__(self, layers, watched, arrays):
        self.layers = layers
        self.locks = tuple(_cache_lock(layer) for layer in layers)
        self.watched = watched
        self.arrays = arrays


def _gradient_flag(layer, first, watched):
    """The layer's needs_input_gradient, watched; None where the stages do
    not take it: only a model's first layer may go without its input
    gradient (a later one's would be None for the layers before it)."""
    flag = layer.needs_input_gradient
    watched.append((layer, "needs_input_gradient", flag))
    return flag if flag is True or (first and flag is False) else None


def _parameters(layer, dtype, watched, arrays):
    """``(weight, bias)`` of a Convolution or Dense computing in ``dtype``
    (bias None without one), each an aligned C-contiguous array of that
    dtype, as the layer's own remembered checks want them; else None."""
    if layer.dtype != dtype:
        return None
    weight, bias = layer.weight, layer.bias
    watched += [(layer, "dtype", layer.dtype), (layer, "weight", weight),
                (layer, "bias", bias)]
    values = []
    for parameter in (weight, bias):
        if parameter is None:
            values.append(None)
            continue
        value = parameter.value
        kind = array_kind(value)
        if kind is None or kind[1] != dtype or not kind[2]:
            return None
        watched.append((parameter, "value", value))
        arrays.append(value)
        values.append(value)
    w, b = values
    if b is not None and b.shape != (w.shape[0],):
        return None
    return w, b


def _conv_relu(conv, relu, shape, dtype, first, watched, arrays):
    """``(input_gradient, weight, bias, geometry)`` of a Convolution and
    the ReLU after it, checked as the convolution checks them and watched
    as they were read; else None."""
    flag = _gradient_flag(conv, first, watched)
    if flag is None or _gradient_flag(relu, False, watched) is None or len(shape) != 4:
        return None
    parameters = _parameters(conv, dtype, watched, arrays)
    if parameters is None:
        return None
    weight, bias = parameters
    arguments = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                     groups=conv.groups)
    border, input_shape = conv._border, conv.input_shape
    watched += [(conv, name, value) for name, value in arguments.items()]
    watched += [(conv, "_border", border), (conv, "input_shape", input_shape)]
    padding = arguments["padding"]
    if not (border is None and _ints(arguments["stride"]) and _ints(arguments["dilation"])
            and (type(padding) is str or _ints(padding))
            and type(arguments["groups"]) is int and shape[1:] == input_shape):
        return None
    return flag, weight, bias, _conv.conv_geometry(shape, weight.shape, **arguments)


class _ConvStage(_Stage):
    """What the stages that start with a Convolution have: the arrays and
    geometry checked, and the convolution's backward pass."""

    def __init__(self, layers, watched, arrays, geometry, dtype, input_gradient, weight, bias):
        super().__init__(layers, watched, arrays)
        # The arrays checked, used as they are: the layer's attributes could
        # be given others after the plan's check (another thread, say).
        self.weight = weight
        self.bias = np.empty(0, dtype) if bias is None else bias
        self.geometry = geometry
        self.input_gradient = input_gradient
        # Both gradients' direct passes, where they take the direct kernels.
        self.passes = _conv_direct.backward_passes(geometry, dtype, geometry.threads(),
                                                   input_gradient)

    def _convolution_backward(self, grad, learning_rate):
        """The convolution's gradients of ``grad`` (its output's, dense or
        a PooledGradient), kept and applied as Convolution.backward keeps
        and applies them; returns its input gradient."""
        conv = self.layers[0]
        x, weight = conv._padded_input, self.weight
        gradients = None
        if self.passes is not None:
            gradients = _conv.direct_backward(self.passes, grad, x, weight, self.input_gradient)
        if gradients is None:
            gradients = _conv.conv2d_backward_checked(grad, x, weight, self.geometry,
                                                      self.input_gradient)
        grad_input, grad_weight, grad_bias = gradients
        conv.weight.grad = grad_weight
        if conv.bias is not None:
            conv.bias.grad = grad_bias
        conv.apply_learning_rate(learning_rate)
        return grad_input


class _ConvReluPool(_ConvStage):
    """Convolution -> ReLU -> MaxPooling as Container.forward runs them:
    one fused pass where it computes the pooled output itself
    (``pooled``), else the convolution storing its ReLU, then the pooling;
    backward through the pooling and ReLU in one pass, or for a first
    layer that ran fused, the pooling's gradient as it is."""

    @classmethod
    def make(cls, conv, relu, pool, shape, dtype, first):
        watched, arrays = [], []
        checked = _conv_relu(conv, relu, shape, dtype, first, watched, arrays)
        if checked is None or _gradient_flag(pool, False, watched) is None:
            return None
        flag, weight, bias, geometry = checked
        names = ("kernel_size", "stride", "padding", "ceil_mode", "dilation")
        pool_arguments = tuple(getattr(pool, name) for name in names)
        watched += [(pool, name, value) for name, value in zip(names, pool_arguments)]
        if not (all(_ints(a) for a in pool_arguments[:3] + pool_arguments[4:])
                and type(pool_arguments[3]) is bool):
            return None
        # The choice Convolution.forward makes once its checks are
        # remembered; else the pooling's own geometry on the full output.
        pooled = _conv_pool.pool_geometry(geometry, *pool_arguments)
        pool_geometry = pooled or _pool.pool_geometry(geometry.output_shape, *pool_arguments)
        return cls((conv, relu, pool), watched, arrays, geometry, pool_geometry,
                   pooled is not None, dtype, flag, weight, bias)

    def __init__(self, layers, watched, arrays, geometry, pool_geometry, pooled, dtype,
                 input_gradient, weight, bias):
        super().__init__(layers, watched, arrays, geometry, dtype, input_gradient, weight, bias)
        self.pool_geometry, self.pooled = pool_geometry, pooled
        self.output_shape = pool_geometry.output_shape
        if pooled:
            self.run = _conv_pool._pass(geometry, pool_geometry, dtype, geometry.threads())
        # The first layer's weight gradient takes the pooling's gradient
        # unexpanded (see Container.backward).
        self.takes_pooled = pooled and input_gradient is False

    def forward(self, x):
        conv, relu, pool = self.layers
        weight, bias = self.weight, self.bias
        conv.input = conv._padded_input = x
        if self.pooled:
            out, saved = self.run(x, weight, bias)
            conv.output = None
            conv._output_shape = self.geometry.output_shape
            relu._kept = False
            relu.input = relu.output = None
            pool.input = pool._input4 = None
        else:
            full = _conv.conv2d_checked(x, weight, bias, self.geometry, relu=True)
            conv.output = relu.input = relu.output = pool.input = pool._input4 = full
            relu._kept = True
            out, saved = max_pool2d_saving_checked(full, self.pool_geometry)
        pool._had_batch = True
        pool.output, pool._saved = out, saved
        return out

    def backward(self, grad, learning_rate):
        saved = self.layers[2]._saved
        if self.takes_pooled:
            grad = PooledGradient(as_kernel_array(grad, saved.pooled.dtype), saved)
        else:
            grad = max_pool2d_backward_saved(grad, saved, through_relu=True)
        return self._convolution_backward(grad, learning_rate)


class _ConvRelu(_ConvStage):
    """Convolution -> ReLU (no pooling after them) as Container.forward
    runs them: the convolution storing its ReLU; backward through the
    ReLU's gradient, then the convolution's."""

    @classmethod
    def make(cls, conv, relu, shape, dtype, first):
        watched, arrays = [], []
        checked = _conv_relu(conv, relu, shape, dtype, first, watched, arrays)
        if checked is None:
            return None
        flag, weight, bias, geometry = checked
        return cls((conv, relu), watched, arrays, geometry, dtype, flag, weight, bias)

    def __init__(self, layers, watched, arrays, geometry, dtype, input_gradient, weight, bias):
        super().__init__(layers, watched, arrays, geometry, dtype, input_gradient, weight, bias)
        self.output_shape = geometry.output_shape

    def forward(self, x):
        conv, relu = self.layers
        conv.input = conv._padded_input = x
        out = _conv.conv2d_checked(x, self.weight, self.bias, self.geometry, relu=True)
        conv.output = relu.input = relu.output = out
        relu._kept = True
        return out

    def backward(self, grad, learning_rate):
        # ReLU.backward's gradient: max(x, 0) > 0 exactly where x > 0
        return self._convolution_backward(relu_gradient(grad, self.layers[1].input),
                                          learning_rate)


class _Flatten(_Stage):
    """Flatten: a view of its input, each sample as one row."""

    @classmethod
    def make(cls, layer, shape, dtype, first):
        watched = []
        flag = _gradient_flag(layer, first, watched)
        input_shape = layer.input_shape
        watched.append((layer, "input_shape", input_shape))
        if flag is None or len(shape) < 2 or (
                input_shape is not None and (shape == input_shape or shape[1:] != input_shape)):
            return None
        return cls((layer,), watched, [], shape, flag)

    def __init__(self, layers, watched, arrays, shape, input_gradient):
        super().__init__(layers, watched, arrays)
        self.shape = shape
        self.output_shape = (shape[0], math.prod(shape[1:]))
        self.input_gradient = input_gradient

    def forward(self, x):
        layer = self.layers[0]
        layer.input = x
        layer.output = x.reshape(self.output_shape)
        return layer.output

    def backward(self, grad, learning_rate):
        check_unused_learning_rate(learning_rate)
        return grad.reshape(self.shape) if self.input_gradient else None


class _Dense(_Stage):
    """Dense on a batch of rows."""

    @classmethod
    def make(cls, layer, shape, dtype, first):
        watched, arrays = [], []
        flag = _gradient_flag(layer, first, watched)
        input_size = layer.input_size
        watched.append((layer, "input_size", input_size))
        if flag is None or len(shape) != 2 or shape[1] != input_size:
            return None
        parameters = _parameters(layer, dtype, watched, arrays)
        if parameters is None or parameters[0].shape[1:] != (input_size,):
            return None
        return cls((layer,), watched, arrays, (shape[0], parameters[0].shape[0]), flag,
                   *parameters)

    def __init__(self, layers, watched, arrays, output_shape, input_gradient, weight, bias):
        super().__init__(layers, watched, arrays)
        self.output_shape = output_shape
        self.input_gradient = input_gradient
        self.weight, self.bias = weight, bias  # the arrays checked (see _ConvReluPool)

    def forward(self, x):
        layer = self.layers[0]
        layer.input = layer._input2 = x
        layer._layout = "batch"
        out = affine(x, self.weight, self.bias)
        layer.output = out
        return out

    def backward(self, grad, learning_rate):
        layer = self.layers[0]
        # The caller's gradient, checked as Dense.backward checks it.
        grad = as_layer_input(grad, layer.dtype, "output_gradient")
        check_gradient_shape(grad, self.output_shape, "Dense")
        grad_input = matmul(grad, self.weight) if self.input_gradient else None
        layer.weight.grad = matmul(grad.T, layer._input2)
        if layer.bias is not None:
            layer.bias.grad = sum_rows(grad)
        layer.apply_learning_rate(learning_rate)
        return grad_input
