"""Recipes: the schema (:mod:`.schema`), path checks (:mod:`.paths`), loading and overrides (:mod:`.load`).

``from sadc.recipe import Recipe, load_recipe, ...`` is the public surface; the
reference page docs/recipes.md is generated from the schema by :mod:`.docs`.
"""

from sadc.recipe.load import load_recipe, parse_override, recipe_from_dict, save_recipe
from sadc.recipe.paths import check_paths, recipe_paths
from sadc.recipe.schema import (
    AugmentSection,
    DataSection,
    DistillSection,
    ExportSection,
    ModelSection,
    ModelSource,
    Recipe,
    RecipeError,
    SplitSection,
    TrainSection,
)

__all__ = [
    "AugmentSection",
    "DataSection",
    "DistillSection",
    "ExportSection",
    "ModelSection",
    "ModelSource",
    "Recipe",
    "RecipeError",
    "SplitSection",
    "TrainSection",
    "check_paths",
    "load_recipe",
    "parse_override",
    "recipe_from_dict",
    "recipe_paths",
    "save_recipe",
]
