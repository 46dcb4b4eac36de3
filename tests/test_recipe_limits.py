"""Recipes that are valid YAML but not sane input: non-finite numbers, duplicate keys, alias bombs."""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import BaseModel

from sadc.recipe import Recipe, RecipeError, recipe_from_dict


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
