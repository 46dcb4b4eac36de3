"""What `sadc predict` is asked to read, checked without torch: image inputs and options.

Kept apart from :mod:`sadc.runtime.annotate` (torchvision, the model) so that a
mistyped path or option is one line in a fraction of a second.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from sadc.data.images import find_images, is_image_file
from sadc.errors import SadcError

__all__ = ["ImageInput", "check_options", "expand_inputs"]


@dataclass(frozen=True)
class ImageInput:
    """One image to predict on: its path and its name under --out (relative path for folder inputs)."""

    path: Path
    name: str
    image_id: int = 0  # position in the input order, from 1 (detections.json's image_id)


def expand_inputs(items: list[str]) -> tuple[list[ImageInput], bool]:
    """Files, folders (recursive) and glob patterns -> image inputs in order, names unique.

    Returns (inputs, whether any item was a folder or a pattern). SadcError for an item
    that is neither an image file, a folder nor a pattern matching images.
    """
    found: list[tuple[Path, str]] = []
    many = False
    for item in items:
        path = Path(item)
        if path.is_dir():
            many = True
            found += [(p, p.relative_to(path).as_posix()) for p in find_images(path)]
        elif path.is_file():
            if not is_image_file(path):
                raise SadcError(f"{path}: not an image file (expected .jpg, .png, ...)")
            found.append((path, path.name))
        elif glob.has_magic(item):
            many = True
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            matches = [p for p in matches if p.is_file() and is_image_file(p)]
            if not matches:
                raise SadcError(f"{item}: the pattern matches no image files")
            found += [(p, p.name) for p in matches]
        else:
            raise SadcError(f"{item}: no such file or folder")
    if not found:
        raise SadcError(f"{' '.join(items)}: no images found")
    inputs: list[ImageInput] = []
    used: set[str] = set()
    for path, name in found:
        unique, k = name, 1
        while unique in used:  # same file name from two places: x.png, x_1.png, ...
            stem, dot, suffix = name.rpartition(".")
            unique = f"{stem}_{k}.{suffix}" if dot else f"{name}_{k}"
            k += 1
        used.add(unique)
        inputs.append(ImageInput(path, unique, len(inputs) + 1))
    return inputs, many


def check_options(conf: float, batch: int) -> None:
    """One-line SadcError for a ``--conf`` outside [0, 1) or a ``--batch`` below 1."""
    if not 0.0 <= conf < 1.0:
        raise SadcError(f"--conf {conf}: must be in [0, 1)")
    if batch < 1:
        raise SadcError(f"--batch {batch}: must be >= 1")
