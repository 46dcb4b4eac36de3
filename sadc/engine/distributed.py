"""torchrun support: process group set-up from the environment torchrun provides.

``torchrun --nproc_per_node=N -m sadc distill ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything runs as a single process. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sadc.errors import SadcError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def device_for(info: DistInfo, requested: torch.device) -> torch.device:
    """Under DDP on CUDA each process takes the GPU of its local rank."""
    if info.enabled and requested.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return requested


@contextlib.contextmanager
def process_group(info: DistInfo, device: torch.device, timeout_s: int = 600):
    """Initialise and tear down the process group (no-op for a single process).

    A rank that raises tears the group down; the others then fail in their next
    collective (and torchrun stops them all), so one rank's error ends the run.
    """
    if not info.enabled:
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as err:
        raise SadcError(f"cannot start the {backend} process group ({err}); launch with torchrun") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (e.g. the run directory rank 0 chose)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
