# The bias's addition in the kernels' stores, shared by the modules that
# add one.

from cython cimport floating


cdef inline floating add_bias(floating v, floating b) noexcept nogil:
    # v + b, with v's NaN (quietened) where both are NaN, as x86 gives for
    # the addition in that order: the compiler may put an addition's
    # operands either way round (GCC does, to fold a load), so the NaN is
    # chosen here, not by the instruction.
    return v + v if v != v else v + b
