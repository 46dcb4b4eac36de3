"""The Predictor protocol: what bench and predict see of every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

    @property
    def torch_cpu(self) -> bool:
        """True when the model itself runs on torch's CPU threads (see :func:`host_work`)."""
        ...

    def predict(self, images: Tensor) -> list[dict[str, Tensor]]: ...

    def model_call(self, images: Tensor) -> ModelCall: ...


def cuda_sync(device: torch.device) -> Callable[[], None]:
    """A CPU-GPU sync point for ``device`` (a no-op on the CPU): without it a CUDA call returns once kernels are queued."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


@contextmanager
def host_work(predictor: Predictor) -> Iterator[None]:
    """Run the host-side torch work around ``predictor`` (collation, letterbox, boxes back to image pixels) on one
    torch thread, unless the predictor's model runs on torch's CPU threads itself (``torch_cpu``).

    After each parallel region torch's OpenMP workers spin for a while before they sleep
    (libgomp's default wait policy). An ONNX Runtime session started meanwhile shares the
    cores with them: on 2 cores a 0.02 ms letterbox before a 2.6 ms ``session.run`` made the
    pair take 7.4 ms at the median and 24 ms at p95 (benchmarks/RESULTS.md). One thread costs
    the quickstart's 128 px images nothing; a 1080p original's layout copy takes 2.3 ms
    instead of 1.2 (its letterbox 3.0 ms either way), less than the spinning cost.
    Predictors without the attribute (ONNX Runtime, TensorRT, a caller's own) count as not
    torch's. The thread count is restored on exit (torch's setting is process-wide;
    changing it costs well under a microsecond).
    """
    threads = torch.get_num_threads()
    if getattr(predictor, "torch_cpu", False) or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
