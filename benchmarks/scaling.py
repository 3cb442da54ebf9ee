"""Data-parallel scaling: measured on this machine, modelled past it.

    python benchmarks/scaling.py            # about two minutes on two cores

Measures, with MPI ranks started by mpich's ``mpirun`` (``pip install
"cyconv[mpi]"``):

- the training step (forward, loss, backward, optimizer) of LeNet
  (1x28x28) and of a CIFAR-like network (3x32x32, conv 32/64/128 3x3 with
  ReLU and 2x2 max pooling, then dense), global batch 64, at 1 rank x 1
  thread, 1 rank x 2 threads and 2 ranks x 1 thread (cyconv's own
  distributed step: each rank's slice of 32, one fused Allreduce);
  one rank at batch 32 too, which separates the per-step cost that does
  not shrink with the batch from the per-sample cost;
- ``Allreduce`` (sum, in place) of float32 buffers from 4 KB to 16 MB on 2
  ranks (loopback), fitted as ``latency + bytes / bandwidth``.

From these it models the step time at K ranks (see ``MODEL`` below), plots
it to ``benchmarks/scaling.png`` and writes ``benchmarks/SCALING.md`` and
``benchmarks/scaling.json``.  Medians throughout: the machine is shared.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GLOBAL_BATCH = 64
RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
TABLE_RANKS = [4, 16, 64, 256]
# The large global batch the strong-scaling curves split (64 per rank at 256 ranks).
MODEL_GLOBAL_BATCH = 16384
ALLREDUCE_BYTES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
# An interconnect between machines, for comparison with loopback (an
# assumption, not a measurement): 10 Gb/s Ethernet, 30 us per message.
ASSUMED_NETWORK = {"name": "10 Gb/s Ethernet (assumed)", "latency": 30e-6,
                   "seconds_per_byte": 1 / 1.25e9}

MODEL = """\
- Step time at K ranks = compute(B / K) + allreduce(K).
- compute(b) = c * b, with c the one-rank, one-thread step at batch 64
  divided by 64: compute / K for a global batch split K ways.  Each rank
  has a core of its own, as the 2-rank x 1-thread runs here had.  A step
  also has a cost that does not shrink with the batch (Python, layer
  calls, the optimizer: the intercept c0 of the batch-32 and batch-64
  steps, below); leaving it out makes the model optimistic about compute
  at small batches and so cautious about when communication dominates.
- allreduce(K) = 2 (K - 1) * latency + 2 (K - 1) / K * bytes * seconds_per_byte:
  a ring allreduce, in which each rank sends and receives 2 (K - 1) / K of
  the gradient bytes in 2 (K - 1) messages.  latency and seconds_per_byte
  are fitted to the 2-rank loopback measurements (a 2-rank ring: 2
  messages, the whole buffer once), so they describe shared memory on one
  machine, a best case; a real network is slower, shown beside it with
  assumed figures.  One fused buffer per step (cyconv's), no overlap of
  communication with the backward pass, no stragglers.
- Communication dominates when allreduce(K) > compute(b): below the batch
  per rank b* = allreduce(K) / c.
"""


def networks():
    """name -> (builder(rng), sample shape); imported here so that the
    driver process stays light."""
    from cyconv import Convolution, Dense, Flatten, MaxPooling, ReLU, Sequential
    from cyconv.cli import build_lenet

    def cifar_like(rng):
        return Sequential([
            Convolution((3, 32, 32), 3, 32, padding=1, rng=rng), ReLU(), MaxPooling(2),
            Convolution((32, 16, 16), 3, 64, padding=1, rng=rng), ReLU(), MaxPooling(2),
            Convolution((64, 8, 8), 3, 128, padding=1, rng=rng), ReLU(), MaxPooling(2),
            Flatten(), Dense(128 * 4 * 4, 10, rng=rng),
        ])

    return {"LeNet": (lambda rng: build_lenet(rng=rng), (1, 28, 28)),
            "CIFAR-like": (cifar_like, (3, 32, 32))}


# -- the worker: runs under mpirun ------------------------------------------

def _median_seconds(call, repeats, warmup=3):
    from mpi4py import MPI

    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        MPI.COMM_WORLD.Barrier()
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def worker_steps(threads, batch, repeats):
    import cyconv
    from cyconv.distributed import DataParallel
    from cyconv.nn.losses import get_loss
    from cyconv.nn.optimizers import SGD
    from mpi4py import MPI

    cyconv.set_num_threads(threads)
    ranks = MPI.COMM_WORLD.Get_size()
    loss = get_loss("softmax_cross_entropy")
    results = {}
    for name, (build, shape) in networks().items():
        model = build(np.random.default_rng(0))
        rng = np.random.default_rng(1)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        y = rng.integers(0, 10, batch)
        optimizer = SGD(0.01, momentum=0.9)
        parameters = model.parameters()
        parallel = DataParallel(model) if ranks > 1 else None
        allreduce = []

        def step():
            if parallel is None:
                value, grad = loss.value_and_gradient(y, model.forward(x))
                model.backward(grad)
            else:
                part = parallel.part(batch)
                value, grad = loss.value_and_gradient(y[part], model.forward(x[part]))
                model.backward(grad)
                start = time.perf_counter()
                parallel.average(part.stop - part.start, batch)
                allreduce.append(time.perf_counter() - start)
            optimizer.step(parameters)

        seconds = _median_seconds(step, repeats)
        results[name] = {
            "seconds": seconds,
            "allreduce_seconds": statistics.median(allreduce) if allreduce else 0.0,
            "gradient_bytes": sum(p.value.nbytes for p in parameters),
            "parameters": sum(p.value.size for p in parameters),
        }
    return results


def worker_allreduce(repeats):
    from mpi4py import MPI

    results = {}
    for size in ALLREDUCE_BYTES:
        buffer = np.ones(size // 4, dtype=np.float32)

        def call(buffer=buffer):
            MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)

        results[size] = _median_seconds(call, repeats)
    return results


def worker(args):
    from mpi4py import MPI

    if args.worker == "steps":
        result = worker_steps(args.threads, args.batch, args.repeats)
    else:
        result = worker_allreduce(args.repeats)
    if MPI.COMM_WORLD.Get_rank() == 0:
        Path(args.out).write_text(json.dumps(result))


# -- the driver -------------------------------------------------------------

def _mpirun():
    beside = Path(sys.executable).parent / "mpirun"
    return str(beside) if beside.exists() else "mpirun"


def _busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy (Linux), or None."""
    try:
        with open("/proc/stat") as stream:
            fields = [int(value) for value in stream.readline().split()[1:]]
    except OSError:
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds():
    times = os.times()
    return times.children_user + times.children_system


def launch(ranks, *worker_args):
    """Run a worker on ``ranks`` ranks; return its results and the cores
    other processes kept busy meanwhile."""
    out = HERE / f".scaling-{os.getpid()}.json"
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    command = [_mpirun(), "-n", str(ranks), sys.executable, "-m", "mpi4py", __file__,
               "--worker", *map(str, worker_args), "--out", str(out)]
    start = time.perf_counter(), _busy_cpu_seconds(), _children_cpu_seconds()
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - start[0]
    busy = _busy_cpu_seconds()
    others = (None if busy is None else
              max(0.0, (busy - start[1] - (_children_cpu_seconds() - start[2])) / wall))
    try:
        return json.loads(out.read_text()), others
    finally:
        out.unlink()


def wait_for_quiet(limit, cores=0.5):
    """Sleep, up to ``limit`` seconds, until other processes keep fewer than
    ``cores`` busy; return the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        before, begun = _busy_cpu_seconds(), time.perf_counter()
        if before is None:
            break
        time.sleep(1.0)
        if (_busy_cpu_seconds() - before) / (time.perf_counter() - begun) < cores:
            break
    return time.perf_counter() - start


def processor_name():
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown processor"


def fit_allreduce(measured):
    """latency per message and seconds per byte, from 2-rank times: a
    2-rank ring sends the whole buffer once, in 2 messages."""
    sizes = np.array([int(size) for size in measured], dtype=float)
    seconds = np.array(list(measured.values()))
    # Weighted by 1 / time: relative errors, so that the small sizes
    # (latency) count as much as the large ones (bandwidth).
    slope, intercept = np.polyfit(sizes, seconds, 1, w=1 / seconds)
    return {"latency": max(intercept, 0.0) / 2, "seconds_per_byte": slope}


def allreduce_seconds(bytes_, ranks, network):
    if ranks == 1:
        return 0.0
    return (2 * (ranks - 1) * network["latency"]
            + 2 * (ranks - 1) / ranks * bytes_ * network["seconds_per_byte"])


def compute_model(one_rank_64, one_rank_32):
    """(c, c0, c1): the model's cost per sample, and the line through the
    batch-32 and batch-64 steps, for the report."""
    slope = (one_rank_64 - one_rank_32) / 32
    return one_rank_64 / 64, one_rank_32 - 32 * slope, slope


def model_rows(name, net, networks_):
    per_sample = net["compute"][0]
    rows = []
    for ranks in RANKS:
        compute = per_sample * MODEL_GLOBAL_BATCH / ranks
        row = {"ranks": ranks, "compute": compute}
        for key, network in networks_.items():
            communication = allreduce_seconds(net["gradient_bytes"], ranks, network)
            row[key] = {"allreduce": communication, "step": compute + communication,
                        "dominant_batch": communication / per_sample if ranks > 1 else None}
        rows.append(row)
    return rows


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = {"LeNet": "tab:blue", "CIFAR-like": "tab:red"}
    for name, net in results["networks"].items():
        rows = net["model"]
        ranks = [row["ranks"] for row in rows]
        colour = colours[name]
        left.plot(ranks, [1e3 * row["loopback"]["step"] for row in rows], "-o", color=colour,
                  label=f"{name}: step, loopback figures")
        left.plot(ranks, [1e3 * row["network"]["step"] for row in rows], "--", color=colour,
                  label=f"{name}: step, {ASSUMED_NETWORK['name']}")
        left.plot(ranks, [1e3 * row["compute"] for row in rows], ":", color=colour,
                  label=f"{name}: compute alone")
        for key, style in (("loopback", "-o"), ("network", "--")):
            points = [(row["ranks"], row[key]["dominant_batch"]) for row in rows
                      if row[key]["dominant_batch"] is not None]
            if points:
                where = "loopback figures" if key == "loopback" else ASSUMED_NETWORK["name"]
                right.plot(*zip(*points), style, color=colour, label=f"{name}, {where}")
    left.set(xscale="log", yscale="log", xlabel="ranks K",
             ylabel=f"step time (ms), global batch {MODEL_GLOBAL_BATCH}",
             title="Modelled step time: compute(B/K) + ring allreduce")
    left.set_xticks(RANKS, [str(k) for k in RANKS])
    left.legend(fontsize=7)
    right.set(xscale="log", yscale="log", xlabel="ranks K",
              ylabel="batch per rank (samples)",
              title="Communication dominates below this batch per rank")
    right.set_xticks(RANKS[1:], [str(k) for k in RANKS[1:]])
    right.legend(fontsize=7)
    figure.suptitle(f"cyconv data-parallel model, measured on {results['processor']} "
                    f"({results['cores']} cores)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _free_cores_two_ranks(net, fit):
    return (net["measured"]["1x1@32"]["seconds"]
            + allreduce_seconds(net["gradient_bytes"], 2, fit))


def _ms(seconds):
    return f"{1e3 * seconds:.2f}"


def _batch(value):
    return "< 1" if value < 1 else f"{value:,.0f}"


def report(results):
    lines = [
        "# Data-parallel scaling",
        "",
        f"Generated by `python benchmarks/scaling.py` on {results['date']}: "
        f"{results['processor']}, {results['cores']} cores, shared with other work "
        f"(load average {results['load']:.1f} at the start; other processes kept "
        f"{results.get('other_cores', float('nan')):.2f} cores busy during the runs, median "
        f"over runs, after waiting {results['waited']:.0f} s in all for quieter moments); "
        f"mpi4py {results['mpi4py']}, "
        f"{results['mpi']}. Each figure is the median over {results['rounds']} rounds "
        f"(every configuration in turn) of the median of {results['repeats']} steps "
        f"after 3 warm-up steps.",
        "",
        "## Measured: one training step, global batch 64 (float32, SGD with momentum)",
        "",
        "| network | parameters | gradient bytes | 1 rank x 1 thread (ms) | "
        "1 rank x 2 threads (ms) | 2 ranks x 1 thread (ms) | of which Allreduce (ms) | "
        "2 ranks vs 1 rank x 1 thread | 2 ranks vs 1 rank x 2 threads | "
        "2 ranks on free cores, expected (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fit = results["allreduce_fit"]
    for name, net in results["networks"].items():
        one, two_threads, two_ranks = (net["measured"][key] for key in
                                       ("1x1", "1x2", "2x1"))
        lines.append(
            f"| {name} | {net['parameters']:,} | {net['gradient_bytes']:,} | "
            f"{_ms(one['seconds'])} | {_ms(two_threads['seconds'])} | "
            f"{_ms(two_ranks['seconds'])} | {_ms(two_ranks['allreduce_seconds'])} | "
            f"{one['seconds'] / two_ranks['seconds']:.2f}x | "
            f"{two_threads['seconds'] / two_ranks['seconds']:.2f}x | "
            f"{_ms(_free_cores_two_ranks(net, fit))} |")
    lines += [
        "",
        "*of which Allreduce*: rank 0's time in the fused Allreduce of the step, which "
        "includes waiting for the other rank to finish its slice.  *Expected on free "
        "cores*: the one-rank step at batch 32 (each rank's slice) plus the fitted "
        "2-rank Allreduce of the gradient bytes, what 2 ranks would take with a core each.",
    ]
    others = results.get("other_cores")
    if others is not None and others > 0.3:
        lines += [
            "",
            f"Other processes kept {others:.2f} of the {results['cores']} cores busy during "
            f"these runs (median), so 2 ranks or 2 threads had far less than 2 cores: "
            f"the 2-rank and 2-thread columns measure that contention as much as cyconv.",
        ]
    lines += ["", "Compute per sample c (one rank x 1 thread, batch 64), and the line "
              "c0 + c1 b through the batch-32 and batch-64 steps:", ""]
    for name, net in results["networks"].items():
        per_sample, fixed, slope = net["compute"]
        lines.append(f"- {name}: c = {1e6 * per_sample:.0f} us per sample; batch 32: "
                     f"{_ms(net['measured']['1x1@32']['seconds'])} ms, so c0 = {_ms(fixed)} ms "
                     f"and c1 = {1e6 * slope:.0f} us per sample")
    lines += ["", "## Measured: Allreduce on 2 ranks (loopback, float32, in place)", "",
              "| bytes | median (us) | bytes / second |", "|---|---|---|"]
    for size, seconds in results["allreduce"].items():
        lines.append(f"| {int(size):,} | {1e6 * seconds:.1f} | {int(size) / seconds / 1e9:.2f} GB/s |")
    lines += ["", f"Fit: latency {1e6 * fit['latency']:.1f} us per message, "
              f"{1e12 * fit['seconds_per_byte']:.0f} ps per byte "
              f"({1e-9 / fit['seconds_per_byte']:.2f} GB/s).", "",
              "## Model", "", MODEL,
              f"Network for comparison: {ASSUMED_NETWORK['name']}, "
              f"{1e6 * ASSUMED_NETWORK['latency']:.0f} us per message, "
              f"{1e-9 / ASSUMED_NETWORK['seconds_per_byte']:.2f} GB/s.", "",
              f"![modelled step time and the batch below which communication dominates]"
              f"(scaling.png)", "",
              f"Step time (ms) with a global batch of {MODEL_GLOBAL_BATCH:,} split over K "
              f"ranks, and the batch per rank below which the Allreduce takes longer than "
              f"the compute:", "",
              "| network | K | compute (ms) | allreduce loopback (ms) | step loopback (ms) | "
              "communication dominates below (loopback) | allreduce 10 GbE (ms) | "
              "step 10 GbE (ms) | dominates below (10 GbE) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, net in results["networks"].items():
        for row in net["model"]:
            if row["ranks"] not in TABLE_RANKS:
                continue
            loop, network = row["loopback"], row["network"]
            lines.append(
                f"| {name} | {row['ranks']} | {_ms(row['compute'])} | "
                f"{_ms(loop['allreduce'])} | {_ms(loop['step'])} | "
                f"{_batch(loop['dominant_batch'])} | {_ms(network['allreduce'])} | "
                f"{_ms(network['step'])} | {_batch(network['dominant_batch'])} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=["steps", "allreduce"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=GLOBAL_BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed steps per configuration and round (default 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over every configuration (default 3)")
    parser.add_argument("--report-only", action="store_true",
                        help="redraw scaling.png and rewrite SCALING.md from scaling.json")
    parser.add_argument("--wait", type=float, default=20.0, metavar="SECONDS",
                        help="before each run, wait up to this long for other processes "
                             "to leave the cores free (default 20)")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.report_only:
        return write_outputs(json.loads((HERE / "scaling.json").read_text()))

    import mpi4py
    from mpi4py import MPI  # noqa: F401  (the library's name, for the report)

    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "processor": processor_name(), "cores": os.cpu_count(), "load": os.getloadavg()[0],
        "mpi4py": mpi4py.__version__,
        "mpi": " ".join(MPI.Get_library_version().split()[:3]),
        "repeats": args.repeats, "rounds": args.rounds, "networks": {},
    }
    configurations = {"1x1": (1, 1, GLOBAL_BATCH), "1x2": (1, 2, GLOBAL_BATCH),
                      "2x1": (2, 1, GLOBAL_BATCH), "1x1@32": (1, 1, GLOBAL_BATCH // 2)}
    # Rounds over every configuration in turn, so that a busy spell on the
    # shared machine slows one round of each rather than one configuration.
    rounds = {key: [] for key in configurations}
    allreduce_rounds, others, waited = [], [], 0.0
    for round_ in range(args.rounds):
        for key, (ranks, threads, batch) in configurations.items():
            print(f"round {round_ + 1}/{args.rounds}: {ranks} rank(s) x {threads} thread(s), "
                  f"batch {batch}", flush=True)
            waited += wait_for_quiet(args.wait)
            result, load = launch(ranks, "steps", "--threads", threads, "--batch", batch,
                                  "--repeats", args.repeats)
            rounds[key].append(result)
            others.append(load)
        waited += wait_for_quiet(args.wait)
        result, load = launch(2, "allreduce", "--repeats", 5 * args.repeats)
        allreduce_rounds.append(result)
        others.append(load)
    if None not in others:
        results["other_cores"] = statistics.median(others)
    results["waited"] = waited
    for key, measured in rounds.items():
        for name, values in measured[0].items():
            net = results["networks"].setdefault(name, {
                "parameters": values["parameters"],
                "gradient_bytes": values["gradient_bytes"], "measured": {}})
            net["measured"][key] = {
                field: statistics.median(round_[name][field] for round_ in measured)
                for field in ("seconds", "allreduce_seconds")}
    results["allreduce"] = {size: statistics.median(round_[size] for round_ in allreduce_rounds)
                            for size in allreduce_rounds[0]}
    results["allreduce_fit"] = fit_allreduce(results["allreduce"])
    interconnects = {"loopback": results["allreduce_fit"], "network": ASSUMED_NETWORK}
    for name, net in results["networks"].items():
        net["compute"] = compute_model(net["measured"]["1x1"]["seconds"],
                                       net["measured"]["1x1@32"]["seconds"])
        net["model"] = model_rows(name, net, interconnects)
    (HERE / "scaling.json").write_text(json.dumps(results, indent=1) + "\n")
    return write_outputs(results)


def write_outputs(results):
    plot(results, HERE / "scaling.png")
    text = report(results)
    (HERE / "SCALING.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
