"""A folder of unlabeled images (searched recursively), letterboxed like the labeled sets."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from sadc.data.images import (
    IMAGE_SUFFIXES,
    DataError,
    ImageReadError,
    find_images,
    load_image,
)
from sadc.data.loaders import decode_index, item_generator
from sadc.data.transforms import TrainTransform

if TYPE_CHECKING:
    from sadc.recipe import AugmentSection


def _check_header(path: Path) -> str | None:
    """None if Pillow can identify and verify ``path`` (cheap: no pixel decode), else the reason."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # Pillow raises many types for bad files
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return None


def skip_line(path: Path, reason: str) -> str:
    """One line of a skipped-images list: ``path<TAB>reason``."""
    return f"{path}\t{reason}\n"


def write_skip_list(skipped: list[tuple[Path, str]], path: Path) -> Path:
    """Write ``skipped`` (path, reason) pairs to ``path``, one :func:`skip_line` each (an empty file if none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(skip_line(p, reason) for p, reason in skipped), encoding="utf-8")
    return path


class UnlabeledFolder(Dataset):
    """Every readable image under ``root``, for distillation on unlabeled data.

    Construction runs ``find_images`` and a header check (``PIL.Image.verify``) per file:
    readable files go to ``paths``, the rest to ``skipped`` as (path, reason). A file that
    passes the check but fails to decode later (e.g. truncated pixel data) is replaced by
    the next readable index (deterministic) and appended to ``skipped`` with a warning;
    in DataLoader worker processes that append stays in the worker, but the line
    reaches the list file of :meth:`write_skipped` from any process.

    Items follow the encoded-index convention of :mod:`sadc.data.loaders`:
    ``dataset[epoch * len + i]`` -> ``(image uint8 [3, H, W], target)`` with empty
    ``boxes`` float32 [0, 4] and ``labels`` int64 [0], ``image_id = i``, ``meta`` and
    ``path`` (str).
    """

    def __init__(self, root: Path, input_size: tuple[int, int], augment: AugmentSection | None = None, seed: int = 0):
        self.root = Path(root)
        self.seed = seed
        self.transform = TrainTransform(input_size, augment)
        found = find_images(self.root)
        if not found:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DataError(f"{self.root}: no images found (looked for {suffixes}, recursively)")
        self.paths: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        for path in found:
            reason = _check_header(path)
            if reason is None:
                self.paths.append(path)
            else:
                self.skipped.append((path, reason))
        self._bad: set[int] = set()  # indices that passed the header check but failed to decode
        self.skip_log: Path | None = None  # see write_skipped
        if not self.paths:
            raise DataError(f"{self.root}: none of the {len(found)} image files can be read (first: {self.skipped[0][1]})")

    def write_skipped(self, path: Path) -> None:
        """Write one ``path<TAB>reason`` line per skipped file (an empty file if none).

        Files that fail to decode later are appended to the same list as they are met,
        from whichever process (DataLoader worker) meets them.
        """
        self.skip_log = write_skip_list(self.skipped, path)

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> tuple[int, Tensor]:
        """Decode item ``i``, falling forward to the next index that decodes."""
        for step in range(len(self.paths)):
            j = (i + step) % len(self.paths)
            if j in self._bad:
                continue
            try:
                return j, load_image(self.paths[j])
            except ImageReadError as err:
                self._bad.add(j)
                self.skipped.append((self.paths[j], str(err)))
                if self.skip_log is not None:  # short appends: whole lines even from several workers
                    try:
                        with open(self.skip_log, "a", encoding="utf-8") as f:
                            f.write(skip_line(self.paths[j], str(err)))
                    except OSError:  # the list is a courtesy; the warning below still says it
                        pass
                warnings.warn(f"skipping unreadable image: {err}", stacklevel=2)
        raise DataError(f"{self.root}: no image in the folder can be decoded")

    def __getitem__(self, k: int) -> tuple[Tensor, dict[str, Any]]:
        epoch, i = decode_index(k, len(self))
        j, image = self._load(i)
        out, boxes, meta, _ = self.transform(image, torch.zeros(0, 4), item_generator(self.seed, epoch, i))
        target = {
            "boxes": boxes,
            "labels": torch.zeros(0, dtype=torch.int64),
            "image_id": j,
            "meta": meta,
            "path": str(self.paths[j]),
        }
        return out, target
