"""Letterboxing and box geometry between original-image and network-input pixels.

Boxes are xyxy float in pixel-edge coordinates: a box covering pixel columns 0..9 is
``x1=0, x2=10``. The one mapping is ``network px = original px * scale + pad`` (see
:class:`LetterboxMeta`); ``boxes_to_letterbox`` / ``boxes_from_letterbox`` apply it and
its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.ops import clip_boxes_to_image

if TYPE_CHECKING:  # only .hflip and .scale_jitter are read, so any look-alike works
    from sadc.recipe import AugmentSection


@dataclass(frozen=True)
class LetterboxMeta:
    """How an original image was placed on the network canvas.

    ``network px = original px * scale + (pad_x, pad_y)``. ``pad_*`` are negative when
    scale jitter made the content larger than the canvas and it was centre-cropped.
    The pixel grid is resized to ``round(orig * scale)`` (at least 1 px), so the drawn
    content may differ from ``scale`` by < 0.5 px per side; boxes use ``scale`` exactly.
    """

    scale: float
    pad_x: float
    pad_y: float
    orig_h: int
    orig_w: int


def letterbox(image: Tensor, size: tuple[int, int], scale: float = 1.0, fill: int = 114) -> tuple[Tensor, LetterboxMeta]:
    """Resize ``image`` uint8 [3, h, w] to fit ``size`` (H, W) keeping aspect, centre it, pad with ``fill``.

    ``scale`` multiplies the fit factor (scale jitter): < 1 leaves more padding, > 1 makes
    the content overflow the canvas, and the overflow is cropped symmetrically. Resizing
    is bilinear with antialiasing. Returns (uint8 [3, H, W], :class:`LetterboxMeta`).
    """
    out_h, out_w = size
    h, w = int(image.shape[-2]), int(image.shape[-1])
    factor = min(out_h / h, out_w / w) * scale
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    resized = image if (new_h, new_w) == (h, w) else TF.resize(image, [new_h, new_w], antialias=True)
    off_y, off_x = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas = torch.full((3, out_h, out_w), fill, dtype=torch.uint8)
    # Intersection of the placed content with the canvas, in canvas and in content coords.
    y0, x0 = max(off_y, 0), max(off_x, 0)
    y1, x1 = min(off_y + new_h, out_h), min(off_x + new_w, out_w)
    canvas[:, y0:y1, x0:x1] = resized[:, y0 - off_y : y1 - off_y, x0 - off_x : x1 - off_x]
    return canvas, LetterboxMeta(float(factor), float(off_x), float(off_y), h, w)


def _pad_vector(meta: LetterboxMeta, like: Tensor) -> Tensor:
    return torch.tensor([meta.pad_x, meta.pad_y, meta.pad_x, meta.pad_y], dtype=like.dtype, device=like.device)


def boxes_to_letterbox(boxes: Tensor, meta: LetterboxMeta) -> Tensor:
    """xyxy float [n, 4] in original px -> [n, 4] in network px (not clipped)."""
    return boxes * meta.scale + _pad_vector(meta, boxes)


def boxes_from_letterbox(boxes: Tensor, meta: LetterboxMeta) -> Tensor:
    """xyxy float [n, 4] in network px -> [n, 4] in original px, clipped to the original image.

    The exact inverse of :func:`boxes_to_letterbox` for boxes inside the original image.
    """
    return clip_boxes_to_image((boxes - _pad_vector(meta, boxes)) / meta.scale, (meta.orig_h, meta.orig_w))


def hflip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror image [3, H, W] and its xyxy boxes [n, 4] left-right: x -> W - x."""
    width = image.shape[-1]
    flipped = boxes[:, [2, 1, 0, 3]].clone()
    flipped[:, 0::2] = width - flipped[:, 0::2]
    return image.flip(-1), flipped


class TrainTransform:
    """Letterbox + (optional) scale jitter and horizontal flip, driven by a caller's generator.

    ``augment=None`` is the eval transform: letterbox at scale 1, no flip. With an
    :class:`AugmentSection`, the scale is uniform in ``scale_jitter`` and the flip happens
    with probability ``hflip``; both random numbers are always drawn, so the generator
    stream (and therefore every later draw) does not depend on the outcome.

    ``__call__(image uint8 [3, h, w], boxes xyxy float [n, 4] original px, generator)``
    returns ``(image uint8 [3, H, W], boxes float32 [m, 4] network px, meta, keep bool [n])``.
    Boxes are clipped to the canvas; those narrower or shorter than ``min_size`` px after
    clipping (including boxes cropped away by scale jitter) are dropped, and ``keep``
    tells the caller which labels to keep. This also applies to the eval transform:
    dataset targets are training targets; score mAP against the annotation file instead.
    """

    def __init__(self, size: tuple[int, int], augment: AugmentSection | None = None, *, min_size: float = 2.0, fill: int = 114):
        self.size = (int(size[0]), int(size[1]))
        self.augment = augment
        self.min_size = min_size
        self.fill = fill

    def __call__(self, image: Tensor, boxes: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, LetterboxMeta, Tensor]:
        scale, flip = 1.0, False
        if self.augment is not None:
            u_scale, u_flip = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            lo, hi = self.augment.scale_jitter
            scale = lo + (hi - lo) * u_scale
            flip = u_flip < self.augment.hflip
        out, meta = letterbox(image, self.size, scale=scale, fill=self.fill)
        net_boxes = clip_boxes_to_image(boxes_to_letterbox(boxes.to(torch.float32).reshape(-1, 4), meta), self.size)
        if flip:
            out, net_boxes = hflip(out, net_boxes)
        wh = net_boxes[:, 2:] - net_boxes[:, :2]
        keep = (wh >= self.min_size).all(dim=1)
        return out, net_boxes[keep], meta, keep
