# The check of an array that a compiled entry taking ndarrays rather than
# typed memoryviews (_optim, _matmul, _losses: calls on small arrays, where
# making the memoryviews cost more than the arithmetic) reads through a raw
# pointer.

cimport numpy as cnp


cdef inline bint native_array(object a, int ndim) noexcept:
    """Whether ``a`` is an ndarray (not a subclass) of ``ndim`` dimensions
    (any number for -1), aligned (its strides too) and in the native byte
    order: a byte-swapped array has the type number of the native one, but
    its values are not what C reads there.  Its type, contiguity and
    writeability are the caller's to check."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray array = <cnp.ndarray>a
    return ((ndim < 0 or cnp.PyArray_NDIM(array) == ndim) and cnp.PyArray_ISALIGNED(array)
            and cnp.PyArray_ISNOTSWAPPED(array))
