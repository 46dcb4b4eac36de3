"""SAD end to end on tiny models: start-up checks, class maps, losses logged, checkpoints."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from sadc.artefacts.checkpoint import load_checkpoint
from sadc.distill.run import run_distill
from sadc.distill.teacher import (
    IncompatibleModels,
    TeacherTargets,
    check_distillable,
    class_index,
)
from sadc.engine.run import run_train
from sadc.errors import Interrupted
from sadc.models.detector import build_detector
from sadc.recipe import recipe_from_dict
from tests.helpers import InterruptAt, logged_losses, tiny_recipe_dict


@pytest.fixture(scope="module")
def tiny_teacher(tiny_world, tmp_path_factory):
    """A tiny detector trained for a few steps: the teacher of these tests."""
    root = tmp_path_factory.mktemp("teacher")
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, root, steps=8, eval_every=0, lr=0.005))
    return run_train(recipe) / "best.pt"


def distill_recipe(world, root, teacher, **overrides):
    data = tiny_recipe_dict(world, root, steps=4, eval_every=2, log_every=1)
    data["name"] = "student"
    data["model"]["teacher"] = {"source": str(teacher)}
    data["model"]["student"]["fpn_channels"] = 8
    data["data"]["unlabeled"] = str(world / "unlabeled")
    data["data"]["batch_size"] = 4
    data["distill"] = {"pseudo_threshold": 0.05}
    for key, value in overrides.items():
        section, field = key.split("__")
        data.setdefault(section, {})[field] = value
    return data


def _logged_keys(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return set().union(*(line.keys() for line in lines if "loss" in line))


def test_sad_logs_every_term_and_stores_only_the_student(tiny_world, tmp_path, tiny_teacher):
    run_dir = run_distill(recipe_from_dict(distill_recipe(tiny_world, tmp_path, tiny_teacher)))
    assert {"cls", "box", "cls_pseudo", "box_pseudo", "distill", "loss"} <= _logged_keys(run_dir)
    ckpt = load_checkpoint(run_dir / "best.pt")
    assert ckpt["spec"]["fpn_channels"] == 8
    student_shapes = {k: v.shape for k, v in ckpt["model"].items()}
    teacher_shapes = {k: v.shape for k, v in load_checkpoint(tiny_teacher)["model"].items()}
    assert set(student_shapes) == set(teacher_shapes) and student_shapes != teacher_shapes  # the student alone
    assert student_shapes["net.head.classification_head.cls_logits.weight"][1] == 8
    assert ckpt["teacher"]["source"] == str(tiny_teacher) and len(ckpt["teacher"]["sha256"]) == 64
    assert set(ckpt["metrics"]) >= {"mAP", "AP50"}


def test_pure_distillation_without_labels(tiny_world, tmp_path, tiny_teacher):
    data = distill_recipe(tiny_world, tmp_path, tiny_teacher)
    data["data"]["train"] = None
    run_dir = run_distill(recipe_from_dict(data))
    keys = _logged_keys(run_dir)
    assert {"distill", "cls_pseudo"} <= keys and "cls" not in keys


@pytest.mark.parametrize(
    "distill",
    [
        {"loss": "kl"},
        {"anchors": "positives", "normalizer": "positives"},
        {"form": "authors", "skip_empty": True, "pseudo_labels": False},
    ],
)
def test_variants_run(tiny_world, tmp_path, tiny_teacher, distill):
    data = distill_recipe(tiny_world, tmp_path, tiny_teacher, train__steps=2, train__warmup_steps=1, train__eval_every=0)
    data["distill"].update(distill)
    run_dir = run_distill(recipe_from_dict(data))
    assert "distill" in _logged_keys(run_dir)


def test_mismatched_anchors_fail_at_start_naming_the_difference(tiny_spec):
    teacher = build_detector(tiny_spec)
    other = build_detector(tiny_spec.model_copy(update={"anchor_ratios": [0.5, 1.0]}))
    with pytest.raises(IncompatibleModels, match="teacher has 2 anchors per location, student 4"):
        check_distillable(teacher, other, (64, 64))
    shifted = build_detector(tiny_spec.model_copy(update={"anchor_sizes": [[10.0, 12.0], *tiny_spec.anchor_sizes[1:]]}))
    with pytest.raises(IncompatibleModels, match="anchor boxes differ"):
        check_distillable(teacher, shifted, (64, 64))
    check_distillable(teacher, build_detector(tiny_spec.model_copy(update={"fpn_channels": 8})), (64, 64))


def test_class_map_slices_logits_and_remaps_pseudo_labels(tiny_spec):
    teacher = build_detector(tiny_spec).eval()  # circle, square, triangle, cross, ring
    student = build_detector(tiny_spec.model_copy(update={"class_names": ["ring", "disc"]}))
    with pytest.raises(IncompatibleModels, match=r"student class 'disc' has no teacher class 'disc'.*distill.class_map"):
        class_index(teacher, student, None)
    classes = class_index(teacher, student, {"disc": "circle"})
    assert classes == [4, 0]
    with torch.no_grad():
        teacher.net.head.classification_head.cls_logits.bias.fill_(3.0)  # everything is detected
    targets = TeacherTargets(teacher, classes, threshold=0.5)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    logits, pseudo = targets(images)
    with torch.no_grad():
        full = teacher.dense(teacher.preprocess(images)).cls_logits
    assert torch.equal(logits, full[..., [4, 0]])
    labels = torch.cat([p["labels"] for p in pseudo])
    assert labels.numel() > 0 and set(labels.tolist()) <= {0, 1}
    with pytest.raises(IncompatibleModels, match="not student classes"):
        class_index(teacher, student, {"disc": "circle", "blob": "ring"})


def test_teacher_boxes_only_for_the_images_that_use_them(tiny_spec):
    """pseudo_from=k gives the boxes of images[k:] exactly as detecting on all of them and dropping the first k;
    None gives none; the logits are unchanged."""
    teacher = build_detector(tiny_spec).eval()
    with torch.no_grad():
        teacher.net.head.classification_head.cls_logits.bias.fill_(1.0)  # plenty of boxes
    targets = TeacherTargets(teacher, list(range(tiny_spec.num_classes)), threshold=0.3)
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    logits, every = targets(images)
    assert sum(len(p["boxes"]) for p in every[2:]) > 0
    for k in (2, 5):
        part_logits, part = targets(images, pseudo_from=k)
        assert torch.equal(part_logits, logits) and len(part) == 5 - k
        for a, b in zip(part, every[k:], strict=True):
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
    none_logits, none = targets(images, pseudo_from=None)
    assert torch.equal(none_logits, logits) and none == []


def test_dry_run_needs_no_data_or_weights(tmp_path, tiny_world, tiny_teacher):
    import io

    from rich.console import Console

    data = distill_recipe(tiny_world, tmp_path, tmp_path / "missing-teacher.pt")
    data["model"]["teacher"] = {**data["model"]["student"], "fpn_channels": 16, "source": "missing-teacher.pt"}
    data["data"] = {"train": {"annotations": "nope.json", "images": "nope"}, "unlabeled": "nope", "batch_size": 4}
    out = io.StringIO()
    assert run_distill(recipe_from_dict(data), dry_run=True, console=Console(file=out, width=300)) is None
    assert "using a random retinanet/tiny FPN-16 teacher from model.teacher's fields" in out.getvalue()
    assert "dry run passed" in out.getvalue()
    assert list(tmp_path.iterdir()) == []  # output= is tmp_path: nothing written


@pytest.mark.slow
def test_ddp_two_gloo_processes(tiny_world, tmp_path, tiny_teacher):
    """torchrun with 2 CPU processes: both ranks step, rank 0 alone writes."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(distill_recipe(tiny_world, tmp_path / "runs", tiny_teacher, train__steps=3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "sadc", "distill", "--recipe", str(recipe)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too, not only torchrun
        raise
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "x 2 ranks" in stdout
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["student"]
    assert load_checkpoint(runs[0] / "last.pt")["step"] == 3


def test_distill_interrupt_and_resume_match_an_uninterrupted_run(tiny_world, tmp_path, tiny_teacher, monkeypatch):
    import sadc.distill.run as run_mod
    from sadc.distill.objective import DistillObjective

    common = dict(train__steps=6, train__eval_every=3, train__deterministic=True)
    straight = run_distill(recipe_from_dict(distill_recipe(tiny_world, tmp_path / "a", tiny_teacher, **common)))
    monkeypatch.setattr(run_mod, "DistillObjective", lambda *a: InterruptAt(DistillObjective(*a), 4))
    recipe = recipe_from_dict(distill_recipe(tiny_world, tmp_path / "b", tiny_teacher, **common))
    with pytest.raises(Interrupted):
        run_distill(recipe)
    monkeypatch.undo()
    resumed = run_distill(recipe, resume=True)
    assert logged_losses(resumed) == logged_losses(straight)


def test_pseudo_label_writes_a_usable_coco_set(tiny_world, tmp_path, tiny_teacher):
    from sadc.data.coco import CocoDataset
    from sadc.distill.pseudo import pseudo_label_folder

    out = tmp_path / "pseudo.json"
    summary = pseudo_label_folder(tiny_teacher, tiny_world / "unlabeled", out, threshold=0.05)
    coco = json.loads(out.read_text())
    assert summary["images"] == len(coco["images"]) == 24
    assert summary["boxes"] == len(coco["annotations"])
    assert all(a["score"] >= 0.05 for a in coco["annotations"])
    data = CocoDataset(out, tiny_world / "unlabeled", (64, 64))  # loads as a labeled set
    assert data.class_names == ["circle", "square", "triangle", "cross", "ring"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["coco-retinanet-r101-to-r50", "coco-retinanet-x101-to-r101", "coco-retinanet-r50v2-to-mobilenetv3"]
)
def test_real_recipes_dry_run_offline(name, tmp_path):
    """The COCO recipes build and step here without data or downloads (at 128 px to stay quick)."""
    import io
    from pathlib import Path

    from rich.console import Console

    from sadc.recipe import load_recipe

    path = Path(__file__).parents[1] / "recipes" / f"{name}.yaml"
    recipe = load_recipe(path, [f"output={tmp_path}", "model.student.input_size=[128,128]"])
    out = io.StringIO()
    assert run_distill(recipe, dry_run=True, console=Console(file=out, width=300)) is None
    text = out.getvalue()
    assert re.search(r"distill (resnet101|resnet50|resnext101_64x4d) -> (resnet50|resnet101|mobilenet_v3_large) ", text), text
    assert "dry run passed" in text and list(tmp_path.iterdir()) == []


def test_channels_last_and_bf16_teacher_match_the_defaults_closely(tiny_world, tmp_path, tiny_teacher):
    """NHWC student/teacher and a bf16 teacher on the CPU run, and the first losses stay close to fp32 NCHW."""
    common = dict(train__steps=1, train__eval_every=0, train__warmup_steps=0)
    base = distill_recipe(tiny_world, tmp_path / "a", tiny_teacher, **common)
    fast = distill_recipe(tiny_world, tmp_path / "b", tiny_teacher, **common, train__channels_last=True)
    fast["distill"]["teacher_precision"] = "bf16"
    a = json.loads((run_distill(recipe_from_dict(base)) / "metrics.jsonl").read_text().splitlines()[0])
    b = json.loads((run_distill(recipe_from_dict(fast)) / "metrics.jsonl").read_text().splitlines()[0])
    assert b["cls"] == pytest.approx(a["cls"], rel=1e-3)  # the student side is fp32 either way
    assert b["distill"] == pytest.approx(a["distill"], rel=0.05)  # bf16 teacher logits: ~1e-2 off
