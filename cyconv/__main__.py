"""``python -m cyconv``: a short demonstration of the kernels."""

import time

import numpy as np

from . import functional, get_num_threads


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    start = time.perf_counter()
    y = functional.conv2d(x, w)
    gx, gw, gb = functional.conv2d_backward(np.ones_like(y), x, w)
    elapsed = time.perf_counter() - start
    print(f"conv2d forward and backward of {x.shape} with {w.shape} filters -> {y.shape}")
    print(f"took {elapsed * 1e3:.1f} ms on {get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
