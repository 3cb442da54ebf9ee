"""Thread pinning and timing: medians after warm-up, interleaved so that a
noisy machine slows every contender alike."""

import gc
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

import cyconv

try:
    import torch
except ImportError:  # the suite runs without PyTorch, minus its columns
    torch = None

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    threadpool_info = threadpool_limits = None

_blas_limiter = None


def blas_control():
    """How numpy's BLAS thread count is pinned, in words for the report."""
    if threadpool_limits is None:
        return "not pinned (threadpoolctl is not installed): numpy's BLAS uses its default"
    libs = sorted({
        f"{info.get('internal_api')} {info.get('version') or ''}".strip()
        for info in threadpool_info() if info.get("user_api") == "blas"
    })
    return "pinned with threadpoolctl (" + (", ".join(libs) or "no BLAS found") + ")"


def set_threads(n):
    """Give cyconv, PyTorch and numpy's BLAS the same thread count."""
    global _blas_limiter
    cyconv.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    if threadpool_limits is not None:
        # Limiting only the BLAS pools: cyconv passes its thread count to
        # OpenMP explicitly and PyTorch has its own setting above.
        _blas_limiter = threadpool_limits(limits=n, user_api="blas")


@dataclass
class Timing:
    median: float  # seconds
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, samples):
        samples = sorted(samples)
        return cls(statistics.median(samples), samples[0], samples[-1], len(samples))


def _warm_up(fn, seconds):
    """Call ``fn`` once, and again until ``seconds`` have passed: the first
    calls pay for page faults, waking thread pools and filling caches."""
    start = time.perf_counter()
    calls = 0
    while calls < 1 or (time.perf_counter() - start < seconds and calls < 50):
        fn()
        calls += 1


class LoadMeter:
    """CPU time used by other processes, in cores, from /proc/stat and this
    process's own CPU time.  On a shared machine a timing is only as good as
    the cores it had: the report shows this next to every measurement."""

    def __init__(self):
        self.available = os.path.exists("/proc/stat")
        self.ticks = os.sysconf("SC_CLK_TCK") if self.available else 100
        self.reset()

    def _busy_seconds(self):
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        # guest time is already counted in user time
        return (sum(fields[:8]) - idle) / self.ticks

    def _own_seconds(self):
        t = os.times()
        return t.user + t.system

    def reset(self):
        self.start = (time.perf_counter(), self._busy_seconds() if self.available else 0.0,
                      self._own_seconds())

    def foreign_cores(self):
        """Average cores busy with other work since the last reset."""
        if not self.available:
            return None
        wall = time.perf_counter() - self.start[0]
        busy = self._busy_seconds() - self.start[1]
        own = self._own_seconds() - self.start[2]
        return max(0.0, (busy - own) / wall) if wall > 0 else 0.0


class QuietGate:
    """Waits, within limits, for the other processes on the machine to leave
    enough cores free for a measurement at ``threads`` threads."""

    def __init__(self, per_measurement, total, spare=0.3):
        self.per_measurement = per_measurement
        self.left = total
        self.spare = spare
        self.waited = 0.0

    def threshold(self, threads):
        return max(0, (os.cpu_count() or 1) - threads) + self.spare

    def wait(self, threads, at_least, deadline):
        """Sleep ``at_least`` seconds, then on while the machine is busy and
        time is left; returns the other processes' load in the last window."""
        meter = LoadMeter()
        start = time.perf_counter()
        window = max(at_least, 0.1)
        while True:
            meter.reset()
            time.sleep(window)
            load = meter.foreign_cores()
            spent = time.perf_counter() - start
            if (load is None or load <= self.threshold(threads)
                    or time.perf_counter() > deadline or spent >= self.left):
                break
            window = 0.25
        extra = max(0.0, time.perf_counter() - start - at_least)
        self.left -= extra
        self.waited += extra
        return load


def compare(fns, budget, min_calls=6, passes=2, warm_up=0.1, settle=0.0, gate=None,
            threads=1):
    """Time several callables side by side and return their medians.

    Each contender runs in blocks of consecutive calls (a training loop's
    steady state), and the blocks alternate between contenders over
    ``passes`` passes in rotating order, so that a busy spell on the machine
    falls on every contender rather than on one.  Before each block the
    process sleeps ``settle`` seconds: OpenMP and OpenBLAS worker threads
    spin for a while after a parallel call, and on a machine with few cores
    the previous contender's spinning threads would otherwise steal the next
    one's cores.  With a :class:`QuietGate` it also waits, within the gate's
    limits, for other processes to leave ``threads`` cores free.  Each block
    starts with warm-up calls that are not timed.

    Returns ``({name: Timing}, load)``: at least ``min_calls`` timed calls
    each and about ``budget`` seconds of calls in all; ``load`` is the
    average number of cores other processes kept busy during the timed calls.
    """
    names = list(fns)
    samples = {name: [] for name in names}
    per_block = budget / (passes * len(names))
    calls_per_block = max(1, -(-min_calls // passes))
    deadline = time.perf_counter() + (gate.per_measurement if gate else 0.0)
    meter = LoadMeter()
    foreign = wall = 0.0
    for p in range(passes):
        for k in range(len(names)):
            name = names[(p + k) % len(names)]
            fn = fns[name]
            if gate is not None:
                gate.wait(threads, settle, deadline)
            elif settle:
                time.sleep(settle)
            _warm_up(fn, warm_up if p == 0 else 0.0)
            gc.collect()
            gc_was_enabled = gc.isenabled()
            gc.disable()  # as timeit does: a collection inside one call is noise
            meter.reset()
            try:
                start = time.perf_counter()
                calls = 0
                while calls < calls_per_block or time.perf_counter() - start < per_block:
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - t0)
                    calls += 1
            finally:
                if gc_was_enabled:
                    gc.enable()
            block = time.perf_counter() - start
            load = meter.foreign_cores()
            if load is not None:
                foreign += load * block
                wall += block
    load = foreign / wall if wall else None
    return {name: Timing.of(values) for name, values in samples.items()}, load


def measure_slow(fn, budget, min_repeat=1, max_repeat=5, warm_up=None):
    """Median of a slow callable (the tutorial's loops): one warm-up call
    (of ``warm_up`` if given, a cheaper call of the same code; none if
    ``warm_up`` is False), then repeats within ``budget`` seconds."""
    if warm_up is not False:
        (warm_up or fn)()
    samples = []
    start = time.perf_counter()
    while len(samples) < max_repeat and (len(samples) < min_repeat or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing.of(samples)


def gemm_peak(dtype, size=2048, repeat=7):
    """GFLOP/s of numpy's matmul on two large squares: the practical peak of
    this machine's BLAS at the current thread count."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * size ** 3
    return {"median_gflops": flops / statistics.median(times) / 1e9,
            "best_gflops": flops / min(times) / 1e9, "size": size}
