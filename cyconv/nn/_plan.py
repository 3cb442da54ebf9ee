"""A container's planned pass: its layers' forward and backward for one
kind of input, with every check and route worked out once.

A training loop calls a model with inputs of one shape, dtype and layout
step after step, and every layer's checks then give the same answer every
time.  At batch 1 those checks, and the container's choice of which
layers run as one, cost three times the arithmetic.  So after a forward
pass through :meth:`Container.forward` (whose checks passed), the
container plans the next ones: for each group of layers it ran (a
Convolution, ReLU and MaxPooling as one; a Flatten; a Dense), a stage
that calls the kernels that pass chose, with the arrays and sizes it
found, and leaves every layer's attributes as the layer's own call would.

A plan holds only while what it was made for does: the same layers in
the same order, the same input kind, thread count and kernel choices,
and in each layer the same hyper-parameter objects, flags and parameter
arrays (the same objects, of the same shape, dtype and layout).  Each call
asks (:func:`_guards.unchanged`, compiled); anything else takes the
general pass, with its checks and errors, and plans again.  The backward
pass is planned too where the last forward was the plan's and no layer
ran on its own since (its cached input is the plan's); else the general
backward runs, reading the same layer attributes.

Only models made entirely of such groups are planned (LeNet- and
VGG-like stacks); a layer of any other kind keeps the general pass for
the whole container.  Results are bitwise those of the general pass: the
stages call the same kernels with the same arguments.
"""

import numpy as np

from .. import _conv, _conv_direct, _conv_pool, _pool, _runtime
from .._kernels import _guards
from .._matmul import matmul
from .._pool import PooledGradient, max_pool2d_backward_saved, max_pool2d_saving_checked
from .._threads import get_num_threads
from .activations import ReLU
from .conv import Convolution
from .dense import Dense
from .._validation import as_kernel_array
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
    batch its last forward pass, which completed in this thread, ran on;
    ``single``: the caller gave one sample), or None where it has layers
    no stage covers."""
    if not (container.fuse is True and x4.ndim >= 2 and x4.shape[0] > 0):
        return None
    groups = _groups(container.layers)
    # The last stage's output goes to the caller, never read again by a
    # fused pass (as Container.forward fuses), and only the Dense stage
    # checks the caller's gradient.
    if groups is None or groups[-1][0] is not _Dense:
        return None
    stages = []
    ran_as_one = set()
    for stage_type, start, layers in groups:
        stage = stage_type.make(*layers)
        if stage is None:
            return None
        if getattr(stage, "pooled", False):
            ran_as_one.add(start + 2)
        stages.append(stage)
    return Plan(container, x4, single, stages, frozenset(ran_as_one))


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

    def __init__(self, container, x4, single, stages, ran_as_one):
        self.layers = list(container.layers)
        self.all_layers = tuple(self.layers)
        self.single = single
        self.stages = stages
        self.ran_as_one = ran_as_one
        self.threads = get_num_threads()
        self.choices = _runtime.choices()
        self.pairs_isa = _pool.PAIRS_ISA
        self.weight_constants = _weight_constants()
        self.watched = _watched(w for stage in stages for w in stage.watched())
        self.arrays = tuple((array, array_kind(array)) for stage in stages
                            for array in stage.arrays())

    def holds(self, container):
        """Whether the plan still fits ``container``'s layers and settings."""
        return (container.layers == self.layers and container.fuse is True
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



class _Stage:
    """What every stage has: its layers and their locks."""

    def __init__(self, *layers):
        self.layers = layers
        self.locks = tuple(_cache_lock(layer) for layer in layers)

    def _parameter_arrays(self, layer):
        return [p.value for p in (layer.weight, layer.bias) if p is not None]

    def _parameter_watched(self, layer):
        watched = [(layer, "weight", layer.weight), (layer, "bias", layer.bias),
                   (layer, "needs_input_gradient", layer.needs_input_gradient),
                   (layer, "dtype", layer.dtype)]
        watched += [(p, "value", p.value) for p in (layer.weight, layer.bias) if p is not None]
        return watched


class _ConvReluPool(_Stage):
    """Convolution -> ReLU -> MaxPooling as Container.forward runs them:
    one fused pass where it computed the pooled output itself
    (``pooled``), else the convolution storing its ReLU, then the pooling;
    backward through the pooling and ReLU in one pass, or for a first
    layer that ran fused, the pooling's gradient as it is."""

    @classmethod
    def make(cls, conv, relu, pool):
        # The choices Convolution.forward makes, once its checks are
        # remembered (so from its second call on).
        x = conv.input
        if (conv._border is not None or conv.needs_input_gradient not in (True, False)
                or not (relu.needs_input_gradient is True and pool.needs_input_gradient is True)
                or type(x) is not np.ndarray or x.ndim != 4
                or pool.__dict__.get("_saved") is None):
            return None
        geometry = conv._checked_geometry(x, conv.weight.value, conv.biases)
        if geometry is None:
            return None
        pooled = _conv_pool.pool_geometry(geometry, *pool._arguments())
        if pooled is not None:
            return cls(conv, relu, pool, geometry, pooled, True)
        # The pooling's own geometry, from its last pass (on this input).
        saved = pool._saved.geometry
        if saved.channels_shape + (saved.height, saved.width) != geometry.output_shape:
            return None
        return cls(conv, relu, pool, geometry, saved, False)

    def __init__(self, conv, relu, pool, geometry, pool_geometry, pooled):
        super().__init__(conv, relu, pool)
        self.geometry, self.pool_geometry, self.pooled = geometry, pool_geometry, pooled
        self.conv_arguments = conv._conv_arguments()
        self.pool_arguments = pool._arguments()
        dtype = conv.dtype
        self.no_bias = np.empty(0, dtype)
        if pooled:
            self.run = _conv_pool._pass(geometry, pool_geometry, dtype, geometry.threads())
        # The first layer's weight gradient takes the pooling's gradient
        # unexpanded (see Container.backward).
        self.takes_pooled = pooled and conv.needs_input_gradient is False
        # Both gradients' direct passes, where they take the direct kernels.
        self.passes = _conv_direct.backward_passes(geometry, dtype, geometry.threads(),
                                                   conv.needs_input_gradient)

    def watched(self):
        conv, relu, pool = self.layers
        return (self._parameter_watched(conv)
                + [(conv, name, getattr(conv, name))
                   for name in ("stride", "padding", "dilation", "groups", "_border")]
                + [(relu, "needs_input_gradient", True), (pool, "needs_input_gradient", True)]
                + [(pool, name, getattr(pool, name))
                   for name in ("kernel_size", "stride", "padding", "ceil_mode", "dilation")])

    def arrays(self):
        return self._parameter_arrays(self.layers[0])

    def forward(self, x):
        conv, relu, pool = self.layers
        weight = conv.weight.value
        bias = self.no_bias if conv.bias is None else conv.bias.value
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
        conv, relu, pool = self.layers
        saved = pool._saved
        if self.takes_pooled:
            grad = PooledGradient(as_kernel_array(grad, conv.dtype), saved)
        else:
            grad = max_pool2d_backward_saved(grad, saved, through_relu=True)
        x, weight = conv._padded_input, conv.weight.value
        gradients = None
        if self.passes is not None:
            gradients = _conv.direct_backward(self.passes, grad, x, weight,
                                              conv.needs_input_gradient)
        if gradients is None:
            gradients = _conv.conv2d_backward_checked(grad, x, weight, self.geometry,
                                                      conv.needs_input_gradient)
        grad_input, grad_weight, grad_bias = gradients
        conv.weight.grad = grad_weight
        if conv.bias is not None:
            conv.bias.grad = grad_bias
        conv.apply_learning_rate(learning_rate)
        return grad_input


class _Flatten(_Stage):
    """Flatten: a view of its input, each sample as one row."""

    @classmethod
    def make(cls, layer):
        x = layer.input
        if type(x) is not np.ndarray or not x.flags.c_contiguous:
            return None
        return cls(layer, x.shape)

    def __init__(self, layer, shape):
        super().__init__(layer)
        self.shape = shape
        self.rows = (shape[0], int(np.prod(shape[1:])))

    def watched(self):
        layer = self.layers[0]
        return [(layer, "needs_input_gradient", layer.needs_input_gradient),
                (layer, "input_shape", layer.input_shape)]

    def arrays(self):
        return []

    def forward(self, x):
        layer = self.layers[0]
        layer.input = x
        layer.output = x.reshape(self.rows)
        return layer.output

    def backward(self, grad, learning_rate):
        check_unused_learning_rate(learning_rate)
        if not self.layers[0].needs_input_gradient:
            return None
        return grad.reshape(self.shape)


class _Dense(_Stage):
    """Dense on a batch of rows."""

    @classmethod
    def make(cls, layer):
        if layer.__dict__.get("_layout") != "batch" or layer.needs_input_gradient not in (
                True, False):
            return None
        return cls(layer)

    def __init__(self, layer):
        super().__init__(layer)
        self.output_shape = layer.output.shape

    def watched(self):
        layer = self.layers[0]
        return self._parameter_watched(layer) + [(layer, "input_size", layer.input_size)]

    def arrays(self):
        return self._parameter_arrays(self.layers[0])

    def forward(self, x):
        layer = self.layers[0]
        layer.input = layer._input2 = x
        layer._layout = "batch"
        out = matmul(x, layer.weight.value.T)
        if layer.bias is not None:
            out += layer.bias.value
        layer.output = out
        return out

    def backward(self, grad, learning_rate):
        layer = self.layers[0]
        # The caller's gradient, checked as Dense.backward checks it.
        grad = as_layer_input(grad, layer.dtype, "output_gradient")
        check_gradient_shape(grad, self.output_shape, "Dense")
        grad_input = matmul(grad, layer.weight.value) if layer.needs_input_gradient else None
        layer.weight.grad = matmul(grad.T, layer._input2)
        if layer.bias is not None:
            layer.bias.grad = np.add.reduce(grad, axis=0)
        layer.apply_learning_rate(learning_rate)
        return grad_input
