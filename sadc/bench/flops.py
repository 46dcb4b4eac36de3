"""Parameters and GFLOPs of a detector, computed from its spec alone.

Convention: **GFLOPs = 2 x multiply-adds / 1e9** for one image at the spec's input
size, i.e. one multiply-add counts as two floating-point operations (the convention
of ``torch.utils.flop_counter``, whose conv and matmul formulas already carry the
factor 2). Counted: every convolution and matrix multiply of the dense path
(backbone + FPN + heads), which is all but a few percent of the work. Not counted:
normalisation layers, activations, additions, box decoding and NMS (no FLOP formula,
and data-dependent). An INT8 artefact has the same count as its fp32 source: the
operations are the same, only cheaper.

Parameters are every parameter of the torch detector (buffers excluded).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from sadc.models.spec import DetectorSpec


@dataclass(frozen=True)
class ModelSize:
    params: int
    gflops: float  # 2 x multiply-adds / 1e9, one image at input_size
    input_size: tuple[int, int]


def model_size(spec: DetectorSpec) -> ModelSize:
    """Build the torch detector of ``spec`` (random weights, never downloaded) and count it."""
    from torch.utils.flop_counter import FlopCounterMode

    from sadc.models.detector import build_detector

    with _quiet("sadc.models.backbones"):  # "random init" is expected here, not news
        detector = build_detector(spec.model_copy(update={"pretrained_backbone": False})).eval()
    params = sum(p.numel() for p in detector.parameters())
    h, w = spec.input_size
    image = torch.zeros(1, 3, h, w, dtype=torch.uint8)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        detector.dense(detector.preprocess(image))
    return ModelSize(params=int(params), gflops=counter.get_total_flops() / 1e9, input_size=(int(h), int(w)))


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)
