"""Offline pseudo-labelling: a teacher's detections on a folder, written as a COCO set."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from sadc.artefacts.files import atomic_write
from sadc.data.evaluate import to_coco_results
from sadc.data.folder import ImageFolder
from sadc.data.loaders import build_loader
from sadc.errors import SadcError
from sadc.runtime.torch_rt import TorchPredictor


def pseudo_label_folder(
    teacher: Path,
    images: Path,
    out: Path,
    *,
    threshold: float = 0.4,
    batch_size: int = 16,
    device: str = "cpu",
    console: Console | None = None,
) -> dict:
    """Write ``out`` (COCO json: images relative to ``images``, teacher boxes >= threshold).

    Unreadable images are skipped and listed in ``OUT.skipped.txt``; none readable is an error.
    """
    out = Path(out)
    if out.is_dir():
        raise SadcError(f"--out {out}: a folder; pass the COCO json file to write, e.g. {out / 'pseudo.json'}")
    out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails now, not after the whole folder
    predictor = TorchPredictor(teacher, device=device, score_thresh=threshold)
    spec = predictor.spec
    data = ImageFolder(images, tuple(spec.input_size))
    loader = build_loader(data, batch_size=batch_size, workers=0, shuffle=False, seed=0, infinite=False)
    cat_ids = list(range(1, spec.num_classes + 1))
    annotations: list[dict] = []
    image_entries: dict[int, dict] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("pseudo-label", total=len(data))
        for batch, targets in loader:
            with torch.inference_mode():
                dets = predictor.predict(batch)
            for t in targets:
                t["image_id"] = int(t["image_id"]) + 1  # COCO ids start at 1
                meta = t["meta"]
                rel = Path(t["path"]).resolve().relative_to(Path(images).resolve())
                image_entries[t["image_id"]] = {
                    "id": t["image_id"], "file_name": rel.as_posix(), "width": meta.orig_w, "height": meta.orig_h,
                }
            for r in to_coco_results(dets, targets, cat_ids):
                x, y, w, h = r["bbox"]
                if w > 0 and h > 0:
                    annotations.append({**r, "id": len(annotations) + 1, "area": w * h, "iscrowd": 0})
            progress.advance(task, len(targets))
    coco = {
        "images": [image_entries[k] for k in sorted(image_entries)],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(spec.class_names)],
        "info": {"description": f"pseudo labels from {teacher} at score >= {threshold}"},
    }
    atomic_write(out, lambda f: f.write(json.dumps(coco).encode()))
    skipped_list = None
    if data.skipped:  # unreadable files: not in the json, listed beside it with the reason
        skipped_list = out.with_name(out.stem + ".skipped.txt")
        data.write_skipped(skipped_list)
    return {"images": len(image_entries), "boxes": len(annotations), "skipped": len(data.skipped), "skipped_list": skipped_list}
