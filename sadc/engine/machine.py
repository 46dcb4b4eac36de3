"""What machine this is: for `sadc doctor`, every benchmark report, and `--device` checks."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
"""/proc/cpuinfo flags of the INT8 dot-product instructions that ONNX Runtime's INT8 kernels (MLAS) use
when present: x86 AVX-512 VNNI, AVX-VNNI, AMX-INT8; ARM's dot product (``asimddp``)."""

NO_INT8_DOT = "no INT8 dot-product instructions (VNNI/AMX/asimddp): ONNX Runtime's INT8 may be no faster than fp32"
"""What ``sadc doctor``, ``sadc bench`` and ``sadc export --int8-target cpu`` say where :func:`int8_dot_products` is []:
one phrase, so that the three read alike (a Zen 3 ran the INT8 graph at 1.07-1.24x fp32, issue 18)."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``), or None where there is no cpuinfo to read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return None


def int8_dot_products(flags: frozenset[str] | None = None) -> list[str] | None:
    """Which of :data:`INT8_DOT_FLAGS` this CPU has ([] = none: ONNX Runtime's INT8 then runs plain AVX2/SSE
    kernels, often no faster than fp32); None where the flags cannot be read. ``flags``: default :func:`cpu_flags`."""
    flags = cpu_flags() if flags is None else flags
    return None if flags is None else [flag for flag in INT8_DOT_FLAGS if flag in flags]


def package_version(name: str) -> str | None:
    """Installed distribution version, or None (no import: cheap and side-effect free)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_summary() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector kernels: results differ across them
        "int8_dot": int8_dot_products(),  # whether ONNX Runtime's INT8 has its fast kernels here
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "versions": {
            name: package_version(name)
            for name in ("sadc", "torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt")
            if package_version(name)
        },
    }


def resolve_device(text: str | int, flag: str = "--device", *, cuda_only: bool = False) -> str:
    """:func:`sadc.devices.parse_device`, with ``auto`` made concrete: ``cuda`` when torch sees a GPU (always for
    ``cuda_only`` artefacts such as TensorRT engines), else ``cpu``."""
    from sadc.devices import parse_device

    name = parse_device(text, flag)
    if name != "auto":
        return name
    if cuda_only:
        return "cuda"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str, flag: str = "--device", *, available: bool = True) -> str:
    """``name`` as ``cpu``, ``cuda`` or ``cuda:N`` (see :func:`sadc.devices.parse_device`; ``auto`` is resolved).

    With ``available``, a CUDA device must be usable here. Raises one-line
    :class:`SadcError` naming ``flag`` otherwise, before any model is loaded.
    """
    from sadc.errors import SadcError

    name = resolve_device(name, flag)
    if available and name.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            seen = f"torch sees {count} GPU{'s' if count != 1 else ''}"
            raise SadcError(
                f"{flag} {name}: no such CUDA device here ({seen}); use {flag} cpu" + ("" if count else " or a CUDA machine")
            )
    return name


def available_memory(device: str = "cpu") -> int | None:
    """Bytes this process can still allocate on ``device`` (cpu, cuda, cuda:N), or None if unknown.

    CPU: ``MemAvailable`` of /proc/meminfo, capped by a cgroup v2 limit (containers, Slurm
    jobs) when one is set. CUDA: free memory as the driver reports it.
    """
    if str(device).startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError):
            return None
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None
