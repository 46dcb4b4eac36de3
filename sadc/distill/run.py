"""`sadc distill`: recipe -> teacher, student, labeled + unlabeled loaders -> Trainer.fit."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, cast

import torch
from rich.console import Console
from torch.utils.data import Dataset

from sadc.artefacts.files import file_sha256
from sadc.data.coco import CocoDataset
from sadc.data.folder import UnlabeledFolder
from sadc.data.images import noise_images
from sadc.data.loaders import Concatenated, build_loader, close_batches
from sadc.distill.objective import DistillObjective
from sadc.distill.teacher import TeacherTargets, check_distillable, class_index
from sadc.distill.teachers import load_teacher, teacher_fields
from sadc.engine.budget import check_batch_size
from sadc.engine.distributed import dist_info_from_env
from sadc.engine.run import check_classes, coco_split, fit, session, wrap_for_training
from sadc.errors import SadcError
from sadc.models.detector import DenseForward, Detector
from sadc.models.loading import load_detector, spec_from_fields
from sadc.recipe import ModelSource, Recipe, check_paths


def teacher_reference(fields: ModelSource, teacher: Detector) -> dict:
    """What the student checkpoint records of its teacher (the teacher's weights are not stored)."""
    source = fields.source
    ref = {"source": source, "weights": fields.weights, "spec": teacher.spec.model_dump(mode="json")}
    if source and Path(source).is_file():
        ref["sha256"] = file_sha256(Path(source))
    return ref


def step_kinds(schedule: str, start_step: int, n_lab: int, n_unl: int):
    """(step, labeled?, unlabeled?) from ``start_step`` on, with the batches each stream consumed before it.

    Returns (labeled batches already drawn, unlabeled batches already drawn, iterator of
    (has labeled, has unlabeled) per step). joint: every step draws from each stream that
    has images; alternate: even steps labeled, odd steps unlabeled (the authors'
    loader.py starts with a labeled minibatch), so a resume at any step knows where each
    stream stands.
    """
    if schedule == "alternate":

        def kinds():
            step = start_step
            while True:
                yield step % 2 == 0, step % 2 == 1
                step += 1

        return (start_step + 1) // 2, start_step // 2, kinds()

    def joint():
        while True:
            yield bool(n_lab), bool(n_unl)

    return start_step, start_step, joint()


def _batches(recipe: Recipe, labeled, unlabeled, n_lab: int, n_unl: int, dist):
    """batches(start_step) -> iterator of (labeled batch | None, unlabeled batch | None)."""

    def make(start_step: int):
        lab_done, unl_done, kinds = step_kinds(recipe.data.schedule, start_step, n_lab, n_unl)

        def loader(ds, bs, seed_offset, done):
            return iter(
                build_loader(
                    ds,
                    batch_size=bs,
                    workers=recipe.data.workers,
                    shuffle=True,
                    seed=recipe.seed + seed_offset,
                    start_step=done,
                    rank=dist.rank,
                    world_size=dist.world_size,
                )
            )

        lab = loader(labeled, n_lab, 0, lab_done) if labeled is not None and n_lab else None
        unl = loader(unlabeled, n_unl, 1, unl_done) if unlabeled is not None and n_unl else None
        record = getattr(unlabeled, "record", None)  # an UnlabeledFolder lists decode failures met by workers, once
        try:
            for take_lab, take_unl in kinds:
                lab_batch = next(lab) if take_lab and lab is not None else None
                unl_batch = next(unl) if take_unl and unl is not None else None
                if unl_batch is not None and record is not None:
                    record(unl_batch[1])
                yield lab_batch, unl_batch
        finally:  # closed by the trainer, or ended by a data error: stop both loaders' workers
            for it in (lab, unl):
                close_batches(it)

    return make


def unlabeled_stream(recipe: Recipe, size: tuple[int, int], labeled: CocoDataset | None) -> Dataset | None:
    """The images of data.unlabeled: one folder, or several and/or the labeled train set, as one dataset.

    A single folder is an :class:`UnlabeledFolder`; a list is a :class:`Concatenated` whose
    targets say which images carry ground truth (the labeled train set's do).
    """
    sources = recipe.data.unlabeled_sources
    if not sources:
        return None
    parts: list[Any] = []  # datasets; `labeled` is set when the recipe lists it (validated)
    truth: list[bool] = []
    for source in sources:
        if source == "labeled":
            parts.append(labeled)
            truth.append(True)
        else:
            parts.append(UnlabeledFolder(Path(source), size, recipe.data.augment, recipe.seed))
            truth.append(False)
    if len(parts) == 1 and not truth[0]:
        return parts[0]
    return Concatenated(parts, truth)


def _random_batches(n_lab: int, n_unl: int, size: tuple[int, int]):
    def make(start_step: int):
        g = torch.Generator().manual_seed(start_step)
        while True:
            lab: tuple | None = None
            unl: tuple | None = None
            if n_lab:
                images = noise_images(n_lab, size, g)
                lab = (images, [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([0])}] * n_lab)
            if n_unl:
                unl = (noise_images(n_unl, size, g), [{}] * n_unl)
            yield lab, unl

    return make


def run_distill(
    recipe: Recipe,
    *,
    resume: bool = False,
    console: Console | None = None,
    dry_run: bool = False,
    recipe_file: Path | None = None,
) -> Path | None:
    """SAD training of model.student from model.teacher; returns the run directory.

    dry_run builds everything (random teacher weights, no data read), runs one step on
    random images in a temporary folder, removes it and returns None: a check that a
    recipe is consistent before a long run, leaving ``recipe.output`` as it was.
    ``recipe_file`` is where the recipe came from: its folder (and ./recipes) are searched
    for the recipe that makes a missing teacher file.
    """
    console = console or Console()
    folders = ([recipe_file.parent] if recipe_file is not None else []) + [Path("recipes")]
    teacher_src, note = teacher_fields(recipe, folders, dry_run)
    if not dry_run:
        return _run(recipe, teacher_src, resume, console, dry_run=False)
    if note:
        console.print(note)
    with tempfile.TemporaryDirectory(prefix="sadc-dry-run-") as tmp:
        steps = recipe.train.model_copy(update={"steps": 1, "eval_every": 0})
        run_dir = _run(recipe.model_copy(update={"output": Path(tmp), "train": steps}), teacher_src, False, console, True)
        loss = _last_loss(run_dir / "metrics.jsonl")
    if dist_info_from_env().is_main:  # under torchrun, one line, not one per rank
        console.print(
            f"[bold green]dry run passed[/]: teacher and student fit, one step ran{loss}; nothing was written under "
            f"{recipe.output}/ (the step ran in a temporary folder, now removed)"
        )
    return None


def _last_loss(path: Path) -> str:
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []
    losses = [ln["loss"] for ln in lines if "loss" in ln]
    return f" (loss {losses[-1]:.3f})" if losses else ""


def _run(recipe: Recipe, teacher_src: ModelSource, resume: bool, console: Console, dry_run: bool) -> Path:
    cfg, dcfg = recipe.train, recipe.distill
    data = recipe.data
    if not dry_run:
        if data.train is None and data.unlabeled is None:
            raise SadcError("recipe: distillation needs data.train (labeled), data.unlabeled (a folder), or both")
        check_paths(recipe)  # every data folder and model source, before minutes of set-up
    with session(recipe, resume, console) as s:
        dist = s.dist
        student_fields = recipe.model.student
        if dry_run:  # random weights everywhere: nothing is downloaded
            student_fields = student_fields.model_copy(update={"pretrained_backbone": False})
        student = load_detector(spec_from_fields(student_fields), student_fields.source, weights=student_fields.weights).to(
            s.device
        )
        size = student.spec.input_size
        teacher = load_teacher(teacher_src, size, dry_run).to(s.device)
        check_distillable(teacher, student, size)
        targets = TeacherTargets(
            teacher,
            class_index(teacher, student, dcfg.class_map),
            dcfg.pseudo_threshold,
            dcfg.teacher_precision,
            channels_last=cfg.channels_last,
        )

        bs = data.batch_size
        if dry_run:
            labeled = unlabeled = val = None
            n_lab, n_unl = (min(bs, 2), min(bs, 2))
            batches = _random_batches(n_lab, n_unl, size)
        else:
            labeled = coco_split(data.train, size, recipe, train=True)
            val = coco_split(data.val, size, recipe, train=False)
            unlabeled = unlabeled_stream(recipe, size, labeled)
            if labeled is not None:
                check_classes(student, labeled, "model.student")
            if unlabeled is not None and dist.is_main:  # the list grows if more fail to decode mid-run
                s.run_dir.mkdir(parents=True, exist_ok=True)
                if hasattr(unlabeled, "write_skipped"):
                    unlabeled.write_skipped(s.run_dir / "skipped_images.txt")
                if skipped := getattr(unlabeled, "skipped", None):
                    s.console.print(
                        f"[yellow]skipped {len(skipped)} unreadable images[/] (listed in {s.run_dir / 'skipped_images.txt'})"
                    )
            n_lab = bs if labeled is not None else 0
            joint = data.schedule == "joint" and labeled is not None
            n_unl = (round(bs * dcfg.unlabeled_ratio) if joint else bs) if unlabeled is not None else 0
            batches = _batches(recipe, labeled, unlabeled, n_lab, n_unl, dist)
            sizes = {"data.train": labeled, "data.unlabeled": unlabeled}
            sets = [(key, n, len(cast(Any, ds))) for (key, ds), n in zip(sizes.items(), (n_lab, n_unl), strict=True) if n]
            check_batch_size(sets, DenseForward(student), size, s.device, together=data.schedule == "joint")
        if dist.is_main:
            what = (
                f"{n_lab} labeled + {n_unl} unlabeled images per step"
                if data.schedule == "joint"
                else f"{n_lab} labeled / {n_unl} unlabeled images on alternate steps"
            ) + (f" per rank x {dist.world_size} ranks" if dist.enabled else "")
            s.console.print(
                f"[bold]distill[/] {teacher.spec.backbone} -> {student.spec.backbone} ({dcfg.loss}, lambda {dcfg.weight}, "
                f"gamma {dcfg.gamma}, beta {dcfg.beta}), {what}, {cfg.steps} steps, device {s.device} -> {s.run_dir}"
            )
        objective = DistillObjective(student, wrap_for_training(student, s), targets, dcfg)
        metrics = fit(
            s,
            student,
            objective,
            batches,
            n_lab + n_unl if data.schedule == "joint" else max(n_lab, n_unl),
            val,
            extra={"teacher": teacher_reference(teacher_src, teacher)},
            loss_weights={"distill": dcfg.weight, "skipped_empty": 0.0},  # a count, logged, not a loss
        )
        if metrics and dist.is_main:
            s.console.print(f"[bold green]done[/] {s.run_dir}: student mAP {metrics['mAP']:.4f}  AP50 {metrics['AP50']:.4f}")
        return s.run_dir
