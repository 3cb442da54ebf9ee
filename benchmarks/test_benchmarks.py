"""Correctness of the benchmark suite itself: the baselines compute what
cyconv computes, and a report renders.  Never a speed assertion.

    pytest benchmarks
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baselines_numpy  # noqa: E402
import baselines_torch  # noqa: E402
import baselines_tutorial  # noqa: E402
import checks  # noqa: E402
import cyconv_adapter  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import targets  # noqa: E402
from workloads import CifarWorkload, ConvWorkload, LeNetWorkload  # noqa: E402

from cyconv import functional as F  # noqa: E402

SMALL = [
    ConvWorkload("t1", 3, 2, 9, 8, 4, 3),
    ConvWorkload("t2", 2, 3, 11, 10, 5, 3, padding=1, dtype="float64"),
    ConvWorkload("t3", 2, 2, 12, 12, 3, 5, stride=2, padding=2),
]


@pytest.mark.parametrize("workload", SMALL, ids=lambda w: w.key)
@pytest.mark.parametrize("baseline", [baselines_numpy, baselines_tutorial], ids=["numpy", "tutorial"])
def test_conv_baselines_match_cyconv(workload, baseline):
    d = workload.inputs()
    s, p = workload.stride, workload.padding
    expected_out = F.conv2d(d["x"], d["w"], d["b"], stride=s, padding=p)
    expected_grads = F.conv2d_backward(d["g"], d["x"], d["w"], stride=s, padding=p)
    assert checks.close(baseline.conv_forward(d["x"], d["w"], d["b"], s, p), expected_out, workload.dtype)
    assert checks.close(baseline.conv_backward(d["g"], d["x"], d["w"], s, p), expected_grads,
                        workload.dtype)


@pytest.mark.parametrize("workload", SMALL, ids=lambda w: w.key)
def test_pool_baselines_agree(workload):
    d = workload.inputs()
    out, cache = baselines_numpy.pool_forward(d["pool_x"])
    grad = baselines_numpy.pool_backward(d["pool_g"], d["pool_x"], cache)
    t_out, _ = baselines_tutorial.pool_forward(d["pool_x"])
    t_grad = baselines_tutorial.pool_backward(d["pool_g"], d["pool_x"], None)
    assert checks.identical((out, grad), (t_out, t_grad))


def test_numpy_pool_sends_a_tie_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    out, cache = baselines_numpy.pool_forward(x)
    grad = baselines_numpy.pool_backward(np.ones_like(out), x, cache)
    assert grad.ravel().tolist() == [1, 0, 0, 0]


def test_lenet_numpy_step_matches_tutorial_on_one_sample():
    workload = LeNetWorkload(1)
    params = workload.parameters()
    images, labels = workload.batch_data()
    batched = baselines_numpy.LeNet(params, workload.learning_rate)
    per_sample = baselines_tutorial.LeNet(params, workload.learning_rate)
    loss_batched = batched.train_step(images, labels)
    loss_per_sample = per_sample.train_step(images, labels)
    assert abs(loss_batched - loss_per_sample) < 1e-5
    assert checks.close(batched.parameters(), per_sample.parameters(), "float32")


@pytest.mark.skipif(not baselines_torch.available, reason="PyTorch is not installed")
def test_torch_baseline_matches_numpy():
    workload = SMALL[2]
    d = workload.inputs()
    t = {key: baselines_torch.to_tensor(value) for key, value in d.items()}
    s, p = workload.stride, workload.padding
    grads = baselines_torch.conv_backward(t["g"], t["x"], t["w"], s, p)
    assert checks.close([baselines_torch.to_numpy(g) for g in grads],
                        baselines_numpy.conv_backward(d["g"], d["x"], d["w"], s, p), workload.dtype)


@pytest.mark.skipif(not baselines_torch.available, reason="PyTorch is not installed")
def test_cifar_step_of_cyconv_matches_torch():
    workload = CifarWorkload(3)
    params = workload.parameters()
    images, labels = workload.batch_data()
    cy = cyconv_adapter.LayersCifar(params, workload.learning_rate)
    th = baselines_torch.CifarNet(params, workload.learning_rate)
    loss_cy = float(cy.train_step(images, labels))
    loss_th = float(th.train_step(*th.prepare(images, labels)))
    assert abs(loss_cy - loss_th) <= 1e-5 * abs(loss_th)
    assert checks.close(cy.parameters(), th.parameters(), "float32")
    assert workload.flops() > 0


def test_checks_tell_different_arrays_apart():
    a = np.arange(6.0)
    assert checks.close(a, a + 1e-12, "float64")
    assert not checks.close(a, a + 1e-3, "float64")
    assert checks.identical(a, a.copy())
    assert not checks.identical(a, a.astype(np.float32))


def test_report_renders_from_a_tiny_run(tmp_path, monkeypatch):
    monkeypatch.setattr(run.Settings, "compare", lambda self, fns, threads: (
        {name: run.timing.Timing.of([1e-3, 2e-3, 3e-3]) for name in fns}, 0.0))
    run.main(["--quick", "--only", "nothing", "--threads", "1", "--out", str(tmp_path),
              "--no-wait"])
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets" in text
    results = {"settings": {"threads": [1, 2]}, "rows": [], "checks": {}}
    assert all(t["status"] == "n/a" for t in targets.evaluate(results)[:-2])
    assert report.fmt_ms(1234.5) == "1,234"


def _lenet_check(monkeypatch, reference):
    """The checks of a LeNet step (batch 4, no timing) with ``reference``
    as its reference player."""
    monkeypatch.setattr(run.Settings, "compare", lambda self, fns, threads: (
        {name: run.timing.Timing.of([1e-3, 2e-3, 3e-3]) for name in fns}, 0.0))
    monkeypatch.setattr(run, "_lenet_players", lambda settings, workload: {
        "cyconv": cyconv_adapter.lenet_class(), "torch": reference})
    args = run.parse_args(["--quick", "--threads", "1", "--no-wait", "--no-torch"])
    workload = LeNetWorkload(4, tutorial_samples=None)
    return run.run_lenet_workload(workload, run.Settings(args), lambda *a: None)[1]


class _OffInFloat32(baselines_numpy.LeNet):
    """A reference whose float32 step is off (as a reference's own path can
    be), its float64 step right."""

    def train_step(self, images, labels):
        loss = super().train_step(images, labels)
        if images.dtype == np.float32:
            self.params["conv1.w"] = self.params["conv1.w"] + np.float32(1e-2)
        return loss


def test_a_step_is_judged_by_the_reference_in_float64_where_they_differ(monkeypatch):
    check = _lenet_check(monkeypatch, baselines_numpy.LeNet)
    assert check["match"]["cyconv step"] and check["reference_exact"]["match"]
    check = _lenet_check(monkeypatch, _OffInFloat32)
    assert check["match"]["cyconv step"]  # against the float64 step
    assert not check["reference_exact"]["match"]
    assert check["reference_exact"]["error"] > 1e-3


class _WrongLoss(baselines_numpy.LeNet):
    """Right parameters, a wrong loss."""

    def train_step(self, images, labels):
        return 2 * super().train_step(images, labels)


def test_a_step_with_a_wrong_loss_fails_either_way(monkeypatch):
    monkeypatch.setattr(cyconv_adapter, "lenet_class", lambda: _WrongLoss)
    check = _lenet_check(monkeypatch, baselines_numpy.LeNet)
    assert not check["match"]["cyconv step"]
