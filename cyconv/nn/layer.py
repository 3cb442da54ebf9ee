"""What every layer shares: the :class:`Layer` protocol, :class:`Parameter`,
and the argument checks the layer classes have in common."""

import functools
import numbers
import threading

import numpy as np

from .._validation import MAX_AXES, as_array, few_items, float_dtype

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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
    needs_input_gradient : bool
        When False, ``backward`` skips the input gradient and returns None.
        :class:`cyconv.Sequential` sets it on its first layer, whose input
        gradient nobody needs.
    input, output : ndarray or None
        The last forward pass's input and output.

    Notes
    -----
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
    A layer of your own needs only ``forward`` and ``backward``:

    >>> import numpy as np
    >>> from cyconv import Layer
    >>> class Double(Layer):
    ...     def forward(self, input):
    ...         self.input = np.asarray(input, dtype=float)
    ...         return 2 * self.input
    ...     def backward(self, output_gradient, learning_rate=None):
    ...         return 2 * np.asarray(output_gradient)
    >>> Double().forward([1.0, 2.0])
    array([2., 4.])
    """

    def __init__(self):
        self.input = None
        self.output = None
        self.needs_input_gradient = True

    def __getstate__(self):
        # Copies and pickles get a lock of their own, and no owner thread.
        state = self.__dict__.copy()
        for name in ("_cache_lock", "_cache_thread", "_cache_depth"):
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
            If given, also update the parameters by plain gradient descent.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def parameters(self):
        """Return the layer's trainable :class:`Parameter` objects (a list)."""
        return []

    def get_config(self):
        """Return the constructor arguments as a JSON-serialisable dict."""
        return {}

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    # -- helpers for subclasses -------------------------------------------

    def _require_forward(self):
        if self.input is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")

    def _descend(self, learning_rate):
        """Plain SGD step, the tutorial's ``param -= learning_rate * grad``."""
        if learning_rate is None:
            return
        rate = check_learning_rate(learning_rate)
        for parameter in self.parameters():
            parameter.value -= rate * parameter.grad


# The thread of the last forward that completed, per layer; this marks one
# that raised, leaving a cache that may be half rewritten.
_INCOMPLETE = "incomplete"


def _cache_lock(layer):
    # setdefault is atomic: two threads that both find no lock share one.
    return layer.__dict__.get("_cache_lock") or layer.__dict__.setdefault(
        "_cache_lock", threading.RLock())


def _guarded_forward(method):
    @functools.wraps(method)
    def forward(self, *args, **kwargs):
        state = self.__dict__
        with _cache_lock(self):
            # A subclass's forward may call its parent's: only the outermost
            # call marks the cache whole, and only if it returns.
            depth = state.get("_cache_depth", 0)
            state["_cache_depth"] = depth + 1
            state["_cache_thread"] = _INCOMPLETE
            try:
                result = method(self, *args, **kwargs)
            finally:
                state["_cache_depth"] = depth
            if depth == 0:
                state["_cache_thread"] = threading.get_ident()
            return result

    forward._cache_guarded = True
    return forward


def _guarded_backward(method):
    @functools.wraps(method)
    def backward(self, *args, **kwargs):
        with _cache_lock(self):
            owner = self.__dict__.get("_cache_thread")
            if owner == _INCOMPLETE:
                raise RuntimeError(
                    f"{type(self).__name__}.backward after a forward that raised: what it "
                    f"cached may be partly rewritten; run forward again first")
            if owner is not None and owner != threading.get_ident():
                raise RuntimeError(
                    f"{type(self).__name__}.backward in another thread than the forward "
                    f"it would differentiate: a layer keeps one forward cache, so give "
                    f"each training thread its own layers (see Layer's notes on threads)")
            return method(self, *args, **kwargs)

    backward._cache_guarded = True
    return backward


class WeightAndBias(Layer):
    """A layer whose parameters are ``weight`` and an optional ``bias``."""

    @property
    def biases(self):
        return None if self.bias is None else self.bias.value

    def parameters(self):
        return [self.weight] if self.bias is None else [self.weight, self.bias]



def check_learning_rate(learning_rate):
    if isinstance(learning_rate, (bool, np.bool_)) or not isinstance(learning_rate, numbers.Real):
        raise TypeError(f"learning_rate must be a real number, got {learning_rate!r}")
    rate = float(learning_rate)
    if not np.isfinite(rate) or rate < 0:
        raise ValueError(f"learning_rate must be finite and >= 0, got {learning_rate!r}")
    return rate


def check_unused_learning_rate(learning_rate):
    """A layer without parameters has nothing to update, but a learning rate
    it is given must still be one: a typo should fail in every layer alike."""
    if learning_rate is not None:
        check_learning_rate(learning_rate)


def check_dtype(dtype):
    """Return ``dtype`` as a numpy dtype, float32 or float64 only."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if resolved not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


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


def as_shape(value, name, ndim=None):
    """A tuple of positive ints, of length ``ndim`` when given."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    # numpy's limit on the number of axes bounds what is drawn from an
    # iterator.
    items = few_items(value, name, "a tuple of ints", MAX_AXES)
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
        if item < 1:
            raise ValueError(f"{name} must hold positive sizes, got {value!r}")
    if ndim is not None and len(items) != ndim:
        raise ValueError(f"{name} must have {ndim} entries, got {value!r}")
    if not items:
        raise ValueError(f"{name} must not be empty")
    return tuple(int(item) for item in items)


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


def he_normal(rng, shape, fan_in, dtype):
    """He initialisation, suited to ReLU: N(0, 2 / fan_in).

    Drawn in float64 and rounded, so float32 and float64 models built from
    one seed start from the same weights.
    """
    return (random_source(rng).standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
