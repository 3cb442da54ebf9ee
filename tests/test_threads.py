"""The thread count: what set_num_threads accepts, and that no setting or
environment can ask the kernels for more threads than a process can start."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cyconv
from cyconv.functional import avg_pool2d, max_pool2d


@pytest.fixture(autouse=True)
def default_threads():
    yield
    cyconv.set_num_threads(None)


@pytest.mark.parametrize("value, error, words", [
    (0, ValueError, "positive int or None"),
    (-1, ValueError, "positive int or None"),
    (2.0, TypeError, "positive int or None"),
    (True, TypeError, "positive int or None"),
    ("2", TypeError, "positive int or None"),
    (10**5, ValueError, "num_threads must be at most 1024"),
    (2**64, ValueError, "num_threads must be at most 1024"),
])
def test_bad_thread_counts_raise(value, error, words):
    with pytest.raises(error, match=words):
        cyconv.set_num_threads(value)


def test_the_largest_thread_count_computes_the_same():
    x = np.random.default_rng(0).standard_normal((16, 3, 9, 9))
    expected = max_pool2d(x, 3), avg_pool2d(x, 3)
    cyconv.set_num_threads(cyconv._threads.MAX_THREADS)
    assert cyconv.get_num_threads() == 1024 or not cyconv._threads.openmp_enabled()
    np.testing.assert_array_equal(max_pool2d(x, 3), expected[0])
    np.testing.assert_array_equal(avg_pool2d(x, 3), expected[1])


def test_huge_default_thread_count_from_the_environment_is_capped():
    """OMP_NUM_THREADS=100000 used to reach the kernels as it was: libgomp
    could not start that many threads and the process died."""
    script = textwrap.dedent("""
        import numpy as np, cyconv
        from cyconv.functional import max_pool2d
        n = cyconv.get_num_threads()
        out = max_pool2d(np.ones((64, 3, 8, 8)), 2)
        print(n, out.shape)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="100000")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300, cwd=os.path.dirname(__file__))
    assert result.returncode == 0, result.stderr[-2000:]
    threads, shape = result.stdout.split(" ", 1)
    assert 1 <= int(threads) <= 1024, threads
    assert shape.strip() == "(64, 3, 4, 4)"


_IMPORT_ONLY = """
import os, sys
before = dict(os.environ)
try:
    from numpy._core.multiarray import get_handler_name
except ImportError:  # numpy 1
    from numpy.core.multiarray import get_handler_name
import cyconv, cyconv.functional, cyconv.nn
# Cython's shared utility module enters itself under its bare name too
bare = getattr(sys.modules.get("_cyutility"), "__name__", "")
print(dict(os.environ) == before, get_handler_name(), not bare.startswith("cyconv"))
"""


def test_importing_cyconv_leaves_the_environment_the_allocator_and_bare_module_names_alone():
    clean = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    result = subprocess.run([sys.executable, "-c", _IMPORT_ONLY], env=clean,
                            capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(__file__))
    assert result.stdout.split() == ["True", "default_allocator", "True"], result.stdout



_DEFERRED_BLAS = """
import sys
import numpy as np
from cyconv import _runtime
from cyconv.functional import conv2d, conv2d_backward
x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((8, 1, 3, 3)).astype(np.float32)
direct = conv2d(x, w)  # a small stride-1 layer: the direct kernels
print("scipy.linalg" in sys.modules)
with _runtime.direct_convolution("never"):
    products = conv2d(x, w)  # the BLAS products: now scipy.linalg is needed
    conv2d_backward(np.ones_like(products), x, w)
print("scipy.linalg" in sys.modules, bool(np.allclose(direct, products, atol=1e-5)))
"""


def test_the_blas_kernels_are_imported_at_their_first_use():
    # scipy.linalg is most of cyconv's import time; a program whose layers
    # all take the direct kernels never pays for it.
    result = subprocess.run([sys.executable, "-c", _DEFERRED_BLAS], capture_output=True,
                            text=True, timeout=300, cwd=os.path.dirname(__file__))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True", "True"], result.stdout

_FORK = """
import multiprocessing, signal, numpy as np, cyconv
from cyconv.functional import conv2d, max_pool2d
cyconv.set_num_threads(2)
x = np.random.default_rng(0).standard_normal((8, 8, 64, 64))
w = np.random.default_rng(1).standard_normal((8, 8, 3, 3))
expected = conv2d(x, w).sum(), max_pool2d(x, 2).sum()  # OpenMP's pool now exists

def child(queue):
    signal.alarm(60)  # a hung child must not outlive the test
    threads = cyconv.get_num_threads()
    queue.put((threads, conv2d(x, w).sum(), max_pool2d(x, 2).sum()))

ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
process = ctx.Process(target=child, args=(queue,))
process.start()
threads, *got = queue.get(timeout=60)
process.join(60)
assert got == list(expected), (got, expected)
assert threads == 1, threads
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_kernels_after_the_parent_used_threads():
    # libgomp's thread pool does not survive fork: without the at-fork
    # handler the child's first parallel kernel waits forever.
    result = subprocess.run([sys.executable, "-c", _FORK], capture_output=True, text=True,
                            timeout=120, cwd=os.path.dirname(__file__))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_forked_child_may_choose_its_thread_count_again(monkeypatch):
    monkeypatch.setattr(cyconv._threads, "_forked", False)
    cyconv._threads._after_fork_in_child()
    assert cyconv.get_num_threads() == 1
    cyconv.set_num_threads(2)
    assert cyconv.get_num_threads() == (2 if cyconv._threads.openmp_enabled() else 1)


_FORK_WHILE_LOCKED = """
import os, signal, sys, threading, numpy as np, cyconv
from cyconv import _blas
from cyconv.functional import conv2d
if _blas.openblas() is None:
    print("ok")
    sys.exit(0)
x, w = np.ones((2, 3, 16, 16)), np.ones((4, 3, 3, 3))
held, release = threading.Event(), threading.Event()

def hold():  # another thread inside the BLAS bookkeeping at the fork
    with _blas._lock:
        held.set()
        release.wait()

thread = threading.Thread(target=hold)
thread.start()
held.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(30)  # a hung child must not outlive the test
    os._exit(0 if conv2d(x, w).sum() == 27 * 4 * 2 * 14 * 14 else 1)
release.set()
thread.join()
_, status = os.waitpid(pid, 0)
print("ok" if os.waitstatus_to_exitcode(status) == 0 else "failed")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_held_the_blas_lock_runs_kernels():
    result = subprocess.run([sys.executable, "-c", _FORK_WHILE_LOCKED], capture_output=True,
                            text=True, timeout=60, cwd=os.path.dirname(__file__))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
