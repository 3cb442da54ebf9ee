"""Against a build with Cython's bounds checks on (CYCONV_BOUNDSCHECK=1 at
build and at test time, as CI's bounds-checked run does): prove that the
checks are really compiled in, so that the rest of the suite passing there
means no kernel indexed out of range."""

import os
import sys

import numpy as np
import pytest

from cyconv._kernels import _correlate, _pad

CHECKED = os.environ.get("CYCONV_BOUNDSCHECK", "0") not in ("", "0", "false", "False")
needs_checked_build = pytest.mark.skipif(
    not CHECKED, reason="set CYCONV_BOUNDSCHECK=1 to test a bounds-checked build")


@needs_checked_build
def test_an_out_of_range_index_in_a_kernel_raises():
    # An empty row map: indexing its first entry is out of range.  (Safe in
    # an unchecked build too: with no output rows nothing is dereferenced.)
    x, out = np.zeros((1, 2, 2)), np.zeros((1, 0, 0))
    empty = np.zeros(0, dtype=np.intp)
    with pytest.raises(IndexError, match="Out of bounds"):
        _pad.pad2d_forward(x, out, empty, empty, 0, 0.0, 1)


@needs_checked_build
def test_an_out_of_range_index_in_a_nogil_helper_is_reported(monkeypatch):
    """A noexcept nogil helper cannot raise: the error is only printed as
    "unraisable".  The suite runs with such reports turned into failures
    (-W error::pytest.PytestUnraisableExceptionWarning); here the report
    itself is caught."""
    reports = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    # An output one row and column larger than the input allows: the last
    # rows read one row past the extended input.
    ext, kernel, out = np.zeros((3, 3)), np.ones((2, 2)), np.zeros((3, 3))
    _correlate.correlate2d_valid(ext, kernel, out, 1)
    assert reports and all(issubclass(r.exc_type, IndexError) for r in reports)
