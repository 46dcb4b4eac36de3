"""The recipe's local paths, and a check that they exist here before any work starts."""

from __future__ import annotations

from pathlib import Path

from sadc.recipe.schema import Recipe, RecipeError


def recipe_paths(recipe: Recipe, keys: list[str] | tuple[str, ...] | None = None) -> list[tuple[str, Path, str]]:
    """(key, path, kind) of the recipe's local paths that are set, kind ``file``, ``folder`` or ``path`` (either).

    ``keys`` restricts to those dotted keys (e.g. ``data.train.annotations``); model
    sources that are ``torchvision:NAME`` are not paths and are left out.
    """
    found: list[tuple[str, Path, str]] = []
    for name in ("train", "val"):
        split = getattr(recipe.data, name)
        if split is not None:
            found.append((f"data.{name}.annotations", split.annotations, "path"))
            if split.images is not None:
                found.append((f"data.{name}.images", split.images, "folder"))
    for source in recipe.data.unlabeled_sources:
        if isinstance(source, Path):
            found.append(("data.unlabeled", source, "folder"))
    for name in ("teacher", "student"):
        fields = getattr(recipe.model, name)
        if fields is not None and fields.source and not fields.source.startswith("torchvision:"):
            found.append((f"model.{name}.source", Path(fields.source), "file"))
    return [item for item in found if keys is None or item[0] in keys]


_PATH_HINTS = {
    "data.train.annotations": "the labeled training set (a COCO json, a YOLO data.yaml or a VOC folder)",
    "data.val.annotations": "the labeled validation set (a COCO json, a YOLO data.yaml or a VOC folder)",
    "data.train.images": "the folder the json's file_name entries are relative to",
    "data.val.images": "the folder the json's file_name entries are relative to",
    "data.unlabeled": "a folder of unlabeled images, searched recursively",
    "model.teacher.source": "a sadc checkpoint, a state-dict file or torchvision:NAME",
    "model.student.source": "a sadc checkpoint, a state-dict file or torchvision:NAME",
}


def check_paths(recipe: Recipe, keys: list[str] | tuple[str, ...] | None = None, where: str = "recipe") -> None:
    """Raise :class:`RecipeError` for the first path (of ``keys``, default all) that does not exist here.

    Called by commands before any work starts, so a typo in a path costs seconds, not a
    failed run. Relative paths are relative to the current directory.
    """
    for key, path, kind in recipe_paths(recipe, keys):
        ok = path.exists() if kind == "path" else path.is_file() if kind == "file" else path.is_dir()
        if not ok:
            problem = "not found" if not path.exists() else f"is not a {kind}"
            kind = "file" if kind == "path" else kind
            relative = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            raise RecipeError(f"{where}: {key}: {kind} {path} {problem}{relative}; set it to {_PATH_HINTS[key]}")
