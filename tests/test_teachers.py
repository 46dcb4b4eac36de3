"""Teachers as users bring them (torchvision state dicts, a file not made yet) and dry runs
that leave nothing behind (issue 17)."""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import pytest
import torch
import torchvision
from rich.console import Console

from sadc.artefacts.checkpoint import load_checkpoint
from sadc.distill.run import run_distill
from sadc.errors import SadcError, brief
from sadc.models.detector import build_detector
from sadc.models.loading import load_detector, mismatch_line, spec_from_fields
from sadc.models.torchvision_zoo import torchvision_spec
from sadc.recipe import recipe_from_dict
from tests.helpers import fails_cleanly, invoke, tiny_recipe_dict, write_recipe

BUILDERS = ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"]
# The tiny world's classes, each mapped to a COCO class of the torchvision teacher.
TO_COCO = {"circle": "sports ball", "square": "tv", "triangle": "kite", "cross": "scissors", "ring": "donut"}


@pytest.fixture(scope="module")
def tv_state_dicts(tmp_path_factory) -> dict[str, Path]:
    """torchvision's COCO detectors (91 classes), random weights, saved as users save them."""
    root = tmp_path_factory.mktemp("tv")
    out = {}
    for name in BUILDERS:
        torch.manual_seed(0)
        net = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        out[name] = root / f"{name}.pth"
        torch.save(net.state_dict(), out[name])
    return out


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


def _tv_distill_recipe(world: Path, root: Path, name: str, source: Path) -> dict:
    """The documented form: model.teacher is {source, builder} and nothing else; a tiny student on its grid."""
    grid = torchvision_spec(f"torchvision:{name}", (64, 64))
    data = tiny_recipe_dict(world, root, steps=1, eval_every=0, warmup_steps=0)
    data["name"] = "student"
    data["model"]["teacher"] = {"source": str(source), "builder": f"torchvision:{name}"}
    data["model"]["student"].update(
        arch=grid.arch,
        fpn_channels=64 if grid.arch == "fcos" else 8,
        anchor_sizes=grid.anchor_sizes,
        anchor_ratios=grid.anchor_ratios,
    )
    data["data"].update(unlabeled=str(world / "unlabeled"), batch_size=2, val=None)
    data["distill"] = {"class_map": TO_COCO, "anchors": "all", "normalizer": "adaptive"}
    return data


@pytest.mark.parametrize("name", BUILDERS)
def test_torchvision_state_dict_teacher_distils_without_class_names(name, tv_state_dicts, tiny_world, tmp_path):
    recipe = recipe_from_dict(_tv_distill_recipe(tiny_world, tmp_path, name, tv_state_dicts[name]))
    run_dir = run_distill(recipe)
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["step"] == 1
    teacher = ckpt["teacher"]["spec"]
    assert teacher["builder"] == f"torchvision:{name}" and len(teacher["class_names"]) == 91
    assert teacher["class_names"][1] == "person"  # the builder's COCO names, not the schema's ["object"]


def test_head_with_another_class_count_names_both_counts(tv_state_dicts, tmp_path):
    path = tv_state_dicts["retinanet_resnet50_fpn"]
    teacher = {"source": str(path), "builder": "torchvision:retinanet_resnet50_fpn", "input_size": [64, 64]}
    named = recipe_from_dict({"model": {"teacher": {**teacher, "class_names": ["object"]}}}).model.teacher
    with pytest.raises(SadcError, match=r"the file's head has 91 classes, the recipe names 1; set class_names") as err:
        load_detector(spec_from_fields(named), named.source, weights=named.weights)
    assert "\n" not in str(err.value)
    # A head fine-tuned to 3 classes (9 anchors x 3 rows), classes left to the builder.
    state = torch.load(path, weights_only=True)
    for key in ("weight", "bias"):
        state[f"head.classification_head.cls_logits.{key}"] = state[f"head.classification_head.cls_logits.{key}"][: 9 * 3]
    three = tmp_path / "three.pth"
    torch.save(state, three)
    fields = recipe_from_dict({"model": {"teacher": {**teacher, "source": str(three)}}}).model.teacher
    with pytest.raises(SadcError, match=r"the file's head has 3 classes, torchvision:retinanet_resnet50_fpn has 91"):
        load_detector(spec_from_fields(fields), fields.source, weights=fields.weights)
    # Named correctly, it loads.
    ok = fields.model_copy(update={"class_names": ["a", "b", "c"]})
    assert load_detector(spec_from_fields(ok), ok.source, weights=ok.weights).spec.num_classes == 3


def test_shape_mismatch_names_the_parameter_and_both_shapes(tiny_spec, tmp_path):
    """Said in full: the old message was cut at 160 characters, before the file's shape."""
    path = tmp_path / "other.pth"
    torch.save(build_detector(tiny_spec.model_copy(update={"fpn_channels": 8})).state_dict(), path)
    with pytest.raises(SadcError) as err:
        load_detector(tiny_spec, source=str(path))
    text = str(err.value)
    assert re.search(r"\(net\.\S+: \[8(, \d+)*\] in the file, \[16(, \d+)*\] in the model \(\+\d+ more\)\)", text), text
    assert text.endswith("check arch/backbone/fpn_channels/class_names/anchors in the recipe")
    # The same reading of torch's own message (what --resume sees).
    model = build_detector(tiny_spec)
    with pytest.raises(RuntimeError) as torch_err:
        model.load_state_dict(torch.load(path, weights_only=True))
    line = mismatch_line(torch_err.value)
    assert re.fullmatch(r"net\.\S+: \[8(, \d+)*\] in the file, \[16(, \d+)*\] in the model \(\+\d+ more\)", line), line


def test_brief_cuts_between_words_only():
    words = [f"word{i:03d}" for i in range(100)]
    text = " ".join(words)
    short = brief(text, 50)
    assert short.endswith(" ...") and len(short) <= 54
    kept = short.removesuffix(" ...").split(" ")
    assert kept == words[: len(kept)]  # whole words, in order
    assert brief("short text", 50) == "short text"
    assert brief("/a/very/long/path/without/spaces " * 2, 10).startswith("/a/very/long/path/without/spaces")


# ------------------------------------------------------------------ dry runs and missing teachers


def _grid_recipes(world: Path, root: Path) -> tuple[Path, Path]:
    """teacher.yaml (trains model.teacher into ROOT/runs/teach) and student.yaml (distils from its best.pt)."""
    teacher = tiny_recipe_dict(world, root / "runs")
    teacher["name"] = "teach"
    teacher["model"] = {"teacher": teacher["model"]["student"]}
    teacher["train"]["target"] = "teacher"
    student = tiny_recipe_dict(world, root / "runs", steps=2, eval_every=0)
    student["name"] = "student"
    student["model"]["teacher"] = {"source": str(root / "runs" / "teach" / "best.pt")}
    student["model"]["student"]["fpn_channels"] = 8
    student["data"].update(unlabeled=str(world / "unlabeled"), batch_size=2)
    return write_recipe(root / "teacher.yaml", teacher), write_recipe(root / "student.yaml", student)


def test_missing_teacher_names_the_file_and_the_command_that_makes_it(tiny_world, tmp_path):
    _, student = _grid_recipes(tiny_world, tmp_path)
    fails_cleanly(
        invoke("distill", "--recipe", student),
        f"model.teacher.source: file {tmp_path / 'runs' / 'teach' / 'best.pt'} not found",
        f"create it with `sadc train --recipe {tmp_path / 'teacher.yaml'}`",
    )
    assert not (tmp_path / "runs").exists()


def test_dry_run_stands_in_the_teacher_the_recipe_will_train_and_writes_nothing(tiny_world, tmp_path, monkeypatch):
    _, student = _grid_recipes(tiny_world, tmp_path)
    (tmp_path / "runs" / "student").mkdir(parents=True)
    (tmp_path / "runs" / "student" / "keep.txt").write_text("a run of the user")
    before = _snapshot(tmp_path / "runs")
    scratch = tmp_path / "scratch"  # where the dry run's temporary folder goes
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = invoke("distill", "--recipe", student, "--dry-run")
    assert result.exit_code == 0, result.output
    stand_in = [ln for ln in result.output.splitlines() if ln.startswith("dry run: teacher")]
    assert len(stand_in) == 1 and "using a random retinanet/tiny FPN-16 teacher as" in stand_in[0], result.output
    assert str(tmp_path / "teacher.yaml") in stand_in[0]
    assert "dry run passed" in result.output and f"nothing was written under {tmp_path / 'runs'}/" in result.output
    assert _snapshot(tmp_path / "runs") == before and list(scratch.iterdir()) == []


def test_failed_dry_run_leaves_nothing(tiny_world, tmp_path, monkeypatch):
    _, student = _grid_recipes(tiny_world, tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # 1 anchor per location in the student, 2 in the teacher: fails after the run folder was made.
    fails_cleanly(
        invoke("distill", "--recipe", student, "--dry-run", "model.student.anchor_sizes=[[8],[16],[32],[64],[128]]"),
        "anchors per location",
    )
    assert not (tmp_path / "runs").exists() and list(scratch.iterdir()) == []


def test_dry_run_without_a_known_architecture_says_so(tiny_world, tmp_path):
    _, student = _grid_recipes(tiny_world, tmp_path)
    (tmp_path / "teacher.yaml").unlink()  # nothing says what runs/teach/best.pt will be
    fails_cleanly(
        invoke("distill", "--recipe", student, "--dry-run"),
        "best.pt not found, and a dry run cannot tell which architecture it will have",
        "train one with `sadc train` (train.target: teacher)",
    )


def test_quickstart_dry_run_on_a_fresh_clone(tmp_path):
    """recipes/quickstart.yaml before its teacher exists: quickstart-teacher.yaml's architecture stands in."""
    from sadc.recipe import load_recipe

    if Path("runs/quickstart-teacher/best.pt").exists():
        pytest.skip("runs/quickstart-teacher/best.pt exists here, so the dry run loads it: not a fresh clone")
    path = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"
    out = io.StringIO()
    recipe = load_recipe(path, [f"output={tmp_path / 'runs'}"])
    assert run_distill(recipe, dry_run=True, recipe_file=path, console=Console(file=out, width=400)) is None
    text = out.getvalue()
    assert "using a random retinanet/resnet18 FPN-64 teacher as" in text and "quickstart-teacher.yaml" in text, text
    assert "dry run passed" in text and not (tmp_path / "runs").exists()
