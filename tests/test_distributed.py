"""Data-parallel training over MPI: two ranks under mpirun against one
process here, the command line under mpirun, and a failing rank."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyconv import Dense, Sequential
from cyconv.datasets import RandomShift
from cyconv.distributed import batch_slice

# mpich's wheel puts mpirun beside the interpreter of the environment.
MPIRUN = next((str(path) for path in (Path(sys.executable).parent / "mpirun",)
               if path.exists()), shutil.which("mpirun"))


def mpirun(tmp_path, source, ranks=2, args=(), timeout=120):
    """Run ``source`` as a script on ``ranks`` MPI ranks; return the process."""
    pytest.importorskip("mpi4py")
    if MPIRUN is None:
        pytest.skip("no mpirun beside the interpreter or on PATH")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [MPIRUN, "-n", str(ranks), sys.executable, "-m", "mpi4py", *args, str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def aborting_job():
    """For a job that MPI_Abort ends: MPICH then leaves its shared-memory
    segments behind in /dev/shm; remove those that appeared meanwhile."""
    shm = Path("/dev/shm")
    before = set(shm.glob("mpich_shm_*")) if shm.is_dir() else set()
    yield
    if shm.is_dir():
        for leftover in set(shm.glob("mpich_shm_*")) - before:
            leftover.unlink(missing_ok=True)


def check(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# The network and data both sides build: ranks start from different
# weights (seeded by their rank) so that only the broadcast can make them agree.
COMMON = """
import numpy as np
import cyconv
from cyconv import SGD, Adam, Convolution, Dense, Flatten, MaxPooling, ReLU, Sequential
from cyconv.datasets import RandomShift

cyconv.set_num_threads(1)


def network(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return Sequential([
        Convolution((1, 8, 8), 3, 4, dtype=dtype, rng=rng), ReLU(), MaxPooling(2),
        Flatten(), Dense(36, 3, dtype=dtype, rng=rng),
    ])


def batchnorm_data():
    # 45 images of 2 channels with scales and offsets of their own; the
    # second half of every batch of 16 is brighter, so that the slices'
    # means differ.
    x = np.random.default_rng(7).standard_normal((45, 2, 8, 8))
    brighter = 3.0 * (np.arange(45) % 16 >= 8)
    return (x * np.array([2.0, 0.5])[:, None, None] + np.array([1.0, -3.0])[:, None, None]
            + brighter[:, None, None, None]).astype(np.float32)


def data(count, dtype=np.float32):
    rng = np.random.default_rng(7)
    return (rng.standard_normal((count, 1, 8, 8)).astype(dtype),
            rng.integers(0, 3, count))


# (optimizer, samples, epochs): 33 samples in batches of 16 end with a
# batch of one, which leaves rank 1's slice empty; 45 end with 13 (7 + 6).
CASES = {
    "sgd": (lambda: SGD(0.05, momentum=0.9), 33, 3),
    "adam": (lambda: Adam(0.01), 45, 2),
}
"""


def reference(case):
    """The one-process fit the two ranks must reproduce (this process, no MPI)."""
    namespace = {}
    exec(COMMON, namespace)
    make_optimizer, count, epochs = namespace["CASES"][case]
    model = namespace["network"](0)
    x, y = namespace["data"](count)
    history = model.fit(x, y, epochs=epochs, batch_size=16, optimizer=make_optimizer(),
                        validation_data=(x[:11], y[:11]), seed=5, verbose=0,
                        augment=RandomShift(1))
    return model, history, namespace


PARITY = COMMON + """
import json
from collections import Counter

from mpi4py import MPI


class CountingComm:
    # COMM_WORLD, counting the collective calls made through it.

    def __init__(self, comm):
        self.comm, self.calls = comm, Counter()

    def __getattr__(self, name):
        attribute = getattr(self.comm, name)
        if name[:1].isupper() or name in ("allgather", "bcast"):
            self.calls[name] += 1
        return attribute


comm = CountingComm(MPI.COMM_WORLD)
results = {}
for case, (make_optimizer, count, epochs) in CASES.items():
    model = network(comm.Get_rank())
    x, y = data(count)
    comm.calls.clear()
    history = model.fit(x, y, epochs=epochs, batch_size=16, optimizer=make_optimizer(),
                        validation_data=(x[:11], y[:11]), seed=5, verbose=0,
                        augment=RandomShift(1), distributed=True, comm=comm)
    np.savez(f"{case}-rank{comm.Get_rank()}.npz",
             *[p.value for p in model.parameters()])
    results[case] = {"history": history, "calls": dict(comm.calls),
                     "evaluate": model.evaluate(x, y, distributed=True, comm=comm)}
# A communicator of one rank each: two independent one-rank fits.
solo = MPI.COMM_WORLD.Split(color=comm.Get_rank())
make_optimizer, count, epochs = CASES["adam"]
model = network(0)
x, y = data(count)
model.fit(x, y, epochs=epochs, batch_size=16, optimizer=make_optimizer(),
          validation_data=(x[:11], y[:11]), seed=5, verbose=0, augment=RandomShift(1),
          distributed=True, comm=solo)
np.savez(f"solo-rank{comm.Get_rank()}.npz", *[p.value for p in model.parameters()])
# seed=None on every rank: rank 0's fresh seed is shared.
model = network(comm.Get_rank())
x, y = data(40)
model.fit(x, y, epochs=1, batch_size=8, seed=None, verbose=0, distributed=True)
np.savez(f"unseeded-rank{comm.Get_rank()}.npz", *[p.value for p in model.parameters()])
with open(f"results-rank{comm.Get_rank()}.json", "w") as stream:
    json.dump(results, stream)
"""


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("parity")
    result = check(mpirun(tmp_path, PARITY))
    return tmp_path, result


def weights(path):
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


@pytest.mark.parametrize("case", ["sgd", "adam"])
def test_two_ranks_end_identical_and_equal_to_one_process(parity_run, case):
    import json

    tmp_path, _ = parity_run
    rank0 = weights(tmp_path / f"{case}-rank0.npz")
    rank1 = weights(tmp_path / f"{case}-rank1.npz")
    for a, b in zip(rank0, rank1, strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise
    model, history, namespace = reference(case)
    single = [p.value for p in model.parameters()]
    initial = [p.value for p in namespace["network"](0).parameters()]
    for parallel, alone, start in zip(rank0, single, initial, strict=True):
        assert parallel.dtype == alone.dtype == np.float32
        # Same global batches, same steps: float32 rounding only, far
        # below how far training moved the weights.
        np.testing.assert_allclose(parallel, alone, rtol=1e-5, atol=1e-6)
        assert np.abs(alone - start).max() > 1e-2
    for rank in (0, 1):
        results = json.loads((tmp_path / f"results-rank{rank}.json").read_text())[case]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(results["history"][key], history[key], rtol=1e-5)
        x, y = namespace["data"](namespace["CASES"][case][1])
        expected = model.evaluate(x, y)
        assert results["evaluate"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert results["evaluate"]["accuracy"] == pytest.approx(expected["accuracy"])
        # One fused Allreduce per step (one dtype), one for the epoch's
        # totals, one per validation and the final evaluate.
        count, epochs = namespace["CASES"][case][1:]
        steps = epochs * -(-count // 16)
        assert results["calls"]["Allreduce"] == steps + 2 * epochs


def test_a_one_rank_communicator_trains_as_one_process_bit_for_bit(parity_run):
    tmp_path, _ = parity_run
    model, _, _ = reference("adam")
    for rank in (0, 1):
        for a, b in zip(weights(tmp_path / f"solo-rank{rank}.npz"),
                        [p.value for p in model.parameters()], strict=True):
            np.testing.assert_array_equal(a, b)


def test_unseeded_ranks_share_rank_zeros_seed(parity_run):
    tmp_path, _ = parity_run
    for a, b in zip(weights(tmp_path / "unseeded-rank0.npz"),
                    weights(tmp_path / "unseeded-rank1.npz"), strict=True):
        np.testing.assert_array_equal(a, b)


BATCHNORM = COMMON + """
from mpi4py import MPI
from cyconv import BatchNormalization

rank = MPI.COMM_WORLD.Get_rank()
rng = np.random.default_rng(rank)
x = batchnorm_data()
y = np.arange(len(x)) % 3
# BatchNormalization first: its running statistics depend on the data
# alone, so the test can compute them.  In the middle: ranks must agree.
first = Sequential([BatchNormalization(2, momentum=0.3), Flatten(), Dense(128, 3, rng=rng)])
first.fit(x, y, epochs=2, batch_size=16, shuffle=False, optimizer=SGD(0.01), seed=0,
          verbose=0, distributed=True)
middle = Sequential([Convolution((2, 8, 8), 3, 4, rng=rng), BatchNormalization(4), ReLU(),
                     Flatten(), Dense(144, 3, rng=rng)])
middle.fit(x, y, epochs=2, batch_size=16, seed=3, verbose=0, distributed=True)
np.savez(f"batchnorm-rank{rank}.npz", *[b.value for b in first.buffers()],
         *[p.value for p in middle.parameters()], *[b.value for b in middle.buffers()])
"""


def running_statistics(x, momentum, slices):
    """Running mean and variance over 2 epochs of batches of 16, in float64:
    each of ``slices`` parts of a batch updates its own statistics
    (unbiased variance) and they are averaged weighted by part size."""
    mean, var = np.zeros(x.shape[1]), np.ones(x.shape[1])
    for _ in range(2):
        for start in range(0, len(x), 16):
            batch = x[start:start + 16]
            parts = np.array_split(batch, slices)
            share = [len(part) / len(batch) for part in parts]
            mean = (1 - momentum) * mean + momentum * sum(
                w * part.mean(axis=(0, 2, 3)) for w, part in zip(share, parts))
            var = (1 - momentum) * var + momentum * sum(
                w * part.var(axis=(0, 2, 3), ddof=1) for w, part in zip(share, parts))
    return mean, var


def test_batchnorm_statistics_are_the_ranks_average_weighted_by_slice(tmp_path):
    import cyconv

    if not hasattr(cyconv, "BatchNormalization"):
        pytest.skip("no BatchNormalization in this cyconv")
    check(mpirun(tmp_path, BATCHNORM))
    rank0 = weights(tmp_path / "batchnorm-rank0.npz")
    rank1 = weights(tmp_path / "batchnorm-rank1.npz")
    for a, b in zip(rank0, rank1, strict=True):
        np.testing.assert_array_equal(a, b)  # parameters and buffers, bitwise
    namespace = {}
    exec(COMMON, namespace)
    x = namespace["batchnorm_data"]().astype(np.float64)
    mean, var = running_statistics(x, 0.3, slices=2)
    np.testing.assert_allclose(rank0[0], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rank0[1], var, rtol=1e-5)
    # The mean is the one-process running mean; the variance leaves out the
    # spread between the slices' means, so it is not the one-process one.
    alone_mean, alone_var = running_statistics(x, 0.3, slices=1)
    np.testing.assert_allclose(mean, alone_mean, rtol=1e-12)
    assert np.all(var < 0.9 * alone_var)


MISMATCH = COMMON + """
from mpi4py import MPI

rank = MPI.COMM_WORLD.Get_rank()
x, y = data(20 + rank)
try:
    network(0).fit(x[:20 + rank], y[:20 + rank], batch_size=4, seed=1, verbose=0,
                   distributed=True)
except ValueError as exc:
    with open(f"refused-rank{rank}.txt", "w") as stream:
        stream.write(str(exc))
"""


def test_ranks_given_different_data_all_refuse(tmp_path):
    check(mpirun(tmp_path, MISMATCH))
    for rank in (0, 1):
        message = (tmp_path / f"refused-rank{rank}.txt").read_text()
        assert "rank 1 was given {'samples': 21" in message
        assert "every rank must fit the same data" in message


FAILING = COMMON + """
from mpi4py import MPI

rank = MPI.COMM_WORLD.Get_rank()
calls = []


def augment(batch, rng):
    calls.append(1)
    if rank == 1 and len(calls) == 3:
        raise RuntimeError("rank 1 fails on its third batch")
    return batch


x, y = data(64)
network(0).fit(x, y, epochs=50, batch_size=4, seed=1, verbose=0, augment=augment,
               distributed=True)
"""


def test_a_failing_rank_ends_the_job(tmp_path, aborting_job):
    start = time.perf_counter()
    result = mpirun(tmp_path, FAILING, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.returncode != 0
    assert "rank 1 fails on its third batch" in result.stderr
    assert elapsed < 20, f"the job took {elapsed:.1f} s to end"


def test_the_command_line_trains_on_two_ranks_and_rank_zero_saves(tmp_path, capsys):
    result = check(_cli_under_mpirun(tmp_path))
    assert sorted(os.listdir(tmp_path / "out")) == ["model.npz"]
    # Rank 0 alone prints: fit's epoch line and the command's report.
    assert result.stdout.count("epoch 1/1") == 1
    assert result.stdout.count("held-out accuracy") == 1
    # Each rank takes its share of the node's cores.
    assert f"2 ranks x {max(1, os.cpu_count() // 2)} thread(s)" in result.stdout
    from cyconv.cli import main

    assert main(["evaluate", str(tmp_path / "out" / "model.npz")]) == 0
    reported = result.stdout.split("held-out accuracy: ")[1].split("%")[0]
    assert f"accuracy: {reported}%" in capsys.readouterr().out


def _cli_under_mpirun(tmp_path, output="out/model.npz", launcher=("-m", "mpi4py"),
                      timeout=180):
    pytest.importorskip("mpi4py")
    if MPIRUN is None:
        pytest.skip("no mpirun beside the interpreter or on PATH")
    (tmp_path / "out").mkdir()
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    return subprocess.run(
        [MPIRUN, "-n", "2", sys.executable, *launcher, "-m", "cyconv", "train",
         "--distributed", "--epochs", "1", "--limit", "256", "--quiet", "-o",
         str(tmp_path / output)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_command_line_ends_every_rank_when_one_fails(tmp_path, aborting_job):
    # Without `python -m mpi4py`: the command itself must end the job when
    # rank 0 refuses the output path while rank 1 waits for it in fit.
    start = time.perf_counter()
    result = _cli_under_mpirun(tmp_path, "missing/model.npz", launcher=(), timeout=60)
    assert result.returncode != 0
    assert "cyconv: error: cannot save to" in result.stderr
    assert time.perf_counter() - start < 20


def test_without_mpi4py_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    model = Sequential([Dense(2, 2, rng=0)])
    with pytest.raises(ImportError, match=r'pip install "cyconv\[mpi\]"'):
        model.fit(np.zeros((4, 2)), [0, 1, 0, 1], distributed=True, verbose=0)
    with pytest.raises(ImportError, match=r'pip install "cyconv\[mpi\]"'):
        model.evaluate(np.zeros((4, 2)), [0, 1, 0, 1], distributed=True)


def test_train_distributed_without_mpi4py_says_what_to_install(monkeypatch, capsys):
    from cyconv.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert main(["train", "--distributed", "--epochs", "1", "--limit", "64"]) == 1
    assert 'pip install "cyconv[mpi]"' in capsys.readouterr().err


@given(st.integers(0, 1000), st.integers(1, 64))
def test_batch_slices_partition_the_batch_evenly_in_rank_order(count, ranks):
    slices = [batch_slice(count, rank, ranks) for rank in range(ranks)]
    covered = np.concatenate([np.arange(count)[part] for part in slices])
    np.testing.assert_array_equal(covered, np.arange(count))  # contiguous, in order, once
    sizes = [part.stop - part.start for part in slices]
    assert max(sizes) - min(sizes) <= 1
    assert all(part.step is None for part in slices)

