"""Compiled kernels: nogil loops over C-contiguous typed memoryviews.

Nothing here validates its input; :mod:`cyconv.functional` and
:mod:`cyconv.signal` guarantee every index before calling in.
"""

import sys

# The Cython utility code the modules share (setup.py's SHARED_UTILITY).
# Cython's module initialisation also enters it in sys.modules under its
# bare name, "_cyutility", which is not cyconv's to take (SciPy's shared
# module has the same bare name): only the qualified name stays.
from . import _cyutility

if sys.modules.get("_cyutility") is _cyutility:
    del sys.modules["_cyutility"]
del sys, _cyutility
