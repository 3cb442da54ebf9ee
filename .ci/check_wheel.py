"""Check, outside the source tree, that an installed cyconv wheel carries its
compiled kernels and that they compute."""

import importlib
import pathlib
import sys

import numpy as np
from scipy import signal

import cyconv

package = pathlib.Path(cyconv.__file__).parent
if pathlib.Path.cwd() in package.parents:
    sys.exit(f"cyconv was imported from the source tree ({package}), not the wheel")

expected = sorted(sys.argv[1:])  # the .pyx stems of the source tree, and _cyutility
compiled = sorted(
    p.name.split(".")[0] for p in package.joinpath("_kernels").iterdir()
    if p.suffix in (".so", ".pyd")
)
print("compiled kernels:", ", ".join(compiled) or "none")
if not compiled or compiled != expected:
    sys.exit(f"the wheel's compiled kernels {compiled} are not the sources' {expected}")
for name in compiled:
    module = importlib.import_module(f"cyconv._kernels.{name}")
    if not module.__file__.endswith((".so", ".pyd")):
        sys.exit(f"cyconv._kernels.{name} is not a compiled module: {module.__file__}")

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 9, 7))
w = rng.standard_normal((4, 3, 3, 2))
out = cyconv.functional.conv2d(x, w)
expected = np.array([[sum(signal.correlate2d(x[n, c], w[f, c], mode="valid") for c in range(3))
                      for f in range(4)] for n in range(2)])
np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
print("wheel OK: conv2d matches scipy.signal on", out.shape)
