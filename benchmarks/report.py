"""RESULTS.md, results.json and the chart, from one run's results."""

import json
from pathlib import Path

FRAMEWORKS = ["cyconv", "torch", "numpy", "tutorial"]
# Rows of whole training steps rather than layers.
STEP_LABELS = ("LeNet", "CIFAR")


def fmt_ms(value):
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}"


def fmt_times(value):
    if value is None:
        return "n/a"
    return f"{value:,.0f}x" if value >= 10 else f"{value:.1f}x"


def fmt_check(value):
    return {True: "yes", False: "**NO**", None: "—"}[value]


def fmt_status(status):
    return {"met": "met", "missed": "**missed**", "n/a": "n/a"}[status]


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _find(rows, label, op, threads):
    return next((r for r in rows if r["label"] == label and r["op"] == op
                 and r["threads"] == threads), None)


def _labels(rows):
    labels = []
    for row in rows:
        if row["label"] not in labels:
            labels.append(row["label"])
    return labels


def _target_value(target):
    value = target["value"]
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if target["limit"].endswith("x"):
        return fmt_times(value)
    if target["limit"].endswith(" s"):
        return f"{value:.3f} s"
    return f"{value:.2f}"


def target_lines(targets):
    counts = {s: sum(t["status"] == s for t in targets) for s in ("met", "missed", "n/a")}
    lines = [f"targets: {counts['met']} met, {counts['missed']} missed, {counts['n/a']} n/a"]
    for t in targets:
        if t["status"] == "missed":
            threads = f" at {t['threads']} thread(s)" if t["threads"] else ""
            lines.append(f"  missed: {t['target']}{threads}: {_target_value(t)} (want {t['limit']})")
    return lines


def _ratio_pair(row):
    """'median ratio (ratio of the fastest calls)'."""
    if row is None or row["ratio_torch"] is None:
        return "n/a"
    best = row.get("ratio_torch_best")
    return fmt_ratio(row["ratio_torch"]) + ("" if best is None else f" ({fmt_ratio(best)})")


def headline(results):
    rows = results["rows"]
    threads = results["settings"]["threads"]
    n1 = 1 if 1 in threads else min(threads)
    header = (["workload", "shape"]
              + [f"conv fwd+bwd cy/torch {n}t" for n in threads]
              + [f"pool fwd+bwd cy/torch {n}t" for n in threads]
              + [f"conv vs tutorial ({n1}t)", f"pool vs tutorial ({n1}t)"])
    body = []
    for label in _labels(rows):
        if label.startswith(STEP_LABELS):
            continue
        any_row = next(r for r in rows if r["label"] == label)
        cells = [label, any_row["shape"]]
        for op in ("conv fwd+bwd", "pool fwd+bwd"):
            for n in threads:
                row = _find(rows, label, op, n)
                cells.append(_ratio_pair(row))
        for op in ("conv fwd+bwd", "pool fwd+bwd"):
            row = _find(rows, label, op, n1)
            cells.append(fmt_times(row and row["speedup_tutorial"]))
        body.append(cells)
    text = _table(header, body) if body else ""
    lenet = []
    for label in _labels(rows):
        if not label.startswith(STEP_LABELS):
            continue
        cells = [label]
        for n in threads:
            row = _find(rows, label, "train step", n)
            cells += [fmt_ms(row and row["ms"].get("cyconv")), fmt_ms(row and row["ms"].get("torch")),
                      _ratio_pair(row)]
        row = _find(rows, label, "train step", n1)
        cells.append(fmt_times(row and row["speedup_tutorial"]))
        lenet.append(cells)
    if lenet:
        header = ["training step"]
        for n in threads:
            header += [f"cyconv ms {n}t", f"torch ms {n}t", f"cy/torch {n}t"]
        header.append(f"vs tutorial ({n1}t)")
        text += "\n\n" + _table(header, lenet)
    return text


def detail(results, n):
    rows = [r for r in results["rows"] if r["threads"] == n]
    peak = results["peak"].get(str(n), {})
    header = ["workload", "op", "cyconv ms", "torch ms", "numpy ms", "tutorial ms", "k",
              "cyconv GFLOP/s (% of gemm peak)", "cy/torch", "cy/torch of fastest calls",
              "numpy/torch", "vs tutorial",
              "cyconv = torch", "1t = 2t bitwise", "other load"]
    body = []
    for row in rows:
        ms = row["ms"]
        gflops = row["gflops"].get("cyconv")
        gemm = peak.get("sgemm" if row["dtype"] == "float32" else "dgemm", {}).get("best_gflops")
        gcell = "—"
        if gflops is not None:
            gcell = f"{gflops:.1f}" + (f" ({100 * gflops / gemm:.0f}%)" if gemm else "")
        body.append([row["label"], row["op"], fmt_ms(ms.get("cyconv")), fmt_ms(ms.get("torch")),
                     fmt_ms(ms.get("numpy")), fmt_ms(ms.get("tutorial")), row["tutorial_samples"],
                     gcell, fmt_ratio(row["ratio_torch"]), fmt_ratio(row.get("ratio_torch_best")),
                     fmt_ratio(row["ratio_numpy_torch"]),
                     fmt_times(row["speedup_tutorial"]), fmt_check(row["match_torch"]),
                     fmt_check(row["bitwise_threads"]),
                     "n/a" if row.get("other_load") is None else f"{row['other_load']:.2f}"])
    return _table(header, body)


def checks_table(results):
    body = []
    for label, check in results["checks"].items():
        groups = {}
        for key, ok in check["match"].items():
            who = key.split()[0]
            groups.setdefault(who, []).append((ok, check["error"].get(key, 0.0)))
        cells = [label, check["reference"]]
        for who in ("cyconv", "numpy", "tutorial"):
            if who == check["reference"] or who not in groups:
                cells.append("—" if who == check["reference"] else "n/a")
                continue
            ok = all(g[0] for g in groups[who])
            worst = max(g[1] for g in groups[who])
            cells.append(f"{'yes' if ok else '**NO**'} ({worst:.1e})")
        exact = check.get("reference_exact")
        cells.append("n/a" if exact is None else
                     f"{'yes' if exact['match'] else 'no'} ({exact['error']:.1e})")
        body.append(cells)
    return _table(["workload", "reference", "cyconv", "numpy", "tutorial",
                   "reference vs its float64 step"], body)


def markdown(results):
    m = results["machine"]
    s = results["settings"]
    threads = s["threads"]
    out = ["# cyconv benchmarks", ""]
    out.append(f"Generated by `{s['command']}`{' (quick mode: short budgets, forward and backward timed together only)' if s['quick'] else ''} "
               f"on {m['date']}; the run took {results['elapsed_s'] / 60:.1f} minutes.")
    out.append("")
    vector = (f" (vector extensions: {m['vector']}; cyconv's direct kernels: {m.get('kernels')})"
              if m.get("vector") else "")
    if s.get("isa") == "avx2":
        vector += (", restricted to AVX2 and FMA: cyconv's convolution and pooling kernels "
                   "(its ReLU and batch-normalisation loops, and numpy, keep their own "
                   "dispatch), PyTorch, oneDNN, MKL and OpenBLAS (by their environment "
                   "variables)")
    out.append(f"Machine: {m['cpu']}{vector}, {m['cores']} cores, {m['platform']}. "
               f"Python {m['python']}, "
               f"numpy {m['numpy']}, scipy {m['scipy']}, PyTorch {m['torch'] or 'not installed'}, "
               f"cyconv {m['cyconv']['version']} at commit {m['cyconv_commit']}.")
    out.append("")
    loads = [r["other_load"] for r in results["rows"] if r.get("other_load") is not None]
    if loads:
        loads.sort()
        out.append(f"Other processes on this shared machine kept {loads[len(loads) // 2]:.2f} cores "
                   f"busy (median over the timed rows; most {loads[-1]:.2f}) while cyconv's contenders "
                   "were timed"
                   + (f"; the run waited {s['waited_s']:.0f} s in all for quieter moments"
                      if s.get("waited_s") is not None else "")
                   + ". See the `other load` column.")
        out.append("")
    out.append("Threads: `cyconv.set_num_threads(n)` and `torch.set_num_threads(n)` in the same "
               f"process; numpy's BLAS {m['blas_threads']}. The tutorial's loops are "
               "single-threaded whatever the setting and are timed once.")
    out.append("")
    omp = m.get("openmp")
    if omp:
        libraries = ", ".join(f"`{Path(lib).parent.parent.name}/{Path(lib).parent.name}/{Path(lib).name}`"
                              for lib in omp["libraries"]) or "none found"
        out.append(f"OpenMP: one runtime serves cyconv and PyTorch in this process ({libraries}); "
                   f"GOMP_SPINCOUNT={omp['GOMP_SPINCOUNT'] or 'unset'}, "
                   f"OMP_WAIT_POLICY={omp['OMP_WAIT_POLICY'] or 'unset'} "
                   "(as the environment gave them: cyconv sets neither, so both run "
                   "with the same).")
        out.append("")
    found = m["cyconv"]
    missing = [name for name in ("conv2d", "max_pool2d") if not found[name]]
    if missing or not found["lenet"]:
        out.append("Not in this cyconv (reported as n/a, not timed): "
                   + ", ".join(missing + ([] if found["lenet"] else ["a LeNet training step"])) + ".")
        out.append("")
    out.append(f"cyconv's LeNet step: {found['lenet'] or 'n/a'}. Max pool backward "
               + ("reuses the forward pass's argmax (`return_indices`/`indices`)."
                  if found["max_pool2d indices"] else "finds each window's maximum again from x."))
    out.append("")

    out += ["## Headline", "",
            "Median time of cyconv divided by median time of PyTorch on the CPU, same thread count, "
            "same run (below 1: cyconv is faster), and in brackets the same ratio for each side's "
            "fastest call; and how many times faster cyconv is than the tutorial's per-sample "
            "scipy loops (median times).", "", headline(results), ""]
    if "startup" in results or "memory" in results:
        extra = []
        st = results.get("startup", {})
        if "cyconv" in st:
            extra.append(f"import cyconv + first conv2d in a fresh process: {st['cyconv']['seconds']:.3f} s"
                         + (f" (PyTorch: {st['torch']['seconds']:.3f} s)" if "torch" in st else ""))
        mem = results.get("memory", {})
        if "cyconv" in mem:
            extra.append(f"W3 f32 forward + backward peak memory: cyconv {mem['cyconv']['rss_mib']:.1f} MiB"
                         + (f", PyTorch {mem['torch']['rss_mib']:.1f} MiB" if "torch" in mem else ""))
        out += ["- " + e for e in extra] + [""]

    out += ["## Targets", "",
            "Ratios are cyconv / PyTorch median times at the same thread count in this run.", ""]
    body = [[t["target"], t["threads"] or "—", _target_value(t), t["limit"], fmt_status(t["status"])]
            for t in results["targets"]]
    out += [_table(["target", "threads", "measured", "limit", "status"], body), ""]
    counts = {st: sum(t["status"] == st for t in results["targets"]) for st in ("met", "missed", "n/a")}
    out += [f"{counts['met']} met, {counts['missed']} missed, {counts['n/a']} n/a.", ""]

    out += ["## Practical peak", "",
            "numpy's matmul of two large squares, median and best of 7 calls after waiting for "
            "the machine to be quiet, measured at the start and (full runs) again at the end of "
            "the run, the better kept: the most this machine's BLAS gets out of the cores. The best "
            "is the yardstick for the GFLOP/s columns below.", ""]
    body = [[n, f"{p['sgemm']['median_gflops']:.1f} (best {p['sgemm']['best_gflops']:.1f})",
             f"{p['dgemm']['median_gflops']:.1f} (best {p['dgemm']['best_gflops']:.1f})",
             p["sgemm"]["size"]]
            for n, p in sorted(results["peak"].items(), key=lambda kv: int(kv[0]))]
    out += [_table(["threads", "sgemm GFLOP/s", "dgemm GFLOP/s", "matrix size"], body), ""]

    for n in threads:
        out += [f"## All timings, {n} thread{'s' if n > 1 else ''}", "", detail(results, n), ""]
    out += ["Times are medians in milliseconds after warm-up, over blocks of calls that "
            f"alternate between contenders ({s['passes']} pass(es), at least {s['min_calls']} calls "
            f"each, about {s['budget_s']:g} s per measurement). "
            "`tutorial ms` is the tutorial's time for the whole batch, **timed on the first k samples "
            "and scaled linearly per sample** (its loops are per sample, so the scaling is exact up to "
            "noise). GFLOP/s count a multiply-add as 2 FLOPs; the backward pass is counted as twice "
            "the forward (input and weight gradients), and the LeNet step leaves out the image "
            "gradient nobody computes. Pool rows have no FLOP count. `cyconv = torch`: allclose to "
            "PyTorch's results (relative to the largest magnitude: 2e-4 in float32, 1e-10 in float64). "
            "`1t = 2t bitwise`: cyconv's results at every thread count of the run are identical bit "
            "for bit. `cy/torch of fastest calls`: the ratio of each side's fastest call, less "
            "disturbed by other processes than the median (the targets use medians). `other load`: cores kept busy by other processes on the machine while the "
            "row was timed (from `/proc/stat`); on a machine with "
            f"{m['cores']} cores, a load near or above {m['cores']} minus the thread count means "
            "the row was timed with fewer free cores than threads.", ""]

    if "startup" in results:
        st = results["startup"]
        out += ["## Start-up", "",
                "Seconds from before the import to the end of the first 2-D convolution of a "
                "(1, 1, 28, 28) image, in a fresh interpreter (numpy's import counted where the "
                "framework imports it); median of several runs. `whole process` adds the "
                "interpreter's own start and exit.", ""]
        body = [[name, f"{v['seconds']:.3f}", f"{v['process_seconds']:.3f}", v["runs"]]
                for name, v in st.items()]
        out += [_table(["framework", "import + first conv, s", "whole process, s", "runs"], body), ""]
        out += ["`tutorial` is `import numpy, scipy.signal` and one `correlate2d`.", ""]

    if "memory" in results:
        mem = results["memory"]
        any_mem = next(iter(mem.values()))
        out += ["## Peak memory, W3 f32 forward + backward", "",
                f"Each framework in its own fresh process, {any_mem['threads']} thread(s), first call "
                "after imports and inputs: the rise of the resident set's high-water mark "
                "(`VmHWM`, reset through `/proc/self/clear_refs`; `ru_maxrss` where that is not "
                "possible) above the resident set before the call. Outputs included "
                "(x, grad x and the conv output are 6.1 MiB each). The tracemalloc column is the "
                "peak of memory allocated through numpy during a second call (PyTorch's allocator "
                "is invisible to it).", ""]
        body = [[name, f"{v['rss_mib']:.1f}", v["method"],
                 "n/a" if v["tracemalloc_mib"] is None else f"{v['tracemalloc_mib']:.1f}", v["runs"]]
                for name, v in mem.items()]
        out += [_table(["framework", "peak resident MiB", "method", "tracemalloc MiB", "runs"], body), ""]

    out += ["## Checks", "",
            "Before timing, every contender's results are compared with the reference (PyTorch; "
            "numpy where PyTorch is absent): conv output, the three gradients, pool output and its "
            "gradient; for LeNet, the loss and every parameter after one SGD step from the same "
            "initialisation. The tutorial is checked on the samples it is timed on (LeNet: its "
            "one-sample step against a batch-of-one step). A training step that differs from the "
            "reference's passes if it matches the reference's own step in float64 instead (a "
            "near-tie in a pooling window can route one gradient either way, on either side); the "
            "last column compares the reference with that float64 step, for the record (not a "
            "check of cyconv's). In brackets: the largest "
            "error relative to the largest magnitude (against the float64 step where that is "
            "what passed).", "", checks_table(results), ""]

    out += ["## Method", "",
            "- **cyconv**: `cyconv.functional.conv2d` / `conv2d_backward` / `max_pool2d` / "
            "`max_pool2d_backward` on numpy arrays, validation included.",
            "- **PyTorch**: `torch.nn.functional.conv2d` and `max_pool2d(return_indices=True)` under "
            "`no_grad`, and the ATen backward operators `convolution_backward` and "
            "`max_pool2d_with_indices_backward`: the same inputs as cyconv's, no autograd graph. "
            "The LeNet step is `nn.Sequential` + `CrossEntropyLoss` + `optim.SGD` with autograd.",
            "- **numpy**: im2col with `sliding_window_view` + `tensordot` (one BLAS product) forward "
            "and for the weight gradient; the input gradient as a product into columns and `kh*kw` "
            "strided additions (col2im); max pool by reshaping the 2x2 windows onto an axis "
            "(argmax kept for the backward pass).",
            "- **tutorial**: the \"CNN from scratch\" layers, one sample at a time, one "
            "`scipy.signal.correlate2d` / `convolve2d` per (filter, channel) pair, and the Python "
            "loop max pool; per-filter bias and input-dtype arrays so that its results can be "
            "checked; stride (W4) as stride-1 correlation subsampled, and zero-spread gradients "
            "backward. Its LeNet trains one sample at a time (an SGD update per sample), as the "
            "tutorial does.",
            "- Timing: each contender runs in blocks of consecutive calls after untimed warm-up "
            "calls; blocks alternate between contenders in rotating order over the passes, so that "
            "a busy spell on the machine falls on all of them; medians are reported. At more than "
            "one thread the process sleeps 0.2 s before each block, because idle OpenMP and "
            "OpenBLAS workers spin for a while after a parallel call and would steal the next "
            "contender's cores. Garbage collection is off inside a block.",
            "- Workloads: NCHW float32 unless marked f64; max pool is 2x2, stride 2, on an array of "
            "the conv output's shape; conv bwd computes the input, weight and bias gradients.",
            ""]
    if (results.get("chart")):
        out += ["## Chart", "", f"![cyconv / PyTorch time]({results['chart']})", ""]
    return "\n".join(out)


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = results["rows"]
    threads = results["settings"]["threads"]
    items = []
    for label in _labels(rows):
        for op in ("conv fwd+bwd", "pool fwd+bwd", "train step"):
            if any(r["label"] == label and r["op"] == op for r in rows):
                items.append((label, op))
    if not items:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(items) * len(threads) + 1.5))
    height = 0.8 / len(threads)
    for k, n in enumerate(threads):
        values = []
        for label, op in items:
            row = _find(rows, label, op, n)
            values.append(row["ratio_torch"] if row and row["ratio_torch"] else float("nan"))
        positions = [i + k * height for i in range(len(items))]
        ax.barh(positions, values, height=height, label=f"{n} thread{'s' if n > 1 else ''}")
        for position, value in zip(positions, values):
            if value != value:  # NaN: nothing measured
                ax.text(1.0, position, " n/a", va="center", fontsize=7, color="gray")
    ax.set_yticks([i + height * (len(threads) - 1) / 2 for i in range(len(items))])
    ax.set_yticklabels([f"{label} {op}" for label, op in items])
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("cyconv time / PyTorch time (log scale; left of the line: cyconv faster)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(results, out_dir):
    out_dir = Path(out_dir)
    written = []
    png = chart(results, out_dir / "results.png")
    if png:
        results["chart"] = png.name
        written.append(png)
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    written.append(path)
    path = out_dir / "RESULTS.md"
    path.write_text(markdown(results))
    written.append(path)
    return written
