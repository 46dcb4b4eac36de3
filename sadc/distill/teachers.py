"""The teacher of `sadc distill`: model.teacher checked before any work, a missing file
explained (with the command that makes it), and the random stand-in of a dry run.

A teacher file that does not exist yet is usually a run not yet done: the quickstart's
``runs/quickstart-teacher/best.pt`` is written by ``sadc train --recipe
recipes/quickstart-teacher.yaml``. The recipe whose ``output/name`` folder holds the file
says both the command and the architecture the file will have.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sadc.errors import SadcError
from sadc.models.detector import Detector
from sadc.models.loading import load_detector, spec_from_fields
from sadc.recipe import ModelSource, Recipe, load_recipe

RUN_FILES = ("best.pt", "last.pt")
# Fields that do not describe an architecture: naming only these says nothing about the net.
_NOT_ARCHITECTURE = {"source", "weights", "input_size", "pretrained_backbone"}


def producing_recipe(checkpoint: Path, folders: Iterable[Path]) -> tuple[Path, Recipe] | None:
    """The recipe file (``*.yaml``/``*.yml`` in ``folders``, first match) whose run writes ``checkpoint``.

    A run writes ``output/name/best.pt`` and ``last.pt``; paths compare after resolving
    against the current directory, as both the recipe and model.teacher.source are read.
    Recipes that do not load are passed over.
    """
    if checkpoint.name not in RUN_FILES:
        return None
    want, seen = checkpoint.parent.resolve(), set()
    for folder in folders:
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                recipe = load_recipe(path)
            except SadcError:
                continue
            if recipe.run_dir.resolve() == want:
                return path, recipe
    return None


def command_for(path: Path, recipe: Recipe) -> str:
    """The sadc command that runs ``recipe`` (at ``path``): train for teachers and plain models, else distill."""
    distils = recipe.train.target == "student" and recipe.model.teacher is not None
    return f"sadc {'distill' if distils else 'train'} --recipe {path}"


def _described(fields: ModelSource) -> str:
    arch = fields.builder or f"{fields.arch}/{fields.backbone} FPN-{fields.fpn_channels}"
    return f"a random {arch}"


def teacher_fields(recipe: Recipe, folders: Iterable[Path], dry_run: bool) -> tuple[ModelSource, str | None]:
    """model.teacher as it will be loaded, and the one line a dry run says about a stand-in (or None).

    A source file that does not exist is a :class:`SadcError` naming it and the command that
    creates it; with ``dry_run`` it is replaced by a random teacher of the architecture the
    file will have: that of the recipe that writes it, else the architecture fields given in
    model.teacher. With neither, even a dry run cannot know the teacher, and says so.
    """
    fields = recipe.model.teacher
    if fields is None:
        raise SadcError("recipe: model.teacher is not set; `sadc distill` needs a teacher (checkpoint or torchvision:NAME)")
    source = fields.source
    if not source or source.startswith("torchvision:") or Path(source).is_file():
        return fields, None
    path = Path(source)
    found = producing_recipe(path, list(folders))
    problem = "is not a file" if path.exists() else "not found"  # the words of recipe.check_paths
    make = f"create it with `{command_for(*found)}`" if found else "train one with `sadc train` (train.target: teacher)"
    if not dry_run:
        relative = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise SadcError(
            f"model.teacher.source: file {path} {problem}{relative}; {make}, or set it to a sadc checkpoint, "
            "a state-dict file (with builder: torchvision:NAME) or torchvision:NAME"
        )
    if found:
        origin, producer = found
        stand_in = getattr(producer.model, producer.train.target)
        if stand_in.source and not stand_in.source.startswith("torchvision:"):
            stand_in = stand_in.model_copy(update={"source": None})
        said = f"as {origin} will train it"
    elif fields.model_fields_set - _NOT_ARCHITECTURE:
        stand_in, said = fields.model_copy(update={"source": None}), "from model.teacher's fields"
    else:
        raise SadcError(
            f"model.teacher.source: file {path} {problem}, and a dry run cannot tell which architecture it will have; "
            f"{make}, or give model.teacher the architecture fields (arch, backbone, fpn_channels, anchor_sizes, ...)"
        )
    note = f"dry run: teacher {path} does not exist yet; using {_described(stand_in)} teacher {said}"
    return stand_in, note


def load_teacher(fields: ModelSource, input_size: tuple[int, int], dry_run: bool) -> Detector:
    """The teacher (eval mode) at the student's ``input_size``; a dry run reads and downloads nothing
    it can avoid: random backbone, no torchvision weights (a state-dict file that exists is loaded)."""
    fields = fields.model_copy(update={"input_size": input_size})
    if dry_run:
        fields = fields.model_copy(update={"pretrained_backbone": False, "weights": None})
    try:
        return load_detector(spec_from_fields(fields), fields.source, weights=fields.weights)
    except SadcError as err:  # name the recipe key: the file alone does not say it was meant as the teacher
        raise type(err)(f"model.teacher.source: {err}") from None
