"""Modules imported at their first use rather than with cyconv.

The kernels that call BLAS link to ``scipy.linalg.cython_blas``, and
importing any part of ``scipy.linalg`` imports all of it: more than half of
``import cyconv``'s time, paid even by a program whose convolutions all
take the direct kernels.  Those modules are named here and imported when
something first reads one of their attributes.
"""

import importlib


class Deferred:
    """Stands for the module ``name`` and imports it at its first attribute
    read; each attribute read is then kept on this object, so that later
    reads cost what a module's do.

    Examples
    --------
    >>> from cyconv._deferred import Deferred
    >>> math = Deferred("math")
    >>> math.sqrt(4.0)
    2.0
    """

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        # Only for attributes not yet kept: the first read of each.  No lock
        # of its own: the import system serialises the import, and threads
        # that race here keep the same value.
        value = getattr(importlib.import_module(self._name), attribute)
        setattr(self, attribute, value)
        return value

    def __repr__(self):
        return f"<module {self._name!r}, imported at its first use>"
