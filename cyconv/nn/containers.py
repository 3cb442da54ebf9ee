"""Containers: :class:`Sequential` (a stack of layers with a training
loop, saved to and loaded from a versioned ``.npz`` file) and
:class:`Residual` (``input + body(input)``).  Both are layers, so they nest.

The training loop lives in :mod:`cyconv.nn.training`, the file format in
:mod:`cyconv.nn.serialization`; this module is the network itself."""

import functools
import itertools
import math
import threading

import numpy as np

from .. import _memory
from .._validation import as_array, as_shape, float_dtype
from . import _plan, training
from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .conv import Convolution
from .dense import Dense
from .dropout import Dropout
from .layer import Layer, array_kind, as_float_input, call_guarded
from .normalization import BatchNormalization
from .pooling import AveragePooling, GlobalAveragePooling, MaxPooling
from .reshape import Flatten, Reshape

__all__ = ["Container", "Sequential", "Residual"]

# Containers nested deeper than this are refused: every walk over a model
# is a loop, but a file or a program that nests thousands of levels is a
# mistake or an attack, and its error should say so.
MAX_NESTING = 64
# More layers than this in one container is no network anyone trains.
MAX_LAYERS = 100_000


def _checked_layers(layers, owner):
    try:
        layers = list(itertools.islice(iter(layers), MAX_LAYERS + 1))
    except TypeError:
        raise TypeError(f"{owner} takes a list of layers, got {layers!r}") from None
    if not layers:
        raise ValueError(f"{owner} needs at least one layer")
    if len(layers) > MAX_LAYERS:
        raise ValueError(f"{owner} takes at most {MAX_LAYERS} layers")
    for index, layer in enumerate(layers):
        if not (callable(getattr(layer, "forward", None))
                and callable(getattr(layer, "backward", None))):
            raise TypeError(f"layer {index} ({layer!r}) has no forward and backward methods")
        if not isinstance(layer, Layer):
            raise TypeError(f"layer {index} ({type(layer).__name__}) is not a cyconv.Layer: "
                            f"subclass cyconv.Layer")
    seen = {}
    for index, layer in enumerate(layers):
        for member in _walk(layer):
            if id(member) in seen:
                raise ValueError(
                    f"layer {index} of {owner} holds {type(member).__name__} object that is "
                    f"already in the model (layer {seen[id(member)]}): a layer keeps one "
                    f"forward cache, so it can appear only once")
            seen[id(member)] = index
    return layers


def _walk(layer):
    """The layer and every layer inside it, without recursion."""
    pending = [layer]
    while pending:
        current = pending.pop()
        yield current
        pending.extend(current.children())


def _container_pass(method):
    # A container's forward or backward.  A container keeps no forward cache
    # of its own (its layers do, each under its own lock), so it takes no
    # cache guard: concurrent predictions on one model still run in parallel
    # through layers without weights.  It puts the memory cache in place
    # once for the whole pass, so that each layer's guard finds it there
    # (see _memory.enter).
    @functools.wraps(method)
    def in_memory_cache(self, *args, **kwargs):
        previous = _memory.enter()
        try:
            return method(self, *args, **kwargs)
        finally:
            _memory.leave(previous)

    in_memory_cache._cache_guarded = True
    return in_memory_cache


def _stores_relu(first, second):
    # Layers whose forward takes _relu=True; exact types: a subclass may
    # compute something else.
    return type(first) in (Convolution, BatchNormalization) and type(second) is ReLU


def _conv_relu_max_pool(conv, relu, pool):
    # Exact types, as _stores_relu; and only where the backward pass will
    # run the ReLU and pooling's gradients as one (_relu_then_max_pool),
    # for the ReLU's own backward needs the output the three never make.
    return (type(conv) is Convolution and type(relu) is ReLU and type(pool) is MaxPooling
            and relu.needs_input_gradient and pool.needs_input_gradient)


def _relu_then_max_pool(relu, pool):
    # Only where the pooling's last input is the ReLU's last output (a
    # layer called on its own in between would break the chain), the
    # ReLU's gradient is wanted at all, and its forward completed in this
    # thread (else its own backward raises, and so must the pair's).
    return (type(relu) is ReLU and type(pool) is MaxPooling and relu.needs_input_gradient
            and pool.needs_input_gradient and pool.input is relu.output
            and relu.__dict__.get("_cache_thread") == threading.get_ident())


def _still_as_one(relu, pool):
    # A ReLU and pooling that ran as one with the convolution before them
    # (their shared input never computed), neither run alone since.
    return relu.output is None and pool.input is None and pool.output is not None


def _takes_pooled_gradient(conv, pool):
    # The first layer of a model (no input gradient) that ran as one with
    # its ReLU and MaxPooling (see _conv_relu_max_pool), whose pooling kept
    # codes: its backward takes the pooling's gradient unexpanded.
    return (type(conv) is Convolution and conv.needs_input_gradient is False
            and pool.__dict__.get("_saved") is not None and pool._saved.codes is not None)


# Layers that read their input and return a new array, never changing the
# input; and layers that may return (a view of) their input itself.
_NEW_ARRAY = (Convolution, BatchNormalization, Dense, MaxPooling, AveragePooling,
              GlobalAveragePooling, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax)
_SAME_DATA = (Flatten, Reshape, Dropout)


def _only_read_from(layers, start):
    """Whether what ``layers[start]`` is given stays unchanged until the
    backward pass: it goes to cyconv layers that only read it, not to the
    caller or to a layer of the caller's own (which may change it in place).
    A fused pair's backward reads the output it gave (the ReLU's mask),
    where the layers alone read arrays kept to themselves."""
    for layer in layers[start:]:
        if type(layer) in _NEW_ARRAY:
            return True
        if type(layer) in (Sequential, Residual):
            return _only_read_from(layer.layers, 0)
        if type(layer) not in _SAME_DATA:
            return False
    return False


class Container(Layer):
    """A layer made of layers, applied one after another.

    Parameters and buffers are those of its layers, in order; ``train`` and
    ``eval`` reach them all; ``needs_input_gradient`` is its first layer's.
    Subclasses (:class:`Sequential`, :class:`Residual`) are saved with their
    layers' configurations nested in theirs.

    Where one layer's output feeds the next, some pairs run as one, with
    the same results to the last bit and less memory traffic: a
    :class:`Convolution` or :class:`BatchNormalization` followed by a
    :class:`ReLU` applies the ReLU as it stores its output (its ``output``
    attribute then holds the ReLU's output, as does the ReLU's); a
    :class:`MaxPooling` after a ReLU applies the ReLU's gradient in its own
    backward pass.  A pair is fused only where its output goes on to cyconv
    layers that merely read it (a fused pair's backward reads the output it
    gave, which must not change meanwhile), so never at the end of a
    container.  Set ``fuse = False`` on a container to run every layer on
    its own.

    A Convolution, ReLU and ``MaxPooling(2)`` in a row go further where the
    convolution runs on the direct kernels (stride 1, from its second call
    on, when its checks are remembered; the filter-blocked ones with
    AVX-512 or AVX2): the convolution computes the pooled output in one pass, never
    the full output in between.  The pooling then keeps what its own forward pass
    keeps; the convolution's and the ReLU's ``output`` (the ReLU's and the
    pooling's ``input``), never computed, are None, and the ReLU's own
    ``backward`` raises RuntimeError until it runs forward again: the
    container's backward pass applies its gradient through the pooling,
    as it does after a copy or pickle of the container, or with ``fuse``
    changed, in between.  Set ``fuse = False`` to keep every layer's
    output.  Where such a triple opens the container (no input gradient
    wanted), the backward pass hands the pooling's gradient to the
    convolution unexpanded, for the weight-gradient kernels that expand it
    as they copy it (the wide ones; the filter-blocked ones on AVX-512; see
    :class:`~cyconv._pool.PooledGradient`).

    A container made of such triples, Convolution -> ReLU pairs,
    :class:`Flatten` and :class:`Dense` layers (ending with a Dense) plans
    its passes: from the second call with inputs of one shape, dtype and
    layout, its forward and backward run the kernels the checked pass
    chose, without checking and choosing again at every layer, and leave
    every layer's attributes as the layers' own calls would, with the same
    results to the last bit (at batch 1, a LeNet
    training step takes about 0.6 of the time).  Anything changed since (a
    parameter array replaced, a hyper-parameter assigned, the thread count)
    takes the checked pass again, with its errors; so does a backward after
    any of the layers ran on its own.  Set ``plan_passes = False`` to check
    every call.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple of ints, optional
        The shape of one input sample; by default the first layer's
        ``input_shape`` when it has one.  When known, the container builds
        its layers at once (see :meth:`build`).
    """

    # Whether adjacent layers may run as one (see the class notes).
    fuse = True
    # Whether repeated forward passes may take a planned pass (see the
    # class notes).
    plan_passes = True

    def __init__(self, layers, input_shape=None):
        self.layers = _checked_layers(layers, type(self).__name__)
        self._nesting = 1 + max(getattr(layer, "_nesting", 0) for layer in self.layers)
        if self._nesting > MAX_NESTING:
            raise ValueError(f"containers nest {self._nesting} deep; at most {MAX_NESTING} "
                             f"levels are allowed")
        super().__init__()
        if input_shape is None:
            input_shape = getattr(self.layers[0], "input_shape", None)
        self.input_shape = None if input_shape is None else as_shape(input_shape, "input_shape")
        self.output_shapes = [None] * len(self.layers)
        self.build(self.input_shape)

    def __repr__(self):
        inner = ",\n".join(f"    {layer!r}" for layer in self.layers)
        return f"{type(self).__name__}([\n{inner},\n])"

    # -- the protocol -------------------------------------------------------

    def children(self):
        return list(self.layers)

    def parameters(self):
        """Every layer's trainable parameters, in order."""
        return [p for layer in self.layers for p in layer.parameters()]

    def buffers(self):
        """Every layer's buffers, in order."""
        return [b for layer in self.layers for b in layer.buffers()]

    @property
    def needs_input_gradient(self):
        return self.layers[0].needs_input_gradient

    @needs_input_gradient.setter
    def needs_input_gradient(self, value):
        self.layers[0].needs_input_gradient = value
        for layer in self.layers[1:]:
            layer.needs_input_gradient = True

    @property
    def built(self):
        return all(layer.built for layer in self.layers)

    def build(self, input_shape):
        """Build every layer in turn from the shape of one input sample
        (None if unknown) and return the shape of one output sample.

        Layers created without their input sizes get them here; a layer
        that cannot take the shape its predecessor gives raises ValueError
        naming both.
        """
        if input_shape is not None:
            input_shape = tuple(input_shape)
            if self.input_shape is not None and input_shape != self.input_shape:
                raise ValueError(f"{type(self).__name__} expects samples of shape "
                                 f"{self.input_shape}, got {input_shape}")
            self.input_shape = input_shape
        shape = self.input_shape
        for index, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape)
            except (ValueError, TypeError) as exc:
                if type(exc) not in (ValueError, TypeError):
                    raise  # a subclass may not take a plain message
                raise type(exc)(f"layer {index} ({type(layer).__name__}) of "
                                f"{type(self).__name__}: {exc}") from None
            shape = None if shape is None else tuple(shape)
            self.output_shapes[index] = shape
        self.output_shape = shape
        return shape

    def _replace_layers(self, layers):
        """Put ``layers`` in place of the container's own (checked as the
        constructor checks them) and build them for its input shape; the
        first layer takes over ``needs_input_gradient``.  What the last
        forward pass cached refers to the old layers: it is dropped."""
        wants_input_gradient = self.needs_input_gradient
        self.layers = _checked_layers(layers, type(self).__name__)
        self.output_shapes = [None] * len(self.layers)
        self.build(self.input_shape)
        self.needs_input_gradient = wants_input_gradient
        for name in ("_ran_as_one", "_single", "_plans", "_planned_pass"):
            self.__dict__.pop(name, None)

    def __getstate__(self):
        # A plan refers to these very layers and holds functions: a copy or
        # pickle plans anew.
        state = super().__getstate__()
        state.pop("_plans", None)
        state.pop("_planned_pass", None)
        return state

    def get_config(self):
        """``{"layers": [{"type": name, "config": {...}}, ...]}``: each layer's
        type name and configuration, nested for containers."""
        return {"layers": [{"type": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    # -- the network ------------------------------------------------------

    @property
    def dtype(self):
        """The dtype of the parameters (None when there are none)."""
        # The first parameter's, found without listing them all: every
        # forward asks.
        for layer in self.layers:
            for parameter in layer.parameters():
                return parameter.value.dtype
        return None

    def _input_array(self, x, name="x"):
        """``x`` in the dtype the model computes in: its parameters', or
        without parameters, the package's dtype policy."""
        array = as_array(x, name)
        policy = float_dtype(array, name)
        return np.asarray(array, dtype=self.dtype or policy)

    def _is_single_sample(self, x):
        return self.input_shape is not None and x.ndim == len(self.input_shape)

    def _require_built_layers(self):
        for index, layer in enumerate(self.layers):
            if not layer.built:
                raise RuntimeError(
                    f"layer {index} ({type(layer).__name__}) of {type(self).__name__} was "
                    f"created without its input size and cannot be built: give the model "
                    f"its input shape, Sequential(layers, input_shape=(C, H, W)), or the "
                    f"layer its own")

    @_container_pass
    def forward(self, input):
        """Run every layer's ``forward``; a single sample gets a single output."""
        plans = self.__dict__.get("_plans")
        plan = plans.get(array_kind(input)) if plans else None
        if plan is not None and plan.holds(self):
            out = plan.forward(self, input)
            self._planned_pass = plan
            return out
        self._planned_pass = None
        self._require_built_layers()
        x = self._input_array(input, "input")
        training.check_input_shape(self, x, "input")
        single = self._is_single_sample(x)
        self._single = single
        out = x4 = x[np.newaxis] if single else x
        layers = self.layers
        # The poolings that ran as one with the Convolution and ReLU before
        # them: backward must run their gradients as one too, whatever
        # ``fuse`` says by then (their ReLU kept no input to run alone on).
        ran_as_one = self._ran_as_one = set()
        i = 0
        while i < len(layers):
            if (self.fuse and i + 2 < len(layers) and _conv_relu_max_pool(*layers[i:i + 3])
                    and _only_read_from(layers, i + 3)):
                # Where it is exact and faster, the convolution computes the
                # pooled output itself; else the pair, then the pooling.
                conv, relu, pool = layers[i:i + 3]
                out, pooled = conv.forward(out, _relu=True, _max_pool=pool._arguments())
                relu.forward(out, _applied=True, _kept=pooled is None)
                if pooled is None:
                    out = pool.forward(out)
                else:
                    out = pool.forward(None, _pooled=pooled)
                    ran_as_one.add(i + 2)
                i += 3
            elif (self.fuse and i + 1 < len(layers) and _stores_relu(layers[i], layers[i + 1])
                    and _only_read_from(layers, i + 2)):
                # One pass over the convolution's output rather than two.
                out = layers[i + 1].forward(layers[i].forward(out, _relu=True), _applied=True)
                i += 2
            else:
                out = layers[i].forward(out)
                i += 1
        # The next calls with inputs like this one take a planned pass,
        # where the layers allow one (see _plan).
        if self.plan_passes is True:
            _plan.keep(self, x4, single)
        return out[0] if single else out

    @_container_pass
    def backward(self, output_gradient, learning_rate=None):
        """Run every layer's ``backward`` in reverse (see :meth:`Layer.backward`).

        Returns the gradient with respect to the input, or None when
        ``needs_input_gradient`` is False (a top-level model's first layer).
        """
        grad = as_float_input(output_gradient, "output_gradient")
        plan = self.__dict__.get("_planned_pass")
        if plan is not None and plan.ran_last(self):
            return plan.backward(grad, learning_rate)
        single = getattr(self, "_single", False)
        grad = grad[np.newaxis] if single else grad
        layers = self.layers
        ran_as_one = self.__dict__.get("_ran_as_one", ())
        i = len(layers) - 1
        while i >= 0:
            if (i in ran_as_one and _still_as_one(layers[i - 1], layers[i])
                    and _takes_pooled_gradient(layers[i - 2], layers[i])):
                # The pooling's gradient goes to the convolution as it is:
                # its weight gradient's kernels expand it in cache.
                pooled = call_guarded(layers[i], MaxPooling._pooled_gradient, grad)
                grad = layers[i - 2].backward(pooled, learning_rate)
                i -= 3
            elif ((i in ran_as_one and _still_as_one(layers[i - 1], layers[i]))
                    or (self.fuse and i > 0 and _relu_then_max_pool(layers[i - 1], layers[i])
                        and _only_read_from(layers, i + 1))):
                # ReLU's gradient applied as the pooling scatters its own.
                grad = call_guarded(layers[i], MaxPooling._input_gradient_through_relu, grad)
                i -= 2
            else:
                grad = layers[i].backward(grad, learning_rate)
                i -= 1
        return grad[0] if single and grad is not None else grad


class Sequential(Container):
    """Layers applied one after another, with a training loop.

    Parameters
    ----------
    layers : list of Layer
        The first layer's ``needs_input_gradient`` is set to False: no one
        needs the gradient with respect to the model's input, and skipping
        it saves a convolution's most expensive backward product.
    input_shape : tuple of ints, optional
        The shape of one input sample, e.g. ``(C, H, W)``; by default the
        first layer's ``input_shape``.  When it is known, layers created
        without their input sizes (``Convolution(kernel_size=3, depth=8)``,
        ``Dense(output_size=10)``) get them from their predecessors, and
        layers whose sizes do not fit are refused at once.

    Examples
    --------
    Train a small classifier of 4 x 4 images: is the bright pixel on the
    left or the right?

    >>> import numpy as np
    >>> from cyconv import Sequential, Convolution, ReLU, Flatten, Dense
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((64, 1, 4, 4)) * 0.1
    >>> y = rng.integers(0, 2, 64)
    >>> x[np.arange(64), 0, rng.integers(0, 4, 64), 3 * y] = 1.0
    >>> model = Sequential([
    ...     Convolution((1, 4, 4), 3, 4, padding=1, rng=rng), ReLU(),
    ...     Flatten(), Dense(64, 2, rng=rng),
    ... ])
    >>> history = model.fit(x, y, epochs=20, batch_size=16, loss="softmax_cross_entropy",
    ...                     optimizer="adam", seed=0, verbose=False)
    >>> history["accuracy"][-1]
    1.0
    >>> model.predict(x[:3]).shape
    (3, 2)

    The same network with its sizes inferred:

    >>> model = Sequential([Convolution(kernel_size=3, depth=4, padding=1), ReLU(),
    ...                     Flatten(), Dense(output_size=2)], input_shape=(1, 4, 4))
    >>> print(model.summary())
    Layer          Output shape  Parameters
    ---------------------------------------
    0 Convolution  (4, 4, 4)             40
    1 ReLU         (4, 4, 4)              0
    2 Flatten      (64,)                  0
    3 Dense        (2,)                 130
    ---------------------------------------
    Total                               170
    """

    def __init__(self, layers, input_shape=None):
        super().__init__(layers, input_shape)
        self.needs_input_gradient = False
        self.train()  # a new model trains, as in PyTorch
        # What fit remembers (see fit's Notes); saved with the model.
        self.loss = None
        self.optimizer = None
        self.seed = None
        self.epoch = 0
        self.shuffle_state = None
        self.stop_training = False

    def get_config(self):
        return dict(super().get_config(), input_shape=(
            None if self.input_shape is None else list(self.input_shape)))

    def summary(self):
        """Return a table of the layers (nested ones indented): each one's
        output shape, its trainable parameter count, and the total; a
        column of buffer values appears when the model has buffers.

        Output shapes are known once the model's input shape is (``?``
        otherwise).
        """
        return _summary(self)

    # -- training and inference --------------------------------------------

    def fit(self, x, y, epochs=1, batch_size=32, loss="softmax_cross_entropy",
            optimizer="adam", validation_data=None, shuffle=True, seed=None, verbose=True,
            augment=None, learning_rate_schedule=None, validation_split=0.0, callbacks=None,
            initial_epoch=0, distributed=False, comm=None):
        """Train the model on ``(x, y)`` by mini-batch gradient descent.

        Parameters
        ----------
        x : array_like, shape (N, ...)
            Inputs, cast to the model's dtype.  Images go channels first,
            ``(N, C, H, W)``, scaled to [0, 1] (raw 0-255 pixels get a
            warning: see :func:`cyconv.datasets.prepare_images`).
        y : array_like, shape (N, ...)
            Targets, as the loss wants them (integer labels for
            ``"softmax_cross_entropy"``).
        epochs, batch_size : int
        loss : str or cyconv.losses.Loss, default "softmax_cross_entropy"
            ``"softmax_cross_entropy"`` (the last layer gives logits: a
            final Softmax layer is refused, since this loss applies softmax
            itself), ``"binary_cross_entropy"`` or ``"mse"``.
        optimizer : str or cyconv.optimizers.Optimizer, default "adam"
            ``"adam"``, ``"sgd"`` (default settings) or an instance.
        validation_data : tuple (x_val, y_val), optional
            Evaluated after every epoch (in eval mode).
        shuffle : bool, default True
            Visit the samples in a new random order every epoch.
        seed : int, optional
            Seed of the shuffling and augmentation.  With a seed (and layers built from a seeded ``rng``) training
            is reproducible bit for bit, whatever
            :func:`cyconv.set_num_threads` says.  Without one, a fresh seed
            is drawn and kept as ``model.seed``.
        verbose : {1, 2, 0} or bool, default True
            1 or True: a progress bar (stderr) and one line per epoch
            (stdout); 2: only the lines; 0 or False: silence.
        augment : callable, optional
            ``augment(x_batch, rng)`` returns a transformed training batch
            (see :class:`cyconv.datasets.RandomShift`); ``rng`` is the
            seeded Generator that also shuffles.
        learning_rate_schedule : callable, optional
            ``learning_rate_schedule(epoch)`` (from 0) gives the optimizer's
            learning rate for that epoch.
        validation_split : float in [0, 1), default 0
            Keep this fraction of the samples, the last ones (before any
            shuffling, as Keras does), aside for validation instead of
            ``validation_data``.
        callbacks : list of cyconv.nn.callbacks.Callback, optional
            Called as training goes (:class:`~cyconv.nn.callbacks.EarlyStopping`,
            :class:`~cyconv.nn.callbacks.ModelCheckpoint`, learning-rate
            schedules); one may stop training with
            ``model.stop_training = True``.
        initial_epoch : int, default 0
            The epoch to start at when resuming (``epochs`` still counts
            from the start, as in Keras).  When it is the epoch the model
            has reached (``model.epoch``, after fit or from a checkpoint
            saved with ``include_optimizer``), the random stream of
            shuffling and augmentation continues where it stopped
            (``model.shuffle_state``; ``seed`` is then not used), so that
            with the checkpoint's optimizer the epochs ``initial_epoch`` to
            ``epochs - 1`` are those an uninterrupted run would have made.
        distributed : bool, default False
            Data-parallel training over MPI (needs ``cyconv[mpi]``; launch
            with ``mpirun -n K python -m mpi4py script.py``): every rank
            passes the whole ``(x, y)``; ``batch_size`` is the global batch,
            of which each rank computes a slice; rank 0's weights, and its
            seed when ``seed`` is None, are shared at the start; gradients
            are averaged over the ranks before every step, and buffers
            after it; losses, accuracies and validation scores are over the
            whole data.  Only rank 0 prints.  Every rank ends with the same
            weights and buffers; without BatchNormalization or Dropout
            (whose batch statistics and masks are each rank's own), they
            are those a single process reaches on the same global batches,
            to rounding.  See :mod:`cyconv.distributed`.
        comm : mpi4py.MPI.Comm, optional
            The ranks that train together (default ``MPI.COMM_WORLD``).

        Notes
        -----
        Everything is checked before the first weight changes, the
        validation data and every target included.  The model remembers
        ``loss`` (the default of :meth:`evaluate`), ``optimizer``, ``seed``,
        ``epoch`` (epochs completed) and ``shuffle_state``; ``save(path,
        include_optimizer=True)`` keeps them all, so that training resumes
        exactly::

            model.save("checkpoint.npz", include_optimizer=True)
            model = Sequential.load("checkpoint.npz")
            model.fit(x, y, epochs=4, optimizer=model.optimizer,
                      initial_epoch=model.epoch)

        Returns
        -------
        history : dict of lists
            Per epoch: ``"loss"``, ``"accuracy"``, ``"seconds"``, and
            ``"val_loss"``, ``"val_accuracy"`` with validation data.
            Accuracies are None where the loss has no notion of class.
        """
        return training.fit(self, x, y, epochs, batch_size, loss, optimizer, validation_data,
                            shuffle, seed, verbose, augment, learning_rate_schedule,
                            validation_split, callbacks, initial_epoch,
                            distributed=distributed, comm=comm)

    def predict(self, x, batch_size=256):
        """Return the last layer's output for ``x`` (a batch or one sample).

        With a softmax cross-entropy model these are logits: ``argmax``
        gives the class, :class:`cyconv.Softmax` the probabilities.

        Examples
        --------
        >>> import numpy as np
        >>> from cyconv import Sequential, Dense, Softmax
        >>> model = Sequential([Dense(3, 2, rng=0), Softmax()])
        >>> model.predict(np.ones((5, 3))).shape
        (5, 2)
        >>> model.predict(np.ones(3)).shape   # one sample
        (2,)
        """
        return training.predict(self, x, batch_size)

    def evaluate(self, x, y, loss=None, batch_size=256, distributed=False, comm=None):
        """Return ``{"loss": float, "accuracy": float or None}`` on ``(x, y)``.

        ``loss`` defaults to the one the model was trained with (by
        :meth:`fit`, or saved with it), else softmax cross-entropy.

        With ``distributed=True`` (under MPI, as for :meth:`fit`), every
        rank passes the whole ``(x, y)``, scores its own slice of it, and
        gets the scores over the whole.

        Examples
        --------
        >>> import numpy as np
        >>> from cyconv import Sequential, Dense
        >>> model = Sequential([Dense(2, 2, dtype=np.float64)])
        >>> model.layers[0].weight.value[...] = np.eye(2)
        >>> model.evaluate(np.array([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]]), [0, 1, 1])["accuracy"]
        0.6666666666666666
        """
        return training.evaluate(self, x, y, loss, batch_size, distributed=distributed, comm=comm)

    # -- files --------------------------------------------------------------

    def save(self, path, include_optimizer=False):
        """Write the architecture and weights to ``path`` (an ``.npz`` file).

        The file is written beside its destination and renamed over it, so
        an interrupted save never leaves a half-written model behind.  A
        layer of your own is saved by its class name and ``get_config()``
        (see :meth:`load`); its parameters and buffers are saved with it.
        The loss the model was trained with is saved too.

        With ``include_optimizer`` (after :meth:`fit`), the file also keeps
        the optimizer (its settings and state: moments, step counts), the
        shuffling seed and random stream, and the epochs completed, which
        :meth:`load` gives back as ``model.optimizer``, ``model.seed`` and
        ``model.epoch``, so that training can resume exactly (see
        :meth:`fit`'s Notes).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from cyconv import Sequential, Dense, ReLU
        >>> model = Sequential([Dense(3, 2, rng=0), ReLU()])
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> model.save(path)
        >>> again = Sequential.load(path)
        >>> np.array_equal(again.layers[0].weights, model.layers[0].weights)
        True
        """
        from .serialization import save

        save(self, path, include_optimizer)

    @classmethod
    def load(cls, path, custom_layers=None):
        """Read a model written by :meth:`save`, in training mode.

        Parameters
        ----------
        path : str or path-like
        custom_layers : dict, optional
            ``{"Name": cls}`` for each of your own layer classes the model
            holds, rebuilt as ``cls(**config)``.  A file names its layers'
            types; only cyconv's layers and these are ever built.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is corrupt or truncated, not a cyconv model, of
            another format version, names a layer type that is neither
            cyconv's nor in ``custom_layers``, or its arrays do not fit its
            architecture (missing, extra, or of the wrong shape or dtype).
        """
        from .serialization import load

        return load(cls, path, custom_layers)

    # -- other formats (optional extras, imported on use) ---------------------

    def to_onnx(self, path, input_shape=None):
        """Write the model as an ONNX graph for onnxruntime and other runtimes.

        Needs ``pip install "cyconv[onnx]"``; see :mod:`cyconv.onnx` for the
        operators each layer becomes.  The graph computes :meth:`predict`'s
        outputs (eval mode), in float32, for any batch size.

        Examples
        --------
        >>> import os, tempfile
        >>> from cyconv import Sequential, Dense
        >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
        >>> Sequential([Dense(3, 2, rng=0)]).to_onnx(path)
        >>> os.path.getsize(path) > 0
        True
        """
        from ..onnx import export

        export(self, path, input_shape=input_shape)

    def load_weights(self, path):
        """Read weights saved from PyTorch (or :meth:`save_weights`) in a
        ``.safetensors`` file, by ``state_dict`` name: ``"<index>.weight"``
        and so on.  Needs ``pip install "cyconv[safetensors]"``; see
        :mod:`cyconv.weights`.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from cyconv import Sequential, Dense, ReLU
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> Sequential([Dense(3, 2, rng=0), ReLU()]).save_weights(path)
        >>> model = Sequential([Dense(3, 2, rng=1), ReLU()])
        >>> model.load_weights(path)
        >>> np.array_equal(model.layers[0].weights, Dense(3, 2, rng=0).weights)
        True
        """
        from ..weights import load_weights

        load_weights(self, path)

    def save_weights(self, path):
        """Write the weights to a ``.safetensors`` file that PyTorch's
        ``load_state_dict`` takes for the same ``nn.Sequential`` (see
        :meth:`load_weights`).

        Examples
        --------
        >>> import os, tempfile
        >>> from cyconv import Sequential, Dense, ReLU
        >>> from cyconv.weights import read_header
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> Sequential([Dense(3, 2, rng=0), ReLU(), Dense(2, 1, rng=0)]).save_weights(path)
        >>> sorted(read_header(path))
        ['0.bias', '0.weight', '2.bias', '2.weight']
        """
        from ..weights import save_weights

        save_weights(self, path)


class Residual(Container):
    """A residual block: ``input + body(input)``, the body being ``layers``
    applied in turn (its output must have its input's shape).

    Parameters
    ----------
    layers : list of Layer
        The body, available as the ``layers`` attribute.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import Convolution, ReLU, Residual, Sequential
    >>> block = Residual([Convolution(kernel_size=3, depth=2, padding=1, rng=0), ReLU()])
    >>> model = Sequential([block], input_shape=(2, 5, 5))
    >>> x = np.ones((1, 2, 5, 5), dtype=np.float32)
    >>> bool(np.all(model.predict(x) >= x))   # x + ReLU(...) >= x
    True
    >>> Sequential([Residual([Convolution(kernel_size=3, depth=2)])], input_shape=(2, 5, 5))
    Traceback (most recent call last):
    ...
    ValueError: layer 0 (Residual) of Sequential: Residual's body maps samples of shape (2, 5, 5) to (2, 3, 3); a residual block needs the same shape out as in
    """

    def build(self, input_shape):
        output_shape = super().build(input_shape)
        if self.input_shape is not None and output_shape is not None \
                and output_shape != self.input_shape:
            raise ValueError(f"Residual's body maps samples of shape {self.input_shape} to "
                             f"{output_shape}; a residual block needs the same shape out as in")
        self.output_shape = self.input_shape
        return self.input_shape

    @_container_pass
    def forward(self, input):
        self._require_built_layers()
        x = self._input_array(input, "input")
        body = super().forward(x)
        if body.shape != x.shape:
            raise ValueError(f"Residual's body maps an input of shape {x.shape} to {body.shape};"
                             f" a residual block needs the same shape out as in")
        return body + x.astype(body.dtype, copy=False)

    @_container_pass
    def backward(self, output_gradient, learning_rate=None):
        grad = as_float_input(output_gradient, "output_gradient")
        body = super().backward(grad, learning_rate)
        if body is None:
            return None
        return body + grad.astype(body.dtype, copy=False)


def _count(arrays):
    return sum(math.prod(a.value.shape) for a in arrays)


def _summary_rows(model):
    """(indented name, output shape, parameter count, buffer count) for each
    layer, each container followed by its own layers; a loop, not recursion."""
    rows = []
    stack = [(iter(enumerate(model.layers)), model, "", 0)]
    while stack:
        layers, container, prefix, depth = stack[-1]
        item = next(layers, None)
        if item is None:
            stack.pop()
            continue
        index, layer = item
        shape = container.output_shapes[index]
        rows.append(("  " * depth + f"{prefix}{index} {type(layer).__name__}",
                     "?" if shape is None else str(shape),
                     _count(layer.parameters()), _count(layer.buffers())))
        if isinstance(layer, Container):
            stack.append((iter(enumerate(layer.layers)), layer, f"{prefix}{index}.", depth + 1))
    return rows


def _summary(model):
    rows = _summary_rows(model)
    buffers = _count(model.buffers())
    header = ("Layer", "Output shape", "Parameters") + (("Buffers",) if buffers else ())
    total = ("Total", "", _count(model.parameters())) + ((buffers,) if buffers else ())
    table = [header] + [row[:len(header)] for row in rows] + [total]
    cells = [[f"{value:,}" if isinstance(value, int) else value for value in row]
             for row in table]
    # Two spaces between columns: names and shapes to the left, counts right.
    widths = [max(len(row[column]) for row in cells) + (2 if column else 0)
              for column in range(len(header))]

    def line(row):
        return "".join(cell.ljust(width) if column == 0 else
                       ("  " + cell).ljust(width) if column == 1 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths))).rstrip()

    rule = "-" * sum(widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:-1]]
                     + [rule, line(cells[-1])])
