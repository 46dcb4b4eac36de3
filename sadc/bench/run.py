"""`sadc bench`: accuracy (and, later, latency) of one or more artefacts, side by side."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sadc.bench.accuracy import evaluate
from sadc.data.coco import CocoDetection
from sadc.data.loaders import build_loader
from sadc.errors import SadcError
from sadc.runtime.base import Predictor


@dataclass
class BenchResult:
    name: str
    path: str
    accuracy: dict[str, float] = field(default_factory=dict)


def load_predictor(path: Path, **kwargs) -> Predictor:
    """Pick the backend from the artefact's suffix."""
    path = Path(path)
    if not path.exists():
        raise SadcError(f"{path}: model not found")
    if path.suffix in (".pt", ".pth"):
        from sadc.runtime.torch_rt import TorchPredictor

        return TorchPredictor(path, **kwargs)
    raise SadcError(f"{path}: unknown artefact type {path.suffix!r} (expected a sadc checkpoint .pt)")


def default_images_dir(annotations: Path) -> Path:
    """``x/val.json`` -> ``x/val/`` (the layout `sadc data synth` writes)."""
    return annotations.with_suffix("")


def bench_accuracy(
    predictor: Predictor,
    annotations: Path,
    images: Path,
    *,
    batch_size: int = 8,
    workers: int = 0,
    save_detections: Path | None = None,
    console: Console | None = None,
) -> dict[str, float]:
    data = CocoDetection(annotations, images, tuple(predictor.spec.input_size))
    if list(data.class_names) != list(predictor.spec.class_names):
        raise SadcError(
            f"{annotations}: categories {data.class_names} differ from {predictor.path}'s classes "
            f"{predictor.spec.class_names}"
        )
    loader = build_loader(data, batch_size=batch_size, workers=workers, shuffle=False, seed=0, infinite=False)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"mAP {predictor.name}", total=len(data))
        return evaluate(
            predictor.predict,
            loader,
            data.coco_json,
            data.cat_ids,
            progress=lambda n: progress.advance(task, n),
            save_detections=save_detections,
        )


def results_table(results: list[BenchResult]) -> Table:
    table = Table(title="sadc bench")
    table.add_column("model")
    for col in ("mAP", "AP50", "AP75", "APs", "APm", "APl", "ΔmAP"):
        table.add_column(col, justify="right")
    ref = results[0].accuracy.get("mAP") if results else None
    for r in results:
        a = r.accuracy
        delta = "" if ref is None or r is results[0] else f"{a['mAP'] - ref:+.4f}"
        table.add_row(r.name, *(f"{a[k]:.4f}" for k in ("mAP", "AP50", "AP75", "APs", "APm", "APl")), delta)
    return table


def write_report(results: list[BenchResult], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps([r.__dict__ for r in results], indent=2))
