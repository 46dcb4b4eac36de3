"""Finding and decoding images: every file sadc reads becomes uint8 [3, H, W] RGB.

``find_images`` walks a folder (recursively, following symlinked folders once) and
``load_image`` turns any common image mode -- grayscale, 16-bit, alpha, palette, CMYK,
EXIF-rotated -- into the one tensor layout the rest of sadc assumes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from sadc.errors import SadcError

if TYPE_CHECKING:  # imported where used: checking a data path must not cost torch's import (seconds)
    import torch

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
"""Suffixes (lower case) treated as images; matched case-insensitively."""


class DataError(SadcError):
    """A dataset, annotation file or image folder is unusable; the message says where and why."""


class ImageReadError(DataError):
    """One image file cannot be decoded (missing, zero bytes, truncated, not an image)."""


def is_image_file(path: Path) -> bool:
    """True when ``path``'s suffix is in :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(root: Path) -> list[Path]:
    """All image files under ``root``, recursively, sorted by their path relative to ``root``.

    Symlinked folders are followed, but each real folder is visited once, so symlink
    loops terminate and aliased folders do not duplicate images. Hidden folders and
    hidden files (names starting with ``.``, e.g. macOS ``._x.jpg`` resource forks that
    carry an image suffix but are not images) are skipped. Returned paths start with
    ``root`` (symlinks are not resolved away).

    Raises :class:`DataError` if ``root`` is missing or not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (pass an existing folder of images)")
    found: list[Path] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unreadable folder: nothing to find there
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            if entry.is_dir(follow_symlinks=True):
                stack.append(path)
            elif entry.is_file(follow_symlinks=True) and is_image_file(path):
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def load_image(path: Path) -> torch.Tensor:
    """Decode an image file into uint8 [3, H, W] RGB (H, W after EXIF orientation).

    Mode handling:
      * EXIF orientation is applied (``ImageOps.exif_transpose``), so H, W are as displayed.
      * Grayscale (1, L, I;16*, I, F) is replicated to three channels. 16-bit data is
        rescaled by 255/65535 with rounding (not clipped); ``I`` (32-bit) is treated as
        16-bit data clipped to [0, 65535]; ``F`` is taken as [0, 1] when its maximum is
        <= 1, else as [0, 255].
      * Alpha (RGBA, LA, PA, P with a transparency entry) is composited onto black, i.e.
        transparent pixels become black whatever colour they store.
      * CMYK, YCbCr, LAB, HSV are converted with Pillow's ``convert("RGB")``.

    Raises :class:`ImageReadError` ("PATH: cannot read image (reason)") for missing,
    zero-byte, truncated or non-image files; the whole file is decoded inside the
    ``try`` so truncation is detected here and not later.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            array = _to_rgb_array(img)
    except Exception as err:  # Pillow raises many types (OSError, ValueError, SyntaxError, ...)
        reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if isinstance(err, FileNotFoundError):
            reason = "file not found"
        raise ImageReadError(f"{path}: cannot read image ({reason})") from err
    import torch

    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow image -> uint8 [H, W, 3] RGB (see :func:`load_image` for the rules)."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        data = np.asarray(img).astype(np.float64)
        gray = np.rint(np.clip(data, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        data = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = 1.0 if data.size and data.max() <= 1.0 else 255.0
        gray = np.rint(np.clip(data / top, 0, 1) * 255.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[:, :, 3:4]
        rgb = (rgba[:, :, :3] * alpha + 127) // 255  # composite on black, rounded
        return rgb.astype(np.uint8)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def noise_images(n: int, input_size: tuple[int, int], seed: int | torch.Generator = 0) -> torch.Tensor:
    """uint8 [n, 3, H, W] of uniform random pixels, reproducible from ``seed``.

    An int seed gives the same tensor on every call (tracing examples, parity without a
    folder, latency batches); a :class:`torch.Generator` continues its stream (dry runs).
    """
    h, w = int(input_size[0]), int(input_size[1])
    import torch

    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=generator)


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as displayed (after EXIF rotation), from its header only.

    Raises :class:`ImageReadError` for files Pillow cannot identify.
    """
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112)
    except Exception as err:  # Pillow raises many types
        reason = "file not found" if isinstance(err, FileNotFoundError) else f"{type(err).__name__}: {err}"
        raise ImageReadError(f"{path}: cannot read image ({reason})") from err
    return (h, w) if orientation in _TRANSPOSED else (w, h)
