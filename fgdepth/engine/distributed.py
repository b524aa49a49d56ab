"""Data-parallel training (DDP) under ``torchrun``: which process this is, and the few
collective operations ``fit`` needs. A single process is a world of one, and every function
here is then a no-op, so ``fit`` has one code path."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, prints and writes states."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world() -> World:
    """Join the process group torchrun set up (its env:// variables); a world of one when not
    launched by torchrun. NCCL on CUDA, Gloo on CPU."""
    if not launched_by_torchrun():
        return SINGLE
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return current_world()


def current_world() -> World:
    """The world of an initialised process group, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return SINGLE


def device_for(world: World) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def shard(rows: np.ndarray, world: World) -> np.ndarray:
    """This rank's share of ``rows``: every ``size``-th row from ``rank`` (what
    DistributedSampler does without shuffling; the rows come shuffled already)."""
    return rows[world.rank :: world.size]


def wrap(model: nn.Module, world: World, device: torch.device, unused: bool) -> nn.Module:
    """DDP around ``model`` for one stage, built after the stage froze its groups: frozen
    parameters do not require gradients, so DDP leaves them out of its reduction. ``unused``:
    some trainable parameters get no gradient (a head whose loss weight is 0)."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def sum_dicts(sums: dict[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    """Metric sums added over all ranks (a rank with no rows contributes nothing)."""
    if not world.distributed:
        return sums
    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, {k: v.cpu() for k, v in sums.items()})
    out: dict[str, torch.Tensor] = {}
    for part in gathered:
        for k, v in part.items():
            out[k] = out[k] + v if k in out else v
    return out


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; Gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def largest(values: list[float], world: World) -> list[float]:
    """Each value's maximum over the ranks: one small all-reduce."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def agree(flags: list[bool], world: World) -> list[bool]:
    """Each flag true on every rank when it is true on one (checkpoints due, deadlines,
    non-finite losses), so that all ranks take the same branch."""
    return [v > 0 for v in largest([1.0 if f else 0.0 for f in flags], world)]


def any_rank(flag: bool, world: World) -> bool:
    return agree([flag], world)[0]


def sync_buffers(model: nn.Module, world: World) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank updates its own
    in its forward passes; DDP copies rank 0's at the start of the next one, and evaluation
    must use the same."""
    if not world.distributed:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def share(obj, world: World):
    """Rank 0's ``obj`` on every rank (e.g. a training state read from rank 0's disk)."""
    if not world.distributed:
        return obj
    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
