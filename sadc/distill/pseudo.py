"""Offline pseudo-labelling: a teacher's detections on a folder, written as a COCO set.

torch and the data modules are imported after the arguments are checked, so a wrong
path is one line in a fraction of a second (``sadc pseudo-label``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sadc.artefacts.postprocess import PostProcess
from sadc.errors import SadcError

if TYPE_CHECKING:
    from rich.console import Console


def pseudo_label_folder(
    teacher: Path,
    images: Path,
    out: Path,
    *,
    threshold: float = 0.4,
    batch_size: int = 16,
    device: str = "auto",
    console: Console | None = None,
    input_size: str | None = None,
) -> dict:
    """Write ``out`` (COCO json: images relative to ``images``, teacher boxes >= threshold).

    Unreadable images are skipped and listed in ``OUT.skipped.txt``; none readable is an error.
    """
    out = Path(out)
    if out.is_dir():
        raise SadcError(f"--out {out}: a folder; pass the COCO json file to write, e.g. {out / 'pseudo.json'}")
    if (
        not str(teacher).startswith("torchvision:") and not Path(teacher).is_file()
    ):  # load_checkpoint's line, before torch is imported
        raise SadcError(f"{teacher}: checkpoint not found")
    if not Path(images).is_dir():
        raise SadcError(f"{images}: image folder not found (pass an existing folder of images)")
    out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails now, not after the whole folder
    import torch

    from sadc.data.cocojson import coco_dataset, write_json
    from sadc.data.evaluate import to_coco_results
    from sadc.data.reader import SkipList, batched, decoded, scan_images, text_name
    from sadc.data.transforms import letterbox
    from sadc.progress import progress_bar
    from sadc.runtime.torch_rt import TorchPredictor

    post = PostProcess(score_threshold=threshold)
    if str(teacher).startswith("torchvision:"):  # a torchvision teacher at --input-size
        predictor = TorchPredictor.from_torchvision(str(teacher), input_size, device=device, post=post)
    else:
        predictor = TorchPredictor(teacher, device=device, post=post)
    spec = predictor.spec
    size = spec.input_size
    scan = scan_images(images)
    skips = SkipList(None, scan.skipped)
    cat_ids = list(range(1, spec.num_classes + 1))
    annotations: list[dict] = []
    image_entries: list[dict] = []
    # Image ids are positions in the scan (from 1): stable, and each file is read once, so no
    # image (and none of its boxes) can appear twice.
    numbered = list(enumerate(scan.paths, start=1))
    with progress_bar(console) as progress:
        task = progress.add_task("pseudo-label", total=len(numbered))
        for chunk in batched(decoded(numbered, skips, path=lambda item: item[1]), batch_size):
            boxed = [letterbox(image, size) for _, image in chunk]
            targets = [{"image_id": image_id, "meta": meta} for ((image_id, _), _), (_, meta) in zip(chunk, boxed, strict=True)]
            with torch.inference_mode():
                dets = predictor.predict(torch.stack([canvas for canvas, _ in boxed]))
            for ((image_id, path), _), (_, meta) in zip(chunk, boxed, strict=True):
                image_entries.append({"id": image_id, "file_name": scan.name(path), "width": meta.orig_w, "height": meta.orig_h})
            annotations += [r for r in to_coco_results(dets, targets, cat_ids) if r["bbox"][2] > 0 and r["bbox"][3] > 0]
            progress.update(task, completed=chunk[-1][0][0])
    if not image_entries:
        raise SadcError(f"{text_name(images)}: none of the {len(scan.paths) + len(scan.skipped)} image files can be decoded")
    coco = coco_dataset(
        image_entries,
        annotations,
        spec.class_names,
        description=f"pseudo labels from {teacher} at score >= {threshold}",
    )
    write_json(out, coco)
    skipped_list = None
    if skips:  # unreadable files: not in the json, listed beside it with the reason
        skipped_list = SkipList(out.with_name(out.stem + ".skipped.txt"), skips.entries).path
    return {"images": len(image_entries), "boxes": len(annotations), "skipped": len(skips), "skipped_list": skipped_list}
