"""A grid of dataset images with their boxes drawn (``sadc data preview``)."""

from __future__ import annotations

import math

import torch
from torchvision.utils import draw_bounding_boxes, make_grid


def preview_grid(dataset, n: int) -> torch.Tensor:
    """uint8 [3, H, W] grid of the first ``n`` items with boxes and class names drawn.

    ``dataset`` yields ``(image uint8 [3, h, w], target)`` with ``boxes`` xyxy in image px
    and ``labels`` indexing ``dataset.class_names`` (e.g. :class:`CocoDataset`).
    """
    palette = ["#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#00c7be", "#ff9500", "#ff2d55"]
    tiles = []
    for i in range(min(n, len(dataset))):
        image, target = dataset[i]
        labels = target["labels"].tolist()
        tiles.append(
            draw_bounding_boxes(
                image,
                target["boxes"],
                labels=[dataset.class_names[c] for c in labels],
                colors=[palette[c % len(palette)] for c in labels],
                width=2,
            )
        )
    return make_grid(torch.stack(tiles), nrow=math.ceil(len(tiles) ** 0.5), padding=4, pad_value=255)
