from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sadc.recipe import (
    Recipe,
    RecipeError,
    load_recipe,
    parse_override,
    recipe_from_dict,
)

RECIPES = sorted(Path(__file__).parents[1].joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.name


def test_defaults_and_overrides_are_typed():
    r = recipe_from_dict({}, overrides=["train.steps=200", "data.batch_size=8", "train.grad_clip=null", "seed=3"])
    assert (r.train.steps, r.data.batch_size, r.train.grad_clip, r.seed) == (200, 8, None, 3)
    r = recipe_from_dict({}, overrides=["model.student.anchor_ratios=[0.5,1,2]"])
    assert r.model.student.anchor_ratios == [0.5, 1.0, 2.0]


def test_unknown_key_suggests_close_match():
    with pytest.raises(RecipeError, match=r"unknown key train\.stpes \(did you mean train\.steps\?\)"):
        recipe_from_dict({}, overrides=["train.stpes=200"])
    with pytest.raises(RecipeError, match=r"r\.yaml: unknown key data\.batchsize \(did you mean data\.batch_size\?\)"):
        recipe_from_dict({"data": {"batchsize": 3}}, "r.yaml")
    with pytest.raises(RecipeError, match=r"unknown key trian \(did you mean train\?\)"):
        recipe_from_dict({"trian": {}}, "r.yaml")


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"train": {"lr": -1}}, "train.lr: Input should be greater than 0 (got -1)"),
        ({"data": {"batch_size": 0}}, "data.batch_size: Input should be greater than 0 (got 0)"),
        ({"train": {"steps": "many"}}, "train.steps: Input should be a valid integer"),
        ({"model": {"student": {"input_size": [100, 128]}}}, "multiples of 32"),
        ({"data": {"augment": {"scale_jitter": [1.5, 0.5]}}}, "0 < low <= high"),
        ({"model": {"student": {"class_names": ["a", "a"]}}}, "class_names has duplicates"),
    ],
)
def test_bad_values_name_the_key(data, fragment):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(data, "r.yaml")
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 3\n   lr: [1,\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml: malformed YAML at line \d+"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(tmp_path / "list.yaml")


def test_override_syntax_errors():
    for text in ("train.steps", "=3", "train..steps=3"):
        with pytest.raises(RecipeError, match=r"not of the form key\.sub=value"):
            parse_override(text)
    with pytest.raises(RecipeError, match="is a value, not a section"):
        recipe_from_dict({}, overrides=["seed=1", "seed.x=2"])


def test_round_trip_through_yaml(tmp_path):
    r = recipe_from_dict({}, overrides=["train.steps=5", "train.warmup_steps=0", "name=abc"])
    path = tmp_path / "r.yaml"
    path.write_text(r.to_yaml())
    assert load_recipe(path) == r


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=1e-6, max_value=10, allow_nan=False))
def test_override_parsing_property(steps, lr):
    r = recipe_from_dict({}, overrides=[f"train.steps={steps}", f"train.lr={lr!r}", "train.warmup_steps=0"])
    assert r.train.steps == steps
    assert r.train.lr == pytest.approx(lr)


def test_recipe_does_not_mutate_input():
    data = {"train": {"steps": 3, "warmup_steps": 1}}
    recipe_from_dict(data, overrides=["train.steps=9"])
    assert data == {"train": {"steps": 3, "warmup_steps": 1}}
    assert isinstance(Recipe().run_dir, Path)


def test_docs_reference_is_current():
    from sadc.recipe.docs import recipe_reference

    docs = Path(__file__).parents[1] / "docs" / "recipes.md"
    assert docs.read_text() == recipe_reference(), "regenerate: python -m sadc.recipe.docs > docs/recipes.md"
