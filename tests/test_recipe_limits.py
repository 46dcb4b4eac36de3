"""Recipes that are valid YAML but not sane input: non-finite numbers, duplicate keys, alias bombs."""

from __future__ import annotations

import re
import typing

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
    path.write_text("bench:\n  <<: {warmup: 3, iters: 7}\n  iters: 9\n")
    recipe = load_recipe(path)
    assert (recipe.bench.warmup, recipe.bench.iters) == (3, 9)
