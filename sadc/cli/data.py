"""`sadc data ...`: make the synthetic world and look at datasets."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import console, handle_errors

app = typer.Typer(help="Make and inspect datasets.", no_args_is_help=True)


class Layout(str, Enum):
    auto = "auto"
    coco = "coco"
    yolo = "yolo"
    voc = "voc"


FormatOpt = Annotated[Layout, typer.Option("--format", help="Layout of the labeled set; auto detects it.")]


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
    shift: Annotated[bool, typer.Option(help="Unlabeled images from a shifted distribution, in OUT/unlabeled-shift.")] = False,
    layouts: Annotated[
        str,
        typer.Option(
            "--layouts", help="Labeled layouts to write, comma-separated: coco (always), yolo (OUT/yolo), voc (OUT/voc)."
        ),
    ] = "coco",
) -> None:
    """Write a synthetic shapes world: OUT/train(.json), OUT/val(.json), OUT/test(.json), OUT/unlabeled; with --layouts also OUT/yolo/data.yaml and OUT/voc/."""
    from rich.progress import TaskID

    from sadc.data.formats import parse_layouts, write_layouts
    from sadc.data.synth import make_synthetic_world
    from sadc.progress import progress_bar

    wanted = parse_layouts(layouts)
    bar = progress_bar(console, transient=False)
    tasks: dict[str, TaskID] = {}

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
    console.print(f"[green]{out}[/]: {'; '.join(parts)}; classes {', '.join(summary['classes'])} ({summary['seconds']:.1f}s)")
    written = write_layouts(out, wanted)
    if written:
        console.print("the labeled splits also as: " + ", ".join(f"[green]{path}[/]" for path in written))


@app.command()
@handle_errors
def preview(
    annotations: Annotated[
        Path, typer.Argument(help="Labeled set: COCO json (e.g. data/synth/val.json), YOLO data.yaml or VOC folder.")
    ],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("preview.png"),
    images: Annotated[
        Path | None, typer.Option(help="COCO only: image folder of the json (default: the json's path without .json).")
    ] = None,
    fmt: FormatOpt = Layout.auto,
    split: Annotated[str, typer.Option(help="YOLO/VOC: the split to draw (train, val, ...).")] = "val",
    n: Annotated[int, typer.Option(min=1, help="Images in the grid.")] = 16,
    cell: Annotated[int, typer.Option(min=32, help="Side of one grid cell in pixels.")] = 256,
) -> None:
    """Draw ground-truth boxes of the first N images into one grid PNG."""
    from sadc.data.formats import detect_format

    if fmt == Layout.auto:
        detect_format(annotations)  # a wrong path is one line before torch is imported
    from PIL import Image

    from sadc.data.formats import open_labeled
    from sadc.data.preview import preview_grid

    dataset = open_labeled(annotations, (cell, cell), split=split, fmt=fmt.value, images=images)
    grid = preview_grid(dataset, n)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(out)
    console.print(f"[green]{out}[/]: {min(n, len(dataset))} images of {annotations} with their boxes")


class Target(str, Enum):
    coco = "coco"
    yolo = "yolo"
    voc = "voc"


@app.command()
@handle_errors
def convert(
    src: Annotated[Path, typer.Argument(help="Labeled set: COCO json, YOLO data.yaml (or its folder) or VOC folder.")],
    out: Annotated[Path, typer.Argument(help="Output folder (created); images are hard-linked (copied across file systems).")],
    to: Annotated[Target, typer.Option("--to", help="Layout to write.")],
    fmt: FormatOpt = Layout.auto,
    images: Annotated[Path | None, typer.Option(help="COCO only: image folder of the json.")] = None,
) -> None:
    """Write every split of SRC as COCO (OUT/SPLIT.json + OUT/SPLIT/), YOLO (OUT/data.yaml) or VOC files."""
    from sadc.data.formats import convert as convert_set

    written = convert_set(src, to.value, out, fmt=fmt.value, images=images)
    console.print(f"[green]{out}[/]: {src} as {to.value} ({', '.join(str(p) for p in written)})")
