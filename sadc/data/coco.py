"""COCO-format detection datasets, validated up front with one-line errors.

The json is checked completely at construction, so a bad file fails before training
starts, naming the offending image, category or annotation id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from sadc.data.images import DataError, load_image
from sadc.data.loaders import decode_index, item_generator
from sadc.data.transforms import TrainTransform
from sadc.errors import brief

if TYPE_CHECKING:
    from sadc.recipe import AugmentSection


def read_json(path: Path) -> Any:
    """Parse a json file, raising :class:`DataError` naming the file and the position."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found (check data.*.annotations)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text file ({err.reason}); expected COCO json") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def _int_id(entry: Any, what: str, where: str) -> int:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: every {what} must be an object, got {type(entry).__name__}")
    value = entry.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: {what} {brief(json.dumps(entry), 80)} has no integer 'id'")
    return value


def _parse_bbox(ann: dict, ann_id: Any, where: str) -> tuple[float, float, float, float]:
    bbox: Any = ann.get("bbox")
    ok = isinstance(bbox, list) and len(bbox) == 4
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    if not ok:
        raise DataError(f"{where}: annotation id {ann_id}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise DataError(f"{where}: annotation id {ann_id}: bbox {bbox} has zero or negative width/height (fix or delete it)")
    return x, y, w, h


def default_images_dir(annotations: Path) -> Path:
    """``x/val.json`` -> ``x/val/``: the image folder beside a COCO json (the layout `sadc data synth` writes)."""
    return Path(annotations).with_suffix("")


class CocoDataset(Dataset):
    """A COCO detection json plus its image folder, letterboxed to ``input_size`` (H, W).

    Labels are contiguous: label ``i`` is category ``cat_ids[i]`` named
    ``class_names[i]``, categories sorted by id. Annotations with ``iscrowd=1`` are not
    training targets and are dropped (COCOeval treats them as ignore regions, so score
    mAP against ``coco_json``, which still holds them). Images without annotations are
    kept (pure-background examples). Boxes partly outside their image are clipped.

    ``coco`` is the parsed dict, when it was read from another layout (see
    :mod:`sadc.data.formats`); ``annotations`` then only names the source in messages.

    Items: ``dataset[k]`` with ``k = epoch * len(dataset) + i`` (see
    :mod:`sadc.data.loaders`) returns ``(image uint8 [3, H, W], target)`` where target has
    ``boxes`` float32 [n, 4] xyxy network px, ``labels`` int64 [n] in 0..C-1,
    ``image_id`` (COCO id, int) and ``meta`` (:class:`LetterboxMeta`). Augmentation
    (when ``augment`` is given) is a pure function of (seed, epoch, i).
    """

    def __init__(
        self,
        annotations: Path,
        images: Path,
        input_size: tuple[int, int],
        augment: AugmentSection | None = None,
        seed: int = 0,
        *,
        coco: dict | None = None,
    ):
        self.coco_json = Path(annotations)
        self.images = Path(images)
        self.seed = seed
        self.transform = TrainTransform(input_size, augment)
        data = read_json(self.coco_json) if coco is None else coco
        where = str(self.coco_json)
        if not isinstance(data, dict):
            raise DataError(f"{where}: top level must be an object with images, annotations and categories")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                problem = "missing" if key not in data else "not a list"
                raise DataError(f"{where}: '{key}' is {problem} (a COCO detection file has images, annotations, categories)")
        self.cat_ids, self.class_names = self._parse_categories(data["categories"], where)
        self.image_ids, self._files, self._sizes = self._parse_images(data["images"], where)
        self._boxes, self._labels = self._parse_annotations(data["annotations"], where)
        self._check_files(where)
        self.coco = data  # what COCOeval scores against (crowd regions included)

    # -- parsing -------------------------------------------------------------------------

    @staticmethod
    def _parse_categories(categories: list, where: str) -> tuple[list[int], list[str]]:
        names: dict[int, str] = {}
        for cat in categories:
            cid = _int_id(cat, "category", where)
            if cid in names:
                raise DataError(f"{where}: duplicate category id {cid}")
            name = cat.get("name")
            if not isinstance(name, str) or not name:
                raise DataError(f"{where}: category id {cid} has no 'name'")
            names[cid] = name
        if not names:
            raise DataError(f"{where}: 'categories' is empty; list at least one class")
        cat_ids = sorted(names)
        class_names = [names[c] for c in cat_ids]
        if len(set(class_names)) != len(class_names):
            dup = next(n for n in class_names if class_names.count(n) > 1)
            raise DataError(f"{where}: category name {dup!r} is used by more than one id; names must be unique")
        return cat_ids, class_names

    @staticmethod
    def _parse_images(images: list, where: str) -> tuple[list[int], list[str], list[tuple[int, int]]]:
        ids: list[int] = []
        files: list[str] = []
        sizes: list[tuple[int, int]] = []
        seen: set[int] = set()
        for img in images:
            iid = _int_id(img, "image", where)
            if iid in seen:
                raise DataError(f"{where}: duplicate image id {iid}")
            seen.add(iid)
            name = img.get("file_name")
            if not isinstance(name, str) or not name:
                raise DataError(f"{where}: image id {iid} has no 'file_name'")
            h, w = img.get("height"), img.get("width")
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
                raise DataError(f"{where}: image id {iid} needs positive integer 'width' and 'height', got {w!r} x {h!r}")
            ids.append(iid)
            files.append(name)
            sizes.append((h, w))
        return ids, files, sizes

    def _parse_annotations(self, annotations: list, where: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        row_of = {iid: row for row, iid in enumerate(self.image_ids)}
        label_of = {cid: label for label, cid in enumerate(self.cat_ids)}
        boxes: list[list[list[float]]] = [[] for _ in self.image_ids]
        labels: list[list[int]] = [[] for _ in self.image_ids]
        for n, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise DataError(f"{where}: annotation #{n} must be an object")
            ann_id = ann.get("id", f"#{n}")
            iid, cid = ann.get("image_id"), ann.get("category_id")
            if not isinstance(iid, int) or iid not in row_of:
                raise DataError(f"{where}: annotation id {ann_id} has unknown image_id {iid!r}")
            if not isinstance(cid, int) or cid not in label_of:
                raise DataError(f"{where}: annotation id {ann_id} has unknown category_id {cid!r}")
            x, y, w, h = _parse_bbox(ann, ann_id, where)
            if ann.get("iscrowd", 0):
                continue
            img_h, img_w = self._sizes[row_of[iid]]
            x1, y1 = min(max(x, 0.0), img_w), min(max(y, 0.0), img_h)
            x2, y2 = min(max(x + w, 0.0), img_w), min(max(y + h, 0.0), img_h)
            if x2 <= x1 or y2 <= y1:
                raise DataError(
                    f"{where}: annotation id {ann_id}: bbox {ann['bbox']} lies outside image id {iid} "
                    f"({img_w}x{img_h}); fix or delete it"
                )
            boxes[row_of[iid]].append([x1, y1, x2, y2])
            labels[row_of[iid]].append(label_of[cid])
        return (
            [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes],
            [np.asarray(lab, dtype=np.int64) for lab in labels],
        )

    def _check_files(self, where: str) -> None:
        """Every listed image exists under ``images`` (one stat each: seconds for COCO, not a failed run).

        Whether a file decodes is only known when it is read (see ``__getitem__``).
        """
        if not self.images.is_dir():
            raise DataError(f"{self.images}: image folder not found; pass the folder {where}'s file_name entries are relative to")
        missing = [name for name in self._files if not (self.images / name).is_file()]
        if missing:
            raise DataError(
                f"{where}: {len(missing)} of {len(self._files)} listed images are not in {self.images} "
                f"(first: {missing[0]}); point the images folder at the one the file_name entries are relative to, "
                "or remove those images from the json"
            )

    # -- items ---------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_path(self, i: int) -> Path:
        """Path of item ``i`` (0..len-1) on disk."""
        return self.images / self._files[i]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, k: int) -> tuple[Tensor, dict[str, Any]]:
        epoch, i = decode_index(k, len(self))
        path = self.image_path(i)
        image = load_image(path)
        if tuple(image.shape[1:]) != self._sizes[i]:
            h, w = self._sizes[i]
            raise DataError(
                f"{path}: image is {image.shape[2]}x{image.shape[1]} (after EXIF rotation) but {self.coco_json} "
                f"says {w}x{h} for image id {self.image_ids[i]}; fix width/height in the json"
            )
        out, boxes, meta, keep = self.transform(image, torch.from_numpy(self._boxes[i]), item_generator(self.seed, epoch, i))
        target = {
            "boxes": boxes,
            "labels": torch.from_numpy(self._labels[i])[keep],
            "image_id": self.image_ids[i],
            "meta": meta,
        }
        return out, target
