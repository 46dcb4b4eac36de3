"""Datasets, transforms, loaders and the synthetic world.

Every dataset item is ``(image uint8 [3, H, W], target dict)`` with boxes xyxy in
network-input pixels; samplers yield encoded indices ``epoch * len(dataset) + i`` (see
:mod:`sadc.data.loaders`).
"""

from sadc.data.coco import CocoDataset
from sadc.data.folder import UnlabeledFolder
from sadc.data.images import (
    IMAGE_SUFFIXES,
    DataError,
    ImageReadError,
    find_images,
    load_image,
)
from sadc.data.loaders import (
    InfiniteSampler,
    build_loader,
    collate,
    decode_index,
    item_generator,
)
from sadc.data.synth import CLASSES, make_synthetic_world
from sadc.data.transforms import (
    LetterboxMeta,
    TrainTransform,
    boxes_from_letterbox,
    boxes_to_letterbox,
    hflip,
    letterbox,
)

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
