"""``cyconv selftest`` and :func:`cyconv.test`: a short hypothesis run of the
installed compiled kernels against independent references (_reference.py:
scipy.signal, np.pad, numpy's sliding windows), so that a user can see that
the wheel computes right on this machine, as ``numpy.test()`` lets them.

Every public kernel in float32 and float64, through the code paths that
the shapes select (direct loops, shifted products for many channels,
tiled pooling), on this machine's thread count.  Backward passes are held
by adjoint identities: <f(x), g> = <x, f'(g)> for the linear ones.
"""

import math
import platform
import sys
import time

import numpy as np

from . import _reference as ref
from . import functional as F
from ._relu import relu_gradient
from ._threads import get_num_threads
from .signal import convolve2d, correlate2d

DTYPES = (np.float32, np.float64)
# Relative tolerances, on the scale of the terms summed (float32 sums of up
# to a few hundred products, computed in another order than the reference).
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}


def _hypothesis():
    try:
        import hypothesis
        from hypothesis import strategies
    except ImportError:
        raise ImportError("cyconv's self-test needs hypothesis: pip install 'cyconv[test]' "
                          "(or pip install hypothesis)") from None
    return hypothesis, strategies


def _close(actual, expected, scale, dtype, what):
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - expected), initial=0.0))
    bound = TOLERANCE[dtype] * (1.0 + float(np.max(scale, initial=0.0)))
    if not error <= bound:
        raise AssertionError(f"{what}: off by {error:.3g} (allowed {bound:.3g})")


def _adjoint(forward_value, g, x, backward_value, dtype, what):
    left = np.asarray(forward_value, np.float64) * g
    right = np.asarray(x, np.float64) * np.asarray(backward_value, np.float64)
    scale = np.sum(np.abs(left)) + np.sum(np.abs(right))
    difference = abs(np.sum(left) - np.sum(right))
    if not difference <= TOLERANCE[dtype] * (1.0 + scale):
        raise AssertionError(f"{what}: <f(x), g> - <x, f'(g)> = {difference:.3g} on a scale of "
                             f"{scale:.3g}")


def _strategies(st):
    from .testing import Conv2dConfig, Pool2dConfig, conv2d_configs, pool2d_configs

    @st.composite
    def many_channels(draw):
        """Stride 1 and 8 or more channels per group: the shifted products."""
        groups = draw(st.integers(1, 2))
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
        return Conv2dConfig(
            x_shape=(draw(st.integers(1, 2)), groups * draw(st.integers(8, 12)),
                     draw(st.integers(kh, kh + 6)), draw(st.integers(kw, kw + 6))),
            weight_shape=(groups * draw(st.integers(1, 4)), 0, kh, kw),
            stride=(1, 1), padding=padding, dilation=(1, 1), groups=groups)

    @st.composite
    def tiled(draw):
        """Kernel == stride, no padding: the tiled max pooling, narrow and wide."""
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        cols = draw(st.sampled_from([draw(st.integers(1, 20)), draw(st.integers(250, 270))]))
        return Pool2dConfig(
            x_shape=(1, draw(st.integers(1, 2)), kh * draw(st.integers(1, 6))
                     + draw(st.integers(0, kh - 1)), kw * cols + draw(st.integers(0, kw - 1))),
            kernel_size=(kh, kw), stride=(kh, kw), padding=(0, 0),
            ceil_mode=draw(st.booleans()))

    def fix_groups(config):
        # many_channels leaves the weight's channel count to fill in here.
        f, _, kh, kw = config.weight_shape
        if config.weight_shape[1]:
            return config
        return Conv2dConfig(config.x_shape, (f, config.x_shape[1] // config.groups, kh, kw),
                            config.stride, config.padding, config.dilation, config.groups)

    convs = st.one_of(conv2d_configs(max_batch=2), many_channels().map(fix_groups))
    pools = st.one_of(pool2d_configs(max_batch=2), tiled())
    return convs, pools


def _sides(config):
    """(ph, pw) of a conv config, "same" resolved as conv2d does (stride 1)."""
    if config.padding != "same":
        return config.padding
    _, _, kh, kw = config.weight_shape
    total = [d * (k - 1) for d, k in zip(config.dilation, (kh, kw))]
    if any(t % 2 for t in total):
        return None  # uneven "same" padding: left to the full test suite
    return tuple(t // 2 for t in total)


def _checks(st):
    convs, pools = _strategies(st)
    seeds = st.integers(0, 2**32 - 1)
    dtypes = st.sampled_from(DTYPES)

    def arrays(seed, dtype, *shapes):
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(shape).astype(dtype) for shape in shapes]

    def conv_forward(config, dtype, seed):
        padding = _sides(config)
        if padding is None:
            return
        x, w, b = arrays(seed, dtype, config.x_shape, config.weight_shape,
                         config.weight_shape[:1])
        out = F.conv2d(x, w, b, **config.kwargs)
        expected = ref.conv2d(x, w, b, config.stride, padding, config.dilation, config.groups)
        scale = ref.conv2d(np.abs(x), np.abs(w), np.abs(b), config.stride, padding,
                           config.dilation, config.groups)
        assert out.dtype == dtype and out.shape == expected.shape, (out.shape, expected.shape)
        _close(out, expected, scale, dtype, f"conv2d {config}")

    def conv_backward(config, dtype, seed):
        x, w = arrays(seed, dtype, config.x_shape, config.weight_shape)
        (g,) = arrays(seed + 1, dtype, config.output_shape)
        gx, gw, gb = F.conv2d_backward(g, x, w, **config.kwargs)
        _adjoint(F.conv2d(x, w, **config.kwargs), g, x, gx, dtype, f"conv2d input grad {config}")
        _adjoint(F.conv2d(x, w, **config.kwargs), g, w, gw, dtype,
                 f"conv2d weight grad {config}")
        _close(gb, g.astype(np.float64).sum(axis=(0, 2, 3)), np.abs(g).sum(axis=(0, 2, 3)),
               dtype, f"conv2d bias grad {config}")

    def max_pool(config, dtype, seed):
        # Few distinct values: tied maxima, whose gradient goes to the first.
        x = np.random.default_rng(seed).integers(-3, 4, config.x_shape).astype(dtype)
        (g,) = arrays(seed + 1, dtype, config.output_shape)
        args = (config.kernel_size, config.stride, config.padding, config.ceil_mode)
        _close(F.max_pool2d(x, **config.kwargs), ref.max_pool2d(x, *args), 0, dtype,
               f"max_pool2d {config}")
        _close(F.max_pool2d_backward(g, x, **config.kwargs),
               ref.max_pool2d_backward(g, x, *args), np.abs(g).sum(), dtype,
               f"max_pool2d_backward {config}")

    def avg_pool(config, dtype, seed):
        x, g = arrays(seed, dtype, config.x_shape, config.output_shape)
        for include in (True, False):
            kwargs = dict(config.kwargs, count_include_pad=include)
            out = F.avg_pool2d(x, **kwargs)
            expected = ref.avg_pool2d(x, config.kernel_size, config.stride, config.padding,
                                      config.ceil_mode, include)
            _close(out, expected, np.abs(x).max(), dtype, f"avg_pool2d {kwargs}")
            _adjoint(out, g, x, F.avg_pool2d_backward(g, x, **kwargs), dtype,
                     f"avg_pool2d_backward {kwargs}")

    @st.composite
    def pads(draw):
        mode = draw(st.sampled_from(["constant", "reflect", "symmetric", "edge", "wrap"]))
        h, w = draw(st.integers(2, 7)), draw(st.integers(2, 7))
        limit = {"reflect": (h - 1, w - 1), "symmetric": (h, w), "wrap": (h, w)}.get(mode,
                                                                                    (4, 4))
        sides = (draw(st.integers(0, limit[0])), draw(st.integers(0, limit[0])),
                 draw(st.integers(0, limit[1])), draw(st.integers(0, limit[1])))
        return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), sides, mode

    def pad(case, dtype, seed):
        shape, sides, mode = case
        (x,) = arrays(seed, dtype, shape)
        out = F.pad2d(x, sides, mode=mode)
        _close(out, ref.pad2d(x, sides, mode), 0, dtype, f"pad2d {mode} {sides}")
        (g,) = arrays(seed + 1, dtype, out.shape)
        _adjoint(out, g, x, F.pad2d_backward(g, sides, mode=mode), dtype,
                 f"pad2d_backward {mode} {sides}")

    @st.composite
    def planes(draw):
        shapes = [(draw(st.integers(1, 9)), draw(st.integers(1, 9))) for _ in range(2)]
        return (shapes, draw(st.sampled_from(["full", "valid", "same"])),
                draw(st.sampled_from(["fill", "wrap", "symm"])))

    def scipy_signal(case, dtype, seed):
        from scipy import signal

        shapes, mode, boundary = case
        if mode == "valid" and not all(a >= b for a, b in zip(*shapes)) \
                and not all(a <= b for a, b in zip(*shapes)):
            return  # scipy refuses these too
        a, b = arrays(seed, dtype, *shapes)
        scale = signal.correlate2d(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)),
                                   mode, boundary)
        for ours, theirs in ((correlate2d, signal.correlate2d),
                             (convolve2d, signal.convolve2d)):
            _close(ours(a, b, mode, boundary), theirs(a.astype(np.float64),
                   b.astype(np.float64), mode, boundary), scale, dtype,
                   f"{ours.__name__} {mode} {boundary}")

    def relu(shape_and_seed, dtype, seed):
        x, g = arrays(seed, dtype, shape_and_seed, shape_and_seed)
        x[..., ::3] = 0   # the gradient at 0 is 0
        out = relu_gradient(g, x)
        assert np.array_equal(out, ref.relu_gradient(g, x).astype(dtype))

    @st.composite
    def norms(draw):
        n, c = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        spatial = draw(st.sampled_from([(), (1, 2), (3, 4), (2, 2)]))
        if n * math.prod(spatial) < 2:
            n = 2   # a training batch needs two values per channel
        return (n, c) + spatial, draw(st.booleans())

    def batch_norm(case, dtype, seed):
        shape, training = case
        x, gamma, beta, g = arrays(seed, dtype, shape, shape[1:2], shape[1:2], shape)
        running_mean = np.random.default_rng(seed).standard_normal(shape[1]).astype(dtype)
        running_var = (1 + np.random.default_rng(seed + 1).random(shape[1])).astype(dtype)
        mean, var = (ref.batch_statistics(x) if training
                     else (running_mean.astype(np.float64), running_var.astype(np.float64)))
        before = running_mean.copy(), running_var.copy()
        what = f"batch_norm {shape} {'training' if training else 'eval'}"
        out = F.batch_norm(x, gamma, beta, running_mean, running_var, training=training,
                           momentum=0.1, eps=1e-5)
        expected = ref.batch_norm(x, gamma, beta, mean, var, 1e-5)
        _close(out, expected, np.abs(expected), dtype, what)
        if training:   # PyTorch's update, with the unbiased variance
            count = x.size // shape[1]
            _close(running_var, 0.9 * before[1] + 0.1 * var * count / (count - 1),
                   np.abs(before[1]) + var * count, dtype, f"{what}: running_var")
            _close(running_mean, 0.9 * before[0] + 0.1 * mean, np.abs(mean) + 1, dtype,
                   f"{what}: running_mean")
        grads = F.batch_norm_backward(g, x, gamma, *before, training=training, eps=1e-5)
        for name, ours, theirs in zip(("input", "gamma", "beta"), grads,
                                      ref.batch_norm_backward(g, x, gamma, mean, var, 1e-5,
                                                              training)):
            _close(ours, theirs, np.abs(theirs) + np.abs(g).sum() / np.sqrt(var.min() + 1e-5),
                   dtype, f"{what}: grad {name}")

    shapes = st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple)
    return [
        ("conv2d", "scipy.signal.correlate2d per plane, np.pad, strides and dilation",
         conv_forward, convs),
        ("conv2d_backward", "adjoint identities with conv2d; bias: sums", conv_backward, convs),
        ("max_pool2d and max_pool2d_backward", "numpy sliding windows; first maximum",
         max_pool, pools),
        ("avg_pool2d and avg_pool2d_backward", "numpy sliding windows; adjoint identity",
         avg_pool, pools),
        ("pad2d and pad2d_backward", "np.pad, every mode; adjoint identity", pad, pads()),
        ("correlate2d and convolve2d", "scipy.signal, every mode and boundary", scipy_signal,
         planes()),
        ("batch_norm and batch_norm_backward", "numpy, PyTorch's formulas, both modes",
         batch_norm, norms()),
        ("ReLU's gradient", "numpy where", relu, shapes),
    ], seeds, dtypes


def _processor():
    flags = set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    vectors = [name for flag, name in (("avx2", "AVX2"), ("fma", "FMA"),
                                       ("avx512f", "AVX-512")) if flag in flags]
    return f"{platform.machine() or 'unknown processor'}" + (
        f" with {', '.join(vectors)}" if vectors else "")


def run(max_examples=50, verbose=True, stream=None):
    """Run the self-test; return True when every check passes.

    Parameters
    ----------
    max_examples : int, default 50
        Examples per check and dtype (hypothesis's ``max_examples``).
    verbose : bool, default True
        Print what is checked, against what, and the outcome.
    stream : file, default sys.stdout
    """
    hypothesis, st = _hypothesis()
    stream = sys.stdout if stream is None else stream
    from . import __version__

    def say(text):
        if verbose:
            print(text, file=stream, flush=True)

    checks, seeds, _ = _checks(st)
    say(f"cyconv {__version__} self-test: compiled kernels against independent references, "
        f"{max_examples} random cases per check and dtype, {get_num_threads()} thread(s), "
        f"{_processor()}, numpy {np.__version__}")
    failures = 0
    start = time.perf_counter()
    for name, against, check, cases in checks:
        for dtype in DTYPES:
            @hypothesis.settings(max_examples=max_examples, deadline=None, database=None,
                                 derandomize=False, print_blob=False,
                                 suppress_health_check=list(hypothesis.HealthCheck))
            @hypothesis.given(cases, seeds)
            def property_(case, seed):
                check(case, dtype, seed)

            began = time.perf_counter()
            try:
                property_()
            except Exception as exc:  # report every failure, then go on
                failures += 1
                say(f"  FAILED {name}, {np.dtype(dtype).name}: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:500]}")
            else:
                say(f"  ok  {name:<36} {np.dtype(dtype).name:<8} vs {against} "
                    f"({time.perf_counter() - began:.1f} s)")
    say(f"{'all checks passed' if not failures else f'{failures} check(s) FAILED'} in "
        f"{time.perf_counter() - start:.1f} s")
    return failures == 0
