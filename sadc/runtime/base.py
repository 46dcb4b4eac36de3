"""The Predictor protocol: what bench and predict see of every backend."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from torch import Tensor

from sadc.models.spec import DetectorSpec


class Predictor(Protocol):
    """A loaded artefact that detects objects.

    ``predict(images uint8 [B, 3, H, W])`` -> per image ``{boxes [k, 4] float32 xyxy in
    input pixels, scores [k] float32, labels [k] int64 in 0..C-1}``, sorted by score.
    ``spec`` gives input size and class names; ``name`` labels the artefact in reports.
    """

    spec: DetectorSpec
    name: str
    path: Path

    def predict(self, images: Tensor) -> list[dict[str, Tensor]]: ...
