"""The cyconv command: train, evaluate, predict, and one-line errors."""

import contextlib
import io
import os
import re
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

from cyconv import Dense, Sequential
from cyconv.cli import build_lenet, main
from cyconv.datasets import load_mnist_5k, prepare_images, write_idx

QUICK = ["--epochs", "1", "--limit", "400", "--quiet"]


def run(capsys, *argv):
    status = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def held_out_accuracy(output):
    return float(re.search(r"held-out accuracy: ([\d.]+)%", output).group(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained briefly, and what `cyconv train` printed."""
    path = tmp_path_factory.mktemp("model") / "digits.npz"
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(["train", *QUICK, "--output", str(path)]) == 0
    return path, output.getvalue()


@pytest.fixture(scope="module")
def trained_model(trained):
    return trained[0]


def test_train_reports_and_saves(tmp_path, capsys):
    path = tmp_path / "m.npz"
    status, out, err = run(capsys, "train", *QUICK, "--seed", 3, "-o", path)
    assert status == 0, err
    assert "MNIST-5k (bundled): 4,000 training digits, 1,000 held out" in out
    assert "first 400 only" in out
    assert re.search(r"^epoch 1/1 .*val_accuracy", out, re.M)
    assert held_out_accuracy(out) > 50   # 13 steps on 400 digits: far above chance
    model = Sequential.load(path)
    assert model.predict(np.zeros((1, 1, 28, 28))).shape == (1, 10)


def test_evaluate_agrees_with_training_and_prints_a_confusion_matrix(trained, capsys):
    trained_model, train_output = trained
    trained_accuracy = held_out_accuracy(train_output)
    status, out, err = run(capsys, "evaluate", trained_model)
    assert status == 0, err
    accuracy = float(re.search(r"accuracy: ([\d.]+)% \((\d+)/1,000\)", out).group(1))
    correct = int(re.search(r"\((\d+)/1,000\)", out).group(1))
    assert accuracy == trained_accuracy
    rows = [list(map(int, line.split()[1:])) for line in out.splitlines()[-10:]]
    matrix = np.array(rows)
    assert matrix.shape == (10, 10)
    assert matrix.sum(axis=1).tolist() == [100] * 10   # the stratified held-out digits
    assert np.trace(matrix) == correct


def test_predict_npy_and_idx_match_the_model(trained_model, tmp_path, capsys):
    images, _ = load_mnist_5k()
    chosen = images[::1000]   # one of each of five digits
    model = Sequential.load(trained_model)
    expected = np.argmax(model.predict(prepare_images(chosen)), axis=1)
    npy = tmp_path / "digits.npy"
    np.save(npy, chosen)
    idx = tmp_path / "digits-idx3-ubyte.gz"
    write_idx(idx, chosen)
    for path in (npy, idx):
        status, out, err = run(capsys, "predict", trained_model, path)
        assert status == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["image", "digit", "probability"]
        digits = [int(line.split()[1]) for line in lines[1:]]
        probabilities = [float(line.split()[2]) for line in lines[1:]]
        assert digits == expected.tolist()
        assert all(0.1 <= p <= 1 for p in probabilities)
    single = tmp_path / "one.npy"
    np.save(single, chosen[0])
    status, out, _ = run(capsys, "predict", trained_model, single)
    assert status == 0 and len(out.splitlines()) == 2


def test_training_from_the_command_line_is_reproducible(tmp_path, capsys):
    paths = []
    for threads in (1, 2):
        paths.append(tmp_path / f"threads{threads}.npz")
        status, _, err = run(capsys, "train", "--epochs", "1", "--limit", "200", "--quiet",
                             "--threads", threads, "--seed", 11, "-o", paths[-1])
        assert status == 0, err
    a, b = (Sequential.load(p) for p in paths)
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.value, pb.value)


def test_full_mnist_from_a_directory(tmp_path, capsys):
    images, labels = load_mnist_5k()
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[::50])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[::50])
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[7::125])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[7::125])
    model = tmp_path / "full.npz"
    status, out, err = run(capsys, "train", "--data", tmp_path, "--epochs", "1", "--quiet",
                           "-o", model)
    assert status == 0, err
    assert f"MNIST from {tmp_path}: 100 training digits, 40 test digits" in out
    status, out, err = run(capsys, "evaluate", model, "--data", tmp_path)
    assert status == 0, err
    assert "40 MNIST test digits" in out and "/40)" in out


def test_python_dash_m_and_the_console_script(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cyconv", "train", "--epochs", "1", "--limit", "100",
         "-o", str(tmp_path / "m.npz")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "held-out accuracy" in result.stdout and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "cyconv", "evaluate", "missing.npz"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    assert result.stderr == "cyconv: error: no such file or directory: missing.npz\n"
    (script,) = metadata.entry_points(group="console_scripts", name="cyconv")
    assert script.value == "cyconv.cli:entry_point"


def test_defaults_reach_97_percent_on_the_held_out_digits(tmp_path, capsys):
    """The README's promise: `cyconv train` with every default."""
    path = tmp_path / "default.npz"
    status, out, err = run(capsys, "train", "--quiet", "-o", path)
    assert status == 0, err
    assert "8 epoch(s)" in out
    assert held_out_accuracy(out) >= 97.0


# -- errors: one line on stderr, a non-zero status, no traceback -----------------

@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_model):
    folder = tmp_path_factory.mktemp("files")
    corrupt = folder / "corrupt.npz"
    corrupt.write_bytes(trained_model.read_bytes()[:1000])
    dense = folder / "dense.npz"
    Sequential([Dense(4, 10)]).save(dense)
    three_out = folder / "three.npz"
    Sequential(build_lenet().layers[:-1] + [Dense(128, 3)]).save(three_out)
    small = folder / "small.npy"
    np.save(small, np.zeros((3, 10, 10), dtype=np.uint8))
    text = folder / "text.npy"
    text.write_text("not an array")
    complex_images = folder / "complex.npy"
    np.save(complex_images, np.zeros((2, 28, 28), dtype=complex))
    truncated = folder / "truncated-idx3-ubyte"
    write_idx(truncated, np.zeros((4, 28, 28), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    bad_data = folder / "bad-mnist"
    bad_data.mkdir()
    (bad_data / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    (bad_data / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08")
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    labelled = {}
    for name, labels in (("float_labels", [2.7, 1.0]), ("nan_labels", [np.nan, 1.0])):
        labelled[name] = folder / name
        labelled[name].mkdir()
        write_idx(labelled[name] / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
        write_idx(labelled[name] / "t10k-labels-idx1-ubyte", np.array(labels))
    return dict(model=trained_model, corrupt=corrupt, dense=dense, three=three_out,
                small=small, text=text, complex=complex_images, truncated=truncated,
                bad_data=bad_data, folder=folder, fifo=fifo, **labelled)


ERRORS = [
    (["train", "--epochs", "0"], 2, "cyconv train: error: argument --epochs: expected a positive"),
    (["train", "--learning-rate", "-1"], 2, "argument --learning-rate"),
    (["train", "--learning-rate", "nan"], 2, "argument --learning-rate"),
    (["train", "--threads", "two"], 2, "argument --threads"),
    (["train", "--seed", "-3"], 2, "argument --seed"),
    (["train", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["fly"], 2, "invalid choice: 'fly'"),
    ([], 2, "the following arguments are required: COMMAND"),
    (["evaluate"], 2, "required: MODEL"),
    (["evaluate", "{folder}/absent.npz"], 1, "no such file or directory: {folder}/absent.npz"),
    (["evaluate", "{corrupt}"], 1, "not a readable cyconv model file"),
    (["evaluate", "{text}"], 1, "not a readable cyconv model file"),
    (["evaluate", "{dense}"], 1, "does not take 28x28 grey images"),
    (["evaluate", "{three}"], 1, "does not output 10 digit scores"),
    (["predict", "{model}", "{folder}/absent.npy"], 1, "no such file"),
    (["predict", "{model}", "{small}"], 1, "10x10 images"),
    (["predict", "{model}", "{text}"], 1, "not a readable .npy file"),
    (["predict", "{model}", "{complex}"], 1, "integers or float32/float64"),
    (["predict", "{model}", "{truncated}"], 1, "truncated"),
    (["predict", "{model}", "{folder}"], 1, "Is a directory"),
    (["train", "--data", "{folder}/nowhere"], 1, "no such directory"),
    (["train", "--data", "{bad_data}", "--quiet"], 1, "not an IDX file"),
    (["train", "-o", "{folder}/absent/m.npz"], 1, "no directory"),
    (["train", "-o", "{folder}"], 1, "it is a directory"),
    (["train", "-o", ""], 1, "cannot save to '': the output path is empty"),
    (["train", "-o", "{fifo}"], 1, "it is not a regular file"),
    (["train", "-o", "{model}/m.npz"], 1, "no directory"),
    (["evaluate", "{model}", "--data", "{float_labels}"], 1,
     "labels must be integers (digits 0 to 9), got an IDX file of float64"),
    (["evaluate", "{model}", "--data", "{nan_labels}"], 1, "labels must be integers"),
    (["bench", "--budget", "0"], 2, "argument --budget"),
    (["bench", "--budget", "soon"], 2, "argument --budget"),
    (["bench", "--threads", "0"], 2, "argument --threads"),
]


@pytest.mark.parametrize("argv, status, words", ERRORS)
def test_errors_are_one_clear_line(files, capsys, argv, status, words):
    argv = [a.format(**files) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == status
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert words.format(**files) in err
    assert "Traceback" not in err + out


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write anywhere")
def test_train_refuses_an_unwritable_directory_before_training(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, out, err = run(capsys, "train", "-o", locked / "m.npz")
    assert code == 1 and "is not writable" in err and "training" not in out


def test_bench_times_every_layer_and_a_training_step(capsys):
    status, out, err = run(capsys, "bench", "--budget", "0.01", "--threads", "1")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert "float32, 1 thread(s)" in lines[0]
    rows = [line for line in lines if line.startswith("W")]
    assert len(rows) == 5 * 3
    for row in rows:
        ms = float(row.split()[-2])
        assert 0 < ms < 10_000, row
    assert sum("GFLOP" in line for line in lines) == 1
    assert any(line.startswith("training step") and "images/s" in line for line in lines)


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--data DIR" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("cyconv ")


def test_train_uses_the_default_threads_and_leaves_the_callers_setting_alone(
        tmp_path, capsys):
    import cyconv

    cyconv.set_num_threads(None)
    default = cyconv.get_num_threads()
    status, out, _ = run(capsys, "train", "--epochs", "1", "--limit", "64", "--quiet",
                         "-o", tmp_path / "m.npz")
    words = (f"{default} thread(s)" if default == 1 or "OMP_NUM_THREADS" in os.environ
             else f"up to {default} threads (the fastest count, timed as it trains)")
    assert status == 0 and f"seed 0, {words}" in out
    assert cyconv.get_num_threads() == default
    cyconv.set_num_threads(2)
    chosen = cyconv.get_num_threads()
    try:
        run(capsys, "train", "--epochs", "1", "--limit", "64", "--quiet", "--threads", "1",
            "-o", tmp_path / "m.npz")
        assert cyconv.get_num_threads() == chosen
    finally:
        cyconv.set_num_threads(None)
