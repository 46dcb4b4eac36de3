"""`sadc export`: a checkpoint becomes ONNX, INT8 ONNX or a TensorRT engine.

Wiring only: the formats table validates the flags, then each stage is one call
into :mod:`sadc.export` (export ONNX -> parity -> quantize -> parity/mAP -> engine).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import console, handle_errors
from sadc.errors import SadcError
from sadc.export.formats import (
    FORMAT_NAMES,
    check_options,
    check_output,
    default_output,
    formats_help,
    formats_help_text,
    get_format,
    sibling,
)

Format = enum.Enum("Format", [(name, name) for name in FORMAT_NAMES], type=str)  # choices from the one table
Format.__doc__ = "Export formats (sadc.export.formats.FORMATS)."


class Int8Target(str, enum.Enum):
    """Which runtime the INT8 graph is shaped for (sadc.export.quantize.TARGETS)."""

    tensorrt = "tensorrt"
    cpu = "cpu"


class Method(str, enum.Enum):
    """Calibration methods of ONNX Runtime's static quantization."""

    entropy = "entropy"
    percentile = "percentile"
    minmax = "minmax"


PARITY_IMAGES = 32


@handle_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="sadc checkpoint, e.g. runs/quickstart/best.pt.", show_default=False)],
    format: Annotated[Format, typer.Option("--format", "-f", help=f"What to write: {formats_help()}.")] = Format("onnx"),  # noqa: A002
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output file (default: next to the checkpoint, best.onnx / best.int8.onnx / best.engine).")
    ] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset, 17..20 (default: the recipe's export.opset).")] = None,
    max_det: Annotated[int | None, typer.Option("--max-det", help="K: detections per image in the graph (default: recipe).")] = None,
    topk: Annotated[int | None, typer.Option("--topk", help="Candidates kept before NMS (default: recipe).")] = None,
    iou: Annotated[float | None, typer.Option("--iou", help="NMS IoU threshold (default: recipe).")] = None,
    conf: Annotated[float | None, typer.Option("--conf", help="Score threshold (default: recipe).")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="onnx: dense scores/boxes graph, no NMS (.raw.onnx).")] = False,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxslim.")] = False,
    no_parity: Annotated[bool, typer.Option("--no-parity", help="Skip the torch vs ONNX Runtime check.")] = False,
    parity_images: Annotated[
        Path | None, typer.Option("--parity-images", help=f"Folder of images for the parity check (default: {PARITY_IMAGES} images of the recipe's val set, else its unlabeled folder, else random).")
    ] = None,
    calib: Annotated[Path | None, typer.Option("--calib", help="int8/engine: folder of unlabeled images to calibrate on.")] = None,
    calib_images: Annotated[int | None, typer.Option("--calib-images", help="Calibration images used (default 64).")] = None,
    calib_batch: Annotated[int | None, typer.Option("--calib-batch", help="Calibration batch size (default 8).")] = None,
    method: Annotated[Method | None, typer.Option("--method", help="Calibration method (default entropy).")] = None,
    int8_target: Annotated[
        Int8Target | None,
        typer.Option("--int8-target", help="int8: tensorrt (symmetric S8S8, default) or cpu (U8S8, fast in ONNX Runtime on CPUs)."),
    ] = None,
    val: Annotated[Path | None, typer.Option("--val", help="int8: COCO json of a labeled set; report fp32 vs INT8 mAP.")] = None,
    max_map_drop: Annotated[float | None, typer.Option("--max-map-drop", help="int8 with --val: fail when mAP drops by more.")] = None,
    half: Annotated[bool, typer.Option("--half", help="engine: fp16.")] = False,
    min_batch: Annotated[int | None, typer.Option("--min-batch", help="engine: smallest batch (default 1).")] = None,
    opt_batch: Annotated[int | None, typer.Option("--opt-batch", help="engine: batch TensorRT tunes for (default 8).")] = None,
    max_batch: Annotated[int | None, typer.Option("--max-batch", help="engine: largest batch (default 16).")] = None,
    workspace: Annotated[float | None, typer.Option("--workspace", help="engine: builder workspace GiB (default 4).")] = None,
    timing_cache: Annotated[Path | None, typer.Option("--timing-cache", help="engine: timing cache file, reused and updated.")] = None,
) -> None:
    from sadc.export import tensorrt as trt_export

    fmt = get_format(Format(format).value)
    given = {
        "--out": out, "--opset": opset, "--max-det": max_det, "--topk": topk, "--iou": iou, "--conf": conf,
        "--raw": raw, "--no-simplify": no_simplify, "--no-parity": no_parity, "--parity-images": parity_images,
        "--calib": calib, "--calib-images": calib_images, "--calib-batch": calib_batch, "--method": method,
        "--int8-target": int8_target,
        "--val": val, "--max-map-drop": max_map_drop, "--half": half, "--min-batch": min_batch,
        "--opt-batch": opt_batch, "--max-batch": max_batch, "--workspace": workspace, "--timing-cache": timing_cache,
    }  # fmt: skip
    check_options(fmt, [flag for flag, value in given.items() if value is not None and value is not False])
    if fmt.name == "int8" and calib is None:
        raise SadcError("--format int8 needs --calib DIR: a folder of unlabeled images like the deployment data")
    if half and calib is not None:
        raise SadcError("--half and --calib: an engine is fp16 or INT8 (from the QDQ graph), not both")
    if max_map_drop is not None and val is None:
        raise SadcError("--max-map-drop needs --val VAL.json to measure the mAP change")
    if not checkpoint.is_file():
        raise SadcError(f"{checkpoint}: checkpoint not found")
    if calib is not None and not calib.is_dir():
        raise SadcError(f"--calib {calib}: folder not found (unlabeled images to calibrate on)")
    if val is not None and not val.is_file():
        raise SadcError(f"--val {val}: file not found (a COCO json, e.g. data/synth/val.json)")
    if out is not None:
        check_output(fmt, out)
    if fmt.needs_cuda:  # fail in seconds, not after the ONNX export
        profile = trt_export.BatchProfile(_or(min_batch, 1), _or(opt_batch, 8), _or(max_batch, 16))
        trt_export.check_workspace(_or(workspace, 4.0))
        trt_export.import_tensorrt()

    from pydantic import ValidationError

    from sadc.export.deploy import validate_thresholds
    from sadc.export.onnx import export_onnx, load_export_source
    from sadc.recipe import ExportSection

    source = load_export_source(checkpoint)
    try:
        defaults = ExportSection(**source.recipe_export)
    except (TypeError, ValidationError):  # an older/odd recipe in the checkpoint: sadc's defaults
        defaults = ExportSection()
    thresholds = dict(
        max_detections=_or(max_det, defaults.max_detections),
        topk_candidates=_or(topk, defaults.topk_candidates),
        iou_threshold=_or(iou, defaults.iou_threshold),
        score_threshold=_or(conf, defaults.score_threshold),
    )
    validate_thresholds(**thresholds)
    final = out or default_output(checkpoint, fmt, raw=raw)
    onnx_path = final if fmt.name == "onnx" else sibling(final, ".onnx")
    written = [
        export_onnx(
            source.detector,
            onnx_path,
            opset=_or(opset, defaults.opset),
            raw=raw,
            simplify=not no_simplify,
            provenance=source.provenance,
            **thresholds,
        )
    ]
    images = None
    if not no_parity:
        from sadc.export.parity import parity_images as load_parity_images
        from sadc.export.parity import run_parity

        folder = parity_images or source.default_parity_folder()
        console.print(f"parity: torch vs ONNX Runtime on {PARITY_IMAGES} {'images from ' + str(folder) if folder else 'random images'}")
        images = load_parity_images(source.detector.spec, folder, n=PARITY_IMAGES)
        report = run_parity(source.detector, onnx_path, images=images)
        console.print(report.table())
        report.raise_if_failed()

    engine_onnx = onnx_path
    if calib is not None:
        from sadc.export.quantize import quantize_int8

        int8_path = final if fmt.name == "int8" else sibling(final, ".int8.onnx")
        quantize_int8(
            onnx_path,
            int8_path,
            calib,
            n=_or(calib_images, 64),
            method=_or(method, Method.entropy).value,
            batch=_or(calib_batch, 8),
            target=_or(int8_target, Int8Target.tensorrt).value,
        )
        written.append(int8_path)
        engine_onnx = int8_path
        if images is not None:  # INT8 is judged by mAP; its parity is reported, not enforced
            from sadc.export.parity import run_parity

            report = run_parity(source.detector, int8_path, images=images, tolerance=None, compare_raw=False, match_iou=0.5)
            console.print(report.table())
        if val is not None:
            _report_map_change(onnx_path, int8_path, val, max_map_drop)

    if fmt.needs_cuda:
        written.append(
            trt_export.build_engine(
                engine_onnx,
                final,
                precision="int8" if calib is not None else ("fp16" if half else "fp32"),
                min_batch=profile.min,
                opt_batch=profile.opt,
                max_batch=profile.max,
                workspace_gb=_or(workspace, 4.0),
                timing_cache=timing_cache,
            )
        )
    for path in written:
        console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.1f} MB) + {path.name}.json")


def _or(value, default):
    """The flag's value when given, else the default (0 and False are values, not absence)."""
    return default if value is None else value


def _report_map_change(fp32: Path, int8: Path, val: Path, max_map_drop: float | None) -> None:
    from rich.table import Table

    from sadc.export.quantize import map_change

    scores = map_change(fp32, int8, val, console=console)
    table = Table(title=f"INT8 accuracy on {val}")
    for col in ("model", "mAP", "AP50", "AP75"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, s in scores.items():
        table.add_row(name, *(f"{s[k]:.4f}" for k in ("mAP", "AP50", "AP75")))
    drop = scores["fp32"]["mAP"] - scores["int8"]["mAP"]
    table.caption = f"mAP change {scores['int8']['mAP'] - scores['fp32']['mAP']:+.4f}"
    console.print(table)
    if max_map_drop is not None and drop > max_map_drop:
        raise SadcError(
            f"INT8 mAP {scores['int8']['mAP']:.4f} is {drop:.4f} below fp32 {scores['fp32']['mAP']:.4f} "
            f"(--max-map-drop {max_map_drop}): calibrate on more or more representative images (--calib, "
            "--calib-images), try --method percentile, or ship fp32/fp16"
        )


export.__doc__ = (
    "Export a checkpoint to ONNX, INT8 ONNX or a TensorRT engine, with a JSON sidecar, "
    "checked against torch (parity) after every export.\n\n"
    + formats_help_text()
)
