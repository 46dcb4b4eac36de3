"""End to end: decoded images or files -> letterbox -> ``Predictor.predict`` -> boxes in original pixels.

:func:`predict_files` is the whole path that ``sadc bench`` times as "end to end";
``sadc predict`` uses :func:`predict_images` after decoding each image once, to draw on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from sadc.data.images import load_image
from sadc.data.transforms import LetterboxMeta, boxes_from_letterbox, letterbox
from sadc.runtime.base import Predictor, host_work


def letterbox_batch(images: Sequence[Tensor], input_size: tuple[int, int]) -> tuple[Tensor, list[LetterboxMeta]]:
    """Letterbox decoded images (uint8 [3, h, w] each, any sizes) to ``input_size`` (H, W).

    Returns (uint8 [B, 3, H, W], one :class:`LetterboxMeta` per image).
    """
    placed = [letterbox(image, input_size) for image in images]
    return torch.stack([p[0] for p in placed]), [p[1] for p in placed]


def predict_images(predictor: Predictor, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
    """Decoded images -> letterbox -> predict -> boxes in original image pixels.

    Returns per image ``{boxes [k, 4] float32 xyxy original px (clipped), scores [k],
    labels [k] int64}``.
    """
    with host_work(predictor):
        batch, metas = letterbox_batch(images, predictor.spec.input_size)
        return [
            {
                "boxes": boxes_from_letterbox(det["boxes"].float().cpu(), meta),
                "scores": det["scores"].cpu(),
                "labels": det["labels"].cpu(),
            }
            for det, meta in zip(predictor.predict(batch), metas, strict=True)
        ]


def predict_files(predictor: Predictor, paths: Sequence[Path]) -> list[dict[str, Tensor]]:
    """End to end: image files -> read + decode -> :func:`predict_images` (boxes in original pixels)."""
    with host_work(predictor):
        return predict_images(predictor, [load_image(path) for path in paths])
