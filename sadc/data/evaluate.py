"""COCO box mAP of any predictor on a labeled set.

Detections are mapped from network-input pixels back to original image pixels (the
inverse letterbox) and scored with faster-coco-eval, whose numbers equal pycocotools'
COCOeval (a test checks this); pycocotools is the fallback.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor

from sadc.data.cocojson import result_rows, write_json
from sadc.data.transforms import boxes_from_letterbox

STAT_NAMES = ["mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]

Predict = Callable[[Tensor], list[dict[str, Tensor]]]


def to_coco_results(
    detections: list[dict[str, Tensor]], targets: list[dict], cat_ids: list[int]
) -> list[dict]:
    """Per-image detections (input px, contiguous labels) -> COCO results (orig px, xywh)."""
    out = []
    for det, tgt in zip(detections, targets, strict=True):
        boxes = boxes_from_letterbox(det["boxes"].float().cpu(), tgt["meta"])
        out += result_rows({**det, "boxes": boxes}, int(tgt["image_id"]), cat_ids)
    return out


def coco_map(gt_json: Path, results: list[dict], image_ids: Iterable[int] | None = None) -> dict[str, float]:
    """COCO bbox metrics (``STAT_NAMES``) of ``results`` against the ground-truth json."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            def COCOeval(gt, dt, iouType):  # noqa: N802 - pycocotools' name
                return COCOeval_faster(gt, dt, iouType=iouType, print_function=lambda *a, **k: None)
        except ImportError:  # pragma: no cover - the fallback
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        gt = COCO(str(gt_json))
        if not results:
            return dict.fromkeys(STAT_NAMES, 0.0)
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: max(float(v), 0.0) for name, v in zip(STAT_NAMES, ev.stats, strict=False)}


@torch.no_grad()
def evaluate(
    predict: Predict,
    loader: Iterable,
    gt_json: Path,
    cat_ids: list[int],
    *,
    progress: Callable[[int], None] | None = None,
    save_detections: Path | None = None,
) -> dict[str, float]:
    """Run ``predict`` over a loader of (uint8 images, targets) and score with COCO mAP."""
    results: list[dict] = []
    image_ids: list[int] = []
    for images, targets in loader:
        results.extend(to_coco_results(predict(images), targets, cat_ids))
        image_ids.extend(int(t["image_id"]) for t in targets)
        if progress is not None:
            progress(len(targets))
    if save_detections is not None:
        write_json(save_detections, results)
    return coco_map(gt_json, results, image_ids)
