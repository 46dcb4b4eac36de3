"""The Predictor protocol: what bench and predict see of every backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from sadc.models.spec import DetectorSpec

ModelCall = Callable[[], object]
"""A zero-argument call that runs the model alone on prepared inputs and returns when its outputs exist."""


class Predictor(Protocol):
    """A loaded artefact that detects objects.

    ``predict(images uint8 [B, 3, H, W])`` -> per image ``{boxes [k, 4] float32 xyxy in
    input pixels, scores [k] float32, labels [k] int64 in 0..C-1}``, sorted by score.
    ``model_call(images)`` -> a :data:`ModelCall`: inputs moved/converted once, then each
    call runs the model only (what ``sadc bench`` times as "model"; CUDA calls
    synchronise). ``spec`` gives input size and class names; ``name`` labels the
    artefact in reports.
    """

    spec: DetectorSpec
    name: str
    path: Path

    def predict(self, images: Tensor) -> list[dict[str, Tensor]]: ...

    def model_call(self, images: Tensor) -> ModelCall: ...


def cuda_sync(device: torch.device) -> Callable[[], None]:
    """A CPU-GPU sync point for ``device`` (a no-op on the CPU): without it a CUDA call returns once kernels are queued."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
