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

import numpy as np
import torch
from torch import Tensor

from sadc.data.cocojson import result_rows, write_json
from sadc.data.transforms import boxes_from_letterbox

STAT_NAMES = ["mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]

Predict = Callable[[Tensor], list[dict[str, Tensor]]]


def to_coco_results(detections: list[dict[str, Tensor]], targets: list[dict], cat_ids: list[int]) -> list[dict]:
    """Per-image detections (input px, contiguous labels) -> COCO results (orig px, xywh)."""
    out = []
    for det, tgt in zip(detections, targets, strict=True):
        boxes = boxes_from_letterbox(det["boxes"].float().cpu(), tgt["meta"])
        out += result_rows({**det, "boxes": boxes}, int(tgt["image_id"]), cat_ids)
    return out


def _coco(gt: Path | dict):
    """The ground truth as a COCO object of faster-coco-eval (or pycocotools): from a json path or a dict."""
    try:
        from faster_coco_eval import COCO

        return COCO(gt if isinstance(gt, dict) else str(gt))
    except ImportError:  # pragma: no cover - the fallback
        from pycocotools.coco import COCO

        if not isinstance(gt, dict):
            return COCO(str(gt))
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        return coco


def _cocoeval(gt, dt):
    try:
        from faster_coco_eval import COCOeval_faster

        return COCOeval_faster(gt, dt, iouType="bbox", print_function=lambda *a, **k: None)
    except ImportError:  # pragma: no cover - the fallback
        from pycocotools.cocoeval import COCOeval

        return COCOeval(gt, dt, iouType="bbox")


def per_class_metrics(precision: np.ndarray | None, gt, cat_ids: list[int], image_ids: list[int]) -> dict[str, dict]:
    """``{class name: {"AP", "AP50", "gt"}}`` from COCOeval's ``eval["precision"]``.

    ``precision`` is [T, R, K, A, M] (IoU thresholds 0.50:0.05:0.95, 101 recall points,
    categories in ``cat_ids`` order, area ranges with "all" first, maxDets with 100
    last); entries of -1 mean "no ground truth". AP is the mean over T and R at area
    "all", maxDets 100 (the summary mAP's own slice), AP50 the same at T = 0.50; a class
    without ground truth has AP None. ``gt`` counts the non-crowd boxes on the scored images.
    """
    wanted = set(image_ids)
    counts = dict.fromkeys(cat_ids, 0)
    for ann in gt.dataset["annotations"]:
        if ann["image_id"] in wanted and not ann.get("iscrowd", 0) and ann["category_id"] in counts:
            counts[ann["category_id"]] += 1
    out = {}
    for k, cid in enumerate(cat_ids):
        ap: float | None = 0.0
        ap50: float | None = 0.0
        if precision is not None:
            p = precision[:, :, k, 0, -1]
            ap = float(p[p > -1].mean()) if (p > -1).any() else None
            p50 = p[0]
            ap50 = float(p50[p50 > -1].mean()) if (p50 > -1).any() else None
        elif counts[cid] == 0:
            ap = ap50 = None
        out[gt.cats[cid]["name"]] = {"AP": ap, "AP50": ap50, "gt": counts[cid]}
    return out


def coco_map(gt_json: Path | dict, results: list[dict], image_ids: Iterable[int] | None = None) -> dict:
    """COCO bbox metrics of ``results`` against the ground truth (a json path or its dict).

    Returns the 12 summary numbers (``STAT_NAMES``, floats in [0, 1]) and ``per_class``:
    ``{name: {"AP", "AP50", "gt"}}`` (see :func:`per_class_metrics`).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        gt = _coco(gt_json)
        ids = sorted(image_ids) if image_ids is not None else sorted(gt.getImgIds())
        cat_ids = sorted(gt.getCatIds())
        if not results:
            metrics: dict = dict.fromkeys(STAT_NAMES, 0.0)
            metrics["per_class"] = per_class_metrics(None, gt, cat_ids, ids)
            return metrics
        ev = _cocoeval(gt, gt.loadRes(results))
        if image_ids is not None:
            ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {name: max(float(v), 0.0) for name, v in zip(STAT_NAMES, ev.stats, strict=False)}
    metrics["per_class"] = per_class_metrics(np.asarray(ev.eval["precision"]), gt, list(ev.params.catIds), ids)
    return metrics


@torch.no_grad()
def evaluate(
    predict: Predict,
    loader: Iterable,
    gt_json: Path | dict,
    cat_ids: list[int],
    *,
    progress: Callable[[int], None] | None = None,
    save_detections: Path | None = None,
) -> dict:
    """Run ``predict`` over a loader of (uint8 images, targets) and score with COCO mAP (see :func:`coco_map`)."""
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
