"""The validated numpy face of cyconv's kernels, NCHW, with the semantics of
``torch.nn.functional``.

Every function here checks its arguments (dtype policy, shapes, sizes,
hyper-parameters), makes its inputs C-contiguous, allocates the output and
calls a compiled kernel that trusts all of it.
"""

from ._conv import conv2d, conv2d_backward
from ._norm import batch_norm, batch_norm_backward
from ._pad import pad2d, pad2d_backward
from ._pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pad2d",
    "pad2d_backward",
    "batch_norm",
    "batch_norm_backward",
]
