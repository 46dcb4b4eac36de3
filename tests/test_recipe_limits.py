"""Recipes that are valid YAML but not sane input: non-finite numbers, duplicate keys, alias bombs, huge batches."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from sadc.recipe import Recipe, RecipeError, load_recipe, recipe_from_dict


def _float_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, typing.Any]]:
    """(dotted key, annotation) of every field of the recipe whose type holds a float, found from the schema."""
    found = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        args = typing.get_args(ann) or (ann,)
        sub = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is not None:
            found += _float_keys(sub, f"{prefix}{name}.")
        elif "float" in str(ann):
            found.append((f"{prefix}{name}", ann))
    return found


def _with_leaf(ann, leaf: str) -> str:
    """A YAML value of type ``ann`` whose (first) number is ``leaf``: ``.nan``, ``[.nan, 1.0]``, ``[[.nan]]``..."""
    text = str(ann)
    if "list[list[float]]" in text:
        return f"[[{leaf}], [16], [32], [64], [128]]"
    if "tuple[float, float, float]" in text:
        return f"[{leaf}, 0.5, 0.5]"
    if "tuple[float, float]" in text:
        return f"[{leaf}, 1.0]"
    if "list[float]" in text:
        return f"[{leaf}]"
    return leaf


FLOAT_KEYS = _float_keys(Recipe)


def test_the_schema_walk_finds_the_float_fields():
    keys = [k for k, _ in FLOAT_KEYS]
    for key in ("train.lr", "distill.weight", "train.grad_clip", "model.student.mean", "data.augment.scale_jitter"):
        assert key in keys
    assert len(keys) >= 25


@pytest.mark.parametrize("leaf", [".nan", ".inf", "-.inf"])
def test_every_float_field_refuses_non_finite_numbers(leaf):
    for key, ann in FLOAT_KEYS:
        with pytest.raises(RecipeError, match=re.escape(key) + ".*finite"):
            recipe_from_dict({}, "r.yaml", [f"{key}={_with_leaf(ann, leaf)}"])


def _bomb(levels: int, width: int = 9) -> str:
    """A YAML list that expands to width**levels numbers through aliases (a "billion laughs")."""
    parts = [f"&a0 [{', '.join(['1'] * width)}]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("where", ["file", "override"])
def test_an_alias_bomb_is_refused_with_one_short_line(where, tmp_path):
    bomb = _bomb(9)  # 387 million numbers once expanded
    path = tmp_path / "r.yaml"
    path.write_text(f"train:\n  steps: {bomb}\n" if where == "file" else "train:\n  steps: 5\n")
    overrides = [f"train.steps={bomb}"] if where == "override" else []
    with pytest.raises(RecipeError, match="expands to more than") as err:
        load_recipe(path, overrides)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_a_large_wrong_value_is_named_in_a_short_line(tmp_path):
    """Below the expansion limit the value reaches validation; the error shows an abbreviated value."""
    path = tmp_path / "r.yaml"
    path.write_text(f"train:\n  steps: {_bomb(4)}\n")  # 6,561 numbers: refused by type, not by size
    with pytest.raises(RecipeError, match=r"train\.steps: Input should be a valid integer \(got \[\[1, 1, 1, \.\.\.\], ") as err:
        load_recipe(path)
    assert len(str(err.value)) < 400
    with pytest.raises(RecipeError) as err:
        load_recipe(None, ["train.lr=" + "x" * 100_000])
    assert "train.lr" in str(err.value) and len(str(err.value)) < 400


def test_a_self_referencing_alias_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  step_milestones: &a [0.5, *a]\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: .*refers to itself"):
        load_recipe(path)


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("train:\n  steps: 5\ndata:\n  batch_size: 2\ntrain:\n  lr: 0.1\n", "train", (1, 5)),
        ("train:\n  steps: 5\n  lr: 0.1\n  steps: 6\n", "train.steps", (2, 4)),
        ("model:\n  student:\n    backbone: tiny\n    backbone: resnet18\n", "model.student.backbone", (3, 4)),
    ],
)
def test_duplicate_keys_are_refused_with_their_lines(text, key, lines, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=rf"r\.yaml: duplicate key {re.escape(key)} at lines {lines[0]} and {lines[1]}"):
        load_recipe(path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    """`<<: *base` then an explicit key is YAML's override, not a duplicate."""
    path = tmp_path / "r.yaml"
    path.write_text("export:\n  <<: {opset: 18, max_detections: 50}\n  max_detections: 60\n")
    recipe = load_recipe(path)
    assert (recipe.export.opset, recipe.export.max_detections) == (18, 60)


# ------------------------------------------------------------------------------ batch size


def test_a_batch_larger_than_the_dataset_is_one_line_before_any_step(tiny_world, tmp_path):
    from tests.helpers import fails_cleanly, invoke, tiny, write_recipe

    path = write_recipe(tmp_path / "r.yaml", tiny(tiny_world, tmp_path / "runs"))
    line = fails_cleanly(
        invoke("train", "--recipe", path, "data.batch_size=1000000000"),
        "1000000000 images per step from data.train, which has 48",
    )
    assert "lower data.batch_size (at most 48)" in line
    assert not (tmp_path / "runs" / "tiny" / "last.pt").exists()


def test_a_batch_whose_activations_exceed_the_memory_here_is_refused(tiny_world, tmp_path, monkeypatch):
    import sadc.engine.budget as budget
    from sadc.engine.run import run_train
    from sadc.errors import SadcError
    from tests.helpers import tiny_recipe_dict

    per_image = budget.activation_bytes(_tiny_forward(), (64, 64))
    monkeypatch.setattr(budget, "available_memory", lambda device: 3 * per_image + 1)
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_world, tmp_path, steps=1))  # batch 8
    with pytest.raises(
        SadcError, match=r"data\.batch_size: 8 images per step need about .* MiB of activations .*\(about 3 fit\)"
    ):
        run_train(recipe)
    monkeypatch.setattr(budget, "available_memory", lambda device: 8 * per_image + 1)
    run_train(recipe)


def test_the_activation_estimate_counts_the_feature_maps():
    """Against a hand count: one 3x3 conv (8 channels) + ReLU(inplace) on a 1x3x32x32 float input."""
    import torch
    from torch import nn

    from sadc.engine.budget import activation_bytes

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(self.act(self.conv(x.float())))

    assert activation_bytes(Net(), (32, 32)) == (8 * 32 * 32 + 8 * 16 * 16) * 4
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    activation_bytes(net, (32, 32))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the real weights are untouched
    detector = _tiny_forward()
    activation_bytes(detector, (64, 64))
    out = detector(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))  # still runs on real tensors (anchor caches too)
    assert out.cls_logits.device.type == "cpu"


def _tiny_forward():
    from sadc.models.detector import DenseForward, build_detector
    from tests.helpers import tiny_recipe_dict

    spec = recipe_from_dict(tiny_recipe_dict(Path("."), Path("."))).model.student
    return DenseForward(build_detector(spec))
