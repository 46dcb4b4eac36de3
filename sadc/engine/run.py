"""`sadc train`: recipe -> datasets, model, objective -> Trainer.fit.

The pieces every training command shares (run directory, datasets, evaluator, the
trainer itself) live here too; `sadc distill` (sadc.distill.run) reuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from sadc.data.coco import CocoDataset
from sadc.data.evaluate import evaluate
from sadc.data.formats import open_labeled
from sadc.data.loaders import build_loader
from sadc.engine.budget import check_batch_size
from sadc.engine.distributed import (
    DistInfo,
    broadcast_object,
    device_for,
    dist_info_from_env,
    is_peer_failure,
    peer_failure_message,
    process_group,
)
from sadc.engine.rundir import MetricsLog, hold_run_dir, prepare_run_dir
from sadc.engine.signals import graceful_interrupt
from sadc.engine.trainer import Objective, Trainer, resolve_device
from sadc.errors import SadcError
from sadc.models.detector import DenseForward, Detector
from sadc.models.loading import load_detector, mismatch_line, spec_from_fields
from sadc.recipe import Recipe, SplitSection, TrainSection, check_paths, save_recipe

log = logging.getLogger(__name__)


@dataclass
class SupervisedObjective:
    """Focal + box loss (torchvision's RetinaNet/FCOS losses) on ground-truth boxes."""

    model: Detector
    forward: nn.Module | None = None  # DenseForward(model), or its DDP wrapper

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        forward = self.forward or DenseForward(self.model)
        return self.model.loss(forward(images), targets)


def coco_split(split: SplitSection | None, size: tuple[int, int], recipe: Recipe, train: bool) -> CocoDataset | None:
    """data.train (``train``) or data.val in any layout (:mod:`sadc.data.formats`), as a dataset."""
    if split is None:
        return None
    return open_labeled(
        split.annotations,
        size,
        split="train" if train else "val",
        fmt=split.format,
        images=split.images,
        augment=recipe.data.augment if train else None,
        seed=recipe.seed,
    )


def make_evaluator(model: Detector, val: CocoDataset, batch_size: int, workers: int, device: torch.device):
    """A closure returning val mAP metrics of ``model`` (in eval mode) at call time."""
    loader = build_loader(val, batch_size=batch_size, workers=workers, shuffle=False, seed=0, infinite=False)

    def run() -> dict[str, float]:
        with torch.inference_mode():
            return evaluate(lambda x: model(x.to(device)), loader, val.coco, val.cat_ids)

    return run


def check_classes(model: Detector, data: CocoDataset, what: str) -> None:
    if list(model.spec.class_names) != list(data.class_names):
        raise SadcError(
            f"{what}: model classes {model.spec.class_names} differ from {data.coco_json}'s {data.class_names}; "
            "set class_names in the recipe's model section to the dataset's categories (sorted by id)"
        )


@dataclass
class Session:
    """What a training command sets up before building its objective."""

    recipe: Recipe
    run_dir: Path
    resume_from: Path | None
    device: torch.device
    dist: DistInfo
    console: Console


@contextmanager
def session(recipe: Recipe, resume: bool, console: Console | None) -> Iterator[Session]:
    """A training command's scope: the process group, the run directory (locked by rank 0) and the seed."""
    dist = dist_info_from_env()
    device = resolve_device(recipe.train.device)
    with process_group(dist, device), ExitStack() as scope:
        console = console or Console()
        device = device_for(dist, device)
        run_dir, resume_from = None, None
        if dist.is_main:
            if resume:  # lock first: resuming tidies the folder another process may be writing
                scope.enter_context(hold_run_dir(recipe.run_dir))
            run_dir, resume_from = prepare_run_dir(recipe.run_dir, resume)
            if not resume:  # a new run's folder is only known once chosen
                scope.enter_context(hold_run_dir(run_dir))
        run_dir, resume_from = broadcast_object((run_dir, resume_from), dist)
        if resume_from is not None and dist.is_main:
            console.print(f"resuming {resume_from}")
        torch.manual_seed(recipe.seed)
        if recipe.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield Session(recipe, run_dir, resume_from, device, dist, console)


def training_forward(model: Detector, train: TrainSection) -> DenseForward:
    """``model`` as training runs it: its memory format from ``train.channels_last``, its loss as
    ``train.batched_loss`` says (the benchmarks build their steps with this too)."""
    model.batched_loss = train.batched_loss
    return DenseForward(model, channels_last=train.channels_last)


def wrap_for_training(model: Detector, s: Session) -> nn.Module:
    """The module the objective calls: :func:`training_forward`, wrapped in DDP when distributed."""
    forward: nn.Module = training_forward(model, s.recipe.train)
    if s.dist.enabled:
        ids = [s.device.index] if s.device.type == "cuda" else None
        forward = nn.parallel.DistributedDataParallel(forward, device_ids=ids)
    return forward


def fit(
    s: Session,
    model: Detector,
    objective: Objective,
    batches: Callable[[int], Iterator],
    images_per_step: int,
    val: CocoDataset | None,
    extra: dict | None = None,
    loss_weights: dict[str, float] | None = None,
) -> dict[str, float] | None:
    """Build the Trainer, resume if asked, run it; returns final metrics (None if already done)."""
    recipe = s.recipe
    if s.dist.is_main:
        s.run_dir.mkdir(parents=True, exist_ok=True)
    evaluator = None
    if val is not None and s.dist.is_main:
        evaluator = make_evaluator(model, val, recipe.data.batch_size, recipe.data.workers, s.device)
    trainer = Trainer(
        model=model,
        objective=objective,
        batches=batches,
        cfg=recipe.train,
        run_dir=s.run_dir,
        checkpoint_extra={
            "spec": model.spec.model_dump(mode="json"),
            "recipe": recipe.model_dump(mode="json"),
            **(extra or {}),
        },
        batch_size=images_per_step * s.dist.world_size,
        evaluate=evaluator,
        loss_weights=loss_weights or {},
        device=s.device,
        is_main=s.dist.is_main,
        console=s.console,
    )
    if s.resume_from is not None:
        resume_trainer(trainer, s.resume_from)  # before the recipe is written: a refused resume changes nothing
    if s.dist.is_main:
        save_recipe(recipe, s.run_dir / "recipe.resolved.yaml")
    if s.resume_from is not None and trainer.step >= recipe.train.steps:
        s.console.print(f"{s.run_dir} already finished ({trainer.step} steps); nothing to do")
        return None
    log_file = MetricsLog(s.run_dir / "metrics.jsonl", trainer.step if s.resume_from else None, enabled=s.dist.is_main)
    # The outer handler keeps torchrun's SIGTERM (sent once another rank has died) from
    # killing this process half-way through the save below.
    with graceful_interrupt():
        try:
            return trainer.fit(log_file)
        except Exception as err:
            if not (s.dist.enabled and is_peer_failure(err)):
                raise
            # A collective failed inside a step, before the optimiser stepped: the weights
            # are those of the last finished step, so rank 0 can keep them for --resume.
            trainer.save()
            saved = f"; {s.run_dir / 'last.pt'} saved at step {trainer.step}, continue with --resume" if s.dist.is_main else ""
            raise SadcError(peer_failure_message(s.dist, err, saved)) from None


def resume_trainer(trainer: Trainer, path: Path) -> None:
    """``trainer.resume(path)``, with one line when last.pt does not fit this recipe's model or optimiser."""
    try:
        trainer.resume(path)
    except (RuntimeError, ValueError, KeyError) as err:  # load_state_dict of model / optimizer / scheduler
        raise SadcError(
            f"{path}: does not fit this recipe's model or optimiser ({mismatch_line(err)}); resume with the recipe that "
            "started the run, or drop --resume to start a new run"
        ) from None


TRAIN_PATHS = ("data.train.annotations", "data.train.images", "data.val.annotations", "data.val.images")


def run_train(recipe: Recipe, *, resume: bool = False, console: Console | None = None) -> Path:
    """Supervised training of ``model.<train.target>`` on ``data.train``; returns the run dir."""
    cfg = recipe.train
    if recipe.data.train is None:
        raise SadcError(
            "recipe: data.train is not set; `sadc train` needs a labeled set (a COCO json, a YOLO data.yaml or a VOC folder)"
        )
    fields = getattr(recipe.model, cfg.target)
    if fields is None:
        raise SadcError(f"recipe: model.{cfg.target} is not set, but train.target={cfg.target}")
    check_paths(recipe, (*TRAIN_PATHS, f"model.{cfg.target}.source"))  # seconds, not a failed run
    if recipe.data.unlabeled is not None:
        log.info("data.unlabeled (%s) is not trained on by `sadc train`; `sadc distill` uses it", recipe.data.unlabeled)
    with session(recipe, resume, console) as s:
        dist = s.dist
        size = tuple(fields.input_size)
        train_set = coco_split(recipe.data.train, size, recipe, train=True)
        assert train_set is not None  # data.train was checked above
        val_set = coco_split(recipe.data.val, size, recipe, train=False)
        model = load_detector(spec_from_fields(fields), fields.source, weights=fields.weights).to(s.device)
        check_classes(model, train_set, "model." + cfg.target)
        bs = recipe.data.batch_size

        def batches(start_step: int):
            return iter(
                build_loader(
                    train_set,
                    batch_size=bs,
                    workers=recipe.data.workers,
                    shuffle=True,
                    seed=recipe.seed,
                    start_step=start_step,
                    rank=dist.rank,
                    world_size=dist.world_size,
                )
            )

        check_batch_size([("data.train", bs, len(train_set))], DenseForward(model), size, s.device)
        if dist.is_main:
            s.console.print(
                f"[bold]train[/] {fields.arch}/{fields.backbone} on {len(train_set)} images, batch {bs}"
                + (f" x {dist.world_size} ranks = {bs * dist.world_size}" if dist.enabled else "")
                + f", {cfg.steps} steps, device {s.device} -> {s.run_dir}"
            )
        objective = SupervisedObjective(model, wrap_for_training(model, s))
        metrics = fit(s, model, objective, batches, bs, val_set)
        if metrics and dist.is_main:
            s.console.print(f"[bold green]done[/] {s.run_dir}: mAP {metrics['mAP']:.4f}  AP50 {metrics['AP50']:.4f}")
        return s.run_dir
