"""Numerical agreement between frameworks.

A wrong baseline makes a speed ratio meaningless, so the run compares every
contender's results with a reference before timing them.
"""

import numpy as np

# Relative to the largest magnitude of the reference: sums of hundreds to
# tens of thousands of products, accumulated in different orders.
TOLERANCE = {"float32": 2e-4, "float64": 1e-10}


def close(result, reference, dtype):
    """True where every array of ``result`` matches ``reference``."""
    tol = TOLERANCE[np.dtype(dtype).name]
    for a, b in zip(_arrays(result), _arrays(reference), strict=True):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return False
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-30)
        if not np.allclose(a, b, rtol=tol, atol=tol * scale):
            return False
    return True


def worst_error(result, reference):
    """Largest |a - b| / max|b| over the arrays, for the report."""
    worst = 0.0
    for a, b in zip(_arrays(result), _arrays(reference), strict=True):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-30)
        worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)) / scale)
    return worst


def identical(result, other):
    """Bitwise equality of every array (NaN payloads included)."""
    for a, b in zip(_arrays(result), _arrays(other), strict=True):
        a = np.ascontiguousarray(a)
        b = np.ascontiguousarray(b)
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            return False
    return True


def _arrays(result):
    if isinstance(result, dict):
        return [result[key] for key in sorted(result)]
    if isinstance(result, (tuple, list)):
        return list(result)
    return [result]
