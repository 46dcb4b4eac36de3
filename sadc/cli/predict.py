"""`sadc predict`: run any artefact on image files; draw the boxes and write COCO results.

Wiring around :func:`sadc.runtime.predict_images` (letterbox + predict + boxes
back to original pixels). The helpers below are importable for tests.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from sadc.cli.common import console, handle_errors
from sadc.errors import SadcError

# Box colours by class index (tab10), as RGB.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


@dataclass(frozen=True)
class ImageInput:
    """One image to predict on: its path and its name under --out (relative path for folder inputs)."""

    path: Path
    name: str
    image_id: int = 0  # position in the input order, from 1 (detections.json's image_id)


def expand_inputs(items: list[str]) -> tuple[list[ImageInput], bool]:
    """Files, folders (recursive) and glob patterns -> image inputs in order, names unique.

    Returns (inputs, whether any item was a folder or a pattern). SadcError for an item
    that is neither an image file, a folder nor a pattern matching images.
    """
    from sadc.data.images import find_images, is_image_file

    found: list[tuple[Path, str]] = []
    many = False
    for item in items:
        path = Path(item)
        if path.is_dir():
            many = True
            found += [(p, p.relative_to(path).as_posix()) for p in find_images(path)]
        elif path.is_file():
            if not is_image_file(path):
                raise SadcError(f"{path}: not an image file (expected .jpg, .png, ...)")
            found.append((path, path.name))
        elif glob.has_magic(item):
            many = True
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            matches = [p for p in matches if p.is_file() and is_image_file(p)]
            if not matches:
                raise SadcError(f"{item}: the pattern matches no image files")
            found += [(p, p.name) for p in matches]
        else:
            raise SadcError(f"{item}: no such file or folder")
    if not found:
        raise SadcError(f"{' '.join(items)}: no images found")
    inputs, used = [], set()
    for path, name in found:
        unique, k = name, 1
        while unique in used:  # same file name from two places: x.png, x_1.png, ...
            stem, dot, suffix = name.rpartition(".")
            unique = f"{stem}_{k}.{suffix}" if dot else f"{name}_{k}"
            k += 1
        used.add(unique)
        inputs.append(ImageInput(path, unique, len(inputs) + 1))
    return inputs, many


def read_images(items: list[ImageInput], skipped: list[tuple[Path, str]]) -> tuple[list[ImageInput], list]:
    """Decode ``items`` (uint8 [3, H, W] each); unreadable files are appended to ``skipped`` as (path, reason).

    Returns the readable items and their images, in order.
    """
    from sadc.data.images import ImageReadError, load_image

    kept, images = [], []
    for item in items:
        try:
            images.append(load_image(item.path))
        except ImageReadError as err:
            skipped.append((item.path, str(err)))
            continue
        kept.append(item)
    return kept, images


def draw_detections(image, det: dict, class_names: list[str]):
    """uint8 [3, H, W] original image + detections in its pixels -> a new uint8 image with labelled boxes."""
    from torchvision.utils import draw_bounding_boxes

    if len(det["scores"]) == 0:
        return image.clone()
    labels = det["labels"].tolist()
    names = [class_names[label] if 0 <= label < len(class_names) else str(label) for label in labels]
    captions = [f"{n} {s:.2f}" for n, s in zip(names, det["scores"].tolist(), strict=True)]
    width = max(1, round(max(image.shape[-2:]) / 320))
    return draw_bounding_boxes(
        image,
        det["boxes"],
        labels=captions,
        colors=[PALETTE[label % len(PALETTE)] for label in labels],
        width=width,
        fill_labels=True,
    )


def filter_score(det: dict, conf: float) -> dict:
    keep = det["scores"] >= conf
    return {**det, "boxes": det["boxes"][keep], "scores": det["scores"][keep], "labels": det["labels"][keep]}


def coco_results(det: dict, image_id: int, file_name: str, class_names: list[str]) -> list[dict]:
    """Detections of one image (original px) -> COCO results rows (xywh), plus file and class names."""
    rows = []
    for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True):
        x1, y1, x2, y2 = box
        rows.append(
            {
                "image_id": image_id,
                "file_name": file_name,
                "category_id": int(label) + 1,
                "category_name": class_names[int(label)] if 0 <= label < len(class_names) else str(label),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(score), 5),
            }
        )
    return rows


def save_image(image, path: Path) -> None:
    """uint8 [3, H, W] -> file (format from the suffix; JPEG at quality 95)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.permute(1, 2, 0).contiguous().numpy()
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **options)


@handle_errors
def predict(
    model: Annotated[Path, typer.Argument(help="Artefact: sadc checkpoint (.pt), ONNX export (.onnx) or TensorRT engine (.engine).")],
    images: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or glob patterns.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the drawn images and detections.json.")],
    conf: Annotated[float, typer.Option(help="Keep detections with score >= this (the artefact's own threshold applies first).")] = 0.3,
    batch: Annotated[int, typer.Option(help="Images per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Detect objects in images: draw labelled boxes on the originals and write COCO results.

    detections.json is a COCO results list (image_id = position of the image in the
    input order, from 1; category_id = class index + 1; bbox = x, y, w, h in original
    pixels) with file_name and category_name added.
    """
    from rich.progress import Progress

    from sadc.runtime import load_predictor, predict_images

    if not 0.0 <= conf < 1.0:
        raise SadcError(f"--conf {conf}: must be in [0, 1)")
    if batch < 1:
        raise SadcError(f"--batch {batch}: must be >= 1")
    inputs, many = expand_inputs(images)
    predictor = load_predictor(model, device=device)
    class_names = list(predictor.spec.class_names)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    skipped: list[tuple[Path, str]] = []
    n_boxes = 0
    with Progress(console=console, transient=True, disable=not many) as progress:
        task = progress.add_task(f"predict {predictor.name}", total=len(inputs))
        for start in range(0, len(inputs), batch):
            chunk = inputs[start : start + batch]
            chunk, originals = read_images(chunk, skipped)
            detections = predict_images(predictor, originals) if originals else []
            for item, image, det in zip(chunk, originals, detections, strict=True):
                det = filter_score(det, conf)
                n_boxes += len(det["scores"])
                save_image(draw_detections(image, det, class_names), out / item.name)
                results += coco_results(det, item.image_id, item.name, class_names)
            progress.advance(task, len(chunk))
    if skipped:
        from sadc.data.folder import write_skip_list

        write_skip_list(skipped, out / "skipped_images.txt")
        if len(skipped) == len(inputs):
            raise SadcError(
                f"none of the {len(inputs)} images can be read (first: {skipped[0][1]}); "
                f"reasons per file in {out / 'skipped_images.txt'}"
            )
        console.print(f"[yellow]skipped {len(skipped)} unreadable images[/] (listed in {out / 'skipped_images.txt'})")
    (out / "detections.json").write_text(json.dumps(results))
    done = len(inputs) - len(skipped)
    console.print(f"{done} images, {n_boxes} detections (score >= {conf}) -> {out}/ and {out / 'detections.json'}")
