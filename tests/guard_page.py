"""Running a check in a child process, on an array that ends where an
unreadable page begins: a kernel reading one byte past it faults, which
would kill the test process itself, hence the child."""

import os
import subprocess
import sys

# Source for the child: ``at_guard_page(array)``, a copy of ``array`` that
# ends at an unreadable page, as a copied or unpickled model's arrays may
# end (no slack after them).
AT_GUARD_PAGE = """
import ctypes, mmap
import numpy as np

def at_guard_page(array):
    page = mmap.PAGESIZE
    size = (array.nbytes + page - 1) // page * page
    memory = mmap.mmap(-1, size + page)
    start = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(start + size), page, 0) == 0
    copy = np.frombuffer(memory, array.dtype, count=array.size,
                         offset=size - array.nbytes).reshape(array.shape)
    copy[...] = array
    return copy
"""


def run_child(script, *args):
    """Run ``AT_GUARD_PAGE + script`` in a child Python with ``args`` as
    its sys.argv[1:], from the tests' folder (so that it imports the
    installed cyconv, not the source tree); assert that it succeeded."""
    done = subprocess.run([sys.executable, "-c", AT_GUARD_PAGE + script, *map(str, args)],
                          capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    assert done.returncode == 0, done.stderr[-2000:]
