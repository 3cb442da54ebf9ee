"""Measurements that need a fresh process, run as a script by run.py.

``python probes.py import FRAMEWORK``
    Seconds from before the framework's import to the end of its first 2-D
    convolution (numpy's import included where the framework imports it).
``python probes.py memory FRAMEWORK THREADS``
    Peak memory of W3 (float32) forward + backward, first call in the
    process: the rise of the resident set's high-water mark (``VmHWM``,
    reset through ``/proc/self/clear_refs``) above the resident set after
    imports and inputs; ``ru_maxrss`` where /proc is not available.  Also the
    peak of memory allocated through numpy as tracemalloc sees it (PyTorch's
    allocator is invisible to tracemalloc: reported as None).

Each prints one JSON object.
"""

import json
import sys
import time


def first_conv(framework):
    start = time.perf_counter()
    if framework == "cyconv":
        import numpy as np
        from cyconv.functional import conv2d
        conv2d(np.ones((1, 1, 28, 28), np.float32), np.ones((8, 1, 3, 3), np.float32))
    elif framework == "torch":
        import torch
        torch.nn.functional.conv2d(torch.ones(1, 1, 28, 28), torch.ones(8, 1, 3, 3))
    elif framework == "tutorial":
        import numpy as np
        from scipy import signal
        signal.correlate2d(np.ones((28, 28), np.float32), np.ones((3, 3), np.float32), mode="valid")
    else:
        raise SystemExit(f"unknown framework {framework!r}")
    return time.perf_counter() - start


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak():
    """Reset VmHWM to the current resident set; False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory(framework, threads):
    import gc
    import resource
    import tracemalloc

    from workloads import CONV_WORKLOADS

    workload = next(w for w in CONV_WORKLOADS if w.key == "W3" and w.dtype == "float32")
    data = workload.inputs()
    args = (workload.stride, workload.padding)
    if framework == "cyconv":
        import cyconv
        import cyconv_adapter as impl
        cyconv.set_num_threads(threads)
    elif framework == "torch":
        import baselines_torch as impl
        impl.torch.set_num_threads(threads)
        data = {key: impl.to_tensor(value) for key, value in data.items()}
    elif framework == "numpy":
        import baselines_numpy as impl
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(limits=threads, user_api="blas")
        except ImportError:
            pass
    else:
        raise SystemExit(f"unknown framework {framework!r}")

    def run():
        out = impl.conv_forward(data["x"], data["w"], data["b"], *args)
        grads = impl.conv_backward(data["g"], data["x"], data["w"], *args)
        return out, grads

    gc.collect()
    method = "VmHWM"
    if _reset_peak():
        before = _status_kib("VmRSS")
        result = run()
        peak_kib = _status_kib("VmHWM") - before
    else:
        method = "ru_maxrss"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = run()
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    del result
    gc.collect()

    traced = None
    if framework != "torch":
        tracemalloc.start()
        result = run()
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        del result
    return {"rss_mib": peak_kib / 1024, "method": method, "tracemalloc_mib": traced}


def main(argv):
    if argv[0] == "import":
        print(json.dumps({"seconds": first_conv(argv[1])}))
    elif argv[0] == "memory":
        print(json.dumps(memory(argv[1], int(argv[2]))))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
