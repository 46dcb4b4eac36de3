"""The one reader of "a folder of images": what is readable is decided here, once, for every command.

distill (unlabeled data), predict, pseudo-label, INT8 calibration and parity all read
folders through this module:

- :func:`scan_images` walks the folder (:func:`~sadc.data.images.find_images`: links to
  files and folders inside or outside it are followed, loops visited once) and checks
  each file's header; unreadable files are set aside with their reason.
- :func:`decoded` decodes paths one at a time and hands over only the images that
  decode, so batches built from it are always full of real images: a batch of only
  unreadable files cannot happen.
- :class:`SkipList` is the one writer of a skipped-images list: each file at most
  once, from the main process (DataLoader workers report failures in their items).

Names are file-system text (``os.fsdecode``: undecodable bytes as surrogates, so the
file can still be opened); :func:`text_name` is how they are written and printed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image

from sadc.data.images import (
    IMAGE_SUFFIXES,
    DataError,
    ImageReadError,
    find_images,
    load_image,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


def text_name(path: Path | str) -> str:
    """``path`` as printable UTF-8 text: bytes that are not UTF-8 become ``\\xNN`` (one line, never an encode error)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_header(path: Path) -> str | None:
    """None if Pillow can identify and verify ``path`` (cheap: no pixel decode), else the reason."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # Pillow raises many types for bad files
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return None


def skip_line(path: Path | str, reason: str) -> str:
    """One line of a skipped-images list: ``path<TAB>reason`` (as :func:`text_name`, no line breaks)."""
    return f"{text_name(path)}\t{' '.join(text_name(reason).split())}\n"


class SkipList:
    """Unreadable files and their reasons, each file once; mirrored to ``path`` when one is given.

    Only the main process writes: DataLoader workers put what they meet in their items
    and the main process adds it (:meth:`add`), so a file met by several workers is listed once.
    """

    def __init__(self, path: Path | None = None, entries: Iterable[tuple[Path, str]] = ()):
        self.entries: list[tuple[Path, str]] = []
        self._seen: set[str] = set()
        self.path: Path | None = None
        for p, reason in entries:
            self.add(p, reason)
        if path is not None:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(skip_line(p, r) for p, r in self.entries), encoding="utf-8")

    def add(self, path: Path | str, reason: str) -> bool:
        """Record ``path`` (True) unless it is already listed (False); appends its line to the file."""
        key = os.fsdecode(path)
        if key in self._seen:
            return False
        self._seen.add(key)
        self.entries.append((Path(path), reason))
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(skip_line(path, reason))
        return True

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)


def write_skip_list(skipped: Iterable[tuple[Path, str]], path: Path) -> Path:
    """Write ``skipped`` (path, reason) pairs to ``path``, each file once (an empty file if none)."""
    return SkipList(path, skipped).path  # type: ignore[return-value]


@dataclass
class ImageScan:
    """The image files under ``root`` (sorted by relative path): ``paths`` readable, ``skipped`` not."""

    root: Path
    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def name(self, path: Path) -> str:
        """``path`` relative to ``root``, as a posix path: lexical, so links to outside the folder keep their name."""
        return Path(path).relative_to(self.root).as_posix()


def scan_images(root: Path, *, what: str | None = None) -> ImageScan:
    """Every image file under ``root`` whose header reads; the rest in ``skipped`` with the reason.

    Raises :class:`DataError` naming ``what`` (default: the folder) when the folder
    holds no image files or none whose header reads.
    """
    root = Path(root)
    where = what or text_name(root)
    found = find_images(root)
    if not found:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"{where}: no images found (looked for {suffixes}, recursively)")
    scan = ImageScan(root)
    for path in found:
        reason = check_header(path)
        if reason is None:
            scan.paths.append(path)
        else:
            scan.skipped.append((path, reason))
    if not scan.paths:
        raise DataError(f"{where}: none of the {len(found)} image files can be read (first: {text_name(scan.skipped[0][1])})")
    return scan


def decoded(items: Iterable[T], skips: SkipList, *, path=lambda item: item) -> Iterator[tuple[T, torch.Tensor]]:
    """``(item, image uint8 [3, H, W])`` for each item whose file decodes, in order.

    ``path(item)`` gives the file (default: the item is the path). Files that do not
    decode (truncated pixel data behind a good header, vanished files) are added to
    ``skips`` and left out: whatever is built from this stream holds only real images.
    The caller reports ``skips`` (a count and the list file).
    """
    for item in items:
        try:
            image = load_image(path(item))
        except ImageReadError as err:
            if skips.add(path(item), str(err)):
                log.debug("skipping unreadable image: %s", text_name(str(err)))
            continue
        yield item, image


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of ``n`` consecutive items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
