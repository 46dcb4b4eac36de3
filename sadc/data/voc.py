"""Pascal VOC layout: read in place, and write.

A VOC folder holds ``Annotations/ID.xml``, ``JPEGImages/`` and optionally
``ImageSets/Main/SPLIT.txt`` (one ID per line; without it a split is every xml). Each
xml has ``<filename>``, ``<size>`` (width, height) and ``<object>`` elements with
``<name>``, ``<difficult>`` and ``<bndbox>`` (xmin, ymin, xmax, ymax: 1-based pixel
indices, both ends inclusive). Boxes become continuous COCO corners ``(xmin - 1, ymin -
1, xmax, ymax)``, as Detectron2 reads them; ``difficult`` objects become COCO crowd
regions, which COCOeval ignores (VOC's rule) and training skips.

Classes: ``classes.txt`` in the folder (one name a line, in label order) when present,
else every object name in ``Annotations/``, sorted.
"""

from __future__ import annotations

import math
import xml.parsers.expat
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from sadc.data.formats import ImageRecord, place_file, relative_name, shared_class_names
from sadc.data.images import DataError, image_size

if TYPE_CHECKING:
    from sadc.data.formats import LabeledSplit


def parse_xml(path: Path) -> tuple[ET.Element, dict[int, int]]:
    """The element tree of ``path`` and the source line of each element (``id(element) -> line``)."""
    parser = xml.parsers.expat.ParserCreate()
    builder = ET.TreeBuilder()
    lines: dict[int, int] = {}

    def start(tag, attrs):
        lines[id(builder.start(tag, attrs))] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(path.read_bytes(), True)
    except xml.parsers.expat.ExpatError as err:
        raise DataError(f"{path} line {err.lineno}: not well-formed XML ({xml.parsers.expat.ErrorString(err.code)})") from None
    return builder.close(), lines


def _text(el: ET.Element | None) -> str | None:
    return el.text.strip() if el is not None and el.text is not None else None


def _number(parent: ET.Element, tag: str, where: str) -> float:
    raw = _text(parent.find(tag))
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: <{tag}> is {raw!r}, expected a number")
    return value


def class_list(root: Path) -> list[str]:
    """classes.txt, else the sorted object names of every xml under Annotations/."""
    listed = root / "classes.txt"
    if listed.is_file():
        names = [n.strip() for n in listed.read_text(encoding="utf-8").splitlines() if n.strip()]
        if not names:
            raise DataError(f"{listed}: empty; list one class name a line, or delete it to use the names in Annotations/")
        return names
    found: set[str] = set()
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        tree, _ = parse_xml(xml_path)
        found.update(n for n in (_text(o.find("name")) for o in tree.iter("object")) if n)
    if not found:
        raise DataError(f"{root}/Annotations: no <object> names; add classes.txt listing the classes")
    return sorted(found)


def voc_splits(path: Path) -> list[str]:
    """The ImageSets/Main lists present (train, val, trainval, test), else ``["all"]``."""
    main = Path(path) / "ImageSets" / "Main"
    found = [s for s in ("train", "val", "trainval", "test") if (main / f"{s}.txt").is_file()]
    return found or ["all"]


def _split_ids(root: Path, split: str) -> list[str]:
    listed = root / "ImageSets" / "Main" / f"{split}.txt"
    if listed.is_file():
        # Lines may carry a second column (the per-class lists' "ID 1"); the ID is the first.
        return [line.split()[0] for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [p.stem for p in sorted((root / "Annotations").glob("*.xml"))]


def read_record(xml_path: Path, names: list[str], images: Path) -> ImageRecord:
    """One annotation xml -> :class:`ImageRecord` (file name relative to JPEGImages/)."""
    tree, lines = parse_xml(xml_path)
    where = str(xml_path)
    file_name = _text(tree.find("filename")) or f"{xml_path.stem}.jpg"
    size = tree.find("size")
    if size is None:
        raise DataError(f"{where}: no <size> (width, height); add it, or delete the xml to treat the image as background")
    at = f"{where} line {lines.get(id(size), '?')}"
    width, height = _number(size, "width", at), _number(size, "height", at)
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise DataError(f"{at}: <size> {width:g}x{height:g} is not a positive whole number of pixels")
    boxes = []
    for obj in tree.iter("object"):
        at = f"{where} line {lines.get(id(obj), '?')}"
        name = _text(obj.find("name"))
        if name not in names:
            raise DataError(f"{at}: object name {name!r} is not a class ({', '.join(names)}); fix it or classes.txt")
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{at}: <object> {name!r} has no <bndbox>")
        at = f"{where} line {lines.get(id(bb), '?')}"
        xmin, ymin, xmax, ymax = (_number(bb, t, at) for t in ("xmin", "ymin", "xmax", "ymax"))
        x1, y1 = min(max(xmin - 1, 0.0), width), min(max(ymin - 1, 0.0), height)
        x2, y2 = min(max(xmax, 0.0), width), min(max(ymax, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            raise DataError(
                f"{at}: box {xmin:g},{ymin:g},{xmax:g},{ymax:g} is empty or outside the {width:g}x{height:g} image; fix or delete it"
            )
        difficult = _text(obj.find("difficult")) in ("1", "true")
        boxes.append((names.index(name), x1, y1, x2, y2, int(difficult)))
    return ImageRecord(file_name, int(width), int(height), boxes)


def read_voc(path: Path, split: str) -> tuple[list[str], Path, list[ImageRecord]]:
    """(class names, image root = JPEGImages/, records) of one split of a VOC folder."""
    root = Path(path)
    images = root / "JPEGImages"
    if not (root / "Annotations").is_dir() or not images.is_dir():
        raise DataError(f"{root}: a VOC folder has Annotations/ and JPEGImages/; one is missing")
    names = class_list(root)
    ids = _split_ids(root, split)
    if not ids:
        raise DataError(f"{root}: split {split} lists no images (ImageSets/Main/{split}.txt)")
    records = []
    for image_id in ids:
        xml_path = root / "Annotations" / f"{image_id}.xml"
        if xml_path.is_file():
            records.append(read_record(xml_path, names, images))
            continue
        # No annotation file: background, if the image is there (Ultralytics' rule for missing labels).
        found = sorted(images.glob(f"{image_id}.*"))
        if not found:
            raise DataError(f"{root}/ImageSets/Main/{split}.txt: {image_id} has neither Annotations/{image_id}.xml nor an image")
        width, height = image_size(found[0])
        records.append(ImageRecord(found[0].name, width, height, []))
    return names, images, records


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else format(v, ".10g")


def _xml(file_name: str, width: int, height: int, objects: list[tuple[str, list[float], int]]) -> str:
    parts = [
        "<annotation>",
        f"  <filename>{escape(file_name)}</filename>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, (x, y, w, h), difficult in objects:
        parts += [
            "  <object>",
            f"    <name>{escape(name)}</name>",
            f"    <difficult>{difficult}</difficult>",
            f"    <bndbox><xmin>{_num(x + 1)}</xmin><ymin>{_num(y + 1)}</ymin>"
            f"<xmax>{_num(x + w)}</xmax><ymax>{_num(y + h)}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def write_voc(splits: dict[str, LabeledSplit], out: Path) -> Path:
    """``out/Annotations``, ``out/JPEGImages`` (linked), ``out/ImageSets/Main/SPLIT.txt`` and ``out/classes.txt``.

    IDs are file names without suffix (folders joined by ``_``), prefixed with the split
    when there is more than one, so splits never collide. Crowd annotations become
    ``difficult`` objects. Returns the folder.
    """
    out = Path(out)
    names = shared_class_names(splits, "a VOC folder has one class list")  # checked before anything is written
    for split, data in splits.items():
        cats = sorted(data.coco["categories"], key=lambda c: c["id"])
        name_of = {c["id"]: c["name"] for c in cats}
        objects: dict[int, list] = {img["id"]: [] for img in data.coco["images"]}
        for ann in data.coco["annotations"]:
            objects[ann["image_id"]].append((name_of[ann["category_id"]], ann["bbox"], int(bool(ann.get("iscrowd", 0)))))
        ids = []
        for img in data.coco["images"]:
            rel = Path(relative_name(img["file_name"]))
            image_id = rel.with_suffix("").as_posix().replace("/", "_")
            if len(splits) > 1:
                image_id = f"{split}_{image_id}"
            file_name = image_id + rel.suffix
            place_file(data.images / img["file_name"], out / "JPEGImages" / file_name)
            xml_path = out / "Annotations" / f"{image_id}.xml"
            xml_path.parent.mkdir(parents=True, exist_ok=True)
            xml_path.write_text(_xml(file_name, img["width"], img["height"], objects[img["id"]]), encoding="utf-8")
            ids.append(image_id)
        main = out / "ImageSets" / "Main"
        main.mkdir(parents=True, exist_ok=True)
        (main / f"{split}.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    (out / "classes.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    return out
