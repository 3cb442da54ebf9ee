"""Layers a container runs as one (Container.fuse) give the results of the
same layers run one by one, to the last bit: forward, backward, parameter
gradients, at 1, 2 and 3 threads."""

import copy

import numpy as np
import pytest

import cyconv
from cyconv import (AveragePooling, BatchNormalization, Convolution, Dense, Flatten, MaxPooling,
                    ReLU, Residual, Sequential, Tanh)

CASES = {
    # (input shape, layers)
    "lenet": ((1, 12, 12), lambda dt: [
        Convolution(kernel_size=3, depth=4, dtype=dt, rng=1), ReLU(), MaxPooling(2),
        Convolution(kernel_size=3, depth=5, dtype=dt, rng=2), ReLU(), MaxPooling(2),
        Flatten(), Dense(output_size=3, dtype=dt, rng=3)]),
    "padded, strided, odd pooling": ((3, 11, 9), lambda dt: [
        Convolution(kernel_size=3, depth=6, padding=1, dtype=dt, rng=1), ReLU(),
        MaxPooling(3, stride=2, padding=1, ceil_mode=True),
        Convolution(kernel_size=2, depth=4, stride=2, dtype=dt, rng=2), ReLU(),
        MaxPooling(2), Flatten(), Dense(output_size=2, dtype=dt, rng=3)]),
    "no pooling, dilation, no bias": ((2, 10, 10), lambda dt: [
        Convolution(kernel_size=3, depth=4, dilation=2, bias=False, dtype=dt, rng=1), ReLU(),
        Convolution(kernel_size=3, depth=3, padding="same", padding_mode="reflect",
                    dtype=dt, rng=2), ReLU(),
        AveragePooling(2), Flatten(), Dense(output_size=2, dtype=dt, rng=3)]),
    "batch normalisation": ((3, 8, 8), lambda dt: [
        Convolution(kernel_size=3, depth=4, padding=1, bias=False, dtype=dt, rng=1),
        BatchNormalization(dtype=dt), ReLU(), MaxPooling(2),
        Convolution(kernel_size=3, depth=4, padding=1, dtype=dt, rng=2),
        BatchNormalization(dtype=dt), ReLU(),
        Flatten(), Dense(output_size=2, dtype=dt, rng=3), BatchNormalization(dtype=dt),
        ReLU()]),
    # First layers whose weight gradient runs on the filter-blocked kernels,
    # split over runs of rows (rows of 18 pixels: runs of 14 rows; 19: runs
    # of 13, and a last row and column no pooling window covers).
    "first layer, split rows": ((3, 18, 18), lambda dt: [
        Convolution(kernel_size=3, depth=32, padding=1, dtype=dt, rng=1), ReLU(),
        MaxPooling(2), Flatten(), Dense(output_size=3, dtype=dt, rng=2)]),
    "first layer, odd rows": ((3, 19, 19), lambda dt: [
        Convolution(kernel_size=3, depth=32, padding=1, dtype=dt, rng=1), ReLU(),
        MaxPooling(2), Flatten(), Dense(output_size=3, dtype=dt, rng=2)]),
    # Layers whose filter-blocked forward pass pools in its store (7x7: a
    # last row and column no window covers).
    "filter-blocked layers": ((3, 14, 14), lambda dt: [
        Convolution(kernel_size=3, depth=16, padding=1, dtype=dt, rng=1), ReLU(),
        MaxPooling(2), Convolution(kernel_size=3, depth=20, padding=1, dtype=dt, rng=2),
        ReLU(), MaxPooling(2), Flatten(), Dense(output_size=2, dtype=dt, rng=3)]),
    "residual": ((4, 6, 6), lambda dt: [
        Residual([Convolution(kernel_size=3, depth=4, padding=1, dtype=dt, rng=1), ReLU(),
                  Convolution(kernel_size=3, depth=4, padding=1, dtype=dt, rng=2)]),
        ReLU(), MaxPooling(2), Convolution(kernel_size=1, depth=2, dtype=dt, rng=3), Tanh(),
        Flatten(), Dense(output_size=2, dtype=dt, rng=4)]),
}


def _models(case, dtype):
    shape, layers = CASES[case]
    fused = Sequential(layers(dtype), input_shape=shape)
    plain = copy.deepcopy(fused)
    for model in (plain,) + tuple(m for m in _containers(plain)):
        model.fuse = False
    assert fused.fuse
    return shape, fused, plain


def _containers(model):
    return [layer for layer in model.layers if isinstance(layer, Residual)]


def _step(model, x, grad):
    out = model.forward(x)
    model.backward(grad)
    return out, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_layers_give_the_unfused_results_bitwise(case, dtype, threads, training):
    shape, fused, plain = _models(case, dtype)
    for model in (fused, plain):
        model.train(training)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7,) + shape).astype(dtype)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]  # propagate the same way
    x[1, 0] = 0.0                               # ReLU's kink at exactly 0
    previous = cyconv.get_num_threads()
    cyconv.set_num_threads(threads)
    try:
        out = fused.forward(x)
        grad = rng.standard_normal(out.shape).astype(dtype)
        got, got_grads = _step(fused, x, grad)
        want, want_grads = _step(plain, x, grad)
    finally:
        cyconv.set_num_threads(previous)
    np.testing.assert_array_equal(got, want)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_array_equal(g, w)


def test_a_fused_relu_keeps_what_backward_needs_and_the_layers_outputs_say_so():
    # (A convolution and ReLU followed by MaxPooling(2) go further: see
    # test_conv_pool.py.)
    _, fused, _ = _models("no pooling, dilation, no bias", np.float32)
    conv, relu = fused.layers[0], fused.layers[1]
    x = np.random.default_rng(0).standard_normal((3, 2, 10, 10)).astype(np.float32)
    fused.forward(x)
    fused.forward(x)  # the convolution's remembered checks too
    # Each layer alone: ReLU's output is max(conv(x), 0), and both layers say so.
    pre = Sequential([copy.deepcopy(conv)]).forward(x)
    np.testing.assert_array_equal(relu.output, np.maximum(pre, 0))
    assert conv.output is relu.output
    g = np.ones_like(relu.output)
    np.testing.assert_array_equal(relu.backward(g), (pre > 0).astype(np.float32))


def test_fusion_only_takes_the_exact_layer_types():
    class Shifted(ReLU):
        def forward(self, input):
            self.input = np.asarray(input)
            self.output = np.maximum(self.input, 0) + 1
            return self.output

    model = Sequential([Convolution(kernel_size=1, depth=1, rng=0), Shifted()],
                       input_shape=(1, 2, 2))
    x = -np.ones((1, 1, 2, 2), np.float32)
    conv_out = model.layers[0].forward(x)
    np.testing.assert_array_equal(model.forward(x), np.maximum(conv_out, 0) + 1)


@pytest.mark.parametrize("case, fused_relus, relus", [
    ("lenet", 0, 2),
    ("batch normalisation", 1, 3),  # the last pair ends the model: not fused
])
def test_the_pairs_really_run_as_one(monkeypatch, case, fused_relus, relus):
    calls = []
    for name in ("_function", "_input_gradient"):
        original = getattr(ReLU, name)

        def spy(self, value, _original=original, _name=name):
            calls.append(_name)
            return _original(self, value)
        monkeypatch.setattr(ReLU, name, spy)
    shape, fused, plain = _models(case, np.float32)
    x = np.random.default_rng(0).standard_normal((2,) + shape).astype(np.float32)
    fused.forward(x)
    assert calls == ["_function"] * fused_relus
    calls.clear()
    plain.forward(x)
    assert calls == ["_function"] * relus


@pytest.mark.parametrize("case", ["lenet", "first layer, split rows", "first layer, odd rows"])
def test_the_first_layer_takes_the_pooled_gradient_unexpanded(monkeypatch, case):
    """Where the convolution, ReLU and pooling ran as one, the model hands
    the pooling's gradient to the first layer as it is; the wide weight
    gradient expands it in cache, a plane at a time, the filter-blocked one
    (AVX-512) as it copies groups of an even number of rows; elsewhere the
    full gradient is made, once."""
    from cyconv import _conv_direct
    from cyconv._pool import PooledGradient

    made = []
    original = PooledGradient.dense
    monkeypatch.setattr(PooledGradient, "dense", lambda self: made.append(1) or original(self))
    shape, fused, _ = _models(case, np.float32)
    x = np.random.default_rng(0).standard_normal((4,) + shape).astype(np.float32)
    out = fused.forward(x)
    fused.backward(np.ones_like(out))
    made.clear()
    out = fused.forward(x)  # the fused pass runs from a layer's second call
    fused.backward(np.ones_like(out))
    conv = fused.layers[0]
    geometry = conv._checked[1]
    direct = _conv_direct.use(geometry, "weight")
    blocked = direct and _conv_direct._blocked(geometry, "weight")
    if cyconv._runtime.DETECTED_ISA == "avx512":
        assert 2 in fused._ran_as_one and direct and blocked == (case != "lenet")
    if 2 not in fused._ran_as_one:  # (no fused pass: no 2x2 kernels here)
        assert made == []
    else:
        # Rows of 18 pixels: groups of 14 rows; 19: of 13 (see the cases).
        group_rows = cyconv._runtime.BLOCKED_WEIGHT_RUN // geometry.out_width
        expands = blocked and cyconv._runtime.blocked_expands_pooled() and group_rows % 2 == 0
        assert made == ([] if direct and (expands or not blocked) else [1])


def test_a_first_layer_run_alone_on_another_batch_is_refused_as_unfused():
    """After a fused forward, the convolution called alone on another
    batch: the model's backward refuses the pooling's gradient for it, as
    it does the full gradient without fusion (no gradient of one batch
    paired with another's input)."""
    shape, fused, plain = _models("first layer, split rows", np.float32)
    x = np.random.default_rng(0).standard_normal((4,) + shape).astype(np.float32)
    for model in (fused, plain):
        model.forward(x)
        out = model.forward(x)
        model.layers[0].forward(np.concatenate([x, x]))
        with pytest.raises(ValueError, match="output_gradient of the output's shape"):
            model.backward(np.ones_like(out))


class ShiftInPlace(cyconv.Layer):
    """A layer of a user's own that changes its input in place."""

    def forward(self, input):
        input -= 1.0
        return input

    def backward(self, output_gradient, learning_rate=None):
        return output_gradient


@pytest.mark.parametrize("tail", [[], [MaxPooling(2)], [ShiftInPlace()],
                                  [MaxPooling(2), Flatten(), ShiftInPlace()]],
                         ids=["conv-relu", "conv-relu-pool", "user layer", "pool-flatten-user"])
def test_outputs_changed_in_place_change_no_gradient(tail):
    # A fused pair's backward reads the output it gave: where that output
    # reaches the caller or a layer of the caller's, the pair is not fused.
    layers = [Convolution(kernel_size=3, depth=4, padding=1, rng=1, dtype=np.float64), ReLU()]
    fused = Sequential(layers + tail, input_shape=(3, 8, 8))
    plain = copy.deepcopy(fused)
    plain.fuse = False
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    grads = []
    for model in (fused, plain):
        out = model.forward(x)
        out -= out.max()
        model.backward(np.ones_like(out))
        grads.append([p.grad for p in model.parameters()])
    for g, w in zip(*grads):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_batch_norm_relu_gives_positive_zeros_as_np_maximum(dtype):
    # gamma 0 and beta -0.0 make every normalised value -0.0; ReLU's
    # np.maximum(-0.0, 0) is +0.0.
    model = Sequential([BatchNormalization(dtype=dtype), ReLU(), MaxPooling(2),
                        Flatten()], input_shape=(2, 4, 4))
    bn = model.layers[0]
    bn.gamma.value[...] = 0.0
    bn.beta.value[...] = -0.0
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(dtype)
    model.forward(x)
    assert not np.signbit(model.layers[1].output).any()
    assert not np.signbit(np.maximum(np.array(-0.0, dtype), 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["lenet", "batch normalisation"])
def test_a_fused_training_step_matches_pytorch(case, dtype):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    shape, model, _ = _models(case, dtype)
    # The same network in PyTorch, with cyconv's initial weights.
    modules = []
    for index, layer in enumerate(model.layers):
        if isinstance(layer, Convolution):
            conv = nn.Conv2d(layer.kernels_shape[1], layer.depth, layer.kernel_size,
                             padding=layer.padding, bias=layer.bias is not None)
            conv.weight.data = torch.from_numpy(layer.weight.value.copy())
            if layer.bias is not None:
                conv.bias.data = torch.from_numpy(layer.bias.value.copy())
            modules.append(conv)
        elif isinstance(layer, BatchNormalization):
            sample = model.output_shapes[index]
            norm = (nn.BatchNorm2d if len(sample) == 3 else nn.BatchNorm1d)(layer.num_features)
            norm.weight.data = torch.from_numpy(layer.gamma.value.copy())
            norm.bias.data = torch.from_numpy(layer.beta.value.copy())
            modules.append(norm)
        elif isinstance(layer, Dense):
            dense = nn.Linear(layer.weight.value.shape[1], layer.weight.value.shape[0])
            dense.weight.data = torch.from_numpy(layer.weight.value.copy())
            dense.bias.data = torch.from_numpy(layer.bias.value.copy())
            modules.append(dense)
        else:
            modules.append({ReLU: nn.ReLU(), MaxPooling: nn.MaxPool2d(2),
                            Flatten: nn.Flatten()}[type(layer)])
    reference = nn.Sequential(*modules)
    if dtype == np.float64:
        reference.double()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6,) + shape).astype(dtype)
    labels = rng.integers(0, model.output_shape[0], 6)
    loss = cyconv.losses.SoftmaxCrossEntropy()
    out = model.forward(x)
    _, grad = loss.value_and_gradient(labels, out)
    model.backward(grad)
    t_out = reference(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(t_out, torch.from_numpy(labels)).backward()
    tolerance = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tolerance)
    ours = [p.grad for p in model.parameters()]
    theirs = [p.grad.numpy() for p in reference.parameters()]
    assert len(ours) == len(theirs)
    for g, w in zip(ours, theirs):
        np.testing.assert_allclose(g, w, **tolerance)
