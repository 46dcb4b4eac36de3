"""Shared fixtures: a tiny synthetic world and tiny detector specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sadc.models.spec import DetectorSpec

torch.set_num_threads(1)  # tests run two workers on two cores


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small synthetic world at 64 px (train 48, val 16, unlabeled 24)."""
    from sadc.data.synth import make_synthetic_world

    out = tmp_path_factory.mktemp("world") / "synth"
    make_synthetic_world(out, train=48, val=16, test=0, unlabeled=24, size=64, seed=0)
    return out


@pytest.fixture
def tiny_spec() -> DetectorSpec:
    return DetectorSpec(
        backbone="tiny",
        fpn_channels=16,
        class_names=["circle", "square", "triangle", "cross", "ring"],
        input_size=(64, 64),
        anchor_sizes=[[8.0, 12.0], [16.0, 24.0], [32.0, 48.0], [64.0, 96.0], [128.0, 192.0]],
    )


def pycocotools_stats(gt_json: Path, results: list[dict]) -> list[float]:
    """The 12 COCOeval bbox stats of pycocotools itself: the reference sadc's mAP is checked against."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def tiny_recipe_dict(world: Path, run_root: Path, **train) -> dict:
    """A recipe training the tiny detector on ``world`` in ``run_root``."""
    return {
        "name": "tiny",
        "output": str(run_root),
        "model": {
            "student": {
                "backbone": "tiny",
                "fpn_channels": 16,
                "class_names": ["circle", "square", "triangle", "cross", "ring"],
                "input_size": [64, 64],
                "anchor_sizes": [[8, 12], [16, 24], [32, 48], [64, 96], [128, 192]],
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
