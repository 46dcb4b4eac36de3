"""Datasets, transforms, loaders and the synthetic world.

Every dataset item is ``(image uint8 [3, H, W], target dict)`` with boxes xyxy in
network-input pixels; samplers yield encoded indices ``epoch * len(dataset) + i`` (see
:mod:`sadc.data.loaders`).

The names below are imported on first use (PEP 562), so that importing a light module
of this package (:mod:`sadc.data.formats`, :mod:`sadc.data.images`) to check a path does
not import torch and the datasets (seconds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SOURCES = {
    "CocoDataset": "sadc.data.coco",
    "UnlabeledFolder": "sadc.data.folder",
    "IMAGE_SUFFIXES": "sadc.data.images",
    "DataError": "sadc.data.images",
    "ImageReadError": "sadc.data.images",
    "find_images": "sadc.data.images",
    "load_image": "sadc.data.images",
    "InfiniteSampler": "sadc.data.loaders",
    "build_loader": "sadc.data.loaders",
    "collate": "sadc.data.loaders",
    "decode_index": "sadc.data.loaders",
    "item_generator": "sadc.data.loaders",
    "CLASSES": "sadc.data.synth",
    "make_synthetic_world": "sadc.data.synth",
    "LetterboxMeta": "sadc.data.transforms",
    "TrainTransform": "sadc.data.transforms",
    "boxes_from_letterbox": "sadc.data.transforms",
    "boxes_to_letterbox": "sadc.data.transforms",
    "hflip": "sadc.data.transforms",
    "letterbox": "sadc.data.transforms",
}

__all__ = [
    "CLASSES",
    "IMAGE_SUFFIXES",
    "CocoDataset",
    "DataError",
    "ImageReadError",
    "InfiniteSampler",
    "LetterboxMeta",
    "TrainTransform",
    "UnlabeledFolder",
    "boxes_from_letterbox",
    "boxes_to_letterbox",
    "build_loader",
    "collate",
    "decode_index",
    "find_images",
    "hflip",
    "item_generator",
    "letterbox",
    "load_image",
    "make_synthetic_world",
]


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_SOURCES[name]), name)


if TYPE_CHECKING:
    from sadc.data.coco import CocoDataset
    from sadc.data.folder import UnlabeledFolder
    from sadc.data.images import IMAGE_SUFFIXES, DataError, ImageReadError, find_images, load_image
    from sadc.data.loaders import InfiniteSampler, build_loader, collate, decode_index, item_generator
    from sadc.data.synth import CLASSES, make_synthetic_world
    from sadc.data.transforms import LetterboxMeta, TrainTransform, boxes_from_letterbox, boxes_to_letterbox, hflip, letterbox
