"""Training curves where people look at them: TensorBoard events and results.png.

metrics.jsonl stays the record (:class:`~sadc.engine.hooks.MetricsWriter`); these two
hooks show the same numbers. :class:`TensorBoardWriter` writes every metrics.jsonl line
as TensorBoard scalars into the run directory (``tensorboard --logdir runs``), and
:class:`ResultsPlot` redraws ``results.png`` (loss terms, lr and val mAP against steps,
the picture Ultralytics users look for) from metrics.jsonl at each evaluation and at the
end. Only the main process writes either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sadc.artefacts.files import atomic_write
from sadc.engine.hooks import HookBase
from sadc.engine.rundir import MetricsLog

# Fields of a metrics.jsonl training line that are not curves worth a TensorBoard tag.
NOT_SCALARS = ("step", "time")
# Eval curves drawn in results.png (the 12 COCO numbers are all in TensorBoard).
PLOTTED_EVAL = ("mAP", "AP50", "AP75")


def scalars(record: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{prefix/key: value}`` for the numeric fields of one metrics.jsonl record (nested dicts such
    as ``per_class`` and the step/time fields are left out)."""
    return {
        f"{prefix}/{k}": float(v)
        for k, v in record.items()
        if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class TensorBoardWriter(HookBase):
    """Each metrics.jsonl line, as scalars ``train/<term>`` and ``val/<metric>`` at its step.

    Needs the ``tensorboard`` package (``pip install 'sadc[tb]'``); without it the run
    prints one line and goes on. A resumed run purges events past its resume step, so
    TensorBoard shows one history, as metrics.jsonl does.
    """

    def __init__(self) -> None:
        self.writer: Any = None

    def before_train(self) -> None:
        t = self.trainer
        if not t.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's wrapper raises ImportError (or ModuleNotFoundError) without the package
            line = "tensorboard is not installed: no TensorBoard events (pip install 'sadc[tb]'); metrics.jsonl and results.png are written as usual"
            t.console.print(line, markup=False, soft_wrap=True, style="yellow")
            return
        self.writer = SummaryWriter(log_dir=str(t.run_dir), purge_step=t.step + 1 if t.step else None)

    def after_step(self) -> None:
        t = self.trainer
        if self.writer is None:
            return
        for record, prefix in ((t.last_record, "train"), (t.last_eval, "val")):
            if record is not None:
                for tag, value in scalars(record, prefix).items():
                    self.writer.add_scalar(tag, value, global_step=t.step)
        if t.last_eval is not None:
            self.writer.flush()  # visible in a running TensorBoard at each evaluation, not only at the end

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_curves(path: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, float]]]]:
    """metrics.jsonl -> (training curves, eval curves), each ``{name: [(step, value), ...]}``."""
    train: dict[str, list[tuple[int, float]]] = {}
    val: dict[str, list[tuple[int, float]]] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        if not line.strip():
            continue
        record = json.loads(line)
        step = int(record.get("step", 0))
        if isinstance(record.get("eval"), dict):
            for k, v in scalars(record["eval"], "").items():
                val.setdefault(k[1:], []).append((step, v))
        else:
            for k, v in scalars(record, "").items():
                train.setdefault(k[1:], []).append((step, v))
    return train, val


def plot_results(metrics: Path, out: Path) -> Path | None:
    """results.png from metrics.jsonl: one panel per loss term (``loss`` is the weighted sum), lr,
    and val mAP/AP50/AP75 against steps. Written atomically; None when there is nothing to draw."""
    train, val = read_curves(metrics)
    panels = [k for k in train if k not in ("img_s", "grad_norm")]
    panels = sorted(panels, key=lambda k: (k != "loss", k == "lr", k))  # total loss first, lr last
    if val:
        panels.append("val")
    if not panels:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state in a training process

    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, panels):
        curves = {k: val[k] for k in PLOTTED_EVAL if k in val} if name == "val" else {name: train[name]}
        for label, points in curves.items():
            steps, values = zip(*points)
            ax.plot(steps, values, marker="." if len(points) < 30 else None, label=label)
        ax.set_title("val" if name == "val" else name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if name == "val":
            ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png"))
    return out


class ResultsPlot(HookBase):
    """Redraws run_dir/results.png from metrics.jsonl at each evaluation and at the last step."""

    def __init__(self, log: MetricsLog):
        self.log = log

    def after_step(self) -> None:
        t = self.trainer
        if not (t.is_main and self.log.enabled):
            return
        if t.last_eval is not None or t.step == t.cfg.steps:
            plot_results(self.log.path, t.run_dir / "results.png")
