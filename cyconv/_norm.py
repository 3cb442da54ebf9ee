"""Batch normalisation and its gradient: validation, running statistics and
output allocation around the compiled loops in ``_kernels/_batchnorm.pyx``."""

import numpy as np

from . import _runtime
from ._kernels import _batchnorm
from ._validation import (
    as_array,
    as_flag,
    as_float_arrays,
    as_real,
    check_ndim,
    check_nonempty,
    float_dtype,
)

_LAYOUT_X = "(N, C, H, W) or (N, C)"

MIN_ELEMENTS_PER_THREAD = _runtime.BATCHNORM_MIN_ELEMENTS_PER_THREAD


def _as_channels(x):
    """View a C-contiguous (N, C, H, W) or (N, C) array as (N, C, L)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _threads(x):
    """One thread per MIN_ELEMENTS_PER_THREAD elements, at most one per
    channel; each channel is one thread's, so the count changes no result."""
    return min(x.shape[1], _runtime.threads_for(x.size, MIN_ELEMENTS_PER_THREAD))


def _values_per_channel(x):
    return x.size // x.shape[1]


def _checked_inputs(x, gamma, beta, extra=()):
    """``x``, ``gamma``, ``beta`` (and ``extra`` ``(value, name)`` pairs
    shaped like x) in one float dtype, C-contiguous; a missing gamma is
    ones and a missing beta zeros, as in PyTorch."""
    named = [(x, "x")] + list(extra)
    named += [(value, name) for value, name in ((gamma, "gamma"), (beta, "beta"))
              if value is not None]
    arrays = dict(zip([name for _, name in named], as_float_arrays(*named)))
    x = arrays["x"]
    check_ndim(x, "x", (2, 4), _LAYOUT_X)
    check_nonempty(x, "x")
    channels = x.shape[1]
    for name in [name for _, name in extra]:
        if arrays[name].shape != x.shape:
            raise ValueError(f"{name} must have the shape of x, {x.shape}, "
                             f"got {arrays[name].shape}")
    for name, fill in (("gamma", 1), ("beta", 0)):
        if name not in arrays:
            arrays[name] = np.full(channels, fill, dtype=x.dtype)
        elif arrays[name].shape != (channels,):
            raise ValueError(f"{name} must have shape (C,) = ({channels},) for x of "
                             f"shape {x.shape}, got {arrays[name].shape}")
    return arrays


def _checked_running(running_mean, running_var, channels, training, updated):
    """Return the running statistics as float64 copies for the kernels,
    after checking that they can be read (and, when ``updated``, updated
    in place); None when neither is given in training mode."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together or not at all")
    if running_mean is None:
        if not training:
            raise ValueError("eval mode (training=False) normalises with running_mean and "
                             "running_var: both must be given")
        return None
    result = []
    for value, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        if updated:
            # Updated in place: only a float array of our own can be.
            if not isinstance(value, np.ndarray) or value.dtype not in (np.float32, np.float64):
                raise TypeError(f"{name} must be a float32 or float64 numpy array "
                                f"(it is updated in place in training mode), got {value!r}")
            if not value.flags.writeable:
                raise ValueError(f"{name} must be writeable: training mode updates it in place")
        array = as_array(value, name)
        float_dtype(array, name)  # raises TypeError for anything but real numbers
        if array.shape != (channels,):
            raise ValueError(f"{name} must have shape (C,) = ({channels},), got {array.shape}")
        result.append(np.array(array, dtype=np.float64))
    return result


def _check_batch(x):
    if _values_per_channel(x) < 2:
        raise ValueError(
            f"training mode needs more than 1 value per channel to estimate a "
            f"variance, got x of shape {x.shape}"
        )


def _batch_stats(x):
    """The per-channel mean and biased variance of a checked x, in float64."""
    mean = np.empty(x.shape[1])
    var = np.empty(x.shape[1])
    _batchnorm.batch_norm_stats(_as_channels(x), mean, var, _threads(x))
    return mean, var


def _update_running(running_mean, running_var, mean, var, momentum, count):
    """PyTorch's update, in place: the variance that enters the running
    estimate is the unbiased one."""
    running_mean[...] = (1 - momentum) * running_mean + momentum * mean
    running_var[...] = (1 - momentum) * running_var + momentum * (var * (count / (count - 1)))


def _inverse_std(var, eps):
    """``1 / sqrt(var + eps)``; a negative or zero running variance (the
    user's own) gives NaN or inf, as in PyTorch, without a warning."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 / np.sqrt(var + eps)


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                       relu=False):
    """:func:`batch_norm` that also returns the float64 ``(mean, invstd)``
    it normalised with, for :func:`batch_norm_backward_saved`; with
    ``relu``, the output is ``np.maximum(out, 0)``, applied as it is stored."""
    training = as_flag(training, "training")
    momentum = as_real(momentum, "momentum", maximum=1.0)
    eps = as_real(eps, "eps")
    arrays = _checked_inputs(x, gamma, beta)
    x = arrays["x"]
    running = _checked_running(running_mean, running_var, x.shape[1], training, training)
    if training:
        _check_batch(x)
        mean, var = _batch_stats(x)
        if running is not None:
            _update_running(running_mean, running_var, mean, var, momentum,
                            _values_per_channel(x))
    else:
        mean, var = running
    invstd = _inverse_std(var, eps)
    out = np.empty_like(x)
    _batchnorm.batch_norm_apply(_as_channels(x), mean, invstd, arrays["gamma"], arrays["beta"],
                                _as_channels(out), bool(relu), _threads(x))
    return out, mean, invstd


def batch_norm_backward_saved(grad_output, x, gamma, mean, invstd, training):
    """:func:`batch_norm_backward` from the ``(mean, invstd)`` that
    :func:`batch_norm_forward` returned for this same ``x``."""
    arrays = _checked_inputs(x, gamma, None, [(grad_output, "grad_output")])
    x = arrays["x"]
    channels = x.shape[1]
    grad_input = np.empty_like(x)
    grad_gamma = np.empty(channels, dtype=x.dtype)
    grad_beta = np.empty(channels, dtype=x.dtype)
    _batchnorm.batch_norm_backward(
        _as_channels(arrays["grad_output"]), _as_channels(x),
        np.ascontiguousarray(mean, dtype=np.float64),
        np.ascontiguousarray(invstd, dtype=np.float64),
        arrays["gamma"], _as_channels(grad_input), grad_gamma, grad_beta,
        bool(training), _threads(x),
    )
    return grad_input, grad_gamma, grad_beta


def batch_norm(x, gamma=None, beta=None, running_mean=None, running_var=None,
               training=True, momentum=0.1, eps=1e-5):
    """Batch normalisation over axis 1 (the channels or features).

    The semantics of ``torch.nn.functional.batch_norm`` (``weight`` and
    ``bias`` are ``gamma`` and ``beta`` here):
    ``out = (x - mean) / sqrt(var + eps) * gamma + beta`` per channel, where
    in training mode ``mean`` and ``var`` are the batch's own (over the
    batch and, for images, every pixel; the variance biased, divided by the
    count) and in eval mode the running estimates.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (N, C)
        Input batch.
    gamma, beta : array_like, shape (C,), optional
        Per-channel scale and shift; missing, ones and zeros.
    running_mean, running_var : ndarray, shape (C,), optional
        Running estimates of each channel's mean and variance, given
        together.  In training mode (float32 or float64 numpy arrays) they
        are updated in place,
        ``running = (1 - momentum) * running + momentum * batch_statistic``,
        with the batch's *unbiased* variance (divided by count - 1); in
        eval mode they are what ``x`` is normalised with, and required.
    training : bool, default True
        Normalise with the batch statistics (and update the running ones)
        rather than with the running statistics.
    momentum : float in [0, 1], default 0.1
        Weight of the batch statistic in the running update.
    eps : float >= 0, default 1e-5
        Added to the variance before its square root.

    Returns
    -------
    out : ndarray, shape of x
        float32 if x, gamma and beta are all float32 (or missing), else
        float64.

    Raises
    ------
    TypeError
        For non-real inputs, a non-bool ``training``, non-real ``momentum``
        or ``eps``, or in training mode running statistics that are not
        float numpy arrays.
    ValueError
        For x without 2 or 4 axes or with an empty axis, parameters or
        running statistics not of shape (C,), only one of the running
        statistics, eval mode without them, read-only running statistics
        in training mode, ``momentum`` outside [0, 1], negative or
        non-finite ``eps``, and in training mode a batch with a single
        value per channel (its variance is undefined; PyTorch refuses it
        too).

    Notes
    -----
    Each statistic is one pass over the channel, accumulated in float64 in
    a fixed order, so results are bitwise identical whatever the thread
    count.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import batch_norm
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> running_mean, running_var = np.zeros(2), np.ones(2)
    >>> batch_norm(x, None, None, running_mean, running_var, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> running_mean, running_var
    (array([0.2, 2. ]), array([ 1.1, 20.9]))
    >>> batch_norm(x, np.array([1.0, 2.0]), np.array([0.0, 5.0]),
    ...            np.zeros(2), np.full(2, 4.0), training=False, eps=0.0)
    array([[ 0.5, 15. ],
           [ 1.5, 35. ]])
    """
    return batch_norm_forward(x, gamma, beta, running_mean, running_var, training,
                              momentum, eps)[0]


def batch_norm_backward(grad_output, x, gamma=None, running_mean=None, running_var=None,
                        training=True, eps=1e-5):
    """Gradients of :func:`batch_norm` with respect to x, gamma and beta.

    Parameters
    ----------
    grad_output : array_like, shape of x
        Gradient of the loss with respect to ``batch_norm``'s output.
    x, gamma, running_mean, running_var, training, eps
        As given to :func:`batch_norm` (the running statistics as they were
        *before* a training-mode call updated them; they serve only in eval
        mode and are not changed here).

    Returns
    -------
    grad_input : ndarray, shape of x
    grad_gamma, grad_beta : ndarray, shape (C,)
        In training mode, with ``xhat = (x - mean) / sqrt(var + eps)`` for
        the batch's mean and biased variance over the M values of each
        channel: ``grad_beta = sum(g)``, ``grad_gamma = sum(g * xhat)`` and
        ``grad_input = gamma / sqrt(var + eps) * (g - grad_beta / M -
        xhat * grad_gamma / M)``.  In eval mode the map is affine:
        ``grad_input = gamma / sqrt(running_var + eps) * g``, with xhat from
        the running statistics.  float32 if every array input is, else
        float64.

    Raises
    ------
    TypeError, ValueError
        As :func:`batch_norm`, and ValueError for a ``grad_output`` not of
        the shape of x.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.functional import batch_norm_backward
    >>> x = np.array([[1.0], [3.0]])
    >>> grad_input, grad_gamma, grad_beta = batch_norm_backward(
    ...     np.array([[1.0], [0.0]]), x, eps=0.0)
    >>> grad_input, grad_gamma, grad_beta
    (array([[0.],
           [0.]]), array([-1.]), array([1.]))
    """
    training = as_flag(training, "training")
    eps = as_real(eps, "eps")
    arrays = _checked_inputs(x, gamma, None, [(grad_output, "grad_output")])
    x = arrays["x"]
    running = _checked_running(running_mean, running_var, x.shape[1], training, False)
    if training:
        _check_batch(x)
        mean, var = _batch_stats(x)
    else:
        mean, var = running
    return batch_norm_backward_saved(arrays["grad_output"], x, arrays["gamma"],
                                     mean, _inverse_std(var, eps), training)
