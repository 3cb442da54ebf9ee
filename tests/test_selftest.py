"""`cyconv selftest` and cyconv.test(): every public kernel, both dtypes,
against shipped references, and they do catch a wrong kernel."""

import io
import subprocess
import sys

import numpy as np
import pytest

import cyconv
from cyconv import _selftest, functional
from cyconv.cli import main

KERNELS = ["conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
           "avg_pool2d_backward", "pad2d", "pad2d_backward", "batch_norm",
           "batch_norm_backward", "correlate2d", "convolve2d", "ReLU's gradient"]


def test_the_command_checks_every_public_kernel_in_both_dtypes(tmp_path):
    # From another directory, as a user of the installed package runs it.
    result = subprocess.run([sys.executable, "-m", "cyconv", "selftest", "--examples", "10"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "self-test" in lines[0] and "thread(s)" in lines[0]
    assert lines[-1].startswith("all checks passed in ")
    assert float(lines[-1].split()[-2]) < 60
    checked = [line for line in lines if line.startswith("  ok")]
    for dtype in ("float32", "float64"):
        named = " ".join(line for line in checked if f" {dtype} " in line)
        for kernel in KERNELS:
            assert kernel in named, (kernel, dtype)
    # Every public function of cyconv.functional is among them.
    assert set(functional.__all__) <= set(KERNELS)


def test_a_wrong_kernel_is_reported(monkeypatch):
    real = functional.avg_pool2d_backward

    def off_by_a_little(*args, **kwargs):
        # 5%: the adjoint identity compares signed sums on the scale of
        # their terms, so a 0.1% error could pass float32's 1e-4 in all ten
        # examples (it did, once)
        grad = real(*args, **kwargs)
        return grad * np.asarray(1.05, grad.dtype)

    monkeypatch.setattr(functional, "avg_pool2d_backward", off_by_a_little)
    out = io.StringIO()
    assert _selftest.run(max_examples=10, stream=out) is False
    failed = [line for line in out.getvalue().splitlines() if line.startswith("  FAILED")]
    assert len(failed) == 2 and all("avg_pool2d" in line for line in failed)
    assert out.getvalue().splitlines()[-1].startswith("2 check(s) FAILED")


def test_cyconv_test_and_its_exit_status(monkeypatch, capsys):
    assert cyconv.test(max_examples=3, verbose=False) is True
    monkeypatch.setattr(_selftest, "run", lambda **kwargs: False)
    assert main(["selftest"]) == 1


def test_without_hypothesis_the_message_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    with pytest.raises(ImportError, match=r"pip install 'cyconv\[test\]'"):
        cyconv.test()
    assert main(["selftest"]) == 1
    assert "pip install 'cyconv[test]'" in capsys.readouterr().err
