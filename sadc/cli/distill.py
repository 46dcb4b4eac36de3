"""`sadc distill` and `sadc pseudo-label`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import OverridesArg, console, handle_errors, overrides_list
from sadc.recipe import load_recipe


@handle_errors
def distill(
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="YAML recipe with model.teacher and model.student.")],
    overrides: OverridesArg = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in output/name from its last.pt (no-op if finished).")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Build everything with random weights, run one step on random images in a temporary folder, "
            "remove it: nothing is written under output/.",
        ),
    ] = False,
) -> None:
    """Distil the teacher into the student with SAD (ADL + pseudo boxes on unlabeled images)."""
    loaded = load_recipe(recipe, overrides_list(overrides))  # a bad recipe is one line before torch is imported
    from sadc.distill.run import run_distill

    run_distill(loaded, resume=resume, console=console, dry_run=dry_run, recipe_file=recipe)


@handle_errors
def pseudo_label(
    teacher: Annotated[Path, typer.Argument(help="Teacher: a sadc checkpoint, or torchvision:NAME with --input-size.")],
    images: Annotated[Path, typer.Argument(help="Folder of unlabeled images (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="COCO json to write (usable as data.train).")],
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Keep teacher detections scoring at least this.")] = 0.4,
    batch: Annotated[int, typer.Option(min=1, help="Images per forward.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or N; auto = CUDA when present.")] = "auto",
    input_size: Annotated[
        str | None, typer.Option("--input-size", help="torchvision:NAME teachers: letterbox size N or H,W.")
    ] = None,
) -> None:
    """Run a teacher over a folder and write its detections as a labeled COCO set (offline SAD)."""
    from sadc.distill.pseudo import pseudo_label_folder

    summary = pseudo_label_folder(
        teacher, images, out, threshold=threshold, batch_size=batch, device=device, console=console, input_size=input_size
    )
    if summary["skipped"]:
        console.print(f"[yellow]skipped {summary['skipped']} unreadable images[/] (listed in {summary['skipped_list']})")
    console.print(
        f"[bold green]wrote[/] {out}: {summary['images']} images, {summary['boxes']} boxes "
        f"(score >= {threshold}); images folder {images}"
    )
