"""OrtPredictor: a sadc ONNX export (fp32 or INT8) in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sadc.artefacts.io import INPUT_NAME, OUTPUT_NAMES, detections_from_outputs
from sadc.errors import SadcError, first_line
from sadc.runtime.base import ModelCall

# --provider name -> ONNX Runtime execution providers, in order of preference.
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def make_session(
    path: Path | bytes,
    *,
    provider: str = "cpu",
    threads: int | None = None,
    optimize: bool = True,
    options: dict[str, Any] | None = None,
):
    """An ONNX Runtime session; fails in one line if onnxruntime or the provider is missing.

    ``options``: further ``SessionOptions`` attributes (e.g. ``enable_profiling``), set after
    sadc's own, so that tools that need them still run the session ``sadc bench`` runs.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise SadcError("onnxruntime is not installed: pip install 'sadc[cpu]' (or 'sadc[gpu]' on CUDA)") from None
    if provider not in PROVIDERS:
        raise SadcError(f"--provider {provider}: choose one of {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise SadcError(
            f"ONNX Runtime has no {wanted[0]} here (available: {', '.join(available)}); "
            "on a CUDA machine: pip install 'sadc[gpu]'"
        )
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads:
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
    for name, value in (options or {}).items():
        setattr(session_options, name, value)
    source = str(path) if isinstance(path, Path) else path
    try:
        return ort.InferenceSession(source, session_options, providers=[p for p in wanted if p in available])
    except Exception as err:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for bad files
        what = path if isinstance(path, Path) else "the ONNX model"
        raise SadcError(
            f"{what}: ONNX Runtime cannot load it ({first_line(err, typed=True)}); re-export it with sadc export"
        ) from None


class OrtPredictor:
    """ONNX Runtime inference of a deploy graph (EfficientNMS layout outputs).

    The spec comes from the artefact's JSON sidecar. ``provider``: cpu, cuda or
    tensorrt (ORT's TensorRT execution provider).
    """

    torch_cpu = False  # its threads are ONNX Runtime's / the GPU's: host-side torch work runs on one thread

    def __init__(self, path: Path, *, device: str = "cpu", provider: str | None = None, threads: int | None = None):
        from sadc.artefacts.sidecar import check_sidecar_sha, read_sidecar
        from sadc.models.spec import spec_from_sidecar

        self.path = Path(path)
        sidecar = read_sidecar(self.path)
        check_sidecar_sha(self.path, sidecar)
        if sidecar["format"] == "onnx-raw" or list(sidecar["output_names"]) != list(OUTPUT_NAMES):
            raise SadcError(f"{self.path}: a raw graph (--raw) has no detections to score; export without --raw")
        if (sidecar.get("nms") or {}).get("kind") == "efficient":
            raise SadcError(
                f"{self.path}: its NMS is TensorRT's EfficientNMS_TRT plugin, which only TensorRT runs; "
                "build an engine from it, or use the .onnx exported with --nms onnx"
            )
        self.format = sidecar["format"]
        provider = provider or ("cuda" if device.startswith("cuda") else "cpu")
        self.spec = spec_from_sidecar(sidecar)
        self.name = f"{self.path.parent.name}/{self.path.name} (ort {provider})"
        self.session = make_session(self.path, provider=provider, threads=threads)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """Model only: uint8 [B, 3, H, W] numpy -> the four raw outputs."""
        return self.session.run(None, {INPUT_NAME: images})

    def model_call(self, images: Tensor) -> ModelCall:
        """``session.run`` on a host numpy copy of ``images`` made once (the CUDA provider's copies are timed)."""
        x = np.ascontiguousarray(images.cpu().numpy())
        return lambda: self.run(x)

    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        outputs = self.run(np.ascontiguousarray(images.cpu().numpy()))
        return detections_from_outputs(*(torch.from_numpy(o) for o in outputs))
