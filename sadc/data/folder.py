"""A folder of unlabeled images (searched recursively), letterboxed like the labeled sets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from sadc.data.images import DataError, ImageReadError, load_image
from sadc.data.loaders import decode_index, item_generator
from sadc.data.reader import SkipList, scan_images, text_name
from sadc.data.transforms import TrainTransform

if TYPE_CHECKING:
    from sadc.recipe import AugmentSection

log = logging.getLogger(__name__)


class UnlabeledFolder(Dataset):
    """Every readable image under ``root``, for distillation on unlabeled data.

    Construction runs :func:`~sadc.data.reader.scan_images` (the one reader of image
    folders): readable files go to ``paths``, the rest to ``skipped`` as (path, reason).
    A file that passes the check but fails to decode later (e.g. truncated pixel data)
    is replaced by the next readable index (deterministic; a training batch stays full)
    and reported: in the item's ``target["skipped"]`` (a DataLoader worker cannot write
    the main process's list) and, in the main process, straight to :meth:`record`. The
    main process passes each batch's targets to :meth:`record`, which lists every file
    once however many workers met it.

    Items follow the encoded-index convention of :mod:`sadc.data.loaders`:
    ``dataset[epoch * len + i]`` -> ``(image uint8 [3, H, W], target)`` with empty
    ``boxes`` float32 [0, 4] and ``labels`` int64 [0], ``image_id = i``, ``meta``,
    ``path`` (str) and ``skipped`` (list of (path str, reason), usually empty).
    """

    def __init__(self, root: Path, input_size: tuple[int, int], augment: AugmentSection | None = None, seed: int = 0):
        self.root = Path(root)
        self.seed = seed
        self.transform = TrainTransform(input_size, augment)
        scan = scan_images(self.root)
        self.paths: list[Path] = scan.paths
        self.skipped: list[tuple[Path, str]] = list(scan.skipped)  # grows as decode failures are recorded
        self.skip_list = SkipList(None, self.skipped)
        self._bad: set[int] = set()  # indices that passed the header check but failed to decode (this process)

    def write_skipped(self, path: Path) -> None:
        """Write one ``path<TAB>reason`` line per skipped file (an empty file if none).

        Files that fail to decode later are appended to the same list as the main
        process records them (:meth:`record`), each once.
        """
        self.skip_list = SkipList(path, self.skip_list.entries)

    def record(self, targets: list[dict]) -> None:
        """Main process: list the decode failures reported in a batch's targets (each file once, with a warning)."""
        for target in targets:
            for path, reason in target.get("skipped", ()):
                self._note(path, reason)

    def _note(self, path: Path | str, reason: str) -> None:
        if self.skip_list.add(path, reason):
            self.skipped.append((Path(path), reason))
            log.warning("skipping unreadable image: %s", text_name(reason))

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> tuple[int, Tensor, list[tuple[str, str]]]:
        """Decode item ``i``, falling forward to the next index that decodes; also the failures met."""
        failures: list[tuple[str, str]] = []
        for step in range(len(self.paths)):
            j = (i + step) % len(self.paths)
            if j in self._bad:
                continue
            try:
                return j, load_image(self.paths[j]), failures
            except ImageReadError as err:
                self._bad.add(j)
                failures.append((str(self.paths[j]), str(err)))
                if get_worker_info() is None:  # the main process: list it now
                    self._note(self.paths[j], str(err))
        raise DataError(f"{text_name(self.root)}: no image in the folder can be decoded")

    def __getitem__(self, k: int) -> tuple[Tensor, dict[str, Any]]:
        epoch, i = decode_index(k, len(self))
        j, image, failures = self._load(i)
        out, boxes, meta, _ = self.transform(image, torch.zeros(0, 4), item_generator(self.seed, epoch, i))
        target = {
            "boxes": boxes,
            "labels": torch.zeros(0, dtype=torch.int64),
            "image_id": j,
            "meta": meta,
            "path": str(self.paths[j]),
            "skipped": failures,
        }
        return out, target
