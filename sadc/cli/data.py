"""`sadc data ...`: make the synthetic world and look at datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import console, handle_errors

app = typer.Typer(help="Make and inspect datasets.", no_args_is_help=True)


@app.command()
@handle_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (created).")],
    train: Annotated[int, typer.Option(min=0, help="Labeled training images.")] = 1000,
    val: Annotated[int, typer.Option(min=0, help="Labeled validation images (choose settings on these).")] = 200,
    test: Annotated[int, typer.Option(min=0, help="Labeled held-out test images (report on these).")] = 200,
    unlabeled: Annotated[int, typer.Option(min=0, help="Unlabeled images.")] = 4000,
    size: Annotated[int, typer.Option(min=32, help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed; same seed and counts give identical files.")] = 0,
    shift: Annotated[
        bool, typer.Option(help="Unlabeled images from a shifted distribution, in OUT/unlabeled-shift.")
    ] = False,
) -> None:
    """Write a synthetic shapes world: OUT/train(.json), OUT/val(.json), OUT/test(.json), OUT/unlabeled."""
    from sadc.data.synth import make_synthetic_world
    from sadc.progress import progress_bar

    bar = progress_bar(console, transient=False)
    tasks: dict[str, object] = {}

    def progress(split: str, done: int, total: int) -> None:
        if split not in tasks:
            tasks[split] = bar.add_task(split, total=total)
        bar.update(tasks[split], completed=done)

    with bar:
        summary = make_synthetic_world(
            out, train=train, val=val, test=test, unlabeled=unlabeled, size=size, seed=seed, shift=shift, progress=progress
        )
    if summary["reused"]:
        console.print(f"{out}: reusing {', '.join(summary['reused'])} (made earlier with the same arguments)")
    parts = [
        f"{name} {s['images']} images" + (f" / {s['boxes']} boxes" if s["boxes"] is not None else "")
        for name, s in summary["splits"].items()
    ]
    console.print(
        f"[green]{out}[/]: {'; '.join(parts)}; classes {', '.join(summary['classes'])} ({summary['seconds']:.1f}s)"
    )


@app.command()
@handle_errors
def preview(
    annotations: Annotated[Path, typer.Argument(help="COCO json, e.g. data/synth/val.json.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("preview.png"),
    images: Annotated[
        Path | None, typer.Option(help="Image folder of the json (default: the json's path without .json).")
    ] = None,
    n: Annotated[int, typer.Option(min=1, help="Images in the grid.")] = 16,
    cell: Annotated[int, typer.Option(min=32, help="Side of one grid cell in pixels.")] = 256,
) -> None:
    """Draw ground-truth boxes of the first N images into one grid PNG."""
    from PIL import Image

    from sadc.data.coco import CocoDataset, default_images_dir
    from sadc.data.preview import preview_grid

    folder = images if images is not None else default_images_dir(annotations)
    dataset = CocoDataset(annotations, folder, (cell, cell))
    grid = preview_grid(dataset, n)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(out)
    console.print(f"[green]{out}[/]: {min(n, len(dataset))} images of {annotations} with their boxes")

