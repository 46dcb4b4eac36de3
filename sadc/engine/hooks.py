"""What happens around each training step: logging, progress, evaluation, checkpoints, interrupts.

:class:`~sadc.engine.trainer.Trainer` runs the loop; each concern here is one small
hook in the manner of detectron2's ``HookBase``: ``before_train`` once, ``after_step``
after every optimiser step (``trainer.step`` already counts it; ``trainer.last_logged``
holds that step's scalars, or None when the step was skipped as non-finite;
``trainer.last_record`` and ``trainer.last_eval`` the metrics.jsonl training line and
eval metrics written at this step, or None) and
``after_train`` once, also when the loop raises. Hooks run in list order.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import TYPE_CHECKING

from sadc.engine.rundir import MetricsLog
from sadc.engine.signals import graceful_interrupt
from sadc.errors import Interrupted
from sadc.progress import progress_bar

if TYPE_CHECKING:
    from sadc.engine.trainer import Trainer


class HookBase:
    """A no-op hook; ``trainer`` is set by :meth:`Trainer.fit` before ``before_train``."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class MetricsWriter(HookBase):
    """Averages the logged scalars over ``train.log_every`` steps into one metrics.jsonl line.

    The line has every loss term, ``loss``, ``grad_norm``, ``step``, ``lr``, ``img_s``
    (images per second over the window, in this process) and ``time`` (seconds since
    this process began training). The average is over the finite steps of the window,
    whose running sums live in ``trainer.log_window`` (saved in last.pt): a run resumed
    between two lines writes the same lines as one that never stopped. The latest line
    is kept in ``trainer.last_record`` for the progress bar.
    """

    def __init__(self, log: MetricsLog):
        self.log = log

    def before_train(self) -> None:
        self.t_start = time.time()
        self.t_window, self.n_images = time.perf_counter(), 0

    def after_step(self) -> None:
        t, cfg, logged = self.trainer, self.trainer.cfg, self.trainer.last_logged
        t.last_record = None
        window = t.log_window
        if logged is not None:
            self.n_images += t.batch_size
            sums, seen = window.setdefault("sums", {}), window.setdefault("steps", {})
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v
                seen[k] = seen.get(k, 0) + 1
        if (t.step % cfg.log_every == 0 or t.step == cfg.steps) and window.get("sums"):
            # Each term's mean over the finite steps that had it (alternating steps carry different terms).
            record = {k: v / window["steps"][k] for k, v in window["sums"].items()}
            record.update(
                step=t.step,
                lr=t.optimizer.param_groups[0]["lr"],
                img_s=self.n_images / (time.perf_counter() - self.t_window),
                time=round(time.time() - self.t_start, 1),
            )
            self.log.write(record)
            t.last_record = record
            window.clear()
            self.t_window, self.n_images = time.perf_counter(), 0


class ProgressBar(HookBase):
    """A rich progress bar of steps, with the latest logged losses, lr and throughput (rank 0 only)."""

    def before_train(self) -> None:
        t = self.trainer
        self.progress = progress_bar(t.console, transient=False, disable=not t.is_main, info=True)
        self.progress.start()
        self.task = self.progress.add_task("step", total=t.cfg.steps, completed=t.step, info="")

    def after_step(self) -> None:
        t = self.trainer
        record = t.last_record
        if record is not None:
            hidden = ("step", "lr", "img_s", "grad_norm", "time")
            info = " ".join(f"{k} {v:.3f}" for k, v in record.items() if k not in hidden)
            self.progress.update(self.task, info=f"{info} lr {record['lr']:.1e} {record['img_s']:.1f} img/s")
        self.progress.update(self.task, completed=t.step)

    def after_train(self) -> None:
        self.progress.stop()


class EvalAndCheckpoint(HookBase):
    """Every ``train.eval_every`` steps and at the end: evaluate, log, save last.pt (and best.pt);
    otherwise every ``train.save_every`` steps: save last.pt. A step skipped as non-finite
    saves nothing (last.pt keeps the step of the last good state), except the last step:
    the run still ends evaluated and saved.
    """

    def __init__(self, log: MetricsLog):
        self.log = log

    def after_step(self) -> None:
        t, cfg = self.trainer, self.trainer.cfg
        final = t.step == cfg.steps
        t.last_eval = None
        if t.last_logged is None and not (final and t.finite_steps):
            return
        at_eval = cfg.eval_every and t.step % cfg.eval_every == 0
        if at_eval or final:
            best = t.run_evaluation()
            if t.metrics:
                self.log.write({"step": t.step, "eval": t.metrics})
                t.last_eval = t.metrics
                t.console.print(f"step {t.step}: " + " ".join(f"{k} {t.metrics[k]:.4f}" for k in ("mAP", "AP50", "AP75")))
            t.save(best=best)
        elif t.step % cfg.save_every == 0:
            t.save()


class InterruptToCheckpoint(HookBase):
    """The first SIGINT/SIGTERM/SIGUSR1 finishes the step in progress, saves last.pt and raises :class:`Interrupted`."""

    def before_train(self) -> None:
        self._scope = ExitStack()
        self.state = self._scope.enter_context(graceful_interrupt())

    def after_step(self) -> None:
        t = self.trainer
        if t.last_logged is None or self.state["signal"] is None:
            return
        t.save()
        raise Interrupted(f"interrupted at step {t.step}/{t.cfg.steps}; {t.run_dir / 'last.pt'} saved, continue with --resume")

    def after_train(self) -> None:
        self._scope.close()


def default_hooks(log: MetricsLog) -> list[HookBase]:
    """Logging, then progress (it shows the logged line), then eval/checkpoints, then the curves
    (TensorBoard, results.png: they show what was just logged), then the interrupt check."""
    from sadc.engine.curves import ResultsPlot, TensorBoardWriter  # curves.py builds on HookBase

    return [
        MetricsWriter(log),
        ProgressBar(),
        EvalAndCheckpoint(log),
        TensorBoardWriter(),
        ResultsPlot(log),
        InterruptToCheckpoint(),
    ]
