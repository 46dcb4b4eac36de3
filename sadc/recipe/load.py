"""Reading a recipe: YAML text -> raw data -> dotted overrides -> a validated :class:`Recipe`.

``load_recipe(path, overrides)`` is the only entry point commands use. Every error a
user can cause is raised as :class:`RecipeError` with one line that names the file and
key, and says what would fix it.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sadc.recipe.schema import Recipe, RecipeError
from sadc.recipe.yamltext import YamlLimitError, load_yaml, short_repr

log = logging.getLogger(__name__)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=200"`` -> (["train", "steps"], 200); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {short_repr(text)} is not of the form key.sub=value (e.g. train.steps=200)")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except YamlLimitError as err:
        raise RecipeError(f"override {short_repr(text)}: {err}") from None
    except (yaml.YAMLError, RecursionError):  # not YAML (or absurdly nested): the text itself
        value = raw
    return key.split("."), value


def _known_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _field_model(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The pydantic model nested under ``key`` of ``model``, if any."""
    ann = model.model_fields[key].annotation
    for cand in getattr(ann, "__args__", ()) or (ann,):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _unknown_key_error(where: str, dotted: str, model: type[BaseModel], bad: str) -> RecipeError:
    known = _known_keys(model)
    close = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
    hint = (
        f"did you mean {dotted.rsplit('.', 1)[0] + '.' if '.' in dotted else ''}{close[0]}?"
        if close
        else ("known keys: " + ", ".join(known))
    )
    shown = dotted if dotted.isprintable() and dotted.strip() == dotted and dotted else repr(dotted)  # keep one line
    return RecipeError(f"{where}: unknown key {shown} ({hint})")


def _check_keys(data: Any, model: type[BaseModel], prefix: str, where: str) -> None:
    """Walk raw recipe data and reject unknown keys with a close-match suggestion."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in model.model_fields:
            raise _unknown_key_error(where, dotted, model, str(key))
        sub = _field_model(model, key)
        if sub is not None:
            _check_keys(value, sub, dotted + ".", where)


def _apply_override(data: dict, path: list[str], value: Any, text: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override {short_repr(text)}: {part} is a value, not a section")
        node = child
    node[path[-1]] = value


def _format_validation_error(err: ValidationError, where: str) -> RecipeError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"].removeprefix("Value error, ")
    if msg.startswith("Input should be a valid dictionary"):
        msg = "must be a section of key: value lines"
    value = first.get("input")
    # Cross-field checks name their keys themselves; plain type/range errors get the key and value here.
    named = not loc or msg.startswith(loc + ".") or msg.startswith(f"{loc.rsplit('.', 1)[0]}.")
    shown = short_repr(value)  # abbreviated: a value can be huge (aliases, a long override)
    echoed = isinstance(value, (list, tuple, str)) and (shown in msg or (isinstance(value, str) and value in msg))
    shown = "" if isinstance(value, dict) or echoed else f" (got {shown})"
    more = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    return RecipeError(f"{where}: {'' if named else loc + ': '}{msg}{shown}{more}")


def recipe_from_dict(data: Any, where: str = "recipe", overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Validate raw recipe data (plus dotted overrides) into a :class:`Recipe`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a mapping of sections (model, data, train, ...), got {type(data).__name__}")
    try:
        data = yaml.safe_load(yaml.safe_dump(data))  # deep copy; never mutate the caller's dict
    except (RecursionError, yaml.YAMLError):
        raise RecipeError(f"{where}: nested too deeply (or not plain data); a recipe is a few levels of sections") from None
    if "bench" in data and isinstance(data["bench"], dict | None):
        # Recipes before 0.2 had a bench: section that nothing read; `sadc bench` takes flags.
        del data["bench"]
        log.warning("%s: the bench section is no longer part of a recipe (sadc bench takes flags); delete it", where)
    _check_keys(data, Recipe, "", where)
    for text in overrides:
        path, value = parse_override(text)
        _check_keys(_nest(path, value), Recipe, "", f"override {short_repr(text)}")
        _apply_override(data, path, value, text)
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise _format_validation_error(err, where) from None


def _nest(path: list[str], value: Any) -> dict:
    out: Any = value if not isinstance(value, dict) else {}
    for part in reversed(path):
        out = {part: out}
    return out


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply ``key.sub=value`` overrides and validate.

    ``path=None`` starts from the defaults. Raises :class:`RecipeError` with one line.
    """
    if path is None:
        return recipe_from_dict({}, "defaults", overrides)
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a recipe file" if path.is_dir() else "recipe not found"
        raise RecipeError(f"{path}: {what} (see recipes/ for examples)")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except YamlLimitError as err:  # duplicate keys, alias bombs: one line naming the key
        raise RecipeError(f"{path}: {err}") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not a UTF-8 text file (byte {err.start}); a recipe is YAML text") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply; a recipe is a few levels of sections") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or (str(err).strip().splitlines() or ["invalid YAML"])[0]
        raise RecipeError(f"{path}: malformed YAML{at}: {problem}") from None
    return recipe_from_dict(data, str(path), overrides)


def save_recipe(recipe: Recipe, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe.to_yaml())
