"""TrtPredictor: a sadc TensorRT engine, run with the TensorRT 10 Python API.

    runtime = trt.Runtime(logger)
    engine  = runtime.deserialize_cuda_engine(engine bytes)   # None: another GPU or TensorRT built it
    context = engine.create_execution_context()
    per batch: context.set_input_shape("images", (B, 3, H, W))
               context.set_tensor_address(name, tensor.data_ptr())   # every I/O tensor
               context.execute_async_v3(torch.cuda.current_stream().cuda_stream)

Buffers are torch CUDA tensors (no pycuda / cuda-python), so the engine runs on
torch's current stream and torch's caching allocator owns the memory. The engine's
JSON sidecar (``best.engine.json``, written by ``sadc export --format engine``) gives
the spec, thresholds and build details; an engine without it is refused. The
outputs are the deploy graph's EfficientNMS layout, read by the same
:func:`~sadc.export.deploy.detections_from_outputs` as ONNX Runtime's.

``tensorrt`` is imported in the constructor only, after the sidecar is read, so a
machine without TensorRT or CUDA gets one line saying what to install.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import Tensor

from sadc.artefacts.io import INPUT_NAME, OUTPUT_NAMES, detections_from_outputs
from sadc.errors import SadcError
from sadc.runtime.base import ModelCall, cuda_sync

# TensorRT DataType member name -> torch dtype (names as in TensorRT 10's Python enum).
_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


def import_tensorrt_runtime(artefact: Path, device: str = "cuda"):
    """The :class:`~sadc.runtime.trt_host.TensorRTHost` to run ``artefact`` with, or one SadcError line saying why not."""
    from sadc.runtime import trt_host

    try:
        return trt_host.load_tensorrt(device)
    except trt_host.TensorRTUnavailable as err:
        raise SadcError(f"{artefact}: TensorRT needs tensorrt>={trt_host.MIN_TENSORRT} and a CUDA GPU ({err})") from None


def check_engine_version(artefact: Path, built: dict, running: str) -> None:
    """One SadcError line when the TensorRT that built ``artefact`` (its sidecar) is not the one here.

    TensorRT refuses or, worse, misreads a plan from another version; the sidecar says
    which built it, so the refusal names both and the fix before deserialising anything.
    """
    from sadc.artefacts.sidecar import ENGINE_NOTE

    recorded = built.get("version")
    if recorded and str(recorded) != str(running):
        raise SadcError(f"{artefact}: built with TensorRT {recorded}, this is TensorRT {running}; {ENGINE_NOTE}")


def torch_dtype(trt, dtype) -> torch.dtype:
    """torch dtype of a TensorRT ``DataType``."""
    for name, torch_type in _DTYPES.items():
        if getattr(trt.DataType, name, None) == dtype:
            return torch_type
    raise SadcError(f"TensorRT tensor type {dtype} has no torch equivalent here")


def _on(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class TrtPredictor:
    """TensorRT inference of an engine built from a sadc deploy graph (CUDA only).

    ``predict(images uint8 [B, 3, H, W])`` splits batches larger than the engine's
    optimization profile allows; :meth:`run` (model only) takes one batch within it.
    """

    torch_cpu = False  # the GPU runs the model: host-side torch work runs on one thread

    def __init__(self, path: Path, *, device: str = "cuda"):
        from sadc.artefacts.sidecar import ENGINE_NOTE, read_sidecar, sidecar_path
        from sadc.models.spec import spec_from_sidecar

        self.path = Path(path)
        sidecar = read_sidecar(self.path)  # "X.engine.json not found: ..." before anything else
        if sidecar["format"] != "tensorrt":
            raise SadcError(
                f"{sidecar_path(self.path)}: format {sidecar['format']!r} is not a TensorRT engine's; "
                "build one with sadc export --format engine"
            )
        self.sidecar = sidecar
        self.spec = spec_from_sidecar(sidecar)
        built = sidecar.get("tensorrt") or {}
        self.name = f"{self.path.parent.name}/{self.path.name} (tensorrt {built.get('precision', '?')})"
        if not str(device).startswith("cuda"):
            raise SadcError(f"--device {device}: a TensorRT engine runs only on a CUDA GPU; pass --device cuda")
        host = import_tensorrt_runtime(self.path, str(device))
        trt = host.trt
        check_engine_version(self.path, built, host.version)
        self.device = host.device

        self._logger = trt.Logger(trt.Logger.WARNING)  # the runtime keeps a reference; keep it alive
        self._runtime = trt.Runtime(self._logger)
        with _on(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise SadcError(
                    f"{self.path}: TensorRT {host.version} on {host.gpu} cannot load it "
                    f"(built with TensorRT {built.get('version')} on {built.get('gpu')}); {ENGINE_NOTE}"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise SadcError(
                f"{self.path}: engine I/O is {inputs} -> {outputs}, expected [{INPUT_NAME!r}] -> {list(OUTPUT_NAMES)}; "
                "build it from a sadc deploy graph (not --raw)"
            )
        self.dtypes = {n: torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        low, _, high = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])

    def run(self, images: Tensor) -> dict[str, Tensor]:
        """Model only: uint8 [B, 3, H, W] (ideally already on the device) -> the four outputs as CUDA tensors.

        Asynchronous: the outputs are complete once torch's current stream is
        synchronised (``.cpu()`` does that).
        """
        batch = int(images.shape[0])
        if not self.min_batch <= batch <= self.max_batch:
            raise SadcError(
                f"{self.path}: batch {batch} is outside the engine's profile [{self.min_batch}, {self.max_batch}]; "
                "rebuild with sadc export --format engine --max-batch N"
            )
        images = images.to(self.device, dtype=self.dtypes[INPUT_NAME], non_blocking=True).contiguous()
        if not self.context.set_input_shape(INPUT_NAME, tuple(images.shape)):
            raise SadcError(f"{self.path}: the engine refuses input shape {list(images.shape)}")
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        outputs = {}
        for name in OUTPUT_NAMES:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
        if not self.context.execute_async_v3(stream):
            raise SadcError(f"{self.path}: TensorRT execution failed (see the TensorRT log above)")
        return outputs

    def model_call(self, images: Tensor) -> ModelCall:
        """:meth:`run` on ``images`` moved to the device once, then a CUDA synchronise."""
        x = images.to(self.device).contiguous()
        sync = cuda_sync(self.device)

        def call():
            out = self.run(x)
            sync()
            return out

        return call

    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        detections = []
        for chunk in images.split(self.max_batch):
            out = self.run(chunk)
            detections.extend(detections_from_outputs(*(out[n].cpu() for n in OUTPUT_NAMES)))
        return detections
