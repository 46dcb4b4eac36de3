"""`sadc train`: recipe -> datasets, model, objective -> Trainer.fit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from sadc.bench.accuracy import evaluate
from sadc.data.coco import CocoDetection
from sadc.data.loaders import build_loader
from sadc.engine.rundir import MetricsLog, prepare_run_dir
from sadc.engine.trainer import Trainer, resolve_device
from sadc.errors import SadcError
from sadc.models.detector import Detector
from sadc.models.loading import load_detector
from sadc.recipe import Recipe, save_recipe

log = logging.getLogger(__name__)


@dataclass
class SupervisedObjective:
    """Focal + box loss (torchvision's RetinaNet/FCOS losses) on ground-truth boxes."""

    model: torch.nn.Module  # the Detector, or its DDP wrapper's .module

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        out = self.model.dense(self.model.preprocess(images))
        return self.model.loss(out, targets)


def make_evaluator(model: Detector, val: CocoDetection, batch_size: int, workers: int, device: torch.device):
    """A closure returning val mAP metrics of ``model`` (in eval mode) at call time."""
    loader = build_loader(val, batch_size=batch_size, workers=workers, shuffle=False, seed=0, infinite=False)

    def run() -> dict[str, float]:
        with torch.inference_mode():
            return evaluate(lambda x: model(x.to(device)), loader, val.coco_json, val.cat_ids)

    return run


def check_classes(model: Detector, data: CocoDetection, what: str) -> None:
    if list(model.spec.class_names) != list(data.class_names):
        raise SadcError(
            f"{what}: model classes {model.spec.class_names} differ from the dataset's {data.class_names}; "
            "set class_names in the recipe's model section to the dataset's categories (sorted by id)"
        )


def run_train(recipe: Recipe, *, resume: bool = False, console: Console | None = None) -> Path:
    """Supervised training of ``model.<train.target>`` on ``data.train``; returns the run dir."""
    console = console or Console()
    cfg = recipe.train
    if recipe.data.train is None:
        raise SadcError("recipe: data.train is not set; `sadc train` needs a labeled COCO set (annotations + images)")
    fields = getattr(recipe.model, cfg.target)
    if fields is None:
        raise SadcError(f"recipe: model.{cfg.target} is not set, but train.target={cfg.target}")
    run_dir, resume_from = prepare_run_dir(recipe.run_dir, resume)
    if resume_from is not None:
        console.print(f"resuming {resume_from}")
    device = resolve_device(cfg.device)
    torch.manual_seed(recipe.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    size = tuple(fields.input_size)
    train_set = CocoDetection(recipe.data.train.annotations, recipe.data.train.images, size, recipe.data.augment, recipe.seed)
    val_set = (
        CocoDetection(recipe.data.val.annotations, recipe.data.val.images, size) if recipe.data.val is not None else None
    )
    model = load_detector(fields).to(device)
    check_classes(model, train_set, "model." + cfg.target)

    run_dir.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, run_dir / "recipe.resolved.yaml")
    bs = recipe.data.batch_size

    def batches(start_step: int):
        loader = build_loader(
            train_set, batch_size=bs, workers=recipe.data.workers, shuffle=True, seed=recipe.seed, start_step=start_step
        )
        return iter(loader)

    trainer = Trainer(
        model=model,
        objective=SupervisedObjective(model),
        batches=batches,
        cfg=cfg,
        run_dir=run_dir,
        checkpoint_extra={"spec": model.spec.model_dump(mode="json"), "recipe": recipe.model_dump(mode="json")},
        batch_size=bs,
        evaluate=make_evaluator(model, val_set, bs, recipe.data.workers, device) if val_set else None,
        device=device,
        console=console,
    )
    if resume_from is not None:
        trainer.resume(resume_from)
        if trainer.step >= cfg.steps:
            console.print(f"{run_dir} already finished ({trainer.step} steps); nothing to do")
            return run_dir
    console.print(
        f"[bold]train[/] {fields.arch}/{fields.backbone} on {len(train_set)} images, batch {bs}, "
        f"{cfg.steps} steps, device {device} -> {run_dir}"
    )
    metrics = trainer.fit(MetricsLog(run_dir / "metrics.jsonl", resume_step=trainer.step if resume_from else None))
    if metrics:
        console.print(f"[bold green]done[/] {run_dir}: mAP {metrics['mAP']:.4f}  AP50 {metrics['AP50']:.4f}")
    return run_dir
