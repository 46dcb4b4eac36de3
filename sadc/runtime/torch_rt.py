"""TorchPredictor: a sadc checkpoint run eagerly in PyTorch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from sadc.artefacts.checkpoint import load_checkpoint
from sadc.engine.machine import check_device
from sadc.models.loading import detector_from_checkpoint


class TorchPredictor:
    """Eager PyTorch inference of a sadc checkpoint (CPU or CUDA, optionally channels_last)."""

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        channels_last: bool = False,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        max_det: int = 100,
    ):
        self.path = Path(path)
        self.name = f"{self.path.parent.name}/{self.path.name} (torch)"
        self.device = torch.device(check_device(str(device)))
        model = detector_from_checkpoint(load_checkpoint(self.path), str(self.path)).eval().to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.spec = model.spec
        self.detect_kwargs = dict(score_thresh=score_thresh, nms_thresh=nms_thresh, max_det=max_det)

    @torch.inference_mode()
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        out = self.model(images.to(self.device), **self.detect_kwargs)
        return [{k: v.cpu() for k, v in det.items()} for det in out]
