"""Accuracy of a predictor on a labeled set: any backend, one COCO evaluation."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sadc.data.evaluate import evaluate
from sadc.data.formats import open_labeled
from sadc.data.loaders import build_loader
from sadc.errors import SadcError
from sadc.progress import progress_bar
from sadc.runtime.base import Predictor, host_work


def predictor_accuracy(
    predictor: Predictor,
    annotations: Path,
    images: Path | None = None,
    *,
    fmt: str = "auto",
    batch_size: int = 8,
    workers: int = 0,
    save_detections: Path | None = None,
    console: Console | None = None,
) -> dict:
    """COCO metrics of ``predictor`` on a labeled set in any layout (see :func:`sadc.data.evaluate.evaluate`).

    ``annotations`` is a COCO json (``images``: its folder), a YOLO data.yaml or a VOC
    folder, whose ``val`` split is scored.
    """
    data = open_labeled(annotations, predictor.spec.input_size, split="val", fmt=fmt, images=images)
    if list(data.class_names) != list(predictor.spec.class_names):
        raise SadcError(
            f"{annotations}: categories {data.class_names} differ from {predictor.path}'s classes {predictor.spec.class_names}"
        )
    loader = build_loader(data, batch_size=batch_size, workers=workers, shuffle=False, seed=0, infinite=False)
    with progress_bar(console) as progress, host_work(predictor):
        task = progress.add_task(f"mAP {predictor.name}", total=len(data))
        return evaluate(
            predictor.predict,
            loader,
            data.coco,
            data.cat_ids,
            progress=lambda n: progress.advance(task, n),
            save_detections=save_detections,
        )
