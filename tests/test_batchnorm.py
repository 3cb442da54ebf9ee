"""batch_norm and batch_norm_backward against a slow float64 numpy twin of
PyTorch's documented semantics, finite differences, the affine map of eval
mode, and PyTorch itself where it is installed."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cyconv
import reference as ref
from cyconv import _norm
from cyconv.functional import batch_norm, batch_norm_backward
from cyconv.testing import central_difference
from reference import batch_norm as ref_batch_norm
from reference import batch_norm_backward as ref_batch_norm_backward

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 3e-6, np.float64: 1e-12}


# -- inputs --------------------------------------------------------------------

@st.composite
def cases(draw, dtype=None, training=None):
    """x of (N, C) or (N, C, H, W), offset and scaled so that the mean can
    dwarf the spread; gamma, beta, running statistics and a gradient."""
    dtype = draw(st.sampled_from(DTYPES)) if dtype is None else dtype
    training = draw(st.booleans()) if training is None else training
    ndim = draw(st.sampled_from([2, 4]))
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 5)))
    if ndim == 4:
        shape += (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    if training and np.prod(shape) // shape[1] < 2:
        shape = (shape[0] + 1,) + shape[1:]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    channels = shape[1]
    scale = 10.0 ** draw(st.integers(-3, 3))
    offset = draw(st.sampled_from([0.0, 1.0, -50.0, 1e3]))
    x = (rng.standard_normal(shape) * scale + offset).astype(dtype)
    return dict(
        x=x,
        gamma=rng.standard_normal(channels).astype(dtype),
        beta=rng.standard_normal(channels).astype(dtype),
        running_mean=rng.standard_normal(channels).astype(dtype),
        running_var=rng.uniform(0.1, 3.0, channels).astype(dtype),
        grad=rng.standard_normal(shape).astype(dtype),
        training=training,
        momentum=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.5])),
    )


def assert_close(actual, expected, dtype, rtol=None, scale=None):
    """Within rounding of the largest magnitude involved (``scale``, by
    default the largest expected value): every output is a few flops from
    float64 statistics, so its error is relative to that."""
    actual = np.asarray(actual)
    assert actual.dtype == dtype
    assert actual.shape == np.shape(expected)
    rtol = RTOL[dtype] if rtol is None else rtol
    if scale is None:
        scale = np.max(np.abs(expected), initial=0.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale + 1e-300)


def run_forward(case):
    running_mean = case["running_mean"].copy()
    running_var = case["running_var"].copy()
    out = batch_norm(case["x"], case["gamma"], case["beta"], running_mean, running_var,
                     training=case["training"], momentum=case["momentum"], eps=case["eps"])
    return out, running_mean, running_var


# -- forward -------------------------------------------------------------------

@given(cases())
def test_forward_and_running_statistics_match_the_reference(case):
    out, running_mean, running_var = run_forward(case)
    expected = ref_batch_norm(
        case["x"], case["gamma"], case["beta"],
        case["running_mean"].astype(np.float64), case["running_var"].astype(np.float64),
        case["training"], case["momentum"], case["eps"])
    dtype = case["x"].dtype.type
    # Normalising a channel whose spread is far below its mean loses the
    # digits of x that the mean shares: relative to |x| / std, not to 1.
    x = case["x"].astype(np.float64)
    conditioning = 1.0
    if case["training"]:
        spread = np.sqrt(x.var(axis=ref.reduced_axes(x)) + case["eps"])
        conditioning = float(np.max(np.max(np.abs(x), axis=ref.reduced_axes(x)) / spread))
    assert_close(out, expected[0], dtype, RTOL[dtype] * max(1.0, conditioning))
    assert_close(running_mean, expected[1], dtype)
    assert_close(running_var, expected[2], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 3), (4, 3, 5, 7)])
def test_running_statistics_after_several_steps(dtype, shape):
    rng = np.random.default_rng(1)
    running_mean, running_var = np.zeros(3, dtype), np.ones(3, dtype)
    expected_mean, expected_var = np.zeros(3), np.ones(3)
    gamma, beta = np.ones(3, dtype), np.zeros(3, dtype)
    for step in range(6):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        batch_norm(x, gamma, beta, running_mean, running_var, momentum=0.3)
        _, expected_mean, expected_var = ref_batch_norm(
            x, gamma, beta, expected_mean, expected_var, True, 0.3, 1e-5)
    assert running_mean.dtype == running_var.dtype == dtype
    assert_close(running_mean, expected_mean, dtype, 1e-5 if dtype == np.float32 else None)
    assert_close(running_var, expected_var, dtype, 1e-5 if dtype == np.float32 else None)


@given(cases(training=False))
def test_eval_mode_is_the_per_channel_affine_map(case):
    x = case["x"]
    out = batch_norm(x, case["gamma"], case["beta"], case["running_mean"],
                     case["running_var"], training=False, eps=case["eps"])
    scale = case["gamma"].astype(np.float64) / np.sqrt(
        case["running_var"].astype(np.float64) + case["eps"])
    shift = case["beta"] - case["running_mean"].astype(np.float64) * scale
    affine = x.astype(np.float64) * ref.channel_view(scale, x.ndim) + ref.channel_view(shift, x.ndim)
    magnitude = (np.abs(x) * np.abs(ref.channel_view(scale, x.ndim))
                 + np.abs(ref.channel_view(shift, x.ndim)) + 1)
    dtype = x.dtype.type
    assert out.dtype == dtype
    assert np.all(np.abs(out - affine) <= 4 * RTOL[dtype] * magnitude)


def test_eval_mode_leaves_the_running_statistics_alone():
    running_mean, running_var = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    batch_norm(np.ones((3, 2)), None, None, running_mean, running_var, training=False)
    np.testing.assert_array_equal(running_mean, [1.0, 2.0])
    np.testing.assert_array_equal(running_var, [3.0, 4.0])


def test_training_without_running_statistics_normalises_with_the_batch():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(batch_norm(x, None, None, eps=0.0), [[-1, -1], [1, 1]])


# -- backward ------------------------------------------------------------------

@given(cases())
def test_backward_matches_the_reference(case):
    grads = batch_norm_backward(case["grad"], case["x"], case["gamma"], case["running_mean"],
                                case["running_var"], training=case["training"],
                                eps=case["eps"])
    expected = ref_batch_norm_backward(case["grad"], case["x"], case["gamma"],
                                       case["running_mean"], case["running_var"],
                                       case["training"], case["eps"])
    dtype = case["x"].dtype.type
    x = case["x"].astype(np.float64)
    axes = ref.reduced_axes(x)
    if case["training"]:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = case["running_mean"], case["running_var"]
    invstd = 1 / np.sqrt(var.astype(np.float64) + case["eps"])
    xhat = np.abs(x - ref.channel_view(mean, x.ndim)) * ref.channel_view(invstd, x.ndim)
    # The input's gradient is a difference of terms as large as
    # gamma * invstd * |grad| * (1 + xhat**2), and x - mean loses the
    # digits x shares with the mean: the bound is relative to both.
    conditioning = float(np.max(np.abs(x) * ref.channel_view(invstd, x.ndim), initial=1.0))
    terms = (np.max(np.abs(case["gamma"] * invstd)) * np.max(np.abs(case["grad"]))
             * (1 + np.max(xhat) ** 2))
    count = x.size // x.shape[1]
    tolerance = 8 * RTOL[dtype] * max(1.0, conditioning)
    assert_close(grads[0], expected[0], dtype, tolerance, terms)
    for actual, wanted in zip(grads[1:], expected[1:]):
        # Sums of count terms of |grad| * (1 + xhat).
        assert_close(actual, wanted, dtype, tolerance,
                     count * np.max(np.abs(case["grad"])) * (1 + np.max(xhat)))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2), (1, 2, 2, 2)])
def test_gradients_match_finite_differences(training, shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    running_mean, running_var = rng.standard_normal(shape[1]), rng.uniform(0.5, 2, shape[1])
    weights = rng.standard_normal(shape)

    def loss():
        out = batch_norm(x, gamma, beta, running_mean.copy(), running_var.copy(),
                         training=training)
        return float(np.sum(out * weights))

    grad_input, grad_gamma, grad_beta = batch_norm_backward(
        weights, x, gamma, running_mean, running_var, training=training)
    for actual, array in ((grad_input, x), (grad_gamma, gamma), (grad_beta, beta)):
        np.testing.assert_allclose(actual, central_difference(loss, array),
                                   rtol=1e-7, atol=1e-8)


def test_backward_leaves_the_running_statistics_alone():
    running_mean, running_var = np.array([1.0]), np.array([2.0])
    batch_norm_backward(np.ones((3, 1)), np.arange(3.0)[:, None], None,
                        running_mean, running_var)
    assert running_mean[0] == 1.0 and running_var[0] == 2.0


def test_saved_statistics_give_the_same_gradient():
    rng = np.random.default_rng(3)
    x, grad = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    _, mean, invstd = _norm.batch_norm_forward(x, gamma, beta, None, None, True, 0.1, 1e-5)
    saved = _norm.batch_norm_backward_saved(grad, x, gamma, mean, invstd, True)
    for a, b in zip(saved, batch_norm_backward(grad, x, gamma)):
        np.testing.assert_array_equal(a, b)


# -- threads -------------------------------------------------------------------

@pytest.fixture
def default_threads():
    yield
    cyconv.set_num_threads(None)


@pytest.mark.usefixtures("default_threads")
@given(cases())
def test_bitwise_identical_at_one_two_and_three_threads(case):
    results = []
    # Every size is worth a thread here, so small draws split too.
    with mock.patch.object(_norm, "MIN_ELEMENTS_PER_THREAD", 1):
        for threads in (1, 2, 3):
            cyconv.set_num_threads(threads)
            out, running_mean, running_var = run_forward(case)
            grads = batch_norm_backward(case["grad"], case["x"], case["gamma"],
                                        case["running_mean"], case["running_var"],
                                        training=case["training"], eps=case["eps"])
            results.append((out, running_mean, running_var) + grads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def _documented_sum(run):
    """The kernels' sum of one run, as their design states it: four partial
    sums in double (element l into sum l % 4, the tail into the first),
    added as (s0 + s1) + (s2 + s3)."""
    sums = [0.0, 0.0, 0.0, 0.0]
    whole = len(run) // 4 * 4
    for l, value in enumerate(run.tolist()):
        sums[l % 4 if l < whole else 0] += value
    return (sums[0] + sums[1]) + (sums[2] + sums[3])


@pytest.mark.usefixtures("default_threads")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batch_statistics_are_the_documented_sums_bit_for_bit(dtype, threads):
    # Channels 1..9 and runs of 1..11 elements: every way the kernels group
    # channels and split a run into whole quadruples and a tail.
    rng = np.random.default_rng(threads)
    for channels in range(1, 10):
        for length in (1, 3, 4, 7, 11):
            x = (rng.standard_normal((3, channels, 1, length)) * 7 + 3).astype(dtype)
            count = x.size // channels
            mean, var = np.empty(channels), np.empty(channels)
            for c in range(channels):
                runs = x[:, c].reshape(3, length).astype(np.float64)
                total = 0.0
                for run in runs:  # samples in order, each run's sum added
                    total += _documented_sum(run)
                mean[c] = total / count
                total = 0.0
                for run in runs:
                    total += _documented_sum((run - mean[c]) * (run - mean[c]))
                var[c] = total / count
            with mock.patch.object(_norm, "MIN_ELEMENTS_PER_THREAD", 1):
                cyconv.set_num_threads(threads)
                got_mean, got_var = _norm._batch_stats(x)
            np.testing.assert_array_equal(got_mean, mean)
            np.testing.assert_array_equal(got_var, var)


@pytest.mark.usefixtures("default_threads")
def test_large_input_is_split_between_threads_and_identical():
    x = np.random.default_rng(0).standard_normal((8, 6, 64, 64)).astype(np.float32)
    assert _norm._threads(x) == min(6, cyconv.get_num_threads())
    cyconv.set_num_threads(1)
    expected = batch_norm(x), batch_norm_backward(x[::-1], x)
    cyconv.set_num_threads(3)
    np.testing.assert_array_equal(batch_norm(x), expected[0])
    for a, b in zip(batch_norm_backward(x[::-1], x), expected[1]):
        np.testing.assert_array_equal(a, b)


# -- dtypes and layouts --------------------------------------------------------

def test_dtype_policy():
    x32 = np.ones((2, 3), np.float32) * np.array([[1], [2]], np.float32)
    assert batch_norm(x32).dtype == np.float32
    assert batch_norm(x32, np.ones(3)).dtype == np.float64  # mixed
    assert batch_norm(np.array([[1, 2], [3, 4]])).dtype == np.float64  # integers
    grads = batch_norm_backward(x32, x32)
    assert [g.dtype for g in grads] == [np.float32] * 3


def test_float32_running_statistics_are_updated_in_place_in_their_dtype():
    running_mean, running_var = np.zeros(2, np.float32), np.ones(2, np.float32)
    ids = id(running_mean), id(running_var)
    batch_norm(np.array([[0.0, 0.0], [2.0, 4.0]]), None, None, running_mean, running_var)
    assert (id(running_mean), id(running_var)) == ids
    assert running_mean.dtype == np.float32
    np.testing.assert_allclose(running_mean, [0.1, 0.2])
    np.testing.assert_allclose(running_var, [0.9 + 0.2, 0.9 + 0.8], rtol=1e-6)


def test_any_memory_layout_and_read_only_inputs():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 4, 5, 8))
    x = base[::2, :, 1:, ::2].transpose(0, 1, 3, 2)
    x.flags.writeable = False
    gamma = rng.standard_normal(8)[::2]
    expected = batch_norm(np.ascontiguousarray(x), np.ascontiguousarray(gamma))
    np.testing.assert_array_equal(batch_norm(x, gamma), expected)
    grads = batch_norm_backward(x, x, gamma)
    expected_grads = batch_norm_backward(np.ascontiguousarray(x), np.ascontiguousarray(x),
                                         np.ascontiguousarray(gamma))
    for a, b in zip(grads, expected_grads):
        np.testing.assert_array_equal(a, b)


def test_nan_propagates_to_its_channel_only():
    x = np.ones((3, 2)) * np.arange(3.0)[:, None]
    x[1, 0] = np.nan
    out = batch_norm(x)
    assert np.all(np.isnan(out[:, 0])) and not np.any(np.isnan(out[:, 1]))


# -- one value per channel -----------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
def test_training_with_one_value_per_channel_raises_as_pytorch_does(shape):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm(np.ones(shape))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_backward(np.ones(shape), np.ones(shape))


def test_one_sample_with_several_pixels_trains_and_one_value_evaluates():
    x = np.arange(8.0).reshape(1, 2, 2, 2)
    assert np.allclose(batch_norm(x).reshape(2, 4).mean(axis=1), 0)
    out = batch_norm(np.array([[4.0, 2.0]]), None, None, np.zeros(2), np.full(2, 4.0),
                     training=False, eps=0.0)
    np.testing.assert_array_equal(out, [[2.0, 1.0]])


# -- bad input -----------------------------------------------------------------

X = np.ones((2, 3))


@pytest.mark.parametrize("call, error, words", [
    (lambda: batch_norm(np.ones(3)), ValueError, r"x must have 2 or 4 dimensions"),
    (lambda: batch_norm(np.ones((2, 3, 4))), ValueError, r"x must have 2 or 4 dimensions"),
    (lambda: batch_norm(np.ones((2, 0))), ValueError, "empty axis"),
    (lambda: batch_norm(X.astype(complex)), TypeError, "real numbers"),
    (lambda: batch_norm(X.astype(np.float16)), TypeError, "real numbers"),
    (lambda: batch_norm([[1, 2], [3]]), ValueError, "array-like"),
    (lambda: batch_norm(X, np.ones(2)), ValueError, r"gamma must have shape \(C,\) = \(3,\)"),
    (lambda: batch_norm(X, None, np.ones((3, 1))), ValueError, r"beta must have shape"),
    (lambda: batch_norm(X, None, None, np.zeros(3)), ValueError, "given together"),
    (lambda: batch_norm(X, None, None, None, np.ones(3)), ValueError, "given together"),
    (lambda: batch_norm(X, training=False), ValueError, "eval mode .* both must be given"),
    (lambda: batch_norm(X, None, None, [0, 0, 0], np.ones(3)), TypeError,
     "running_mean must be a float32 or float64 numpy array"),
    (lambda: batch_norm(X, None, None, np.zeros(3, int), np.ones(3)), TypeError,
     "running_mean must be a float32"),
    (lambda: batch_norm(X, None, None, np.zeros(2), np.ones(2)), ValueError,
     r"running_mean must have shape \(C,\) = \(3,\)"),
    (lambda: batch_norm(X, None, None, np.zeros(3), np.ones(3), training=False,
                        momentum=2), ValueError, r"momentum must be in \[0, 1\]"),
    (lambda: batch_norm(X, momentum="0.1"), TypeError, "momentum must be a real number"),
    (lambda: batch_norm(X, momentum=np.nan), ValueError, "momentum must be in"),
    (lambda: batch_norm(X, eps=-1e-5), ValueError, "eps must be finite and >= 0"),
    (lambda: batch_norm(X, eps=np.inf), ValueError, "eps must be finite"),
    (lambda: batch_norm(X, eps=None), TypeError, "eps must be a real number"),
    (lambda: batch_norm(X, training=1), TypeError, "training must be True or False"),
    (lambda: batch_norm(X, None, None, np.zeros(3), np.ones((3,)).astype(complex),
                        training=False), TypeError, "running_var must hold real numbers"),
    (lambda: batch_norm_backward(np.ones((2, 2)), X), ValueError,
     r"grad_output must have the shape of x, \(2, 3\)"),
    (lambda: batch_norm_backward(X, X, np.ones(4)), ValueError, "gamma must have shape"),
    (lambda: batch_norm_backward(X, X, training=False), ValueError, "both must be given"),
    (lambda: batch_norm_backward(X, X, eps=-1.0), ValueError, "eps must be"),
])
def test_bad_inputs_raise(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_read_only_running_statistics_are_refused_in_training_mode():
    running_mean = np.zeros(3)
    running_mean.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean must be writeable"):
        batch_norm(X, None, None, running_mean, np.ones(3))
    # Read, not written, in eval mode: fine.
    batch_norm(X, None, None, running_mean, np.ones(3), training=False)


# -- PyTorch itself ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(7, 4), (5, 3, 6, 4)])
def test_same_as_torch(dtype, training, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    gamma = rng.standard_normal(shape[1]).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    running_mean = rng.standard_normal(shape[1]).astype(dtype)
    running_var = rng.uniform(0.5, 2, shape[1]).astype(dtype)
    ours_mean, ours_var = running_mean.copy(), running_var.copy()
    out = batch_norm(x, gamma, beta, ours_mean, ours_var, training=training, momentum=0.2)
    grads = batch_norm_backward(grad, x, gamma, running_mean, running_var, training=training)

    tx = torch.tensor(x, requires_grad=True)
    tgamma = torch.tensor(gamma, requires_grad=True)
    tbeta = torch.tensor(beta, requires_grad=True)
    tmean, tvar = torch.tensor(running_mean), torch.tensor(running_var)
    tout = torch.nn.functional.batch_norm(tx, tmean, tvar, tgamma, tbeta, training=training,
                                          momentum=0.2)
    tout.backward(torch.tensor(grad))
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    for ours, theirs in [(out, tout), (ours_mean, tmean), (ours_var, tvar),
                         (grads[0], tx.grad), (grads[1], tgamma.grad), (grads[2], tbeta.grad)]:
        theirs = theirs.detach().numpy()
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=rtol,
                                   atol=rtol * np.max(np.abs(theirs)))


def test_torch_refuses_one_value_per_channel_too():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.functional.batch_norm(torch.ones(1, 3), None, None, training=True)
