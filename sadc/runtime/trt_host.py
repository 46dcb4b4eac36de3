"""The one seam between sadc and TensorRT: every TensorRT call goes through :func:`load_tensorrt`.

:func:`load_tensorrt` imports ``tensorrt``, checks the version and the CUDA device, and
returns a :class:`TensorRTHost`: the module, the device engine I/O tensors live on, the
GPU's name and compute capability. The engine builder (:mod:`sadc.export.tensorrt`) and
the engine runtime (:mod:`sadc.runtime.trt_rt`) call it as ``trt_host.load_tensorrt(...)``
(a module attribute), so that tests replace it with a fake ``trt`` module object and a
CPU device and run the whole engine path (build, gate, load, version refusal) on a CPU.

Nothing else in sadc imports ``tensorrt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sadc.errors import SadcError

MIN_TENSORRT = 10
INSTALL_HINT = "pip install 'sadc[gpu]' on a CUDA machine"


class TensorRTUnavailable(SadcError):
    """TensorRT or a CUDA GPU is missing here; the message says which."""


@dataclass(frozen=True)
class TensorRTHost:
    """A usable TensorRT: ``trt`` (the module), ``device`` (where engine I/O tensors live), the GPU."""

    trt: Any
    device: torch.device
    gpu: str
    compute_capability: str

    @property
    def version(self) -> str:
        return str(getattr(self.trt, "__version__", "0"))

    @property
    def major(self) -> int:
        return major_version(self.version)

    def has_fp16_flag(self) -> bool:
        """True where ``BuilderFlag.FP16`` exists (TensorRT 10); TensorRT 11 removed it (strongly typed fp16 only)."""
        return getattr(self.trt.BuilderFlag, "FP16", None) is not None


def major_version(version: str) -> int:
    head = str(version).split(".")[0]
    return int(head) if head.isdigit() else 0


def load_tensorrt(device: str = "cuda") -> TensorRTHost:
    """``tensorrt`` >= 10 and a CUDA device, or :class:`TensorRTUnavailable` saying what is missing.

    The reasons are short phrases ("tensorrt is not installed", ...) that callers
    prefix with what they were doing.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(f"tensorrt is not installed ({INSTALL_HINT})") from None
    version = str(getattr(trt, "__version__", "0"))
    if major_version(version) < MIN_TENSORRT:
        raise TensorRTUnavailable(f"tensorrt {version} is older than {MIN_TENSORRT} ({INSTALL_HINT})")
    if not torch.cuda.is_available():
        raise TensorRTUnavailable(f"torch sees no CUDA GPU ({INSTALL_HINT})")
    dev = torch.device(device if str(device).startswith("cuda") else "cuda")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    major, minor = torch.cuda.get_device_capability(dev)
    return TensorRTHost(trt, dev, torch.cuda.get_device_name(dev), f"{major}.{minor}")


def tensorrt_available() -> tuple[bool, str]:
    """(whether TensorRT and a CUDA GPU are usable here, why not / which version)."""
    try:
        host = load_tensorrt()
    except TensorRTUnavailable as err:
        return False, str(err)
    return True, f"TensorRT {host.version} on {host.gpu}"
