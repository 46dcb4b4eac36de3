"""`sadc export`: a checkpoint becomes ONNX, INT8 ONNX or a TensorRT engine.

Wiring only: the flags become one :class:`~sadc.export.pipeline.ExportOptions` and
:func:`~sadc.export.pipeline.export_checkpoint` does the work (the same call as from
Python). Choices come from the tables that declare them (formats, calibration
methods, INT8 targets); the flags the user gave, from Click's parameter sources.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import console, given_flags, handle_errors
from sadc.export.efficient_nms import NMS_CHOICES
from sadc.export.formats import (
    FORMAT_NAMES,
    check_options,
    formats_help,
    formats_help_text,
    get_format,
)
from sadc.export.pipeline import PARITY_IMAGES, ExportOptions
from sadc.export.quantize import METHODS, TARGET_CHOICES


def _choices(name: str, values: tuple[str, ...], doc: str) -> type[enum.Enum]:
    choices = enum.Enum(name, [(v, v) for v in values], type=str)  # type: ignore[misc]  # choices from the one table
    choices.__doc__ = doc
    return choices


Format = _choices("Format", FORMAT_NAMES, "Export formats (sadc.export.formats.FORMATS).")
Method = _choices("Method", METHODS, "Calibration methods of ONNX Runtime's static quantization (sadc.export.quantize.METHODS).")
Int8Target = _choices(
    "Int8Target", TARGET_CHOICES, "Which runtime the INT8 graph is shaped for (sadc.export.quantize.TARGET_CHOICES)."
)
Nms = _choices("Nms", NMS_CHOICES, "NMS of an engine's graph (sadc.export.efficient_nms.NMS_CHOICES).")
D = ExportOptions  # the defaults live in one place


@handle_errors
def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="sadc checkpoint, e.g. runs/quickstart/best.pt, or torchvision:NAME with --input-size.", show_default=False
        ),
    ],
    format: Annotated[Format, typer.Option("--format", "-f", help=f"What to write: {formats_help()}.")] = Format["onnx"],  # type: ignore[valid-type]  # Enums built from the tables
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output file (default: next to the checkpoint, best.onnx / best.int8.onnx / best.engine)."
        ),
    ] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset, 17..20 (default: the recipe's export.opset).")] = None,
    max_det: Annotated[
        int | None, typer.Option("--max-det", help="K: detections per image in the graph (default: recipe).")
    ] = None,
    topk: Annotated[int | None, typer.Option("--topk", help="Candidates kept before NMS (default: recipe).")] = None,
    iou: Annotated[float | None, typer.Option("--iou", help="NMS IoU threshold (default: recipe).")] = None,
    conf: Annotated[float | None, typer.Option("--conf", help="Score threshold (default: recipe).")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="onnx: dense scores/boxes graph, no NMS (.raw.onnx).")] = False,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxslim.")] = False,
    no_parity: Annotated[bool, typer.Option("--no-parity", help="Skip the torch vs ONNX Runtime check.")] = False,
    parity_images: Annotated[
        Path | None,
        typer.Option(
            "--parity-images",
            help=f"Folder of images for the parity check (default: {PARITY_IMAGES} images of the recipe's val set, else its unlabeled folder, else random).",
        ),
    ] = None,
    calib: Annotated[
        Path | None, typer.Option("--calib", help="int8/engine: folder of unlabeled images to calibrate on.")
    ] = None,
    calib_images: Annotated[int, typer.Option("--calib-images", help="Calibration images used.")] = D.calib_images,
    calib_batch: Annotated[int, typer.Option("--calib-batch", help="Calibration batch size.")] = D.calib_batch,
    method: Annotated[Method, typer.Option("--method", help="Calibration method.")] = Method[D.method],  # type: ignore[valid-type]
    int8_target: Annotated[
        Int8Target,  # type: ignore[valid-type]
        typer.Option(
            "--int8-target",
            help="int8: auto (tensorrt where CUDA + TensorRT are present, else cpu), tensorrt (symmetric S8S8) or cpu (U8S8, fast in ONNX Runtime on CPUs).",
        ),
    ] = Int8Target[D.int8_target],
    val: Annotated[
        Path | None,
        typer.Option(
            "--val",
            help="int8/engine: a labeled set (COCO json, YOLO data.yaml or VOC folder); mAP of the artefact vs the fp32 ONNX graph.",
        ),
    ] = None,
    max_map_drop: Annotated[
        float | None, typer.Option("--max-map-drop", help="int8/engine with --val: fail when mAP drops by more.")
    ] = None,
    nms: Annotated[
        Nms,  # type: ignore[valid-type]
        typer.Option("--nms", help="engine: onnx (NonMaxSuppression) or efficient (TensorRT's EfficientNMS_TRT plugin)."),
    ] = Nms[D.nms],
    input_size: Annotated[
        str | None, typer.Option("--input-size", help="torchvision:NAME sources: letterbox size N or H,W.")
    ] = None,
    half: Annotated[bool, typer.Option("--half", help="engine: fp16.")] = False,
    min_batch: Annotated[int, typer.Option("--min-batch", help="engine: smallest batch.")] = D.min_batch,
    opt_batch: Annotated[int, typer.Option("--opt-batch", help="engine: batch TensorRT tunes for.")] = D.opt_batch,
    max_batch: Annotated[int, typer.Option("--max-batch", help="engine: largest batch.")] = D.max_batch,
    workspace: Annotated[float, typer.Option("--workspace", help="engine: builder workspace GiB.")] = D.workspace,
    timing_cache: Annotated[
        Path | None, typer.Option("--timing-cache", help="engine: timing cache file, reused and updated.")
    ] = None,
) -> None:
    from sadc.export.pipeline import export_checkpoint

    fmt = get_format(Format(format).value)
    check_options(fmt, [flag for flag in given_flags() if flag != "--format"])  # a flag given at its default counts too
    options = ExportOptions(
        out=out,
        opset=opset,
        max_detections=max_det,
        topk_candidates=topk,
        iou_threshold=iou,
        score_threshold=conf,
        raw=raw,
        simplify=not no_simplify,
        parity=not no_parity,
        parity_images=parity_images,
        calib=calib,
        calib_images=calib_images,
        calib_batch=calib_batch,
        method=Method(method).value,
        int8_target=Int8Target(int8_target).value,
        val=val,
        max_map_drop=max_map_drop,
        half=half,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace=workspace,
        timing_cache=timing_cache,
        nms=Nms(nms).value,
        input_size=input_size,
    )
    export_checkpoint(checkpoint, fmt, options, console=console)


export.__doc__ = (
    "Export a checkpoint to ONNX, INT8 ONNX or a TensorRT engine, with a JSON sidecar, "
    "checked against torch (parity) after every export.\n\n" + formats_help_text()
)
