"""Plain helpers the tests share: the tiny detector and recipe, checkpoints, the CLI, references.

Fixtures live in conftest.py; everything else a second test module needs lives here, so
that no test module imports another.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import yaml

from sadc.models.spec import DetectorSpec

CLASSES = ["circle", "square", "triangle", "cross", "ring"]  # the synthetic world's categories
ANCHORS = [[8.0, 12.0], [16.0, 24.0], [32.0, 48.0], [64.0, 96.0], [128.0, 192.0]]  # P3..P7, 2 sizes each


# ------------------------------------------------------------------------------ tiny models


def tiny_spec(**update: Any) -> DetectorSpec:
    """The tiny RetinaNet at 64 px on the synthetic world's classes; ``update`` changes fields."""
    fields: dict[str, Any] = dict(
        backbone="tiny", fpn_channels=16, class_names=CLASSES, input_size=(64, 64), anchor_sizes=ANCHORS
    )
    return DetectorSpec(**{**fields, **update})


def save_detector(path: Path, detector, *, step: int = 1) -> Path:
    """Write ``detector`` as a sadc checkpoint (spec + weights, empty recipe and metrics) at ``path``."""
    from sadc.artefacts.checkpoint import save_checkpoint

    payload = {
        "spec": detector.spec.model_dump(mode="json"),
        "model": detector.state_dict(),
        "recipe": {},
        "metrics": {},
        "step": step,
    }
    save_checkpoint(path, payload)
    return path


def confident(detector, bias: float = 1.0):
    """``detector`` in eval mode with its classification bias set to ``bias``: it detects plenty."""
    import torch

    with torch.no_grad():
        detector.net.head.classification_head.cls_logits.bias.fill_(bias)
    return detector.eval()


def save_tiny_checkpoint(path: Path, *, bias: float = 0.5, seed: int = 0, **spec: Any) -> Path:
    """A random tiny detector (``tiny_spec(**spec)``, seeded) that detects plenty, saved at ``path``."""
    import torch

    from sadc.models.detector import build_detector

    torch.manual_seed(seed)
    return save_detector(path, confident(build_detector(tiny_spec(**spec)), bias))


# ------------------------------------------------------------------------------ recipes and runs


def tiny_recipe_dict(world: Path, run_root: Path, **train: Any) -> dict:
    """A recipe training the tiny detector on ``world`` in ``run_root``; ``train`` overrides train.*."""
    return {
        "name": "tiny",
        "output": str(run_root),
        "model": {
            "student": {
                "backbone": "tiny",
                "fpn_channels": 16,
                "class_names": list(CLASSES),
                "input_size": [64, 64],
                "anchor_sizes": [[int(s) for s in level] for level in ANCHORS],
            }
        },
        "data": {
            "train": {"annotations": str(world / "train.json"), "images": str(world / "train")},
            "val": {"annotations": str(world / "val.json"), "images": str(world / "val")},
            "batch_size": 8,
            "workers": 0,
        },
        "train": {"steps": 6, "lr": 0.002, "warmup_steps": 2, "eval_every": 3, "log_every": 2, "save_every": 3, **train},
    }


def tiny(world: Path, root: Path, **train: Any) -> dict:
    """The tiny recipe cut to 3 steps without evaluation: the CLI tests' run."""
    return tiny_recipe_dict(world, root, **{"steps": 3, "eval_every": 0, **train})


def distill_recipe(world: Path, root: Path, teacher: Path, **train: Any) -> dict:
    """``tiny`` as a distillation run named 'student' from ``teacher`` on the unlabeled images."""
    data = tiny(world, root, **train)
    data["name"] = "student"
    data["model"]["teacher"] = {"source": str(teacher)}
    data["data"].update(unlabeled=str(world / "unlabeled"), batch_size=4, val=None)
    return data


def write_recipe(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def logged_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training line of ``run_dir``/metrics.jsonl."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(x["step"], x["loss"]) for x in lines if "loss" in x]


class InterruptAt:
    """Wraps an objective and sends this process SIGINT during the given call."""

    def __init__(self, inner, at: int):
        self.inner, self.at, self.calls = inner, at, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.inner(batch)


# ------------------------------------------------------------------------------ the CLI


def invoke(*args: Any, app=None):
    """Run ``sadc *args`` (or ``app *args``) in-process with Typer's CliRunner; paths become strings."""
    from typer.testing import CliRunner

    if app is None:
        from sadc.cli.main import app
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(output: str) -> str:
    """The only non-blank line of ``output``."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def fails_cleanly(result, *fragments: str, code: int = 2) -> str:
    """The result is exit ``code`` with one line of output containing every fragment, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------------------ references and backends


def pycocotools_stats(gt_json: Path, results: list[dict]) -> list[float]:
    """The 12 COCOeval bbox stats of pycocotools itself: the reference sadc's mAP is checked against."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def noisy_detections(gt_json: Path, seed: int = 0) -> list[dict]:
    """COCO results near the ground truth of ``gt_json``: 15% missed, jittered boxes, 10% wrong labels, false positives."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data = json.loads(gt_json.read_text())
    cats = [c["id"] for c in data["categories"]]
    out = []
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        if rng.random() < 0.15:  # a miss
            continue
        jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
        label = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
        out.append(
            {
                "image_id": ann["image_id"],
                "category_id": label,
                "bbox": list(np.array([x, y, w, h]) + jitter),
                "score": float(rng.random()),
            }
        )
    for img in data["images"][::3]:  # false positives
        out.append({"image_id": img["id"], "category_id": cats[0], "bbox": [1.0, 1.0, 10.0, 12.0], "score": float(rng.random())})
    return out


def tensorrt_runs_here() -> bool:
    """TensorRT imports and a CUDA device is present (else its clean failures are what is tested)."""
    import torch

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()
