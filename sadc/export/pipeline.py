"""The export pipeline behind ``sadc export``, callable from Python with the same result.

    checkpoint -> fp32 ONNX deploy graph (+ sidecar) -> parity vs torch
               -> [int8]   QDQ graph calibrated on --calib -> parity report, fp32 vs INT8 mAP (--val)
               -> [engine] TensorRT engine from the fp32 or QDQ graph

:func:`export_checkpoint` takes the checkpoint, a format of :data:`~sadc.export.formats.FORMATS`
and one :class:`ExportOptions`; every stage is one call into :mod:`sadc.export`. Heavy
imports (torch, onnx, tensorrt) happen inside the function, so the CLI can read
:class:`ExportOptions`' defaults without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sadc.errors import SadcError
from sadc.export.formats import (
    ExportFormat,
    check_options,
    check_output,
    default_output,
    get_format,
    sibling,
)

if TYPE_CHECKING:
    from rich.console import Console

    from sadc.artefacts.postprocess import PostProcess
    from sadc.export.parity import ParityReport

PARITY_IMAGES = 32
"""Images of the parity check after every export."""


def _flag(name: str, **kw: Any) -> Any:
    return field(metadata={"flag": name}, **kw)


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``sadc export`` takes besides the checkpoint and the format (the flag of each field in brackets).

    ``None`` thresholds and opset come from the checkpoint's recipe (``export:``
    section), else sadc's defaults. Fields a format does not take (see the formats
    table) must keep their defaults.
    """

    out: Path | None = _flag("--out", default=None)  # default: next to the checkpoint
    opset: int | None = _flag("--opset", default=None)
    max_detections: int | None = _flag("--max-det", default=None)
    topk_candidates: int | None = _flag("--topk", default=None)
    iou_threshold: float | None = _flag("--iou", default=None)
    score_threshold: float | None = _flag("--conf", default=None)
    raw: bool = _flag("--raw", default=False)
    simplify: bool = _flag("--no-simplify", default=True)
    parity: bool = _flag("--no-parity", default=True)
    parity_images: Path | None = _flag("--parity-images", default=None)  # default: recipe's val/unlabeled, else noise
    calib: Path | None = _flag("--calib", default=None)
    calib_images: int = _flag("--calib-images", default=64)
    calib_batch: int = _flag("--calib-batch", default=8)
    method: str = _flag("--method", default="entropy")
    int8_target: str = _flag("--int8-target", default="tensorrt")
    val: Path | None = _flag("--val", default=None)
    max_map_drop: float | None = _flag("--max-map-drop", default=None)
    half: bool = _flag("--half", default=False)
    min_batch: int = _flag("--min-batch", default=1)
    opt_batch: int = _flag("--opt-batch", default=8)
    max_batch: int = _flag("--max-batch", default=16)
    workspace: float = _flag("--workspace", default=4.0)
    timing_cache: Path | None = _flag("--timing-cache", default=None)

    def __post_init__(self) -> None:
        for name in ("out", "parity_images", "calib", "val", "timing_cache"):  # str paths from Python callers
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    def changed_flags(self) -> list[str]:
        """The flags of the fields that differ from their defaults, in declaration order."""
        return [f.metadata["flag"] for f in fields(self) if getattr(self, f.name) != f.default]

    def check(self, fmt: ExportFormat, checkpoint: Path) -> None:
        """One-line :class:`SadcError` for options that cannot work together or files that are not there."""
        check_options(fmt, self.changed_flags())
        if fmt.name == "int8" and self.calib is None:
            raise SadcError("--format int8 needs --calib DIR: a folder of unlabeled images like the deployment data")
        if self.half and self.calib is not None:
            raise SadcError("--half and --calib: an engine is fp16 or INT8 (from the QDQ graph), not both")
        if self.max_map_drop is not None and self.val is None:
            raise SadcError("--max-map-drop needs --val VAL.json to measure the mAP change")
        if not Path(checkpoint).is_file():
            raise SadcError(f"{checkpoint}: checkpoint not found")
        if self.calib is not None and not self.calib.is_dir():
            raise SadcError(f"--calib {self.calib}: folder not found (unlabeled images to calibrate on)")
        if self.val is not None and not self.val.exists():
            raise SadcError(f"--val {self.val}: not found (a COCO json, a YOLO data.yaml or a VOC folder, e.g. data/synth/val.json)")
        if self.out is not None:
            check_output(fmt, self.out)

    def postprocess(self, defaults: PostProcess) -> PostProcess:
        """The thresholds: each given field, else ``defaults``' (validated: errors name the flag)."""
        from sadc.artefacts.postprocess import PostProcess

        return PostProcess(
            score_threshold=_or(self.score_threshold, defaults.score_threshold),
            iou_threshold=_or(self.iou_threshold, defaults.iou_threshold),
            max_detections=_or(self.max_detections, defaults.max_detections),
            topk_candidates=_or(self.topk_candidates, defaults.topk_candidates),
        )


@dataclass
class ExportResult:
    """What an export wrote (fp32 ONNX first, then INT8 ONNX, then the engine) and what it measured."""

    written: list[Path] = field(default_factory=list)
    parity: list[ParityReport] = field(default_factory=list)  # fp32 (enforced), then INT8 (reported)
    map_scores: dict[str, dict[str, float]] | None = None  # {"fp32": {...}, "int8": {...}} with --val


def export_checkpoint(
    checkpoint: Path, fmt: str | ExportFormat, options: ExportOptions = ExportOptions(), *, console: Console | None = None
) -> ExportResult:
    """Export ``checkpoint`` (a sadc .pt) as ``fmt`` (onnx, int8 or engine) with ``options``.

    Every file gets a JSON sidecar. The fp32 graph is checked against torch (parity;
    an error when it fails) unless ``options.parity`` is False; INT8 parity is reported
    and INT8 judged by mAP (``options.val``, ``options.max_map_drop``). ``console``
    receives progress, tables and the written files (None: silent). Raises
    :class:`SadcError` in one line for bad options before any work.
    """
    from rich.console import Console

    console = console or Console(quiet=True)
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    checkpoint = Path(checkpoint)
    options.check(fmt, checkpoint)
    profile = None
    if fmt.needs_cuda:  # fail in seconds, not after the ONNX export
        from sadc.export import tensorrt as trt_export

        profile = trt_export.BatchProfile(options.min_batch, options.opt_batch, options.max_batch)
        trt_export.check_workspace(options.workspace)
        trt_export.import_tensorrt()

    from sadc.export.onnx import export_onnx, load_export_source

    source = load_export_source(checkpoint)
    recipe = _recipe_export(source.recipe_export)
    post = options.postprocess(recipe.postprocess())
    final = options.out or default_output(checkpoint, fmt, raw=options.raw)
    onnx_path = final if fmt.name == "onnx" else sibling(final, ".onnx")
    result = ExportResult()
    result.written.append(
        export_onnx(
            source.detector,
            onnx_path,
            opset=_or(options.opset, recipe.opset),
            post=post,
            raw=options.raw,
            simplify=options.simplify,
            provenance=source.provenance,
        )
    )
    images = None
    if options.parity:
        from sadc.export.parity import parity_images, run_parity

        folder = options.parity_images or source.default_parity_folder()
        console.print(f"parity: torch vs ONNX Runtime on {PARITY_IMAGES} {'images from ' + str(folder) if folder else 'random images'}")
        images = parity_images(source.detector.spec, folder, n=PARITY_IMAGES)
        report = run_parity(source.detector, onnx_path, images=images)
        result.parity.append(report)
        console.print(report.table())
        report.raise_if_failed()

    engine_onnx = onnx_path
    if options.calib is not None:
        engine_onnx = _quantize(source.detector, onnx_path, final, fmt, options, images, result, console)

    if profile is not None:
        from sadc.export import tensorrt as trt_export

        result.written.append(
            trt_export.build_engine(
                engine_onnx,
                final,
                precision="int8" if options.calib is not None else ("fp16" if options.half else "fp32"),
                min_batch=profile.min,
                opt_batch=profile.opt,
                max_batch=profile.max,
                workspace_gb=options.workspace,
                timing_cache=options.timing_cache,
            )
        )
    for path in result.written:
        console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.1f} MB) + {path.name}.json")
    return result


def _or(value, default):
    """The option's value when given, else the default (0 and False are values, not absence)."""
    return default if value is None else value


def _recipe_export(section: dict[str, Any]):
    """The checkpoint's recipe ``export:`` section, validated; sadc's defaults for an older/odd one."""
    from pydantic import ValidationError

    from sadc.recipe import ExportSection

    try:
        return ExportSection(**section)
    except (TypeError, ValidationError):
        return ExportSection()


def _quantize(detector, onnx_path: Path, final: Path, fmt: ExportFormat, options: ExportOptions, images, result: ExportResult, console) -> Path:
    """The INT8 stage: QDQ graph, its parity report, and fp32 vs INT8 mAP with ``options.val``."""
    from sadc.export.quantize import quantize_int8

    int8_path = final if fmt.name == "int8" else sibling(final, ".int8.onnx")
    assert options.calib is not None  # check_options requires --calib for int8 and engine
    quantize_int8(
        onnx_path,
        int8_path,
        options.calib,
        n=options.calib_images,
        method=str(options.method),
        batch=options.calib_batch,
        target=str(options.int8_target),
    )
    result.written.append(int8_path)
    if images is not None:  # INT8 is judged by mAP; its parity is reported, not enforced
        from sadc.export.parity import run_parity

        report = run_parity(detector, int8_path, images=images, tolerance=None, compare_raw=False, match_iou=0.5)
        result.parity.append(report)
        console.print(report.table())
    if options.val is not None:
        result.map_scores = _report_map_change(onnx_path, int8_path, options.val, options.max_map_drop, console)
    return int8_path


def _report_map_change(fp32: Path, int8: Path, val: Path, max_map_drop: float | None, console) -> dict[str, dict[str, float]]:
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
    return scores
