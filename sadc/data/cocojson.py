"""The one writer of COCO json: detection results and datasets.

- :func:`result_rows`: detections of one image -> COCO *results* rows (``bbox`` x, y, w, h);
- :func:`coco_dataset`: images + annotations + class names -> a COCO *dataset* dict;
- :func:`write_json`: either, written atomically (a crash leaves the old file or the new one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor
from torchvision.ops import box_convert

from sadc.artefacts.files import atomic_write


def result_rows(
    det: dict[str, Tensor],
    image_id: int,
    cat_ids: Sequence[int],
    *,
    file_name: str | None = None,
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``{boxes [k, 4] xyxy px, scores [k], labels [k] in 0..C-1}`` -> COCO results rows.

    ``category_id`` is ``cat_ids[label]``; ``bbox`` is x, y, w, h rounded to 1e-3 px and
    ``score`` rounded to 1e-5. ``file_name`` / ``class_names`` add ``file_name`` and
    ``category_name`` to every row (for people reading the file; COCO tools ignore them).
    """
    xywh = box_convert(det["boxes"].float().cpu(), "xyxy", "xywh")
    rows = []
    for box, score, label in zip(xywh.tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True):
        row: dict[str, Any] = {"image_id": int(image_id)}
        if file_name is not None:
            row["file_name"] = file_name
        row["category_id"] = int(cat_ids[int(label)])
        if class_names is not None:
            row["category_name"] = class_names[int(label)] if 0 <= label < len(class_names) else str(label)
        row["bbox"] = [round(v, 3) for v in box]
        row["score"] = round(float(score), 5)
        rows.append(row)
    return rows


def coco_dataset(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    class_names: Sequence[str],
    *,
    description: str,
    supercategory: str | None = None,
) -> dict[str, Any]:
    """A COCO detection dataset: category ids 1..C in ``class_names`` order, annotation ids 1..n.

    ``annotations``: rows with ``image_id``, ``category_id`` and ``bbox`` (x, y, w, h);
    other keys (e.g. a pseudo label's ``score``) are kept; ``area`` defaults to w * h, ``iscrowd`` to 0.
    """
    anns = []
    for i, ann in enumerate(annotations):
        w, h = ann["bbox"][2], ann["bbox"][3]
        anns.append(
            {"id": i + 1, **ann, "bbox": list(ann["bbox"]), "area": ann.get("area", w * h), "iscrowd": ann.get("iscrowd", 0)}
        )
    extra = {"supercategory": supercategory} if supercategory else {}
    return {
        "info": {"description": description},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": name, **extra} for i, name in enumerate(class_names)],
    }


def write_json(path: Path, payload: Any, *, indent: int | None = None) -> Path:
    """Write ``payload`` as json to ``path`` atomically (parent folders created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=indent) + ("\n" if indent is not None else "")
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
