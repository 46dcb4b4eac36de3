"""Labeled sets in three layouts, read in place into one in-memory COCO dict.

A labeled split is named by one path: a COCO json, an Ultralytics ``data.yaml`` (or
the folder holding it), or a Pascal VOC folder (``Annotations/``, ``JPEGImages/``,
``ImageSets/Main/``). :func:`read_split` detects the layout (or takes ``fmt``) and
returns a :class:`LabeledSplit`: a COCO detection dict plus the folder its
``file_name`` entries are relative to. That dict is what :class:`CocoDataset`
validates and loads, and what COCOeval scores against, so every command that takes a
labeled set takes all three layouts. :func:`convert` writes any of them as COCO, YOLO
or VOC files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sadc.data.images import DataError

if TYPE_CHECKING:
    from sadc.data.coco import CocoDataset
    from sadc.recipe import AugmentSection

FORMATS = ("coco", "yolo", "voc")
SPLITS = ("train", "val", "test")


@dataclass
class ImageRecord:
    """One labeled image as a reader found it.

    ``file_name`` is relative to the split's image root (or absolute); ``width`` and
    ``height`` are after EXIF rotation; ``boxes`` are ``(label, x1, y1, x2, y2, crowd)``
    with label 0-based into the class names and corners in image pixels (continuous,
    x2/y2 exclusive edges, as COCO). ``crowd`` boxes are ignore regions (VOC
    ``difficult``).
    """

    file_name: str
    width: int
    height: int
    boxes: list[tuple[int, float, float, float, float, int]] = field(default_factory=list)


@dataclass
class LabeledSplit:
    """A labeled split in the internal form: a COCO detection dict and its image root.

    ``coco`` has ``images`` (id, file_name, width, height), ``annotations`` (id,
    image_id, category_id, bbox [x, y, w, h] px, area, iscrowd) and ``categories`` (id,
    name). ``source`` is what the user named (for messages), ``format`` its layout.
    """

    coco: dict
    images: Path
    source: Path
    format: str
    split: str = "val"

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in sorted(self.coco["categories"], key=lambda c: c["id"])]


def shared_class_names(splits: dict[str, LabeledSplit], one_list: str) -> list[str]:
    """The class names all ``splits`` share, in category-id order; a DataError naming the first that differs.

    ``one_list`` says why they must agree (the target layout holds one class list).
    """
    names: list[str] | None = None
    for data in splits.values():
        if names is None:
            names = data.class_names
        elif data.class_names != names:
            raise DataError(f"{data.source}: classes differ between splits; {one_list}")
    return names or []


def to_coco(names: list[str], records: list[ImageRecord], description: str) -> dict:
    """Records -> COCO dict: category ids 1..C in ``names`` order, image ids 1..N in record order."""
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id, rec in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": rec.file_name, "width": rec.width, "height": rec.height})
        for label, x1, y1, x2, y2, crowd in rec.boxes:
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
    return {
        "info": {"description": description},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(names)],
    }


def find_yaml(folder: Path) -> Path | None:
    """``folder/data.yaml`` (or .yml), else the folder's only ``*.yaml``; None if neither."""
    for name in ("data.yaml", "data.yml"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return found[0] if len(found) == 1 else None


def detect_format(path: Path) -> str:
    """``coco`` (a .json file), ``yolo`` (a .yaml file, or a folder with one) or ``voc`` (a folder with Annotations/)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found; give a COCO json, a YOLO data.yaml (or its folder) or a VOC folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        raise DataError(f"{path}: not a .json (COCO) or .yaml (YOLO) file; name the format with format: coco|yolo|voc")
    if (path / "Annotations").is_dir():
        return "voc"
    if find_yaml(path) is not None:
        return "yolo"
    raise DataError(
        f"{path}: a folder with neither a data.yaml (YOLO) nor an Annotations/ folder (VOC); "
        "give the COCO json, the data.yaml or the VOC folder itself"
    )


def read_split(path: Path, *, split: str = "val", fmt: str = "auto", images: Path | None = None) -> LabeledSplit:
    """Read one split of a labeled set in place (see the module docstring).

    ``split`` picks the data.yaml entry (YOLO) or ImageSets/Main list (VOC) and is
    ignored for a COCO json, which holds one split. ``images`` is the image folder of a
    COCO json (default: the json's path without .json); YOLO and VOC name their own.
    Raises :class:`DataError` with one line naming the file (and line) at fault.
    """
    path = Path(path)
    fmt = detect_format(path) if fmt in (None, "auto") else fmt
    if fmt not in FORMATS:
        raise DataError(f"format {fmt!r}: use one of auto, {', '.join(FORMATS)}")
    if fmt == "coco":
        from sadc.data.coco import default_images_dir, read_json

        if path.is_dir():
            raise DataError(f"{path}: is a folder; format coco needs the json file itself")
        root = Path(images) if images is not None else default_images_dir(path)
        return LabeledSplit(read_json(path), root, path, "coco", split)
    if images is not None:
        raise DataError(f"{path}: a {fmt.upper()} set names its own image folders; drop the images setting (it is for COCO json)")
    if fmt == "yolo":
        from sadc.data.yolo import read_yolo

        names, root, records = read_yolo(path, split)
    else:
        from sadc.data.voc import read_voc

        names, root, records = read_voc(path, split)
    return LabeledSplit(to_coco(names, records, f"{path} ({fmt}, {split})"), root, path, fmt, split)


def image_root(path: Path, fmt: str = "auto", images: Path | None = None) -> Path:
    """The image folder of a labeled set without reading its labels (a COCO json's ``images`` or default)."""
    path = Path(path)
    fmt = detect_format(path) if fmt in (None, "auto") else fmt
    if fmt == "coco":
        from sadc.data.coco import default_images_dir

        return Path(images) if images is not None else default_images_dir(path)
    if fmt == "voc":
        return path / "JPEGImages"
    from sadc.data.yolo import dataset_root, load_data_yaml, yaml_file

    where = yaml_file(path)
    return dataset_root(load_data_yaml(where), where)


def open_labeled(
    path: Path,
    input_size: tuple[int, int],
    *,
    split: str = "val",
    fmt: str = "auto",
    images: Path | None = None,
    augment: AugmentSection | None = None,
    seed: int = 0,
) -> CocoDataset:
    """:func:`read_split` as a :class:`CocoDataset` (letterboxed to ``input_size``)."""
    from sadc.data.coco import CocoDataset

    data = read_split(path, split=split, fmt=fmt, images=images)
    return CocoDataset(data.source, data.images, input_size, augment, seed, coco=data.coco)


def all_splits(path: Path, fmt: str = "auto", images: Path | None = None) -> dict[str, LabeledSplit]:
    """Every split a source holds: a COCO json's one (named after its file), a data.yaml's or VOC folder's."""
    path = Path(path)
    fmt = detect_format(path) if fmt in (None, "auto") else fmt
    if fmt == "coco":
        return {path.stem: read_split(path, fmt="coco", images=images)}
    if fmt == "yolo":
        from sadc.data.yolo import yolo_splits

        names = yolo_splits(path)
    elif fmt == "voc":
        from sadc.data.voc import voc_splits

        names = voc_splits(path)
    else:
        raise DataError(f"format {fmt!r}: use one of auto, {', '.join(FORMATS)}")
    return {s: read_split(path, split=s, fmt=fmt, images=images) for s in names}


# --------------------------------------------------------------------------- writing


def place_file(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy where links are not possible); replaces ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def relative_name(file_name: str) -> str:
    """A COCO file_name as a relative path to write under a new folder (absolute ones keep their name)."""
    p = Path(file_name)
    return p.name if p.is_absolute() or ".." in p.parts else p.as_posix()


def write_coco(splits: dict[str, LabeledSplit], out: Path) -> list[Path]:
    """``out/SPLIT.json`` + ``out/SPLIT/`` (images linked) per split: the layout `sadc data synth` writes."""
    written = []
    for name, data in splits.items():
        coco = json.loads(json.dumps(data.coco))  # a copy: file names change
        for img in coco["images"]:
            rel = relative_name(img["file_name"])
            place_file(data.images / img["file_name"], out / name / rel)
            img["file_name"] = rel
        (out / f"{name}.json").write_text(json.dumps(coco, indent=1) + "\n", encoding="utf-8")
        written.append(out / f"{name}.json")
    return written


def convert(src: Path, to: str, out: Path, *, fmt: str = "auto", images: Path | None = None) -> list[Path]:
    """Write every split of ``src`` (any layout) as ``to`` (coco, yolo or voc) under ``out``; returns the index files."""
    if to not in FORMATS:
        raise DataError(f"--to {to}: use one of {', '.join(FORMATS)}")
    splits = all_splits(src, fmt, images)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return write_splits(splits, to, out)


def write_splits(splits: dict[str, LabeledSplit], to: str, out: Path) -> list[Path]:
    if to == "coco":
        return write_coco(splits, out)
    if to == "yolo":
        from sadc.data.yolo import write_yolo

        return [write_yolo(splits, out)]
    from sadc.data.voc import write_voc

    return [write_voc(splits, out)]


def parse_layouts(text: str) -> list[str]:
    """``"coco,yolo"`` -> ["coco", "yolo"]; DataError naming the flag otherwise."""
    wanted = [part.strip().lower() for part in str(text).split(",") if part.strip()]
    bad = [w for w in wanted if w not in FORMATS and w != "all"]
    if bad or not wanted:
        raise DataError(f"--layouts {text}: comma-separated layouts from {', '.join(FORMATS)} (or all)")
    return list(FORMATS) if "all" in wanted else list(dict.fromkeys(wanted))


def write_layouts(world: Path, layouts: list[str]) -> list[Path]:
    """Write a COCO world's labeled splits (``world/train.json``, ``world/val.json``) as ``world/yolo`` and ``world/voc``.

    COCO is the world's own layout and is not rewritten. Returns the index files written
    (``world/yolo/data.yaml``, ``world/voc``).
    """
    world = Path(world)
    splits = {s: read_split(world / f"{s}.json", fmt="coco") for s in ("train", "val") if (world / f"{s}.json").is_file()}
    written = []
    for layout in layouts:
        if layout != "coco" and splits:
            written += write_splits(splits, layout, world / layout)
    return written
