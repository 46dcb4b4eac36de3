"""Loading artefacts: one Predictor per backend, picked from the artefact's suffix.

The one table :data:`BACKENDS` says, per backend, which files it loads, how to load
them and what its *model-only* call (``Predictor.model_call``) includes, i.e. the work
``sadc bench`` times as "model"::

    suffix            backend      model-only call (what is timed)
    .pt / .pth        torch        Detector(images): normalise + net + decode + NMS (eager, per-image NMS)
    .onnx (.int8.onnx) onnxruntime session.run: the deploy graph = normalise + net + decode + NMS
    .engine           tensorrt     execute_async_v3 of the same deploy graph, then a CUDA sync

Every model-only call starts from a uint8 [B, 3, H, W] batch already where the backend
reads it (torch / TensorRT: on the device; ONNX Runtime: a host numpy array, so with
the CUDA provider the call includes the host<->device copies) and returns when the
outputs exist (CUDA calls synchronise). Reading files, decoding, letterboxing and
mapping boxes back to the original image are the *end-to-end* extra
(:mod:`sadc.runtime.predict`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sadc.artefacts.postprocess import PostProcess
from sadc.errors import SadcError
from sadc.models.spec import DetectorSpec

if TYPE_CHECKING:  # this module stays torch-free: commands check artefact paths with it before importing torch
    from sadc.runtime.base import Predictor

InputSize = str | tuple[int, int] | None
"""``--input-size``: N, "H,W" or (H, W); only torchvision:NAME sources use it."""


def _load_torch(
    path: Path, device: str, threads: int | None, post: PostProcess | None, input_size: InputSize
) -> Predictor:  # threads unused: torch threads are process-wide
    from sadc.runtime.torch_rt import TorchPredictor

    if is_torchvision(path):
        return TorchPredictor.from_torchvision(str(path), input_size, device=device, post=post or PostProcess())
    return TorchPredictor(path, device=device, post=post or PostProcess())


def _load_ort(
    path: Path, device: str, threads: int | None, post: PostProcess | None, input_size: InputSize
) -> Predictor:  # threads only; thresholds are in the graph
    from sadc.runtime.onnx_rt import OrtPredictor

    return OrtPredictor(path, device=device, threads=threads)


def _load_trt(
    path: Path, device: str, threads: int | None, post: PostProcess | None, input_size: InputSize
) -> Predictor:  # threads, post, input_size unused: the engine fixes them
    from sadc.runtime.trt_rt import TrtPredictor

    return TrtPredictor(path, device=device)


def is_torchvision(path) -> bool:
    """``torchvision:NAME``: a torchvision detector (teacher) rather than a file."""
    return str(path).startswith("torchvision:")


def artefact_postprocess(path: Path | str) -> PostProcess | None:
    """The thresholds fixed in an export (its sidecar or embedded metadata); None for a torch model,
    which runs whatever thresholds it is given."""
    if is_torchvision(path) or backend_for(path).name == "torch":
        return None
    from sadc.artefacts.sidecar import read_sidecar

    return PostProcess.from_json(read_sidecar(Path(path))["thresholds"])


@dataclass(frozen=True)
class Backend:
    """One runtime: the files it loads, its loader and what its model-only call includes."""

    name: str
    suffixes: tuple[str, ...]
    load: Callable[[Path, str, int | None, PostProcess | None, InputSize], Predictor]
    model_only: str  # what the model-only time includes, for reports and docs


BACKENDS: tuple[Backend, ...] = (
    Backend(
        "torch",
        (".pt", ".pth"),
        _load_torch,
        "eager Detector(images): uint8 -> normalise -> backbone/FPN/head -> decode -> per-image batched NMS "
        "(input already on the device; channels_last on the CPU; CUDA synchronised)",
    ),
    Backend(
        "onnxruntime",
        (".onnx",),
        _load_ort,
        "InferenceSession.run of the deploy graph: uint8 -> normalise -> net -> decode -> top-k -> NMS -> "
        "EfficientNMS-layout outputs (host numpy in and out)",
    ),
    Backend(
        "tensorrt",
        (".engine",),
        _load_trt,
        "execute_async_v3 of the engine built from the deploy graph (same work as onnxruntime), "
        "input and outputs in CUDA memory, then torch.cuda.synchronize",
    ),
)


def backend_for(path: Path | str) -> Backend:
    """The backend that loads ``path``, from its suffix (``torchvision:NAME``: torch); SadcError naming the known suffixes."""
    if is_torchvision(path):
        return BACKENDS[0]
    path = Path(path)
    for backend in BACKENDS:
        if path.suffix in backend.suffixes:
            return backend
    known = ", ".join(s for b in BACKENDS for s in b.suffixes)
    raise SadcError(f"{path}: unknown artefact type {path.suffix!r} (expected one of {known})")


def check_model_files(paths) -> list[Backend]:
    """:func:`check_model_file` for each of ``paths``, in order (fails on the first bad one)."""
    return [check_model_file(path) for path in paths]


def check_model_file(path: Path | str) -> Backend:
    """The backend of ``path`` after checking, without reading it, that it is a file with a known suffix
    (a ``torchvision:NAME`` source is the torch backend, not a file).

    Torch-free and instant: commands call it on every artefact before their heavy imports.
    """
    if is_torchvision(path):
        return BACKENDS[0]
    path = Path(path)
    if not path.exists():
        raise SadcError(f"{path}: model not found")
    if path.is_dir():
        raise SadcError(f"{path}: a folder, not a model file (.pt, .onnx or .engine)")
    return backend_for(path)


def load_predictor(
    path: Path | str,
    *,
    device: str = "auto",
    threads: int | None = None,
    post: PostProcess | None = None,
    input_size: str | tuple[int, int] | None = None,
) -> Predictor:
    """Load any sadc artefact as a :class:`Predictor` (backend from suffix; exports also read their sidecar).

    ``threads`` sets ONNX Runtime's intra-op threads; torch's thread count is
    process-wide (``torch.set_num_threads``), so callers set it themselves. ``post``: the
    thresholds of a torch model (default sadc's; exports keep the ones in their graph).
    ``torchvision:NAME`` loads torchvision's detector at ``input_size`` (``--input-size``). ``device``: see
    :func:`sadc.devices.parse_device`; ``auto`` is CUDA when torch sees a GPU (always for a
    TensorRT engine), else the CPU.
    """
    from sadc.engine.machine import check_device, resolve_device

    if is_torchvision(path):
        device = resolve_device(device, cuda_only=False)
        check_device(device, available=False)
        return BACKENDS[0].load(Path(str(path)), device, threads, post, input_size)
    path = Path(path)
    backend = check_model_file(path)
    device = resolve_device(device, cuda_only=backend.name == "tensorrt")  # an engine picks CUDA by itself
    check_device(device, available=False)  # the backend says whether it can use that device here
    return backend.load(path, device, threads, post, input_size)


def check_artefact(path: Path | str, input_size: str | tuple[int, int] | None = None) -> DetectorSpec:
    """The spec of any sadc artefact, read cheaply: a checkpoint's header (tensors memory-mapped,
    not read), an export's sidecar (or the metadata inside an ONNX file), or a torchvision
    name at ``input_size``. One-line SadcError when ``path`` is not a sadc artefact;
    commands call it for every input before the minutes of work on the first.
    """
    if is_torchvision(path):
        from sadc.models.torchvision_zoo import parse_input_size, torchvision_spec

        return torchvision_spec(str(path), parse_input_size(input_size, str(path)))
    path = Path(path)
    backend = check_model_file(path)
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
