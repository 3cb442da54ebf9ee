"""Synchronous data-parallel training over MPI, through mpi4py.

What ``Sequential.fit(..., distributed=True)`` and
``Sequential.evaluate(..., distributed=True)`` are made of.  Every rank
holds the whole model and the whole data set; ``batch_size`` is the global
batch, and rank ``r`` of ``K`` computes the contiguous part
:func:`batch_slice` gives it of every global batch.

Why the result is the single-process one, to rounding
    cyconv's losses are means over the batch, so the gradient of a global
    batch of ``N`` samples is ``sum_r n_r g_r / N`` where ``g_r`` is the
    gradient of rank ``r``'s slice of ``n_r`` samples.  Each rank scales its
    gradients by ``n_r / N`` into one contiguous buffer per dtype, and one
    ``Allreduce`` (sum) per step and dtype gives every rank that mean; the
    optimizer then takes the same step everywhere.  Every rank draws the
    same shuffling and augmentation from one shared seed (the global batch
    is augmented whole, then sliced), so a ``K``-rank fit walks the global
    batches of a one-process fit.  A rank whose slice is empty (a global
    batch smaller than ``K``) contributes zero gradient with zero weight.

Buffers (BatchNormalization's running statistics)
    Each rank updates its buffers from its own slice, so they are averaged
    over the ranks after every step, weighted by slice size, in the same
    fused ``Allreduce`` as the gradients.  For a running mean this is
    exactly the single-process update (a weighted mean of slice means is
    the batch mean); a running variance becomes the weighted mean of the
    slices' unbiased variances, which leaves out the spread between slice
    means, as PyTorch's DistributedDataParallel without SyncBatchNorm does.
    The batch statistics used for normalising in training mode are the
    slice's own, so a model with BatchNormalization trains as with a batch
    of ``n_r``, not ``N``; identical on every rank all the same.

Launch with ``mpirun -n K python -m mpi4py script.py``: under ``-m mpi4py``
an exception that ends one rank aborts the whole job, where a plain
``python script.py`` would leave the other ranks waiting in a collective.
"""

import numbers
import os

import numpy as np

__all__ = ["DataParallel", "batch_slice", "evaluate", "require_mpi", "threads_per_rank"]

INSTALL_HINT = 'pip install "cyconv[mpi]"'


def require_mpi():
    """Return ``mpi4py.MPI``, or raise ImportError saying what to install.

    Examples
    --------
    >>> from cyconv.distributed import require_mpi
    >>> MPI = require_mpi()   # doctest: +SKIP
    """
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed training needs mpi4py and an MPI library: "
                          f"{INSTALL_HINT}") from exc
    return MPI


def batch_slice(count, rank, ranks):
    """The part of a global batch of ``count`` samples that ``rank`` computes.

    Contiguous and balanced: slice sizes differ by at most one, the first
    ``count % ranks`` ranks taking the larger ones; a rank past ``count``
    gets an empty slice.

    Examples
    --------
    >>> from cyconv.distributed import batch_slice
    >>> [batch_slice(10, rank, 4) for rank in range(4)]
    [slice(0, 3, None), slice(3, 6, None), slice(6, 8, None), slice(8, 10, None)]
    >>> batch_slice(1, 1, 2)
    slice(1, 1, None)
    """
    base, extra = divmod(count, ranks)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def threads_per_rank(comm=None):
    """The node's cores shared among the ranks on it: ``cores // ranks``.

    Ranks of one node that each use every core slow one another down;
    pass this to :func:`cyconv.set_num_threads` (``cyconv train
    --distributed`` does, unless ``--threads`` or OMP_NUM_THREADS say
    otherwise).  A collective call: every rank of ``comm`` makes it.

    Examples
    --------
    >>> import cyconv
    >>> from cyconv.distributed import threads_per_rank
    >>> cyconv.set_num_threads(threads_per_rank())  # doctest: +SKIP
    """
    MPI = require_mpi()
    node = _communicator(comm).Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return max(1, (os.cpu_count() or 1) // node.Get_size())
    finally:
        node.Free()


def _communicator(comm):
    MPI = require_mpi()
    return MPI.COMM_WORLD if comm is None else comm


def _sum_over_ranks(comm, values):
    from mpi4py import MPI

    totals = np.array(values, dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
    return totals


class DataParallel:
    """One model's gradients and buffers, kept in step across MPI ranks.

    Parameters
    ----------
    model : Sequential
        Built (its parameters exist), the same architecture on every rank.
    comm : mpi4py.MPI.Comm, optional
        The ranks that train together; ``MPI.COMM_WORLD`` by default.

    Raises
    ------
    ImportError
        Without mpi4py.
    ValueError
        On every rank alike, when the ranks' models differ in their
        parameters' or buffers' names, shapes or dtypes.

    Examples
    --------
    Under ``mpirun -n 2 python -m mpi4py``, one step by hand (what
    ``Sequential.fit(..., distributed=True)`` does for you):

    >>> parallel = DataParallel(model)  # doctest: +SKIP
    >>> parallel.broadcast()  # doctest: +SKIP
    >>> part = parallel.part(len(x_batch))  # doctest: +SKIP
    >>> model.backward(loss.gradient(y_batch[part], model.forward(x_batch[part])))  # doctest: +SKIP
    >>> parallel.average(part.stop - part.start, len(x_batch))  # doctest: +SKIP
    >>> optimizer.step(model.parameters())  # doctest: +SKIP
    """

    def __init__(self, model, comm=None):
        self.comm = _communicator(comm)
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.parameters = list(model.parameters())
        self.buffers = list(model.buffers())
        for buffer in self.buffers:
            if buffer.value.dtype.kind != "f":
                raise TypeError(f"buffer {buffer.name} is {buffer.value.dtype}: only floating "
                                f"buffers can be averaged across ranks")
        signature = [(kind, item.name, item.value.shape, item.value.dtype.str)
                     for kind, items in (("parameter", self.parameters), ("buffer", self.buffers))
                     for item in items]
        if any(other != signature for other in self.comm.allgather(signature)):
            raise ValueError("the ranks' models differ (parameters' or buffers' names, shapes "
                             "or dtypes): every rank must build the same model")
        self._groups = self._fuse()

    @property
    def is_root(self):
        """True on rank 0, the one rank that prints and writes files."""
        return self.rank == 0

    def _fuse(self):
        """One contiguous array per dtype holding every gradient, then every
        buffer, of that dtype: one Allreduce per step and dtype."""
        by_dtype = {}
        for kind, items in (("grad", self.parameters), ("buffer", self.buffers)):
            for item in items:
                by_dtype.setdefault(item.value.dtype, []).append((kind, item))
        groups = []
        for dtype in sorted(by_dtype, key=lambda d: d.str):  # one order on every rank
            entries = by_dtype[dtype]
            fused = np.zeros(sum(item.value.size for _, item in entries), dtype=dtype)
            views, offset = [], 0
            for kind, item in entries:
                size = item.value.size
                views.append((kind, item, fused[offset:offset + size].reshape(item.value.shape)))
                offset += size
            groups.append((fused, views))
        return groups

    def broadcast(self):
        """Give every rank rank 0's parameters and buffers."""
        for item in self.parameters + self.buffers:
            value = item.value
            staged = value if value.flags.c_contiguous else np.ascontiguousarray(value)
            self.comm.Bcast(staged, root=0)
            if staged is not value:
                value[...] = staged

    def part(self, count):
        """This rank's :func:`batch_slice` of a global batch of ``count``."""
        return batch_slice(count, self.rank, self.size)

    def forward_backward(self, model, loss, x, y):
        """Gradients of the global batch ``(x, y)``, this rank computing its slice.

        Returns ``(value, output, targets, count)``: the loss on this
        rank's slice, the model's output for it, its targets and its size
        (0.0, None, an empty slice of ``y`` and 0 for an empty slice).
        Every parameter's ``grad`` is then the global batch's mean gradient
        and the buffers the ranks' weighted average (see :meth:`average`).
        """
        part = self.part(len(x))
        count = part.stop - part.start
        value, out = 0.0, None
        if count:
            out = model.forward(x[part])
            value, grad = loss.value_and_gradient(y[part], out)
            model.backward(grad)
        self.average(count, len(x))
        return value, out, y[part], count

    def average(self, local_count, global_count):
        """Make gradients and buffers the global batch's, on every rank.

        Each parameter's ``grad`` becomes the mean gradient over the global
        batch of ``global_count`` samples (a view into the fused buffer),
        given that this rank's ``grad`` is the mean over its
        ``local_count`` samples; each buffer becomes the average of the
        ranks' buffers weighted by their sample counts.  A rank with no
        samples, or a parameter without a gradient, contributes zeros.
        """
        from mpi4py import MPI

        weight = local_count / global_count
        for fused, views in self._groups:
            for kind, item, view in views:
                source = item.grad if kind == "grad" else item.value
                if local_count and source is not None:
                    np.multiply(source, weight, out=view)
                else:
                    view[...] = 0
            self.comm.Allreduce(MPI.IN_PLACE, fused, op=MPI.SUM)
            for kind, item, view in views:
                if kind == "grad":
                    item.grad = view
                else:
                    item.value[...] = view

    def sum(self, values):
        """The sums over ranks of a few numbers (float64), in one Allreduce."""
        return _sum_over_ranks(self.comm, values)

    def agree(self, seed, **settings):
        """Return the seed every rank uses, checking the ranks agree.

        With ``seed=None`` on rank 0, rank 0 draws a fresh seed and shares
        it.  ValueError on every rank alike when ranks were given different
        seeds or ``settings`` (the data's length, the batch size...).
        """
        if seed is not None and (isinstance(seed, (bool, np.bool_))
                                 or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"a distributed fit takes an int seed or None, got {seed!r}")
        if self.is_root and seed is None:
            seed = int(np.random.SeedSequence().entropy)
        gathered = self.comm.allgather((None if seed is None else int(seed), settings))
        shared, root_settings = gathered[0]
        for rank, (other_seed, other_settings) in enumerate(gathered):
            if other_seed not in (None, shared):
                raise ValueError(f"rank {rank} was given seed {other_seed}, rank 0 {shared}: "
                                 f"give every rank the same seed, or None on all but rank 0")
            if other_settings != root_settings:
                raise ValueError(f"rank {rank} was given {other_settings}, rank 0 "
                                 f"{root_settings}: every rank must fit the same data "
                                 f"with the same settings")
        return shared


def evaluate(model, x, y, loss, batch_size=256, comm=None):
    """``model.evaluate`` over ``(x, y)``, each rank scoring its own slice.

    Every rank holds the whole ``(x, y)`` and gets the same result: the
    loss and accuracy over all of it (slice scores weighted by slice size).

    Examples
    --------
    >>> from cyconv.distributed import evaluate
    >>> scores = evaluate(model, x_val, y_val, "softmax_cross_entropy")  # doctest: +SKIP
    """
    from ._validation import as_array

    comm = _communicator(comm)
    x, y = as_array(x, "x"), as_array(y, "y")
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"x and y must hold the same number of samples, got shapes "
                         f"{x.shape} and {y.shape}")
    part = batch_slice(len(x), comm.Get_rank(), comm.Get_size())
    local = score_sums(model, x[part], y[part], loss, batch_size)
    return scores_from_sums(_sum_over_ranks(comm, local), "x")


def score_sums(model, x, y, loss, batch_size):
    """``model.evaluate`` on a part of a data set, as sums that add up over
    parts: (loss sum, correct sum, samples, samples with an accuracy)."""
    sums = np.zeros(4)
    if len(x):
        scores = model.evaluate(x, y, loss=loss, batch_size=batch_size)
        sums[0], sums[2] = scores["loss"] * len(x), len(x)
        if scores["accuracy"] is not None:
            sums[1], sums[3] = scores["accuracy"] * len(x), len(x)
    return sums


def scores_from_sums(sums, name):
    """``evaluate``'s dict from :func:`score_sums` added over every part."""
    if sums[2] == 0:
        raise ValueError(f"{name} must hold at least one sample")
    return {"loss": float(sums[0] / sums[2]),
            "accuracy": float(sums[1] / sums[3]) if sums[3] else None}
