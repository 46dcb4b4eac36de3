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

from sadc.errors import SadcError, first_line


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
    collective (and torchrun stops them all), so one rank's error ends the run. That
    collective failure becomes one SadcError line pointing at the rank that failed first.
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
    except Exception as err:
        if isinstance(err, SadcError) or not is_peer_failure(err):
            raise
        raise SadcError(peer_failure_message(info, err)) from None
    finally:
        dist.destroy_process_group()


_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def is_peer_failure(err: BaseException) -> bool:
    """True when ``err`` is a collective failing because another rank went away (gloo/NCCL)."""
    dist_error = getattr(dist, "DistError", None)
    return (dist_error is not None and isinstance(err, dist_error)) or (
        isinstance(err, RuntimeError) and any(sign in str(err) for sign in _PEER_SIGNS)
    )


def peer_failure_message(info: DistInfo, err: BaseException, saved: str = "") -> str:
    text = str(err)
    first = next((sign for sign in _PEER_SIGNS if sign in text), first_line(err, 160))
    return (
        f"rank {info.rank}: another rank stopped, so this one cannot go on ({first}); its own error is printed "
        f"above (torchrun's summary names the first failure){saved}"
    )


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (e.g. the run directory rank 0 chose)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
