"""Compiled kernels: nogil loops over C-contiguous typed memoryviews.

Nothing here validates its input; :mod:`cyconv.functional` and
:mod:`cyconv.signal` guarantee every index before calling in.
"""

import sys

# The Cython utility code the modules share (setup.py's SHARED_UTILITY).
# cythonize generates that module without its package, so its
# initialisation also enters it in sys.modules under the bare name
# "_cyutility", which is not cyconv's to take (SciPy's shared module has the
# same bare name; the kernel modules import it by the qualified name): only
# the qualified name stays.
from . import _cyutility

if sys.modules.get("_cyutility") is _cyutility:
    del sys.modules["_cyutility"]
del sys, _cyutility
