"""torch.distributed for ddfast's methods: one process group per job, launched by ``torchrun`` (and so by
SLURM + torchrun), backend nccl on GPUs and gloo on CPU, with timeouts so that a dead rank fails the job
instead of hanging it.

:func:`context` returns the job's :class:`Context`: the single-process one (rank 0 of 1, every collective a
no-op) unless the process was started by a launcher that sets ``WORLD_SIZE`` > 1, or a process group is
already initialised (tests spawn one). Methods use the context for three things only: which share of the
work is theirs (:meth:`Context.shard`), summing tensors over ranks (:meth:`Context.all_reduce_`) and
waiting for each other (:meth:`Context.barrier`); everything else they compute the same way on every rank
from the shared seed.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 600.0  # a collective waits at most this long for a missing rank, then raises
TIMEOUT_ENV = "DDFAST_DIST_TIMEOUT_S"  # overrides DEFAULT_TIMEOUT_S (rank 0's evaluations and the like wait in it)
_OWN_GROUP = False  # whether context() initialised the process group (and so destroy() may end it)


@dataclass(frozen=True)
class Context:
    """A rank's view of the job: ``rank`` of ``world``; ``device`` the accelerator this rank uses (its
    ``LOCAL_RANK``'s GPU under nccl, else the CPU); ``backend`` "gloo", "nccl" or None (one process)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that writes checkpoints, results and shared files."""
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This rank's items of ``range(n)``: ``rank, rank + world, ...`` (round robin)."""
        return range(self.rank, n, self.world)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (nothing with one process); returns it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @property
    def group(self):
        """The process group collectives run on (the default group), or None with one process: what
        :func:`ddfast.unroll`'s ``process_group`` takes."""
        return dist.group.WORLD if self.distributed else None

    def classes(self, num_classes: int) -> list[int]:
        """This rank's classes of a class-sharded method (:meth:`shard`); a clear error when there are more
        ranks than classes (a rank would have nothing to match)."""
        if self.world > num_classes:
            raise ValueError(f"{self.world} ranks but {num_classes} classes: class-sharded methods need at most one "
                             f"rank per class; launch with --nproc-per-node <= {num_classes}")
        return list(self.shard(num_classes))

    def check_same(self, value: int, what: str) -> None:
        """Raise on the ranks whose ``value`` differs from another rank's (e.g. the iteration a resume starts
        from, when the run folder is not shared): summed over the ranks it must be ``world * value`` everywhere."""
        if not self.distributed:
            return
        total = self.all_reduce_(torch.tensor([float(value)], dtype=torch.float64, device=self.device))
        if float(total) != self.world * float(value):
            raise RuntimeError(f"rank {self.rank}: {what} is {value} here but differs on another rank (the ranks sum to "
                               f"{float(total):g}); every rank must read the same checkpoint: put the run folder on a "
                               f"file system all ranks share")

    def barrier(self) -> None:
        if self.distributed:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()


def context(backend: str | None = None, timeout_s: float | None = None) -> Context:
    """The job's :class:`Context`, initialising the process group on first use when a launcher started this
    process (``WORLD_SIZE`` > 1 with ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``: torchrun sets them).
    ``backend``: default nccl when CUDA is available, else gloo. ``timeout_s``: how long a collective waits
    for the other ranks before it raises (a killed rank makes the others fail after at most this long; under
    torchrun the launcher also stops the job as soon as one rank exits with an error); default
    ``DDFAST_DIST_TIMEOUT_S`` from the environment, else 600. Work that only rank 0 does between collectives
    (an ``eval_every`` evaluation) must fit in it.

    A process group initialised before (by the caller) is used as it is: the methods then run distributed
    on it; pass ``ctx=Context()`` to a method to run one process's work on every rank instead."""
    global _OWN_GROUP
    if not dist.is_available():
        return Context()
    if not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Context()
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world} but {missing} are not set: launch ddfast with torchrun "
                               f"(e.g. torchrun --nproc-per-node 2 -m ddfast ...)")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend not in ("nccl", "gloo"):
            raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
        if backend == "nccl":
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # errors and timeouts abort the job
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if timeout_s is None:
            timeout_s = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        if not timeout_s > 0:
            raise ValueError(f"timeout_s ({TIMEOUT_ENV}) must be > 0 seconds, got {timeout_s}")
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        _OWN_GROUP = True
    backend = dist.get_backend()
    rank, world = dist.get_rank(), dist.get_world_size()
    if backend == "nccl":  # this rank's GPU: LOCAL_RANK's under a launcher, else the current one
        local = os.environ.get("LOCAL_RANK")
        device = torch.device("cuda", int(local) if local is not None else torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return Context(rank, world, device, backend)


def resolve(ctx: Context | None) -> Context:
    """``ctx``, or the job's :func:`context` when None (the methods' default: one process unless launched by
    torchrun or inside an initialised process group)."""
    return ctx if ctx is not None else context()


def destroy() -> None:
    """End the process group if :func:`context` started it (the CLI calls this on exit)."""
    global _OWN_GROUP
    if _OWN_GROUP and dist.is_initialized():
        dist.destroy_process_group()
    _OWN_GROUP = False
