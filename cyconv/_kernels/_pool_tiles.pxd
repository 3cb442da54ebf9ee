# The 2x2 max pooling kernels of pool_tiles.h, for the modules that call
# them: the pooling's own and the convolution's weight gradient (which
# expands a pooling's gradient in cache).

from libc.stdint cimport uint8_t

cdef extern from "pool_tiles.h" nogil:
    int PT_ISA_PORTABLE, PT_ISA_AVX2, PT_ISA_AVX512
    int pt_detect_isa()
    void pt_forward_f32(int isa, const float* x, Py_ssize_t H, Py_ssize_t W, float* out,
                        uint8_t* codes, Py_ssize_t Hout, Py_ssize_t Wout)
    void pt_forward_f64(int isa, const double* x, Py_ssize_t H, Py_ssize_t W, double* out,
                        uint8_t* codes, Py_ssize_t Hout, Py_ssize_t Wout)
    void pt_backward_f32(int isa, const float* g, const uint8_t* codes, const float* pooled,
                         float* grad_in, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Hout,
                         Py_ssize_t Wout)
    void pt_backward_f64(int isa, const double* g, const uint8_t* codes, const double* pooled,
                         double* grad_in, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Hout,
                         Py_ssize_t Wout)
