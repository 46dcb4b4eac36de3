"""The one table of export formats.

It drives validation of ``sadc export`` flags (a flag a format does not take is an
error naming the formats that do), the choices and help of ``--format``, and the
formats table of docs/export.md, which a test keeps current::

    python -m sadc.export.formats --write docs/export.md   # regenerate the table section
    python -m sadc.export.formats                          # print it
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sadc.errors import SadcError


@dataclass(frozen=True)
class ExportFormat:
    """One row: what ``--format NAME`` writes and which flags it takes beyond :data:`COMMON_OPTIONS`."""

    name: str
    suffix: str
    needs_cuda: bool
    options: tuple[str, ...]
    description: str


COMMON_OPTIONS: tuple[str, ...] = (
    "--out",
    "--opset",
    "--max-det",
    "--topk",
    "--iou",
    "--conf",
    "--no-simplify",
    "--no-parity",
    "--parity-images",
    "--input-size",
)
"""Flags every format takes: each format starts with the fp32 ONNX deploy graph."""

_CALIB = ("--calib", "--calib-images", "--calib-batch", "--method")
_PROFILE = ("--min-batch", "--opt-batch", "--max-batch", "--workspace", "--timing-cache")

FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat(
        name="onnx",
        suffix=".onnx",
        needs_cuda=False,
        options=("--raw",),
        description="fp32 ONNX deploy graph: uint8 images in, EfficientNMS-layout detections out "
        "(--raw: dense scores and boxes, no NMS, written as .raw.onnx). Runs in ONNX Runtime and TensorRT.",
    ),
    ExportFormat(
        name="int8",
        suffix=".int8.onnx",
        needs_cuda=False,
        options=(*_CALIB, "--int8-target", "--val", "--max-map-drop"),
        description="INT8 QDQ ONNX: static post-training quantization of the network part (ONNX Runtime), "
        "calibrated on unlabeled images (--calib, required; ranges kept in best.calib.json for the next export); "
        "decode and NMS stay fp32. --int8-target auto (default: tensorrt where CUDA + TensorRT are present, "
        "else cpu), tensorrt (symmetric S8S8, TensorRT's explicit quantization) or cpu (U8S8, ONNX Runtime's "
        "fast CPU path). --val scores fp32 and INT8 mAP side by side; --max-map-drop gates on it.",
    ),
    ExportFormat(
        name="engine",
        suffix=".engine",
        needs_cuda=True,
        options=("--half", *_CALIB, "--nms", "--val", "--max-map-drop", *_PROFILE),
        description="TensorRT engine (TensorRT >= 10, CUDA GPU): fp32, fp16 (--half; TensorRT 11: from the fp16 graph, "
        "strongly typed) or INT8 from the QDQ graph (--calib). --nms onnx (default: ONNX NonMaxSuppression) or "
        "efficient (TensorRT's EfficientNMS_TRT plugin). Checked like every artefact: parity vs torch, and mAP "
        "with --val. Tied to the GPU model and TensorRT version that built it.",
    ),
)

FORMAT_NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS)
_ALL_SUFFIXES = (".raw.onnx", *sorted({f.suffix for f in FORMATS}, key=len, reverse=True))


def get_format(name: str) -> ExportFormat:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise SadcError(f"--format {name}: unknown format (choose one of {', '.join(FORMAT_NAMES)})")


def check_options(fmt: ExportFormat, given: Iterable[str]) -> None:
    """Raise :class:`SadcError` for the first flag in ``given`` that ``fmt`` does not take."""
    allowed = set(COMMON_OPTIONS) | set(fmt.options)
    for flag in given:
        if flag not in allowed:
            takers = [f.name for f in FORMATS if flag in f.options]
            where = f"--format {' / '.join(takers)}" if takers else "no format"
            raise SadcError(f"{flag} does not apply to --format {fmt.name}; it applies to {where}")


def artefact_stem(path: Path) -> Path:
    """``runs/x/best.int8.onnx`` -> ``runs/x/best`` (strips any export or checkpoint suffix)."""
    path = Path(path)
    for suffix in (*_ALL_SUFFIXES, ".pt", ".pth"):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path.with_suffix("")


def default_output(checkpoint: Path, fmt: ExportFormat, *, raw: bool = False) -> Path:
    """Next to the checkpoint: best.pt -> best.onnx / best.raw.onnx / best.int8.onnx / best.engine."""
    return sibling(checkpoint, ".raw.onnx" if raw else fmt.suffix)


def check_output(fmt: ExportFormat, out: Path) -> None:
    """Refuse an ``--out`` whose name would collide with the format's intermediate files."""
    name = Path(out).name
    if fmt.name == "onnx" and not name.endswith(".onnx"):
        raise SadcError(f"--out {out}: an onnx export is a .onnx file")
    if fmt.name == "int8" and not name.endswith(".int8.onnx"):
        raise SadcError(f"--out {out}: an int8 export ends in .int8.onnx (the fp32 graph is written beside it as .onnx)")
    if fmt.name == "engine" and name.endswith(".onnx"):
        raise SadcError(f"--out {out}: an engine is not a .onnx file (its ONNX is written beside it); use e.g. .engine")


def sibling(path: Path, suffix: str) -> Path:
    """The artefact of the same stem with ``suffix``: where a format's intermediate files go."""
    stem = artefact_stem(path)
    return stem.with_name(stem.name + suffix)


def formats_help() -> str:
    """One line per format, for ``--format``'s help."""
    return "; ".join(f"{f.name} ({f.suffix}{', CUDA' if f.needs_cuda else ''})" for f in FORMATS)


def formats_help_text() -> str:
    """The formats as paragraphs, for the command's ``--help``."""
    paragraphs = [
        f"{f.name} -> {f.suffix}{' (CUDA)' if f.needs_cuda else ''}: {f.description}"
        + (f" Options: {' '.join(f.options)}." if f.options else "")
        for f in FORMATS
    ]
    return "\n\n".join(paragraphs)


def formats_markdown() -> str:
    """The formats table of docs/export.md (between the ``formats:`` markers)."""
    lines = [
        "| format | writes | needs CUDA | options (besides the common ones) | what it is |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in FORMATS:
        options = ", ".join(f"`{o}`" for o in f.options)
        lines.append(f"| `{f.name}` | `best{f.suffix}` | {'yes' if f.needs_cuda else 'no'} | {options} | {f.description} |")
    lines += ["", "Common options: " + ", ".join(f"`{o}`" for o in COMMON_OPTIONS) + "."]
    return "\n".join(lines) + "\n"


START, END = "<!-- formats:start (generated by python -m sadc.export.formats --write) -->", "<!-- formats:end -->"


def docs_section(text: str) -> str:
    """The generated section of a docs page (between the markers), or SadcError."""
    if START not in text or END not in text:
        raise SadcError("docs page lacks the formats markers; add them around the formats table")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write_docs(path: Path) -> bool:
    """Regenerate the formats section of ``path``; True when it changed."""
    text = Path(path).read_text()
    before, found, rest = text.partition(START)
    if not found or END not in rest:
        raise SadcError(f"{path}: lacks the formats markers {START} ... {END}")
    after = rest.split(END, 1)[1]
    new = f"{before}{START}\n{formats_markdown()}{END}{after}"
    if new != text:
        Path(path).write_text(new)
    return new != text


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        print("updated" if write_docs(Path(sys.argv[2])) else "up to date")
    else:
        sys.stdout.write(formats_markdown())
