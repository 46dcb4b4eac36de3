"""`sadc predict`: run any artefact on image files; draw the boxes and write COCO results.

Wiring around :func:`sadc.runtime.annotate.annotate_images`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import console, handle_errors


def default_out(model: Path, root: Path = Path("runs/predict")) -> Path:
    """``runs/predict/FOLDER-STEM`` of the model (``runs/predict/student-best``), numbered when taken."""
    from sadc.engine.rundir import next_free_dir

    model = Path(model)
    name = f"{model.parent.name}-{model.stem}" if model.parent.name else model.stem
    return next_free_dir(root / name)


@handle_errors
def predict(
    model: Annotated[
        Path,
        typer.Argument(
            help="Artefact: sadc checkpoint (.pt), ONNX export (.onnx), TensorRT engine (.engine) or torchvision:NAME (with --input-size)."
        ),
    ],
    images: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or glob patterns.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the drawn images and detections.json (default: runs/predict/NAME, NAME from the model's folder and file, numbered when taken).",
            show_default=False,
        ),
    ] = None,
    conf: Annotated[
        float, typer.Option(help="Keep detections with score >= this (the artefact's own threshold applies first).")
    ] = 0.3,
    batch: Annotated[int, typer.Option(help="Images per forward pass.")] = 8,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda, cuda:N or N; auto = CUDA when present (a TensorRT engine always uses CUDA).")
    ] = "auto",
    input_size: Annotated[
        str | None, typer.Option("--input-size", help="torchvision:NAME models: letterbox size N or H,W.")
    ] = None,
) -> None:
    """Detect objects in images: draw labelled boxes on the originals and write COCO results.

    detections.json is a COCO results list (image_id = position of the image in the
    input order, from 1; category_id = class index + 1; bbox = x, y, w, h in original
    pixels) with file_name and category_name added.
    """
    from sadc.devices import parse_device
    from sadc.runtime.inputs import check_options, expand_inputs
    from sadc.runtime.load import check_model_file

    # Every argument is checked before torch is imported (seconds): a mistake is one line at once.
    check_options(conf, batch)
    device = parse_device(device)
    check_model_file(model)
    inputs, many = expand_inputs(images)
    from sadc.runtime.annotate import annotate_images
    from sadc.runtime.load import load_predictor

    predictor = load_predictor(model, device=device, input_size=input_size)
    out = out if out is not None else default_out(model)
    summary = annotate_images(predictor, inputs, out, conf=conf, batch=batch, console=console, progress=many)
    if summary.skipped:
        console.print(f"[yellow]skipped {len(summary.skipped)} unreadable images[/] (listed in {summary.skip_list})")
    console.print(f"{summary.images} images, {summary.detections} detections (score >= {conf}) -> {out}/ and {summary.results}")
