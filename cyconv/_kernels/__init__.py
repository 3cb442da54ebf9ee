"""Compiled kernels: nogil loops over C-contiguous typed memoryviews.

Nothing here validates its input; :mod:`cyconv.functional` and
:mod:`cyconv.signal` guarantee every index before calling in.
"""
