"""Several training processes, one model: the little that torch.distributed needs from us.

``torchrun --standalone --nproc_per_node N -m minillama pretrain ...`` starts N copies of
the command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. Each process
joins a process group (``gloo`` on CPU, ``nccl`` on GPUs), trains on its own slice of every
batch, and DistributedDataParallel averages the gradients so that every copy takes the same step.
A plain ``python`` run has no such variables and is world size 1: no process group at all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and plots; the others only compute."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def current(cls) -> "DistEnv":
        """The running process group's view, or a single process when there is none."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return cls()

    def device(self, preference: str = "auto") -> torch.device:
        """``"auto"``: this rank's GPU when there is one, else the CPU. ``"cuda"`` picks this rank's GPU."""
        if preference not in ("auto", "cpu", "cuda") and not preference.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {preference!r}")
        if preference == "auto":
            preference = "cuda" if torch.cuda.is_available() else "cpu"
        if preference == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device='cuda' but no CUDA GPU is available; allowed here: 'cpu' or 'auto'")
            return torch.device("cuda", self.local_rank)
        return torch.device(preference)


def setup(device: str = "auto") -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``); otherwise do nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        use_gpu = device != "cpu" and torch.cuda.is_available()
        if use_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_gpu else "gloo")
    return DistEnv.current()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[DistEnv]:
    """``with process_group(device) as env:`` a command's body, in the process group when torchrun
    started it (:func:`setup`), which is left again at the end (:func:`teardown`)."""
    env = setup(device)
    try:
        yield env
    finally:
        teardown()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place; a no-op for a single process."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
