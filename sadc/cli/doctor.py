"""`sadc doctor`: what this machine can run, and why not."""

from __future__ import annotations

import importlib
import os
import platform

from rich.markup import escape
from rich.table import Table

from sadc.cli.common import console, handle_errors
from sadc.engine.machine import NO_INT8_DOT, cpu_model, int8_dot_products, package_version
from sadc.errors import first_line


def _version(module: str) -> tuple[str | None, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # ImportError, or a broken install raising anything
        return None, first_line(err, 80, typed=True)
    return getattr(mod, "__version__", None) or package_version(module.replace("_", "-")) or "?", ""


def int8_row(dots: list[str] | None) -> tuple[str, str]:
    """(status, detail) of the CPU's INT8 dot-product instructions, which ONNX Runtime's INT8 kernels need to be fast."""
    if dots is None:
        return "[yellow]unknown[/]", "no CPU flags to read (/proc/cpuinfo): INT8 speed unknown; compare with sadc bench"
    if dots:
        return "[green]ok[/]", f"{', '.join(dots)}: ONNX Runtime's fast INT8 kernels"
    return "[yellow]slow[/]", f"{NO_INT8_DOT} here (a Zen 3 ran it at 1.07-1.24x fp32, issue 18); compare both with sadc bench"


@handle_errors
def doctor() -> None:
    """Print versions, devices, ONNX Runtime providers, TensorRT, and what is unavailable and why."""
    import torch

    import sadc

    table = Table(title=f"sadc {sadc.__version__} doctor", show_lines=False)
    table.add_column("component")
    table.add_column("status")
    table.add_column("detail")
    ok, no = "[green]ok[/]", "[red]missing[/]"
    table.add_row("python", ok, f"{platform.python_version()} on {platform.machine()} {platform.system()}")
    table.add_row(
        "cpu",
        ok,
        f"{cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"kernels {torch.backends.cpu.get_cpu_capability()}",  # mAPs repeat only on the same kernels and threads
    )
    table.add_row("int8 (cpu)", *int8_row(int8_dot_products()))
    for name in ("torch", "torchvision", "onnx", "onnxruntime", "onnxslim", "faster_coco_eval", "pycocotools", "matplotlib"):
        version, why = _version(name)
        table.add_row(name, ok if version else no, escape(version or package_version(name.replace("_", "-")) or why))
    unavailable: list[str] = []
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        table.add_row("cuda", ok, f"CUDA {torch.version.cuda}: {names}")
    else:
        table.add_row("cuda", "[yellow]none[/]", f"torch built with CUDA {torch.version.cuda or '-'}, no device visible")
        unavailable.append("GPU training/inference (no CUDA device)")
    version, why = _version("onnxruntime")
    if version:
        import onnxruntime as ort

        table.add_row("ort providers", ok, ", ".join(ort.get_available_providers()))
    else:
        unavailable.append("ONNX export, INT8 and ONNX Runtime bench (pip install 'sadc[cpu]')")
    version, why = _version("tensorrt")
    if version:
        table.add_row("tensorrt", ok, version)
    else:
        table.add_row("tensorrt", no, escape(why))
        unavailable.append("TensorRT engines (on a CUDA machine: pip install 'sadc[gpu]')")
    console.print(table)
    if unavailable:
        console.print("[bold]unavailable here:[/]")
        for line in unavailable:
            console.print(f"  - {escape(line)}")
    else:
        console.print("[green]everything is available[/]")
