"""Run cyconv's benchmark suite and write RESULTS.md, results.json and a chart.

    python benchmarks/run.py                # full run, 1 and 2 threads (~10 min on 2 cores)
    python benchmarks/run.py --quick        # short budgets, fwd+bwd only (~2 min)
    python benchmarks/run.py --threads 1 2 4 --only W2,W3

Every workload is timed for cyconv, the tutorial's scipy loops, a numpy
im2col implementation and PyTorch (when importable), side by side in one
run at the same thread count, after checking that their results agree.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def _isa_asked(argv):
    for i, arg in enumerate(argv):
        if arg == "--isa" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--isa="):
            return arg.split("=", 1)[1]
    return None


# --isa avx2: PyTorch, oneDNN, MKL, OpenBLAS and cyconv's convolution and
# pooling kernels restricted to AVX2 and FMA on a processor that has more,
# to measure the AVX2 code paths where no AVX2-only machine is at hand
# (cyconv's ReLU and batch-normalisation loops, and numpy, keep their own
# dispatch).  PyTorch's kernels, oneDNN, MKL and OpenBLAS read these when they
# load, so before anything imports them; cyconv's variants are chosen in
# main().
AVX2_ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}
if _isa_asked(sys.argv[1:]) == "avx2":
    os.environ.update(AVX2_ENVIRONMENT)

import numpy as np  # noqa: E402

# cyconv before PyTorch: both link a GNU OpenMP runtime of the same soname,
# so one process holds one runtime for both, set up by whoever loads it
# first; neither changes its settings, and the report states those in
# effect (GOMP_SPINCOUNT from the environment, if any).
import cyconv  # noqa: F401  isort: skip
import cyconv.functional  # noqa: F401  isort: skip

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import baselines_numpy  # noqa: E402
import baselines_torch  # noqa: E402
import baselines_tutorial  # noqa: E402
import checks  # noqa: E402
import cyconv_adapter  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
import timing  # noqa: E402
from workloads import CIFAR_WORKLOADS, CONV_WORKLOADS, LENET_WORKLOADS  # noqa: E402

CONV_OPS = ["conv fwd", "conv bwd", "conv fwd+bwd", "pool fwd+bwd"]


class Settings:
    def __init__(self, args):
        self.quick = args.quick
        self.threads = args.threads
        # Seconds of timed calls per measurement, all contenders together.
        self.budget = args.budget if args.budget is not None else (0.3 if args.quick else 1.5)
        self.min_calls = args.repeat if args.repeat is not None else (2 if args.quick else 6)
        self.passes = 1 if args.quick else 2
        self.warm_up = 0.05 if args.quick else 0.15
        # Long enough for idle OpenMP/OpenBLAS workers to stop spinning.
        self.settle = 0.2
        self.tutorial_repeat = 1 if args.quick else 3
        self.tutorial_budget = 0.5 if args.quick else 2.0
        self.process_runs = 2 if args.quick else 7
        # A quick run times forward and backward together only.
        self.ops = ["conv fwd+bwd", "pool fwd+bwd"] if args.quick else CONV_OPS
        # Calls that take seconds gain nothing from a warm-up call.
        self.tutorial_warm_up = not args.quick
        self.memory_runs = 1 if args.quick else 3
        self.use_torch = baselines_torch.available and not args.no_torch
        # On a shared machine, wait (within limits) for other processes to
        # leave the cores a measurement needs.
        self.gate = None if args.no_wait else (
            timing.QuietGate(per_measurement=2.0, total=10.0) if args.quick
            else timing.QuietGate(per_measurement=10.0, total=150.0))

    def compare(self, fns, threads):
        # One thread leaves no idle workers spinning: no need to pause.
        return timing.compare(fns, self.budget, self.min_calls, self.passes, self.warm_up,
                              settle=self.settle if threads > 1 else 0.0, gate=self.gate,
                              threads=threads)


# --------------------------------------------------------------------------
# The contenders, behind one face: functions taking the framework's arrays.

class Contender:
    def __init__(self, name, impl, to_native=None, to_numpy=None):
        self.name = name
        self.impl = impl
        self.to_native = to_native or (lambda a: a)
        self._to_numpy = to_numpy or (lambda a: a)

    def has(self, op):
        needed = {"conv": ("conv_forward", "conv_backward"), "pool": ("pool_forward", "pool_backward")}
        return all(getattr(self.impl, fn, None) is not None for fn in needed[op.split()[0]])

    def native(self, data):
        return {key: self.to_native(value) for key, value in data.items()}

    def numpy(self, result):
        if isinstance(result, (tuple, list)):
            return tuple(self.numpy(r) for r in result)
        return None if result is None else np.asarray(self._to_numpy(result))

    def call(self, op, d, workload):
        """A no-argument callable that runs ``op`` once on the arrays ``d``."""
        impl, s, p = self.impl, workload.stride, workload.padding
        if op == "conv fwd":
            return lambda: impl.conv_forward(d["x"], d["w"], d["b"], s, p)
        if op == "conv bwd":
            return lambda: impl.conv_backward(d["g"], d["x"], d["w"], s, p)
        if op == "conv fwd+bwd":
            return lambda: (impl.conv_forward(d["x"], d["w"], d["b"], s, p),
                            impl.conv_backward(d["g"], d["x"], d["w"], s, p))
        if op == "pool fwd+bwd":
            def pool():
                out, cache = impl.pool_forward(d["pool_x"])
                return out, impl.pool_backward(d["pool_g"], d["pool_x"], cache)
            return pool
        raise ValueError(op)


def contenders(settings):
    found = [Contender("cyconv", cyconv_adapter), Contender("numpy", baselines_numpy)]
    if settings.use_torch:
        found.append(Contender("torch", baselines_torch, baselines_torch.to_tensor,
                               baselines_torch.to_numpy))
    return found


TUTORIAL = Contender("tutorial", baselines_tutorial)


def _results(contender, d, workload):
    """Every result of a workload, as numpy arrays, for the checks."""
    out = {}
    if contender.has("conv"):
        out["conv fwd"] = contender.numpy(contender.call("conv fwd", d, workload)())
        out["conv bwd"] = contender.numpy(contender.call("conv bwd", d, workload)())
        out["conv fwd+bwd"] = (out["conv fwd"],) + out["conv bwd"]
    if contender.has("pool"):
        out["pool fwd+bwd"] = contender.numpy(contender.call("pool fwd+bwd", d, workload)())
    return out


def _subset(data, k):
    """The first k samples of every batched array (weights and bias whole)."""
    return {key: (np.ascontiguousarray(value[:k]) if key in ("x", "g", "pool_x", "pool_g") else value)
            for key, value in data.items()}


# --------------------------------------------------------------------------
# Layer workloads

def run_conv_workload(workload, settings, log):
    data = workload.inputs()
    players = contenders(settings)
    by_name = {c.name: c for c in players}
    native = {c.name: c.native(data) for c in players}
    reference_name = "torch" if "torch" in by_name else "numpy"
    reference = by_name[reference_name]

    # Checks first: a baseline that computes something else has no ratio.
    timing.set_threads(settings.threads[0])
    ref = _results(reference, native[reference_name], workload)
    check = {"reference": reference_name, "match": {}, "bitwise": {}, "error": {}}
    per_thread = {}
    for n in settings.threads:
        timing.set_threads(n)
        per_thread[n] = _results(by_name["cyconv"], data, workload)
    timing.set_threads(settings.threads[0])
    for player in players:
        if player.name == reference_name:
            continue
        results = per_thread[settings.threads[0]] if player.name == "cyconv" else _results(
            player, native[player.name], workload)
        for op, value in results.items():
            check["match"][f"{player.name} {op}"] = checks.close(value, ref[op], workload.dtype)
            check["error"][f"{player.name} {op}"] = checks.worst_error(value, ref[op])
    for op in per_thread[settings.threads[0]]:
        check["bitwise"][op] = (all(checks.identical(per_thread[n][op], per_thread[settings.threads[0]][op])
                                    for n in settings.threads) if len(settings.threads) > 1 else None)
    k = workload.tutorial_samples
    small = _subset(data, k)
    ref_small = _results(reference, reference.native(small), workload)
    for op, value in _results(TUTORIAL, small, workload).items():
        check["match"][f"tutorial {op}"] = checks.close(value, ref_small[op], workload.dtype)
        check["error"][f"tutorial {op}"] = checks.worst_error(value, ref_small[op])

    # The tutorial's loops use one thread whatever the setting: timed once.
    timing.set_threads(settings.threads[0])
    tutorial_ms = {}
    one = _subset(data, 1)
    for op in settings.ops:
        t = timing.measure_slow(TUTORIAL.call(op, small, workload), settings.tutorial_budget,
                                max_repeat=settings.tutorial_repeat,
                                warm_up=settings.tutorial_warm_up and TUTORIAL.call(op, one, workload))
        tutorial_ms[op] = t.median * 1e3 * workload.n / k

    rows = []
    for n in settings.threads:
        timing.set_threads(n)
        for op in settings.ops:
            fns = {c.name: c.call(op, native[c.name], workload) for c in players if c.has(op)}
            measured, load = settings.compare(fns, n)
            ms = {name: t.median * 1e3 for name, t in measured.items()}
            ms["tutorial"] = tutorial_ms[op]
            rows.append(_row(workload, op, n, ms, check, k, load,
                             spread={name: (t.low * 1e3, t.high * 1e3, t.count)
                                     for name, t in measured.items()}))
            log(_row_text(rows[-1]))
    return rows, check


def _row(workload, op, threads, ms, check, tutorial_samples, load, spread=None):
    flops = workload.flops(op)
    cy = ms.get("cyconv")
    best = {name: low for name, (low, high, count) in (spread or {}).items()}
    torch_ms = ms.get("torch")
    bitwise = check["bitwise"].get(op)
    match = check["match"].get(f"cyconv {op}")
    if check["reference"] != "torch":
        match = None  # nothing to compare with but the numpy baseline
    return {
        "workload": workload.key, "label": workload.label, "dtype": workload.dtype,
        "shape": workload.shape_text, "op": op, "threads": threads, "ms": ms,
        "spread": spread or {},
        "flops": flops,
        "gflops": {name: flops / (t * 1e-3) / 1e9 for name, t in ms.items()} if flops else {},
        "ratio_torch": cy / torch_ms if cy and torch_ms else None,
        # The same ratio of the fastest calls: on a shared machine the least
        # disturbed call of each contender, a steadier if kinder estimate.
        "ratio_torch_best": (best["cyconv"] / best["torch"]
                             if best.get("cyconv") and best.get("torch") else None),
        "ratio_numpy_torch": ms["numpy"] / torch_ms if ms.get("numpy") and torch_ms else None,
        "speedup_tutorial": ms["tutorial"] / cy if cy and ms.get("tutorial") else None,
        "tutorial_samples": tutorial_samples, "batch": getattr(workload, "n", None) or workload.batch,
        "match_torch": match, "bitwise_threads": bitwise,
        # Cores other processes kept busy while this row was timed.
        "other_load": load,
    }


def _row_text(row):
    ms = row["ms"]
    parts = [f"{row['label']:<10} {row['op']:<13} {row['threads']}t"]
    for name in ("cyconv", "torch", "numpy", "tutorial"):
        if ms.get(name) is not None:
            parts.append(f"{name} {ms[name]:9.3f} ms")
    if row["ratio_torch"] is not None:
        parts.append(f"cy/torch {row['ratio_torch']:.2f}")
    if row["speedup_tutorial"] is not None:
        parts.append(f"x{row['speedup_tutorial']:.0f} vs tutorial")
    if row["other_load"] is not None:
        parts.append(f"(other load {row['other_load']:.1f})")
    return "  ".join(parts)


# --------------------------------------------------------------------------
# LeNet training step

def _lenet_players(settings, workload):
    """LeNet: cyconv, numpy and PyTorch; the CIFAR-like network: cyconv's
    layers and PyTorch (no numpy baseline)."""
    players = {}
    if workload.key == "CIFAR":
        bn = workload.batchnorm
        if cyconv_adapter.lenet_class() is cyconv_adapter.LayersLeNet:
            players["cyconv"] = cyconv_adapter.LayersCifarBN if bn else cyconv_adapter.LayersCifar
        if settings.use_torch:
            players["torch"] = baselines_torch.CifarBNNet if bn else baselines_torch.CifarNet
        return players
    cy_class = cyconv_adapter.lenet_class()
    if workload.layer_by_layer:
        if cy_class is not cyconv_adapter.LayersLeNet:
            return {}
        cy_class = cyconv_adapter.LayerByLayerLeNet
    if cy_class is not None:
        players["cyconv"] = cy_class
    players["numpy"] = baselines_numpy.LeNet
    if settings.use_torch:
        players["torch"] = baselines_torch.LeNet
    return players


def _step(cls, params, lr, images, labels):
    """A fresh model, one step; returns (model, step callable, loss)."""
    model = cls(params, lr)
    if hasattr(model, "prepare"):
        images, labels = model.prepare(images, labels)
    loss = float(model.train_step(images, labels))
    return model, (lambda: model.train_step(images, labels)), loss


def _params_numpy(model):
    return {name: np.asarray(value) for name, value in model.parameters().items()}


def run_lenet_workload(workload, settings, log):
    params = workload.parameters()
    images, labels = workload.batch_data()
    lr = workload.learning_rate
    players = _lenet_players(settings, workload)
    if "cyconv" not in players or len(players) < 2:
        log(f"{workload.label}: skipped (needs cyconv's layers and a reference)")
        return [], {"reference": None, "match": {}, "bitwise": {}, "error": {}}
    reference_name = "torch" if "torch" in players else "numpy"

    timing.set_threads(settings.threads[0])
    after = {}
    losses = {}
    steps = {}
    for name, cls in players.items():
        model, steps[name], losses[name] = _step(cls, params, lr, images, labels)
        after[name] = _params_numpy(model)
    check = {"reference": reference_name, "match": {}, "bitwise": {}, "error": {}}
    # The reference's own step in float64 judges a float32 step that differs
    # from the reference's: a near-tie in a pooling window may route one
    # gradient either way, and either side may be the one off.  How far the
    # reference itself is from it is shown, not judged (it is not ours).
    exact_model, _, exact_loss = _step(players[reference_name],
                                       {k: v.astype(np.float64) for k, v in params.items()},
                                       lr, images.astype(np.float64), labels)
    exact = _params_numpy(exact_model)
    for name in players:
        if name != reference_name:
            agrees = (checks.close(after[name], after[reference_name], workload.dtype)
                      and abs(losses[name] - losses[reference_name])
                      <= 1e-4 * abs(losses[reference_name]))
            exactly = (checks.close(after[name], exact, workload.dtype)
                       and abs(losses[name] - exact_loss) <= 1e-4 * abs(exact_loss))
            check["match"][f"{name} step"] = agrees or exactly
            check["error"][f"{name} step"] = checks.worst_error(
                after[name], after[reference_name] if agrees else exact)
    check["reference_exact"] = {
        "match": (checks.close(after[reference_name], exact, workload.dtype)
                  and abs(losses[reference_name] - exact_loss) <= 1e-4 * abs(exact_loss)),
        "error": checks.worst_error(after[reference_name], exact)}
    if "cyconv" in players:
        per_thread = {}
        for n in settings.threads:
            timing.set_threads(n)
            model, _, _ = _step(players["cyconv"], params, lr, images, labels)
            per_thread[n] = _params_numpy(model)
        check["bitwise"]["step"] = (all(checks.identical(per_thread[n], per_thread[settings.threads[0]])
                                        for n in settings.threads) if len(settings.threads) > 1 else None)
        timing.set_threads(settings.threads[0])
    if workload.tutorial_samples is None:
        return _time_steps(workload, settings, steps, check, None, log), check
    # The tutorial trains one sample at a time: its step on one sample must
    # equal a batch-of-one step of the reference.
    tutorial = baselines_tutorial.LeNet(params, lr)
    tutorial.train_step(images[:1], labels[:1])
    model, _, _ = _step(players[reference_name], params, lr, images[:1], labels[:1])
    check["match"]["tutorial step"] = checks.close(
        _params_numpy(tutorial), _params_numpy(model), workload.dtype)
    check["error"]["tutorial step"] = checks.worst_error(_params_numpy(tutorial), _params_numpy(model))

    k = workload.tutorial_samples
    tutorial = baselines_tutorial.LeNet(params, lr)
    t = timing.measure_slow(lambda: tutorial.train_step(images[:k], labels[:k]),
                            settings.tutorial_budget, max_repeat=max(settings.tutorial_repeat, 3),
                            warm_up=settings.tutorial_warm_up and (
                                lambda: tutorial.train_step(images[:1], labels[:1])))
    tutorial_ms = t.median * 1e3 * workload.batch / k
    return _time_steps(workload, settings, steps, check, tutorial_ms, log), check


def _time_steps(workload, settings, steps, check, tutorial_ms, log):
    reference_name = check["reference"]
    rows = []
    for n in settings.threads:
        timing.set_threads(n)
        measured, load = settings.compare(steps, n)
        ms = {name: t.median * 1e3 for name, t in measured.items()}
        if tutorial_ms is not None:
            ms["tutorial"] = tutorial_ms
        row = _row(workload, "train step", n, ms, check, workload.tutorial_samples, load,
                   spread={name: (t.low * 1e3, t.high * 1e3, t.count) for name, t in measured.items()})
        row["flops"] = workload.flops()
        row["gflops"] = {name: row["flops"] / (v * 1e-3) / 1e9 for name, v in ms.items()}
        row["match_torch"] = check["match"].get("cyconv step") if reference_name == "torch" else None
        row["bitwise_threads"] = check["bitwise"].get("step")
        rows.append(row)
        log(_row_text(row))
    return rows


# --------------------------------------------------------------------------
# Fresh processes: import + first conv, peak memory

def _probe(args):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "probes.py"), *args],
                          capture_output=True, text=True, cwd=HERE)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"probe {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def run_startup(settings, log):
    frameworks = ["cyconv", "tutorial"] + (["torch"] if settings.use_torch else [])
    samples = {name: {"seconds": [], "process": []} for name in frameworks}
    # Interleaved, like the timings: a busy moment costs every framework.
    for _ in range(settings.process_runs):
        for name in frameworks:
            result, wall = _probe(["import", name])
            samples[name]["seconds"].append(result["seconds"])
            samples[name]["process"].append(wall)
    out = {name: {"seconds": float(np.median(s["seconds"])),
                  "process_seconds": float(np.median(s["process"])), "runs": len(s["seconds"])}
           for name, s in samples.items()}
    for name, value in out.items():
        log(f"import + first conv, {name}: {value['seconds']:.3f} s "
            f"(whole process {value['process_seconds']:.3f} s)")
    return out


def run_memory(settings, log):
    threads = max(settings.threads)
    frameworks = ["cyconv", "numpy"] + (["torch"] if settings.use_torch else [])
    out = {}
    for name in frameworks:
        runs = [_probe(["memory", name, str(threads)])[0] for _ in range(settings.memory_runs)]
        traced = [r["tracemalloc_mib"] for r in runs if r["tracemalloc_mib"] is not None]
        out[name] = {"rss_mib": float(np.median([r["rss_mib"] for r in runs])),
                     "tracemalloc_mib": float(np.median(traced)) if traced else None,
                     "method": runs[0]["method"], "threads": threads, "runs": len(runs)}
        log(f"W3 f32 fwd+bwd peak memory, {name}: {out[name]['rss_mib']:.1f} MiB resident "
            f"({out[name]['method']})")
    return out


# --------------------------------------------------------------------------

def openmp_runtime():
    """The OpenMP runtime(s) loaded in this process and their wait settings."""
    libraries = set()
    try:
        with open("/proc/self/maps") as f:
            libraries = {line.split()[-1] for line in f
                         if line.split()[-1].rsplit("/", 1)[-1].startswith(("libgomp", "libomp", "libiomp"))}
    except OSError:
        pass
    return {"libraries": sorted(libraries),
            "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}


def vector_extensions():
    """The processor's vector instruction sets that matter to the kernels
    (from /proc/cpuinfo's flags), e.g. "avx512f avx2 fma"."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return "?"
    return " ".join(name for name in ("avx512f", "avx512bw", "avx512vl", "avx2", "fma")
                    if name in flags) or "none of avx512f, avx2, fma"


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    show_config = getattr(cyconv, "show_config", None)
    import scipy

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cyconv", "setup.py"],
                               cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except OSError:
        commit = "?"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
        "vector": vector_extensions(),
        "kernels": (show_config(mode="dicts")["direct convolution kernels"]
                    if show_config else None) if not _RESTRICTION else "avx2",
        "openmp": openmp_runtime(),
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "torch": baselines_torch.torch.__version__ if baselines_torch.available else None,
        "cyconv": cyconv_adapter.describe(), "cyconv_commit": commit,
        "blas_threads": timing.blas_control(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def run_peak(settings, peak, log):
    """Measure numpy's sgemm and dgemm at every thread count, keeping the
    best of this and any earlier measurement."""
    for n in settings.threads:
        timing.set_threads(n)
        if settings.gate is not None:
            settings.gate.wait(n, 0.2, time.perf_counter() + settings.gate.per_measurement)
        entry = peak.setdefault(str(n), {})
        for kind, dtype in (("sgemm", np.float32), ("dgemm", np.float64)):
            new = timing.gemm_peak(dtype)
            old = entry.get(kind)
            runs = (old["runs"] if old else []) + [new]
            entry[kind] = {"median_gflops": max(r["median_gflops"] for r in runs),
                           "best_gflops": max(r["best_gflops"] for r in runs),
                           "size": new["size"], "runs": runs}
        log(f"{n} thread(s): sgemm {entry['sgemm']['median_gflops']:.0f} GFLOP/s, "
            f"dgemm {entry['dgemm']['median_gflops']:.0f} GFLOP/s (median; best so far)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true",
                        help="short budgets, conv forward+backward only (about 2 minutes)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts, each given to cyconv, PyTorch and BLAS (default 1 2)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="at least this many timed calls per contender and measurement "
                             "(default 6, quick 2)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed calls per measurement (default 1.5, quick 0.3)")
    parser.add_argument("--only", default=None,
                        help="comma-separated parts to run: W1a,W1b,W2,W3,W4,C1,C2,C3,LeNet,CIFAR,startup,memory,peak "
                             "(the gemm peak also runs with any conv workload)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: cyconv's convolution and pooling kernels, PyTorch and "
                             "BLAS restricted to AVX2 and FMA (on a processor with AVX-512, "
                             "to measure the AVX2 code paths)")
    parser.add_argument("--no-wait", action="store_true",
                        help="never wait for other processes to leave the cores free")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="directory for RESULTS.md, results.json and results.png")
    return parser.parse_args(argv)


def restrict_to_avx2():
    """cyconv's AVX2 variants for the rest of the run (the others were
    restricted by AVX2_ENVIRONMENT when they loaded)."""
    from cyconv import _pool, _runtime
    from cyconv._kernels import _pool as pool_kernels

    if "avx2" not in _runtime.available_isas():
        raise SystemExit("--isa avx2 needs a processor with AVX2 and FMA")
    if any(os.environ.get(name) != value for name, value in AVX2_ENVIRONMENT.items()):
        raise SystemExit("--isa avx2 must be given on the command line as --isa avx2 or "
                         "--isa=avx2 (the other libraries read it before the arguments are parsed)")
    # kept, and left only at exit: a context manager that is collected
    # restores what it changed
    _RESTRICTION.append(_runtime.direct_convolution("auto", "avx2"))
    _RESTRICTION[-1].__enter__()
    _pool.PAIRS_ISA = pool_kernels.PAIRS_ISAS["avx2"]


_RESTRICTION = []


def main(argv=None):
    args = parse_args(argv)
    if args.isa == "avx2":
        restrict_to_avx2()
    settings = Settings(args)
    wanted = set(args.only.split(",")) if args.only else None
    started = time.perf_counter()

    def selected(key):
        return wanted is None or key in wanted

    def log(text):
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", flush=True)

    results = {"settings": {"quick": settings.quick, "threads": settings.threads,
                            "budget_s": settings.budget, "min_calls": settings.min_calls,
                            "passes": settings.passes, "isa": args.isa,
                            "command": " ".join(["python", "benchmarks/run.py"] + sys.argv[1:])},
               "machine": machine(), "peak": {}, "rows": [], "checks": {}}
    log(f"{results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"threads {settings.threads}; torch {'on' if settings.use_torch else 'off'}")

    measure_peak = selected("peak") or bool(wanted & {w.key for w in CONV_WORKLOADS})
    if measure_peak:
        run_peak(settings, results["peak"], log)

    for workload in CONV_WORKLOADS:
        if selected(workload.key):
            rows, check = run_conv_workload(workload, settings, log)
            results["rows"] += rows
            results["checks"][workload.label] = check
    for workload in LENET_WORKLOADS + CIFAR_WORKLOADS:
        if selected(workload.key):
            rows, check = run_lenet_workload(workload, settings, log)
            results["rows"] += rows
            results["checks"][workload.label] = check

    if measure_peak and not settings.quick:
        # Again at the end: the peak is the machine's best, and a busy
        # moment at the start would understate it.
        run_peak(settings, results["peak"], log)
    if selected("startup"):
        results["startup"] = run_startup(settings, log)
    if selected("memory"):
        results["memory"] = run_memory(settings, log)

    if settings.gate is not None:
        results["settings"]["waited_s"] = settings.gate.waited
    results["targets"] = targets.evaluate(results)
    results["elapsed_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    written = report.write_all(results, args.out)
    for line in report.target_lines(results["targets"]):
        log(line)
    log("wrote " + ", ".join(str(p) for p in written))
    failed = [f"{label} ({', '.join(key for key, ok in c['match'].items() if not ok)})"
              for label, c in results["checks"].items() if not all(c["match"].values())]
    if failed:
        log("RESULTS DISAGREE in: " + "; ".join(failed) + " (see the checks table)")
    off = [label for label, c in results["checks"].items()
           if not c.get("reference_exact", {"match": True})["match"]]
    if off:
        log("note: the reference's own step is off its float64 step in: " + ", ".join(off))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
