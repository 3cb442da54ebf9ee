"""What every layer shares: the :class:`Layer` protocol, :class:`Parameter`,
:class:`Buffer`, and the argument checks the layer classes have in common.

The protocol, for whoever adds the next layer
---------------------------------------------
A layer subclasses :class:`Layer` and implements ``forward`` and
``backward`` (see :class:`Layer`).  Beyond those two:

``parameters()`` / ``buffers()``
    Its trainable :class:`Parameter` objects and its other saved state
    (:class:`Buffer`, e.g. a normalisation's running statistics), each a
    list in a fixed order, each name unique within the layer.  A model
    file stores both under these names, and loading *replaces* each
    ``.value`` with the file's array, so a layer must read its arrays
    through its Parameter/Buffer objects, never through a copy kept aside.
    Allocate initial values with :func:`initial_array` / :func:`he_normal`:
    while a model is loaded they return read-only placeholders that take no
    memory, so a file is checked before anything big is allocated.  Use
    them for parameter and buffer values only: any other array allocated
    with them would stay a read-only placeholder after loading.

``training``, ``train(mode)``, ``eval()``
    The mode; layers that behave differently in training (dropout, batch
    statistics) read ``self.training`` in ``forward``.  ``train`` reaches
    :meth:`Layer.children` too, so containers need nothing more.

``get_config()``
    JSON values that rebuild the layer as ``cls(**config)``: what makes it
    savable, a user's own layers included (loaded with
    ``Sequential.load(path, custom_layers={"Name": cls})``).

``build(input_shape)`` (shape inference)
    Called by a container, in order, with the shape of one input sample
    (no batch axis), or None when it is unknown; returns the shape of one
    output sample, or None when it cannot tell.  A layer whose sizes may be
    left out (``Convolution(kernel_size=3, depth=8)``, ``Dense(output_size=10)``,
    ``BatchNormalization()``) sets ``self.built = False`` in ``__init__``,
    keeps what it needs to initialise later (its ``rng``), and in
    ``build`` infers the sizes, allocates its parameters and sets
    ``self.built = True``; ``forward`` starts with ``self._require_built()``.
    Given None it stays unbuilt and returns None.  Called again, ``build``
    checks the shape against the one it was built for (ValueError if they
    differ).  Layers that keep the shape return ``input_shape``
    (:class:`ShapePreserving`); the default returns None (unknown), so the
    layers after a user's layer without ``build`` cannot infer their sizes.
"""

import contextlib
import functools
import numbers
import threading

import numpy as np

from .._kernels import _guards
from .._validation import as_array, as_flag, check_learning_rate, float_dtype
from .optimizers import descend
# The argument checks layers share live in _validation; these two are
# also reachable from here, beside the layer helpers.
from .._validation import as_shape, check_dtype  # noqa: F401

__all__ = ["Layer", "Parameter", "Buffer", "ShapePreserving", "initial_array", "he_normal"]


class Parameter:
    """A trainable array and the gradient of the loss with respect to it.

    Layers update ``value`` in place, so an optimizer or a test that holds a
    parameter always sees the array the layer computes with.

    Parameters
    ----------
    name : str
        What the array is within its layer (``"weight"``, ``"bias"``).
    value : ndarray
        The array itself.

    Attributes
    ----------
    grad : ndarray or None
        Set by the layer's ``backward``; None before the first one.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Parameter
    >>> p = Parameter("bias", np.zeros(3, dtype=np.float32))
    >>> p
    Parameter('bias', shape=(3,), dtype=float32)
    """

    __slots__ = ("name", "value", "grad")

    def __init__(self, name, value):
        self.name = name
        self.value = value
        self.grad = None

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"


class Buffer:
    """State of a layer that is saved with it but not trained: no gradient,
    no optimizer step (BatchNormalization's running statistics).

    Parameters
    ----------
    name : str
        What the array is within its layer (``"running_mean"``).
    value : ndarray
        The array itself; the layer updates it in place.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.nn import Buffer
    >>> Buffer("running_var", np.ones(4))
    Buffer('running_var', shape=(4,), dtype=float64)
    """

    __slots__ = ("name", "value")

    def __init__(self, name, value):
        self.name = name
        self.value = value

    def __repr__(self):
        return f"Buffer({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"


class Layer:
    """Base class of every layer: ``forward``, ``backward`` and ``parameters``.

    A layer maps a batch ``(N, ...)`` or a single sample to an output,
    remembering what its backward pass needs.  ``backward`` takes the gradient
    of the loss with respect to the output and returns the gradient with
    respect to the input.

    With a ``learning_rate``, ``backward`` also takes one plain gradient-descent
    step on the layer's parameters at once, as in the tutorial the API comes
    from; without one it only stores the gradients in ``parameter.grad`` for
    an optimizer (:class:`cyconv.SGD`, :class:`cyconv.Adam`) to apply.

    Attributes
    ----------
    training : bool
        True in training mode (the mode a layer starts in), False in
        evaluation mode; see :meth:`train` and :meth:`eval`.
    built : bool
        False while a layer created without its input size (shape
        inference) waits for :meth:`build`.
    needs_input_gradient : bool
        When False, ``backward`` skips the input gradient and returns None.
        :class:`cyconv.Sequential` sets it on its first layer, whose input
        gradient nobody needs.
    input, output : ndarray or None
        The last forward pass's input and output.

    Notes
    -----
    The module :mod:`cyconv.nn.layer` describes the whole protocol
    (buffers, modes, configuration, shape inference) for new layers.

    Threads.  A layer keeps what its last ``forward`` saw for ``backward``,
    so it has one such cache, not one per thread.  Calls on one layer are
    therefore taken one at a time (a lock per layer, which subclasses get
    too), and ``backward`` must run in the thread whose ``forward`` it
    differentiates: after another thread's ``forward``, or after a
    ``forward`` that raised, it raises RuntimeError rather than compute a
    gradient from someone else's input.  Concurrent ``forward`` calls (and
    ``Sequential.predict``) on a shared layer are safe; give each training
    thread a model of its own.

    Examples
    --------
    A layer of your own needs only ``forward`` and ``backward``; with
    ``get_config`` it is saved with the model too:

    >>> import numpy as np
    >>> from cyconv import Layer
    >>> class Scale(Layer):
    ...     def __init__(self, factor=2.0):
    ...         super().__init__()
    ...         self.factor = factor
    ...     def forward(self, input):
    ...         self.input = np.asarray(input, dtype=float)
    ...         return self.factor * self.input
    ...     def backward(self, output_gradient, learning_rate=None):
    ...         return self.factor * np.asarray(output_gradient)
    ...     def get_config(self):
    ...         return {"factor": self.factor}
    >>> Scale().forward([1.0, 2.0])
    array([2., 4.])
    >>> Scale(3.0).eval().training
    False
    """

    # Class-level defaults, for subclasses whose __init__ forgets super's.
    training = True
    built = True

    def __init__(self):
        self.input = None
        self.output = None
        self.needs_input_gradient = True
        self.training = True

    def __getstate__(self):
        # Copies and pickles get a lock of their own, no owner thread and
        # no mark of a container's planned pass.
        state = self.__dict__.copy()
        for name in ("_cache_lock", "_cache_thread", "_cache_depth", "_modes_lock",
                     "_modes_frames", "_planned"):
            state.pop(name, None)
        return state

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Every forward and backward, cyconv's and users' alike, goes
        # through the cache guard (see Notes).
        for name, guard in (("forward", _guarded_forward), ("backward", _guarded_backward)):
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_cache_guarded", False):
                setattr(cls, name, guard(method))

    def forward(self, input):
        """Return the layer's output for ``input``, a batch or one sample."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, output_gradient, learning_rate=None):
        """Return the gradient with respect to the last ``forward``'s input.

        Parameters
        ----------
        output_gradient : array_like
            Gradient of the loss with respect to the last output; same shape.
        learning_rate : float, optional
            If given, also update the parameters by plain gradient descent
            (:meth:`apply_learning_rate`).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def parameters(self):
        """Return the layer's trainable :class:`Parameter` objects (a list)."""
        return []

    def buffers(self):
        """Return the layer's saved, untrained state: :class:`Buffer` objects (a list)."""
        return []

    def children(self):
        """Return the layers this one contains (containers); [] for others."""
        return []

    def train(self, mode=True):
        """Put the layer (and its children) in training mode, or evaluation
        mode with ``mode=False``; return the layer."""
        mode = as_flag(mode, "mode")
        # A list, not recursion: a deep nest of containers must not
        # exhaust Python's stack.
        pending = [self]
        while pending:
            layer = pending.pop()
            layer.training = mode
            pending.extend(layer.children())
        return self

    def eval(self):
        """Put the layer (and its children) in evaluation mode; return the layer."""
        return self.train(False)

    def build(self, input_shape):
        """Finish the layer for samples of ``input_shape``; return the shape
        of one output sample, or None when it cannot tell.

        ``input_shape`` has no batch axis and is None when unknown.  See the
        module's notes on shape inference; this default knows nothing.
        """
        return None

    def get_config(self):
        """Return the constructor arguments as a JSON-serialisable dict."""
        return {}

    def apply_learning_rate(self, learning_rate):
        """Take the tutorial's plain SGD step, ``value -= learning_rate * grad``,
        on every parameter that has a gradient; do nothing for None.

        ``backward(output_gradient, learning_rate)`` ends with this call, so
        a layer of your own honours a learning rate as cyconv's do.

        Examples
        --------
        >>> import numpy as np
        >>> from cyconv import Dense
        >>> layer = Dense(2, 1, dtype=np.float64, rng=0)
        >>> layer.weight.value[...] = 1.0
        >>> layer.weight.grad = np.array([[0.5, -0.5]])
        >>> layer.bias.grad = np.array([1.0])
        >>> layer.apply_learning_rate(0.1)
        >>> layer.weight.value, layer.bias.value
        (array([[0.95, 1.05]]), array([-0.1]))
        """
        if learning_rate is None:
            return
        rate = check_learning_rate(learning_rate)
        for parameter in self.parameters():
            if parameter.grad is not None:
                descend(parameter.value, parameter.grad, rate)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    # -- helpers for subclasses -------------------------------------------

    def _require_forward(self):
        if self.input is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")

    def _require_built(self):
        if not self.built:
            raise RuntimeError(
                f"{type(self).__name__} was created without its input size and is not "
                f"built yet: put it in a Sequential whose input shape is known "
                f"(Sequential(layers, input_shape=...)) or call its build(input_shape)")

    # The name the layers used before apply_learning_rate was public.
    _descend = apply_learning_rate


# The thread of the last forward that completed, per layer; this marks one
# that raised, leaving a cache that may be half rewritten.
_INCOMPLETE = _guards.INCOMPLETE


def _cache_lock(layer):
    # setdefault is atomic: two threads that both find no lock share one.
    return layer.__dict__.get("_cache_lock") or layer.__dict__.setdefault(
        "_cache_lock", threading.RLock())


def _refuse_owner(layer, owner):
    if owner == _INCOMPLETE:
        raise RuntimeError(
            f"{type(layer).__name__}.backward after a forward that raised: what it "
            f"cached may be partly rewritten; run forward again first")
    raise RuntimeError(
        f"{type(layer).__name__}.backward in another thread than the forward "
        f"it would differentiate: a layer keeps one forward cache, so give "
        f"each training thread its own layers (see Layer's notes on threads)")


# The guards themselves are compiled (_kernels/_guards.pyx): they run
# around every layer call, and at batch 1 their bookkeeping in Python cost
# as much as a small layer's arithmetic.

#: Call ``method(layer, ...)``, a pass that reads what the last ``forward``
#: cached, under the guard ``backward`` runs under (see :class:`Layer`'s
#: notes on threads): ``call_guarded(layer, method, *args, **kwargs)``.
call_guarded = _guards.guarded_call(_cache_lock, _refuse_owner)
# What a layer's remembered checks of an array depend on (compiled too).
array_kind = _guards.array_kind


def _guarded_forward(method):
    forward = functools.wraps(method)(_guards.guarded_forward(method, _cache_lock))
    forward._cache_guarded = True
    return forward


def _guarded_backward(method):
    backward = functools.wraps(method)(_guards.guarded_backward(method, call_guarded))
    backward._cache_guarded = True
    return backward


class ShapePreserving(Layer):
    """A layer whose output sample has its input sample's shape
    (activations, dropout, normalisation): ``build`` returns the shape."""

    def build(self, input_shape):
        return input_shape


class WeightAndBias(Layer):
    """A layer whose parameters are ``weight`` (He-initialised) and an
    optional ``bias`` (zeros), allocated when the layer is built: at once
    when its sizes are given, or when a container infers them."""

    def _defer_parameters(self, bias, rng):
        self._has_bias = as_flag(bias, "bias")
        random_source(rng)  # refuses a bad rng now rather than when built
        self._rng = rng
        self.weight = self.bias = None
        self.built = False

    def _allocate_parameters(self, weight_shape, fan_in):
        self.weight = Parameter("weight", he_normal(self._rng, weight_shape, fan_in, self.dtype))
        self.bias = (Parameter("bias", initial_array(weight_shape[0], self.dtype))
                     if self._has_bias else None)
        self._rng = None  # drawn from: not kept alive, never drawn from twice
        self.built = True

    @property
    def biases(self):
        return None if self.bias is None else self.bias.value

    def parameters(self):
        return [p for p in (self.weight, self.bias) if p is not None]

def check_unused_learning_rate(learning_rate):
    """A layer without parameters has nothing to update, but a learning rate
    it is given must still be one: a typo should fail in every layer alike."""
    if learning_rate is not None:
        check_learning_rate(learning_rate)


def as_layer_input(value, dtype, name="input"):
    """``value`` as an array of the layer's ``dtype``, refusing non-real data."""
    array = as_array(value, name)
    float_dtype(array, name)  # raises TypeError for complex, object, float16
    return np.asarray(array, dtype=dtype)


def as_float_input(value, name="input"):
    """``value`` as a float32/float64 array under the package's dtype policy,
    for layers without parameters, which keep their input's precision."""
    array = as_array(value, name)
    return np.asarray(array, dtype=float_dtype(array, name))


def check_gradient_shape(gradient, expected, layer):
    if gradient.shape != tuple(expected):
        raise ValueError(
            f"{layer}.backward expects output_gradient of the output's shape "
            f"{tuple(expected)}, got {gradient.shape}"
        )


def random_source(rng):
    """What ``rng`` draws initial weights from.

    None is numpy's global random state, so that ``np.random.seed`` works as
    in the tutorial; an int or a Generator gives an independent stream.
    """
    if rng is None:
        return np.random.mtrand._rand
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {rng!r}")


# Set while a model file is being loaded (see placeholder_arrays).
_LOADING = threading.local()


@contextlib.contextmanager
def placeholder_arrays():
    """Within this block, layers get read-only placeholders that take no
    memory instead of initial parameter and buffer values.

    The model loader builds its layers in here: the file's arrays replace
    the placeholders once their shapes have been checked against the
    layers', so a file declaring a huge layer is refused before anything
    of that size is allocated, and no random weights are drawn only to be
    overwritten.
    """
    previous = getattr(_LOADING, "active", False)
    _LOADING.active = True
    try:
        yield
    finally:
        _LOADING.active = previous


def _placeholder(shape, dtype):
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def initial_array(shape, dtype, fill=0.0):
    """A new parameter or buffer value: ``shape`` filled with ``fill``.

    Examples
    --------
    >>> from cyconv.nn.layer import initial_array
    >>> initial_array((2,), "float32", 1.0)
    array([1., 1.], dtype=float32)
    """
    if getattr(_LOADING, "active", False):
        return _placeholder(shape, dtype)
    return np.full(shape, fill, dtype=dtype)


def he_normal(rng, shape, fan_in, dtype):
    """He initialisation, suited to ReLU: N(0, 2 / fan_in).

    Drawn in float64 and rounded, so float32 and float64 models built from
    one seed start from the same weights.  While a model is loaded, nothing
    is drawn (see :func:`placeholder_arrays`).

    Examples
    --------
    >>> from cyconv.nn.layer import he_normal
    >>> he_normal(0, (2, 3), 3, "float64").shape
    (2, 3)
    """
    source = random_source(rng)
    if getattr(_LOADING, "active", False):
        return _placeholder(shape, dtype)
    return (source.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
