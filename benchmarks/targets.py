"""cyconv's speed targets, judged on one run's results.

Ratios are median cyconv time / median PyTorch time at the same thread
count in the same run; a target whose measurement is missing (a cyconv
function not there yet, PyTorch not installed, a thread count not run) is
"n/a", never guessed.
"""

# The targets of "speed on every machine": every layer of the LeNet (W1a,
# W1b) and CIFAR-like (C1-C3) networks, W3, float64, pooling, whole steps.
LAYER_RATIO_LIMITS = [
    # (workload labels, op, limit)
    (["W1a f32", "W1b f32", "C1 f32", "C2 f32", "C3 f32"], "conv fwd+bwd", 0.8),
    (["W3 f32"], "conv fwd+bwd", 1.0),
    (["W2 f32", "W4 f32"], "conv fwd+bwd", 1.25),
    (["W1a f64", "W3 f64"], "conv fwd+bwd", 1.0),
    (["W1a f32", "W1a f64", "W1b f32", "W2 f32", "W3 f32", "W3 f64", "W4 f32",
      "C1 f32", "C2 f32", "C3 f32"], "pool fwd+bwd", 0.25),
]
LENET_RATIO_LIMITS = [("LeNet b64", 0.35), ("LeNet b64 layer by layer", 0.5), ("LeNet b1", 0.3),
                      ("CIFAR b64", 0.7), ("CIFAR-BN b64", 0.7)]
TUTORIAL_SPEEDUP = {"layer": 200, "LeNet": 300}
THREAD_SCALING = (["W2 f32", "W3 f32"], 1.7)
STEP_SCALING = ("CIFAR b64", 1.5)
STARTUP_LIMIT_S = 0.3


def _find(rows, label, op, threads):
    for row in rows:
        if row["label"] == label and row["op"] == op and row["threads"] == threads:
            return row
    return None


def _status(value, limit, at_most=True):
    if value is None:
        return "n/a"
    return "met" if (value <= limit if at_most else value >= limit) else "missed"


def _target(name, threads, value, limit, at_most=True, unit="", note=""):
    bound = ("<= " if at_most else ">= ") + f"{limit:g}{unit}"
    return {"target": name, "threads": threads, "value": value, "limit": bound,
            "status": _status(value, limit, at_most), "note": note}


def evaluate(results):
    rows = results["rows"]
    threads = results["settings"]["threads"]
    out = []
    for label, limit in LENET_RATIO_LIMITS:
        for n in threads:
            row = _find(rows, label, "train step", n)
            out.append(_target(f"{label} train step, cyconv/torch", n,
                               row and row["ratio_torch"], limit))
    for labels, op, limit in LAYER_RATIO_LIMITS:
        for label in labels:
            for n in threads:
                row = _find(rows, label, op, n)
                out.append(_target(f"{label} {op}, cyconv/torch", n, row and row["ratio_torch"], limit))

    # Against the tutorial: at one thread, since its loops cannot use more.
    n = 1 if 1 in threads else min(threads)
    for label in sorted({r["label"] for r in rows}, key=_label_order(rows)):
        if label.startswith("CIFAR") or label.endswith("layer by layer"):
            continue  # no tutorial baseline (the LeNet step has its own row)
        ops = ["train step"] if label.startswith("LeNet") else ["conv fwd+bwd", "pool fwd+bwd"]
        limit = TUTORIAL_SPEEDUP["LeNet" if label.startswith("LeNet") else "layer"]
        for op in ops:
            row = _find(rows, label, op, n)
            out.append(_target(f"{label} {op}, speed-up over the tutorial", n,
                               row and row["speedup_tutorial"], limit, at_most=False, unit="x"))

    labels, limit = THREAD_SCALING
    step_label, step_limit = STEP_SCALING
    for label, op, want in ([(label, "conv fwd+bwd", limit) for label in labels]
                            + [(step_label, "train step", step_limit)]):
        one, two = _find(rows, label, op, 1), _find(rows, label, op, 2)
        value = None
        if one and two and one["ms"].get("cyconv") and two["ms"].get("cyconv"):
            value = one["ms"]["cyconv"] / two["ms"]["cyconv"]
        out.append(_target(f"{label} {op}, cyconv 1 -> 2 threads speed-up", None,
                           value, want, at_most=False, unit="x"))

    startup = results.get("startup", {}).get("cyconv")
    out.append(_target("import cyconv + first conv2d, fresh process", None,
                       startup and startup["seconds"], STARTUP_LIMIT_S, unit=" s"))

    memory = results.get("memory", {})
    value = None
    if "cyconv" in memory and "torch" in memory:
        value = memory["cyconv"]["rss_mib"] / max(memory["torch"]["rss_mib"], 1e-9)
    out.append(_target("W3 f32 fwd+bwd peak memory, cyconv/torch", None, value, 1.0,
                       note="resident-set high-water mark above the baseline, fresh processes"))

    # Correctness, as targets too: a fast wrong answer is not a result.
    matches = [c["match"].get(k) for c in results["checks"].values() for k in c["match"]
               if k.startswith("cyconv")]
    refs = {c["reference"] for c in results["checks"].values()}
    out.append({"target": "cyconv agrees with PyTorch on every workload (allclose; a training step: or with PyTorch's own step in float64)", "threads": None,
                "value": f"{sum(map(bool, matches))} of {len(matches)} results", "limit": "all",
                "status": ("n/a" if not matches or refs != {"torch"}
                           else "met" if all(matches) else "missed"), "note": ""})
    bitwise = [v for c in results["checks"].values() for v in c["bitwise"].values() if v is not None]
    out.append({"target": f"cyconv bitwise identical at {' and '.join(map(str, threads))} threads",
                "threads": None, "value": f"{sum(bitwise)} of {len(bitwise)} results", "limit": "all",
                "status": "n/a" if not bitwise else "met" if all(bitwise) else "missed", "note": ""})
    return out


def _label_order(rows):
    order = []
    for row in rows:
        if row["label"] not in order:
            order.append(row["label"])
    return order.index
