"""Datasets, transforms, loaders and the synthetic world.

Every dataset item is ``(image uint8 [3, H, W], target dict)`` with boxes xyxy in
network-input pixels; samplers yield encoded indices ``epoch * len(dataset) + i`` (see
:mod:`sadc.data.loaders`).
"""

from sadc.data.coco import CocoDetection
from sadc.data.folder import ImageFolder
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
    clip_boxes,
    hflip,
    letterbox,
)

__all__ = [
    "CLASSES",
    "IMAGE_SUFFIXES",
    "CocoDetection",
    "DataError",
    "ImageFolder",
    "ImageReadError",
    "InfiniteSampler",
    "LetterboxMeta",
    "TrainTransform",
    "boxes_from_letterbox",
    "boxes_to_letterbox",
    "build_loader",
    "clip_boxes",
    "collate",
    "decode_index",
    "find_images",
    "hflip",
    "item_generator",
    "letterbox",
    "load_image",
    "make_synthetic_world",
]
