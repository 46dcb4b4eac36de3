"""`sadc bench`: size, accuracy and latency of artefacts, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import console, handle_errors
from sadc.cli.data import FormatOpt, Layout
from sadc.errors import SadcError

ModelsArg = Annotated[
    list[Path],
    typer.Argument(
        help="Artefacts to compare: sadc checkpoints (.pt), ONNX exports (.onnx), TensorRT engines (.engine), torchvision:NAME (with --input-size). The first is the ΔmAP reference."
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Labeled val set, needed for mAP: a COCO json, a YOLO data.yaml (its val split) or a VOC folder."
    ),
]
ImagesOpt = Annotated[
    Path | None, typer.Option(help="COCO only: image folder of --data (default: the json's path without .json).")
]
DeviceOpt = Annotated[
    str, typer.Option(help="auto, cpu, cuda, cuda:N or N; auto = CUDA when present (a TensorRT engine always uses CUDA).")
]


def check_inputs(models: list[Path], data: Path | None, fmt: Layout, device: str) -> None:
    """The artefacts' and --data's paths and the device's spelling, checked without importing torch."""
    from sadc.data.formats import detect_format
    from sadc.devices import parse_device
    from sadc.runtime.load import check_model_files

    parse_device(device)
    if data is not None and fmt == Layout.auto:
        try:
            detect_format(data)
        except SadcError as err:
            raise SadcError(f"--data {err}") from None
    check_model_files(models)


@handle_errors
def bench(
    models: ModelsArg,
    data: DataOpt = None,
    images: ImagesOpt = None,
    fmt: FormatOpt = Layout.auto,
    batch: Annotated[
        str, typer.Option(help="Batch sizes to time, comma-separated; the largest is also the mAP pass's batch.")
    ] = "1,8",
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing, per artefact and batch size.")] = 10,
    iters: Annotated[int, typer.Option(help="Timed calls per artefact and batch size.")] = 50,
    repeat: Annotated[
        int,
        typer.Option(
            help="Timing rounds over all artefacts in turn (A B A B ...); the median of the rounds is reported. Use 3-5 on a shared machine."
        ),
    ] = 1,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads for torch and ONNX Runtime alike (default: torch's current count).")
    ] = None,
    device: DeviceOpt = "auto",
    out: Annotated[
        Path | None, typer.Option(help="Folder for bench.json, bench.md, bench.png (default: bench/ next to the first model).")
    ] = None,
    no_accuracy: Annotated[bool, typer.Option("--no-accuracy", help="Skip the mAP pass.")] = False,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Skip the timing.")] = False,
    fail_under_map: Annotated[
        float | None, typer.Option(help="CI gate: exit 2 when any artefact's mAP is below X (0..1).")
    ] = None,
    max_map_drop: Annotated[
        float | None, typer.Option(help="CI gate: exit 2 when any artefact's mAP is more than X below the first's.")
    ] = None,
    save_detections: Annotated[
        Path | None, typer.Option(help="Write the first model's detections as a COCO results json.")
    ] = None,
    input_size: Annotated[
        str | None, typer.Option("--input-size", help="torchvision:NAME models: letterbox size N or H,W.")
    ] = None,
) -> None:
    """Params, GFLOPs, COCO mAP and latency (model-only and end to end) of artefacts, side by side.

    Every artefact gets the same input shapes, warm-up, iteration count and thread count,
    and the same post-processing: checkpoints run with the thresholds fixed in the
    exports beside them; rows whose exports differ say which they used and get no ΔmAP.
    torchvision:NAME (with --input-size) benches torchvision's detector (a teacher).
    Writes bench.json, bench.md and bench.png; with --fail-under-map / --max-map-drop it
    is a CI gate (reports are written first).
    """
    check_inputs(models, data, fmt, device)  # before torch is imported (seconds): a mistake is one line at once
    from rich.console import Group

    from sadc.bench.report import tables, write_reports
    from sadc.bench.run import (
        BenchSettings,
        check_gate_values,
        check_gates,
        parse_batches,
        run_bench,
    )

    check_gate_values(fail_under_map, max_map_drop, accuracy=not no_accuracy)
    settings = BenchSettings(
        batches=parse_batches(batch),
        warmup=warmup,
        iters=iters,
        repeat=repeat,
        threads=threads,
        device=device,
        accuracy=not no_accuracy,
        latency=not no_latency,
        data=data,
        images=images,
        data_format=fmt.value,
        save_detections=save_detections,
        input_size=input_size,
    )
    report = run_bench(models, settings, console=console)
    console.print(Group(*tables(report)))
    out = out or (Path("bench") if str(models[0]).startswith("torchvision:") else Path(models[0]).parent / "bench")
    written = write_reports(report, out)
    console.print("report: " + ", ".join(map(str, written)))
    check_gates(report, fail_under_map=fail_under_map, max_map_drop=max_map_drop)


@handle_errors
def val(
    models: ModelsArg,
    data: Annotated[
        Path, typer.Option("--data", help="Labeled val set: a COCO json, a YOLO data.yaml (its val split) or a VOC folder.")
    ],
    images: ImagesOpt = None,
    fmt: FormatOpt = Layout.auto,
    batch: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 8,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads for torch and ONNX Runtime alike (default: torch's current count).")
    ] = None,
    device: DeviceOpt = "auto",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for bench.json, bench.md and the per-class chart (default: val/ next to the first model)."),
    ] = None,
    save_detections: Annotated[
        Path | None, typer.Option(help="Write the first model's detections as a COCO results json.")
    ] = None,
) -> None:
    """COCO mAP and AP per class of artefacts on a labeled set: sadc bench without the timing."""
    check_inputs(models, data, fmt, device)  # before torch is imported
    from sadc.bench.report import tables, write_reports
    from sadc.bench.run import BenchSettings, run_bench

    settings = BenchSettings(
        batches=(batch,),
        threads=threads,
        device=device,
        accuracy=True,
        latency=False,
        data=data,
        images=images,
        data_format=fmt.value,
        save_detections=save_detections,
    )
    report = run_bench(models, settings, console=console)
    for table in tables(report):
        console.print(table)
    written = write_reports(report, out or Path(models[0]).parent / "val")
    console.print("report: " + ", ".join(str(p) for p in written))
