"""Samplers, collation and DataLoader construction with exactly reproducible order.

Index encoding (the one convention every sadc dataset follows): the sampler yields
integers ``k = epoch * len(dataset) + i``; a dataset decodes ``epoch, i = divmod(k,
len(dataset))`` and seeds that item's augmentation from ``(seed, epoch, i)`` with
:func:`item_generator`. Plain ``i < len(dataset)`` therefore means epoch 0. Because the
epoch travels inside the index, persistent DataLoader workers need no ``set_epoch``
call, and both the data order and every augmentation are pure functions of
(seed, samples consumed) -- across worker counts, restarts and resumes.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))
"""Signals that stop a training run with a checkpoint: Ctrl-C, SIGTERM (timeout, systemd, Slurm,
torchrun), SIGUSR1 (Slurm's ``--signal`` pre-emption warning)."""


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers ignore :data:`STOP_SIGNALS`.

    ``timeout``, systemd, Slurm and a terminal's Ctrl-C signal the whole process group;
    a worker killed by it would take the main process's DataLoader down before the main
    process could save. Ignoring them leaves the decision to the main process, which
    shuts its workers down itself (and workers exit when it dies).
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def close_batches(batches: object) -> None:
    """Stop a batch iterator's loader workers now, not whenever garbage collection gets to it.

    Workers ignore SIGTERM (:func:`ignore_stop_signals`), so a worker left running would
    never exit: an iterator kept alive by an exception's traceback (a data error met in a
    worker, with the error still referenced) made multiprocessing's exit handler, which
    terminates and then joins its children, wait forever. torch's multi-process iterator
    is shut down as its ``__del__`` would; a generator over loaders is closed, and its own
    ``finally`` closes them.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's _MultiProcessingDataLoaderIter
    if callable(shutdown):
        shutdown()
    elif callable(close := getattr(batches, "close", None)):
        close()


def decode_index(k: int, size: int) -> tuple[int, int]:
    """Encoded sample index ``k`` -> (epoch, item index in 0..size-1)."""
    k = int(k)
    if k < 0 or size <= 0:
        raise IndexError(f"sample index {k} out of range for a dataset of {size} items")
    return divmod(k, size)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, index) via numpy's SeedSequence.

    SeedSequence mixes the three integers well (unlike ``seed + index``) and, unlike
    Python's ``hash`` of strings, is not salted per process.
    """
    words = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch), int(index)]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFFFFFFFFFFFFFF)


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """[(image uint8 [3, H, W], target dict), ...] -> (uint8 [B, 3, H, W], [target dict, ...])."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


class InfiniteSampler(Sampler[int]):
    """Endless stream of encoded indices ``epoch * size + i`` for one rank.

    The global stream visits epoch 0, 1, 2, ...; each epoch is a permutation of
    ``range(size)`` from a generator seeded with ``seed + epoch`` (identity order when
    ``shuffle=False``). Rank ``r`` of ``world_size`` takes global positions
    ``r, r + world_size, ...``; ``start`` is how many samples this rank has already
    consumed, so a resumed run (``start = step * batch_size``) continues exactly where
    the interrupted one stopped. Has no ``len``: iterate with a step budget.
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0, start: int = 0, rank: int = 0, world_size: int = 1):
        if size <= 0:
            raise ValueError(f"InfiniteSampler needs a non-empty dataset, got size {size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in 0..{world_size - 1}")
        if start < 0:
            raise ValueError(f"start {start} must be >= 0")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.start, self.rank, self.world_size = start, rank, world_size

    def _order(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[int]:
        position = self.rank + self.start * self.world_size  # global position of our next sample
        epoch, offset = divmod(position, self.size)
        while True:
            order = self._order(epoch).tolist()
            base = epoch * self.size
            while offset < self.size:
                yield base + order[offset]
                offset += self.world_size
            epoch, offset = epoch + 1, offset - self.size


class _ShardSampler(Sampler[int]):
    """One ordered pass over ``range(rank, size, world_size)`` (evaluation)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    workers: int,
    shuffle: bool,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    infinite: bool = True,
    drop_last: bool = True,
) -> DataLoader:
    """A DataLoader yielding ``(images uint8 [B, 3, H, W], [target dict] * B)``.

    ``infinite=True`` (training): endless :class:`InfiniteSampler` stream resumed after
    ``start_step`` batches of this rank; workers are persistent. ``infinite=False``
    (evaluation): one ordered pass over this rank's shard ``rank::world_size``; ``shuffle``
    and ``drop_last`` are ignored and the last partial batch is kept.
    Memory is pinned only when CUDA is available. Workers ignore :data:`STOP_SIGNALS`.
    """
    size = len(dataset)  # type: ignore[arg-type]  # map-style datasets define __len__
    if infinite:
        sampler: Sampler[int] = InfiniteSampler(
            size, shuffle=shuffle, seed=seed, start=start_step * batch_size, rank=rank, world_size=world_size
        )
    else:
        sampler, drop_last = _ShardSampler(size, rank, world_size), False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=workers > 0 and infinite,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )


class Concatenated(Dataset):
    """Several datasets as one, following the encoded-index convention above.

    ``dataset[epoch * len + i]`` finds the part holding item ``i`` and asks it for its
    own encoded index ``epoch * len(part) + local_i``, so each part still seeds its
    augmentation from its own (seed, epoch, index). ``ground_truth[j]`` says whether
    part ``j``'s boxes are ground truth; every target gets ``has_gt`` accordingly (an
    image folder's empty boxes are not ground truth, a COCO set's are).
    """

    def __init__(self, parts: list[Dataset], ground_truth: list[bool]):
        if not parts or len(parts) != len(ground_truth):
            raise ValueError("Concatenated needs one ground_truth flag per part, and at least one part")
        self.parts: list[Any] = list(parts)  # map-style datasets: each has __len__
        self.ground_truth = list(ground_truth)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    @property
    def skipped(self) -> list:
        """Unreadable files of every part that keeps such a list (image folders)."""
        return [s for p in self.parts for s in getattr(p, "skipped", [])]

    def write_skipped(self, path) -> None:
        """One skipped-images list for every image-folder part (later decode failures append to it, once each)."""
        from sadc.data.reader import SkipList

        shared = SkipList(path, self.skipped)
        for p in self.parts:
            if hasattr(p, "skip_list"):
                p.skip_list = shared

    def record(self, targets: list[dict]) -> None:
        """Main process: list the decode failures that image-folder parts reported in a batch's targets."""
        recorder = next((p for p in self.parts if hasattr(p, "record")), None)
        if recorder is not None:
            recorder.record(targets)

    def __getitem__(self, k: int):
        epoch, i = decode_index(k, len(self))
        j = int(np.searchsorted(self.offsets, i, side="right")) - 1
        part = self.parts[j]
        image, target = part[epoch * len(part) + i - self.offsets[j]]
        return image, {**target, "has_gt": self.ground_truth[j]}
