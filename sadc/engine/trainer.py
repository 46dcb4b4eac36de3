"""The training loop shared by `sadc train` and `sadc distill`.

Read it top to bottom: ``Trainer.fit`` pulls a batch, asks the objective for named loss
terms, sums them with the recipe's weights and steps; logging, progress, evaluation,
checkpoints and interrupts are hooks (:mod:`sadc.engine.hooks`) called after each step.
Everything specific to supervised training or distillation lives in the objective.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from rich.console import Console
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sadc.artefacts.checkpoint import load_checkpoint, save_checkpoint
from sadc.data.loaders import close_batches
from sadc.engine.hooks import HookBase, default_hooks
from sadc.engine.rundir import MetricsLog
from sadc.errors import SadcError, one_line
from sadc.recipe import TrainSection


class Objective(Protocol):
    """``objective(batch) -> {name: scalar loss}``; the trainer weights and sums them."""

    def __call__(self, batch: Any) -> dict[str, Tensor]: ...


def resolve_device(name: str) -> torch.device:
    """train.device (auto, cpu, cuda, cuda:N or N; see :func:`sadc.devices.parse_device`) -> torch.device."""
    from sadc.engine.machine import check_device  # one rule for every --device and train.device

    return torch.device(check_device(name, "train.device"))


FUSED_DEVICES = frozenset({"cpu", "cuda"})  # where torch has fused SGD and AdamW kernels


def build_optimizer(model: nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    # No weight decay on norms and biases (1-d parameters), as detection codebases do.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # torch's fused kernels (one pass over each parameter, where foreach makes ~10): the
    # quickstart teacher's AdamW step takes 7 instead of 25 ms on a 2-core CPU (benchmarks/RESULTS.md).
    # Same update rule; its float rounding can differ from the foreach form's in the last bits
    # (with torch's AVX-512 kernels it does, and a run lands elsewhere; with AVX2 it did not).
    fused = FUSED_DEVICES.issuperset(p.device.type for p in [*decay, *no_decay]) or None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


def lr_factor(step: int, cfg: TrainSection) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then cosine / step / constant."""
    # A warm-up as long as the run (train.steps=20 with the default 50) is shortened to
    # a fifth of it, so a short run still decays rather than ramping up to its last step.
    warmup = cfg.warmup_steps if cfg.warmup_steps < cfg.steps else cfg.steps // 5
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "step":
        return 0.1 ** sum(step >= m * cfg.steps for m in cfg.step_milestones)
    return 1.0


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (None when ``decay`` is 0).

    Buffers are averaged too (``use_buffers``), so BatchNorm statistics match the averaged
    weights without a recalibration pass. The first update copies the weights.
    """
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@contextmanager
def weights_of(model: nn.Module, ema: AveragedModel | None) -> Iterator[None]:
    """Within the block ``model`` holds the EMA weights (if any); its own come back after."""
    if ema is None:
        yield
        return
    own = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema.module.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(own)


@dataclass
class Trainer:
    """Runs ``cfg.steps`` optimiser steps of ``objective`` on ``model``.

    batches(start_step) must return an iterator positioned at ``start_step`` (samplers
    are deterministic in the seed and the step, so resuming is exact). ``evaluate``
    returns metrics with a ``mAP`` key, or is None (no val set). ``checkpoint_extra``
    is stored in every checkpoint (spec, recipe, teacher reference, ...).
    """

    model: nn.Module
    objective: Objective
    batches: Callable[[int], Iterator]
    cfg: TrainSection
    run_dir: Path
    checkpoint_extra: dict
    batch_size: int
    evaluate: Callable[[], dict[str, float]] | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    is_main: bool = True
    console: Console = field(default_factory=Console)
    wrapped: nn.Module | None = None  # the DDP wrapper, when distributed

    def __post_init__(self) -> None:
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.ema = make_ema(self.model, self.cfg.ema_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.cfg))
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.best = -1.0
        self.metrics: dict[str, float] = {}
        self.skipped_steps = 0
        self.finite_steps = 0  # steps with a finite loss in this process's fit
        self.last_logged: dict[str, float] | None = None  # this step's scalars; None = skipped (non-finite)
        self.last_record: dict[str, float] | None = None  # the metrics.jsonl line written this step, if any
        self.last_eval: dict[str, Any] | None = None  # the eval metrics written to metrics.jsonl this step, if any
        self.log_window: dict[str, Any] = {}  # {"sums": {name: sum}, "steps": {name: n}} since the last metrics line

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.amp
        if amp == "auto":
            return torch.float16 if self.device.type == "cuda" else None
        return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]

    # -- checkpoints --------------------------------------------------------------------

    def _payload(self, with_train_state: bool) -> dict:
        # best.pt holds what was evaluated: the EMA weights when train.ema_decay is set.
        weights = self.model if with_train_state or self.ema is None else self.ema.module
        payload = {
            **self.checkpoint_extra,
            "model": weights.state_dict(),
            "metrics": self.metrics,
            "step": self.step,
            "finished": self.step >= self.cfg.steps,
        }
        if with_train_state:
            payload["train"] = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(),
                "best": self.best,
                "skipped_steps": self.skipped_steps,
                "log_window": self.log_window,
            }
            if self.ema is not None:
                payload["train"]["ema"] = self.ema.state_dict()
        return payload

    def save(self, best: bool = False) -> None:
        if not self.is_main:
            return
        save_checkpoint(self.run_dir / "last.pt", self._payload(with_train_state=True))
        if best:
            save_checkpoint(self.run_dir / "best.pt", self._payload(with_train_state=False))

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        if "train" not in ckpt:
            raise SadcError(f"{path}: has no training state (a best.pt?); resume needs the run's last.pt")
        self.model.load_state_dict(ckpt["model"])
        state = ckpt["train"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.best = state["best"]
        self.skipped_steps = state.get("skipped_steps", 0)
        self.log_window = state.get("log_window", {})
        if self.ema is not None:
            if "ema" not in state:
                raise SadcError(f"{path}: was saved without train.ema_decay; resume with the recipe that started the run")
            self.ema.load_state_dict(state["ema"])
        self.step = int(ckpt["step"])
        self.metrics = ckpt.get("metrics", {})

    # -- the loop -----------------------------------------------------------------------

    def train_step(self, batch) -> dict[str, float] | None:
        """One optimiser step. Returns the logged scalars, or None if the loss was not finite."""
        net = self.wrapped or self.model
        net.train()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            losses = self.objective(batch)
        total = cast(Tensor, sum(self.loss_weights.get(k, 1.0) * v for k, v in losses.items()))  # losses is never empty
        # One host sync per step (free on CPU): a non-finite loss must not reach the weights.
        if not torch.isfinite(total).item():
            self.optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                # torch warns when the schedule moves before any optimizer.step(): here
                # that is by design, and sadc reports the skipped step itself.
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                self.scheduler.step()  # the step still counts, so schedule and data stay aligned
            return None
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        logged = {k: float(v.detach()) for k, v in losses.items()}
        logged["loss"] = float(total.detach())
        logged["grad_norm"] = float(grad_norm)
        return logged

    def run_evaluation(self) -> bool:
        """Evaluate (if there is a val set); returns True when this is the best so far."""
        if self.evaluate is None:
            return True
        self.model.eval()
        with weights_of(self.model, self.ema):
            self.metrics = self.evaluate()
        self.model.train()
        better = self.metrics.get("mAP", 0.0) > self.best
        self.best = max(self.best, self.metrics.get("mAP", 0.0))
        return better

    def _next_batch(self, batches: Iterator) -> Any:
        try:
            return to_device(next(batches), self.device)
        except SadcError as err:  # a bad image or annotation met mid-run: keep the steps done so far
            if self.step == 0:
                raise
            self.save()
            raise SadcError(
                f"{one_line(err)}; {self.run_dir / 'last.pt'} saved at step {self.step}: fix the data and continue with --resume"
            ) from err

    def fit(self, log: MetricsLog, hooks: list[HookBase] | None = None) -> dict[str, float]:
        """Step until ``cfg.steps``; returns the last evaluation's metrics.

        ``hooks`` default to :func:`~sadc.engine.hooks.default_hooks` (metrics.jsonl,
        progress, eval + checkpoints, SIGINT/SIGTERM -> last.pt).
        """
        cfg = self.cfg
        if self.step >= cfg.steps:
            return self.metrics
        hooks = default_hooks(log) if hooks is None else hooks
        batches = self.batches(self.step)
        bad_in_a_row, first = 0, self.step
        self.finite_steps = 0  # a run resumed into only non-finite steps has learnt nothing either
        for hook in hooks:
            hook.trainer = self
        started: list[HookBase] = []
        try:
            for hook in hooks:
                hook.before_train()
                started.append(hook)
            while self.step < cfg.steps:
                self.last_logged = self.train_step(self._next_batch(batches))
                self.step += 1
                if self.last_logged is None:
                    bad_in_a_row += 1
                    self.skipped_steps += 1
                    if bad_in_a_row >= cfg.max_bad_steps:
                        raise SadcError(
                            f"{bad_in_a_row} consecutive steps with a non-finite loss up to step {self.step}; stopped. "
                            f"{self.run_dir / 'last.pt'} holds the last good state: lower train.lr or set train.grad_clip"
                        )
                else:
                    bad_in_a_row = 0
                    self.finite_steps += 1
                if self.step == cfg.steps and not self.finite_steps:
                    raise SadcError(
                        f"all {self.step - first} steps of this run had a non-finite loss (train.max_bad_steps "
                        f"{cfg.max_bad_steps} was not reached); nothing was learnt: lower train.lr or distill.weight, "
                        "or set train.grad_clip"
                    )
                for hook in hooks:
                    hook.after_step()
        finally:
            close_batches(batches)  # loader workers stop here, also after an error
            for hook in reversed(started):
                hook.after_train()
        return self.metrics
