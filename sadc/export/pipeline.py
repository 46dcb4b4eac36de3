"""The export pipeline behind ``sadc export``, callable from Python with the same result.

    checkpoint or torchvision:NAME -> fp32 ONNX deploy graph (+ sidecar) -> gate (parity vs torch)
       -> [int8]   QDQ graph calibrated on --calib (ranges cached) -> gate (parity report, mAP with --val)
       -> [engine] the graph for the engine (fp32, fp16, QDQ; ONNX NMS or EfficientNMS)
                   -> TensorRT engine -> gate (parity vs torch, mAP with --val)

Every artefact goes through :func:`sadc.export.gate.gate_artefact`, which records the
outcome in its sidecar (``verification``) and fails the export when a check fails.

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
    int8_target: str = _flag("--int8-target", default="auto")
    val: Path | None = _flag("--val", default=None)
    max_map_drop: float | None = _flag("--max-map-drop", default=None)
    half: bool = _flag("--half", default=False)
    min_batch: int = _flag("--min-batch", default=1)
    opt_batch: int = _flag("--opt-batch", default=8)
    max_batch: int = _flag("--max-batch", default=16)
    workspace: float = _flag("--workspace", default=4.0)
    timing_cache: Path | None = _flag("--timing-cache", default=None)
    nms: str = _flag("--nms", default="onnx")
    input_size: str | None = _flag("--input-size", default=None)  # torchvision:NAME sources: N or H,W

    def __post_init__(self) -> None:
        for name in ("out", "parity_images", "calib", "val", "timing_cache"):  # str paths from Python callers
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    def changed_flags(self) -> list[str]:
        """The flags of the fields that differ from their defaults, in declaration order."""
        return [f.metadata["flag"] for f in fields(self) if getattr(self, f.name) != f.default]

    def check(self, fmt: ExportFormat, checkpoint: Path | str) -> None:
        """One-line :class:`SadcError` for options that cannot work together or files that are not there."""
        check_options(fmt, self.changed_flags())
        if fmt.name == "int8" and self.calib is None:
            raise SadcError("--format int8 needs --calib DIR: a folder of unlabeled images like the deployment data")
        if self.half and self.calib is not None:
            raise SadcError("--half and --calib: an engine is fp16 or INT8 (from the QDQ graph), not both")
        if self.max_map_drop is not None and self.val is None:
            raise SadcError("--max-map-drop needs --val VAL.json to measure the mAP change")
        from sadc.export.efficient_nms import NMS_CHOICES
        from sadc.export.quantize import TARGET_CHOICES

        if self.nms not in NMS_CHOICES:
            raise SadcError(f"--nms {self.nms}: choose one of {', '.join(NMS_CHOICES)}")
        if self.int8_target not in TARGET_CHOICES:
            raise SadcError(f"--int8-target {self.int8_target}: choose one of {', '.join(TARGET_CHOICES)}")
        if is_torchvision(checkpoint):
            from sadc.models.torchvision_zoo import parse_input_size, torchvision_spec

            torchvision_spec(str(checkpoint), parse_input_size(self.input_size, str(checkpoint)))  # name and size, now
        elif not Path(checkpoint).is_file():
            raise SadcError(f"{checkpoint}: checkpoint not found")
        if self.calib is not None and not self.calib.is_dir():
            raise SadcError(f"--calib {self.calib}: folder not found (unlabeled images to calibrate on)")
        if self.val is not None and not self.val.exists():
            raise SadcError(
                f"--val {self.val}: not found (a COCO json, a YOLO data.yaml or a VOC folder, e.g. data/synth/val.json)"
            )
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
    """What an export wrote (fp32 ONNX first, then intermediates, then the final artefact) and what it measured."""

    written: list[Path] = field(default_factory=list)
    parity: list[ParityReport] = field(default_factory=list)  # in the order of the gated artefacts
    map_scores: dict[str, dict[str, float]] | None = None  # {"reference": fp32 ONNX, "artefact": final} with --val
    int8_target: str | None = None  # the resolved --int8-target, with an INT8 graph


def is_torchvision(source) -> bool:
    return str(source).startswith("torchvision:")


def export_checkpoint(
    checkpoint: Path | str, fmt: str | ExportFormat, options: ExportOptions = ExportOptions(), *, console: Console | None = None
) -> ExportResult:
    """Export ``checkpoint`` (a sadc .pt, or ``torchvision:NAME`` with ``options.input_size``) as ``fmt``.

    Every file gets a JSON sidecar (and ONNX files the same content inside) and goes
    through the gate (:mod:`sadc.export.gate`): parity against torch unless
    ``options.parity`` is False, mAP against the fp32 ONNX graph with ``options.val``.
    A failed gate raises :class:`~sadc.export.gate.GateError` after marking the file's
    sidecar ``verification.status = "failed"``. ``console`` receives progress, tables and
    the written files (None: silent). Raises :class:`SadcError` in one line for bad
    options before any work.
    """
    from rich.console import Console

    console = console or Console(quiet=True)
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    options.check(fmt, checkpoint)
    profile = host = None
    if fmt.needs_cuda:  # fail in seconds, not after the ONNX export
        from sadc.export import tensorrt as trt_export

        profile = trt_export.BatchProfile(options.min_batch, options.opt_batch, options.max_batch)
        trt_export.check_workspace(options.workspace)
        host = trt_export.import_tensorrt()

    from sadc.export.gate import RULES, gate_artefact, not_checked
    from sadc.export.onnx import export_onnx, load_export_source

    source = load_export_source(checkpoint if is_torchvision(checkpoint) else Path(checkpoint), options.input_size)
    recipe = _recipe_export(source.recipe_export)
    post = options.postprocess(recipe.postprocess())
    if fmt.needs_cuda:
        trt_export.check_topk(post, options.nms)
    opset = _or(options.opset, recipe.opset)
    anchor = Path(str(checkpoint).split(":", 1)[1]) if is_torchvision(checkpoint) else Path(checkpoint)
    final = options.out or default_output(anchor, fmt, raw=options.raw)
    onnx_path = final if fmt.name == "onnx" else sibling(final, ".onnx")
    result = ExportResult()

    def onnx_graph(path: Path, **kw) -> Path:
        out = export_onnx(
            source.detector, path, opset=opset, post=post, simplify=options.simplify, provenance=source.provenance, **kw
        )
        result.written.append(out)
        return out

    def gate(artefact: Path, rule, **kw) -> None:
        if images is None and "val" not in kw:
            not_checked(artefact, "--no-parity")
            return
        report, scores = gate_artefact(source.detector, artefact, rule, images=images, console=console, **kw)
        if report is not None:
            result.parity.append(report)
        if scores is not None:
            result.map_scores = scores

    onnx_graph(onnx_path, raw=options.raw)
    images = None
    if options.parity:
        from sadc.export.parity import parity_images

        folder = options.parity_images or source.default_parity_folder()
        console.print(
            f"parity: torch vs ONNX Runtime on {PARITY_IMAGES} {'images from ' + str(folder) if folder else 'random images'}"
        )
        images = parity_images(source.detector.spec, folder, n=PARITY_IMAGES)
    gate(onnx_path, RULES[("onnx", "fp32")])
    val = {"val": options.val, "reference": onnx_path, "max_map_drop": options.max_map_drop} if options.val else {}

    if fmt.name == "int8":
        int8_path = _quantize(onnx_path, final, options, result, console, to_engine=False)
        gate(int8_path, RULES[("onnx", "int8")], **val)
    elif fmt.name == "engine":
        from sadc.export import tensorrt as trt_export
        from sadc.runtime.trt_rt import TrtPredictor

        assert host is not None and profile is not None  # set above for the engine format
        precision = "int8" if options.calib is not None else ("fp16" if options.half else "fp32")
        graph = _engine_graph(precision, onnx_path, final, options, host, result, console, onnx_graph, gate, post)
        console.print(
            f"TensorRT {host.version} on {host.gpu}: building a {precision} engine from {graph.name} (NMS: {options.nms})"
        )
        result.written.append(
            trt_export.build_engine(
                graph,
                final,
                precision=precision,
                min_batch=profile.min,
                opt_batch=profile.opt,
                max_batch=profile.max,
                workspace_gb=options.workspace,
                timing_cache=options.timing_cache,
            )
        )
        engine = TrtPredictor(final, device=str(host.device) if host.device.type == "cuda" else "cuda")
        gate(final, RULES[("engine", precision)], predictor=engine, **val)
    for path in result.written:
        console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.1f} MB) + {path.name}.json")
    return result


def _engine_graph(
    precision, onnx_path: Path, final: Path, options: ExportOptions, host, result, console, onnx_graph, gate, post
) -> Path:
    """The ONNX graph the engine is built from, written and gated on the way.

    --nms onnx: the fp32 deploy graph (fp32; fp16 on TensorRT 10 with its FP16 flag),
    the fp16 graph (fp16 on TensorRT 11), or the QDQ graph (int8). --nms efficient: the
    raw graph in the same precision with EfficientNMS_TRT appended.
    """
    from sadc.export.efficient_nms import export_efficient_nms
    from sadc.export.gate import RULES

    fp16_graph = precision == "fp16" and not host.has_fp16_flag()
    if fp16_graph:
        console.print(f"fp16: TensorRT {host.version} has no FP16 builder flag: strongly typed network from the fp16 graph")
    if options.nms == "onnx":
        if precision == "int8":
            return _quantize(onnx_path, final, options, result, console, to_engine=True)
        if fp16_graph:
            fp16 = onnx_graph(sibling(final, ".fp16.onnx"), half=True)
            gate(fp16, RULES[("onnx", "fp16")])
            return fp16
        return onnx_path
    if precision == "int8":
        raw = onnx_graph(sibling(final, ".raw.onnx"), raw=True)
        raw = _quantize(raw, sibling(final, ".int8.raw.onnx"), options, result, console, to_engine=True)
        tag = ".int8"
    else:
        raw = onnx_graph(sibling(final, ".fp16.raw.onnx" if fp16_graph else ".raw.onnx"), raw=True, half=fp16_graph)
        tag = ".fp16" if fp16_graph else ""
    graph = export_efficient_nms(raw, sibling(final, f"{tag}.efficientnms.onnx"), post)
    result.written.append(graph)
    return graph


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


def _quantize(fp32_graph: Path, out: Path, options: ExportOptions, result: ExportResult, console, *, to_engine: bool) -> Path:
    """The INT8 QDQ graph of ``fp32_graph`` at ``out`` (``final`` for -f int8, else ``.int8.onnx`` beside it).

    The calibration cache is ``<stem>.calib.json`` beside the final artefact, shared by
    every INT8 export of the same stem.
    """
    from sadc.export.quantize import quantize_int8, resolve_target

    target, why = resolve_target(str(options.int8_target), to_engine=to_engine)
    result.int8_target = target
    console.print(f"int8 target: {target} ({why})")
    if target == "cpu":
        from sadc.engine.machine import NO_INT8_DOT, int8_dot_products

        if int8_dot_products() == []:  # None: flags unreadable, nothing to say
            console.print(f"note: {NO_INT8_DOT} here; sadc bench times both (run it on the machine you deploy to)")
    int8_path = (
        out if Path(out).name.endswith(".int8.onnx") or Path(out).name.endswith(".int8.raw.onnx") else sibling(out, ".int8.onnx")
    )
    stem_of = out if not Path(out).name.endswith(".int8.raw.onnx") else Path(str(out).removesuffix(".int8.raw.onnx"))
    assert options.calib is not None  # check_options requires --calib for int8 and engine
    quantize_int8(
        fp32_graph,
        int8_path,
        options.calib,
        n=options.calib_images,
        method=str(options.method),
        batch=options.calib_batch,
        target=target,
        cache=sibling(stem_of, ".calib.json"),
    )
    from sadc.artefacts.sidecar import read_sidecar, update_sidecar

    quant = read_sidecar(int8_path)["quantization"]
    update_sidecar(int8_path, {"quantization": {**quant, "target_choice": why}})
    cache = quant.get("calibration_cache") or {}
    if cache.get("file"):
        console.print(
            f"calibration: {'ranges reused from' if cache.get('reused') else 'ranges computed, kept in'} {cache['file']}"
        )
    result.written.append(int8_path)
    return int8_path
