"""Ultralytics YOLO layout: read in place, and write.

A ``data.yaml`` names the dataset root (``path``, default: the yaml's folder), the
splits (``train:``, ``val:``, ``test:``: a folder of images, a .txt list of image
paths, or a list of those, relative to the root) and the classes (``names``: a list, or
a mapping ``{0: name, ...}``). The labels of ``.../images/.../x.jpg`` are in
``.../labels/.../x.txt``: one row per object, ``class cx cy w h`` normalised to [0, 1]
by the image's width and height (a row with more numbers is a polygon ``class x1 y1 x2
y2 ...``, boxed by its extremes). An image without a label file, or with an empty one,
is background, as in Ultralytics.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sadc.data.formats import ImageRecord, find_yaml, place_file, relative_name, shared_class_names
from sadc.data.images import DataError, find_images, image_size, is_image_file

if TYPE_CHECKING:
    from sadc.data.formats import LabeledSplit

EPS = 1e-6  # rounding slack on the [0, 1] check (labels are often written with 6 decimals)


def yaml_file(path: Path) -> Path:
    """The data.yaml a YOLO source names: the file itself, or the one in a folder."""
    path = Path(path)
    if path.is_dir():
        found = find_yaml(path)
        if found is None:
            raise DataError(f"{path}: no data.yaml in this folder; give the YOLO data.yaml itself")
        return found
    if not path.is_file():
        raise DataError(f"{path}: data.yaml not found")
    return path


def load_data_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; expected a YOLO data.yaml") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise DataError(f"{path}{at}: malformed YAML ({getattr(err, 'problem', None) or 'invalid'})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a YOLO data.yaml is a mapping with train:, val: and names:")
    return data


def class_names(data: dict, where: Path) -> list[str]:
    """``names`` as a list (a ``{0: a, 1: b}`` mapping must number its classes 0..C-1)."""
    names = data.get("names")
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: (not isinstance(k, int), k))
        if keys != list(range(len(names))):
            raise DataError(f"{where}: names must be numbered 0..{len(names) - 1}, got keys {keys[:6]}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError(f"{where}: 'names' is missing or empty; list the class names (names: [a, b] or names: {{0: a}})")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{where}: class name {dup!r} appears twice in names; names must be unique")
    if "nc" in data and data["nc"] != len(names):
        raise DataError(f"{where}: nc is {data['nc']} but names lists {len(names)} classes; make them agree")
    return names


def dataset_root(data: dict, where: Path) -> Path:
    """``path`` of the yaml: absolute, or relative to the yaml's folder (else the current folder)."""
    given = data.get("path")
    if given in (None, ""):
        return where.parent
    given = Path(str(given))
    if given.is_absolute():
        candidates = [given]
    else:
        candidates = [where.parent / given, Path.cwd() / given]
    for c in candidates:
        if c.is_dir():
            return c
    raise DataError(f"{where}: path {given} is not a folder (looked in {', '.join(str(c) for c in candidates)})")


def yolo_splits(path: Path) -> list[str]:
    """The splits a data.yaml names, in train, val, test order."""
    where = yaml_file(path)
    data = load_data_yaml(where)
    return [s for s in ("train", "val", "test") if data.get(s)]


def split_images(entry: Any, root: Path, where: Path, split: str) -> list[Path]:
    """Image files of one split entry: folders searched recursively, .txt lists read, lists combined."""
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for item in entries:
        p = Path(str(item))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            files += find_images(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    img = Path(line)
                    files.append(img if img.is_absolute() else p.parent / img)
        else:
            raise DataError(f"{where}: {split}: {p} is neither a folder of images nor a .txt list of them")
    if not files:
        raise DataError(f"{where}: {split}: no images found in {entry}")
    return files


def label_path(image: Path) -> Path:
    """``a/images/b/x.jpg`` -> ``a/labels/b/x.txt`` (the last ``images`` folder; Ultralytics' rule)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, names: list[str], width: int, height: int) -> list[tuple[int, float, float, float, float, int]]:
    """Rows of one label file -> ``(label, x1, y1, x2, y2, 0)`` in image px; DataError naming file and line."""
    boxes = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path} line {lineno}"
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise DataError(f"{where}: {line.strip()!r} is not numbers; a row is 'class cx cy w h'") from None
        n = len(values)
        if n != 5 and (n < 7 or n % 2 == 0):
            raise DataError(f"{where}: {n} numbers, expected 5 (class cx cy w h) or a polygon (class x1 y1 x2 y2 x3 y3 ...)")
        cls = values[0]
        if not math.isfinite(cls) or cls != int(cls) or not 0 <= cls < len(names):
            raise DataError(f"{where}: class id {parts[0]} is past names (0..{len(names) - 1}); fix the row or the yaml's names")
        coords = values[1:]
        if not all(math.isfinite(v) and -EPS <= v <= 1 + EPS for v in coords):
            raise DataError(
                f"{where}: box {' '.join(parts[1:])} is outside [0, 1]; YOLO labels are normalised by image width and height"
            )
        if n == 5:
            cx, cy, w, h = coords
            x1, x2, y1, y2 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
        else:
            xs, ys = coords[0::2], coords[1::2]
            x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
        x1, x2 = max(x1, 0.0) * width, min(x2, 1.0) * width
        y1, y2 = max(y1, 0.0) * height, min(y2, 1.0) * height
        if x2 <= x1 or y2 <= y1:
            raise DataError(f"{where}: box {' '.join(parts[1:])} has zero width or height; fix or delete the row")
        boxes.append((int(cls), x1, y1, x2, y2, 0))
    return boxes


def read_yolo(path: Path, split: str) -> tuple[list[str], Path, list[ImageRecord]]:
    """(class names, image root, records) of one split of a YOLO dataset."""
    where = yaml_file(path)
    data = load_data_yaml(where)
    names = class_names(data, where)
    root = dataset_root(data, where)
    if not data.get(split):
        given = [s for s in ("train", "val", "test") if data.get(s)]
        raise DataError(f"{where}: no '{split}:' entry (it has {', '.join(given) or 'none'}); add {split}: images/{split}")

    def record(image: Path) -> ImageRecord:
        width, height = image_size(image)
        labels = label_path(image)
        boxes = parse_label_file(labels, names, width, height) if labels.is_file() else []
        try:
            name = image.relative_to(root).as_posix()
        except ValueError:  # an image outside the root (an absolute path in a .txt list)
            name = str(image.resolve())
        return ImageRecord(name, width, height, boxes)

    images = [p for p in split_images(data[split], root, where, split) if is_image_file(p)]
    # Header reads and small text files: threads overlap the file-system latency (map keeps
    # the order, and re-raises the first error in that order).
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        records = list(pool.map(record, images))
    return names, root, records


def _fmt(v: float) -> str:
    return format(v, ".10g")


def write_yolo(splits: dict[str, LabeledSplit], out: Path) -> Path:
    """``out/data.yaml``, ``out/images/SPLIT/...`` (linked) and ``out/labels/SPLIT/...txt``.

    Class ids follow the categories sorted by id. Crowd annotations (ignore regions)
    have no YOLO form and are left out. Every image gets a label file (empty for
    background). The yaml has no ``path:``, so Ultralytics and sadc resolve the splits
    against its folder.
    """
    out = Path(out)
    names = shared_class_names(splits, "a data.yaml has one names list")  # checked before anything is written
    for split, data in splits.items():
        cats = sorted(data.coco["categories"], key=lambda c: c["id"])
        label_of = {c["id"]: i for i, c in enumerate(cats)}
        rows: dict[int, list[str]] = {img["id"]: [] for img in data.coco["images"]}
        sizes = {img["id"]: (img["width"], img["height"]) for img in data.coco["images"]}
        for ann in data.coco["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            w_img, h_img = sizes[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, w_img), min(y + h, h_img)
            cx, cy = (x1 + x2) / 2 / w_img, (y1 + y2) / 2 / h_img
            rows[ann["image_id"]].append(
                f"{label_of[ann['category_id']]} {_fmt(cx)} {_fmt(cy)} {_fmt((x2 - x1) / w_img)} {_fmt((y2 - y1) / h_img)}"
            )
        for img in data.coco["images"]:
            rel = relative_name(img["file_name"])
            place_file(data.images / img["file_name"], out / "images" / split / rel)
            label = out / "labels" / split / Path(rel).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(r + "\n" for r in rows[img["id"]]), encoding="utf-8")
    index = out / "data.yaml"
    body: dict[str, Any] = {s: f"images/{s}" for s in splits}
    body["names"] = dict(enumerate(names))
    tmp = index.with_name(".tmp-data.yaml")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    os.replace(tmp, index)
    return index
