"""``sadc predict``'s pipeline: image files -> detections drawn on the originals + COCO results.

:func:`~sadc.runtime.inputs.expand_inputs` turns files, folders and glob patterns into :class:`ImageInput` items;
:func:`annotate_images` reads them in batches of images that decode (:mod:`sadc.data.reader`),
runs :func:`~sadc.runtime.predict.predict_images`, draws the boxes kept at ``conf`` and writes
``detections.json`` (COCO results, see :func:`sadc.data.cocojson.result_rows`) and the list
of unreadable files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from torchvision.utils import draw_bounding_boxes

from sadc.data.cocojson import result_rows, write_json
from sadc.data.reader import SkipList, batched, decoded, text_name
from sadc.errors import SadcError
from sadc.progress import progress_bar
from sadc.runtime.base import Predictor
from sadc.runtime.inputs import ImageInput, check_options
from sadc.runtime.predict import predict_images

# Box colours by class index (tab10), as RGB.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def draw_detections(image, det: dict, class_names: list[str]):
    """uint8 [3, H, W] original image + detections in its pixels -> a new uint8 image with labelled boxes."""
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


def save_image(image, path: Path) -> None:
    """uint8 [3, H, W] -> file (format from the suffix; JPEG at quality 95)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.permute(1, 2, 0).contiguous().numpy()
    options: dict[str, Any] = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **options)


@dataclass
class AnnotateSummary:
    """What :func:`annotate_images` did: images drawn, detections kept, unreadable files and where they are listed."""

    images: int = 0
    detections: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    skip_list: Path | None = None
    results: Path | None = None


def annotate_images(
    predictor: Predictor,
    inputs: list[ImageInput],
    out: Path,
    *,
    conf: float = 0.3,
    batch: int = 8,
    console: Console | None = None,
    progress: bool = True,
) -> AnnotateSummary:
    """Detect in ``inputs``, ``batch`` images per forward pass; write ``out``/NAME (drawn) and ``out``/detections.json.

    Keeps detections with score >= ``conf`` (the artefact's own threshold applies
    first). detections.json is a COCO results list (image_id = the input's position
    from 1; category_id = class index + 1; bbox = x, y, w, h in original pixels) with
    file_name and category_name added. Unreadable images are skipped and listed in
    ``out``/skipped_images.txt; none readable is an error.
    """
    check_options(conf, batch)
    class_names = list(predictor.spec.class_names)
    cat_ids = list(range(1, len(class_names) + 1))
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    summary = AnnotateSummary()
    skips = SkipList()
    with progress_bar(console, disable=not progress) as bar:
        task = bar.add_task(f"predict {predictor.name}", total=len(inputs))
        # Batches are filled from the images that decode: an unreadable file never empties one.
        for chunk in batched(decoded(inputs, skips, path=lambda item: item.path), batch):
            originals = [image for _, image in chunk]
            for (item, image), det in zip(chunk, predict_images(predictor, originals), strict=True):
                det = filter_score(det, conf)
                summary.detections += len(det["scores"])
                save_image(draw_detections(image, det, class_names), out / item.name)
                results += result_rows(det, item.image_id, cat_ids, file_name=item.name, class_names=class_names)
            bar.update(task, completed=chunk[-1][0].image_id)
    summary.skipped = skips.entries
    if skips:
        summary.skip_list = SkipList(out / "skipped_images.txt", skips.entries).path
        if len(skips) == len(inputs):
            raise SadcError(
                f"none of the {len(inputs)} images can be read (first: {text_name(skips.entries[0][1])}); "
                f"reasons per file in {summary.skip_list}"
            )
    summary.results = write_json(out / "detections.json", results)
    summary.images = len(inputs) - len(summary.skipped)
    return summary
