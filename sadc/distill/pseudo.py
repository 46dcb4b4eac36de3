"""Offline pseudo-labelling: a teacher's detections on a folder, written as a COCO set."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from sadc.artefacts.postprocess import PostProcess
from sadc.data.cocojson import coco_dataset, write_json
from sadc.data.evaluate import to_coco_results
from sadc.data.folder import UnlabeledFolder
from sadc.data.loaders import build_loader
from sadc.errors import SadcError
from sadc.progress import progress_bar
from sadc.runtime.torch_rt import TorchPredictor


def pseudo_label_folder(
    teacher: Path,
    images: Path,
    out: Path,
    *,
    threshold: float = 0.4,
    batch_size: int = 16,
    device: str = "auto",
    console: Console | None = None,
) -> dict:
    """Write ``out`` (COCO json: images relative to ``images``, teacher boxes >= threshold).

    Unreadable images are skipped and listed in ``OUT.skipped.txt``; none readable is an error.
    """
    out = Path(out)
    if out.is_dir():
        raise SadcError(f"--out {out}: a folder; pass the COCO json file to write, e.g. {out / 'pseudo.json'}")
    out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails now, not after the whole folder
    predictor = TorchPredictor(teacher, device=device, post=PostProcess(score_threshold=threshold))
    spec = predictor.spec
    data = UnlabeledFolder(images, spec.input_size)
    loader = build_loader(data, batch_size=batch_size, workers=0, shuffle=False, seed=0, infinite=False)
    cat_ids = list(range(1, spec.num_classes + 1))
    annotations: list[dict] = []
    image_entries: dict[int, dict] = {}
    with progress_bar(console) as progress:
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
            annotations += [r for r in to_coco_results(dets, targets, cat_ids) if r["bbox"][2] > 0 and r["bbox"][3] > 0]
            progress.advance(task, len(targets))
    coco = coco_dataset(
        [image_entries[k] for k in sorted(image_entries)],
        annotations,
        spec.class_names,
        description=f"pseudo labels from {teacher} at score >= {threshold}",
    )
    write_json(out, coco)
    skipped_list = None
    if data.skipped:  # unreadable files: not in the json, listed beside it with the reason
        skipped_list = out.with_name(out.stem + ".skipped.txt")
        data.write_skipped(skipped_list)
    return {"images": len(image_entries), "boxes": len(annotations), "skipped": len(data.skipped), "skipped_list": skipped_list}
