"""Data-parallel training: N processes ("ranks", started by ``mpirun -n N``) train one model.

The whole algorithm, as the training loop uses it:

1. Rank 0's initial parameters are broadcast, so every rank starts from the same model.
2. Every rank draws the same shuffled order (the seed is shared) and, of each global batch of
   ``batch_size`` images, computes the gradient of its own equal slice.
3. One Allreduce over a single flat buffer (every gradient, plus the loss, the accuracy and
   whether the rank's clock has passed ``--max-minutes``) sums the slices' gradients;
   dividing by N gives the mean over the global batch: the gradient of a mean is the mean of
   the gradients, so this is the gradient one process would get.
4. Every rank applies the same optimiser update to the same parameters with the same
   gradient, so the parameters stay identical; each validation compares checksums.

Random draws belong to the global batch, never to a rank (augmentation and dropout masks
are drawn for the whole batch and each rank keeps its rows), so the result does not depend
on N. Rank 0 alone validates, writes checkpoints and reports. A rank that fails calls
MPI_Abort as it exits, which stops the others waiting in a collective call.
"""

from __future__ import annotations

import atexit
import math
import os
import time
import zlib

import numpy as np

from microconv.errors import TrainingError

# Set by the launchers on every rank: Open MPI, then MPICH and Intel MPI.
LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def launched_size():
    """How many ranks the MPI launcher started (1 when not started by a launcher)."""
    for name in LAUNCHER_SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def world():
    """This process's place among the ranks: SingleProcess unless ``mpirun -n N`` (N > 1)."""
    if launched_size() == 1:
        return SingleProcess()
    try:
        from mpi4py import MPI
    except ImportError:
        raise TrainingError("started by mpirun with several ranks, but mpi4py is not "
                            "installed: pip install 'microconv[mpi]'") from None
    return MPIWorld(MPI)


def rank_rows(batch_size, rank, size):
    """The rows of a global batch that ``rank`` of ``size`` computes (equal slices)."""
    if batch_size % size:
        raise TrainingError(f"batch size {batch_size} does not split evenly over {size} ranks; "
                            f"give a multiple of {size}")
    share = batch_size // size
    return slice(rank * share, (rank + 1) * share)


def flatten(arrays):
    """One contiguous buffer holding every array, so that one MPI call moves them all."""
    return np.concatenate([np.ravel(array) for array in arrays])


def unflatten(flat, shapes):
    """The arrays of ``shapes`` back out of a flattened buffer, and whatever follows them."""
    pieces = np.split(flat, np.cumsum([math.prod(shape) for shape in shapes]))
    return [piece.reshape(shape) for piece, shape in zip(pieces, shapes)], pieces[-1]


def parameter_checksum(model):
    checksum = 0
    for value in model.state_dict().values():
        checksum = zlib.crc32(np.ascontiguousarray(value).tobytes(), checksum)
    return checksum


class SingleProcess:
    """One process: every collective operation is the identity."""

    rank, size, is_root = 0, 1, True
    allreduce_seconds = 0.0           # time spent in the gradient Allreduce

    def rows(self, batch_size):
        return rank_rows(batch_size, self.rank, self.size)

    def broadcast_parameters(self, model):
        pass

    def average_gradients(self, params, *numbers):
        """Replace each gradient by its mean over the ranks; the numbers come back averaged."""
        return numbers

    def any(self, flag):
        """Whether ``flag`` holds on any rank (so every rank takes the same branch)."""
        return flag

    def check_parameters_agree(self, model, step):
        pass

    def stop_all_at_exit(self, code):
        pass


class MPIWorld(SingleProcess):
    """One rank of ``mpirun -n N``: the collective operations go through mpi4py."""

    def __init__(self, MPI):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0

    def broadcast_parameters(self, model):
        state = model.state_dict()
        flat = flatten(state.values())
        self.comm.Bcast(flat, root=0)
        values, _ = unflatten(flat, [value.shape for value in state.values()])
        model.load_state_dict(dict(zip(state, values)))

    def average_gradients(self, params, *numbers):
        grads = [p.grad for p in params]
        flat = flatten([*grads, np.asarray(numbers, dtype=grads[0].dtype)])
        tick = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - tick
        flat /= self.size
        grads, numbers = unflatten(flat, [p.shape for p in params])
        for p, grad in zip(params, grads):
            p.grad = grad
        return tuple(float(x) for x in numbers)

    def any(self, flag):
        return bool(self.comm.allreduce(int(flag), op=self.MPI.MAX))

    def check_parameters_agree(self, model, step):
        checksums = self.comm.allgather(parameter_checksum(model))
        if len(set(checksums)) > 1:
            raise TrainingError(f"the ranks' parameters differ at step {step} (checksums "
                                f"{checksums}); the checkpoint on disk is the last good one")

    def stop_all_at_exit(self, code):
        # The other ranks wait in a collective call that will never complete. Abort once this
        # process has said why (the command line prints the error on the way out).
        atexit.register(self.comm.Abort, code)
