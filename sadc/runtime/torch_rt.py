"""TorchPredictor: a sadc checkpoint run eagerly in PyTorch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from sadc.artefacts.checkpoint import load_checkpoint
from sadc.artefacts.postprocess import PostProcess
from sadc.engine.machine import check_device
from sadc.models.loading import detector_from_checkpoint
from sadc.runtime.base import ModelCall, cuda_sync


class TorchPredictor:
    """Eager PyTorch inference of a sadc checkpoint (CPU or CUDA).

    ``post``: the thresholds of :meth:`Detector.detect` (default: sadc's defaults).
    ``channels_last``: the model's memory format; None (default) = channels_last on the CPU,
    where oneDNN's convolutions are faster in it (the quickstart checkpoints: 10-17 % on
    AVX-512, 4-11 % on AVX2 kernels, the same detections: val mAP equal to 6 digits;
    benchmarks/RESULTS.md), and NCHW on CUDA, where it pays mainly under mixed precision.
    """

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        channels_last: bool | None = None,
        post: PostProcess = PostProcess(),
        detector=None,
    ):
        self.path = Path(path)
        self.name = f"{self.path.parent.name}/{self.path.name} (torch)"
        self.device = torch.device(check_device(str(device)))
        if detector is None:
            detector = detector_from_checkpoint(load_checkpoint(self.path), str(self.path))
        model = detector.eval().to(self.device)
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.spec = model.spec
        self.post = post
        self.weights: str | None = None  # torchvision sources: "DEFAULT" or "random (why)"

    @property
    def torch_cpu(self) -> bool:
        """The model runs on torch's CPU threads (so the host-side work shares them: see ``host_work``)."""
        return self.device.type == "cpu"

    @classmethod
    def from_torchvision(
        cls, source: str, input_size, *, device: str = "cpu", post: PostProcess = PostProcess()
    ) -> TorchPredictor:
        """``torchvision:NAME`` at ``input_size`` (N or H,W): COCO weights when cached or downloadable, else random
        (logged in one line; :attr:`weights` says which)."""
        from sadc.models.torchvision_zoo import (
            load_torchvision_detector,
            parse_input_size,
        )

        check_device(str(device))
        detector, weights = load_torchvision_detector(source, parse_input_size(input_size, source))
        predictor = cls(Path(source), device=device, post=post, detector=detector)
        predictor.name = f"{source} (torch, {'COCO weights' if weights == 'DEFAULT' else 'random weights'})"
        predictor.weights = weights
        return predictor

    @torch.inference_mode()
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        out = self.model(images.to(self.device), self.post)
        return [{k: v.cpu() for k, v in det.items()} for det in out]

    def model_call(self, images: Tensor) -> ModelCall:
        """Eager ``Detector(images)``: normalise + net + decode + per-image NMS, input already on the device."""
        x = images.to(self.device)
        sync = cuda_sync(self.device)

        def call():
            with torch.inference_mode():
                out = self.model(x, self.post)
            sync()
            return out

        return call
