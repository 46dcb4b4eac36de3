"""Run a command as if on an AVX2 CPU (issue 18's Zen 3): no AVX-512, AMX or VNNI, for every library.

``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` hold torch,
oneDNN and MKL to their AVX2 kernels, but ONNX Runtime's MLAS picks its kernels from CPUID and
has no such switch. So every "AVX2" figure of ONNX Runtime before 2026-12-05 (sixth sitting)
ran its AVX-512 + VNNI kernels, and issue 18's INT8 row on AVX2 could not be measured here.

This preloads a small library (``benchmarks/avx2_cpu.c``, compiled here with ``cc``). It
turns on Linux's CPUID faulting and answers every CPUID with the AVX-512, AMX, AVX-VNNI,
AVX512-BF16/FP16 and AVX10 bits cleared. Each library then picks what it would pick on an
AVX2 CPU: torch says ``AVX2``, numpy finds ``X86_V3`` and no more, and ONNX Runtime, oneDNN
and MKL run their AVX2 kernels, with no environment variables needed.

What it is not:
- The clock, caches and cores are this machine's.
- glibc picked its string functions before the library loaded and keeps them.
- /proc/cpuinfo is unchanged, so the machine line of ``sadc bench`` and ``sadc doctor``
  still names the host's instructions.
- It needs Linux on x86-64 with CPUID faulting (``cpuid_fault`` in /proc/cpuinfo: Intel
  CPUs since Ivy Bridge, and KVM guests of them) and a C compiler.
- It is not for use under pytest, whose faulthandler takes over SIGSEGV.

    python -m benchmarks.avx2_cpu --check                 # what a masked process sees
    python -m benchmarks.avx2_cpu -- sadc bench runs/quickstart/best.onnx runs/quickstart/best.int8.onnx --no-accuracy
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_suffix(".c")
CHECK = (
    "import torch, onnxruntime; from numpy._core._multiarray_umath import __cpu_features__ as f; "
    'print(f\'torch kernels {torch.backends.cpu.get_cpu_capability()}, numpy AVX2 {f["AVX2"]} AVX512F {f["AVX512F"]} '
    'AVX512VNNI {f["AVX512VNNI"]}, onnxruntime {onnxruntime.__version__}\')'
)


def unavailable() -> str | None:
    """Why the mask cannot work here, or None."""
    from sadc.engine.machine import cpu_flags

    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"needs Linux on x86-64, this is {platform.system()} on {platform.machine()}"
    if "cpuid_fault" not in (cpu_flags() or ()):
        return "this CPU or hypervisor has no CPUID faulting (no cpuid_fault in /proc/cpuinfo)"
    if shutil.which("cc") is None:
        return "no C compiler (cc) to build benchmarks/avx2_cpu.c"
    return None


def build(folder: Path) -> Path:
    """Compile the preload library into ``folder``; its path."""
    lib = folder / "avx2_cpu.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(SOURCE)], check=True)
    return lib


def masked_env(lib: Path) -> dict[str, str]:
    """The environment of a masked command: this one, with the library preloaded first."""
    preload = os.environ.get("LD_PRELOAD", "")
    return {**os.environ, "LD_PRELOAD": f"{lib} {preload}".strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check", action="store_true", help="print what torch, numpy and ONNX Runtime see, with and without the mask"
    )
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command to run masked, after --")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.check and not command:
        ap.error("give a command after --, or --check")
    if why := unavailable():
        print(f"avx2_cpu: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sadc-avx2-cpu-") as tmp:
        try:
            lib = build(Path(tmp))
        except subprocess.CalledProcessError:
            print(f"avx2_cpu: cc could not build {SOURCE} (its errors are above)", file=sys.stderr)
            return 2
        if args.check:
            for name, env in (("this CPU", dict(os.environ)), ("masked", masked_env(lib))):
                out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
                print(f"{name}: {out.stdout.strip()}")
            return 0
        try:
            return subprocess.run(command, env=masked_env(lib)).returncode
        except FileNotFoundError:
            print(f"avx2_cpu: {command[0]}: command not found", file=sys.stderr)
            return 127


if __name__ == "__main__":
    sys.exit(main())
