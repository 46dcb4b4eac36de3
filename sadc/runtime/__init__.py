"""Runtimes: one Predictor per backend, picked from the artefact's suffix (and checked against its sidecar).

The one table :data:`BACKENDS` says, per backend, which files it loads, how to load
them and what its *model-only* call is, i.e. the work ``sadc bench`` times as "model"::

    suffix            backend      model-only call (what is timed)
    .pt / .pth        torch        Detector(images): normalise + net + decode + NMS (eager, per-image NMS)
    .onnx (.int8.onnx) onnxruntime session.run: the deploy graph = normalise + net + decode + NMS
    .engine           tensorrt     execute_async_v3 of the same deploy graph, then a CUDA sync

Every model-only call starts from a uint8 [B, 3, H, W] batch already where the backend
reads it (torch / TensorRT: on the device; ONNX Runtime: a host numpy array, so with
the CUDA provider the call includes the host<->device copies) and returns when the
outputs exist (CUDA calls synchronise). Reading files, decoding, letterboxing and
mapping boxes back to the original image are the *end-to-end* extra:
:func:`predict_files` is that whole path (timed by bench; ``sadc predict`` uses :func:`predict_images`
after decoding each image once, to draw on it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sadc.data.images import load_image
from sadc.data.transforms import LetterboxMeta, boxes_from_letterbox, letterbox
from sadc.errors import SadcError
from sadc.models.spec import DetectorSpec
from sadc.runtime.base import Predictor

ModelCall = Callable[[], object]


def _load_torch(path: Path, device: str, threads: int | None) -> Predictor:  # noqa: ARG001 - torch threads are process-wide
    from sadc.runtime.torch_rt import TorchPredictor

    return TorchPredictor(path, device=device)


def _load_ort(path: Path, device: str, threads: int | None) -> Predictor:
    from sadc.runtime.onnx_rt import OrtPredictor

    return OrtPredictor(path, device=device, threads=threads)


def _load_trt(path: Path, device: str, threads: int | None) -> Predictor:  # noqa: ARG001 - the GPU does the work
    from sadc.runtime.trt_rt import TrtPredictor

    return TrtPredictor(path, device=device)


def _cuda_sync(device: torch.device) -> Callable[[], None]:
    # A CPU-GPU sync point: without it a CUDA call returns once kernels are queued.
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _torch_call(predictor, images: Tensor) -> ModelCall:
    x = images.to(predictor.device)
    sync = _cuda_sync(predictor.device)
    model, kwargs = predictor.model, predictor.detect_kwargs

    def call():
        with torch.inference_mode():
            out = model(x, **kwargs)
        sync()
        return out

    return call


def _ort_call(predictor, images: Tensor) -> ModelCall:
    x = np.ascontiguousarray(images.cpu().numpy())
    return lambda: predictor.run(x)


def _trt_call(predictor, images: Tensor) -> ModelCall:
    x = images.to(predictor.device).contiguous()
    sync = _cuda_sync(predictor.device)

    def call():
        out = predictor.run(x)
        sync()
        return out

    return call


@dataclass(frozen=True)
class Backend:
    """One runtime: the files it loads, its loader and its timed model-only call."""

    name: str
    suffixes: tuple[str, ...]
    load: Callable[[Path, str, int | None], Predictor]
    model_call: Callable[[Predictor, Tensor], ModelCall]
    model_only: str  # what the model-only time includes, for reports and docs


BACKENDS: tuple[Backend, ...] = (
    Backend(
        "torch",
        (".pt", ".pth"),
        _load_torch,
        _torch_call,
        "eager Detector(images): uint8 -> normalise -> backbone/FPN/head -> decode -> per-image batched NMS "
        "(input already on the device; CUDA synchronised)",
    ),
    Backend(
        "onnxruntime",
        (".onnx",),
        _load_ort,
        _ort_call,
        "InferenceSession.run of the deploy graph: uint8 -> normalise -> net -> decode -> top-k -> NMS -> "
        "EfficientNMS-layout outputs (host numpy in and out)",
    ),
    Backend(
        "tensorrt",
        (".engine",),
        _load_trt,
        _trt_call,
        "execute_async_v3 of the engine built from the deploy graph (same work as onnxruntime), "
        "input and outputs in CUDA memory, then torch.cuda.synchronize",
    ),
)


def backend_for(path: Path) -> Backend:
    """The backend that loads ``path``, from its suffix; SadcError naming the known suffixes."""
    path = Path(path)
    for backend in BACKENDS:
        if path.suffix in backend.suffixes:
            return backend
    known = ", ".join(s for b in BACKENDS for s in b.suffixes)
    raise SadcError(f"{path}: unknown artefact type {path.suffix!r} (expected one of {known})")


def load_predictor(path: Path, *, device: str = "cpu", threads: int | None = None) -> Predictor:
    """Load any sadc artefact as a :class:`Predictor` (backend from suffix; exports also read their sidecar).

    ``threads`` sets ONNX Runtime's intra-op threads; torch's thread count is
    process-wide (``torch.set_num_threads``), so callers set it themselves.
    """
    from sadc.engine.machine import check_device

    path = Path(path)
    if not path.exists():
        raise SadcError(f"{path}: model not found")
    if path.is_dir():
        raise SadcError(f"{path}: a folder, not a model file (.pt, .onnx or .engine)")
    backend = backend_for(path)
    check_device(device, available=False)  # the backend says whether it can use that device here
    return backend.load(path, device, threads)


def check_artefact(path: Path) -> DetectorSpec:
    """The spec of any sadc artefact, read cheaply: a checkpoint's header (tensors memory-mapped,
    not read) or an export's sidecar. One-line SadcError when ``path`` is not a sadc artefact;
    commands call it for every input before the minutes of work on the first.
    """
    path = Path(path)
    if not path.is_file():
        raise SadcError(f"{path}: model not found" if not path.exists() else f"{path}: not a model file")
    backend = backend_for(path)
    if backend.name == "torch":
        from sadc.artefacts.checkpoint import load_checkpoint
        from sadc.models.loading import checkpoint_spec

        return checkpoint_spec(load_checkpoint(path, mmap=True), str(path))
    from sadc.artefacts.sidecar import check_sidecar_sha, read_sidecar
    from sadc.models.spec import spec_from_sidecar

    sidecar = read_sidecar(path)
    if backend.name == "onnxruntime":  # engines are checked when deserialised (on the GPU that runs them)
        check_sidecar_sha(path, sidecar)
    return spec_from_sidecar(sidecar)


def model_call(predictor: Predictor, images: Tensor) -> ModelCall:
    """A zero-argument call running ``predictor``'s model alone on ``images`` (see the module docstring).

    Inputs are prepared (moved, converted) here, once, so that timing the call times
    only the model.
    """
    return backend_for(predictor.path).model_call(predictor, images)


# ------------------------------------------------------------------------------ end to end


def letterbox_batch(images: Sequence[Tensor], input_size: tuple[int, int]) -> tuple[Tensor, list[LetterboxMeta]]:
    """Letterbox decoded images (uint8 [3, h, w] each, any sizes) to ``input_size`` (H, W).

    Returns (uint8 [B, 3, H, W], one :class:`LetterboxMeta` per image).
    """
    placed = [letterbox(image, tuple(input_size)) for image in images]
    return torch.stack([p[0] for p in placed]), [p[1] for p in placed]


def predict_images(predictor: Predictor, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
    """Decoded images -> letterbox -> predict -> boxes in original image pixels.

    Returns per image ``{boxes [k, 4] float32 xyxy original px (clipped), scores [k],
    labels [k] int64}``.
    """
    batch, metas = letterbox_batch(images, tuple(predictor.spec.input_size))
    out = []
    for det, meta in zip(predictor.predict(batch), metas, strict=True):
        out.append(
            {
                "boxes": boxes_from_letterbox(det["boxes"].float().cpu(), meta),
                "scores": det["scores"].cpu(),
                "labels": det["labels"].cpu(),
            }
        )
    return out


def predict_files(predictor: Predictor, paths: Sequence[Path]) -> list[dict[str, Tensor]]:
    """End to end: image files -> read + decode -> :func:`predict_images` (boxes in original pixels)."""
    return predict_images(predictor, [load_image(path) for path in paths])


__all__ = ["BACKENDS", "Backend", "Predictor", "backend_for", "check_artefact", "letterbox_batch", "load_predictor", "model_call", "predict_files", "predict_images"]
