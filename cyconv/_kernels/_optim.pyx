# The optimizers' updates of one parameter in one pass (optim_loops.h):
# the numpy expressions of cyconv/nn/optimizers.py, operation for operation
# and bit for bit, without their temporaries.
#
# The arrays are checked here, in C, before any is touched, rather than
# with typed memoryviews after Python checks: a parameter of LeNet's is a
# few hundred values, and those checks cost more than numpy's expressions.
# An update runs only on plain ndarrays of one dtype (float32 or float64,
# native byte order) and shape, C-contiguous and aligned, the ones it
# writes writeable, no two of them overlapping (one pass must not read
# what it already wrote); else the function returns False and the caller
# runs numpy's expressions, whose casts and overlap rules then apply.  The
# scalars are rounded to the arrays' dtype, as numpy rounds a Python float
# against an array (the caller passes only Python floats: a numpy float64
# would make numpy compute in float64).

cimport numpy as cnp

from ._arrays cimport native_array

cnp.import_array()

cdef extern from "optim_loops.h" nogil:
    void ol_sgd_f32(float* value, const float* grad, Py_ssize_t n, float learning_rate)
    void ol_sgd_f64(double* value, const double* grad, Py_ssize_t n, double learning_rate)
    void ol_adam_f32(float* value, const float* grad, float* m, float* v, Py_ssize_t n,
                     float beta1, float rest1, float beta2, float rest2, float bias1,
                     float bias2, float learning_rate, float epsilon)
    void ol_adam_f64(double* value, const double* grad, double* m, double* v, Py_ssize_t n,
                     double beta1, double rest1, double beta2, double rest2, double bias1,
                     double bias2, double learning_rate, double epsilon)


cdef int _kind(object array, bint written):
    """The array's type number where an update takes it, else -1."""
    if not native_array(array, -1):
        return -1
    cdef cnp.ndarray a = <cnp.ndarray>array
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return -1
    if not cnp.PyArray_IS_C_CONTIGUOUS(a) or (written and not cnp.PyArray_ISWRITEABLE(a)):
        return -1
    return typenum


cdef bint _apart(cnp.ndarray a, cnp.ndarray b):
    """Whether the two arrays' memory (as np.may_share_memory bounds it) is disjoint."""
    cdef char* a0 = cnp.PyArray_BYTES(a)
    cdef char* b0 = cnp.PyArray_BYTES(b)
    return a0 + cnp.PyArray_NBYTES(a) <= b0 or b0 + cnp.PyArray_NBYTES(b) <= a0


cdef bint _takes(list arrays, int written):
    """Whether an update takes ``arrays``, the first ``written`` of them written."""
    cdef Py_ssize_t i, j, count = len(arrays)
    cdef int typenum = _kind(arrays[0], True)
    if typenum < 0:
        return False
    for i in range(1, count):
        if _kind(arrays[i], i < written) != typenum:
            return False
        if not cnp.PyArray_SAMESHAPE(<cnp.ndarray>arrays[i], <cnp.ndarray>arrays[0]):
            return False
    for i in range(written):
        for j in range(count):
            if i != j and not _apart(<cnp.ndarray>arrays[i], <cnp.ndarray>arrays[j]):
                return False
    return True


cdef void _descend(cnp.ndarray value, cnp.ndarray grad, double learning_rate) noexcept:
    """value -= learning_rate * grad, for arrays that suit (_takes)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(value)
    cdef void* x = cnp.PyArray_DATA(value)
    cdef void* g = cnp.PyArray_DATA(grad)
    with nogil:
        if cnp.PyArray_TYPE(value) == cnp.NPY_FLOAT32:
            ol_sgd_f32(<float*>x, <float*>g, n, <float>learning_rate)
        else:
            ol_sgd_f64(<double*>x, <double*>g, n, learning_rate)


def sgd(value, grad, double learning_rate):
    """value -= learning_rate * grad; False, touching nothing, where the
    arrays do not suit (see above)."""
    if not _takes([value, grad], 1):
        return False
    _descend(<cnp.ndarray>value, <cnp.ndarray>grad, learning_rate)
    return True


def sgd_parameters(list parameters, Py_ssize_t start, double learning_rate):
    """sgd(p.value, p.grad, learning_rate) for parameters[start], then the
    next ones, while each has a gradient of its value's shape and arrays
    that suit (see above); skips those without a gradient.  Returns the
    index of the first parameter it leaves (its arrays do not suit, or its
    gradient's shape is not its value's), or len(parameters): the caller
    updates that one and goes on from the next, so that parameters are
    updated in order and an error leaves the later ones as they were.
    One call for a model's parameters: a batch-1 LeNet step has six of a
    few hundred values, each update shorter than a Python call."""
    cdef Py_ssize_t i
    if start < 0:
        raise ValueError(f"start must be at least 0, got {start}")
    for i in range(start, len(parameters)):
        parameter = parameters[i]
        grad = parameter.grad
        if grad is None:
            continue
        value = parameter.value
        if not _takes([value, grad], 1):
            return i
        _descend(<cnp.ndarray>value, <cnp.ndarray>grad, learning_rate)
    return len(parameters)


def adam(value, grad, m, v, double beta1, double rest1, double beta2, double rest2,
         double bias1, double bias2, double learning_rate, double epsilon):
    """Adam's step (optimizers.Adam._update) on value and its moments m
    and v, with rest1 = 1 - beta1, rest2 = 1 - beta2, bias1 = 1 - beta1**t
    and bias2 = 1 - beta2**t as Python computes them; False, touching
    nothing, where the arrays do not suit (see above)."""
    if not _takes([value, m, v, grad], 3):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>value
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef void* x = cnp.PyArray_DATA(a)
    cdef void* g = cnp.PyArray_DATA(<cnp.ndarray>grad)
    cdef void* m1 = cnp.PyArray_DATA(<cnp.ndarray>m)
    cdef void* m2 = cnp.PyArray_DATA(<cnp.ndarray>v)
    with nogil:
        if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
            ol_adam_f32(<float*>x, <float*>g, <float*>m1, <float*>m2, n, <float>beta1,
                        <float>rest1, <float>beta2, <float>rest2, <float>bias1, <float>bias2,
                        <float>learning_rate, <float>epsilon)
        else:
            ol_adam_f64(<double*>x, <double*>g, <double*>m1, <double*>m2, n, beta1, rest1,
                        beta2, rest2, bias1, bias2, learning_rate, epsilon)
    return True
