"""`sadc bench`: accuracy of artefacts side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import console, handle_errors


@handle_errors
def bench(
    models: Annotated[list[Path], typer.Argument(help="Artefacts to compare: sadc checkpoints (.pt).")],
    data: Annotated[Path, typer.Option("--data", help="COCO json of the labeled val set.")],
    images: Annotated[Path | None, typer.Option(help="Image folder of --data (default: the json's path without .json).")] = None,
    batch: Annotated[int, typer.Option(help="Batch size for the accuracy pass.")] = 8,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    save_detections: Annotated[Path | None, typer.Option(help="Write the first model's detections as COCO results json.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for bench.json.")] = None,
) -> None:
    """Score artefacts on a labeled set (COCO mAP) and print them side by side."""
    from sadc.bench.run import BenchResult, bench_accuracy, default_images_dir, load_predictor, results_table, write_report
    from sadc.errors import SadcError

    if not data.is_file():
        raise SadcError(f"--data {data}: file not found (a COCO json, e.g. data/synth/val.json)")
    images = images or default_images_dir(data)
    results = []
    for i, path in enumerate(models):
        predictor = load_predictor(path, device=device)
        acc = bench_accuracy(
            predictor, data, images, batch_size=batch, save_detections=save_detections if i == 0 else None, console=console
        )
        results.append(BenchResult(predictor.name, str(path), acc))
    console.print(results_table(results))
    if out is not None:
        write_report(results, out)
        console.print(f"report: {out / 'bench.json'}")
